//! IEEE helpers: directed rounding, flush-to-zero, 16-bit float conversions.

use half::{bf16, f16};

use crate::ir::Rnd;

pub(crate) fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

pub(crate) fn next_up32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub(crate) fn next_down32(x: f32) -> f32 {
    -next_up32(-x)
}

/// Rounds the exact value `s + e` (with `|e|` far below an ulp of `s`, as
/// error-free transformations give) to f32 in mode `rnd`.
pub(crate) fn round_f32(s: f64, e: f64, rnd: Rnd) -> f32 {
    if s.is_nan() {
        return f32::NAN;
    }
    let r = s as f32;
    let rf = r as f64;
    // sign of (r - exact)
    let above = rf > s || (rf == s && e < 0.0);
    let below = rf < s || (rf == s && e > 0.0);
    let ord = if above {
        1
    } else if below {
        -1
    } else {
        0
    };
    match rnd {
        Rnd::Rn | Rnd::Rna => {
            if ord != 0 && rf == s {
                // s is representable, the tail e decides; r is the nearest already unless
                // s sits exactly at a midpoint, which cannot happen when rf == s.
                r
            } else if ord != 0 && e != 0.0 {
                // s may be an exact midpoint that the tail pushes one way.
                let lo = if ord > 0 { next_down32(r) } else { r };
                let hi = if ord > 0 { r } else { next_up32(r) };
                let mid = (lo as f64 + hi as f64) / 2.0;
                if s == mid {
                    if e > 0.0 {
                        hi
                    } else {
                        lo
                    }
                } else {
                    r
                }
            } else {
                r
            }
        }
        Rnd::Rz => {
            if (r > 0.0 || (r == 0.0 && r.is_sign_positive())) && ord > 0
                || (r < 0.0 || (r == 0.0 && r.is_sign_negative())) && ord < 0
            {
                if r == 0.0 {
                    r
                } else {
                    f32::from_bits(r.to_bits() - 1)
                }
            } else {
                r
            }
        }
        Rnd::Rm => {
            if ord > 0 {
                next_down32(r)
            } else {
                r
            }
        }
        Rnd::Rp => {
            if ord < 0 {
                next_up32(r)
            } else {
                r
            }
        }
    }
}

/// Error-free sum: `a + b == s + e` exactly.
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

pub(crate) fn add32(a: f32, b: f32, rnd: Rnd) -> f32 {
    if rnd == Rnd::Rn || !(a + b).is_finite() {
        return a + b;
    }
    let (s, e) = two_sum(a as f64, b as f64);
    if s == 0.0 && e == 0.0 {
        // exact zero: sign follows IEEE (−0 only in round-down, or when both are −0)
        return if a.to_bits() == b.to_bits() {
            a
        } else if rnd == Rnd::Rm {
            -0.0
        } else {
            0.0
        };
    }
    round_f32(s, e, rnd)
}

pub(crate) fn mul32(a: f32, b: f32, rnd: Rnd) -> f32 {
    let p = a * b;
    if rnd == Rnd::Rn || !p.is_finite() || p == 0.0 {
        return p;
    }
    round_f32(a as f64 * b as f64, 0.0, rnd)
}

pub(crate) fn fma32(a: f32, b: f32, c: f32, rnd: Rnd) -> f32 {
    let r = a.mul_add(b, c);
    if rnd == Rnd::Rn || !r.is_finite() || r == 0.0 {
        return r;
    }
    let p = a as f64 * b as f64; // exact
    let (s, e) = two_sum(p, c as f64);
    round_f32(s, e, rnd)
}

pub(crate) fn div32(a: f32, b: f32, rnd: Rnd) -> f32 {
    let q = a / b;
    if rnd == Rnd::Rn || !q.is_finite() || q == 0.0 {
        return q;
    }
    let (a, b) = (a as f64, b as f64);
    let q = a / b;
    let rem = (-q).mul_add(b, a); // exact remainder
    round_f32(q, rem / b, rnd)
}

pub(crate) fn sqrt32(a: f32, rnd: Rnd) -> f32 {
    let r = a.sqrt();
    if rnd == Rnd::Rn || !r.is_finite() || r == 0.0 {
        return r;
    }
    let a = a as f64;
    let s = a.sqrt();
    let rem = (-s).mul_add(s, a);
    round_f32(s, rem, rnd)
}

/// Rounds an exact value to f16 or bf16 bits in mode `rnd`.
pub(crate) fn round_16(x: f64, bf: bool, rnd: Rnd) -> u16 {
    let to = |v: f64| -> u16 {
        if bf {
            bf16::from_f64(v).to_bits()
        } else {
            f16::from_f64(v).to_bits()
        }
    };
    let back = |b: u16| -> f64 {
        if bf {
            bf16::from_bits(b).to_f64()
        } else {
            f16::from_bits(b).to_f64()
        }
    };
    let r = to(x);
    if x.is_nan() || matches!(rnd, Rnd::Rn) {
        return r;
    }
    let rf = back(r);
    if rf == x {
        return r;
    }
    let neg = r & 0x8000 != 0;
    let mag_down = |b: u16| if b & 0x7fff == 0 { b } else { b - 1 };
    let up = |b: u16| -> u16 {
        // next value toward +inf
        if b == 0x8000 {
            1
        } else if neg {
            b - 1
        } else {
            b + 1
        }
    };
    let down = |b: u16| -> u16 {
        if b == 0 {
            0x8001
        } else if neg {
            b + 1
        } else {
            b - 1
        }
    };
    match rnd {
        Rnd::Rz => {
            if rf.abs() > x.abs() {
                mag_down(r)
            } else {
                r
            }
        }
        Rnd::Rm => {
            if rf > x {
                down(r)
            } else {
                r
            }
        }
        Rnd::Rp => {
            if rf < x {
                up(r)
            } else {
                r
            }
        }
        Rnd::Rn | Rnd::Rna => {
            // ties away from zero: only differs from ties-to-even at exact midpoints
            if rnd == Rnd::Rna {
                let other = if rf < x { up(r) } else { down(r) };
                let of = back(other);
                if (of - x).abs() == (rf - x).abs() && of.abs() > rf.abs() {
                    return other;
                }
            }
            r
        }
    }
}

pub(crate) fn f16_to_f64(b: u16, bf: bool) -> f64 {
    if bf {
        bf16::from_bits(b).to_f64()
    } else {
        f16::from_bits(b).to_f64()
    }
}

/// f32 to tf32 (19-bit) in the low-13-bits-zero format, nearest with ties away.
pub(crate) fn tf32_rna(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        return b | 0x0040_0000;
    }
    if x.is_infinite() {
        return b;
    }
    (b.wrapping_add(0x1000)) & !0x1fff
}

/// Rounds a finite float to an integral value in `rnd`.
pub(crate) fn round_int(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rn => x.round_ties_even(),
        Rnd::Rz => x.trunc(),
        Rnd::Rm => x.floor(),
        Rnd::Rp => x.ceil(),
        Rnd::Rna => x.round(),
    }
}
