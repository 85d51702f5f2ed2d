//! The sm_90a GEMM (`kernels/gemm_sm90.ptx`) run on the CPU by the PTX executor
//! against the reference, at shapes with ragged edge tiles in M, N and K, K long
//! enough for the 4-stage ring to wrap, persistent blocks that take several
//! tiles, alpha/beta, both epilogues, NaN-poisoned outputs and NaN padding in
//! the inputs past K (so only the copies' zero fill can make the result right).
//!
//! The host side is what the launch contract in the kernel header says, with
//! the executor's tensor maps ([`TensorMap`]) in place of `cuTensorMapEncodeTiled`.
//! With the `cuda` feature the maps come from the library's own encoder
//! (`nnkern::cuda::sm90_operand_map`, what the GEMM dispatch passes), and a test
//! checks that it builds exactly the maps written out here.
//!
//! Tolerance: bf16/f16 inputs are exact in f32 and their products exact; the
//! reference sums in f64 and rounds once. The kernel rounds at most once per
//! product added (the executor: once per k16 step), once for alpha, once for the
//! beta fma, so |C - ref| <= (K + 2)·2⁻²⁴·(|alpha|·Σ|a·b| + |beta·c|); the bias
//! add is one more rounding of a sum that includes |bias|.

mod common;

#[path = "../kernels/gen_gemm_sm90.rs"]
mod gen;

use common::*;
use nnkern::{reference, Activation, MatMut};
use nnkern_ptx_exec::{bf16, f16, launch, Error, Fault, Memory, Module, Param, Swizzle, TensorMap};

const GEMM_SM90: &str = include_str!("../kernels/gemm_sm90.ptx");

#[test]
fn generated_kernel_file_is_current() {
    let now = gen::generate();
    if std::env::var_os("NNKERN_REGENERATE").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/gemm_sm90.ptx"), &now).unwrap();
        return;
    }
    assert!(
        now == GEMM_SM90,
        "kernels/gemm_sm90.ptx differs from what kernels/gen_gemm_sm90.rs emits: regenerate it with \
         NNKERN_REGENERATE=1 cargo test --release --test ptx_sm90 generated"
    );
}

#[test]
fn kernel_file_header_and_helpers() {
    let version = GEMM_SM90
        .lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .expect(".version");
    let (major, minor) = version.trim().split_once('.').unwrap();
    assert!(
        major.parse::<u32>().unwrap() * 10 + minor.parse::<u32>().unwrap() <= 90,
        "{version}"
    );
    assert!(GEMM_SM90.contains("\n.target sm_90a\n"));
    // The marker .ci/ptxas.sh acts on (HGMMA and UTMALDG must be in the SASS).
    assert!(GEMM_SM90.contains("ci: requires HGMMA UTMALDG"));
    let helpers = |src: &'static str| {
        let b = src.find("// ---- begin activation helpers").unwrap();
        let e = src.find("// ---- end activation helpers ----").unwrap();
        &src[b..e]
    };
    assert_eq!(helpers(GEMM_SM90), helpers(include_str!("../kernels/activation.ptx")));
}

fn module() -> &'static Module {
    static M: std::sync::OnceLock<Module> = std::sync::OnceLock::new();
    M.get_or_init(|| Module::parse(GEMM_SM90).expect("gemm_sm90.ptx parses"))
}

fn act_code(act: Activation) -> u32 {
    Activation::ALL.iter().position(|&a| a == act).unwrap() as u32
}

#[derive(Clone, Copy, Debug)]
struct Run {
    half: bool,
    epilogue: Option<Activation>,
    /// Blocks launched (the persistent grid: each takes tiles ctaid, ctaid + grid, ...).
    blocks: u32,
    /// C and Y stored column-major (row stride 1).
    col_major: bool,
    /// Elements of NaN padding past the rounded-up K in each row of A and Bᵀ.
    extra_ld: usize,
}

/// Rows of 16-bit elements, `ld` apart, padded with NaN past `cols`.
fn pad16(v: &[f32], rows: usize, cols: usize, ld: usize, half: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * ld * 2);
    for r in 0..rows {
        for c in 0..ld {
            let bits = if c < cols {
                let x = v[r * cols + c];
                if half {
                    f16::from_f32(x).to_bits()
                } else {
                    bf16::from_f32(x).to_bits()
                }
            } else {
                0x7fff // NaN in both formats
            };
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
    out
}

/// Runs the kernel (text `src`) on `case` (ta/tb ignored: A is M×K, B K×N); returns C, Y
/// and the expected values with their tolerances.
fn run_case(src: Option<&str>, case: &GemmCase, seed: u64, run: Run) -> Result<(), String> {
    let (m, n, k) = (case.m, case.n, case.k);
    let case = GemmCase {
        ta: false,
        tb: false,
        ..*case
    };
    let mut d = gemm_data(&case, seed, true);
    if run.half {
        // the f16 values the kernel will see (bf16-exact values in [-2, 2] are exact in f16
        // except below 2^-14)
        for x in d.a.iter_mut().chain(d.b.iter_mut()) {
            *x = f16::from_f32(*x).to_f32();
        }
    }
    let (mut want, scale) = gemm_expected(&case, &d);
    let mut want_y = vec![0.0f32; m * n];
    if let Some(act) = run.epilogue {
        reference::bias_add_activation(
            act,
            MatMut::new(&mut want, m, n).unwrap(),
            &d.bias,
            MatMut::new(&mut want_y, m, n).unwrap(),
        )
        .unwrap();
    }
    let k_eff = if case.alpha == 0.0 { 0 } else { k };
    let ld = k_eff.next_multiple_of(8).max(8) + 8 * run.extra_ld;
    // Bᵀ: N×K
    let mut bt = vec![0f32; n * k];
    for p in 0..k {
        for j in 0..n {
            bt[j * k + p] = d.b[p * n + j];
        }
    }
    let mut mem = Memory::new();
    let ga = mem.alloc_bytes(&pad16(&d.a, m, k, ld, run.half));
    let gb = mem.alloc_bytes(&pad16(&bt, n, k, ld, run.half));
    // C and Y: element (i, j) at i*rs + j*cs
    let (rs, cs) = if run.col_major { (1, m) } else { (n, 1) };
    let store = |v: &[f32]| -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * rs + j * cs] = v[i * n + j];
            }
        }
        out
    };
    let load = |v: &[f32]| -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = v[i * rs + j * cs];
            }
        }
        out
    };
    let bc = mem.alloc_f32(&store(&d.c));
    let bbias = mem.alloc_f32(&d.bias);
    let by = mem.alloc(m * n * 4);
    let kdim = k_eff.max(1);
    let ta = operand_param(ga.addr, run.half, m, kdim, ld, gen::BM);
    let tb = operand_param(gb.addr, run.half, n, kdim, ld, gen::BN);
    let (pbias, py) = match run.epilogue {
        Some(_) => (Param::Ptr(bbias), Param::Ptr(by)),
        None => (Param::U64(0), Param::U64(0)),
    };
    let name = if run.half {
        "nk_gemm_sm90_f16"
    } else {
        "nk_gemm_sm90_bf16"
    };
    let owned;
    let module = match src {
        Some(s) => {
            owned = Module::parse(s).map_err(|e| e.to_string())?;
            &owned
        }
        None => module(),
    };
    let tiles = (m.div_ceil(gen::BM as usize) * n.div_ceil(gen::BN as usize)) as u32;
    let grid = (run.blocks.min(tiles).max(1), 1, 1);
    launch(
        &mut mem,
        module.kernel(name).map_err(|e| e.to_string())?,
        grid,
        (gen::THREADS, 1, 1),
        gen::DYNAMIC_SHARED,
        &[
            ta,
            tb,
            Param::Ptr(bc),
            Param::U32(m as u32),
            Param::U32(n as u32),
            Param::U32(k_eff as u32),
            Param::U64(rs as u64),
            Param::U64(cs as u64),
            Param::F32(case.alpha),
            Param::F32(case.beta),
            pbias,
            py,
            Param::U64(rs as u64),
            Param::U64(cs as u64),
            Param::U32(act_code(run.epilogue.unwrap_or(Activation::Identity))),
        ],
    )
    .map_err(|e| format!("{name}: {e}"))?;
    let eps = 2f64.powi(-24);
    let with_bias = run.epilogue.is_some() as usize as f64;
    let tol =
        |i: usize| (k as f64 + 2.0 + with_bias) * eps * (scale[i] + with_bias * d.bias[i % n].abs() as f64) + 1e-30;
    let what = format!("{name} {case:?} {run:?}");
    check_close(&format!("{what} C"), &load(&mem.read_f32(bc).unwrap()), &want, tol)?;
    if run.epilogue.is_some() {
        check_close(&format!("{what} Y"), &load(&mem.read_f32(by).unwrap()), &want_y, |i| {
            // The C error through f's slope, f's own kernel error at the
            // pre-activation value, and the reference's one rounding.
            act_lipschitz(act_of(run)) * 1.2 * tol(i)
                + act_forward_bound(act_of(run), want[i])
                + eps * f64::from(want_y[i].abs())
        })?;
    }
    Ok(())
}

/// The executor's tensor map of an operand as the launch contract describes it:
/// `rows` rows of `k` 16-bit elements, `ld` apart, boxes of `box_rows` x 64, 128B swizzle.
fn operand_map(addr: u64, rows: usize, k: usize, ld: usize, box_rows: u32) -> TensorMap {
    TensorMap::matrix(
        addr,
        2,
        rows as u32,
        k as u32,
        ld as u64 * 2,
        box_rows,
        gen::BK,
        Swizzle::B128,
    )
}

/// The kernel parameter of an operand's map: the library's encoder when it is built
/// (the `cuda` feature), else [`operand_map`].
fn operand_param(addr: u64, half: bool, rows: usize, k: usize, ld: usize, box_rows: u32) -> Param {
    #[cfg(feature = "cuda")]
    {
        use nnkern::cuda::{sm90_operand_map, TensorMapElem};
        let elem = if half { TensorMapElem::F16 } else { TensorMapElem::Bf16 };
        let map = sm90_operand_map(addr, elem, rows, k, ld, box_rows).unwrap();
        Param::Bytes(map.executor_encoding().unwrap().bytes().to_vec())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = half;
        operand_map(addr, rows, k, ld, box_rows).param().unwrap()
    }
}

/// The library's operand maps are the ones the launch contract describes, byte for
/// byte, and its launch uses this file's geometry (threads, shared memory).
#[cfg(feature = "cuda")]
#[test]
fn library_operand_maps_and_launch_geometry_match_the_contract() {
    use nnkern::cuda::{self, sm90_operand_map, Device, DeviceMatMut, DeviceMatRef, TensorMapElem};
    for (addr, rows, k, ld, box_rows) in [
        (0x1000u64, 300usize, 700usize, 704usize, gen::BM),
        (0x20_0000, 520, 700, 712, gen::BN),
        (0x40, 1, 1, 8, gen::BM),
    ] {
        for elem in [TensorMapElem::Bf16, TensorMapElem::F16] {
            let lib = sm90_operand_map(addr, elem, rows, k, ld, box_rows).unwrap();
            assert_eq!(
                lib.executor_encoding().unwrap().bytes(),
                &operand_map(addr, rows, k, ld, box_rows).encode().unwrap(),
                "{rows}x{k} ld {ld}"
            );
        }
    }
    let dev = Device::executor_sm90();
    let (m, n, k) = (3usize, 5usize, 8usize);
    let a = dev.upload(&vec![bf16::from_f32(1.0); m * k]).unwrap();
    let bt = dev.upload(&vec![bf16::from_f32(2.0); n * k]).unwrap();
    let mut c = dev.zeros::<f32>(m * n).unwrap();
    dev.record_launches(true);
    let av = DeviceMatRef::new(&a, m, k).unwrap();
    let bv = DeviceMatRef::new(&bt, n, k).unwrap().t();
    cuda::gemm(&dev, 1.0, av, bv, 0.0, DeviceMatMut::new(&mut c, m, n).unwrap()).unwrap();
    let l = dev.take_launches();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].kernel, l[0].block, l[0].shared_bytes),
        ("nk_gemm_sm90_bf16", (gen::THREADS, 1, 1), gen::DYNAMIC_SHARED)
    );
    assert_eq!(dev.download(&c).unwrap(), vec![16.0; m * n]);
}

fn case(m: usize, n: usize, k: usize, alpha: f32, beta: f32) -> GemmCase {
    GemmCase {
        m,
        n,
        k,
        ta: false,
        tb: false,
        alpha,
        beta,
    }
}

/// Shapes: one exact tile; ragged M, N, K with the ring wrapping (K = 700: 11 k tiles
/// through 4 stages) and persistent blocks taking 2-3 tiles each; tiny; tall and thin.
fn cases() -> Vec<(GemmCase, u32)> {
    vec![
        (case(128, 256, 64, 1.0, 0.0), 132),
        (case(300, 520, 700, 1.25, 0.0), 4),
        (case(129, 257, 65, 1.5, -0.75), 132),
        (case(1, 1, 1, 1.0, 0.5), 1),
        (case(200, 40, 300, -0.5, 1.0), 1),
    ]
}

#[test]
fn sm90_gemm_bf16_and_f16_against_the_reference() {
    for (i, (c, blocks)) in cases().iter().enumerate() {
        for half in [false, true] {
            let run = Run {
                half,
                epilogue: None,
                blocks: *blocks,
                col_major: i % 2 == 1,
                extra_ld: i % 3,
            };
            run_case(None, c, i as u64, run).unwrap();
        }
    }
}

#[test]
fn sm90_gemm_fused_bias_activation_epilogue() {
    let runs = [
        (case(129, 300, 130, 1.0, 0.25), Activation::GeluTanh, false),
        (case(70, 257, 33, 1.0, 0.0), Activation::Relu, true),
        // K = 0 (how alpha = 0 reaches the kernel): C = beta·C + bias, no copies at all
        (case(65, 33, 9, 0.0, 0.5), Activation::Sigmoid, false),
    ];
    for (i, (c, act, half)) in runs.iter().enumerate() {
        let run = Run {
            half: *half,
            epilogue: Some(*act),
            blocks: 2,
            col_major: i == 1,
            extra_ld: 1,
        };
        run_case(None, c, 100 + i as u64, run).unwrap();
    }
}

/// A mutation of the kernel text must fail the check it should fail.
fn mutated(from: &str, to: &str) -> String {
    assert!(GEMM_SM90.contains(from), "{from}");
    GEMM_SM90.replace(from, to)
}

const PLAIN: Run = Run {
    half: false,
    epilogue: None,
    blocks: 2,
    col_major: false,
    extra_ld: 0,
};

#[test]
fn negated_wgmma_scale_fails_the_check() {
    // the first k16 step's A scale negated
    let src = mutated("%rd9, %rd10, %sd, 1, 1, 0, 0;", "%rd9, %rd10, %sd, -1, 1, 0, 0;");
    let err = run_case(Some(&src), &case(129, 257, 65, 1.0, 0.0), 7, PLAIN).unwrap_err();
    assert!(err.contains("expected"), "{err}");
}

#[test]
fn planted_pipeline_bugs_are_caught() {
    let c = case(129, 257, 200, 1.0, 0.0);
    // the stage handed back while its wgmma group may still run
    let src = mutated("wgmma.wait_group.sync.aligned 1;", "");
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(err.contains("may still be reading"), "{err}");
    // a wrong expect-tx byte count: the full barrier's phase never completes
    let src = mutated("[%r27], 49152;", "[%r27], 49136;");
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(err.contains("deadlock") && err.contains("tx-count"), "{err}");
    // the consumers not looping on the full barrier's try_wait: they read a stage before its
    // copy (stale data the next copy then overwrites under the running wgmma, or bytes of a
    // phase they have not observed)
    let src = mutated("@!%q bra nk_gemm_sm90_bf16_CWAIT;", "");
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(
        [
            "without having observed",
            "before this thread observed",
            "may still be reading"
        ]
        .iter()
        .any(|s| err.contains(s)),
        "{err}"
    );
    // the producer not waiting for the consumers to free a stage
    let src = mutated("@!%q bra nk_gemm_sm90_bf16_PWAIT;", "");
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(
        ["may still be reading", "not known complete", "more often than"]
            .iter()
            .any(|s| err.contains(s)),
        "{err}"
    );
    // the empty barriers counting only half the consumer warps: a stage is handed back
    // before the other half is done with it (or, two phases a round, the parities
    // desynchronise and the pipeline stalls)
    let src = GEMM_SM90.replace("], 8;", "], 4;");
    assert_ne!(src, GEMM_SM90);
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(
        err.contains("may still be reading") || err.contains("deadlock"),
        "{err}"
    );
    // descriptors without the 128B swizzle the copies wrote: wrong numbers
    let src = GEMM_SM90.replace("0x4000004000010000", "0x0000004000010000");
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(err.contains("expected"), "{err}");
    // a missing accumulator wait at the end of a tile: the epilogue reads registers in flight
    let src = mutated("wgmma.wait_group.sync.aligned 0;", "");
    let err = run_case(Some(&src), &c, 8, PLAIN).unwrap_err();
    assert!(err.contains("still in flight"), "{err}");
}

#[test]
fn sm90_kernel_faults_name_the_problem() {
    // the tensor maps must be the executor's encoding
    let c = case(8, 8, 8, 1.0, 0.0);
    let m = module();
    let mut mem = Memory::new();
    let out = mem.alloc(256);
    let r = launch(
        &mut mem,
        m.kernel("nk_gemm_sm90_bf16").unwrap(),
        (1, 1, 1),
        (gen::THREADS, 1, 1),
        gen::DYNAMIC_SHARED,
        &[
            Param::Bytes(vec![0; 128]),
            Param::Bytes(vec![0; 128]),
            Param::Ptr(out),
            Param::U32(c.m as u32),
            Param::U32(c.n as u32),
            Param::U32(c.k as u32),
            Param::U64(8),
            Param::U64(1),
            Param::F32(1.0),
            Param::F32(0.0),
            Param::U64(0),
            Param::U64(0),
            Param::U64(8),
            Param::U64(1),
            Param::U32(0),
        ],
    );
    match r {
        Err(Error::Fault(f)) => assert!(matches!(f.fault, Fault::AsyncOrder(ref s) if s.contains("tensor map"))),
        other => panic!("{other:?}"),
    }
}

fn prop_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(prop_cases()))]

    /// Random shapes (one to three tiles each way, ragged edges, K across several ring
    /// rounds), scalars, C layouts, row paddings, grids and both input types.
    #[test]
    fn sm90_gemm_random_shapes(m in 1usize..300, n in 1usize..540, k in 0usize..420,
                               alpha_zero: bool, beta_zero: bool, half: bool, col_major: bool,
                               act in proptest::option::of(0usize..6), blocks in 1u32..5,
                               extra_ld in 0usize..3, seed: u64) {
        let c = case(m, n, k, if alpha_zero { 0.0 } else { -1.5 }, if beta_zero { 0.0 } else { 0.75 });
        let run = Run { half, epilogue: act.map(|i| Activation::ALL[i]), blocks, col_major, extra_ld };
        if let Err(e) = run_case(None, &c, seed, run) {
            proptest::prop_assert!(false, "{}", e);
        }
    }
}

fn act_of(run: Run) -> Activation {
    run.epilogue.unwrap_or(Activation::Identity)
}

// GEMM inputs, reference and comparison for this file's cases.
use nnkern::MatRef;

/// Inputs for a GEMM case, as f32 values exactly representable in `bf16`
/// when `bf16_exact` (so one set of values serves every input type).
pub struct GemmData {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub bias: Vec<f32>,
}

pub fn gemm_data(case: &GemmCase, seed: u64, bf16_exact: bool) -> GemmData {
    let mut r = KRng::new(seed);
    let mut gen = |n: usize| -> Vec<f32> {
        r.vec(n, -2.0, 2.0)
            .into_iter()
            .map(|x| {
                if bf16_exact {
                    nnkern::bf16::from_f32(x).to_f32()
                } else {
                    x
                }
            })
            .collect()
    };
    let a = gen(case.m * case.k);
    let b = gen(case.k * case.n);
    let mut c = gen(case.m * case.n);
    if case.beta == 0.0 {
        c.iter_mut().for_each(|x| *x = f32::NAN);
    }
    let bias = gen(case.n);
    GemmData { a, b, c, bias }
}

/// Views of A (m×k) and B (k×n) over `data`, transposed in memory when asked.
pub fn gemm_views<'a, T>(case: &GemmCase, a: &'a [T], b: &'a [T]) -> (MatRef<'a, T>, MatRef<'a, T>) {
    let (m, n, k) = (case.m, case.n, case.k);
    let av = if case.ta {
        MatRef::new(a, k, m).unwrap().t()
    } else {
        MatRef::new(a, m, k).unwrap()
    };
    let bv = if case.tb {
        MatRef::new(b, n, k).unwrap().t()
    } else {
        MatRef::new(b, k, n).unwrap()
    };
    (av, bv)
}

/// The reference result of a case (row-major `m×n`) and the per-element error
/// scale `|alpha|·Σ|a||b| + |beta·c|`.
pub fn gemm_expected(case: &GemmCase, d: &GemmData) -> (Vec<f32>, Vec<f64>) {
    let (av, bv) = gemm_views(case, &d.a, &d.b);
    let mut c = d.c.clone();
    let scale = reference::gemm_error_scale(
        case.alpha,
        av,
        bv,
        case.beta,
        MatRef::new(&d.c, case.m, case.n).unwrap(),
    );
    reference::gemm(
        case.alpha,
        av,
        bv,
        case.beta,
        MatMut::new(&mut c, case.m, case.n).unwrap(),
    )
    .unwrap();
    (c, scale)
}

/// Compares `got` to `want` element by element: NaN must meet NaN, infinities
/// must be equal, everything else within `tol(i)`. Returns the first mismatch.
pub fn check_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g as f64 - w as f64).abs() <= tol(i)
        };
        if !ok {
            return Err(format!(
                "{what}[{i}]: got {g:e}, expected {w:e} (tolerance {:e})",
                tol(i)
            ));
        }
    }
    Ok(())
}
