//! AVX2 + FMA implementation of [`Simd`]: 8 `f32` lanes in a `ymm`
//! register, all-ones lanes as masks, `vmaskmovps` for tails (but for
//! `store_masked`, the GEMM tile's tail store: plain stores, see there).

use super::vector::Simd;
use crate::simd::Isa;
use std::arch::x86_64::*;

/// Proof that this CPU runs AVX2, FMA and F16C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The token, when the CPU supports the ISA.
    #[inline(always)]
    pub(crate) fn new() -> Option<Self> {
        Isa::Avx2.is_supported().then_some(Avx2(()))
    }

    /// The token without the check, for code reached only through a
    /// dispatch that already made it (the GEMM's per-ISA kernel tables).
    ///
    /// # Safety
    /// The CPU must run AVX2, FMA and F16C.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx2(())
    }
}

/// Lane `i` all-ones when `i < n`.
#[inline(always)]
fn tail_mask(n: usize) -> __m256i {
    // SAFETY: only reached through an `Avx2` token (AVX2 available).
    unsafe {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }
}

// SAFETY (every `unsafe` block below that calls a register-only intrinsic):
// an `Avx2` value exists only after `Avx2::new` saw the CPU run AVX2 and FMA.
impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;
    type M = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats; unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats; unaligned store.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: __m256) -> __m256 {
        // SAFETY: vmaskmovps does not touch (or fault on) masked-off lanes; the first n are readable.
        unsafe {
            let m = tail_mask(n);
            _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m256) {
        // SAFETY: vmaskmovps does not touch masked-off lanes; the first n are writable.
        unsafe { _mm256_maskstore_ps(p, tail_mask(n), v) }
    }
    type Tail = __m256i;
    #[inline(always)]
    fn tail(self, n: usize) -> __m256i {
        tail_mask(n)
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, t: __m256i) -> __m256 {
        // SAFETY: vmaskmovps does not touch (or fault on) masked-off lanes; the selected ones are readable.
        unsafe { _mm256_maskload_ps(p, t) }
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, v: __m256, t: __m256i) {
        // A tail selects the first n lanes (`tail`), so it is stored as at
        // most three plain stores of 4, 2 and 1 floats: a `vmaskmovps` store
        // took ~12 cycles on a Zen 3 core against ~1 for a plain one (timed
        // in a C loop), and the GEMM's edge tiles store one per row of C.
        // SAFETY: lanes 0..n are writable (the caller's contract, with the
        // tail's lanes a prefix); each store below writes only lanes < n:
        // 4 at p when n ≥ 4, then 2 and 1 of what is left, in order.
        unsafe {
            // The selected lanes are the first n: n trailing ones in the
            // 8-bit sign mask (`!bits` is never zero).
            let bits = _mm256_movemask_ps(_mm256_castsi256_ps(t)) as u32;
            let n = (!bits).trailing_zeros() as usize;
            let (mut q, mut x, mut left) = (p, _mm256_castps256_ps128(v), n);
            if left >= 4 {
                _mm_storeu_ps(q, x);
                (q, x, left) = (q.add(4), _mm256_extractf128_ps::<1>(v), left - 4);
            }
            if left >= 2 {
                // An 8-byte store at a 4-byte-aligned address: unaligned
                // write of the low two lanes' bits.
                q.cast::<i64>().write_unaligned(_mm_cvtsi128_si64(_mm_castps_si128(x)));
                (q, x, left) = (q.add(2), _mm_movehl_ps(x, x), left - 2);
            }
            if left == 1 {
                _mm_store_ss(q, x);
            }
        }
    }
    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees `p` is readable; token proves AVX.
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn madd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        self.fma(a, b, c)
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: token proves FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn fnma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: token proves FMA.
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn sqrt(self, a: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_sqrt_ps(a) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe {
            let s = _mm256_set1_ps(-0.0);
            _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sign))
        }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn scale_pow2(self, v: __m256, n: __m256) -> __m256 {
        // Two factors 2^n1 · 2^n2, each a normal float, so that the one rounding (the second
        // product) lands correctly in the subnormal range or overflows to ∞.
        // SAFETY: token proves AVX2.
        unsafe {
            let n = _mm256_max_ps(_mm256_set1_ps(-300.0), _mm256_min_ps(_mm256_set1_ps(300.0), n));
            let ni = _mm256_cvtps_epi32(n);
            let n1 = _mm256_srai_epi32::<1>(ni);
            let n2 = _mm256_sub_epi32(ni, n1);
            // Each half is in [-150, 150]; clamp to the normal exponent range [-126, 127].
            let lo = _mm256_set1_epi32(-126);
            let hi = _mm256_set1_epi32(127);
            let n1 = _mm256_max_epi32(lo, _mm256_min_epi32(hi, n1));
            let n2 = _mm256_max_epi32(lo, _mm256_min_epi32(hi, n2));
            let bias = _mm256_set1_epi32(127);
            let f1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
            let f2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
            _mm256_mul_ps(_mm256_mul_ps(v, f1), f2)
        }
    }
    #[inline(always)]
    fn split_exponent(self, v: __m256) -> (__m256, __m256) {
        // SAFETY: token proves AVX2.
        unsafe {
            // Subnormals: scale by 2²³ first (exact) and take 23 off the exponent.
            let sub = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_set1_ps(f32::MIN_POSITIVE));
            let v = _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(8_388_608.0)), sub);
            let adj = _mm256_and_ps(sub, _mm256_set1_ps(23.0));
            let bits = _mm256_castps_si256(v);
            let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
            let e = _mm256_sub_ps(_mm256_cvtepi32_ps(e), adj);
            let m = _mm256_or_si256(
                _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x3f80_0000),
            );
            (_mm256_castsi256_ps(m), e)
        }
    }
    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn le(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_cmp_ps::<_CMP_LE_OQ>(a, b) }
    }
    #[inline(always)]
    fn gt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    fn is_nan(self, a: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a) }
    }
    #[inline(always)]
    fn and_m(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_and_ps(a, b) }
    }
    #[inline(always)]
    fn or_m(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_or_ps(a, b) }
    }
    #[inline(always)]
    fn any(self, m: __m256) -> bool {
        // SAFETY: token proves AVX.
        unsafe { _mm256_movemask_ps(m) != 0 }
    }
    #[inline(always)]
    fn select(self, m: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX. blendv takes its second operand where the mask lane's sign is set.
        unsafe { _mm256_blendv_ps(b, a, m) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: __m256) -> f32 {
        // SAFETY: token proves AVX.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn reduce_sum4(self, [a, b, c, d]: [__m256; 4]) -> [f32; 4] {
        // The folds of `reduce_sum`, two or four vectors per instruction:
        // 256 → 128 bits (`v[l] + v[l + 4]`), lanes 0 + 2 and 1 + 3, then the
        // two: each lane added to the same partner at the same step.
        // SAFETY: token proves AVX.
        unsafe {
            // Halves of 128 bits: [a folded, b folded], [c folded, d folded].
            let ab = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            );
            let cd = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(c, d),
                _mm256_permute2f128_ps::<0x31>(c, d),
            );
            // Per half: [x0 + x2, x1 + x3, y0 + y2, y1 + y3] of (a, c) | (b, d).
            let s = _mm256_add_ps(
                _mm256_shuffle_ps::<0b01_00_01_00>(ab, cd),
                _mm256_shuffle_ps::<0b11_10_11_10>(ab, cd),
            );
            // Per half: [x, y, x, y] summed.
            let s = _mm256_add_ps(
                _mm256_shuffle_ps::<0b10_00_10_00>(s, s),
                _mm256_shuffle_ps::<0b11_01_11_01>(s, s),
            );
            // The low half is [a, c, a, c], the high [b, d, b, d]: their
            // interleaved low lanes are [a, b, c, d].
            let lo = _mm256_castps256_ps128(s);
            let hi = _mm256_extractf128_ps::<1>(s);
            let mut out = [0.0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), _mm_unpacklo_ps(lo, hi));
            out
        }
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        // SAFETY: token proves AVX.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
}
