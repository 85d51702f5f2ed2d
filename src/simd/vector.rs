//! The vector abstraction every element-wise kernel is written over.
//!
//! A kernel is one generic function `fn k<S: Simd>(s: S, ..)`; the
//! [`dispatch!`](crate::simd::dispatch) macro stamps out one copy per ISA,
//! each compiled inside a `#[target_feature]` function so the intrinsics
//! inline, and calls the copy for the ISA chosen at run time.
//!
//! A value of an ISA type (`Avx512`, `Avx2`, `Neon`, `Scalar`) is a token: it
//! can only be made after checking that the CPU runs that ISA, so holding one
//! is the proof every arithmetic method relies on, and those methods are
//! safe. Loads and stores take raw pointers and stay `unsafe`.
//!
//! Semantics shared by every implementation:
//! - `min(a, b)` / `max(a, b)` return `b` when the comparison is false, in
//!   particular when either is NaN (x86 `minps`/`maxps` order); on NEON a NaN
//!   `a` gives NaN. Kernels only pass NaN-free constants as `a`.
//! - Comparisons are ordered (false when either operand is NaN).
//! - `round` rounds to nearest, ties to even.
//! - `scale_pow2(v, n)` is `v · 2ⁿ` for integral `n` in `[-300, 300]`,
//!   rounded once (correct into the subnormal range and to ±∞).

/// One SIMD instruction set, as a token proving the CPU runs it.
// The trait is the whole abstraction; not every build uses every method.
#[allow(dead_code)]
pub(crate) trait Simd: Copy {
    /// `f32` lanes per vector.
    const LANES: usize;
    /// A vector of `LANES` `f32`.
    type V: Copy;
    /// A lane mask, as comparisons produce.
    type M: Copy;

    /// Every lane `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads `LANES` values from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` values at `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Loads the first `n < LANES` lanes from `p`; the others are `fill`.
    ///
    /// # Safety
    /// `p .. p + n` must be readable.
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: Self::V) -> Self::V;
    /// Stores the first `n < LANES` lanes at `p`, touching nothing else.
    ///
    /// # Safety
    /// `p .. p + n` must be writable.
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: Self::V);

    /// A precomputed selection of the first `n` lanes, for loops that load
    /// and store the same partial vector many times (GEMM edge tiles).
    type Tail: Copy;
    /// The first `n` lanes, `1 <= n <= LANES`.
    fn tail(self, n: usize) -> Self::Tail;
    /// Loads the lanes `t` selects; the others are zero.
    ///
    /// # Safety
    /// The selected lanes' addresses must be readable; nothing past them is
    /// accessed.
    unsafe fn load_masked(self, p: *const f32, t: Self::Tail) -> Self::V;
    /// Stores the lanes `t` selects, touching nothing else.
    ///
    /// # Safety
    /// The selected lanes' addresses must be writable.
    unsafe fn store_masked(self, p: *mut f32, v: Self::V, t: Self::Tail);
    /// Every lane `*p` (a broadcast straight from memory).
    ///
    /// # Safety
    /// `p` must be readable.
    unsafe fn broadcast(self, p: *const f32) -> Self::V;
    /// Hints that the cache line holding `p` will be read soon. Never
    /// dereferences `p` (any address is fine); a no-op where the ISA has no
    /// hint.
    fn prefetch(self, p: *const f32);
    /// `a · b + c`: one rounding where the ISA has fused multiply-add (AVX2,
    /// AVX-512, NEON), two on the portable path, where a fused operation
    /// may be a slow library call. For kernels whose error bound allows
    /// either (GEMM); [`Simd::fma`] is always fused.
    fn madd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;

    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`, correctly rounded.
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, rounded once.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c − a · b`, rounded once.
    fn fnma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `√a`, correctly rounded.
    fn sqrt(self, a: Self::V) -> Self::V;
    /// See the module notes on NaN.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// See the module notes on NaN.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `|a|` (clears the sign bit, NaN stays NaN).
    fn abs(self, a: Self::V) -> Self::V;
    /// `|mag|` with the sign bit of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// Round to nearest integer, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `v · 2ⁿ`; see the module notes.
    fn scale_pow2(self, v: Self::V, n: Self::V) -> Self::V;

    /// `(m, e)` with `v = m·2ᵉ`, `m` in `[1, 2)` and `e` integral, for finite
    /// `v > 0` including subnormals (other lanes: unspecified, the caller
    /// selects them away).
    fn split_exponent(self, v: Self::V) -> (Self::V, Self::V);

    /// `a < b`.
    fn lt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a <= b`.
    fn le(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a > b`.
    fn gt(self, a: Self::V, b: Self::V) -> Self::M;
    /// Lanes holding NaN.
    fn is_nan(self, a: Self::V) -> Self::M;
    /// Both masks.
    fn and_m(self, a: Self::M, b: Self::M) -> Self::M;
    /// Either mask.
    fn or_m(self, a: Self::M, b: Self::M) -> Self::M;
    /// Whether any lane is set.
    fn any(self, m: Self::M) -> bool;
    /// `m ? a : b`, lane by lane.
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;

    /// Sum of the lanes (in a fixed order, so results are reproducible).
    fn reduce_sum(self, v: Self::V) -> f32;
    /// `reduce_sum` of four vectors at once, each summed in the same order
    /// as `reduce_sum` sums it (so the same bits), with fewer operations
    /// where the ISA can fold several vectors in one shuffle.
    #[inline(always)]
    fn reduce_sum4(self, v: [Self::V; 4]) -> [f32; 4] {
        v.map(|x| self.reduce_sum(x))
    }
    /// Largest lane (NaN lanes may or may not win).
    fn reduce_max(self, v: Self::V) -> f32;
}

/// Defines `fn $name(isa: Isa, args..) -> ret` that runs the generic kernel
/// `$kernel::<S>(token, args..)` compiled for `isa`.
///
/// ```ignore
/// dispatch!(fn relu_fwd(x: &[f32], y: &mut [f32]) => relu_forward);
/// ```
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $kernel:path) => {
        $(#[$meta])*
        #[allow(unreachable_patterns, clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx512 => {
                    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn run(s: $crate::simd::avx512::Avx512, $($arg: $ty),*) $(-> $ret)? {
                        $kernel(s, $($arg),*)
                    }
                    match $crate::simd::avx512::Avx512::new() {
                        // SAFETY: the token exists only when the CPU runs AVX-512 F/BW/DQ/VL, AVX2, FMA and F16C.
                        Some(s) => unsafe { run(s, $($arg),*) },
                        None => $kernel($crate::simd::scalar::Scalar, $($arg),*),
                    }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx2 => {
                    #[target_feature(enable = "avx2,fma,f16c")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn run(s: $crate::simd::avx2::Avx2, $($arg: $ty),*) $(-> $ret)? {
                        $kernel(s, $($arg),*)
                    }
                    match $crate::simd::avx2::Avx2::new() {
                        // SAFETY: the token exists only when the CPU runs AVX2, FMA and F16C.
                        Some(s) => unsafe { run(s, $($arg),*) },
                        None => $kernel($crate::simd::scalar::Scalar, $($arg),*),
                    }
                }
                #[cfg(target_arch = "aarch64")]
                $crate::simd::Isa::Neon => {
                    #[target_feature(enable = "neon")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn run(s: $crate::simd::neon::Neon, $($arg: $ty),*) $(-> $ret)? {
                        $kernel(s, $($arg),*)
                    }
                    match $crate::simd::neon::Neon::new() {
                        // SAFETY: the token exists only when the CPU runs NEON.
                        Some(s) => unsafe { run(s, $($arg),*) },
                        None => $kernel($crate::simd::scalar::Scalar, $($arg),*),
                    }
                }
                _ => $kernel($crate::simd::scalar::Scalar, $($arg),*),
            }
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::Simd;
    use crate::simd::Isa;
    use proptest::prelude::*;

    /// `reduce_sum4` of four vectors read from `x` against `reduce_sum` of
    /// each, bit for bit.
    fn sums4_match<S: Simd>(s: S, x: &[f32]) -> bool {
        let l = S::LANES;
        assert!(x.len() >= 4 * l);
        // SAFETY: x holds at least 4·LANES elements.
        let v: [S::V; 4] = std::array::from_fn(|t| unsafe { s.load(x.as_ptr().add(t * l)) });
        let four = s.reduce_sum4(v);
        (0..4).all(|t| four[t].to_bits() == s.reduce_sum(v[t]).to_bits())
    }
    dispatch!(fn sums4(x: &[f32]) -> bool => sums4_match);

    proptest! {
        /// Every supported ISA, forced. Magnitudes spread over 40 binades,
        /// so a different summation order changes the rounding.
        #[test]
        fn reduce_sum4_gives_the_bits_of_reduce_sum(
            x in proptest::collection::vec((-1.0f32..1.0, -20i32..20), 64)
                .prop_map(|v| v.into_iter().map(|(m, e)| m * 2f32.powi(e)).collect::<Vec<_>>())
        ) {
            for isa in Isa::supported() {
                prop_assert!(sums4(isa, &x), "{}", isa);
            }
        }
    }
}
