//! The GPU backend (feature `cuda`): hand-written PTX kernels (`kernels/*.ptx`,
//! embedded in the library) launched on one stream of a [`Device`].
//!
//! A device runs on one of two engines behind one interface (memory, copies,
//! module load, launches checked against each kernel's parameter list,
//! synchronisation), chosen when it is made:
//! - [`Device::new`]: a CUDA GPU; the driver JIT-compiles the PTX. Nothing CUDA is
//!   needed to build: `libcuda` is loaded here, and its absence (or the absence of a
//!   GPU) is [`Error::NoCuda`](crate::Error::NoCuda), never a panic.
//! - [`Device::executor`]: the PTX executor (`nnkern-ptx-exec`), which runs the same
//!   kernels on the CPU, one launch at a time, faulting on out-of-bounds accesses,
//!   reads of unwritten shared memory, shared-memory races and diverged warp
//!   collectives. Every operation's host code — validation, launch geometry,
//!   packing, layout flags, parameter order — is the same on both, so the
//!   executor tests it without a GPU. [`Device::executor_sm90`] models an sm_90
//!   GPU instead, so that the operations dispatch as they would on one.
//!
//! The bf16 / f16 [`gemm`] runs on compute capability 9.0 the sm_90a kernel
//! (`kernels/gemm_sm90.ptx`: wgmma fed by bulk tensor copies through
//! [`TiledTensorMap`]s the device encodes once per operand layout) when both
//! operands are laid out as those copies read them in place (A row-major and B
//! column-major, rows 16-byte aligned and a multiple of 8 elements apart), and the
//! mma.sync kernel otherwise and on every other device.
//!
//! Data lives in [`DeviceBuffer`]s, which belong to the device that made them;
//! matrices on the device are described by [`DeviceMatRef`] / [`DeviceMatMut`]
//! views (offset, shape, row and column strides), as [`MatRef`](crate::MatRef) /
//! [`MatMut`](crate::MatMut) do on the host. The operations ([`gemm`],
//! [`activation_forward`], [`softmax_xent`], [`adam_step`], ...) mirror the CPU
//! ones, with the same validation and the same errors.
//!
//! Every operation is queued on the device's stream and returns at once, except
//! those that return a value computed on the device (a loss, a norm), which wait
//! for it.
//!
//! ```
//! # fn main() -> nnkern::Result<()> {
//! use nnkern::cuda::{self, Device, DeviceMatMut, DeviceMatRef};
//! // Device::new(0) on a machine with a GPU; the executor anywhere.
//! let dev = Device::executor();
//! let a = dev.upload(&[1.0f32, 2.0, 3.0, 4.0])?;
//! let mut c = dev.zeros::<f32>(4)?;
//! let av = DeviceMatRef::new(&a, 2, 2)?;
//! cuda::gemm(&dev, 1.0, av, av.t(), 0.0, DeviceMatMut::new(&mut c, 2, 2)?)?;
//! assert_eq!(dev.download(&c)?, [5.0, 11.0, 11.0, 25.0]);
//! # Ok(())
//! # }
//! ```

mod buffer;
mod device;
mod driver;
mod engine;
mod executor;
mod ops;
mod tensor_map;

pub use buffer::{DeviceBuffer, DeviceElem, DeviceMatMut, DeviceMatRef};
pub use device::{Device, DeviceGraph};
pub use engine::{EngineKind, KernelArg, LaunchRecord};
pub use ops::{
    activation_backward, activation_backward_inplace, activation_backward_inplace_at, activation_forward,
    activation_forward_inplace, adam_step, adam_step_many, bias_add, bias_add_activation, bias_add_activation_at,
    bias_grad, bias_grad_at, clip_global_norm, clip_global_norm_with, count_correct, count_correct_accumulate,
    gather_scaled, gemm, gemm_bias_activation, gemm_bias_activation_tf32, gemm_tf32, global_norm, log_softmax,
    sgd_step, sm90_operand_map, softmax, softmax_xent, softmax_xent_accumulate, softmax_xent_labels_accumulate,
    softmax_xent_loss, AdamParam, DeviceTargets, GpuGemmInput, XentAccumulator, SM90_KERNELS,
};
pub use ops::{
    adam_step_with_state, clip_global_norm_queued, gather_batch, gemm_bias_activation_at, sgd_step_with_state,
    BatchCursor, StepState,
};
pub use tensor_map::{TensorMapArg, TensorMapElem, TensorMapSwizzle, TiledTensorMap, TENSOR_MAP_BYTES};

/// The PTX source of every kernel family, as embedded in the library
/// (`(file name, source)`); useful to tools that assemble or execute them.
pub const KERNELS: [(&str, &str); 6] = [
    ("activation.ptx", device::ACTIVATION_PTX),
    ("optim.ptx", device::OPTIM_PTX),
    ("softmax_xent.ptx", device::SOFTMAX_XENT_PTX),
    ("gemm_f32.ptx", device::GEMM_F32_PTX),
    ("gemm_tc.ptx", device::GEMM_TC_PTX),
    ("gemm_sm90.ptx", device::GEMM_SM90_PTX),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn no_driver_or_no_device_is_an_error_not_a_panic() {
        match Device::new(0) {
            Ok(dev) => println!("found a CUDA device: {}", dev.name().unwrap_or_default()),
            Err(Error::NoCuda(reason)) => println!("no CUDA: {reason}"),
            Err(e) => panic!("unexpected error kind: {e}"),
        }
        // An ordinal far past any machine's device count.
        match Device::new(4096) {
            Ok(_) => panic!("device 4096 cannot exist"),
            Err(Error::NoCuda(_)) | Err(Error::Cuda(_)) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }

    /// A PTX the JIT rejects gives Error::Cuda with the JIT's log (on a GPU machine;
    /// skipped without one unless REQUIRE_GPU=1).
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn jit_failure_reports_the_log() {
        let dev = match Device::new(0) {
            Ok(d) => d,
            Err(e) if std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1") => panic!("REQUIRE_GPU=1 but {e}"),
            Err(e) => return eprintln!("skipped: {e}"),
        };
        const BAD: &str =
            ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k() { bogus.instruction; ret; }\n";
        match dev.function("bad.ptx", BAD, "k") {
            Err(Error::Cuda(msg)) => {
                assert!(msg.contains("JIT log"), "{msg}");
                assert!(msg.contains("driver"), "{msg}");
            }
            other => panic!("expected a JIT error, got {other:?}"),
        }
    }

    /// The executor rejects a PTX it cannot parse with the line, as an error.
    #[test]
    fn executor_load_failure_names_the_line() {
        let dev = Device::executor();
        const BAD: &str =
            ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\nbogus.instruction;\nret;\n}\n";
        match dev.function("bad.ptx", BAD, "k") {
            Err(Error::Cuda(msg)) => {
                assert!(msg.contains("bad.ptx") && msg.contains("line 6"), "{msg}");
            }
            Err(e) => panic!("expected a load error, got {e}"),
            Ok(_) => panic!("expected a load error"),
        }
    }

    const COPY: &str = ".version 8.0\n.target sm_80\n.address_size 64\n\
        .visible .entry copy(.param .u64 src, .param .u64 dst, .param .u32 n)\n{\n\
        .reg .pred %p;\n.reg .b32 %r<4>;\n.reg .b64 %rd<6>;\n\
        ld.param.u64 %rd1, [src];\nld.param.u64 %rd2, [dst];\nld.param.u32 %r1, [n];\n\
        mov.u32 %r2, %tid.x;\nsetp.ge.u32 %p, %r2, %r1;\n@%p bra DONE;\n\
        mul.wide.u32 %rd3, %r2, 4;\nadd.s64 %rd4, %rd1, %rd3;\nadd.s64 %rd5, %rd2, %rd3;\n\
        ld.global.u32 %r3, [%rd4];\nst.global.u32 [%rd5], %r3;\nDONE:\nret;\n}\n";

    /// Launches are checked against the kernel's parameter list and the grid and
    /// block limits before either engine sees them; the executor reports a kernel's
    /// out-of-bounds access as an error; launches are recorded when asked.
    #[test]
    fn launches_are_checked_recorded_and_faults_reported() {
        let dev = Device::executor();
        let k = dev.function("copy.ptx", COPY, "copy").unwrap();
        let src = dev.upload(&[1u32, 2, 3]).unwrap();
        let mut dst = dev.zeros::<u32>(3).unwrap();
        let (ps, pd) = (dev.addr(&src, 0).unwrap(), dev.addr(&dst, 0).unwrap());
        let good = [KernelArg::U64(ps), KernelArg::U64(pd), KernelArg::U32(3)];
        dev.record_launches(true);
        dev.launch(&k, (1, 1, 1), (32, 1, 1), &good).unwrap();
        assert_eq!(dev.download(&dst).unwrap(), [1, 2, 3]);
        let swapped = [KernelArg::U64(ps), KernelArg::U32(3), KernelArg::U64(pd)];
        for (grid, block, args) in [
            ((1, 1, 1), (32, 1, 1), &swapped[..]),
            ((1, 1, 1), (32, 1, 1), &good[..2]),
            ((0, 1, 1), (32, 1, 1), &good[..]),
            ((1, 65536, 1), (32, 1, 1), &good[..]),
            ((1u32 << 31, 1, 1), (32, 1, 1), &good[..]),
            ((1, 1, 1), (1025, 1, 1), &good[..]),
            ((1, 1, 1), (32, 32, 2), &good[..]),
        ] {
            assert!(
                matches!(dev.launch(&k, grid, block, args), Err(Error::Cuda(_))),
                "{grid:?} {block:?} {args:?}"
            );
        }
        // n = 4 reads one element past the 12-byte source: a fault, reported as an error
        let over = [KernelArg::U64(ps), KernelArg::U64(pd), KernelArg::U32(4)];
        match dev.launch(&k, (1, 1, 1), (32, 1, 1), &over) {
            Err(Error::Cuda(msg)) => assert!(msg.contains("outside every allocation"), "{msg}"),
            other => panic!("expected a fault, got {other:?}"),
        }
        let log = dev.take_launches();
        assert_eq!(log.len(), 2, "only launches that passed the checks are recorded");
        assert_eq!(
            (log[0].kernel, log[0].grid, log[0].block),
            ("copy", (1, 1, 1), (32, 1, 1))
        );
        assert_eq!(log[0].args, good);
        dev.record_launches(false);
        let _ = &mut dst;
    }

    /// A buffer used with another device is an error (the addresses would mean
    /// nothing there), on copies and on operations.
    #[test]
    fn buffers_belong_to_their_device() {
        let (a, b) = (Device::executor(), Device::executor());
        let x = a.upload(&[1.0f32, 2.0]).unwrap();
        let mut y = b.zeros::<f32>(2).unwrap();
        assert!(matches!(b.download(&x), Err(Error::InvalidArgument { .. })));
        assert!(matches!(
            a.copy_to_device(&[0.0], &mut y),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            activation_forward(&b, crate::Activation::Relu, &x, &mut y),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(b.download(&y).unwrap(), [0.0, 0.0]);
    }

    /// The executor's memory: a limit (out of memory is an error), sizes that
    /// overflow are errors, buffers are freed when dropped, copies are checked.
    #[test]
    fn executor_memory_is_bounded_and_freed() {
        let dev = Device::executor_with_memory_limit(1 << 20);
        assert_eq!(dev.engine(), EngineKind::Executor);
        assert_eq!(dev.executor_bytes_in_use(), Some(0));
        let a = dev.zeros::<f32>(3 << 16).unwrap();
        assert!(matches!(dev.zeros::<f32>(1 << 17), Err(Error::Cuda(_))));
        assert!(matches!(dev.zeros::<f32>(usize::MAX / 2), Err(Error::Overflow { .. })));
        drop(a);
        assert_eq!(dev.executor_bytes_in_use(), Some(0));
        let b = dev.filled(100_000, 7u32).unwrap();
        assert!(dev.download(&b).unwrap().iter().all(|&v| v == 7));
        let mut short = [0u32; 3];
        dev.copy_to_host(&b, &mut short).unwrap();
        let mut e = dev.zeros::<u32>(2).unwrap();
        assert!(matches!(
            dev.copy_to_device(&short, &mut e),
            Err(Error::BufferTooShort { .. })
        ));
        let empty = dev.upload::<f32>(&[]).unwrap();
        assert!(empty.is_empty() && dev.download(&empty).unwrap().is_empty());
    }

    #[test]
    fn every_kernel_file_declares_an_allowed_version_and_target() {
        for (name, src) in KERNELS {
            let version = src
                .lines()
                .find_map(|l| l.trim().strip_prefix(".version "))
                .unwrap_or_else(|| panic!("{name}: no .version"));
            let (major, minor) = version.trim().split_once('.').unwrap();
            let v = major.parse::<u32>().unwrap() * 10 + minor.parse::<u32>().unwrap();
            assert!(v <= 90, "{name}: .version {version} is above the 13.0 driver's 9.0");
            // Every kernel runs on sm_80 and later but the Hopper GEMM (sm_90a only).
            let target = if name == "gemm_sm90.ptx" {
                "\n.target sm_90a\n"
            } else {
                "\n.target sm_80\n"
            };
            assert!(src.contains(target), "{name}: expected {target:?}");
            assert!(
                src.contains("Launch contract"),
                "{name}: header must state the launch contract"
            );
        }
    }

    #[test]
    fn every_entry_has_a_parameter_list_the_launcher_can_pass() {
        let mut entries = 0;
        for (name, src) in KERNELS {
            for line in src.lines().filter(|l| l.starts_with(".visible .entry ")) {
                let kernel = line[".visible .entry ".len()..].split('(').next().unwrap();
                let kinds = engine::param_kinds(src, kernel).unwrap_or_else(|| panic!("{name}: {kernel}"));
                assert!(!kinds.is_empty(), "{kernel}");
                entries += 1;
            }
        }
        assert_eq!(entries, 23);
        assert_eq!(
            engine::param_kinds(device::GEMM_SM90_PTX, "nk_gemm_sm90_bf16").map(|k| k[..3].to_vec()),
            Some(vec![
                engine::ParamKind::TensorMap,
                engine::ParamKind::TensorMap,
                engine::ParamKind::U64
            ])
        );
        assert_eq!(
            engine::param_kinds(device::OPTIM_PTX, "nk_clip_scale"),
            Some(vec![
                engine::ParamKind::U64,
                engine::ParamKind::U64,
                engine::ParamKind::F32
            ])
        );
        assert_eq!(engine::param_kinds(device::OPTIM_PTX, "nk_missing"), None);
    }

    /// A tensor-map parameter is 128 bytes aligned to 64 or more; other aggregates
    /// are refused (the launcher has no argument for them).
    #[test]
    fn tensor_map_parameters_are_recognised() {
        let kinds = |decl: &str| {
            let src = format!(".visible .entry k({decl}, .param .u32 n)\n{{\nret;\n}}\n");
            engine::param_kinds(&src, "k")
        };
        use engine::ParamKind::{TensorMap, U32};
        assert_eq!(kinds(".param .align 64 .b8 tm[128]"), Some(vec![TensorMap, U32]));
        assert_eq!(kinds(".param .align 128 .b8 tm[128]"), Some(vec![TensorMap, U32]));
        assert_eq!(kinds(".param .b8 tm[128]"), None);
        assert_eq!(kinds(".param .align 32 .b8 tm[128]"), None);
        assert_eq!(kinds(".param .align 64 .b8 tm[64]"), None);
        assert_eq!(kinds(".param .align 64 .u32 tm[128]"), None);
        assert_eq!(kinds(".param .align 64 .b8 tm[128] extra"), None);
        assert_eq!(kinds(".param .align x .b8 tm[128]"), None);
    }

    /// The sm_90a kernels load only on a device of compute capability 9.0, and a
    /// launch may not ask for more dynamic shared memory than the device has.
    #[test]
    fn sm90a_kernels_need_an_sm90_device_and_shared_memory_is_bounded() {
        let sm80 = Device::executor();
        match sm80.function("gemm_sm90.ptx", device::GEMM_SM90_PTX, "nk_gemm_sm90_bf16") {
            Err(Error::Cuda(msg)) => assert!(msg.contains("sm_90a") && msg.contains("8.0"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let sm90 = Device::executor_sm90();
        assert_eq!(sm90.compute_capability().unwrap(), (9, 0));
        assert_eq!(sm90.multiprocessor_count().unwrap(), 132);
        assert_eq!(sm90.max_dynamic_shared_bytes(), 232_448);
        sm90.function("gemm_sm90.ptx", device::GEMM_SM90_PTX, "nk_gemm_sm90_bf16")
            .unwrap();
        let k = sm90.function("copy.ptx", COPY, "copy").unwrap();
        let src = sm90.upload(&[1u32, 2, 3]).unwrap();
        let dst = sm90.zeros::<u32>(3).unwrap();
        let args = [
            KernelArg::U64(sm90.addr(&src, 0).unwrap()),
            KernelArg::U64(sm90.addr(&dst, 0).unwrap()),
            KernelArg::U32(3),
        ];
        sm90.record_launches(true);
        sm90.launch_with_shared(&k, (1, 1, 1), (32, 1, 1), 232_448, &args)
            .unwrap();
        match sm90.launch_with_shared(&k, (1, 1, 1), (32, 1, 1), 232_449, &args) {
            Err(Error::Cuda(msg)) => assert!(msg.contains("dynamic shared memory"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(sm80.max_dynamic_shared_bytes() < 232_448);
        let log = sm90.take_launches();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].shared_bytes, 232_448);
        assert_eq!(sm90.download(&dst).unwrap(), [1, 2, 3]);
    }

    /// Tensor maps: the device refuses a layout the bulk copies cannot read with the
    /// validation error (the same on both engines: it runs before either encodes),
    /// and encodes each layout once.
    #[test]
    fn tensor_maps_are_validated_and_cached() {
        let dev = Device::executor_sm90();
        let map = |addr: u64, ld: usize| ops::sm90_operand_map(addr, TensorMapElem::Bf16, 300, 70, ld, 128);
        assert!(matches!(map(0x1008, 72), Err(Error::InvalidArgument { .. })));
        assert!(matches!(map(0x1000, 68), Err(Error::InvalidArgument { .. })));
        assert!(matches!(map(0x1000, 64), Err(Error::InvalidArgument { .. })));
        assert!(matches!(map(0x1000, usize::MAX), Err(Error::Overflow { .. })));
        let good = map(0x1000, 72).unwrap();
        assert_eq!(good.dims[..2], [70, 300]);
        assert_eq!(good.strides[0], 144);
        let bad = TiledTensorMap {
            global_address: 0x1004,
            ..good
        };
        assert!(matches!(dev.tensor_map(&bad), Err(Error::InvalidArgument { .. })));
        let a = dev.tensor_map(&good).unwrap();
        assert_eq!(dev.tensor_maps_encoded(), 1);
        assert_eq!(dev.tensor_map(&good).unwrap(), a);
        assert_eq!(dev.tensor_maps_encoded(), 1);
        let other = map(0x2000, 72).unwrap();
        assert_ne!(dev.tensor_map(&other).unwrap(), a);
        assert_eq!(dev.tensor_maps_encoded(), 2);
        assert_eq!(a, good.executor_encoding().unwrap());
    }
}
