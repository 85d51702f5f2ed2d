//! # nnkern-ptx-exec
//!
//! Runs nnkern's hand-written PTX (`kernels/*.ptx`) on the CPU, so the GPU
//! kernels are checked against the reference on machines without a GPU, and
//! checked for faults a GPU hides:
//!
//! - global accesses outside every allocation (allocations are separated by
//!   unmapped gaps), shared accesses beyond the static + dynamic size;
//! - reads of shared bytes no thread of the block has written since launch;
//! - two threads of a block touching one shared byte between barriers, one of
//!   them writing (a race), and shared bytes touched while a `cp.async` into
//!   them is in flight;
//! - warp-collective instructions (`shfl.sync`, `vote.sync`, `bar.sync`,
//!   `ldmatrix`, `mma.sync`) reached by a diverged warp.
//!
//! Each fault stops the launch with an [`Error::Fault`] naming the kernel, the
//! PTX line, the thread and the block. Registers start as all ones (NaN as
//! f32), so a value read before it is written shows up in the results.
//!
//! ## Execution model
//! Blocks run one after another; inside a block, warps of 32 lanes run in turn
//! until they reach `bar.sync` or exit. A warp issues the instruction with the
//! lowest program counter among its lanes, for the lanes that sit there, so
//! lanes that branch ahead wait and the warp reconverges where its paths meet;
//! `.func` calls are inlined, so the same holds across calls. Collective
//! instructions see exactly the lanes that arrive together.
//!
//! ## sm_90 (Hopper)
//! `wgmma.fence` / `mma_async` (m64nNk16, f16 and bf16 into f32, A from
//! shared memory or registers, B from shared memory, every swizzle mode of
//! the matrix descriptors, scale and transpose operands) / `commit_group` /
//! `wait_group`; `mbarrier` init, arrive (with expect-tx), expect_tx,
//! try_wait / test_wait (parity or state), inval; `cp.async.bulk.tensor`
//! (tile mode, 1-5 D, global to shared, mbarrier completion) against the
//! executor's tensor-map encoding, [`TensorMap`]; `setmaxnreg`,
//! `fence.proxy.async`, `elect.sync`, `cvta.param`. What is asynchronous on
//! a GPU is checked rather than delayed: a wgmma accumulator touched before
//! the `wait_group` that retires it, a wgmma without a preceding
//! `wgmma.fence`, a read of bulk-copied bytes by a thread that has not
//! observed the completing mbarrier phase, an overwrite of shared bytes a
//! wgmma may still read, ordinary stores read by a wgmma without
//! `fence.proxy.async` — each is an [`Error::Fault`]; a block whose threads
//! all wait for an mbarrier phase, a wgmma group or registers that nothing
//! can bring is a [`Fault::Deadlock`], not a hang.
//!
//! ## Not modelled
//! Named barriers with thread counts, `bar.arrive`, `.const`/`.global`
//! variables, `.func` parameters in the `.param` space and indirect calls,
//! carry arithmetic (`add.cc`), clusters, multicast and the bulk copies
//! other than tensor tile loads. Each is a parse or launch error naming it,
//! never a silent skip.
//!
//! Arithmetic is exact IEEE where PTX says so (f32 `fma` rounds once, `cvt`
//! honours its rounding modifier, `.ftz` flushes subnormals); the `.approx`
//! functions are computed in f64 and rounded once, which is within their
//! documented error. `mma.sync` sums exact products in f64 and rounds once, so
//! it may differ from tensor cores in the last bit of f32 results.
//!
//! ```
//! use nnkern_ptx_exec::{launch, Memory, Module, Param};
//! let m = Module::parse(r#"
//! .version 8.0
//! .target sm_80
//! .address_size 64
//! .visible .entry scale(.param .u64 p, .param .f32 s, .param .u32 n)
//! {
//!     .reg .pred %p<2>; .reg .b32 %r<4>; .reg .f32 %f<3>; .reg .b64 %rd<4>;
//!     ld.param.u64 %rd1, [p];
//!     ld.param.f32 %f1, [s];
//!     ld.param.u32 %r1, [n];
//!     mov.u32 %r2, %tid.x;
//!     setp.ge.u32 %p1, %r2, %r1;
//!     @%p1 bra DONE;
//!     cvta.to.global.u64 %rd2, %rd1;
//!     mul.wide.u32 %rd3, %r2, 4;
//!     add.s64 %rd2, %rd2, %rd3;
//!     ld.global.f32 %f2, [%rd2];
//!     mul.rn.f32 %f2, %f2, %f1;
//!     st.global.f32 [%rd2], %f2;
//! DONE:
//!     ret;
//! }
//! "#)?;
//! let mut mem = Memory::new();
//! let buf = mem.alloc_f32(&[1.0, 2.0, 3.0]);
//! launch(&mut mem, m.kernel("scale")?, (1, 1, 1), (32, 1, 1), 0,
//!        &[Param::Ptr(buf), Param::F32(2.0), Param::U32(3)])?;
//! assert_eq!(mem.read_f32(buf)?, vec![2.0, 4.0, 6.0]);
//! # Ok::<(), nnkern_ptx_exec::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod exec;
mod float;
mod hopper;
mod ir;
mod lex;
mod memory;
mod parse;

pub use error::{Error, Fault, FaultReport};
pub use exec::{launch, LaunchReport, Param};
pub use half::{bf16, f16};
pub use hopper::{Swizzle, TensorMap};
pub use memory::{Buffer, Memory};
pub use parse::{Kernel, Module};
