//! AArch64 NEON implementation of [`Simd`]: 4 `f32` lanes in a `q`
//! register, all-ones `u32` lanes as masks, tails through a stack buffer.

use super::vector::Simd;
use crate::simd::Isa;
use std::arch::aarch64::*;

/// Proof that this CPU runs NEON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Neon(());

impl Neon {
    /// The token, when the CPU supports the ISA.
    #[inline(always)]
    pub(crate) fn new() -> Option<Self> {
        Isa::Neon.is_supported().then_some(Neon(()))
    }

    /// The token without the check, for code reached only through a
    /// dispatch that already made it (the GEMM's per-ISA kernel tables).
    ///
    /// # Safety
    /// The CPU must run NEON.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Neon(())
    }
}

// SAFETY (every `unsafe` block below that calls a register-only intrinsic):
// a `Neon` value exists only after `Neon::new` saw the CPU run NEON.
impl Simd for Neon {
    const LANES: usize = 4;
    type V = float32x4_t;
    type M = uint32x4_t;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees 4 readable floats; ld1 has no alignment requirement.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller guarantees 4 writable floats.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: float32x4_t) -> float32x4_t {
        let mut buf = [0.0f32; 4];
        // SAFETY: `buf` holds 4 floats; the caller guarantees n (< 4) readable floats at p.
        unsafe {
            vst1q_f32(buf.as_mut_ptr(), fill);
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            vld1q_f32(buf.as_ptr())
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: float32x4_t) {
        let mut buf = [0.0f32; 4];
        // SAFETY: `buf` holds 4 floats; the caller guarantees n (< 4) writable floats at p.
        unsafe {
            vst1q_f32(buf.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
        }
    }
    type Tail = usize;
    #[inline(always)]
    fn tail(self, n: usize) -> usize {
        n
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, n: usize) -> float32x4_t {
        // SAFETY: lane l is read only when l < n, and those lanes are readable (caller); token
        // proves NEON. Inside a loop the branches on the loop-invariant `n` predict perfectly.
        unsafe {
            let mut v = vld1q_lane_f32::<0>(p, vdupq_n_f32(0.0));
            if n > 1 {
                v = vld1q_lane_f32::<1>(p.add(1), v);
            }
            if n > 2 {
                v = vld1q_lane_f32::<2>(p.add(2), v);
            }
            if n > 3 {
                v = vld1q_lane_f32::<3>(p.add(3), v);
            }
            v
        }
    }
    #[inline(always)]
    unsafe fn store_masked(self, p: *mut f32, v: float32x4_t, n: usize) {
        // SAFETY: lane l is written only when l < n, and those lanes are writable (caller).
        unsafe {
            vst1q_lane_f32::<0>(p, v);
            if n > 1 {
                vst1q_lane_f32::<1>(p.add(1), v);
            }
            if n > 2 {
                vst1q_lane_f32::<2>(p.add(2), v);
            }
            if n > 3 {
                vst1q_lane_f32::<3>(p.add(3), v);
            }
        }
    }
    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> float32x4_t {
        // SAFETY: the caller guarantees `p` is readable; token proves NEON.
        unsafe { vld1q_dup_f32(p) }
    }
    #[inline(always)]
    fn prefetch(self, _p: *const f32) {
        // Stable Rust has no AArch64 prefetch intrinsic; the hardware
        // prefetchers cover the GEMM's sequential panels.
    }
    #[inline(always)]
    fn madd(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        self.fma(a, b, c)
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. vfmaq(c, a, b) = c + a·b, fused.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn fnma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. vfmsq(c, a, b) = c − a·b, fused.
        unsafe { vfmsq_f32(c, a, b) }
    }
    #[inline(always)]
    fn sqrt(self, a: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vsqrtq_f32(a) }
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. Written as a select to keep x86's "b unless a < b" order.
        unsafe { vbslq_f32(vcltq_f32(a, b), a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. Written as a select to keep x86's "b unless a > b" order.
        unsafe { vbslq_f32(vcgtq_f32(a, b), a, b) }
    }
    #[inline(always)]
    fn abs(self, a: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vabsq_f32(a) }
    }
    #[inline(always)]
    fn copysign(self, mag: float32x4_t, sign: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. Bit select: the sign bit from `sign`, the rest from `mag`.
        unsafe { vbslq_f32(vdupq_n_u32(0x8000_0000), sign, mag) }
    }
    #[inline(always)]
    fn round(self, a: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON (frintn: to nearest, ties to even).
        unsafe { vrndnq_f32(a) }
    }
    #[inline(always)]
    fn scale_pow2(self, v: float32x4_t, n: float32x4_t) -> float32x4_t {
        // Two normal factors so the one rounding (the second product) is correct
        // in the subnormal range and on overflow.
        // SAFETY: token proves NEON.
        unsafe {
            let n = vmaxq_f32(vdupq_n_f32(-300.0), vminq_f32(vdupq_n_f32(300.0), n));
            let ni = vcvtnq_s32_f32(n);
            let n1 = vshrq_n_s32::<1>(ni);
            let n2 = vsubq_s32(ni, n1);
            let lo = vdupq_n_s32(-126);
            let hi = vdupq_n_s32(127);
            let bias = vdupq_n_s32(127);
            let n1 = vmaxq_s32(lo, vminq_s32(hi, n1));
            let n2 = vmaxq_s32(lo, vminq_s32(hi, n2));
            let f1 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n1, bias)));
            let f2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n2, bias)));
            vmulq_f32(vmulq_f32(v, f1), f2)
        }
    }
    #[inline(always)]
    fn split_exponent(self, v: float32x4_t) -> (float32x4_t, float32x4_t) {
        // SAFETY: token proves NEON. Same scheme as the AVX2 path.
        unsafe {
            let sub = vcltq_f32(v, vdupq_n_f32(f32::MIN_POSITIVE));
            let v = vbslq_f32(sub, vmulq_f32(v, vdupq_n_f32(8_388_608.0)), v);
            let adj = vbslq_f32(sub, vdupq_n_f32(23.0), vdupq_n_f32(0.0));
            let bits = vreinterpretq_u32_f32(v);
            let e = vsubq_s32(vreinterpretq_s32_u32(vshrq_n_u32::<23>(bits)), vdupq_n_s32(127));
            let e = vsubq_f32(vcvtq_f32_s32(e), adj);
            let m = vorrq_u32(vandq_u32(bits, vdupq_n_u32(0x007f_ffff)), vdupq_n_u32(0x3f80_0000));
            (vreinterpretq_f32_u32(m), e)
        }
    }
    #[inline(always)]
    fn lt(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vcltq_f32(a, b) }
    }
    #[inline(always)]
    fn le(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vcleq_f32(a, b) }
    }
    #[inline(always)]
    fn gt(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vcgtq_f32(a, b) }
    }
    #[inline(always)]
    fn is_nan(self, a: float32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON. NaN is the one value not equal to itself.
        unsafe { vmvnq_u32(vceqq_f32(a, a)) }
    }
    #[inline(always)]
    fn and_m(self, a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vandq_u32(a, b) }
    }
    #[inline(always)]
    fn or_m(self, a: uint32x4_t, b: uint32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vorrq_u32(a, b) }
    }
    #[inline(always)]
    fn any(self, m: uint32x4_t) -> bool {
        // SAFETY: token proves NEON.
        unsafe { vmaxvq_u32(m) != 0 }
    }
    #[inline(always)]
    fn select(self, m: uint32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vbslq_f32(m, a, b) }
    }
    #[inline(always)]
    fn reduce_sum(self, v: float32x4_t) -> f32 {
        // SAFETY: token proves NEON. Pairwise, the same tree as the x86 paths.
        unsafe {
            let s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
            vget_lane_f32::<0>(s) + vget_lane_f32::<1>(s)
        }
    }
    #[inline(always)]
    fn reduce_max(self, v: float32x4_t) -> f32 {
        // SAFETY: token proves NEON.
        unsafe { vmaxvq_f32(v) }
    }
}
