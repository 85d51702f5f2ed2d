//! Checks of the CUDA operations shared by `tests/cuda.rs` and
//! `tests/ptx_kernels.rs`: matrices in any layout inside poisoned buffers,
//! and one GEMM or softmax/cross-entropy call checked against the exact value
//! within the bounds of `tol.rs`.
#![allow(dead_code)]

use super::tol::*;
use super::KRng;
use nnkern::cuda::{self, Device, DeviceBuffer, DeviceMatMut, DeviceMatRef, DeviceTargets, KernelArg};
use nnkern::{bf16, f16, reference, Activation, MatMut, MatRef, Targets};

/// Output padding that must survive every kernel.
pub const SENTINEL: f32 = 12345.5;

// ---------------------------------------------------------------- layouts

/// Where a rows × cols matrix sits in its buffer.
#[derive(Debug, Clone, Copy)]
pub struct Lay {
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Lay {
    /// Row-major (`col_major` false) or column-major, the contiguous stride
    /// padded by `pad`, starting `offset` elements in.
    pub fn new(rows: usize, cols: usize, col_major: bool, pad: usize, offset: usize) -> Lay {
        if col_major {
            Lay {
                offset,
                rs: 1,
                cs: rows + pad,
            }
        } else {
            Lay {
                offset,
                rs: cols + pad,
                cs: 1,
            }
        }
    }
    pub fn at(&self, i: usize, j: usize) -> usize {
        self.offset + i * self.rs + j * self.cs
    }
    pub fn len(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            self.offset
        } else {
            self.at(rows - 1, cols - 1) + 1
        }
    }
}

/// `vals` (row-major rows × cols) placed in a buffer laid out as `l`, the rest `fill`.
pub fn scatter(vals: &[f32], rows: usize, cols: usize, l: Lay, fill: f32) -> Vec<f32> {
    let mut buf = vec![fill; l.len(rows, cols)];
    for i in 0..rows {
        for j in 0..cols {
            buf[l.at(i, j)] = vals[i * cols + j];
        }
    }
    buf
}

/// The rows × cols matrix at `l` in `buf`, row-major.
pub fn gather(buf: &[f32], rows: usize, cols: usize, l: Lay) -> Vec<f32> {
    (0..rows * cols).map(|x| buf[l.at(x / cols, x % cols)]).collect()
}

/// Panics unless every element of `buf` outside the matrix at `l` is still `fill`.
pub fn outside_untouched(what: &str, buf: &[f32], rows: usize, cols: usize, l: Lay, fill: f32) {
    let mut inside = vec![false; buf.len()];
    for i in 0..rows {
        for j in 0..cols {
            inside[l.at(i, j)] = true;
        }
    }
    for (x, (&v, &ins)) in buf.iter().zip(&inside).enumerate() {
        assert!(ins || v == fill, "{what}: padding element {x} was written ({v})");
    }
}

/// The check's result, panicking on a mismatch: the largest error as a fraction
/// of its bound (printed by the tests, to show how tight the bounds are).
pub fn ratio(r: Result<f64, String>) -> f64 {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    F32,
    Bf16,
    F16,
    Tf32,
}

/// One GEMM through the public op: A (m×k), B (k×n), C and an optional Y in the
/// given layouts; optional bias; returns the launches it made.
#[derive(Debug, Clone, Copy)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Lay,
    pub b: Lay,
    pub c: Lay,
    pub y: Option<(Lay, Activation)>,
    pub bias: bool,
    pub alpha: f32,
    pub beta: f32,
    /// Inputs not representable in tf32 (shows the tf32 kernel's rounding).
    pub rough: bool,
}

pub fn upload_as(dev: &Device, kind: Kind, v: &[f32]) -> Result<GemmOperand, String> {
    Ok(match kind {
        Kind::F32 | Kind::Tf32 => GemmOperand::F32(dev.upload(v).map_err(|e| e.to_string())?),
        Kind::Bf16 => GemmOperand::Bf16(
            dev.upload(&v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>())
                .map_err(|e| e.to_string())?,
        ),
        Kind::F16 => GemmOperand::F16(
            dev.upload(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>())
                .map_err(|e| e.to_string())?,
        ),
    })
}

pub enum GemmOperand {
    F32(DeviceBuffer<f32>),
    Bf16(DeviceBuffer<bf16>),
    F16(DeviceBuffer<f16>),
}

/// Runs `s` on `dev` for `kind` and checks C, Y and the padding of both.
pub fn gemm_check(dev: &Device, kind: Kind, s: &GemmSpec, seed: u64) -> Result<Vec<cuda::LaunchRecord>, String> {
    let (m, n, k) = (s.m, s.n, s.k);
    let mut r = KRng::new(seed);
    // Values exactly representable in bf16 (hence f16 in this range, and tf32)
    // unless `rough`.
    let mut gen = |len: usize| -> Vec<f32> {
        r.vec(len, -2.0, 2.0)
            .into_iter()
            .map(|x| if s.rough { x } else { bf16::from_f32(x).to_f32() })
            .collect()
    };
    let (a, b, c0, bias) = (gen(m * k), gen(k * n), gen(m * n), gen(n));
    let (pa, pb) = if s.alpha == 0.0 {
        (vec![f32::NAN; m * k], vec![f32::NAN; k * n])
    } else {
        (a.clone(), b.clone())
    };
    let abuf = scatter(&pa, m, k, s.a, f32::NAN);
    let bbuf = scatter(&pb, k, n, s.b, f32::NAN);
    let c_in: Vec<f32> = if s.beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        c0.clone()
    };
    let cbuf = scatter(&c_in, m, n, s.c, SENTINEL);
    let da = upload_as(dev, kind, &abuf)?;
    let db = upload_as(dev, kind, &bbuf)?;
    let mut dc = dev.upload(&cbuf).map_err(|e| e.to_string())?;
    let dbias = dev.upload(&bias).map_err(|e| e.to_string())?;
    let mut dy = match s.y {
        Some((yl, _)) => Some(dev.filled(yl.len(m, n), SENTINEL).map_err(|e| e.to_string())?),
        None => None,
    };
    let act = s.y.map_or(Activation::Identity, |(_, a)| a);
    let cv = DeviceMatMut::from_strides(&mut dc, s.c.offset, m, n, s.c.rs, s.c.cs).map_err(|e| e.to_string())?;
    let yv = match (&mut dy, s.y) {
        (Some(buf), Some((yl, _))) => {
            Some(DeviceMatMut::from_strides(buf, yl.offset, m, n, yl.rs, yl.cs).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let bias_arg = if s.bias { Some(&dbias) } else { None };
    dev.take_launches();
    macro_rules! run {
        ($buf_a:expr, $buf_b:expr, $f:path) => {{
            let av = DeviceMatRef::from_strides($buf_a, s.a.offset, m, k, s.a.rs, s.a.cs).map_err(|e| e.to_string())?;
            let bv = DeviceMatRef::from_strides($buf_b, s.b.offset, k, n, s.b.rs, s.b.cs).map_err(|e| e.to_string())?;
            $f(dev, s.alpha, av, bv, s.beta, cv, bias_arg, act, yv).map_err(|e| e.to_string())?
        }};
    }
    match (&da, &db) {
        (GemmOperand::F32(x), GemmOperand::F32(y)) if kind == Kind::F32 => run!(x, y, cuda::gemm_bias_activation),
        (GemmOperand::F32(x), GemmOperand::F32(y)) => run!(x, y, cuda::gemm_bias_activation_tf32),
        (GemmOperand::Bf16(x), GemmOperand::Bf16(y)) => run!(x, y, cuda::gemm_bias_activation),
        (GemmOperand::F16(x), GemmOperand::F16(y)) => run!(x, y, cuda::gemm_bias_activation),
        _ => unreachable!(),
    }
    let launches = dev.take_launches();
    // Expected values: the reference on the same values, then + bias in f64.
    let av = MatRef::new(&a, m, k).unwrap();
    let bv = MatRef::new(&b, k, n).unwrap();
    let mut want = if s.beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        c0.clone()
    };
    reference::gemm(s.alpha, av, bv, s.beta, MatMut::new(&mut want, m, n).unwrap()).unwrap();
    let ab = reference::gemm_error_scale(s.alpha, av, bv, 0.0, MatRef::new(&c0, m, n).unwrap());
    let bias_at = |i: usize| if s.bias { bias[i % n] as f64 } else { 0.0 };
    let want_c: Vec<f64> = (0..m * n).map(|i| want[i] as f64 + bias_at(i)).collect();
    let gk = match kind {
        Kind::F32 => GemmKind::F32,
        Kind::Bf16 | Kind::F16 => GemmKind::Tensor,
        Kind::Tf32 if s.rough => GemmKind::Tf32Rounded,
        Kind::Tf32 => GemmKind::Tf32Exact,
    };
    let k_eff = if s.alpha == 0.0 { 0 } else { k };
    let tol_c = |i: usize| {
        let scale = ab[i]
            + if s.beta == 0.0 {
                0.0
            } else {
                (s.beta as f64 * c0[i] as f64).abs()
            }
            + bias_at(i).abs();
        gemm_bound(gk, k_eff, ab[i], scale, want[i])
    };
    let ck = dev.download(&dc).map_err(|e| e.to_string())?;
    outside_untouched("C", &ck, m, n, s.c, SENTINEL);
    check_bound(&format!("{kind:?} C {s:?}"), &gather(&ck, m, n, s.c), &want_c, tol_c)?;
    if let (Some(buf), Some((yl, act))) = (&dy, s.y) {
        let yk = dev.download(buf).map_err(|e| e.to_string())?;
        outside_untouched("Y", &yk, m, n, yl, SENTINEL);
        let want_y: Vec<f64> = want_c.iter().map(|&c| act_exact(act, c as f32)).collect();
        // f applied to the kernel's C: f's error there, plus C's error (and the
        // rounding of the expected C to f32) times f's largest slope.
        check_bound(&format!("{kind:?} Y {s:?}"), &gather(&yk, m, n, yl), &want_y, |i| {
            act_lipschitz(act) * (tol_c(i) + EPS * want_c[i].abs()) + act_forward_bound(act, want_c[i] as f32)
        })?;
    }
    Ok(launches)
}

pub fn kernel_of(kind: Kind) -> &'static str {
    match kind {
        Kind::F32 => "nk_sgemm",
        Kind::Bf16 => "nk_gemm_bf16",
        Kind::F16 => "nk_gemm_f16",
        Kind::Tf32 => "nk_gemm_tf32",
    }
}

/// The SGEMM launch's layout flags (last parameter): bits 2 and 3 say that A and
/// B take the 128-bit vector loads.
pub fn sgemm_vec_flags(l: &[cuda::LaunchRecord]) -> (bool, bool) {
    let rec = l.iter().find(|r| r.kernel == "nk_sgemm").expect("an nk_sgemm launch");
    match rec.args.last() {
        Some(KernelArg::U32(f)) => (f & 4 != 0, f & 8 != 0),
        other => panic!("flags {other:?}"),
    }
}

/// softmax_xent (fused), softmax_xent_loss, softmax and log_softmax on x at
/// `xl`, soft targets at `tl`, dlogits and the softmax outputs at `dl`.
#[allow(clippy::too_many_arguments)]
pub fn xent_check(
    dev: &Device,
    rows: usize,
    cols: usize,
    soft: bool,
    xl: Lay,
    tl: Lay,
    dl: Lay,
    seed: u64,
) -> Result<(), String> {
    let e = |e: nnkern::Error| e.to_string();
    let mut r = KRng::new(seed);
    let x = r.vec(rows * cols, -10.0, 10.0);
    let labels: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
    let mut t = r.vec(rows * cols, 0.0, 1.0);
    for row in t.chunks_mut(cols) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let dx = dev.upload(&scatter(&x, rows, cols, xl, f32::NAN)).map_err(e)?;
    let dt = dev.upload(&scatter(&t, rows, cols, tl, f32::NAN)).map_err(e)?;
    let dlab = dev.upload(&labels).map_err(e)?;
    let xv = DeviceMatRef::from_strides(&dx, xl.offset, rows, cols, xl.rs, xl.cs).map_err(e)?;
    let targets = if soft {
        DeviceTargets::Soft(DeviceMatRef::from_strides(&dt, tl.offset, rows, cols, tl.rs, tl.cs).map_err(e)?)
    } else {
        DeviceTargets::Labels(&dlab)
    };
    let mut dd = dev.filled(dl.len(rows, cols), SENTINEL).map_err(e)?;
    let loss = cuda::softmax_xent(
        dev,
        xv,
        targets,
        DeviceMatMut::from_strides(&mut dd, dl.offset, rows, cols, dl.rs, dl.cs).map_err(e)?,
    )
    .map_err(e)?;
    let loss_only = cuda::softmax_xent_loss(dev, xv, targets).map_err(e)?;
    // Expected: the reference (f64 inside, rounded once), and the bounds of tol.rs.
    let hx = MatRef::new(&x, rows, cols).unwrap();
    let ht = MatRef::new(&t, rows, cols).unwrap();
    let htargets = if soft {
        Targets::Soft(ht)
    } else {
        Targets::Labels(&labels)
    };
    let mut want_d = vec![0.0f32; rows * cols];
    let want_loss = reference::softmax_xent(hx, htargets, MatMut::new(&mut want_d, rows, cols).unwrap()).unwrap();
    let lse: Vec<RowLse> = x.chunks(cols).map(row_lse).collect();
    let inv = 1.0 / rows as f64;
    let p = |i: usize| (x[i] as f64 - lse[i / cols].lse).exp();
    let target = |i: usize| {
        if soft {
            t[i] as f64
        } else {
            f64::from(u8::from(labels[i / cols] as usize == i % cols))
        }
    };
    // dlogits = RN(RN(p − t)·RN(1/rows)): p's bound, the subtraction, the product and
    // 1/rows's rounding; the reference's rounding.
    let dk = dev.download(&dd).map_err(e)?;
    outside_untouched("dlogits", &dk, rows, cols, dl, SENTINEL);
    check_bound(
        "dlogits",
        &gather(&dk, rows, cols, dl),
        &want_d.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        |i| {
            let r = &lse[i / cols];
            (softmax_bound(r, x[i], p(i)) + EPS * (p(i) - target(i)).abs()) * inv + 3.0 * EPS * want_d[i].abs() as f64
        },
    )?;
    // loss: per row lse − x[label] (one rounding) or Σ t_j·RN(lse − x_j) by fma per lane
    // and a 5-level butterfly; the mean uses RN(1/rows) (EPS) in f64; the result and
    // the reference are each rounded to f32.
    let mut loss_err = 0.0;
    for (i, rl) in lse.iter().enumerate() {
        let row = &x[i * cols..(i + 1) * cols];
        loss_err += if soft {
            let tr = &t[i * cols..(i + 1) * cols];
            let terms: f64 = row
                .iter()
                .zip(tr)
                .map(|(&v, &tj)| tj as f64 * (rl.lse - v as f64))
                .sum();
            let errs: f64 = row
                .iter()
                .zip(tr)
                .map(|(&v, &tj)| tj as f64 * (rl.err + EPS * (rl.lse - v as f64).abs()))
                .sum();
            errs + (cols.div_ceil(32) as f64 + 5.0) * EPS * terms
        } else {
            rl.err + EPS * (rl.lse - row[labels[i] as usize] as f64).abs()
        };
    }
    let loss_bound = loss_err * inv + 3.0 * EPS * want_loss.abs() as f64;
    for (what, got) in [("loss", loss), ("loss only", loss_only)] {
        if (got as f64 - want_loss as f64).abs() > loss_bound {
            return Err(format!(
                "{what} {got} vs {want_loss} (bound {loss_bound:e}) {rows}x{cols} soft={soft}"
            ));
        }
    }
    for log in [false, true] {
        let mut dy = dev.filled(dl.len(rows, cols), SENTINEL).map_err(e)?;
        let yv = DeviceMatMut::from_strides(&mut dy, dl.offset, rows, cols, dl.rs, dl.cs).map_err(e)?;
        let mut want = vec![0.0f32; rows * cols];
        if log {
            cuda::log_softmax(dev, xv, yv).map_err(e)?;
            reference::log_softmax(hx, MatMut::new(&mut want, rows, cols).unwrap()).unwrap();
        } else {
            cuda::softmax(dev, xv, yv).map_err(e)?;
            reference::softmax(hx, MatMut::new(&mut want, rows, cols).unwrap()).unwrap();
        }
        let yk = dev.download(&dy).map_err(e)?;
        outside_untouched("softmax y", &yk, rows, cols, dl, SENTINEL);
        check_bound(
            &format!("softmax log={log}"),
            &gather(&yk, rows, cols, dl),
            &want.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            |i| {
                let r = &lse[i / cols];
                let b = if log {
                    log_softmax_bound(r, want[i] as f64)
                } else {
                    softmax_bound(r, x[i], p(i))
                };
                b + EPS * want[i].abs() as f64
            },
        )?;
    }
    Ok(())
}
