//! Memory that lives across launches, as a device's does: allocations made,
//! written, read back and freed between kernels, with the executor's checks on
//! every launch (a freed allocation faults when a stale pointer reaches it).

mod common;
use common::*;
use nnkern_ptx_exec::{launch, Error, Fault, Memory, Param};

const ADD_ONE: &str = ".visible .entry inc(.param .u64 p, .param .u32 n)\n{\n\
     .reg .pred %p<2>;\n.reg .b32 %r<4>;\n.reg .b64 %rd<4>;\n\
     ld.param.u64 %rd1, [p];\nld.param.u32 %r1, [n];\nmov.u32 %r2, %tid.x;\n\
     setp.ge.u32 %p1, %r2, %r1;\n@%p1 bra DONE;\n\
     mul.wide.u32 %rd2, %r2, 4;\nadd.s64 %rd3, %rd1, %rd2;\n\
     ld.global.u32 %r3, [%rd3];\nadd.u32 %r3, %r3, 1;\nst.global.u32 [%rd3], %r3;\n\
     DONE:\nret;\n}\n";

#[test]
fn allocations_persist_across_launches_and_partial_copies_work() {
    let m = module(ADD_ONE);
    let k = m.kernel("inc").unwrap();
    let mut mem = Memory::new();
    let buf = mem.try_alloc(40, 0).unwrap();
    assert_eq!(mem.read_u32(buf).unwrap(), vec![0; 10]);
    mem.write_bytes(buf, 8, &7u32.to_le_bytes()).unwrap();
    for _ in 0..3 {
        launch(
            &mut mem,
            k,
            (1, 1, 1),
            (32, 1, 1),
            0,
            &[Param::Ptr(buf), Param::U32(10)],
        )
        .unwrap();
    }
    let mut part = [0u8; 8];
    mem.read_into(buf, 8, &mut part).unwrap();
    assert_eq!(part, [10, 0, 0, 0, 3, 0, 0, 0]);
    // poison fill
    let p = mem.try_alloc(8, 0xFF).unwrap();
    assert!(mem.read_f32(p).unwrap().iter().all(|x| x.is_nan()));
    assert_eq!(mem.allocated_bytes(), 48);
    // host-side accesses past the end are errors, also when the sum would wrap
    assert!(matches!(mem.read_into(buf, 36, &mut part), Err(Error::Memory(_))));
    assert!(matches!(
        mem.read_into(buf, usize::MAX, &mut part),
        Err(Error::Memory(_))
    ));
    assert!(matches!(mem.write_bytes(buf, usize::MAX, &[1]), Err(Error::Memory(_))));
}

#[test]
fn freed_memory_faults_and_is_never_reused() {
    let m = module(ADD_ONE);
    let k = m.kernel("inc").unwrap();
    let mut mem = Memory::new();
    let a = mem.try_alloc(64, 0).unwrap();
    mem.free(a).unwrap();
    assert_eq!(mem.allocated_bytes(), 0);
    // a double free, a part of an allocation, an address never allocated: errors
    assert!(matches!(mem.free(a), Err(Error::Memory(_))));
    let b = mem.try_alloc(64, 0).unwrap();
    assert_ne!(a.addr, b.addr, "freed addresses are not handed out again");
    assert!(matches!(mem.free(b.slice(0, 32)), Err(Error::Memory(_))));
    assert!(matches!(mem.read_bytes(a), Err(Error::Memory(_))));
    // a kernel reaching the freed allocation through a stale pointer faults
    let e = launch(&mut mem, k, (1, 1, 1), (32, 1, 1), 0, &[Param::Ptr(a), Param::U32(1)]).unwrap_err();
    assert!(
        matches!(e.fault().map(|f| &f.fault), Some(Fault::GlobalOutOfBounds { .. })),
        "{e}"
    );
    mem.free(b).unwrap();
}

#[test]
fn impossible_allocations_are_errors_not_aborts() {
    let mut mem = Memory::new();
    assert!(matches!(mem.try_alloc(usize::MAX, 0), Err(Error::Memory(_))));
    assert!(matches!(mem.try_alloc(1 << 62, 0), Err(Error::Memory(_))));
    // the heap still works afterwards
    let b = mem.try_alloc(4, 1).unwrap();
    assert_eq!(mem.read_bytes(b).unwrap(), [1, 1, 1, 1]);
}
