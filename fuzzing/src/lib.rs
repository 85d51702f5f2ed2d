//! Fuzz harnesses: one function per fuzz target, taking raw bytes.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line calls into
//! these, and `tests/fuzz_replay.rs` replays the committed corpora through
//! the same functions, so a finding minimised into `fuzz/regressions/`
//! stays a regression test. Each harness decodes the bytes into a call,
//! runs it on every ISA this CPU supports (forced with [`nnkern::with_isa`])
//! and on the naive reference, and panics when they disagree beyond a
//! tolerance stated next to the check, when an error is returned by one
//! but not the other, or when memory outside an output was written.
//!
//! Not part of the stable API.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(clippy::needless_range_loop)] // parallel arrays indexed by one element position

use nnkern::reference;
use nnkern::{
    bf16, f16, Activation, AdamConfig, AdamEpsilon, AdamState, Isa, MatMut, MatRef, SgdConfig, SgdState, Targets,
    WeightDecay,
};
use nnkern_capi::{self as capi, NNKERN_ERR_ALIASING, NNKERN_ERR_NULL_POINTER, NNKERN_OK};
use std::ffi::c_int;

/// A fuzz harness: decodes bytes into calls, panics on a finding.
pub type Harness = fn(&[u8]);

/// Every harness by name, as the fuzz targets are named. A new parser's
/// harness is added here (and as a one-line file in `fuzz/fuzz_targets/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("gemm_f32", gemm_f32),
    ("gemm_half", gemm_half),
    ("activation", activation),
    ("bias", bias),
    ("softmax_xent", softmax_xent),
    ("optim", optim),
    ("metrics", metrics),
    ("capi_args", capi_args),
    ("cblas_sgemm", cblas_sgemm),
    ("idx", idx),
    ("checkpoint", checkpoint),
];

/// The spacing of f32 subnormals, 2⁻¹⁴⁹.
const SUBNORMAL_STEP: f64 = 1.401_298_464_324_817e-45;

/// Unit roundoff of f32 (2⁻²⁴), the bound on one correctly rounded operation.
const U: f64 = 1.0 / 16_777_216.0;

/// Reads values from the fuzzer's bytes; once they run out, continues with
/// a generator seeded from them, so large shapes still get varied values.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    state: u64,
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ data.len() as u64;
        for &b in data.iter().take(64) {
            state = (state ^ b as u64).wrapping_mul(0x100_0000_01B3);
        }
        Input { data, pos: 0, state }
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        if let Some(&b) = self.data.get(self.pos) {
            self.pos += 1;
            return b;
        }
        // xorshift64*: cheap, and never all zeros.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A size in `0..=max`.
    pub fn size(&mut self, max: usize) -> usize {
        self.u16() as usize % (max + 1)
    }

    /// A value: usually a short dyadic number in [−8, 8) (so sums are often
    /// exact and errors visible), sometimes a wider one, and when `specials`
    /// is set sometimes NaN, ±∞, ±0, a subnormal or a large value.
    pub fn value(&mut self, specials: bool) -> f32 {
        let kind = self.u8();
        let bits = self.u16();
        match kind {
            0..=199 => (bits as i16) as f32 / 4096.0,
            200..=239 => (bits as i16) as f32 / 64.0 * if kind & 1 == 0 { 1.0 } else { 1e-3 },
            _ if !specials => (bits as i16) as f32 / 256.0,
            240 | 241 => f32::NAN,
            242 => f32::INFINITY,
            243 => f32::NEG_INFINITY,
            244 => -0.0,
            245 => 0.0,
            246 => f32::from_bits(bits as u32 + 1) * if bits & 1 == 0 { 1.0 } else { -1.0 },
            247 => 1e6 * (bits as i16) as f32,
            _ => (bits as i16) as f32 / 256.0,
        }
    }

    /// `n` values.
    pub fn values(&mut self, n: usize, specials: bool) -> Vec<f32> {
        (0..n).map(|_| self.value(specials)).collect()
    }
}

/// A pattern no kernel writes by chance: a signalling-NaN payload.
const POISON: u32 = 0x7FA5_A5A5;

/// Same value for comparison purposes: equal, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Checks `got` against `want` with absolute tolerance `tol`; NaN must
/// match NaN, infinities must match exactly.
fn close(what: &str, isa: Isa, index: usize, got: f32, want: f32, tol: f64) {
    // A tolerance made NaN by infinite inputs (∞·0) bounds nothing. Near
    // the subnormal range each f32 operation errs by up to half a subnormal
    // step (2⁻¹⁵⁰) absolutely, which no relative bound covers: allow 16 such
    // steps.
    let tol = if tol.is_nan() {
        f64::INFINITY
    } else {
        tol + 16.0 * SUBNORMAL_STEP
    };
    let ok = if want.is_nan() || got.is_nan() || want.is_infinite() || got.is_infinite() {
        same(got, want)
    } else {
        ((got as f64) - (want as f64)).abs() <= tol
    };
    assert!(
        ok,
        "{what} [{isa}] element {index}: got {got:e}, reference {want:e}, tolerance {tol:e}"
    );
}

/// Supported ISAs; each harness runs every one.
fn isas() -> Vec<Isa> {
    Isa::supported()
}

fn run_on<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    nnkern::with_isa(isa, f).expect("supported ISA")
}

/// A strided matrix stored in a padded buffer: `rows × cols`, with the gaps
/// between elements filled with [`POISON`] so writes outside the view show.
struct Stored {
    buf: Vec<f32>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Stored {
    /// Row-major or column-major with a padded leading dimension.
    fn new(inp: &mut Input<'_>, rows: usize, cols: usize, col_major: bool, pad: usize, specials: bool) -> Self {
        // Leading dimensions at least 1, as BLAS requires.
        let (rs, cs) = if col_major {
            (1, (rows + pad).max(1))
        } else {
            ((cols + pad).max(1), 1)
        };
        let len = nnkern::matrix::required_len(rows, cols, rs, cs).unwrap();
        let mut buf = vec![f32::from_bits(POISON); len];
        for i in 0..rows {
            for j in 0..cols {
                buf[i * rs + j * cs] = inp.value(specials);
            }
        }
        Stored {
            buf,
            rows,
            cols,
            rs,
            cs,
        }
    }
    fn view(&self) -> MatRef<'_, f32> {
        MatRef::from_strides(&self.buf, self.rows, self.cols, self.rs, self.cs).unwrap()
    }
    fn view_mut(&mut self) -> MatMut<'_, f32> {
        MatMut::from_strides(&mut self.buf, self.rows, self.cols, self.rs, self.cs).unwrap()
    }
    fn in_view(&self, idx: usize) -> bool {
        (0..self.rows).any(|i| {
            idx >= i * self.rs && (idx - i * self.rs).is_multiple_of(self.cs.max(1)) && {
                let j = (idx - i * self.rs) / self.cs.max(1);
                j < self.cols && (self.cs > 0 || j == 0)
            }
        })
    }
    /// Panics when an element outside the view changed.
    fn check_gaps(&self, before: &[f32], what: &str) {
        for (idx, (a, b)) in self.buf.iter().zip(before).enumerate() {
            if a.to_bits() != b.to_bits() {
                assert!(self.in_view(idx), "{what}: element {idx} outside the view was written");
            }
        }
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.buf[i * self.rs + j * self.cs]
    }
}

fn layout_flags(inp: &mut Input<'_>) -> (bool, usize) {
    let b = inp.u8();
    (b & 1 == 1, [0, 0, 1, 3][(b >> 1) as usize & 3])
}

fn scalar(inp: &mut Input<'_>) -> f32 {
    match inp.u8() % 8 {
        0 => 0.0,
        1 | 2 => 1.0,
        3 => -1.0,
        4 => 0.5,
        5 => 2.0,
        _ => inp.value(false),
    }
}

/// GEMM with f32 inputs on every ISA against the reference: arbitrary
/// shapes (sometimes past the cache blocking sizes), strides, transposes,
/// alpha/beta, values; `beta = 0` with NaN in `C` must not leak.
pub fn gemm_f32(data: &[u8]) {
    gemm_generic::<f32>(data, |x| x);
}

/// GEMM with bf16 and f16 inputs (chosen by the first byte) against the reference.
pub fn gemm_half(data: &[u8]) {
    match data.first().copied().unwrap_or(0) & 1 {
        0 => gemm_generic::<bf16>(data.get(1..).unwrap_or(&[]), bf16::from_f32),
        _ => gemm_generic::<f16>(data.get(1..).unwrap_or(&[]), f16::from_f32),
    }
}

fn gemm_generic<T: nnkern::GemmInput>(data: &[u8], conv: fn(f32) -> T) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let specials = flags & 1 == 1;
    // One input in four takes k past the usual cache blocking (KC of a few
    // hundred); the rest stay small so the fuzzer runs fast.
    let big = flags & 0x12 == 0x12;
    let (m, n, k) = if big {
        (inp.size(40), inp.size(40), inp.size(520))
    } else {
        (inp.size(17), inp.size(17), inp.size(33))
    };
    let alpha = scalar(&mut inp);
    let beta = scalar(&mut inp);
    let (a_cm, a_pad) = layout_flags(&mut inp);
    let (b_cm, b_pad) = layout_flags(&mut inp);
    let (c_cm, c_pad) = layout_flags(&mut inp);
    let ta = flags & 4 == 4;
    let tb = flags & 8 == 8;
    // Store op(A) = Aᵀ when ta: the stored matrix is k×m.
    let a_st = if ta {
        Stored::new(&mut inp, k, m, a_cm, a_pad, specials)
    } else {
        Stored::new(&mut inp, m, k, a_cm, a_pad, specials)
    };
    let b_st = if tb {
        Stored::new(&mut inp, n, k, b_cm, b_pad, specials)
    } else {
        Stored::new(&mut inp, k, n, b_cm, b_pad, specials)
    };
    let mut c0 = Stored::new(&mut inp, m, n, c_cm, c_pad, specials);
    if beta == 0.0 {
        // BLAS: beta = 0 never reads C, so NaN there must not reach the result.
        for i in 0..m {
            for j in 0..n {
                c0.buf[i * c0.rs + j * c0.cs] = f32::NAN;
            }
        }
    }
    let a_t: Vec<T> = a_st.buf.iter().map(|&x| conv(x)).collect();
    let b_t: Vec<T> = b_st.buf.iter().map(|&x| conv(x)).collect();
    let av = MatRef::from_strides(&a_t, a_st.rows, a_st.cols, a_st.rs, a_st.cs).unwrap();
    let bv = MatRef::from_strides(&b_t, b_st.rows, b_st.cols, b_st.rs, b_st.cs).unwrap();
    let (av, bv) = (if ta { av.t() } else { av }, if tb { bv.t() } else { bv });
    // The reference on the inputs converted to f32 (exact for bf16/f16, so
    // the same function), which spares it a half conversion per access.
    let a32: Vec<f32> = a_t.iter().map(|x| x.to_f32()).collect();
    let b32: Vec<f32> = b_t.iter().map(|x| x.to_f32()).collect();
    let av32 = MatRef::from_strides(&a32, a_st.rows, a_st.cols, a_st.rs, a_st.cs).unwrap();
    let bv32 = MatRef::from_strides(&b32, b_st.rows, b_st.cols, b_st.rs, b_st.cs).unwrap();
    let (av32, bv32) = (if ta { av32.t() } else { av32 }, if tb { bv32.t() } else { bv32 });

    let mut want = Stored {
        buf: c0.buf.clone(),
        ..c0
    };
    reference::gemm(alpha, av32, bv32, beta, want.view_mut()).unwrap();
    // Error bound per element: |alpha|·Σ|a||b| + |beta·c| (computed in f64).
    let scale = reference::gemm_error_scale(alpha, av32, bv32, beta, c0.view());
    // Accumulating k products in f32 (FMA or not, any order) errs by at most
    // γ_k ≈ k·u of the scale; alpha and beta add two more roundings and the
    // rounded reference one more: (k + 3)·u, doubled for margin.
    let factor = 2.0 * (k as f64 + 3.0) * U;
    let finite_row: Vec<bool> = (0..m).map(|i| (0..k).all(|p| av32[(i, p)].is_finite())).collect();
    let finite_col: Vec<bool> = (0..n).map(|j| (0..k).all(|p| bv32[(p, j)].is_finite())).collect();
    for isa in isas() {
        let mut c = Stored {
            buf: c0.buf.clone(),
            ..c0
        };
        run_on(isa, || nnkern::gemm(alpha, av, bv, beta, c.view_mut())).unwrap();
        c.check_gaps(&c0.buf, "gemm C");
        for i in 0..m {
            for j in 0..n {
                let (got, r) = (c.get(i, j), want.get(i, j));
                let s = scale[i * n + j];
                let c_in = c0.get(i, j);
                let inputs_finite = finite_row[i] && finite_col[j] && (beta == 0.0 || c_in.is_finite());
                if r.is_nan() && alpha != 0.0 {
                    assert!(got.is_nan(), "gemm [{isa}] ({i},{j}): reference NaN, got {got:e}");
                } else if inputs_finite && s.is_finite() && s < f32::MAX as f64 / 4.0 {
                    let tol = factor * s + f32::MIN_POSITIVE as f64 * (k as f64 + 3.0);
                    close("gemm", isa, i * n + j, got, r, tol);
                }
                if beta == 0.0 && inputs_finite && s < f32::MAX as f64 / 4.0 {
                    assert!(!got.is_nan(), "gemm [{isa}] ({i},{j}): NaN leaked from C with beta = 0");
                }
            }
        }
    }
}

fn activation_of(b: u8) -> Activation {
    Activation::ALL[b as usize % Activation::ALL.len()]
}

/// Tolerance of a fast activation value. Fast kernels evaluate exp, tanh
/// and erf by polynomials accurate to a few ulps (≤ 1e-6 relative); 1e-5
/// relative leaves ~80 ulps of margin. The GELU forms compute `1 + tanh`
/// or `1 + erf`, which cancels in the negative tail and loses up to
/// `|x|·2⁻²³` absolutely; `1e-6·(1 + |x|)` covers that.
fn act_tol(act: Activation, x: f32, r: f32, dy: f32) -> f64 {
    match act {
        Activation::Identity | Activation::Relu => 0.0,
        _ => 1e-5 * (r as f64).abs() + 1e-6 * (1.0 + (x as f64).abs()) * (dy as f64).abs().max(1.0),
    }
}

/// Activations forward, backward and in place, on every ISA, against the reference.
pub fn activation(data: &[u8]) {
    let mut inp = Input::new(data);
    let act = activation_of(inp.u8());
    let specials = inp.u8() & 1 == 1;
    let n = inp.size(300);
    let x = inp.values(n, specials);
    let dy = inp.values(n, specials);
    let mut y_ref = vec![0.0; n];
    reference::activation_forward(
        act,
        MatRef::row_vector(&x).unwrap(),
        MatMut::row_vector(&mut y_ref).unwrap(),
    )
    .unwrap();
    let mut dx_ref = vec![0.0; n];
    reference::activation_backward(
        act,
        MatRef::row_vector(&x).unwrap(),
        MatRef::row_vector(&dy).unwrap(),
        MatMut::row_vector(&mut dx_ref).unwrap(),
    )
    .unwrap();
    for isa in isas() {
        let mut y = vec![f32::from_bits(POISON); n];
        run_on(isa, || {
            nnkern::activation_forward(
                act,
                MatRef::row_vector(&x).unwrap(),
                MatMut::row_vector(&mut y).unwrap(),
            )
        })
        .unwrap();
        let mut yi = x.clone();
        run_on(isa, || {
            nnkern::activation_forward_inplace(act, MatMut::row_vector(&mut yi).unwrap())
        })
        .unwrap();
        let mut dx = vec![f32::from_bits(POISON); n];
        run_on(isa, || {
            nnkern::activation_backward(
                act,
                MatRef::row_vector(&x).unwrap(),
                MatRef::row_vector(&dy).unwrap(),
                MatMut::row_vector(&mut dx).unwrap(),
            )
        })
        .unwrap();
        let mut gi = dy.clone();
        run_on(isa, || {
            nnkern::activation_backward_inplace(
                act,
                MatRef::row_vector(&x).unwrap(),
                MatMut::row_vector(&mut gi).unwrap(),
            )
        })
        .unwrap();
        let names = [
            format!("{act} forward"),
            format!("{act} forward_inplace"),
            format!("{act} backward"),
            format!("{act} backward_inplace"),
        ];
        for i in 0..n {
            let tf = act_tol(act, x[i], y_ref[i], 1.0);
            let tb = act_tol(act, x[i], dx_ref[i], dy[i]);
            close(&names[0], isa, i, y[i], y_ref[i], tf);
            close(&names[1], isa, i, yi[i], y_ref[i], tf);
            if !dy[i].is_finite() && !dx_ref[i].is_finite() {
                // An infinite upstream gradient times f'(x): NaN where f'(x)
                // rounds to 0, ±∞ where it does not. The reference's f64
                // derivative (1 − tanh² and the like) and a kernel's f32 one
                // reach 0 at different |x|, so either non-finite value is right.
                assert!(
                    !dx[i].is_finite() && !gi[i].is_finite(),
                    "{} [{isa}] element {i}",
                    names[2]
                );
            } else {
                close(&names[2], isa, i, dx[i], dx_ref[i], tb);
                close(&names[3], isa, i, gi[i], dx_ref[i], tb);
            }
        }
        // A length mismatch is an error on every path.
        if n > 0 {
            let mut short = vec![0.0; n - 1];
            assert!(run_on(isa, || nnkern::activation_forward(
                act,
                MatRef::row_vector(&x).unwrap(),
                MatMut::row_vector(&mut short).unwrap()
            ))
            .is_err());
        }
    }
}

/// Bias add, bias add + activation, bias gradient, on every ISA.
pub fn bias(data: &[u8]) {
    let mut inp = Input::new(data);
    let act = activation_of(inp.u8());
    let specials = inp.u8() & 1 == 1;
    let (rows, cols) = (inp.size(40), inp.size(70));
    let (cm, pad) = layout_flags(&mut inp);
    let x0 = Stored::new(&mut inp, rows, cols, cm, pad, specials);
    let b = inp.values(cols, specials);
    let mut x_ref = Stored {
        buf: x0.buf.clone(),
        ..x0
    };
    let mut y_ref = Stored::new(&mut inp, rows, cols, !cm, pad, false);
    let y0 = y_ref.buf.clone();
    reference::bias_add_activation(act, x_ref.view_mut(), &b, y_ref.view_mut()).unwrap();
    let mut db_ref = vec![0.0; cols];
    reference::bias_grad(x0.view(), &mut db_ref).unwrap();
    // Column sums of `rows` terms in f32, any order: ≤ rows·u·Σ|dy| (doubled).
    let db_tol: Vec<f64> = (0..cols)
        .map(|j| 2.0 * (rows as f64 + 1.0) * U * (0..rows).map(|i| (x0.get(i, j) as f64).abs()).sum::<f64>())
        .collect();
    for isa in isas() {
        // bias_add is one correctly rounded addition: bit-exact.
        let mut x = Stored {
            buf: x0.buf.clone(),
            ..x0
        };
        run_on(isa, || nnkern::bias_add(x.view_mut(), &b)).unwrap();
        x.check_gaps(&x0.buf, "bias_add x");
        let mut x2 = Stored {
            buf: x0.buf.clone(),
            ..x0
        };
        let mut y = Stored {
            buf: y0.clone(),
            ..y_ref
        };
        run_on(isa, || {
            nnkern::bias_add_activation(act, x2.view_mut(), &b, y.view_mut())
        })
        .unwrap();
        y.check_gaps(&y0, "bias_add_activation y");
        for i in 0..rows {
            for j in 0..cols {
                let idx = i * cols + j;
                close("bias_add", isa, idx, x.get(i, j), x_ref.get(i, j), 0.0);
                close("bias_add_activation x", isa, idx, x2.get(i, j), x_ref.get(i, j), 0.0);
                let t = act_tol(act, x_ref.get(i, j), y_ref.get(i, j), 1.0);
                close("bias_add_activation y", isa, idx, y.get(i, j), y_ref.get(i, j), t);
            }
        }
        let mut db = vec![f32::from_bits(POISON); cols];
        run_on(isa, || nnkern::bias_grad(x0.view(), &mut db)).unwrap();
        for j in 0..cols {
            if db_tol[j].is_finite() {
                close("bias_grad", isa, j, db[j], db_ref[j], db_tol[j] + 1e-30);
            }
        }
        let mut short = vec![0.0; cols + 1];
        assert!(run_on(isa, || nnkern::bias_grad(x0.view(), &mut short)).is_err());
    }
}

/// Softmax, log-softmax and softmax-cross-entropy (labels and soft targets,
/// loss only and fused with the gradient) on every ISA.
pub fn softmax_xent(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let specials = flags & 1 == 1;
    let (rows, cols) = (inp.size(24), inp.size(48));
    let magnitude = [1.0f32, 16.0, 1000.0, 1e4][(flags >> 1) as usize & 3];
    let (cm, pad) = layout_flags(&mut inp);
    let mut x = Stored::new(&mut inp, rows, cols, cm, pad, specials);
    for v in x.buf.iter_mut() {
        if v.to_bits() != POISON {
            *v *= magnitude;
        }
    }
    // Labels: usually valid, sometimes one out of range (must be an error everywhere).
    let bad_label = flags & 8 == 8 && rows > 0;
    let labels: Vec<u32> = (0..rows)
        .map(|i| {
            if bad_label && i == rows - 1 {
                cols as u32 + inp.u8() as u32
            } else {
                inp.u32() % cols.max(1) as u32
            }
        })
        .collect();
    let mut soft = Stored::new(&mut inp, rows, cols, !cm, 0, false);
    for i in 0..rows {
        let s: f32 = (0..cols).map(|j| soft.get(i, j).abs()).sum::<f32>().max(1e-3);
        for j in 0..cols {
            soft.buf[i * soft.rs + j * soft.cs] = soft.get(i, j).abs() / s;
        }
    }
    let empty_rows = rows > 0 && cols == 0;
    let mut sm_ref = Stored::new(&mut inp, rows, cols, cm, 1, false);
    let out0 = sm_ref.buf.clone();
    let mut lsm_ref = Stored {
        buf: out0.clone(),
        ..sm_ref
    };
    reference::softmax(x.view(), sm_ref.view_mut()).unwrap();
    reference::log_softmax(x.view(), lsm_ref.view_mut()).unwrap();
    let mut dl_ref = Stored {
        buf: out0.clone(),
        ..sm_ref
    };
    let lab_ref = reference::softmax_xent(x.view(), Targets::Labels(&labels), dl_ref.view_mut());
    let mut ds_ref = Stored {
        buf: out0.clone(),
        ..sm_ref
    };
    let soft_ref = reference::softmax_xent(x.view(), Targets::Soft(soft.view()), ds_ref.view_mut());
    let loss_lab_ref = reference::softmax_xent_loss(x.view(), Targets::Labels(&labels));
    assert_eq!(lab_ref.is_err(), bad_label || empty_rows);
    // Softmax in f32: exp to a few ulps, a row sum of `cols` terms (≤ cols·u
    // relative), one division: (cols + 8)·u relative, doubled.
    let rel = 2.0 * (cols as f64 + 8.0) * U;
    let row_max: Vec<f64> = (0..rows)
        .map(|i| (0..cols).map(|j| (x.get(i, j) as f64).abs()).fold(0.0, f64::max))
        .collect();
    for isa in isas() {
        let mut sm = Stored {
            buf: out0.clone(),
            ..sm_ref
        };
        run_on(isa, || nnkern::softmax(x.view(), sm.view_mut())).unwrap();
        sm.check_gaps(&out0, "softmax y");
        let mut lsm = Stored {
            buf: out0.clone(),
            ..sm_ref
        };
        run_on(isa, || nnkern::log_softmax(x.view(), lsm.view_mut())).unwrap();
        let mut dl = Stored {
            buf: out0.clone(),
            ..sm_ref
        };
        let lab = run_on(isa, || {
            nnkern::softmax_xent(x.view(), Targets::Labels(&labels), dl.view_mut())
        });
        let mut ds = Stored {
            buf: out0.clone(),
            ..sm_ref
        };
        let sft = run_on(isa, || {
            nnkern::softmax_xent(x.view(), Targets::Soft(soft.view()), ds.view_mut())
        });
        let loss_lab = run_on(isa, || nnkern::softmax_xent_loss(x.view(), Targets::Labels(&labels)));
        assert_eq!(
            lab.is_err(),
            lab_ref.is_err(),
            "softmax_xent labels [{isa}]: {lab:?} vs {lab_ref:?}"
        );
        assert_eq!(loss_lab.is_err(), loss_lab_ref.is_err());
        assert_eq!(sft.is_err(), soft_ref.is_err());
        for i in 0..rows {
            for j in 0..cols {
                let idx = i * cols + j;
                // exp(x − max) also inherits the rounding of x − max in f32,
                // u·|x − max| relative.
                let rel = rel + 2.0 * U * ((x.get(i, j) as f64).abs() + row_max[i]);
                close(
                    "softmax",
                    isa,
                    idx,
                    sm.get(i, j),
                    sm_ref.get(i, j),
                    rel * sm_ref.get(i, j) as f64 + 1e-30,
                );
                // log-softmax = x − max − log Σ: absolute error ~ u·(|x| + max).
                let tl = 4.0 * U * (row_max[i] + (lsm_ref.get(i, j) as f64).abs()) + rel;
                close("log_softmax", isa, idx, lsm.get(i, j), lsm_ref.get(i, j), tl);
                let inv = 1.0 / rows as f64;
                if lab_ref.is_ok() {
                    let t = rel * inv * (sm_ref.get(i, j) as f64 + 1.0);
                    close("softmax_xent dlogits", isa, idx, dl.get(i, j), dl_ref.get(i, j), t);
                }
                if soft_ref.is_ok() {
                    let t = rel * inv * (sm_ref.get(i, j) as f64 + soft.get(i, j) as f64);
                    close(
                        "softmax_xent soft dlogits",
                        isa,
                        idx,
                        ds.get(i, j),
                        ds_ref.get(i, j),
                        t + 1e-30,
                    );
                }
            }
        }
        // Loss: a mean of per-row log-sum-exp terms, each off by ~u·(|x| + lse).
        let worst = row_max.iter().copied().fold(0.0, f64::max);
        if let (Ok(a), Ok(b)) = (&lab, &lab_ref) {
            let t = 8.0 * U * (worst + (*b as f64).abs()) + rel * (1.0 + (*b as f64).abs());
            close("softmax_xent loss", isa, 0, *a, *b, t);
        }
        if let (Ok(a), Ok(b)) = (&loss_lab, &loss_lab_ref) {
            let t = 8.0 * U * (worst + (*b as f64).abs()) + rel * (1.0 + (*b as f64).abs());
            close("softmax_xent_loss", isa, 0, *a, *b, t);
        }
        if let (Ok(a), Ok(b)) = (&sft, &soft_ref) {
            let t = 8.0 * U * (worst + (*b as f64).abs()) * cols as f64 + rel * (1.0 + (*b as f64).abs());
            close("softmax_xent soft loss", isa, 0, *a, *b, t);
        }
    }
}

fn hyper(inp: &mut Input<'_>, valid: &[f32], invalid: &[f32]) -> f32 {
    let b = inp.u8();
    if b < 250 {
        valid[b as usize % valid.len()]
    } else {
        invalid[b as usize % invalid.len()]
    }
}

/// Adam/AdamW (both epsilon placements), SGD, global norm and clipping on
/// every ISA; invalid hyperparameters must be an error everywhere.
/// `gemm_adam_step` / `gemm_sgd_step` on `isa` against `gemm` followed by
/// `adam_step` / `sgd_step` on the same ISA: the same errors, and bitwise the
/// same values (every NaN counted as one: its payload follows operand order).
#[allow(clippy::too_many_arguments)]
fn fused_matches_unfused(
    isa: Isa,
    cfg: &AdamConfig,
    sgd: &SgdConfig,
    step: u64,
    (rows, k, cols): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    w0: &[f32],
    m0: &[f32],
    v0: &[f32],
) {
    let bits = |v: &[f32]| -> Vec<u32> {
        v.iter()
            .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
            .collect()
    };
    let av = MatRef::new(a, rows, k).unwrap();
    let bv = MatRef::new(b, k, cols).unwrap();
    let mut g = vec![f32::NAN; rows * cols];
    run_on(isa, || {
        nnkern::gemm(1.0, av, bv, 0.0, MatMut::new(&mut g, rows, cols).unwrap())
    })
    .unwrap();
    let (mut w1, mut m1, mut v1) = (w0.to_vec(), m0.to_vec(), v0.to_vec());
    let r1 = run_on(isa, || {
        nnkern::adam_step(
            cfg,
            &mut AdamState::from_moments(&mut m1[..], &mut v1[..]),
            step,
            &mut w1,
            &g,
        )
    });
    let (mut w2, mut m2, mut v2) = (w0.to_vec(), m0.to_vec(), v0.to_vec());
    let r2 = run_on(isa, || {
        nnkern::gemm_adam_step(
            cfg,
            &mut AdamState::from_moments(&mut m2[..], &mut v2[..]),
            step,
            &mut w2,
            av,
            bv,
        )
    });
    assert_eq!(r1.is_err(), r2.is_err(), "gemm_adam_step [{isa}]: {r2:?} vs {r1:?}");
    assert!(
        bits(&w1) == bits(&w2) && bits(&m1) == bits(&m2) && bits(&v1) == bits(&v2),
        "gemm_adam_step [{isa}] differs"
    );
    let (mut w1, mut b1) = (w0.to_vec(), m0.to_vec());
    let r1 = run_on(isa, || {
        nnkern::sgd_step(sgd, &mut SgdState::from_buffer(&mut b1[..]), &mut w1, &g)
    });
    let (mut w2, mut b2) = (w0.to_vec(), m0.to_vec());
    let r2 = run_on(isa, || {
        nnkern::gemm_sgd_step(sgd, &mut SgdState::from_buffer(&mut b2[..]), &mut w2, av, bv)
    });
    assert_eq!(r1.is_err(), r2.is_err(), "gemm_sgd_step [{isa}]: {r2:?} vs {r1:?}");
    assert!(
        bits(&w1) == bits(&w2) && bits(&b1) == bits(&b2),
        "gemm_sgd_step [{isa}] differs"
    );
}

pub fn optim(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let specials = flags & 1 == 1;
    let n = inp.size(200);
    let cfg = AdamConfig {
        lr: hyper(&mut inp, &[1e-3, 0.1, 0.0, 1.0], &[-1.0, f32::NAN, f32::INFINITY]),
        beta1: hyper(&mut inp, &[0.9, 0.0, 0.5, 0.99], &[1.0, -0.1, f32::NAN]),
        beta2: hyper(&mut inp, &[0.999, 0.0, 0.9, 0.5], &[1.0, 2.0, f32::NAN]),
        eps: hyper(&mut inp, &[1e-8, 1e-7, 1e-3, 1.0], &[0.0, -1e-8, f32::INFINITY]),
        weight_decay: hyper(&mut inp, &[0.0, 0.01, 0.1, 1.0], &[-0.01, f32::NAN]),
        decay: if flags & 2 == 2 {
            WeightDecay::Decoupled
        } else {
            WeightDecay::L2
        },
        epsilon: if flags & 4 == 4 {
            AdamEpsilon::Keras
        } else {
            AdamEpsilon::PyTorch
        },
    };
    let step = match inp.u8() % 4 {
        0 => 1,
        1 => inp.u16() as u64,
        2 => u64::MAX - inp.u8() as u64,
        _ => 1 + inp.u8() as u64,
    };
    let w0 = inp.values(n, specials);
    let g = inp.values(n, specials);
    let m0 = inp.values(n, specials);
    // Second moments are non-negative in any real run.
    let v0: Vec<f32> = inp.values(n, specials).iter().map(|x| x.abs()).collect();
    let (mut w_r, mut m_r, mut v_r) = (w0.clone(), m0.clone(), v0.clone());
    let adam_ref = reference::adam_step(
        &cfg,
        &mut AdamState::from_moments(&mut m_r[..], &mut v_r[..]),
        step,
        &mut w_r,
        &g,
    );
    let sgd = SgdConfig {
        lr: cfg.lr,
        momentum: hyper(&mut inp, &[0.9, 0.0, 0.5], &[1.0, -0.5, f32::NAN]),
        weight_decay: cfg.weight_decay,
    };
    let (mut ws_r, mut b_r) = (w0.clone(), m0.clone());
    let sgd_ref = reference::sgd_step(&sgd, &mut SgdState::from_buffer(&mut b_r[..]), &mut ws_r, &g);
    let max_norm = hyper(
        &mut inp,
        &[1.0, 0.5, 100.0, 1e-3],
        &[0.0, -1.0, f32::NAN, f32::INFINITY],
    );
    let split = if n == 0 { 0 } else { inp.size(n) };
    let norm_ref = reference::global_norm(&[&g[..split], &g[split..]]).unwrap();
    let mut gc_r = g.clone();
    let clip_ref = {
        let (p, q) = gc_r.split_at_mut(split);
        reference::clip_global_norm(&mut [p, q], max_norm)
    };
    // The fused forms: the weights as a rows × cols matrix (the first
    // rows·cols values) with gradient a·b, a: rows × k, b: k × cols.
    let rows = 1 + inp.u8() as usize % 8;
    let cols = n / rows;
    let k = inp.u8() as usize % 6;
    let fa = inp.values(rows * k, specials);
    let fb = inp.values(k * cols, specials);
    let nf = rows * cols;
    for isa in isas() {
        fused_matches_unfused(
            isa,
            &cfg,
            &sgd,
            step,
            (rows, k, cols),
            &fa,
            &fb,
            &w0[..nf],
            &m0[..nf],
            &v0[..nf],
        );
    }
    for isa in isas() {
        let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
        let r = run_on(isa, || {
            nnkern::adam_step(
                &cfg,
                &mut AdamState::from_moments(&mut m[..], &mut v[..]),
                step,
                &mut w,
                &g,
            )
        });
        assert_eq!(
            r.is_err(),
            adam_ref.is_err(),
            "adam_step [{isa}]: {r:?} vs {adam_ref:?}"
        );
        if r.is_ok() {
            for i in 0..n {
                // Each of m, v, w is a handful of f32 operations on the
                // inputs (decay, two FMAs, sqrt, divide): ≤ 8u relative to
                // the magnitudes involved, doubled; the update itself is
                // allowed 1e-5 relative (a fast rsqrt/divide refined once).
                let gi = (g[i] as f64).abs() + cfg.weight_decay as f64 * (w0[i] as f64).abs();
                let tm = 16.0 * U * ((m0[i] as f64).abs() + gi);
                let tv = 16.0 * U * ((v0[i] as f64).abs() + gi * gi);
                let upd = (w_r[i] as f64 - w0[i] as f64).abs();
                // The update lr·m̂/(√v̂ + ε) inherits m's absolute error
                // (scaled by lr/c1/den) and v's relative error (halved by
                // the square root).
                let (c1, c2) = cfg.bias_corrections(step);
                let den = match cfg.epsilon {
                    AdamEpsilon::PyTorch => ((v_r[i] as f64 / c2).sqrt() + cfg.eps as f64) * c1,
                    AdamEpsilon::Keras => ((v_r[i] as f64).sqrt() + cfg.eps as f64) * c1 / c2.sqrt(),
                };
                let from_v = if v_r[i] > 0.0 {
                    upd * (tv / v_r[i] as f64).min(1.0)
                } else {
                    0.0
                };
                let tw = 16.0 * U * (w0[i] as f64).abs() * (1.0 + cfg.lr as f64 * cfg.weight_decay as f64)
                    + 1e-5 * upd
                    + cfg.lr as f64 * tm / den
                    + from_v
                    + 1e-30;
                close("adam m", isa, i, m[i], m_r[i], tm);
                close("adam v", isa, i, v[i], v_r[i], tv);
                close("adam w", isa, i, w[i], w_r[i], tw);
            }
        }
        let (mut ws, mut b) = (w0.clone(), m0.clone());
        let r = run_on(isa, || {
            nnkern::sgd_step(&sgd, &mut SgdState::from_buffer(&mut b[..]), &mut ws, &g)
        });
        assert_eq!(r.is_err(), sgd_ref.is_err());
        if r.is_ok() {
            for i in 0..n {
                let gi = (g[i] as f64).abs() + (sgd.weight_decay as f64 * w0[i] as f64).abs();
                let tb = 8.0 * U * ((sgd.momentum as f64 * m0[i] as f64).abs() + gi);
                let tw =
                    8.0 * U * ((w0[i] as f64).abs() + (sgd.lr as f64 * b_r[i] as f64).abs() * 2.0) + sgd.lr as f64 * tb;
                close("sgd buf", isa, i, b[i], b_r[i], tb);
                close("sgd w", isa, i, ws[i], ws_r[i], tw);
            }
        }
        // Norm: a sum of n squares (positive terms), relative error ≤ n·u,
        // halved by the square root; doubled for margin.
        let norm = run_on(isa, || nnkern::global_norm(&[&g[..split], &g[split..]])).unwrap();
        let tn = 2.0 * (n as f64 + 4.0) * U * norm_ref as f64;
        close("global_norm", isa, 0, norm, norm_ref, tn);
        let mut gc = g.clone();
        let r = {
            let (p, q) = gc.split_at_mut(split);
            run_on(isa, || nnkern::clip_global_norm(&mut [p, q], max_norm))
        };
        assert_eq!(r.is_err(), clip_ref.is_err());
        if let (Ok(a), Ok(b)) = (&r, &clip_ref) {
            close("clip_global_norm norm", isa, 0, *a, *b, tn);
            for i in 0..n {
                let t = 2.0 * (n as f64 + 8.0) * U * (gc_r[i] as f64).abs();
                close("clip_global_norm grads", isa, i, gc[i], gc_r[i], t);
            }
        }
    }
}

/// Row argmax and accuracy count on every ISA: exact.
pub fn metrics(data: &[u8]) {
    let mut inp = Input::new(data);
    let specials = inp.u8() & 1 == 1;
    let (rows, cols) = (inp.size(30), inp.size(60));
    let (cm, pad) = layout_flags(&mut inp);
    let mut x = Stored::new(&mut inp, rows, cols, cm, pad, specials);
    // Ties are the interesting case: quantise some rows coarsely.
    if inp.u8() & 1 == 1 {
        for v in x.buf.iter_mut() {
            if v.to_bits() != POISON && v.is_finite() {
                *v = v.round();
            }
        }
    }
    let labels: Vec<u32> = (0..rows).map(|_| inp.u32() % (cols as u32 + 1)).collect();
    let mut am_ref = vec![0u32; rows];
    let r_ref = reference::argmax_rows(x.view(), &mut am_ref);
    let c_ref = reference::count_correct(x.view(), &labels);
    for isa in isas() {
        let mut am = vec![u32::MAX; rows];
        let r = run_on(isa, || nnkern::argmax_rows(x.view(), &mut am));
        assert_eq!(r.is_err(), r_ref.is_err());
        if r.is_ok() {
            assert_eq!(am, am_ref, "argmax_rows [{isa}]");
        }
        let c = run_on(isa, || nnkern::count_correct(x.view(), &labels));
        assert_eq!(c, c_ref, "count_correct [{isa}]");
    }
}

pub use nnkern_capi::testing::{last_cblas_param, record_cblas_error};

/// An integer argument: usually small, sometimes negative or extreme.
fn int_arg(inp: &mut Input<'_>, small: i64) -> i64 {
    match inp.u8() {
        0..=219 => inp.u8() as i64 % (small + 1),
        220..=229 => -(inp.u8() as i64 % 4) - 1,
        230 => i64::MIN,
        231 => i64::MAX,
        232 => 1 << 62,
        233 => (1 << 62) + 1,
        234 => i32::MAX as i64,
        235 => 1 << 31,
        236 => isize::MAX as i64 / 4 + 1,
        237 => -(1 << 40),
        _ => inp.u16() as i64 % 5000,
    }
}

/// What the model of the C ABI expects of a matrix argument: the number of
/// elements it spans, or `None` when its description is invalid (negative,
/// or overflowing `isize` bytes).
fn model_span(rows: i64, cols: i64, rs: i64, cs: i64, elem: usize) -> Option<usize> {
    if rows < 0 || cols < 0 || rs < 0 || cs < 0 {
        return None;
    }
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    let len = (rows as i128 - 1) * rs as i128 + (cols as i128 - 1) * cs as i128 + 1;
    (len * elem as i128 <= isize::MAX as i128).then_some(len as usize)
}

/// The largest buffer the argument fuzzer allocates (elements).
const ARG_CAP: usize = 1 << 16;

/// A buffer for one pointer argument: exactly `len` elements (so any read
/// past them is a heap overflow under AddressSanitizer), or NULL / a small
/// buffer when the call is expected to fail before reading.
fn arg_buf(len: Option<usize>, inp: &mut Input<'_>) -> Vec<f32> {
    let n = len.filter(|&l| l <= ARG_CAP).unwrap_or(1);
    (0..n).map(|_| inp.value(false)).collect()
}

/// A valid GEMM description too large to run: the C entry's validation and
/// the plan must accept it (or report an overflow of the logical element
/// count) and bound the scratch. Buffers are one element (zero strides) or
/// never read: planning touches no element.
fn plan_huge_gemm(
    which: u8,
    (m, n, k): (i64, i64, i64),
    s: &[i64],
    la: Option<usize>,
    lb: Option<usize>,
    lc: Option<usize>,
) {
    let a = vec![0.0f32; la.unwrap_or(0).clamp(1, ARG_CAP)];
    let b = vec![0.0f32; lb.unwrap_or(0).clamp(1, ARG_CAP)];
    let mut c = vec![0.0f32; lc.unwrap_or(0).clamp(1, ARG_CAP)];
    let fits = |l: Option<usize>, have: usize| l.is_some_and(|l| l <= have);
    if !(fits(la, a.len()) && fits(lb, b.len()) && fits(lc, c.len())) {
        // The described buffers exceed what can be allocated here. The C
        // entry runs in a dry run (every check, no slice formed, no element
        // touched), then the driver plans the same shapes over zero-stride
        // stand-ins.
        let (ah, bh) = (to_half::<bf16>(&a), to_half::<bf16>(&b));
        let (af, bf) = (to_half::<f16>(&a), to_half::<f16>(&b));
        let (pa, pb, elem) = match which {
            0 => (a.as_ptr() as usize, b.as_ptr() as usize, 4),
            1 => (ah.as_ptr() as usize, bh.as_ptr() as usize, 2),
            _ => (af.as_ptr() as usize, bf.as_ptr() as usize, 2),
        };
        let spans = [
            (pa, la.unwrap_or(0) * elem),
            (pb, lb.unwrap_or(0) * elem),
            (c.as_ptr() as usize, lc.unwrap_or(0) * 4),
        ];
        let r = capi::dry_run(|| {
            // SAFETY: a dry run checks the descriptions and stops before it
            // forms a slice; no pointer is dereferenced.
            unsafe {
                match which {
                    0 => capi::nnkern_sgemm(
                        m,
                        n,
                        k,
                        1.0,
                        a.as_ptr(),
                        s[0],
                        s[1],
                        b.as_ptr(),
                        s[2],
                        s[3],
                        0.0,
                        c.as_mut_ptr(),
                        s[4],
                        s[5],
                    ),
                    1 => capi::nnkern_gemm_bf16(
                        m,
                        n,
                        k,
                        1.0,
                        ah.as_ptr(),
                        s[0],
                        s[1],
                        bh.as_ptr(),
                        s[2],
                        s[3],
                        0.0,
                        c.as_mut_ptr(),
                        s[4],
                        s[5],
                    ),
                    _ => capi::nnkern_gemm_f16(
                        m,
                        n,
                        k,
                        1.0,
                        af.as_ptr(),
                        s[0],
                        s[1],
                        bf.as_ptr(),
                        s[2],
                        s[3],
                        0.0,
                        c.as_mut_ptr(),
                        s[4],
                        s[5],
                    ),
                }
            }
        });
        check_dry_run("gemm", r, &spans[2..], &spans[..2]);
        let one = [0.0f32];
        let (mu, nu, ku) = (m as usize, n as usize, k as usize);
        let av = MatRef::from_strides(&one, mu, ku, 0, 0).expect("countable (model)");
        let bv = MatRef::from_strides(&one, ku, nu, 0, 0).expect("countable (model)");
        check_plan(nnkern::testing::plan_gemm(
            nnkern::active_isa(),
            3,
            &av,
            &bv,
            (mu, nu, nu, 1),
        ));
        return;
    }
    let elem = which;
    let cp = (c.as_mut_ptr(), s[4], s[5]);
    // SAFETY: each pointer addresses at least the elements its view reaches
    // (checked just above); planning reads none of them.
    let r = unsafe {
        match elem {
            0 => capi::plan_gemm_c(
                0.0f32,
                (m, n, k),
                1.0,
                (a.as_ptr(), s[0], s[1]),
                (b.as_ptr(), s[2], s[3]),
                cp,
            ),
            1 => {
                let (ah, bh) = (to_half::<bf16>(&a), to_half::<bf16>(&b));
                capi::plan_gemm_c(
                    bf16::ZERO,
                    (m, n, k),
                    1.0,
                    (ah.as_ptr(), s[0], s[1]),
                    (bh.as_ptr(), s[2], s[3]),
                    cp,
                )
            }
            _ => {
                let (ah, bh) = (to_half::<f16>(&a), to_half::<f16>(&b));
                capi::plan_gemm_c(
                    f16::ZERO,
                    (m, n, k),
                    1.0,
                    (ah.as_ptr(), s[0], s[1]),
                    (bh.as_ptr(), s[2], s[3]),
                    cp,
                )
            }
        }
    };
    check_plan(r);
}

fn to_half<H: HalfConvert>(v: &[f32]) -> Vec<H> {
    v.iter().map(|&x| H::from_f32(x)).collect()
}

/// f32 → bf16 / f16, for the planning harness.
trait HalfConvert {
    fn from_f32(x: f32) -> Self;
}
impl HalfConvert for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}
impl HalfConvert for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// A dry run of a description the model deems valid must pass every check,
/// except that buffers described far beyond the real allocations may overlap
/// in address space (the entry then reports aliasing, rightly).
fn check_dry_run(what: &str, r: Result<(), c_int>, outputs: &[(usize, usize)], inputs: &[(usize, usize)]) {
    let overlap = |(a0, al): (usize, usize), (b0, bl): (usize, usize)| {
        let (a1, b1) = (a0.saturating_add(al), b0.saturating_add(bl));
        al > 0 && bl > 0 && a0 < b1 && b0 < a1
    };
    match r {
        Ok(()) => {}
        Err(NNKERN_ERR_ALIASING)
            if outputs
                .iter()
                .enumerate()
                .any(|(i, &o)| outputs[i + 1..].iter().chain(inputs).any(|&x| overlap(o, x))) => {}
        Err(status) => panic!(
            "{what}: a valid description failed its dry run with status {status}: {}",
            capi::last_error_string()
        ),
    }
}

/// The plan of a valid description: accepted, and within the bound.
fn check_plan(r: nnkern::Result<Option<nnkern::testing::PlanSummary>>) {
    match r {
        Ok(None) => {}
        Ok(Some(p)) => {
            assert!(
                p.scratch.0 <= p.scratch_bound.0 && p.scratch.1 <= p.scratch_bound.1,
                "scratch beyond the blocking bound: {p:?}"
            );
            assert!(p.tasks >= 1, "{p:?}");
        }
        Err(e) => panic!("a valid description was refused: {e}"),
    }
}

/// The C ABI's argument validation: arbitrary sizes, strides, enum codes,
/// NULL and overlapping pointers into the `nnkern_*` entries. A call the
/// model deems invalid must fail with a status, a message, and untouched
/// outputs; a valid one must succeed and agree with the Rust API.
pub fn capi_args(data: &[u8]) {
    let mut inp = Input::new(data);
    let which = inp.u8() % 6;
    let null_case = inp.u8();
    let alias = inp.u8().is_multiple_of(8);
    match which {
        0..=2 => {
            // nnkern_sgemm / bf16 / f16.
            let (m, n, k) = (int_arg(&mut inp, 9), int_arg(&mut inp, 9), int_arg(&mut inp, 9));
            let s: Vec<i64> = (0..6).map(|_| int_arg(&mut inp, 12)).collect();
            let elem = if which == 0 { 4 } else { 2 };
            let la = model_span(m, k, s[0], s[1], elem);
            let lb = model_span(k, n, s[2], s[3], elem);
            let lc = model_span(m, n, s[4], s[5], 4);
            let disjoint = |l: Option<usize>, r0: i64, r1: i64, c0: i64, c1: i64| {
                // A C view must not map two elements to one address.
                let (rows, cols, rs, cs) = (r0, r1, c0, c1);
                l.is_some()
                    && nnkern::matrix::strides_are_disjoint(rows as usize, cols as usize, rs as usize, cs as usize)
            };
            // The logical element count of every view must fit in isize.
            let countable = [(m, k), (k, n), (m, n)]
                .iter()
                .all(|&(r, c)| r as u128 * c as u128 <= isize::MAX as u128);
            let valid = la.is_some() && lb.is_some() && disjoint(lc, m, n, s[4], s[5]) && countable;
            // Valid calls with much work (zero strides broadcasting one element
            // over m·n·k, or huge loops over empty dimensions) are not skipped:
            // they go through the entry's whole validation and the driver's
            // planning, which sizes everything without touching an element;
            // their scratch must stay within the blocking's bound.
            let huge = [la, lb, lc].iter().any(|l| l.is_some_and(|l| l > ARG_CAP)) || m.max(n).max(k) > 100_000;
            let work = if valid {
                m as u128 * n as u128 * k.max(1) as u128
            } else {
                0
            };
            if valid && (huge || work > 1 << 18) {
                plan_huge_gemm(which, (m, n, k), &s, la, lb, lc);
                return;
            }
            let a = arg_buf(la, &mut inp);
            let b = arg_buf(lb, &mut inp);
            let mut c = arg_buf(lc, &mut inp);
            let null_a = null_case == 1 && la.is_some_and(|l| l > 0);
            let c_alias =
                alias && which == 0 && !a.is_empty() && lc.is_some_and(|l| l > 0) && la.is_some_and(|l| l > 0);
            let before = c.clone();
            let a_bf: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
            let b_bf: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
            let a_h: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
            let b_h: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
            let alpha = 1.0;
            let c_ptr = if c_alias {
                a.as_ptr() as *mut f32
            } else {
                c.as_mut_ptr()
            };
            // SAFETY: every pointer addresses at least as many elements as
            // the model says the call may touch when it is valid; invalid
            // calls must fail before touching memory (that is what is tested).
            let status = unsafe {
                match which {
                    0 => capi::nnkern_sgemm(
                        m,
                        n,
                        k,
                        alpha,
                        if null_a { std::ptr::null() } else { a.as_ptr() },
                        s[0],
                        s[1],
                        b.as_ptr(),
                        s[2],
                        s[3],
                        0.5,
                        c_ptr,
                        s[4],
                        s[5],
                    ),
                    1 => capi::nnkern_gemm_bf16(
                        m,
                        n,
                        k,
                        alpha,
                        if null_a { std::ptr::null() } else { a_bf.as_ptr() },
                        s[0],
                        s[1],
                        b_bf.as_ptr(),
                        s[2],
                        s[3],
                        0.5,
                        c_ptr,
                        s[4],
                        s[5],
                    ),
                    _ => capi::nnkern_gemm_f16(
                        m,
                        n,
                        k,
                        alpha,
                        if null_a { std::ptr::null() } else { a_h.as_ptr() },
                        s[0],
                        s[1],
                        b_h.as_ptr(),
                        s[2],
                        s[3],
                        0.5,
                        c_ptr,
                        s[4],
                        s[5],
                    ),
                }
            };
            if !valid {
                assert_ne!(
                    status, NNKERN_OK,
                    "invalid gemm description accepted: {m} {n} {k} {s:?}"
                );
                assert!(!capi::last_error_string().is_empty());
            } else if null_a && k > 0 {
                assert_eq!(status, NNKERN_ERR_NULL_POINTER);
            } else if c_alias && !null_a {
                assert_eq!(status, NNKERN_ERR_ALIASING, "{}", capi::last_error_string());
            }
            if status != NNKERN_OK {
                assert!(
                    c.iter().zip(&before).all(|(x, y)| same(*x, *y)),
                    "C written by a failed call"
                );
                return;
            }
            assert!(valid, "accepted: {m} {n} {k} {s:?}");
            // Agreement with the Rust API on the same views.
            let (m, n, k) = (m as usize, n as usize, k as usize);
            let s: Vec<usize> = s.iter().map(|&x| x as usize).collect();
            let mut want = before.clone();
            let av = MatRef::from_strides(&a, m, k, s[0], s[1]).unwrap();
            let bv = MatRef::from_strides(&b, k, n, s[2], s[3]).unwrap();
            let cv = MatMut::from_strides(&mut want, m, n, s[4], s[5]).unwrap();
            match which {
                0 => nnkern::gemm(alpha, av, bv, 0.5, cv).unwrap(),
                1 => nnkern::gemm(
                    alpha,
                    MatRef::from_strides(&a_bf, m, k, s[0], s[1]).unwrap(),
                    MatRef::from_strides(&b_bf, k, n, s[2], s[3]).unwrap(),
                    0.5,
                    cv,
                )
                .unwrap(),
                _ => nnkern::gemm(
                    alpha,
                    MatRef::from_strides(&a_h, m, k, s[0], s[1]).unwrap(),
                    MatRef::from_strides(&b_h, k, n, s[2], s[3]).unwrap(),
                    0.5,
                    cv,
                )
                .unwrap(),
            }
            assert!(
                c.iter().zip(&want).all(|(x, y)| same(*x, *y)),
                "C ABI and Rust API disagree"
            );
        }
        3 => {
            // Activations, forward and backward, with arbitrary codes and lengths.
            let act = inp.u8() as c_int % 8 - 1;
            let n = int_arg(&mut inp, 40);
            let len = model_span(1, n, 0, 1, 4);
            let valid_act = (0..6).contains(&act);
            if len.is_some_and(|l| l > ARG_CAP) {
                // Too large to allocate: the entries' checks in a dry run.
                let (x, mut out, dy) = ([0.0f32], [0.0f32], [0.0f32]);
                let bytes = len.unwrap_or(0) * 4;
                let spans = [(x.as_ptr() as usize, bytes), (dy.as_ptr() as usize, bytes)];
                let outs = [(out.as_ptr() as usize, bytes)];
                let expect = valid_act;
                // SAFETY: dry runs stop before forming any slice.
                let r1 =
                    capi::dry_run(|| unsafe { capi::nnkern_activation_forward(act, x.as_ptr(), out.as_mut_ptr(), n) });
                // SAFETY: as above.
                let r2 = capi::dry_run(|| unsafe {
                    capi::nnkern_activation_backward(act, x.as_ptr(), dy.as_ptr(), out.as_mut_ptr(), n)
                });
                for r in [r1, r2] {
                    if expect {
                        check_dry_run("activation", r, &outs, &spans);
                    } else {
                        assert!(r.is_err(), "activation code {act} accepted");
                    }
                }
                return;
            }
            let x = arg_buf(len, &mut inp);
            let dy = arg_buf(len, &mut inp);
            let mut out = vec![f32::from_bits(POISON); x.len()];
            let out_ptr = if alias && !x.is_empty() {
                x.as_ptr() as *mut f32
            } else {
                out.as_mut_ptr()
            };
            let x_ptr = if null_case == 1 { std::ptr::null() } else { x.as_ptr() };
            // SAFETY: as above.
            let (s1, s2) = unsafe {
                (
                    capi::nnkern_activation_forward(act, x_ptr, out_ptr, n),
                    capi::nnkern_activation_backward(act, x_ptr, dy.as_ptr(), out_ptr, n),
                )
            };
            let expect_ok = valid_act
                && len.is_some()
                && !(alias && len.is_some_and(|l| l > 0))
                && !(null_case == 1 && len.is_some_and(|l| l > 0));
            assert_eq!(s1 == NNKERN_OK, expect_ok, "activation_forward({act}, n={n}) -> {s1}");
            assert_eq!(s2 == NNKERN_OK, expect_ok, "activation_backward({act}, n={n}) -> {s2}");
            if !expect_ok {
                assert!(out.iter().all(|v| v.to_bits() == POISON));
            } else {
                let a = activation_of(act as u8);
                let mut want = vec![0.0; x.len()];
                nnkern::activation_backward(
                    a,
                    MatRef::row_vector(&x).unwrap(),
                    MatRef::row_vector(&dy).unwrap(),
                    MatMut::row_vector(&mut want).unwrap(),
                )
                .unwrap();
                assert!(out.iter().zip(&want).all(|(p, q)| same(*p, *q)));
            }
        }
        4 => {
            // Matrix entries: softmax, bias_add, softmax_xent_labels, argmax.
            let (rows, cols) = (int_arg(&mut inp, 7), int_arg(&mut inp, 7));
            let s: Vec<i64> = (0..4).map(|_| int_arg(&mut inp, 9)).collect();
            let lx = model_span(rows, cols, s[0], s[1], 4);
            let ly = model_span(rows, cols, s[2], s[3], 4);
            let ok_y = ly.is_some()
                && nnkern::matrix::strides_are_disjoint(rows as usize, cols as usize, s[2] as usize, s[3] as usize);
            if [lx, ly].iter().any(|l| l.is_some_and(|l| l > ARG_CAP)) || rows > 1000 || cols > 1000 {
                // Too large to allocate or to run: the entries' checks in a
                // dry run, against the model.
                let (x, mut y) = ([0.0f32], [0.0f32]);
                let mut idx = [0u32];
                let ins = [(x.as_ptr() as usize, lx.unwrap_or(0) * 4)];
                let outs = [(y.as_ptr() as usize, ly.unwrap_or(0) * 4)];
                // SAFETY: dry runs stop before forming any slice.
                let r = capi::dry_run(|| unsafe {
                    capi::nnkern_softmax(rows, cols, x.as_ptr(), s[0], s[1], y.as_mut_ptr(), s[2], s[3])
                });
                let countable = rows >= 0 && cols >= 0 && rows as u128 * cols as u128 <= isize::MAX as u128;
                if lx.is_some() && ok_y && countable {
                    check_dry_run("softmax", r, &outs, &ins);
                } else {
                    assert!(r.is_err(), "softmax {rows}x{cols} {s:?} accepted");
                }
                let rows_ok = rows >= 0 && rows as u128 * 4 <= isize::MAX as u128;
                // SAFETY: as above.
                let r = capi::dry_run(|| unsafe {
                    capi::nnkern_argmax_rows(rows, cols, x.as_ptr(), s[0], s[1], idx.as_mut_ptr())
                });
                let idx_out = [(idx.as_ptr() as usize, rows.max(0) as usize * 4)];
                if lx.is_some() && rows_ok && countable {
                    check_dry_run("argmax_rows", r, &idx_out, &ins);
                } else {
                    assert!(r.is_err(), "argmax {rows}x{cols} {s:?} accepted");
                }
                return;
            }
            let x = arg_buf(lx, &mut inp);
            let mut y = arg_buf(ly, &mut inp);
            let before = y.clone();
            let y_ptr = if alias && !x.is_empty() {
                x.as_ptr() as *mut f32
            } else {
                y.as_mut_ptr()
            };
            let aliased = alias && lx.is_some_and(|l| l > 0) && ly.is_some_and(|l| l > 0);
            // SAFETY: as above.
            let st = unsafe { capi::nnkern_softmax(rows, cols, x.as_ptr(), s[0], s[1], y_ptr, s[2], s[3]) };
            let expect_ok = lx.is_some() && ok_y && !aliased;
            assert_eq!(st == NNKERN_OK, expect_ok, "softmax {rows}x{cols} {s:?} -> {st}");
            if !expect_ok {
                assert!(y.iter().zip(&before).all(|(p, q)| same(*p, *q)));
            }
            let labels: Vec<u32> = (0..rows.clamp(0, 1000)).map(|_| inp.u8() as u32 % 9).collect();
            let mut loss = f32::from_bits(POISON);
            let mut y2 = before.clone();
            // SAFETY: as above.
            let st = unsafe {
                capi::nnkern_softmax_xent_labels(
                    rows,
                    cols,
                    x.as_ptr(),
                    s[0],
                    s[1],
                    labels.as_ptr(),
                    y2.as_mut_ptr(),
                    s[2],
                    s[3],
                    &mut loss,
                )
            };
            let labels_ok = labels.iter().all(|&l| (l as i64) < cols);
            let expect = lx.is_some() && ok_y && labels_ok && !(rows > 0 && cols == 0);
            assert_eq!(
                st == NNKERN_OK,
                expect,
                "softmax_xent_labels -> {st}: {}",
                capi::last_error_string()
            );
            if st != NNKERN_OK {
                assert_eq!(loss.to_bits(), POISON);
                assert!(y2.iter().zip(&before).all(|(p, q)| same(*p, *q)));
            }
            let mut out = vec![u32::MAX; labels.len()];
            // SAFETY: as above.
            let st = unsafe { capi::nnkern_argmax_rows(rows, cols, x.as_ptr(), s[0], s[1], out.as_mut_ptr()) };
            assert_eq!(st == NNKERN_OK, lx.is_some() && !(rows > 0 && cols == 0));
        }
        _ => {
            // Optimizer entries with arbitrary config codes and overlap.
            let n = int_arg(&mut inp, 30);
            let len = model_span(1, n, 0, 1, 4);
            let mut cfg = capi::nnkern_adam_config {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
                decay: inp.u8() as c_int % 3,
                epsilon: inp.u8() as c_int % 3,
            };
            if inp.u8().is_multiple_of(4) {
                cfg.beta1 = 1.0;
            }
            let cfg_ok = cfg.decay < 2 && cfg.epsilon < 2 && cfg.beta1 < 1.0;
            if len.is_some_and(|l| l > ARG_CAP) {
                // Too large to allocate: the entries' checks in a dry run.
                let (mut w, g, mut m, mut v) = ([0.0f32], [0.0f32], [0.0f32], [0.0f32]);
                let bytes = len.unwrap_or(0) * 4;
                let outs = [
                    (w.as_ptr() as usize, bytes),
                    (m.as_ptr() as usize, bytes),
                    (v.as_ptr() as usize, bytes),
                ];
                let ins = [(g.as_ptr() as usize, bytes), (&cfg as *const _ as usize, 1)];
                // SAFETY: the config is real; the dry run stops before forming
                // a slice of the (far too large) buffers.
                let r = capi::dry_run(|| unsafe {
                    capi::nnkern_adam_step(&cfg, 1, w.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr(), n)
                });
                if cfg_ok {
                    check_dry_run("adam_step", r, &outs, &ins);
                } else {
                    assert!(r.is_err(), "adam config {cfg:?} accepted");
                }
                let mut g2 = [0.0f32];
                let lens = [n, n];
                let ptrs = [g2.as_mut_ptr(), w.as_mut_ptr()];
                let mut norm = 0.0f32;
                // SAFETY: the pointer and length lists are real; as above.
                let r = capi::dry_run(|| unsafe {
                    capi::nnkern_clip_global_norm(ptrs.as_ptr(), lens.as_ptr(), 2, 1.0, &mut norm)
                });
                let outs = [
                    (g2.as_ptr() as usize, bytes),
                    (w.as_ptr() as usize, bytes),
                    (&norm as *const f32 as usize, 4),
                ];
                check_dry_run("clip_global_norm", r, &outs, &[]);
                return;
            }
            let mut w = arg_buf(len, &mut inp);
            let g = arg_buf(len, &mut inp);
            let mut m = arg_buf(len, &mut inp);
            let mut v: Vec<f32> = arg_buf(len, &mut inp).iter().map(|x| x.abs()).collect();
            let w0 = w.clone();
            let m_ptr = if alias && !w.is_empty() {
                w.as_mut_ptr()
            } else {
                m.as_mut_ptr()
            };
            let cfg_ptr = if null_case == 1 {
                std::ptr::null()
            } else {
                &cfg as *const _
            };
            // SAFETY: as above.
            let st =
                unsafe { capi::nnkern_adam_step(cfg_ptr, 1, w.as_mut_ptr(), g.as_ptr(), m_ptr, v.as_mut_ptr(), n) };
            let expect_ok = len.is_some() && cfg_ok && null_case != 1 && !(alias && len.is_some_and(|l| l > 0));
            assert_eq!(st == NNKERN_OK, expect_ok, "adam_step n={n} {cfg:?} -> {st}");
            if !expect_ok {
                assert!(w.iter().zip(&w0).all(|(p, q)| same(*p, *q)));
            }
            // Clip over two buffers that may overlap.
            let mut g2 = arg_buf(len, &mut inp);
            let lens = [n, n];
            let second = if alias { g2.as_mut_ptr() } else { w.as_mut_ptr() };
            let ptrs = [g2.as_mut_ptr(), second];
            let mut norm = 0.0f32;
            // SAFETY: as above.
            let st = unsafe { capi::nnkern_clip_global_norm(ptrs.as_ptr(), lens.as_ptr(), 2, 1.0, &mut norm) };
            let expect_ok = len.is_some() && !(alias && len.is_some_and(|l| l > 0));
            assert_eq!(st == NNKERN_OK, expect_ok, "clip n={n} alias={alias} -> {st}");
        }
    }
}

/// `cblas_sgemm` with arbitrary orders, transposes, sizes and leading
/// dimensions: invalid calls must report the first bad parameter (CBLAS
/// positions) and leave C alone; valid ones must match a triple loop
/// written from the BLAS definition.
pub fn cblas_sgemm(data: &[u8]) {
    let mut inp = Input::new(data);
    let pick = |inp: &mut Input<'_>, good: [c_int; 2]| -> c_int {
        let b = inp.u8();
        match b {
            0..=239 => good[b as usize % 2],
            240 => 113,
            _ => b as c_int - 300,
        }
    };
    let order = pick(&mut inp, [101, 102]);
    let ta = pick(&mut inp, [111, 112]);
    let tb = pick(&mut inp, [111, 112]);
    let small = |inp: &mut Input<'_>| int_arg(inp, 11).clamp(i32::MIN as i64, i32::MAX as i64) as c_int;
    let (m, n, k) = (small(&mut inp), small(&mut inp), small(&mut inp));
    let row_major = order == 101;
    let (ta_t, tb_t) = (ta != 111, tb != 111);
    // Stored shapes, as the BLAS documentation states them.
    let (a_r, a_c) = if ta_t { (k, m) } else { (m, k) };
    let (b_r, b_c) = if tb_t { (n, k) } else { (k, n) };
    let (c_r, c_c) = (m, n);
    let ld_min = |r: c_int, c: c_int| if row_major { c.max(1) } else { r.max(1) };
    let ld = |inp: &mut Input<'_>, min: c_int| -> c_int {
        match inp.u8() {
            0..=199 => min.saturating_add((inp.u8() % 3) as c_int),
            200..=229 => min - 1,
            _ => inp.u8() as c_int - 128,
        }
    };
    let (lda, ldb, ldc) = (
        ld(&mut inp, ld_min(a_r, a_c)),
        ld(&mut inp, ld_min(b_r, b_c)),
        ld(&mut inp, ld_min(c_r, c_c)),
    );
    let expected_bad = if !(order == 101 || order == 102) {
        1
    } else if !(111..=113).contains(&ta) {
        2
    } else if !(111..=113).contains(&tb) {
        3
    } else if m < 0 {
        4
    } else if n < 0 {
        5
    } else if k < 0 {
        6
    } else if lda < ld_min(a_r, a_c) {
        9
    } else if ldb < ld_min(b_r, b_c) {
        11
    } else if ldc < ld_min(c_r, c_c) {
        14
    } else {
        0
    };
    // Element (i, j) of a stored matrix with leading dimension ld.
    let at = |i: usize, j: usize, ld: c_int| {
        if row_major {
            i * ld as usize + j
        } else {
            i + j * ld as usize
        }
    };
    let span = |r: c_int, c: c_int, ld: c_int| -> usize {
        if r <= 0 || c <= 0 {
            0
        } else if row_major {
            (r as usize - 1) * ld as usize + c as usize
        } else {
            (c as usize - 1) * ld as usize + r as usize
        }
    };
    let valid = expected_bad == 0;
    let (la, lb, lc) = if valid {
        (span(a_r, a_c, lda), span(b_r, b_c, ldb), span(c_r, c_c, ldc))
    } else {
        (1, 1, 1)
    };
    if la.max(lb).max(lc) > ARG_CAP || m.max(n).max(k) > 100_000 {
        // Too large to allocate or to run: a valid description must pass
        // every check in a dry run (a C described past the real buffers may
        // overlap them in address space: position 13, rightly).
        let (a, b, mut c) = ([0.0f32], [0.0f32], [0.0f32]);
        capi::nnkern_set_cblas_error_handler(Some(record_cblas_error));
        let _ = last_cblas_param();
        let r = capi::dry_run(|| {
            // SAFETY: the dry run stops before forming any slice.
            unsafe {
                capi::cblas_sgemm(
                    order,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    1.0,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    ldb,
                    0.5,
                    c.as_mut_ptr(),
                    ldc,
                )
            };
            last_cblas_param().max(0)
        });
        let overlap = |(p0, l0): (usize, usize), (p1, l1): (usize, usize)| {
            l0 > 0 && l1 > 0 && p0 < p1.saturating_add(l1) && p1 < p0.saturating_add(l0)
        };
        let cs = (c.as_ptr() as usize, lc * 4);
        let aliased = overlap(cs, (a.as_ptr() as usize, la * 4)) || overlap(cs, (b.as_ptr() as usize, lb * 4));
        // Spans whose bytes (or end address) do not fit the address space
        // are the first matrix's parameter (A 8, B 10, C 13), rightly.
        let too_big = |p: *const f32, l: usize| {
            let bytes = l as u128 * 4;
            bytes > isize::MAX as u128 || p as u128 + bytes > usize::MAX as u128
        };
        let expected = if !valid {
            expected_bad
        } else if too_big(a.as_ptr(), la) {
            8
        } else if too_big(b.as_ptr(), lb) {
            10
        } else if too_big(c.as_ptr(), lc) {
            13
        } else {
            0
        };
        match r {
            Ok(()) => assert!(
                expected == 0,
                "cblas_sgemm accepted an invalid call (parameter {expected})"
            ),
            Err(13) if aliased && expected == 0 => {}
            Err(p) => assert_eq!(p, expected, "cblas_sgemm dry run reported parameter {p}"),
        }
        return;
    }
    let a = inp.values(la, false);
    let b = inp.values(lb, false);
    let mut c = inp.values(lc, false);
    let c0 = c.clone();
    let alpha = scalar(&mut inp);
    let beta = scalar(&mut inp);
    capi::nnkern_set_cblas_error_handler(Some(record_cblas_error));
    let _ = last_cblas_param();
    // SAFETY: when the model says the call is valid, each buffer has exactly
    // the elements BLAS reads; otherwise the call must not read them.
    unsafe {
        capi::cblas_sgemm(
            order,
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            beta,
            c.as_mut_ptr(),
            ldc,
        )
    };
    let got_param = last_cblas_param();
    if !valid {
        assert_eq!(got_param, expected_bad, "cblas_sgemm reported parameter {got_param}");
        assert!(
            c.iter().zip(&c0).all(|(p, q)| same(*p, *q)),
            "C written by an invalid call"
        );
        return;
    }
    assert_eq!(
        got_param,
        -1,
        "valid call reported an error: {}",
        capi::last_error_string()
    );
    let (m, n, k) = (m as usize, n as usize, k as usize);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut bound) = (0.0f64, 0.0f64);
            for p in 0..k {
                let av = if ta_t { a[at(p, i, lda)] } else { a[at(i, p, lda)] } as f64;
                let bv = if tb_t { b[at(j, p, ldb)] } else { b[at(p, j, ldb)] } as f64;
                s += av * bv;
                bound += (av * bv).abs();
            }
            let ci = at(i, j, ldc);
            let cin = if beta == 0.0 { 0.0 } else { beta as f64 * c0[ci] as f64 };
            let want = alpha as f64 * s + cin;
            let tol = 2.0 * (k as f64 + 3.0) * U * ((alpha as f64).abs() * bound + cin.abs()) + 1e-37;
            close("cblas_sgemm", nnkern::active_isa(), ci, c[ci], want as f32, tol);
        }
    }
    // Elements of C's storage outside the m×n matrix (padding) are untouched.
    let mut inside = vec![false; c.len()];
    for i in 0..m {
        for j in 0..n {
            inside[at(i, j, ldc)] = true;
        }
    }
    for (idx, is_in) in inside.iter().enumerate() {
        if !is_in {
            assert!(same(c[idx], c0[idx]), "cblas_sgemm wrote padding element {idx}");
        }
    }
}

/// The IDX reader: the first byte picks the mode — bit 0 the dimension
/// count (1 or 3), bit 1 gzip-compresses the rest first (so the fuzzer
/// reaches the decompressing path with valid streams), bit 2 reads the rest
/// as the four files of a dataset (split by three length bytes) instead.
/// Bad files must be `Error::Data`; a parsed one must be consistent and
/// survive a write/read round trip.
pub fn idx(data: &[u8]) {
    use nnkern_train::data::{parse_idx, write_idx};
    use nnkern_train::Dataset;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let compressed;
    let bytes = if mode & 2 == 2 {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(rest).unwrap();
        compressed = enc.finish().unwrap();
        &compressed[..]
    } else {
        rest
    };
    if mode & 4 == 4 {
        let (lens, files) = bytes.split_at(bytes.len().min(3));
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut files = files;
        for &l in lens {
            let (p, q) = files.split_at((l as usize).min(files.len()));
            parts.push(p);
            files = q;
        }
        parts.resize(3, &[]);
        parts.push(files);
        let names = ["ti", "tl", "si", "sl"];
        match Dataset::from_bytes(
            [
                (names[0], parts[0]),
                (names[1], parts[1]),
                (names[2], parts[2]),
                (names[3], parts[3]),
            ],
            "fuzz",
        ) {
            Ok(d) => {
                assert!(d.classes >= 2 && !d.train.is_empty());
                assert_eq!(d.train.images.len(), d.train.len() * d.train.features);
                assert_eq!(d.test.images.len(), d.test.len() * d.test.features);
                assert!(d.test.labels.iter().all(|&l| (l as usize) < d.classes));
            }
            Err(e) => assert!(matches!(e, nnkern_train::Error::Data { .. }), "{e:?}"),
        }
        return;
    }
    let ndims = if mode & 1 == 1 { 3 } else { 1 };
    match parse_idx(bytes, "fuzz", ndims) {
        Ok(f) => {
            assert_eq!(f.dims.len(), ndims);
            assert_eq!(f.data.len(), f.dims.iter().product::<usize>());
            let again = parse_idx(&write_idx(&f.dims, &f.data), "again", ndims).unwrap();
            assert_eq!(again, f);
        }
        Err(e) => assert!(matches!(e, nnkern_train::Error::Data { .. }), "{e:?}"),
    }
}

/// The checkpoint reader: the first byte picks the mode — bit 0 appends a
/// correct CRC-32 to the rest (so the fuzzer gets past the checksum to the
/// structure). Bad files must be `Error::Data`; a parsed checkpoint must
/// serialise back to bytes that parse to the same checkpoint.
pub fn checkpoint(data: &[u8]) {
    use nnkern_train::Checkpoint;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    match Checkpoint::from_bytes(&bytes, "fuzz") {
        Ok(ck) => {
            let out = ck.to_bytes();
            let again = Checkpoint::from_bytes(&out, "again").expect("a written checkpoint reads back");
            assert_eq!(again.to_bytes(), out);
        }
        Err(e) => assert!(matches!(e, nnkern_train::Error::Data { .. }), "{e:?}"),
    }
}
