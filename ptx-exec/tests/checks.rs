//! The faults the executor must catch: out-of-bounds accesses, shared-memory
//! races, reads of unwritten shared memory, diverged collectives, and a
//! wrong mma fragment index (caught by comparing with a plain matrix product).

use nnkern_ptx_exec::{launch, Error, Fault, Memory, Module, Param};

fn module(body: &str) -> Module {
    let src = format!(".version 8.0\n.target sm_80\n.address_size 64\n{body}");
    match Module::parse(&src) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn fault(r: Result<nnkern_ptx_exec::LaunchReport, Error>) -> nnkern_ptx_exec::FaultReport {
    match r {
        Err(Error::Fault(f)) => *f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// Each thread stores `tid` at `out[tid]`; the planted bug stores one past the end for the last thread.
const STORE_TID: &str = r#"
.visible .entry store_tid(.param .u64 out, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    setp.gt.u32 %p1, %r2, %r1;    // planted bug: should be setp.ge
    @%p1 bra DONE;
    cvta.to.global.u64 %rd1, %rd1;
    mul.wide.u32 %rd2, %r2, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r2;
DONE:
    ret;
}
"#;

#[test]
fn planted_out_of_bounds_write_is_caught() {
    let m = module(STORE_TID);
    let k = m.kernel("store_tid").unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 40);
    let f = fault(launch(
        &mut mem,
        k,
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(out), Param::U32(40)],
    ));
    assert!(matches!(f.fault, Fault::GlobalOutOfBounds { size: 4, .. }), "{f}");
    assert_eq!(f.thread, [40, 0, 0]);
    assert_eq!(f.block, [0, 0, 0]);
    assert_eq!(f.kernel, "store_tid");
    assert!(f.instruction.starts_with("st.global.u32"), "{f}");
    assert_eq!(f.line, 18);
    // the message names all of it
    let msg = Error::Fault(Box::new(f)).to_string();
    assert!(
        msg.contains("store_tid") && msg.contains("line 18") && msg.contains("thread (40,0,0)"),
        "{msg}"
    );
}

#[test]
fn in_bounds_store_runs() {
    let m = module(STORE_TID);
    let k = m.kernel("store_tid").unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(4 * 41);
    launch(
        &mut mem,
        k,
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(out), Param::U32(40)],
    )
    .unwrap();
    assert_eq!(mem.read_u32(out).unwrap(), (0..41).collect::<Vec<u32>>());
}

/// Block-wide sum through shared memory: every thread writes its value, then
/// thread `READER` adds them up. `BARRIER` is replaced by a barrier or by nothing.
const SHARED_SUM: &str = r#"
.visible .entry shared_sum(.param .u64 inp, .param .u64 out)
{
    .reg .pred %p<3>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<8>;
    .shared .align 4 .f32 buf[64];
    ld.param.u64 %rd1, [inp];
    ld.param.u64 %rd2, [out];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    mov.u32 %r2, buf;
    shl.b32 %r3, %r1, 2;
    add.s32 %r4, %r2, %r3;
    st.shared.f32 [%r4], %f1;
    BARRIER
    setp.ne.u32 %p1, %r1, READER;
    @%p1 bra DONE;
    mov.f32 %f2, 0f00000000;
    mov.u32 %r5, 0;
LOOP:
    shl.b32 %r6, %r5, 2;
    add.s32 %r6, %r2, %r6;
    ld.shared.f32 %f3, [%r6];
    add.rn.f32 %f2, %f2, %f3;
    add.s32 %r5, %r5, 1;
    setp.lt.u32 %p2, %r5, 64;
    @%p2 bra LOOP;
    st.global.f32 [%rd2], %f2;
DONE:
    ret;
}
"#;

#[test]
fn shared_sum_with_barrier_is_right() {
    let m = module(&SHARED_SUM.replace("BARRIER", "bar.sync 0;").replace("READER", "63"));
    let mut mem = Memory::new();
    let v: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
    let inp = mem.alloc_f32(&v);
    let out = mem.alloc(4);
    let rep = launch(
        &mut mem,
        m.kernel("shared_sum").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    )
    .unwrap();
    assert_eq!(mem.read_f32(out).unwrap()[0], v.iter().sum::<f32>());
    assert_eq!(rep.barriers, 1);
}

#[test]
fn planted_shared_race_is_caught() {
    // The barrier between the writes and the reads is missing. Warp 0 runs until it
    // blocks or ends, so thread 63 (warp 1) reads slots warp 0 wrote: a race.
    let m = module(&SHARED_SUM.replace("BARRIER", "").replace("READER", "63"));
    let mut mem = Memory::new();
    let inp = mem.alloc_f32(&[1.0; 64]);
    let out = mem.alloc(4);
    let f = fault(launch(
        &mut mem,
        m.kernel("shared_sum").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    ));
    match &f.fault {
        Fault::SharedRace {
            offset: 0,
            this: "read",
            other: "write",
            other_thread,
            other_line,
        } => {
            assert_eq!(*other_thread, [0, 0, 0]);
            assert_eq!(*other_line, 23);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.thread, [63, 0, 0]);
    assert!(f.instruction.starts_with("ld.shared.f32"), "{f}");
    assert_eq!(f.shared_location.as_deref(), Some("buf+0"));
    assert!(f.to_string().ends_with("[buf+0]"), "{f}");
    // With thread 0 reading, the first conflict is already inside its own warp: lanes of
    // one warp are not ordered between two instructions without a barrier either.
    let m = module(&SHARED_SUM.replace("BARRIER", "").replace("READER", "0"));
    let f = fault(launch(
        &mut mem,
        m.kernel("shared_sum").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(inp), Param::Ptr(out)],
    ));
    assert!(
        matches!(
            f.fault,
            Fault::SharedRace {
                offset: 4,
                other_thread: [1, 0, 0],
                ..
            }
        ),
        "{f}"
    );
}

/// Every thread writes its slot, then (after a barrier when `BARRIER` is one)
/// reads its neighbour's slot and writes its own slot again.
const NEIGHBOUR: &str = r#"
.visible .entry neighbour(.param .u64 out)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    .shared .align 4 .b32 buf[64];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, buf;
    shl.b32 %r3, %r1, 2;
    add.s32 %r4, %r2, %r3;
    st.shared.u32 [%r4], %r1;
    bar.sync 0;
    add.s32 %r5, %r1, 1;
    and.b32 %r5, %r5, 63;
    shl.b32 %r5, %r5, 2;
    add.s32 %r5, %r2, %r5;
    ld.shared.u32 %r6, [%r5];
    BARRIER
    st.shared.u32 [%r4], %r6;
    ld.param.u64 %rd1, [out];
    cvta.to.global.u64 %rd1, %rd1;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd1, %rd1, %rd2;
    st.global.u32 [%rd1], %r6;
    ret;
}
"#;

#[test]
fn write_after_read_race_is_caught_and_barrier_clears_it() {
    let mut mem = Memory::new();
    let out = mem.alloc(64 * 4);
    let m = module(&NEIGHBOUR.replace("BARRIER", ""));
    let f = fault(launch(
        &mut mem,
        m.kernel("neighbour").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(out)],
    ));
    match &f.fault {
        Fault::SharedRace {
            this,
            other,
            other_line,
            ..
        } => {
            assert_eq!((*this, *other), ("write", "read"));
            assert_eq!(*other_line, 20);
        }
        other => panic!("{other:?}"),
    }
    // thread 0 read slot 1 one instruction earlier; in-warp ordering is no barrier
    assert_eq!(f.thread, [1, 0, 0]);

    let m = module(&NEIGHBOUR.replace("BARRIER", "bar.sync 0;"));
    launch(
        &mut mem,
        m.kernel("neighbour").unwrap(),
        (1, 1, 1),
        (64, 1, 1),
        0,
        &[Param::Ptr(out)],
    )
    .unwrap();
    assert_eq!(
        mem.read_u32(out).unwrap(),
        (0..64).map(|i| (i + 1) % 64).collect::<Vec<u32>>()
    );
}

#[test]
fn unknown_instructions_and_names_are_parse_errors_with_the_line() {
    let err = |body: &str| match Module::parse(&format!(".version 8.0\n.target sm_80\n.address_size 64\n{body}")) {
        Err(Error::Parse { line, msg }) => (line, msg),
        other => panic!("expected a parse error, got {other:?}"),
    };
    let k = |inst: &str| format!(".visible .entry k()\n{{\n.reg .b32 %r<4>;\n{inst}\nret;\n}}\n");
    let (line, msg) = err(&k("frobnicate.b32 %r1, %r2;"));
    assert_eq!(line, 7);
    assert!(msg.contains("unknown instruction `frobnicate.b32`"), "{msg}");
    let (line, msg) = err(&k("add.u32 %r1, %r9, 1;"));
    assert_eq!(line, 7);
    assert!(msg.contains("%r9"), "{msg}");
    let (_, msg) = err(&k("bra NOWHERE;"));
    assert!(msg.contains("unknown label `NOWHERE`"), "{msg}");
    let (_, msg) = err(&k(
        "stmatrix.sync.aligned.m8n8.x4.shared.b16 [%r1], {%r0, %r1, %r2, %r3};",
    ));
    assert!(
        msg.contains("unknown instruction `stmatrix.sync.aligned.m8n8.x4.shared.b16`"),
        "{msg}"
    );
    let (_, msg) = err(&k("mbarrier.arrive_drop.shared::cta.b64 _, [%r1];"));
    assert!(
        msg.contains("unknown instruction `mbarrier.arrive_drop.shared::cta.b64`"),
        "{msg}"
    );
    let (_, msg) = err(&k("cvt.f32.s32 %r1, %r2;"));
    assert!(msg.contains("rounding"), "{msg}");
}

#[test]
fn launch_arguments_are_checked() {
    let m = module(STORE_TID);
    let k = m.kernel("store_tid").unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(16);
    let launch_err = |r: Result<nnkern_ptx_exec::LaunchReport, Error>| match r {
        Err(Error::Launch { msg, .. }) => msg,
        other => panic!("expected a launch error, got {other:?}"),
    };
    let msg = launch_err(launch(&mut mem, k, (1, 1, 1), (32, 1, 1), 0, &[Param::Ptr(out)]));
    assert!(msg.contains("1 parameters given"), "{msg}");
    let msg = launch_err(launch(
        &mut mem,
        k,
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[Param::Ptr(out), Param::U64(3)],
    ));
    assert!(msg.contains("parameter 1 (`n`)"), "{msg}");
    let msg = launch_err(launch(
        &mut mem,
        k,
        (1, 1, 1),
        (2048, 1, 1),
        0,
        &[Param::Ptr(out), Param::U32(3)],
    ));
    assert!(msg.contains("1024"), "{msg}");
    assert!(matches!(m.kernel("nope"), Err(Error::NoKernel(_))));
}
