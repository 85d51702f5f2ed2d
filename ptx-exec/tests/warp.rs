//! Warp-collective instructions, divergence and reconvergence, barriers, and
//! the shared-memory race rules inside a warp.

mod common;
use common::*;
use nnkern_ptx_exec::Fault;

#[test]
fn shfl_sync_modes() {
    // lane value = 100 + lane
    let rows = run_threads(
        "add.u32 %r1, %r25, 100; mov.u32 %r2, 0xffffffff;\
         shfl.sync.idx.b32 %r16, %r1, 5, 0x1f, %r2;\
         shfl.sync.up.b32 %r17|%p1, %r1, 3, 0, %r2; selp.u32 %r20, 1, 0, %p1;\
         shfl.sync.down.b32 %r18|%p2, %r1, 4, 0x1f, %r2; selp.u32 %r21, 1, 0, %p2;\
         shfl.sync.bfly.b32 %r19, %r1, 9, 0x1f, %r2;\
         shfl.sync.idx.b32 %r22, %r1, %r25, 0x0818, %r2;\
         xor.b32 %r3, %r25, 31; shfl.sync.idx.b32 %r23, %r1, %r3, 0x1f, %r2;",
        &[],
        64,
    );
    for (t, r) in rows.iter().enumerate() {
        let lane = (t % 32) as u32;
        assert_eq!(r[0], 105, "idx");
        let (up, upok) = if lane >= 3 {
            (100 + lane - 3, 1)
        } else {
            (100 + lane, 0)
        };
        assert_eq!((r[1], r[4]), (up, upok), "up, lane {lane}");
        let (down, downok) = if lane + 4 <= 31 {
            (100 + lane + 4, 1)
        } else {
            (100 + lane, 0)
        };
        assert_eq!((r[2], r[5]), (down, downok), "down, lane {lane}");
        assert_eq!(r[3], 100 + (lane ^ 9), "bfly");
        // width-8 segments (c = ((32-8)<<8) | 0x18 ... as CUDA builds it): idx within the segment
        let seg = lane & 0x18;
        let j = seg | (lane & !0x18 & 31);
        assert_eq!(r[6], 100 + j, "segmented idx, lane {lane}");
        assert_eq!(r[7], 100 + (lane ^ 31), "reverse");
    }
}

#[test]
fn warp_reduction_with_shfl_bfly() {
    let rows = run_threads(
        "cvt.rn.f32.u32 %f1, %r24; mov.u32 %r2, 0xffffffff;\
         shfl.sync.bfly.b32 %f2, %f1, 16, 0x1f, %r2; add.f32 %f1, %f1, %f2;\
         shfl.sync.bfly.b32 %f2, %f1, 8, 0x1f, %r2; add.f32 %f1, %f1, %f2;\
         shfl.sync.bfly.b32 %f2, %f1, 4, 0x1f, %r2; add.f32 %f1, %f1, %f2;\
         shfl.sync.bfly.b32 %f2, %f1, 2, 0x1f, %r2; add.f32 %f1, %f1, %f2;\
         shfl.sync.bfly.b32 %f2, %f1, 1, 0x1f, %r2; add.f32 %f1, %f1, %f2; mov.b32 %r16, %f1;",
        &[],
        64,
    );
    for (t, r) in rows.iter().enumerate() {
        let base = (t / 32 * 32) as f32;
        assert_eq!(fl(r[0]), (0..32).map(|i| base + i as f32).sum::<f32>());
    }
}

#[test]
fn vote_and_activemask() {
    let rows = run_threads(
        "mov.u32 %r2, 0xffffffff; and.b32 %r1, %r25, 3; setp.eq.u32 %p1, %r1, 0; setp.ne.u32 %p0, %r1, %r1;\
         vote.sync.ballot.b32 %r16, %p1, %r2;\
         vote.sync.any.pred %p2, %p1, %r2; selp.u32 %r17, 1, 0, %p2;\
         vote.sync.all.pred %p2, %p1, %r2; selp.u32 %r18, 1, 0, %p2;\
         vote.sync.all.pred %p2, !%p0, %r2; selp.u32 %r19, 1, 0, %p2;\
         vote.sync.uni.pred %p2, %p1, %r2; selp.u32 %r20, 1, 0, %p2;\
         vote.sync.ballot.b32 %r21, !%p1, %r2;\
         @%p1 bra SKIP; activemask.b32 %r22;\nSKIP:\n activemask.b32 %r23;",
        &[],
        32,
    );
    for (lane, r) in rows.iter().enumerate() {
        assert_eq!(r[0], 0x1111_1111);
        assert_eq!(r[1..5], [1, 0, 1, 0]);
        assert_eq!(r[5], !0x1111_1111);
        assert_eq!(
            r[6],
            if lane % 4 == 0 { 0 } else { !0x1111_1111 },
            "activemask in the branch"
        );
        assert_eq!(r[7], u32::MAX, "reconverged");
    }
}

#[test]
fn diverged_collectives_are_reported() {
    // shfl inside a branch taken by half the warp, with the full member mask
    let e = try_run(
        "mov.u32 %r2, 0xffffffff; setp.lt.u32 %p1, %r25, 16; @%p1 bra A;\
         shfl.sync.bfly.b32 %r16, %r25, 1, 0x1f, %r2; bra B;\nA:\n shfl.sync.bfly.b32 %r16, %r25, 1, 0x1f, %r2;\nB:\n",
        &[],
        32,
    )
    .unwrap_err();
    let f = e.fault().unwrap();
    match &f.fault {
        Fault::Diverged(msg) => assert!(msg.contains("shfl.sync") && msg.contains("lane 0 is at line"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // the same with a member mask of the half that takes part is fine
    let rows = run_threads(
        "setp.lt.u32 %p1, %r25, 16; @%p1 bra A;\
         mov.u32 %r2, 0xffff0000; shfl.sync.bfly.b32 %r16, %r25, 1, 0x1f, %r2; bra B;\nA:\n\
         mov.u32 %r2, 0x0000ffff; shfl.sync.bfly.b32 %r16, %r25, 1, 0x1f, %r2;\nB:\n",
        &[],
        32,
    );
    assert!(rows.iter().enumerate().all(|(l, r)| r[0] == (l as u32 ^ 1)));
    // a lane that exited early
    let e = try_run(
        "setp.eq.u32 %p1, %r25, 7; @%p1 exit; mov.u32 %r2, 0xffffffff; vote.sync.ballot.b32 %r16, %p1, %r2;",
        &[],
        32,
    )
    .unwrap_err();
    assert!(
        matches!(&e.fault().unwrap().fault, Fault::Diverged(m) if m.contains("lane 7 has exited")),
        "{e}"
    );
    // bar.sync in divergent code
    let e = try_run("setp.lt.u32 %p1, %r25, 4; @%p1 bra A; bar.sync 0;\nA:\n", &[], 32).unwrap_err();
    assert!(
        matches!(&e.fault().unwrap().fault, Fault::Diverged(m) if m.contains("bar.sync")),
        "{e}"
    );
}

#[test]
fn loops_with_divergent_trip_counts_reconverge() {
    // lane l loops l times, then the warp shuffles
    let rows = run_threads(
        "mov.u32 %r1, 0; mov.u32 %r3, 0;\nL:\n setp.ge.u32 %p1, %r1, %r25; @%p1 bra E; add.u32 %r3, %r3, %r1;\
         add.u32 %r1, %r1, 1; bra L;\nE:\n mov.u32 %r2, 0xffffffff; shfl.sync.idx.b32 %r16, %r3, 31, 0x1f, %r2;\
         mov.u32 %r17, %r3;",
        &[],
        32,
    );
    for (l, r) in rows.iter().enumerate() {
        assert_eq!(r[0], 31 * 30 / 2);
        assert_eq!(r[1], (l * l.saturating_sub(1) / 2) as u32);
    }
}

/// Lane l writes s[l]; then reads s[l ^ 1]. `SYNC` is a warp barrier or nothing.
const WARP_EXCHANGE: &str =
    ".shared .align 4 .b32 s[32];\nmov.u32 %r1, s; shl.b32 %r2, %r25, 2; add.u32 %r3, %r1, %r2;\
     st.shared.u32 [%r3], %r25; SYNC xor.b32 %r4, %r2, 4; add.u32 %r4, %r1, %r4; ld.shared.u32 %r16, [%r4];";

#[test]
fn warp_sync_orders_shared_accesses_within_a_warp() {
    let rows = run_threads(&WARP_EXCHANGE.replace("SYNC", "bar.warp.sync 0xffffffff;"), &[], 32);
    assert!(rows.iter().enumerate().all(|(l, r)| r[0] == l as u32 ^ 1));
    // without it, lane 0 reads lane 1's slot: written by another thread since the last barrier
    let e = try_run(&WARP_EXCHANGE.replace("SYNC", ""), &[], 32).unwrap_err();
    let f = e.fault().unwrap();
    match &f.fault {
        Fault::SharedRace {
            this: "read",
            other: "write",
            other_thread,
            ..
        } => assert_eq!(*other_thread, [1, 0, 0]),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.thread, [0, 0, 0]);
}

#[test]
fn same_instruction_and_own_address_are_not_races() {
    // every lane writes the same word in one instruction, then each reads and rewrites it;
    // thread 0 then re-reads and rewrites its own private word twice
    let rows = run_threads(
        ".shared .align 4 .b32 s[64];\nmov.u32 %r1, s; st.shared.u32 [%r1], 7; setp.eq.u32 %p1, %r24, 0;\
         @%p1 st.shared.u32 [%r1+128], 1; @%p1 ld.shared.u32 %r2, [%r1+128]; @%p1 st.shared.u32 [%r1+128], 2;\
         bar.sync 0; ld.shared.u32 %r16, [%r1]; ld.shared.u32 %r17, [%r1+128];",
        &[],
        32,
    );
    assert!(rows.iter().all(|r| r[0] == 7 && r[1] == 2));
    // but two warps writing the same word between barriers is a race
    let e = try_run(
        ".shared .align 4 .b32 s[4];\nmov.u32 %r1, s; st.shared.u32 [%r1], %r24;",
        &[],
        64,
    )
    .unwrap_err();
    match &e.fault().unwrap().fault {
        Fault::SharedRace {
            this: "write",
            other: "write",
            other_thread,
            ..
        } => {
            // the last lane of warp 0 to write it, and the first lane of warp 1
            assert_eq!(*other_thread, [31, 0, 0]);
            assert_eq!(e.fault().unwrap().thread, [32, 0, 0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn redux_funnel_shift_and_slct() {
    let rows = run_threads(
        "mov.u32 %r2, 0xffffffff; redux.sync.add.u32 %r16, %r25, %r2; sub.s32 %r3, 5, %r25;\
         redux.sync.min.s32 %r17, %r3, %r2; redux.sync.max.u32 %r18, %r25, %r2; shl.b32 %r4, 1, %r25;\
         redux.sync.or.b32 %r19, %r4, %r2;\
         shf.l.wrap.b32 %r20, %r0, %r1, %r25; shf.r.clamp.b32 %r21, %r0, %r1, %r25;\
         slct.u32.s32 %r22, 1, 2, %r3;",
        &[0x8000_0001, 0x1234_5678],
        32,
    );
    for (l, r) in rows.iter().enumerate() {
        assert_eq!(r[..4], [31 * 32 / 2, (5 - 31i32) as u32, 31, u32::MAX]);
        let x = 0x1234_5678_8000_0001u64;
        assert_eq!(r[4], ((x << (l % 32)) >> 32) as u32, "shf.l lane {l}");
        assert_eq!(r[5], (x >> l.min(32)) as u32, "shf.r lane {l}");
        assert_eq!(r[6], if l <= 5 { 1 } else { 2 });
    }
}

#[test]
fn partial_last_warp() {
    // 40 threads: warp 1 has 8 lanes. Barriers and a shuffle over the lanes that exist work;
    // a full member mask names lanes that do not exist.
    let body = ".shared .align 4 .b32 s[40];\nmov.u32 %r1, s; shl.b32 %r2, %r24, 2; add.u32 %r3, %r1, %r2;\
        st.shared.u32 [%r3], %r24; bar.sync 0; sub.u32 %r4, 39, %r24; shl.b32 %r4, %r4, 2; add.u32 %r4, %r1, %r4;\
        ld.shared.u32 %r16, [%r4]; setp.lt.u32 %p1, %r24, 32; selp.u32 %r5, 0xffffffff, 0xff, %p1;\
        shfl.sync.idx.b32 %r17, %r24, 0, 0x1f, MASK;";
    let rows = run_threads(&body.replace("MASK", "%r5"), &[], 40);
    for (t, r) in rows.iter().enumerate() {
        assert_eq!(r[0], 39 - t as u32);
        assert_eq!(r[1], if t < 32 { 0 } else { 32 });
    }
    let e = try_run(&body.replace("MASK", "0xffffffff"), &[], 40).unwrap_err();
    let f = e.fault().unwrap();
    assert!(
        matches!(&f.fault, Fault::Diverged(m) if m.contains("does not exist")),
        "{e}"
    );
    assert_eq!(f.thread, [32, 0, 0]);
}

#[test]
fn predicated_off_collective_lanes_are_named() {
    let e = try_run(
        "mov.u32 %r2, 0xffffffff; setp.lt.u32 %p1, %r25, 8; @%p1 shfl.sync.idx.b32 %r16, %r25, 0, 0x1f, %r2;",
        &[],
        32,
    )
    .unwrap_err();
    assert!(
        matches!(&e.fault().unwrap().fault, Fault::Diverged(m) if m.contains("lane 8 skipped it")),
        "{e}"
    );
}

#[test]
fn race_report_names_another_reader() {
    // all 64 threads read word 0; then thread 0 writes it without a barrier
    let e = try_run(
        ".shared .align 4 .b32 s[4];\nmov.u32 %r1, s; setp.eq.u32 %p1, %r24, 0; @%p1 st.shared.u32 [%r1], 1;\
         bar.sync 0; ld.shared.u32 %r16, [%r1]; bar.sync 0; @%p1 ld.shared.u32 %r17, [%r1+4];",
        &[],
        64,
    );
    // word 1 was never written
    assert!(matches!(
        e.unwrap_err().fault().unwrap().fault,
        Fault::SharedUninitialized { offset: 4 }
    ));
    let e = try_run(
        ".shared .align 4 .b32 s[4];\nmov.u32 %r1, s; setp.eq.u32 %p1, %r24, 63; @%p1 st.shared.u32 [%r1], 1;\
         bar.sync 0; ld.shared.u32 %r16, [%r1]; @%p1 st.shared.u32 [%r1], 2;",
        &[],
        64,
    )
    .unwrap_err();
    match &e.fault().unwrap().fault {
        Fault::SharedRace {
            this: "write",
            other: "read",
            other_thread,
            ..
        } => {
            assert!(other_thread[0] < 63, "{e}")
        }
        other => panic!("{other:?}"),
    }
}
