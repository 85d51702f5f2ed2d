//! Portable implementation of [`Simd`]: one `f32` per "vector". Every
//! kernel's scalar path is the same algorithm as its SIMD paths, one lane
//! wide, so the scalar ISA also checks the generic code on any CPU.

use super::vector::Simd;

/// The portable ISA; always available.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    type V = f32;
    type M = bool;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees one readable float.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees one writable float.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, _p: *const f32, _n: usize, fill: f32) -> f32 {
        // n < LANES = 1, so nothing is read.
        fill
    }
    #[inline(always)]
    unsafe fn store_partial(self, _p: *mut f32, _n: usize, _v: f32) {}
    // One lane: every tail is the whole vector.
    type Tail = ();
    #[inline(always)]
    fn tail(self, _n: usize) {}
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, _t: ()) -> f32 {
        // SAFETY: the caller guarantees the one (selected) lane is readable.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, v: f32, _t: ()) {
        // SAFETY: the caller guarantees the one (selected) lane is writable.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    fn prefetch(self, _p: *const f32) {}
    #[inline(always)]
    fn madd(self, a: f32, b: f32, c: f32) -> f32 {
        // Two roundings: without an FMA unit, `mul_add` is a library call.
        a * b + c
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn fnma(self, a: f32, b: f32, c: f32) -> f32 {
        (-a).mul_add(b, c)
    }
    #[inline(always)]
    fn sqrt(self, a: f32) -> f32 {
        a.sqrt()
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn abs(self, a: f32) -> f32 {
        a.abs()
    }
    #[inline(always)]
    fn copysign(self, mag: f32, sign: f32) -> f32 {
        mag.copysign(sign)
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn scale_pow2(self, v: f32, n: f32) -> f32 {
        // Two normal factors so the one rounding (the second product) is correct
        // in the subnormal range and on overflow.
        let n = n.clamp(-300.0, 300.0) as i32;
        let n1 = n >> 1;
        let n2 = n - n1;
        let pow = |k: i32| f32::from_bits(((k.clamp(-126, 127) + 127) as u32) << 23);
        v * pow(n1) * pow(n2)
    }
    #[inline(always)]
    fn split_exponent(self, v: f32) -> (f32, f32) {
        let (v, adj) = if v < f32::MIN_POSITIVE {
            (v * 8_388_608.0, 23)
        } else {
            (v, 0)
        };
        let bits = v.to_bits();
        let e = ((bits >> 23) & 0xff) as i32 - 127 - adj;
        (f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000), e as f32)
    }
    #[inline(always)]
    fn lt(self, a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    fn le(self, a: f32, b: f32) -> bool {
        a <= b
    }
    #[inline(always)]
    fn gt(self, a: f32, b: f32) -> bool {
        a > b
    }
    #[inline(always)]
    fn is_nan(self, a: f32) -> bool {
        a.is_nan()
    }
    #[inline(always)]
    fn and_m(self, a: bool, b: bool) -> bool {
        a && b
    }
    #[inline(always)]
    fn or_m(self, a: bool, b: bool) -> bool {
        a || b
    }
    #[inline(always)]
    fn any(self, m: bool) -> bool {
        m
    }
    #[inline(always)]
    fn select(self, m: bool, a: f32, b: f32) -> f32 {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn reduce_sum(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn reduce_max(self, v: f32) -> f32 {
        v
    }
}
