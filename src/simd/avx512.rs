//! AVX-512 (F/BW/DQ/VL) implementation of [`Simd`]: 16 `f32` lanes in a
//! `zmm` register, `__mmask16` lane masks, masked loads and stores for tails.

use super::vector::Simd;
use crate::simd::Isa;
use std::arch::x86_64::*;

/// Proof that this CPU runs AVX-512 F/BW/DQ/VL with AVX2, FMA and F16C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, when the CPU supports the ISA.
    #[inline(always)]
    pub(crate) fn new() -> Option<Self> {
        Isa::Avx512.is_supported().then_some(Avx512(()))
    }

    /// The token without the check, for code reached only through a
    /// dispatch that already made it (the GEMM's per-ISA kernel tables).
    ///
    /// # Safety
    /// The CPU must run AVX-512 F/BW/DQ/VL with AVX2, FMA and F16C.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx512(())
    }
}

#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

// SAFETY (every `unsafe` block below that calls a register-only intrinsic):
// an `Avx512` value exists only after `Avx512::new` saw the CPU run
// AVX-512 F/BW/DQ/VL, so the instructions are available.
impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;
    type M = __mmask16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats; unaligned load.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats; unaligned store.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: __m512) -> __m512 {
        // SAFETY: masked-off lanes are not accessed (no fault), the first n are readable.
        unsafe { _mm512_mask_loadu_ps(fill, tail_mask(n), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m512) {
        // SAFETY: masked-off lanes are not written, the first n are writable.
        unsafe { _mm512_mask_storeu_ps(p, tail_mask(n), v) }
    }
    type Tail = __mmask16;
    #[inline(always)]
    fn tail(self, n: usize) -> __mmask16 {
        tail_mask(n)
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, t: __mmask16) -> __m512 {
        // SAFETY: masked-off lanes are not accessed (no fault), the selected ones are readable.
        unsafe { _mm512_maskz_loadu_ps(t, p) }
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, v: __m512, t: __mmask16) {
        // SAFETY: masked-off lanes are not written, the selected ones are writable.
        unsafe { _mm512_mask_storeu_ps(p, t, v) }
    }
    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees `p` is readable; token proves AVX-512F.
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn madd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        self.fma(a, b, c)
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn fnma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_sqrt_ps(a) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F/DQ. 0xE4 = (sign & b) | (mag & !b) with b the sign-bit mask.
        unsafe {
            let sign_bit = _mm512_set1_epi32(i32::MIN);
            _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
                _mm512_castps_si512(sign),
                _mm512_castps_si512(mag),
                sign_bit,
                0xE4,
            ))
        }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn scale_pow2(self, v: __m512, n: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F. `vscalefps` computes v·2^floor(n) rounded once, with
        // overflow to ∞ and gradual underflow, exactly the contract.
        unsafe { _mm512_scalef_ps(v, n) }
    }
    #[inline(always)]
    fn split_exponent(self, v: __m512) -> (__m512, __m512) {
        // SAFETY: token proves AVX-512F. getmant/getexp normalise subnormals themselves.
        unsafe {
            (
                _mm512_getmant_ps::<_MM_MANT_NORM_1_2, _MM_MANT_SIGN_SRC>(v),
                _mm512_getexp_ps(v),
            )
        }
    }
    #[inline(always)]
    fn lt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn le(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, b) }
    }
    #[inline(always)]
    fn gt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    fn is_nan(self, a: __m512) -> __mmask16 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a) }
    }
    #[inline(always)]
    fn and_m(self, a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    fn or_m(self, a: __mmask16, b: __mmask16) -> __mmask16 {
        a | b
    }
    #[inline(always)]
    fn any(self, m: __mmask16) -> bool {
        m != 0
    }
    #[inline(always)]
    fn select(self, m: __mmask16, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F. The blend takes its second operand where the mask is set.
        unsafe { _mm512_mask_blend_ps(m, b, a) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m512) -> f32 {
        // SAFETY: token proves AVX-512F (and AVX/SSE, which it implies).
        unsafe {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm512_extractf32x8_ps::<1>(v);
            let s = _mm256_add_ps(lo, hi);
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn reduce_sum4(self, [a, b, c, d]: [__m512; 4]) -> [f32; 4] {
        // The folds of `reduce_sum`, two or four vectors per instruction:
        // 512 → 256 bits (`v[l] + v[l + 8]`), 256 → 128 (`+ v[l + 4]`), then
        // lanes 0 + 2 and 1 + 3, then the two: each lane of each vector is
        // added to the same partner at the same step, so the same bits.
        // SAFETY: token proves AVX-512F (and AVX/SSE, which it implies).
        unsafe {
            // Blocks of 128 bits: [a0 + a2, a1 + a3, b0 + b2, b1 + b3].
            let ab = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            );
            let cd = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(c, d),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d),
            );
            // One block per vector, in order a, b, c, d.
            let s = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd),
            );
            // Within each block: lanes 0 + 2 and 1 + 3, then those two.
            let s = _mm512_add_ps(s, _mm512_permute_ps::<0b01_00_11_10>(s));
            let s = _mm512_add_ps(s, _mm512_permute_ps::<0b10_11_00_01>(s));
            // Lane 0 of each block.
            let lanes = _mm512_castps512_ps128(_mm512_permutexvar_ps(
                _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
                s,
            ));
            let mut out = [0.0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), lanes);
            out
        }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        // SAFETY: token proves AVX-512F (and AVX/SSE, which it implies).
        unsafe {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm512_extractf32x8_ps::<1>(v);
            let s = _mm256_max_ps(lo, hi);
            let s = _mm_max_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}
