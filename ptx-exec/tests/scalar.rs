//! Scalar instruction families against results computed in Rust: integer
//! arithmetic and logic, comparisons and selects, f32 arithmetic with its
//! rounding modes and flush-to-zero, the approximate functions, conversions.

mod common;
use common::*;

/// Runs `body` on many random input pairs and compares `%r16` with `want(a, b)`.
fn check2(body: &str, want: impl Fn(u32, u32) -> u32) {
    // one launch, one thread per input pair
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let n = 64u32;
    let pairs: Vec<(u32, u32)> = (0..n).map(|_| (rng.int(), rng.int())).collect();
    let m = module(&format!(
        ".visible .entry t(.param .u64 pin, .param .u64 pout)\n{{\n\
         .reg .pred %p<8>;\n.reg .b32 %r<32>;\n.reg .b64 %rd<32>;\n\
         ld.param.u64 %rd30, [pin];\nld.param.u64 %rd31, [pout];\n\
         mov.u32 %r24, %tid.x;\nmul.wide.u32 %rd29, %r24, 8;\nadd.s64 %rd28, %rd30, %rd29;\n\
         ld.global.u32 %r0, [%rd28];\nld.global.u32 %r1, [%rd28+4];\n\
         ld.global.u64 %rd0, [%rd28];\n\
         {body}\n\
         mul.wide.u32 %rd29, %r24, 4;\nadd.s64 %rd29, %rd31, %rd29;\nst.global.u32 [%rd29], %r16;\nret;\n}}\n"
    ));
    let mut mem = nnkern_ptx_exec::Memory::new();
    let input: Vec<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    let pin = mem.alloc_u32(&input);
    let pout = mem.alloc(4 * n as usize);
    nnkern_ptx_exec::launch(
        &mut mem,
        m.kernel("t").unwrap(),
        (1, 1, 1),
        (n, 1, 1),
        0,
        &[nnkern_ptx_exec::Param::Ptr(pin), nnkern_ptx_exec::Param::Ptr(pout)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = mem.read_u32(pout).unwrap();
    for (i, &(a, b)) in pairs.iter().enumerate() {
        assert_eq!(out[i], want(a, b), "`{body}` with a = {a:#x}, b = {b:#x}");
    }
}

#[test]
fn integer_arithmetic() {
    check2("add.s32 %r16, %r0, %r1;", |a, b| a.wrapping_add(b));
    check2("sub.u32 %r16, %r0, %r1;", |a, b| a.wrapping_sub(b));
    check2("add.sat.s32 %r16, %r0, %r1;", |a, b| {
        (a as i32).saturating_add(b as i32) as u32
    });
    check2("sub.sat.s32 %r16, %r0, %r1;", |a, b| {
        (a as i32).saturating_sub(b as i32) as u32
    });
    check2("mul.lo.s32 %r16, %r0, %r1;", |a, b| a.wrapping_mul(b));
    check2("mul.hi.u32 %r16, %r0, %r1;", |a, b| {
        ((a as u64 * b as u64) >> 32) as u32
    });
    check2("mul.hi.s32 %r16, %r0, %r1;", |a, b| {
        ((a as i32 as i64 * b as i32 as i64) >> 32) as u32
    });
    check2(
        "mul.wide.u32 %rd1, %r0, %r1; shr.u64 %rd1, %rd1, 17; cvt.u32.u64 %r16, %rd1;",
        |a, b| ((a as u64 * b as u64) >> 17) as u32,
    );
    check2(
        "mul.wide.s32 %rd1, %r0, %r1; shr.s64 %rd1, %rd1, 20; cvt.u32.u64 %r16, %rd1;",
        |a, b| ((a as i32 as i64 * b as i32 as i64) >> 20) as u32,
    );
    check2("mad.lo.u32 %r16, %r0, %r1, 12345;", |a, b| {
        a.wrapping_mul(b).wrapping_add(12345)
    });
    check2("mad.hi.s32 %r16, %r0, %r1, -7;", |a, b| {
        (((a as i32 as i64 * b as i32 as i64) >> 32) as i32).wrapping_add(-7) as u32
    });
    check2(
        "mad.wide.u32 %rd1, %r0, %r1, %rd0; shr.u64 %rd1, %rd1, 32; cvt.u32.u64 %r16, %rd1;",
        |a, b| {
            let c = a as u64 | (b as u64) << 32;
            ((a as u64 * b as u64).wrapping_add(c) >> 32) as u32
        },
    );
    check2("div.u32 %r16, %r0, %r1;", |a, b| a.checked_div(b).unwrap_or(u32::MAX));
    check2("rem.u32 %r16, %r0, %r1;", |a, b| a.checked_rem(b).unwrap_or(a));
    check2("div.s32 %r16, %r0, %r1;", |a, b| {
        if b == 0 {
            u32::MAX
        } else {
            (a as i32).wrapping_div(b as i32) as u32
        }
    });
    check2("rem.s32 %r16, %r0, %r1;", |a, b| {
        if b == 0 {
            a
        } else {
            (a as i32).wrapping_rem(b as i32) as u32
        }
    });
    check2("min.s32 %r16, %r0, %r1;", |a, b| (a as i32).min(b as i32) as u32);
    check2("max.s32 %r16, %r0, %r1;", |a, b| (a as i32).max(b as i32) as u32);
    check2("min.u32 %r16, %r0, %r1;", |a, b| a.min(b));
    check2("max.u32 %r16, %r0, %r1;", |a, b| a.max(b));
    check2("neg.s32 %r16, %r0;", |a, _| a.wrapping_neg());
    check2("abs.s32 %r16, %r0;", |a, _| (a as i32).wrapping_abs() as u32);
    check2(
        "add.u64 %rd1, %rd0, %rd0; shr.u64 %rd1, %rd1, 31; cvt.u32.u64 %r16, %rd1;",
        |a, b| {
            let x = a as u64 | (b as u64) << 32;
            (x.wrapping_add(x) >> 31) as u32
        },
    );
    check2(
        "mul.lo.u64 %rd1, %rd0, %rd0; shr.u64 %rd1, %rd1, 40; cvt.u32.u64 %r16, %rd1;",
        |a, b| {
            let x = a as u64 | (b as u64) << 32;
            (x.wrapping_mul(x) >> 40) as u32
        },
    );
}

#[test]
fn integer_logic_and_bits() {
    check2("and.b32 %r16, %r0, %r1;", |a, b| a & b);
    check2("or.b32 %r16, %r0, %r1;", |a, b| a | b);
    check2("xor.b32 %r16, %r0, %r1;", |a, b| a ^ b);
    check2("not.b32 %r16, %r0;", |a, _| !a);
    check2("cnot.b32 %r16, %r0;", |a, _| (a == 0) as u32);
    check2("and.b32 %r2, %r1, 63; shl.b32 %r16, %r0, %r2;", |a, b| {
        let s = b & 63;
        if s >= 32 {
            0
        } else {
            a << s
        }
    });
    check2("and.b32 %r2, %r1, 63; shr.u32 %r16, %r0, %r2;", |a, b| {
        let s = b & 63;
        if s >= 32 {
            0
        } else {
            a >> s
        }
    });
    check2("and.b32 %r2, %r1, 63; shr.s32 %r16, %r0, %r2;", |a, b| {
        ((a as i32) >> (b & 63).min(31)) as u32
    });
    check2("popc.b32 %r16, %r0;", |a, _| a.count_ones());
    check2("clz.b32 %r16, %r0;", |a, _| a.leading_zeros());
    check2("brev.b32 %r16, %r0;", |a, _| a.reverse_bits());
    check2("bfind.u32 %r16, %r0;", |a, _| {
        if a == 0 {
            u32::MAX
        } else {
            31 - a.leading_zeros()
        }
    });
    check2("bfind.shiftamt.u32 %r16, %r0;", |a, _| {
        if a == 0 {
            u32::MAX
        } else {
            a.leading_zeros()
        }
    });
    check2("bfind.s32 %r16, %r0;", |a, _| {
        let v = if (a as i32) < 0 { !a } else { a };
        if v == 0 {
            u32::MAX
        } else {
            31 - v.leading_zeros()
        }
    });
    check2("mul24.lo.u32 %r16, %r0, %r1;", |a, b| {
        ((a & 0xff_ffff) as u64 * (b & 0xff_ffff) as u64) as u32
    });
    check2("mul24.hi.s32 %r16, %r0, %r1;", |a, b| {
        let s24 = |x: u32| ((x << 8) as i32 >> 8) as i64;
        ((s24(a) * s24(b)) >> 16) as u32
    });
    check2("bfe.u32 %r16, %r0, 5, 9;", |a, _| (a >> 5) & 0x1ff);
    check2("bfe.s32 %r16, %r0, 5, 9;", |a, _| {
        (((a >> 5) << 23) as i32 >> 23) as u32
    });
    check2("bfe.u32 %r16, %r0, 28, 9;", |a, _| a >> 28);
    check2("bfi.b32 %r16, %r0, %r1, 8, 12;", |a, b| {
        (b & !(0xfff << 8)) | ((a & 0xfff) << 8)
    });
    // prmt: bytes of {b, a}; 0x5140 picks a.b0, b.b0, a.b1, b.b1
    check2("prmt.b32 %r16, %r0, %r1, 0x5140;", |a, b| {
        let bytes = (a as u64 | (b as u64) << 32).to_le_bytes();
        u32::from_le_bytes([bytes[0], bytes[4], bytes[1], bytes[5]])
    });
    // sign replication: selector 0x8 takes a.b0's sign
    check2("prmt.b32 %r16, %r0, %r1, 0x0008;", |a, _| {
        let lo = if a & 0x80 != 0 { 0xff } else { 0 };
        u32::from_le_bytes([lo, a as u8, a as u8, a as u8])
    });
    // lop3 with the LUT of (a & b) ^ c
    check2("lop3.b32 %r16, %r0, %r1, 0x0f0f0f0f, 0x6a;", |a, b| {
        (a & b) ^ 0x0f0f_0f0f
    });
    check2(
        "selp.b32 %r16, %r0, %r1, 1; setp.lt.u32 %p1, %r0, %r1; selp.b32 %r16, %r0, %r1, %p1;",
        |a, b| a.min(b),
    );
}

#[test]
fn comparisons_and_predicate_logic() {
    type Case = (&'static str, fn(u32, u32) -> bool);
    let cases: [Case; 14] = [
        ("eq.u32", |a, b| a == b),
        ("ne.u32", |a, b| a != b),
        ("lt.s32", |a, b| (a as i32) < b as i32),
        ("le.s32", |a, b| (a as i32) <= b as i32),
        ("gt.s32", |a, b| (a as i32) > b as i32),
        ("ge.s32", |a, b| (a as i32) >= b as i32),
        ("lt.u32", |a, b| a < b),
        ("le.u32", |a, b| a <= b),
        ("gt.u32", |a, b| a > b),
        ("ge.u32", |a, b| a >= b),
        ("lo.u32", |a, b| a < b),
        ("ls.u32", |a, b| a <= b),
        ("hi.u32", |a, b| a > b),
        ("hs.u32", |a, b| a >= b),
    ];
    for (op, cmp) in cases {
        check2(
            &format!("setp.{op} %p1, %r0, %r1; selp.u32 %r16, 1, 0, %p1;"),
            move |a, b| cmp(a, b) as u32,
        );
    }
    // p|q with a boolean combination: p = (a<b) & (a odd), q = !(a<b) & (a odd)
    check2(
        "and.b32 %r2, %r0, 1; setp.ne.u32 %p3, %r2, 0; setp.lt.and.u32 %p1|%p2, %r0, %r1, %p3; \
         selp.u32 %r3, 1, 0, %p1; selp.u32 %r4, 2, 0, %p2; or.b32 %r16, %r3, %r4;",
        |a, b| ((a < b) && a & 1 == 1) as u32 | (((a >= b) && a & 1 == 1) as u32) << 1,
    );
    check2(
        "setp.ne.u32 %p0, %r0, %r0; setp.gt.or.s32 %p1, %r0, %r1, !%p0; selp.u32 %r16, 1, 0, %p1;",
        |_, _| 1,
    );
    check2(
        "setp.ne.u32 %p1, %r0, 0; setp.ne.u32 %p2, %r1, 0; xor.pred %p3, %p1, %p2; not.pred %p4, %p3; \
         selp.u32 %r16, 1, 0, %p4;",
        |a, b| ((a != 0) == (b != 0)) as u32,
    );
    // float comparisons, ordered and unordered, with NaN
    let nan = f32::NAN.to_bits();
    let r = run(
        "setp.lt.f32 %p1, %f0, %f1; selp.u32 %r16, 1, 0, %p1;\
         setp.ltu.f32 %p1, %f0, %f2; selp.u32 %r17, 1, 0, %p1;\
         setp.lt.f32 %p1, %f0, %f2; selp.u32 %r18, 1, 0, %p1;\
         setp.nan.f32 %p1, %f0, %f2; selp.u32 %r19, 1, 0, %p1;\
         setp.num.f32 %p1, %f0, %f1; selp.u32 %r20, 1, 0, %p1;\
         setp.ne.f32 %p1, %f2, %f2; selp.u32 %r21, 1, 0, %p1;\
         setp.neu.f32 %p1, %f2, %f2; selp.u32 %r22, 1, 0, %p1;\
         setp.eq.f32 %p1, %f3, %f4; selp.u32 %r23, 1, 0, %p1;",
        &[f(1.0), f(2.0), nan, f(0.0), f(-0.0)],
    );
    assert_eq!(&r[..8], &[1, 1, 0, 1, 1, 0, 1, 1]);
}

#[test]
fn f32_arithmetic_matches_ieee() {
    let mut rng = Rng(42);
    for _ in 0..32 {
        let (a, b, c) = (rng.f32(), rng.f32(), rng.f32());
        let r = run(
            "add.rn.f32 %f16, %f0, %f1; mov.b32 %r16, %f16;\
             sub.f32 %f16, %f0, %f1; mov.b32 %r17, %f16;\
             mul.rn.f32 %f16, %f0, %f1; mov.b32 %r18, %f16;\
             fma.rn.f32 %f16, %f0, %f1, %f2; mov.b32 %r19, %f16;\
             div.rn.f32 %f16, %f0, %f1; mov.b32 %r20, %f16;\
             abs.f32 %f16, %f0; sqrt.rn.f32 %f16, %f16; mov.b32 %r21, %f16;\
             rcp.rn.f32 %f16, %f1; mov.b32 %r22, %f16;\
             mad.rn.f32 %f16, %f0, %f1, %f2; mov.b32 %r23, %f16;",
            &[f(a), f(b), f(c)],
        );
        assert_eq!(r[0], f(a + b));
        assert_eq!(r[1], f(a - b));
        assert_eq!(r[2], f(a * b));
        assert_eq!(r[3], f(a.mul_add(b, c)));
        assert_eq!(r[4], f(a / b));
        assert_eq!(r[5], f(a.abs().sqrt()));
        assert_eq!(r[6], f(1.0 / b));
        assert_eq!(r[7], f(a.mul_add(b, c)));
    }
    // fma rounds once: (1+e)(1-e) - 1 = -e² exactly, where mul then add gives 0
    let e = f32::EPSILON;
    let r = run(
        "fma.rn.f32 %f16, %f0, %f1, %f2; mov.b32 %r16, %f16; mul.rn.f32 %f17, %f0, %f1; add.rn.f32 %f17, %f17, %f2; mov.b32 %r17, %f17;",
        &[f(1.0 + e), f(1.0 - e), f(-1.0)],
    );
    assert_eq!(fl(r[0]), -e * e);
    assert_eq!(fl(r[1]), 0.0);
}

#[test]
fn f32_directed_rounding() {
    let tiny = 2f32.powi(-30);
    let one_up = 1.0 + f32::EPSILON;
    let r = run(
        "add.rz.f32 %f16, %f0, %f1; mov.b32 %r16, %f16;\
         add.rp.f32 %f16, %f0, %f1; mov.b32 %r17, %f16;\
         add.rm.f32 %f16, %f0, %f1; mov.b32 %r18, %f16;\
         sub.rm.f32 %f16, %f0, %f1; mov.b32 %r19, %f16;\
         sub.rz.f32 %f16, %f0, %f1; mov.b32 %r20, %f16;\
         neg.f32 %f3, %f0; add.rz.f32 %f16, %f3, %f1; mov.b32 %r21, %f16;\
         mul.rp.f32 %f16, %f2, %f2; mov.b32 %r22, %f16;\
         fma.rm.f32 %f16, %f2, %f2, %f1; mov.b32 %r23, %f16;",
        &[f(1.0), f(tiny), f(one_up)],
    );
    assert_eq!(fl(r[0]), 1.0);
    assert_eq!(fl(r[1]), one_up);
    assert_eq!(fl(r[2]), 1.0);
    assert_eq!(fl(r[3]), 1.0 - f32::EPSILON / 2.0);
    assert_eq!(fl(r[4]), 1.0 - f32::EPSILON / 2.0);
    assert_eq!(fl(r[5]), -(1.0 - f32::EPSILON / 2.0));
    // (1+e)² = 1 + 2e + e²: rounds up to 1 + 3e... no: next above 1+2e
    assert_eq!(fl(r[6]), 1.0 + 3.0 * f32::EPSILON);
    assert_eq!(fl(r[7]), 1.0 + 2.0 * f32::EPSILON);
    let r = run(
        "div.rz.f32 %f16, %f0, %f1; mov.b32 %r16, %f16; div.rp.f32 %f16, %f0, %f1; mov.b32 %r17, %f16;\
         sqrt.rm.f32 %f16, %f2; mov.b32 %r18, %f16; sqrt.rp.f32 %f16, %f2; mov.b32 %r19, %f16;",
        &[f(1.0), f(3.0), f(2.0)],
    );
    // the neighbours of the exact value, below and above
    let around = |exact: f64| {
        let n = exact as f32;
        if (n as f64) > exact {
            (f32::from_bits(n.to_bits() - 1), n)
        } else {
            (n, f32::from_bits(n.to_bits() + 1))
        }
    };
    let (lo, hi) = around(1.0 / 3.0);
    assert_eq!((fl(r[0]), fl(r[1])), (lo, hi));
    let (lo, hi) = around(2f64.sqrt());
    assert_eq!((fl(r[2]), fl(r[3])), (lo, hi));
}

#[test]
fn f32_ftz_sat_min_max() {
    let sub = f32::from_bits(0x0000_1234);
    let nan = f32::NAN;
    let r = run(
        "add.ftz.f32 %f16, %f0, %f1; mov.b32 %r16, %f16;\
         add.f32 %f16, %f0, %f1; mov.b32 %r17, %f16;\
         add.sat.f32 %f16, %f2, %f2; mov.b32 %r18, %f16;\
         mul.sat.f32 %f16, %f3, %f2; mov.b32 %r19, %f16;\
         min.f32 %f16, %f3, %f2; mov.b32 %r20, %f16;\
         max.f32 %f16, %f4, %f5; mov.b32 %r21, %f16;\
         max.NaN.f32 %f16, %f3, %f2; mov.b32 %r22, %f16;\
         add.sat.f32 %f16, %f3, %f2; mov.b32 %r23, %f16;",
        &[f(sub), f(0.0), f(0.75), f(nan), f(-0.0), f(0.0)],
    );
    assert_eq!(fl(r[0]), 0.0);
    assert_eq!(r[1], f(sub));
    assert_eq!(fl(r[2]), 1.0);
    assert_eq!(fl(r[3]), 0.0, "sat of NaN is +0");
    assert_eq!(fl(r[4]), 0.75, "min with one NaN gives the other");
    assert_eq!(r[5], f(0.0), "max(-0, +0) = +0");
    assert!(fl(r[6]).is_nan());
    assert_eq!(fl(r[7]), 0.0);
    let r = run(
        "mul.ftz.f32 %f16, %f0, %f1; mov.b32 %r16, %f16; fma.rn.ftz.f32 %f16, %f0, %f1, %f2; mov.b32 %r17, %f16;\
         mul.f32 %f16, %f0, %f1; mov.b32 %r18, %f16;",
        &[f(2f32.powi(-70)), f(2f32.powi(-70)), f(-0.0)],
    );
    assert_eq!(r[0], f(0.0));
    assert_eq!(r[1], f(0.0));
    assert_eq!(r[2], 512, "2^-140 is the subnormal 512 * 2^-149");
}

#[test]
fn f32_approximate_functions() {
    for x in [-3.7f32, -0.5, 0.0, 0.3, 1.0, 2.5, 10.0, 88.0] {
        let r = run(
            "ex2.approx.f32 %f16, %f0; mov.b32 %r16, %f16;\
             ex2.approx.ftz.f32 %f16, %f0; mov.b32 %r17, %f16;\
             abs.f32 %f3, %f0; add.f32 %f3, %f3, 0f3F800000; rcp.approx.f32 %f16, %f3; mov.b32 %r18, %f16;\
             rsqrt.approx.f32 %f16, %f3; mov.b32 %r19, %f16;\
             lg2.approx.f32 %f16, %f3; mov.b32 %r20, %f16;\
             tanh.approx.f32 %f16, %f0; mov.b32 %r21, %f16;\
             sin.approx.f32 %f16, %f0; mov.b32 %r22, %f16;\
             sqrt.approx.f32 %f16, %f3; mov.b32 %r23, %f16;",
            &[f(x)],
        );
        let y = x.abs() + 1.0;
        let close = |got: u32, want: f64, what: &str| {
            let got = fl(got) as f64;
            assert!(
                (got - want).abs() <= 2f64.powi(-22) * want.abs() + 1e-30,
                "{what}({x}) = {got}, want {want}"
            );
        };
        close(r[0], (x as f64).exp2(), "ex2");
        close(r[1], (x as f64).exp2(), "ex2.ftz");
        close(r[2], 1.0 / y as f64, "rcp");
        close(r[3], 1.0 / (y as f64).sqrt(), "rsqrt");
        close(r[4], (y as f64).log2(), "lg2");
        close(r[5], (x as f64).tanh(), "tanh");
        assert!((fl(r[6]) as f64 - (x as f64).sin()).abs() < 1e-6, "sin({x})");
        close(r[7], (y as f64).sqrt(), "sqrt.approx");
    }
    // special values: ex2(-inf) = +0, rsqrt(+0) = +inf, rcp(-0) = -inf, lg2(0) = -inf
    let r = run(
        "ex2.approx.f32 %f16, %f0; mov.b32 %r16, %f16; rsqrt.approx.f32 %f16, %f1; mov.b32 %r17, %f16;\
         rcp.approx.f32 %f16, %f2; mov.b32 %r18, %f16; lg2.approx.f32 %f16, %f1; mov.b32 %r19, %f16;",
        &[f(f32::NEG_INFINITY), f(0.0), f(-0.0)],
    );
    assert_eq!(
        r[..4],
        [f(0.0), f(f32::INFINITY), f(f32::NEG_INFINITY), f(f32::NEG_INFINITY)]
    );
}

#[test]
fn f64_arithmetic() {
    let r = run(
        "cvt.f64.f32 %fd0, %f0; cvt.f64.f32 %fd1, %f1; mul.rn.f64 %fd2, %fd0, %fd1; fma.rn.f64 %fd2, %fd2, %fd0, %fd1;\
         div.rn.f64 %fd3, %fd2, %fd1; sqrt.rn.f64 %fd3, %fd3; add.rn.f64 %fd3, %fd3, %fd0;\
         mov.b64 %rd5, %fd3; mov.b64 {%r16, %r17}, %rd5; cvt.rn.f32.f64 %f16, %fd3; mov.b32 %r18, %f16;\
         setp.gtu.f64 %p1, %fd3, %fd0; selp.u32 %r19, 1, 0, %p1;",
        &[f(1.5), f(0.1)],
    );
    let (a, b) = (1.5f64, 0.1f32 as f64);
    let want = ((a * b).mul_add(a, b) / b).sqrt() + a;
    assert_eq!(r[0] as u64 | (r[1] as u64) << 32, want.to_bits());
    assert_eq!(fl(r[2]), want as f32);
    assert_eq!(r[3], 1);
}

#[test]
fn conversions() {
    let r = run(
        "cvt.rni.s32.f32 %r16, %f0; cvt.rzi.s32.f32 %r17, %f0; cvt.rmi.s32.f32 %r18, %f0; cvt.rpi.s32.f32 %r19, %f0;\
         cvt.rni.s32.f32 %r20, %f1; cvt.rzi.u32.f32 %r21, %f2; cvt.rzi.u32.f32 %r22, %f3; cvt.rzi.s32.f32 %r23, %f4;",
        &[f(-2.5), f(3.5), f(-7.0), f(1e20), f(f32::NAN)],
    );
    assert_eq!(
        r,
        vec![
            -2i32 as u32,
            -2i32 as u32,
            -3i32 as u32,
            -2i32 as u32,
            4,
            0,
            u32::MAX,
            0
        ]
    );

    let big = (1 << 24) + 1; // not representable in f32
    let r = run(
        "cvt.rn.f32.s32 %f16, %r0; mov.b32 %r16, %f16; cvt.rz.f32.s32 %f16, %r0; mov.b32 %r17, %f16;\
         cvt.rp.f32.s32 %f16, %r0; mov.b32 %r18, %f16; cvt.rm.f32.s32 %f16, %r1; mov.b32 %r19, %f16;\
         cvt.rn.f32.u32 %f16, %r2; mov.b32 %r20, %f16; cvt.rni.f32.f32 %f16, %f3; mov.b32 %r21, %f16;\
         cvt.rzi.f32.f32 %f16, %f4; mov.b32 %r22, %f16; cvt.sat.f32.f32 %f16, %f5; mov.b32 %r23, %f16;",
        &[big, (-(big as i32)) as u32, u32::MAX, f(2.5), f(-3.75), f(1.5)],
    );
    assert_eq!(fl(r[0]), 16777216.0);
    assert_eq!(fl(r[1]), 16777216.0);
    assert_eq!(fl(r[2]), 16777218.0);
    assert_eq!(fl(r[3]), -16777218.0);
    assert_eq!(fl(r[4]), 4294967296.0);
    assert_eq!(fl(r[5]), 2.0);
    assert_eq!(fl(r[6]), -3.0);
    assert_eq!(fl(r[7]), 1.0);

    // integer widening and narrowing
    let r = run(
        "cvt.s64.s32 %rd5, %r0; mov.b64 {%r16, %r17}, %rd5; cvt.u64.u32 %rd5, %r0; mov.b64 {%r18, %r19}, %rd5;\
         cvt.u32.u64 %r20, %rd2; cvt.s8.s32 %r21, %r2; cvt.sat.s8.s32 %r22, %r2; cvt.sat.u16.s32 %r23, %r0;",
        &[-5i32 as u32, 0, 0x1ff, 0, 0x1234_5678, 7],
    );
    assert_eq!(r[..4], [-5i32 as u32, u32::MAX, -5i32 as u32, 0]);
    assert_eq!(r[4], 0x1234_5678);
    assert_eq!(
        r[5], 0xffff_ffff,
        "cvt.s8 sign-extends the low byte into the 32-bit register"
    );
    assert_eq!(r[6], 127);
    assert_eq!(r[7], 0);
}

#[test]
fn half_precision_conversions() {
    use nnkern_ptx_exec::{bf16, f16};
    let mut rng = Rng(7);
    for _ in 0..16 {
        let x = rng.f32();
        let y = rng.f32();
        let r = run(
            "cvt.rn.bf16.f32 %h0, %f0; mov.b16 %h1, %h0; cvt.f32.bf16 %f16, %h1; mov.b32 %r16, %f16;\
             cvt.rn.f16.f32 %h2, %f0; cvt.f32.f16 %f16, %h2; mov.b32 %r17, %f16;\
             cvt.rn.bf16x2.f32 %r18, %f0, %f1;\
             cvt.rn.f16x2.f32 %r19, %f0, %f1;\
             cvt.rz.bf16.f32 %h3, %f0; cvt.u32.u16 %r20, %h3;\
             cvt.rna.tf32.f32 %r21, %f0;\
             mov.b32 {%h4, %h5}, %r18; cvt.f32.bf16 %f17, %h5; mov.b32 %r22, %f17;",
            &[f(x), f(y)],
        );
        assert_eq!(fl(r[0]), bf16::from_f32(x).to_f32());
        assert_eq!(fl(r[1]), f16::from_f32(x).to_f32());
        // the first source goes to the upper half
        assert_eq!(
            r[2],
            (bf16::from_f32(x).to_bits() as u32) << 16 | bf16::from_f32(y).to_bits() as u32
        );
        assert_eq!(
            r[3],
            (f16::from_f32(x).to_bits() as u32) << 16 | f16::from_f32(y).to_bits() as u32
        );
        assert_eq!(r[4], x.to_bits() >> 16, "rz truncates");
        assert_eq!(r[5], (x.to_bits() + 0x1000) & !0x1fff);
        assert_eq!(fl(r[6]), bf16::from_f32(x).to_f32());
    }
    // ties to even: 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125
    let r = run(
        "cvt.rn.bf16.f32 %h0, %f0; cvt.u32.u16 %r16, %h0; cvt.rn.bf16.f32 %h0, %f1; cvt.u32.u16 %r17, %h0;\
         cvt.rp.bf16.f32 %h0, %f2; cvt.u32.u16 %r18, %h0; cvt.rm.f16.f32 %h0, %f3; cvt.u32.u16 %r19, %h0;",
        &[
            f(1.0 + 2f32.powi(-8)),
            f(1.0 + 3.0 * 2f32.powi(-8)),
            f(1.0 + 2f32.powi(-20)),
            f(-1.0 - 2f32.powi(-20)),
        ],
    );
    assert_eq!(r[0], 0x3f80);
    assert_eq!(r[1], 0x3f82);
    assert_eq!(r[2], 0x3f81);
    assert_eq!(r[3], f16::from_f32(-1.0).to_bits() as u32 + 1);
}

#[test]
fn half_precision_arithmetic() {
    use nnkern_ptx_exec::f16;
    let (a, b) = (f16::from_f32(1.5), f16::from_f32(-0.3));
    let packed = |x: f16, y: f16| x.to_bits() as u32 | (y.to_bits() as u32) << 16;
    let r = run(
        "add.rn.f16x2 %r16, %r0, %r1; mul.rn.f16x2 %r17, %r0, %r1; fma.rn.f16x2 %r18, %r0, %r1, %r0;",
        &[packed(a, b), packed(b, a)],
    );
    let r16 = |x: f32| f16::from_f32(x);
    assert_eq!(r[0], packed(r16(a.to_f32() + b.to_f32()), r16(b.to_f32() + a.to_f32())));
    assert_eq!(r[1], packed(r16(a.to_f32() * b.to_f32()), r16(a.to_f32() * b.to_f32())));
    assert_eq!(
        r[2],
        packed(
            f16::from_f64((a.to_f64()).mul_add(b.to_f64(), a.to_f64())),
            f16::from_f64((b.to_f64()).mul_add(a.to_f64(), b.to_f64()))
        )
    );
}

#[test]
fn moves_packs_and_special_registers() {
    let r = run(
        "mov.b64 %rd5, {%r0, %r1}; mov.b64 {%r16, %r17}, %rd5; mov.b32 %r18, {%h0, %h1};\
         mov.u32 %r18, %ntid.x; mov.u32 %r19, %nctaid.x; mov.u32 %r20, %warpid; mov.u32 %r21, %lanemask_lt;\
         mov.u32 %r22, %ctaid.y; mov.f32 %f16, 0f3FC00000; mov.b32 %r23, %f16;",
        &[0xdead_beef, 0x1234_5678],
    );
    assert_eq!(r, vec![0xdead_beef, 0x1234_5678, 1, 1, 0, 0, 0, f(1.5)]);
    // 3-D thread and block indices
    let m = module(
        ".visible .entry idx(.param .u64 out)\n{\n.reg .b32 %r<16>;\n.reg .b64 %rd<8>;\n\
         ld.param.u64 %rd1, [out];\n\
         mov.u32 %r1, %tid.x; mov.u32 %r2, %tid.y; mov.u32 %r3, %tid.z;\n\
         mov.u32 %r4, %ntid.x; mov.u32 %r5, %ntid.y; mov.u32 %r6, %ctaid.x; mov.u32 %r7, %ctaid.y; mov.u32 %r8, %nctaid.x;\n\
         mad.lo.u32 %r9, %r3, %r5, %r2; mad.lo.u32 %r9, %r9, %r4, %r1;\n\
         mad.lo.u32 %r10, %r7, %r8, %r6; mul.lo.u32 %r11, %r4, %r5; mov.u32 %r12, %ntid.z; mul.lo.u32 %r11, %r11, %r12;\n\
         mad.lo.u32 %r13, %r10, %r11, %r9;\n\
         mul.wide.u32 %rd2, %r13, 4; add.s64 %rd2, %rd1, %rd2;\n\
         mov.u32 %r14, %laneid; shl.b32 %r14, %r14, 16; or.b32 %r14, %r14, %r13;\n\
         st.global.u32 [%rd2], %r14;\nret;\n}\n",
    );
    let mut mem = nnkern_ptx_exec::Memory::new();
    let out = mem.alloc(4 * 2 * 3 * 5 * 3 * 2);
    nnkern_ptx_exec::launch(
        &mut mem,
        m.kernel("idx").unwrap(),
        (3, 2, 1),
        (5, 3, 2),
        0,
        &[nnkern_ptx_exec::Param::Ptr(out)],
    )
    .unwrap();
    let v = mem.read_u32(out).unwrap();
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(x & 0xffff, i as u32);
        assert_eq!(x >> 16, (i % 30) as u32 % 32);
    }
}

#[test]
fn function_calls_are_inlined_with_divergence() {
    let m = module(
        ".func (.reg .b32 r) twice(.reg .b32 x)\n{\n.reg .pred big;\nsetp.gt.u32 big, x, 10;\n@big bra BIG;\n\
         shl.b32 r, x, 1;\nret;\nBIG:\nadd.u32 r, x, 1000;\nret;\n}\n\
         .visible .entry calls(.param .u64 out)\n{\n.reg .pred %p<2>;\n.reg .b32 %r<8>;\n.reg .b64 %rd<4>;\n\
         ld.param.u64 %rd1, [out];\nmov.u32 %r1, %tid.x;\nsetp.lt.u32 %p1, %r1, 16;\nmov.u32 %r2, 7;\n\
         @%p1 call (%r2), twice, (%r1);\n\
         mov.u32 %r3, 0xffffffff;\nshfl.sync.idx.b32 %r4, %r2, 0, 0x1f, %r3;\n add.u32 %r2, %r2, %r4;\n\
         mul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd2, %rd1, %rd2;\nst.global.u32 [%rd2], %r2;\nret;\n}\n",
    );
    let mut mem = nnkern_ptx_exec::Memory::new();
    let out = mem.alloc(4 * 32);
    nnkern_ptx_exec::launch(
        &mut mem,
        m.kernel("calls").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[nnkern_ptx_exec::Param::Ptr(out)],
    )
    .unwrap();
    let v = mem.read_u32(out).unwrap();
    for (t, &x) in v.iter().enumerate() {
        let t = t as u32;
        let r = if t < 16 {
            if t > 10 {
                t + 1000
            } else {
                2 * t
            }
        } else {
            7
        };
        assert_eq!(x, r, "thread {t}");
    }
}

#[test]
fn satfinite_conversions_clamp_to_the_largest_finite_value() {
    let r = run(
        "cvt.rn.satfinite.bf16.f32 %h0, %f0; cvt.u32.u16 %r16, %h0; cvt.rn.satfinite.f16.f32 %h1, %f1;\
         cvt.u32.u16 %r17, %h1; cvt.rn.f16.f32 %h2, %f1; cvt.u32.u16 %r18, %h2;",
        &[f(f32::INFINITY), f(-1e6)],
    );
    assert_eq!(r[..3], [0x7f7f, 0xfbff, 0xfc00]);
}
