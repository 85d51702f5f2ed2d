//! The few vector operations the GEMM microkernel needs, one implementation
//! per ISA, so the register tile is written once (in `kernel.rs`) and stamped
//! out per ISA and tile shape.
//!
//! Every method is `#[inline(always)]` and `unsafe`: it is only sound when
//! called from a function compiled with the ISA's target features (the
//! per-ISA entry points in `kernel.rs`), on pointers the caller has checked.

/// A vector of `LANES` f32 and the operations on it.
pub(crate) trait Vector: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    /// The vector register type.
    type V: Copy;
    /// A mask selecting the first `n` lanes.
    type Mask: Copy;

    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Loads `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` floats to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The mask of the first `n` lanes, `1 <= n <= LANES`.
    unsafe fn mask(n: usize) -> Self::Mask;
    /// Loads the first lanes selected by `m`, zero elsewhere; reads nothing
    /// past them.
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self::V;
    /// Stores the lanes selected by `m`; writes nothing past them.
    unsafe fn store_masked(p: *mut f32, v: Self::V, m: Self::Mask);
    /// `a·b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a·b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Hints that the cache line at `p` will be written soon (no-op where
    /// the ISA has no hint). Never faults.
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}
}

/// Portable fallback: four lanes in an array, which LLVM maps onto whatever
/// baseline SIMD the target has. Multiply and add round separately (a fused
/// `mul_add` would be a slow library call without hardware FMA).
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Vector for Scalar {
    const LANES: usize = 4;
    type V = [f32; 4];
    type Mask = usize;

    #[inline(always)]
    unsafe fn zero() -> [f32; 4] {
        [0.0; 4]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 4] {
        [x; 4]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 4] {
        // SAFETY: the caller guarantees 4 readable floats at `p`.
        unsafe { p.cast::<[f32; 4]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 4]) {
        // SAFETY: the caller guarantees 4 writable floats at `p`.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn mask(n: usize) -> usize {
        n
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, n: usize) -> [f32; 4] {
        let mut v = [0.0; 4];
        for (l, x) in v.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` readable floats at `p`.
            *x = unsafe { *p.add(l) };
        }
        v
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: [f32; 4], n: usize) {
        for (l, x) in v.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` writable floats at `p`.
            unsafe { *p.add(l) = *x };
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: [f32; 4], b: [f32; 4], c: [f32; 4]) -> [f32; 4] {
        [
            a[0] * b[0] + c[0],
            a[1] * b[1] + c[1],
            a[2] * b[2] + c[2],
            a[3] * b[3] + c[3],
        ]
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        [a[0] * b[0], a[1] * b[1], a[2] * b[2], a[3] * b[3]]
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vector;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    /// `-1` in the first `n` of 8 lanes: a window into this array.
    static AVX2_MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    // SAFETY (all methods): only called from functions compiled with
    // avx2+fma enabled, on a CPU that has them (checked by dispatch); pointer
    // validity is the caller's contract, stated on the trait.
    impl Vector for Avx2 {
        const LANES: usize = 8;
        type V = __m256;
        type Mask = __m256i;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: see the impl comment.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> __m256i {
            // SAFETY: 1 <= n <= 8, so the 8 lanes read lie inside the array.
            unsafe { _mm256_loadu_si256(AVX2_MASKS.as_ptr().add(8 - n).cast()) }
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __m256i) -> __m256 {
            // SAFETY: see the impl comment; masked-off lanes are not accessed.
            unsafe { _mm256_maskload_ps(p, m) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: __m256, m: __m256i) {
            // SAFETY: see the impl comment; masked-off lanes are not accessed.
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl comment.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
        }
    }

    /// AVX-512F, 16 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    // SAFETY (all methods): only called from functions compiled with
    // avx512f enabled, on a CPU that has it (checked by dispatch); pointer
    // validity is the caller's contract, stated on the trait.
    impl Vector for Avx512 {
        const LANES: usize = 16;
        type V = __m512;
        type Mask = __mmask16;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: see the impl comment.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> __mmask16 {
            ((1u32 << n) - 1) as __mmask16
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
            // SAFETY: see the impl comment; masked-off lanes are not read
            // (AVX-512 suppresses their faults).
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: __m512, m: __mmask16) {
            // SAFETY: see the impl comment; masked-off lanes are not written.
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl comment.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Vector;
    use std::arch::aarch64::*;

    /// AArch64 Advanced SIMD, 4 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Neon;

    // SAFETY (all methods): only called from functions compiled with neon
    // enabled, on a CPU that has it (checked by dispatch); pointer validity
    // is the caller's contract, stated on the trait.
    impl Vector for Neon {
        const LANES: usize = 4;
        type V = float32x4_t;
        type Mask = usize;

        #[inline(always)]
        unsafe fn zero() -> float32x4_t {
            // SAFETY: see the impl comment.
            unsafe { vdupq_n_f32(0.0) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            // SAFETY: see the impl comment.
            unsafe { vdupq_n_f32(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            // SAFETY: see the impl comment.
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            // SAFETY: see the impl comment.
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> usize {
            n
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, n: usize) -> float32x4_t {
            let mut tmp = [0.0f32; 4];
            // SAFETY: the caller guarantees `n <= 4` readable floats at `p`.
            unsafe {
                std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), n);
                vld1q_f32(tmp.as_ptr())
            }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: float32x4_t, n: usize) {
            let mut tmp = [0.0f32; 4];
            // SAFETY: the caller guarantees `n <= 4` writable floats at `p`.
            unsafe {
                vst1q_f32(tmp.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), p, n);
            }
        }
        #[inline(always)]
        unsafe fn fmadd(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            // SAFETY: see the impl comment.
            unsafe { vfmaq_f32(c, a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            // SAFETY: see the impl comment.
            unsafe { vmulq_f32(a, b) }
        }
    }
}
