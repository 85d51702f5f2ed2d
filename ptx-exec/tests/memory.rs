//! Loads and stores of every width and state space, atomics, cp.async, and the
//! memory faults: out of bounds, misaligned, unwritten shared, in-flight cp.async.

mod common;
use common::*;
use nnkern_ptx_exec::{launch, Fault, Memory, Param};

#[test]
fn global_loads_and_stores_of_every_width() {
    let r = run(
        "ld.global.v4.u32 {%r16, %r17, %r18, %r19}, [%rd30];\
         ld.global.nc.v2.f32 {%f16, %f17}, [%rd30+8]; mov.b32 %r20, %f17;\
         ld.global.s8 %r21, [%rd30+3]; ld.global.u8 %r22, [%rd30+3]; ld.global.s16 %r23, [%rd30+2];",
        &[0x0102_0304, 0x8586_8788, 0xdead_beef, 0x1234_5678],
    );
    assert_eq!(r[..4], [0x0102_0304, 0x8586_8788, 0xdead_beef, 0x1234_5678]);
    assert_eq!(r[4], 0x1234_5678);
    assert_eq!(r[5], 0x01);
    assert_eq!(r[6], 0x01);
    assert_eq!(r[7], 0x0102);
    let r = run(
        "ld.global.s8 %r16, [%rd30+7]; ld.global.u16 %r17, [%rd30+6]; ld.global.s16 %r18, [%rd30+6];\
         ld.global.b16 %h0, [%rd30+4]; cvt.u32.u16 %r19, %h0; ld.global.v2.u64 {%rd5, %rd6}, [%rd30];\
         cvt.u32.u64 %r20, %rd6; ld.global.f64 %fd0, [%rd30+8]; mov.b64 {%r21, %r22}, %fd0;",
        &[0, 0x8586_8788, 7, 9],
    );
    assert_eq!(r[0], 0xffff_ff85);
    assert_eq!(r[1], 0x8586);
    assert_eq!(r[2], 0xffff_8586);
    assert_eq!(r[3], 0x8788);
    assert_eq!(r[4], 7);
    assert_eq!(r[5..7], [7, 9]);
    // stores: v4, v2, b16, u8, f64 — read back through the output buffer itself
    let r = run(
        "mul.wide.u32 %rd29, %r24, 32; add.s64 %rd29, %rd31, %rd29;\
         st.global.v4.u32 [%rd29], {%r0, %r1, %r2, %r3}; st.global.v2.f32 [%rd29+16], {%f1, %f0};\
         mov.b16 %h1, 0x7788; st.global.b16 [%rd29+24], %h1; st.global.u8 [%rd29+26], %r0;\
         st.global.u8 [%rd29+27], 0x99; mov.u32 %r28, 7; st.global.u32 [%rd29+28], %r28;\
         ld.global.v4.u32 {%r16, %r17, %r18, %r19}, [%rd29]; ld.global.v4.u32 {%r20, %r21, %r22, %r23}, [%rd29+16];",
        &[0x11, 0x22, 0x33, 0x44],
    );
    assert_eq!(r, vec![0x11, 0x22, 0x33, 0x44, 0x22, 0x11, 0x9911_7788, 7]);
}

#[test]
fn shared_local_and_generic_addressing() {
    let m = module(
        ".visible .entry t(.param .u64 out, .param .u32 n)\n{\n\
         .reg .b32 %r<16>;\n.reg .b64 %rd<16>;\n.reg .f32 %f<8>;\n\
         .shared .align 16 .b8 st[64];\n.extern .shared .align 16 .b8 dyn[];\n\
         .local .align 8 .b8 loc[16];\n\
         ld.param.u64 %rd1, [out];\nld.param.u32 %r9, [n];\nmov.u32 %r1, %tid.x;\n\
         mov.u64 %rd2, dyn;\ncvta.shared.u64 %rd3, %rd2;\n\
         mul.wide.u32 %rd4, %r1, 4;\nadd.s64 %rd5, %rd3, %rd4;\n\
         add.u32 %r2, %r1, 100;\nst.u32 [%rd5], %r2;\n\
         mov.u32 %r3, st;\nshl.b32 %r4, %r1, 2;\nadd.s32 %r4, %r3, %r4;\nst.shared.u32 [%r4], %r1;\n\
         bar.sync 0;\n\
         xor.b32 %r5, %r1, 1;\nmul.wide.u32 %rd6, %r5, 4;\nadd.s64 %rd7, %rd2, %rd6;\n\
         ld.shared.u32 %r6, [%rd7];\ncvta.to.shared.u64 %rd8, %rd5;\nld.shared.u32 %r7, [%rd8];\n\
         mov.u64 %rd9, loc;\nst.local.v2.u32 [%rd9+8], {%r6, %r7};\ncvta.local.u64 %rd10, %rd9;\n\
         ld.u32 %r8, [%rd10+8];\nld.local.u32 %r10, [loc+12];\n\
         ld.shared.u32 %r11, [st+4];\n\
         add.u32 %r8, %r8, %r10;\nadd.u32 %r8, %r8, %r11;\n\
         mov.u32 %r12, %dynamic_smem_size;\nadd.u32 %r8, %r8, %r12;\n\
         add.s64 %rd11, %rd1, %rd4;\nst.global.u32 [%rd11], %r8;\nret;\n}\n",
    );
    let k = m.kernel("t").unwrap();
    assert_eq!(k.static_shared_bytes(), 64);
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 16);
    launch(
        &mut mem,
        k,
        (1, 1, 1),
        (16, 1, 1),
        64,
        &[Param::Ptr(out), Param::U32(16)],
    )
    .unwrap();
    let v = mem.read_u32(out).unwrap();
    for (t, &x) in v.iter().enumerate() {
        let t = t as u32;
        assert_eq!(x, ((t ^ 1) + 100) + (t + 100) + 1 + 64, "thread {t}");
    }
    // too little dynamic shared memory: thread 15 writes past the end
    let f = fault_of(launch(
        &mut mem,
        k,
        (1, 1, 1),
        (16, 1, 1),
        60,
        &[Param::Ptr(out), Param::U32(16)],
    ));
    assert!(
        matches!(
            f.fault,
            Fault::SharedOutOfBounds {
                offset: 124,
                size: 4,
                limit: 124
            }
        ),
        "{f}"
    );
    assert_eq!(f.thread, [15, 0, 0]);
}

#[test]
fn misaligned_and_out_of_bounds_accesses_fail() {
    let e = try_run("ld.global.u32 %r16, [%rd30+2];", &[], 1).unwrap_err();
    let f = e.fault().unwrap();
    assert!(matches!(f.fault, Fault::Misaligned { align: 4, .. }), "{e}");
    let e = try_run("ld.global.v4.u32 {%r16, %r17, %r18, %r19}, [%rd30+8];", &[], 1).unwrap_err();
    assert!(
        matches!(e.fault().unwrap().fault, Fault::Misaligned { align: 16, .. }),
        "{e}"
    );
    // reads just past the 32-byte input buffer
    let e = try_run("ld.global.u32 %r16, [%rd30+32];", &[], 1).unwrap_err();
    match &e.fault().unwrap().fault {
        Fault::GlobalOutOfBounds { size: 4, near, .. } => assert!(near.contains("0 bytes past the end"), "{e}"),
        other => panic!("{other:?}"),
    }
    let e = try_run("ld.global.u32 %r16, [%rd30+-4];", &[], 1).unwrap_err();
    assert!(
        matches!(e.fault().unwrap().fault, Fault::GlobalOutOfBounds { .. }),
        "{e}"
    );
    // null pointer
    let e = try_run("mov.u64 %rd5, 0; st.global.u32 [%rd5], %r0;", &[], 1).unwrap_err();
    assert!(
        matches!(e.fault().unwrap().fault, Fault::GlobalOutOfBounds { addr: 0, .. }),
        "{e}"
    );
}

#[test]
fn unwritten_shared_memory_read_is_caught() {
    let body = ".shared .align 4 .b32 s[32];\nmov.u32 %r1, s;\nshl.b32 %r2, %r24, 2;\nadd.u32 %r2, %r1, %r2;\n\
                st.shared.u32 [%r2], %r24;\nbar.sync 0;\nld.shared.u32 %r16, [%r1+LOAD];";
    // every slot written: fine
    let r = run_threads(&body.replace("LOAD", "60"), &[], 16);
    assert!(r.iter().all(|row| row[0] == 15));
    // slot 16 was never written
    let e = try_run(&body.replace("LOAD", "64"), &[], 16).unwrap_err();
    let f = e.fault().unwrap();
    assert!(matches!(f.fault, Fault::SharedUninitialized { offset: 64 }), "{e}");
    assert!(f.instruction.starts_with("ld.shared.u32"));
}

#[test]
fn atomics_on_global_and_shared_memory() {
    let body = ".shared .align 8 .b32 s[4];\n\
        mov.u32 %r1, s;\nsetp.eq.u32 %p1, %r24, 0;\n@%p1 st.shared.v2.u32 [%r1], {%r0, %r0};\n\
        @%p1 st.shared.v2.u32 [%r1+8], {%r0, %r0};\nbar.sync 0;\n\
        atom.shared.add.u32 %r16, [%r1], 1;\n\
        atom.shared.max.s32 %r17, [%r1+4], %r24;\n\
        add.s64 %rd5, %rd30, 4;\natom.global.add.u32 %r18, [%rd5], 3;\n\
        red.global.add.f32 [%rd30+8], %f3;\n\
        atom.global.cas.b32 %r19, [%rd30+12], %r24, 1000;\n\
        atom.global.exch.b32 %r20, [%rd30+16], %r24;\n\
        atom.global.min.u64 %rd6, [%rd30+24], %rd2;\n\
        bar.sync 0;\nld.shared.u32 %r21, [%r1];\nld.shared.u32 %r22, [%r1+4];\n";
    let m = module(&scalar_kernel(body));
    let mut mem = Memory::new();
    let inp = mem.alloc_u32(&[0, 10, f(0.0), 5, 0, 0, 40, 0]);
    let out = mem.alloc(32 * 64);
    launch(
        &mut mem,
        m.kernel("t").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    )
    .unwrap();
    let rows: Vec<[u32; 8]> = mem
        .read_u32(out)
        .unwrap()
        .chunks(8)
        .map(|c| c.try_into().unwrap())
        .collect();
    let mut olds: Vec<u32> = rows.iter().map(|r| r[0]).collect();
    olds.sort();
    assert_eq!(
        olds,
        (0..64).collect::<Vec<_>>(),
        "each add returns a distinct old value"
    );
    let mut g: Vec<u32> = rows.iter().map(|r| r[2]).collect();
    g.sort();
    assert_eq!(g, (0..64).map(|i| 10 + 3 * i).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r[5] == 64 && r[6] == 63));
    // threads 0..=5 saw 5 (thread 5 swapped in 1000), later ones saw 1000
    assert!(rows[..6].iter().all(|r| r[3] == 5));
    assert!(rows[6..].iter().all(|r| r[3] == 1000));
    let fin = mem.read_u32(inp).unwrap();
    assert_eq!(fin[1], 10 + 3 * 64);
    assert_eq!(fin[3], 1000);
    assert!(fin[4] < 64);
    assert_eq!(fin[6], 0, "min over the u64 at word 6 with each thread's in[4..6] = 0");
}

#[test]
fn atomics_accumulate() {
    let m = module(&scalar_kernel(
        "red.global.add.f32 [%rd30+8], %f1; cvt.f64.f32 %fd1, %f1; red.global.add.f64 [%rd30+16], %fd1;",
    ));
    let mut mem = Memory::new();
    let inp = mem.alloc_u32(&[0, f(0.5), f(1.0), 0, 0, 0, 0, 0]);
    let out = mem.alloc(32 * 96);
    launch(
        &mut mem,
        m.kernel("t").unwrap(),
        (1, 1, 1),
        (96, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    )
    .unwrap();
    let v = mem.read_u32(inp).unwrap();
    assert_eq!(fl(v[2]), 1.0 + 48.0);
    assert_eq!(f64::from_bits(v[4] as u64 | (v[5] as u64) << 32), 48.0);
}

/// Thread t copies 16 bytes of row t into shared with cp.async, then (after the wait and a
/// barrier) reads its neighbour's copy. `SRC_SIZE` is the zero-fill argument.
const CP_ASYNC: &str = r#"
.visible .entry cp(.param .u64 inp, .param .u64 out)
{
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<16>;
    .shared .align 16 .b8 s[1024];
    ld.param.u64 %rd1, [inp];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 16;
    add.s64 %rd4, %rd1, %rd3;
    mov.u32 %r2, s;
    shl.b32 %r3, %r1, 4;
    add.u32 %r4, %r2, %r3;
    and.b32 %r9, %r1, 15;
    cp.async.cg.shared.global [%r4], [%rd4], 16, %r9;
    cp.async.commit_group;
    add.u32 %r10, %r4, 512;
    cp.async.ca.shared.global [%r10], [%rd4+8], 8;
    cp.async.commit_group;
    WAIT
    bar.sync 0;
    xor.b32 %r5, %r1, 1;
    shl.b32 %r6, %r5, 4;
    add.u32 %r6, %r2, %r6;
    ld.shared.v4.u32 {%r11, %r12, %r13, %r14}, [%r6];
    ld.shared.v2.u32 {%r7, %r8}, [%r6+512];
    add.s64 %rd5, %rd2, %rd3;
    st.global.v4.u32 [%rd5], {%r11, %r12, %r13, %r7};
    ret;
}
"#;

#[test]
fn cp_async_copies_zero_fills_and_waits() {
    let m = module(&CP_ASYNC.replace("WAIT", "cp.async.wait_group 0;"));
    let mut mem = Memory::new();
    let src: Vec<u32> = (0..32 * 4).map(|i| 0x100 + i).collect();
    let inp = mem.alloc_u32(&src);
    let out = mem.alloc(32 * 16);
    launch(
        &mut mem,
        m.kernel("cp").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    )
    .unwrap();
    let v = mem.read_u32(out).unwrap();
    for t in 0..32usize {
        let o = t ^ 1;
        let valid = o % 16; // src-size in bytes: the rest is zero-filled
        let word = |w: usize| {
            let bytes: Vec<u8> = (0..4)
                .map(|b| {
                    if w * 4 + b < valid {
                        src[4 * o + w].to_le_bytes()[b]
                    } else {
                        0
                    }
                })
                .collect();
            u32::from_le_bytes(bytes.try_into().unwrap())
        };
        assert_eq!(v[4 * t..4 * t + 3], [word(0), word(1), word(2)], "thread {t}");
        assert_eq!(v[4 * t + 3], src[4 * o + 2], "thread {t}: the 8-byte copy");
    }
    // wait_all works as well
    let m = module(&CP_ASYNC.replace("WAIT", "cp.async.wait_all;"));
    launch(
        &mut mem,
        m.kernel("cp").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    )
    .unwrap();
    // waiting for all but the newest group leaves the 8-byte copies in flight
    let m = module(&CP_ASYNC.replace("WAIT", "cp.async.wait_group 1;"));
    let f = fault_of(launch(
        &mut mem,
        m.kernel("cp").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    ));
    assert!(
        matches!(f.fault, Fault::CpAsyncInFlight { offset } if offset == 512 + 16),
        "{f}"
    );
    assert!(f.instruction.starts_with("ld.shared.v2.u32"), "{f}");
    assert_eq!(f.shared_location.as_deref(), Some("s+528"));
    // no wait at all
    let m = module(&CP_ASYNC.replace("WAIT", ""));
    let f = fault_of(launch(
        &mut mem,
        m.kernel("cp").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    ));
    assert!(matches!(f.fault, Fault::CpAsyncInFlight { .. }), "{f}");
    // a source past the end of the input is caught when the copy is issued
    let small = mem.alloc_u32(&src[..100]);
    let m = module(&CP_ASYNC.replace("WAIT", "cp.async.wait_group 0;"));
    let f = fault_of(launch(
        &mut mem,
        m.kernel("cp").unwrap(),
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(small), Param::Ptr(out)],
    ));
    assert!(matches!(f.fault, Fault::GlobalOutOfBounds { .. }), "{f}");
    assert!(f.instruction.starts_with("cp.async"), "{f}");
}

#[test]
fn wild_addresses_fault_without_overflow() {
    for addr in ["0xfffffffffffffffc", "0x7000000000000000", "0x7100000000000000"] {
        let e = try_run(&format!("mov.u64 %rd5, {addr}; ld.u32 %r16, [%rd5];"), &[], 1).unwrap_err();
        assert!(e.fault().is_some(), "{e}");
    }
    let e = try_run(
        ".local .align 4 .b8 l[8];\nmov.u64 %rd5, 0xfffffffffffffffc; ld.local.u32 %r16, [%rd5];",
        &[],
        1,
    )
    .unwrap_err();
    assert!(
        matches!(e.fault().unwrap().fault, Fault::OutOfBounds { space: "local", .. }),
        "{e}"
    );
}
