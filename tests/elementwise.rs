//! Every element-wise kernel against `nnkern::reference`, on every ISA this
//! CPU runs, over random sizes (0, 1, odd, lane ± 1, large), unaligned
//! sub-slices and special values. Outputs are poisoned with NaN first so an
//! unwritten element fails. Tolerances are stated beside each check.

// (i, j) loops over matrix views read clearest as index loops.
#![allow(clippy::needless_range_loop)]

use nnkern::{reference, with_isa, Activation, Isa};
use proptest::prelude::*;

/// Proptest cases: small by default (CI on 2 cores), `PROPTEST_CASES` overrides.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    ProptestConfig::with_cases(cases)
}

const EPS: f64 = 1.0 / 16_777_216.0; // 2⁻²⁴, half an ulp of 1

/// Lengths around every vector width (1, 4, 8, 16 lanes), plus small and large.
fn len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        prop::sample::select(vec![3usize, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49]),
        0usize..200,
        1000usize..5000,
    ]
}

/// Mostly moderate values, with the special ones mixed in.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -8.0f32..8.0,
        2 => -40.0f32..40.0,
        1 => prop::sample::select(vec![
            0.0f32, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-45, -1e-45,
            f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e30, -1e30, f32::MAX, f32::MIN, 100.0, -100.0,
        ]),
        1 => any::<u32>().prop_map(f32::from_bits),
    ]
}

fn vec_of(len: usize, pad: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(value(), len + pad)
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_close(what: &str, got: f32, want: f32, tol: f64) -> Result<(), TestCaseError> {
    if want.is_nan() || got.is_nan() {
        prop_assert!(want.is_nan() && got.is_nan(), "{what}: got {got:e}, want {want:e}");
        return Ok(());
    }
    if want.is_infinite() && got.is_infinite() {
        prop_assert_eq!(got, want, "{}", what);
        return Ok(());
    }
    // One side overflowed and the other did not: measure the overflowed side as ±2¹²⁸,
    // the next step after f32::MAX, so a last-ulp difference at the top of the range passes.
    let widen = |v: f32| {
        if v.is_infinite() {
            2f64.powi(128).copysign(v as f64)
        } else {
            v as f64
        }
    };
    let (got, want) = (widen(got), widen(want));
    // Every tolerance also allows one step of the subnormal grid (2⁻¹⁴⁹): a result that rounds
    // into the subnormal range loses relative precision in the kernel and in the reference alike.
    let tol = tol + 2f64.powi(-149);
    let err = (got - want).abs();
    prop_assert!(
        err <= tol,
        "{what}: got {got:e}, want {want:e}, error {err:e} > tolerance {tol:e}"
    );
    Ok(())
}

/// Exhaustive over ISAs: runs `f` with each supported ISA forced.
fn on_every_isa(mut f: impl FnMut(Isa) -> Result<(), TestCaseError>) -> Result<(), TestCaseError> {
    for isa in nnkern::testing::test_isas() {
        with_isa(isa, || f(isa)).unwrap()?;
    }
    Ok(())
}

/// `dy = ±∞` times a tiny `f'(x)`: the f64 reference's f' cancels to exactly 0 in the tails
/// (1 − t², s·(1 − s), 1 + tanh) where the kernels' does not, and the kernels' f32 f'
/// underflows to 0 where the f64 one does not; ∞·0 = NaN on one side only. Not a defect.
fn inf_times_tiny_derivative(x: f32, dy: f32, got: f32, want: f32) -> bool {
    dy.is_infinite() && x.is_finite() && (want.is_nan() && got.is_infinite() || got.is_nan() && want.is_infinite())
}

mod activation {
    use super::*;
    use nnkern::{
        activation_backward, activation_backward_inplace, activation_forward, activation_forward_inplace, MatMut,
        MatRef,
    };

    /// A 1×n view of a slice.
    fn row(x: &[f32]) -> MatRef<'_, f32> {
        MatRef::new(x, 1, x.len()).unwrap()
    }
    fn row_mut(x: &mut [f32]) -> MatMut<'_, f32> {
        let n = x.len();
        MatMut::new(x, 1, n).unwrap()
    }

    const C: f64 = 0.797_884_560_802_865_4;
    const A: f64 = 0.044_715;

    /// Accurate f64 pieces for the tolerance terms (not the oracle).
    fn gelu_tanh_z(x: f64) -> f64 {
        2.0 * C * x * (1.0 + A * x * x)
    }
    fn dsig(z: f64) -> f64 {
        let e = (-z.abs()).exp();
        e / ((1.0 + e) * (1.0 + e))
    }
    fn sig(z: f64) -> f64 {
        if z >= 0.0 {
            1.0 / (1.0 + (-z).exp())
        } else {
            z.exp() / (1.0 + z.exp())
        }
    }

    /// The reference is computed in f64 but itself cancels (`1 + tanh`,
    /// `s·(1 − s)`, `1 − t²`) in the tails: its absolute error is below
    /// 2⁻⁵⁰·(1 + |x|).
    fn reference_error(x: f64) -> f64 {
        2f64.powi(-50) * (1.0 + x.abs().min(1e30))
    }

    /// Forward tolerance.
    /// - identity, ReLU: bit-exact (checked separately).
    /// - sigmoid 3 ulp, tanh 2 ulp: the accuracy of `math::sigmoid` / `math::tanh`.
    /// - GELU-tanh = x·σ(z): σ's 3 ulp, plus the rounding of z (3 operations,
    ///   relative 4·2⁻²⁴) magnified by |z| in e^z, plus the product: (8 + 4|z|) ulp.
    /// - GELU-erf = x·Φ(x): up to 13 ulp where Φ = ½ − ½·erf(t) cancels near
    ///   t = 0.94 (measured 13.4), so 16 ulp.
    pub(super) fn forward_tolerance(act: Activation, x: f32, want: f32) -> f64 {
        let x = x as f64;
        let ulps = match act {
            Activation::Sigmoid => 3.0,
            Activation::Tanh => 2.0,
            Activation::GeluTanh => 8.0 + 4.0 * gelu_tanh_z(x).abs().min(1e4),
            Activation::GeluErf => 16.0,
            Activation::Identity | Activation::Relu => 0.0,
            _ => unreachable!(),
        };
        2.0 * EPS * ulps * (want as f64).abs() + reference_error(x)
    }

    /// Backward tolerance on `dx = dy·f'(x)`:
    /// - sigmoid, tanh: `e·r²` has 5 roundings (measured 4.3 ulp), plus the
    ///   product with dy: 6 ulp of |dx|.
    /// - GELU: f' = a + b is a sum of two terms that cancel near f' = 0
    ///   (x ≈ −0.75), so the bound is absolute in the size of the terms:
    ///   8 ulp of (|a| + |b|), plus the (8 + 4|z|) of the forward for GELU-tanh.
    pub(super) fn backward_tolerance(act: Activation, x: f32, dy: f32, want: f32) -> f64 {
        let (xf, dyf) = (x as f64, (dy as f64).abs());
        let rel = 2.0 * EPS * (want as f64).abs();
        match act {
            Activation::Identity | Activation::Relu => 0.0,
            Activation::Sigmoid | Activation::Tanh => 6.0 * rel + dyf * reference_error(xf),
            Activation::GeluTanh => {
                let xc = xf.clamp(-30.0, 30.0);
                let z = gelu_tanh_z(xc);
                let terms = sig(z) + (xc * dsig(z) * 2.0 * C * (1.0 + 3.0 * A * xc * xc)).abs();
                (8.0 + 4.0 * z.abs().min(1e4)) * rel + 16.0 * EPS * terms * dyf + dyf * reference_error(xf)
            }
            Activation::GeluErf => {
                let xc = xf.clamp(-30.0, 30.0);
                let cdf = 0.5 * libm::erfc(-xc / std::f64::consts::SQRT_2);
                let terms = cdf + (xc * (-0.5 * xc * xc).exp() * 0.398_942_280_401_432_7).abs();
                8.0 * rel + 16.0 * EPS * terms * dyf + dyf * reference_error(xf)
            }
            _ => unreachable!(),
        }
    }

    fn check_forward(act: Activation, x: &[f32], got: &[f32]) -> Result<(), TestCaseError> {
        for (i, (&xi, &g)) in x.iter().zip(got).enumerate() {
            let want = reference::forward_scalar(act, xi);
            if matches!(act, Activation::Identity | Activation::Relu) {
                prop_assert!(same(g, want), "{act} forward [{i}] x={xi:e}: got {g:e}, want {want:e}");
            } else {
                check_close(
                    &format!("{act} forward [{i}] x={xi:e}"),
                    g,
                    want,
                    forward_tolerance(act, xi, want),
                )?;
            }
        }
        Ok(())
    }

    fn check_backward(act: Activation, x: &[f32], dy: &[f32], got: &[f32]) -> Result<(), TestCaseError> {
        for (i, ((&xi, &d), &g)) in x.iter().zip(dy).zip(got).enumerate() {
            let want = reference::backward_scalar(act, xi, d);
            if d.is_infinite()
                && xi.is_finite()
                && (want.is_nan() && g.is_infinite() || g.is_nan() && want.is_infinite())
            {
                // ∞·f'(x) where f'(x) is tiny: the f64 reference's f' cancels to exactly 0 in
                // the tails (1 − t², s·(1 − s), 1 + tanh) where the kernels' does not, and the
                // kernels' f32 f' underflows to 0 where the f64 one does not; ∞·0 = NaN either way.
                continue;
            }
            if matches!(act, Activation::Identity | Activation::Relu) {
                prop_assert!(
                    same(g, want),
                    "{act} backward [{i}] x={xi:e} dy={d:e}: got {g:e}, want {want:e}"
                );
            } else {
                check_close(
                    &format!("{act} backward [{i}] x={xi:e} dy={d:e}"),
                    g,
                    want,
                    backward_tolerance(act, xi, d, want),
                )?;
            }
        }
        Ok(())
    }

    fn act_strategy() -> impl Strategy<Value = Activation> {
        prop::sample::select(Activation::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn forward_matches_reference(
            act in act_strategy(),
            (x, off) in len_strategy().prop_flat_map(|n| (vec_of(n, 3), 0usize..4)),
        ) {
            let x = &x[off.min(x.len())..];
            on_every_isa(|_| {
                let mut y = vec![f32::NAN; x.len() + 1];
                activation_forward(act, row(x), row_mut(&mut y[1..])).unwrap();
                check_forward(act, x, &y[1..])?;
                let mut z = x.to_vec();
                activation_forward_inplace(act, row_mut(&mut z)).unwrap();
                check_forward(act, x, &z)
            })?;
        }

        #[test]
        fn backward_matches_reference(
            act in act_strategy(),
            (x, dy, off) in len_strategy().prop_flat_map(|n| (vec_of(n, 3), vec_of(n, 3), 0usize..4)),
        ) {
            let off = off.min(x.len());
            let (x, dy) = (&x[off..], &dy[..dy.len() - off]);
            on_every_isa(|_| {
                let mut dx = vec![f32::NAN; x.len() + 1];
                activation_backward(act, row(x), row(dy), row_mut(&mut dx[1..])).unwrap();
                check_backward(act, x, dy, &dx[1..])?;
                let mut g = dy.to_vec();
                activation_backward_inplace(act, row(x), row_mut(&mut g)).unwrap();
                check_backward(act, x, dy, &g)
            })?;
        }
    }

    /// Large tensors, through every block of the unrolled loops.
    #[test]
    fn large_tensors_match() {
        let n = (1 << 19) + 37;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
        let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 1999) as f32 / 1000.0 - 1.0).collect();
        for act in Activation::ALL {
            let mut y = vec![f32::NAN; n];
            activation_forward(act, row(&x), row_mut(&mut y)).unwrap();
            check_forward(act, &x, &y).unwrap();
            let mut dx = vec![f32::NAN; n];
            activation_backward(act, row(&x), row(&dy), row_mut(&mut dx)).unwrap();
            check_backward(act, &x, &dy, &dx).unwrap();
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut y = [0.0f32; 2];
        assert!(activation_forward(Activation::Relu, row(&[1.0; 3]), row_mut(&mut y)).is_err());
        assert!(activation_backward(Activation::Tanh, row(&[1.0; 2]), row(&[1.0; 3]), row_mut(&mut y)).is_err());
        assert!(activation_backward(Activation::Tanh, row(&[1.0; 3]), row(&[1.0; 3]), row_mut(&mut y)).is_err());
        assert!(activation_backward_inplace(Activation::Tanh, row(&[1.0; 3]), row_mut(&mut y)).is_err());
        // Same element count, other shape: an error too.
        let mut y4 = [0.0f32; 4];
        assert!(activation_forward(Activation::Relu, row(&[1.0; 4]), MatMut::new(&mut y4, 2, 2).unwrap()).is_err());
        assert!(activation_forward(Activation::Tanh, row(&[]), row_mut(&mut [])).is_ok());
    }

    /// A padding value no kernel writes: a NaN with a payload.
    const POISON: u32 = 0x7fc0_beef;

    /// One view of `shape` per operand, each with its own padding, offset and
    /// orientation, so the contiguous, row-by-row, column-by-column and
    /// gathered paths all run (and mix).
    fn views(count: usize) -> impl Strategy<Value = Vec<Layout>> {
        (
            prop_oneof![Just(0usize), Just(1usize), 1usize..12, 30usize..40],
            len_strategy().prop_map(|n| n.min(300)),
        )
            .prop_flat_map(move |(rows, cols)| {
                prop::collection::vec(
                    (0usize..3, 0usize..3, prop::bool::weighted(0.3)).prop_map(move |(pad, off, col_major)| Layout {
                        rows,
                        cols,
                        pad,
                        off,
                        col_major,
                    }),
                    count,
                )
            })
    }

    /// A buffer for `l`: poison everywhere, `values` (row-major, consumed
    /// cyclically) inside the view.
    fn fill(l: &Layout, values: &[f32]) -> Vec<f32> {
        let mut buf = vec![f32::from_bits(POISON); l.len()];
        for i in 0..l.rows {
            for j in 0..l.cols {
                buf[l.index(i, j)] = values[(i * l.cols + j) % values.len().max(1)];
            }
        }
        buf
    }

    /// The view's elements, row-major.
    fn gather(l: &Layout, buf: &[f32]) -> Vec<f32> {
        (0..l.rows)
            .flat_map(|i| (0..l.cols).map(move |j| buf[l.index(i, j)]))
            .collect()
    }

    /// Every element of `buf` outside the view still holds the poison.
    fn padding_untouched(what: &str, l: &Layout, buf: &[f32]) -> Result<(), TestCaseError> {
        let inside: std::collections::HashSet<usize> = (0..l.rows)
            .flat_map(|i| (0..l.cols).map(move |j| l.index(i, j)))
            .collect();
        for (k, v) in buf.iter().enumerate() {
            prop_assert!(
                inside.contains(&k) || v.to_bits() == POISON,
                "{what}: padding [{k}] written: {v:e}"
            );
        }
        Ok(())
    }

    /// Equal bits, or both NaN (a NaN's sign and payload may depend on where
    /// in a vector the element falls).
    fn same_values(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| same(x, y))
    }

    proptest! {
        #![proptest_config(config())]

        /// Strided and padded views give what the reference gives, the same bits as
        /// the packed call, and leave everything outside the view alone.
        #[test]
        fn forward_on_padded_views(
            act in act_strategy(),
            ls in views(2),
            values in prop::collection::vec(value(), 1..64),
        ) {
            let (lx, ly) = (ls[0], ls[1]);
            let xb = fill(&lx, &values);
            let x = gather(&lx, &xb);
            on_every_isa(|isa| {
                let mut packed = vec![0.0f32; x.len()];
                activation_forward(act, row(&x), row_mut(&mut packed)).unwrap();
                let mut yb = fill(&ly, &[12345.0]);
                activation_forward(act, lx.view(&xb), ly.view_mut(&mut yb)).unwrap();
                let y = gather(&ly, &yb);
                check_forward(act, &x, &y)?;
                prop_assert!(same_values(&y, &packed), "{} {} {:?} -> {:?}", isa, act, lx, ly);
                padding_untouched("y", &ly, &yb)?;
                // In place: x's own layout.
                let mut zb = xb.clone();
                activation_forward_inplace(act, lx.view_mut(&mut zb)).unwrap();
                prop_assert!(same_values(&gather(&lx, &zb), &packed), "{} {} in place {:?}", isa, act, lx);
                padding_untouched("x in place", &lx, &zb)
            })?;
        }

        #[test]
        fn backward_on_padded_views(
            act in act_strategy(),
            ls in views(3),
            values in prop::collection::vec(value(), 1..64),
            grads in prop::collection::vec(value(), 1..64),
        ) {
            let (lx, ldy, ldx) = (ls[0], ls[1], ls[2]);
            let (xb, dyb) = (fill(&lx, &values), fill(&ldy, &grads));
            let (x, dy) = (gather(&lx, &xb), gather(&ldy, &dyb));
            on_every_isa(|isa| {
                let mut packed = vec![0.0f32; x.len()];
                activation_backward(act, row(&x), row(&dy), row_mut(&mut packed)).unwrap();
                let mut dxb = fill(&ldx, &[12345.0]);
                activation_backward(act, lx.view(&xb), ldy.view(&dyb), ldx.view_mut(&mut dxb)).unwrap();
                let dx = gather(&ldx, &dxb);
                check_backward(act, &x, &dy, &dx)?;
                prop_assert!(same_values(&dx, &packed), "{} {} {:?} {:?} -> {:?}", isa, act, lx, ldy, ldx);
                padding_untouched("dx", &ldx, &dxb)?;
                let mut gb = dyb.clone();
                activation_backward_inplace(act, lx.view(&xb), ldy.view_mut(&mut gb)).unwrap();
                prop_assert!(same_values(&gather(&ldy, &gb), &packed), "{} {} in place", isa, act);
                padding_untouched("grad in place", &ldy, &gb)
            })?;
        }
    }

    /// The reference over the same padded views agrees with the reference over
    /// packed ones and leaves the padding alone.
    #[test]
    fn reference_on_padded_views() {
        let l = Layout {
            rows: 3,
            cols: 5,
            pad: 2,
            off: 1,
            col_major: true,
        };
        let values: Vec<f32> = (0..15).map(|i| i as f32 - 7.0).collect();
        let xb = fill(&l, &values);
        for act in Activation::ALL {
            let mut yb = fill(&l, &[12345.0]);
            reference::activation_forward(act, l.view(&xb), l.view_mut(&mut yb)).unwrap();
            let want: Vec<f32> = values.iter().map(|&v| reference::forward_scalar(act, v)).collect();
            assert!(same_values(&gather(&l, &yb), &want), "{act}");
            padding_untouched("reference y", &l, &yb).unwrap();
        }
    }
}

/// A matrix layout to test: shape, row stride (≥ cols, padded), start offset,
/// and whether it is stored transposed (column-major, the reference path).
#[derive(Debug, Clone, Copy)]
struct Layout {
    rows: usize,
    cols: usize,
    pad: usize,
    off: usize,
    col_major: bool,
}

impl Layout {
    fn stride(&self) -> usize {
        // At least 1: MatMut rejects a zero stride even over an empty dimension.
        if self.col_major {
            self.rows.max(1) + self.pad
        } else {
            self.cols.max(1) + self.pad
        }
    }
    fn len(&self) -> usize {
        let (outer, inner) = if self.col_major {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        };
        self.off
            + if outer == 0 || inner == 0 {
                0
            } else {
                (outer - 1) * self.stride() + inner
            }
    }
    fn index(&self, i: usize, j: usize) -> usize {
        if self.col_major {
            self.off + j * self.stride() + i
        } else {
            self.off + i * self.stride() + j
        }
    }
    fn view<'a>(&self, data: &'a [f32]) -> nnkern::MatRef<'a, f32> {
        let (rs, cs) = if self.col_major {
            (1, self.stride())
        } else {
            (self.stride(), 1)
        };
        nnkern::MatRef::from_strides(&data[self.off..], self.rows, self.cols, rs, cs).unwrap()
    }
    fn view_mut<'a>(&self, data: &'a mut [f32]) -> nnkern::MatMut<'a, f32> {
        let (rs, cs) = if self.col_major {
            (1, self.stride())
        } else {
            (self.stride(), 1)
        };
        nnkern::MatMut::from_strides(&mut data[self.off..], self.rows, self.cols, rs, cs).unwrap()
    }
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    (
        prop_oneof![Just(0usize), Just(1usize), 1usize..12, 30usize..40],
        len_strategy().prop_map(|n| n.min(700)),
        0usize..3,
        0usize..3,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(rows, cols, pad, off, col_major)| Layout {
            rows,
            cols,
            pad,
            off,
            col_major,
        })
}

/// Moderate values with occasional specials, for sums (huge finite values would
/// overflow an f32 partial sum where the f64 reference does not).
fn sum_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        30 => -8.0f32..8.0,
        1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-40]),
    ]
}

mod bias {
    use super::*;
    use nnkern::{activation_backward_bias_grad, bias_add, bias_add_activation, bias_grad};

    /// An f32 sum of `n` terms, in any order, is within `(n − 1)·2⁻²⁴·Σ|terms|` of the exact sum.
    fn sum_tolerance(abs_sum: f64, n: usize) -> f64 {
        n as f64 * EPS * abs_sum
    }

    proptest! {
        #![proptest_config(config())]

        /// bias add is one f32 addition per element: bit-exact. The activation after it has the
        /// forward tolerance of its activation.
        #[test]
        fn bias_add_and_epilogue_match_reference(
            act in prop::sample::select(Activation::ALL.to_vec()),
            (l, x, b) in layout_strategy().prop_flat_map(|l| (
                Just(l),
                prop::collection::vec(value(), l.len()),
                prop::collection::vec(value(), l.cols),
            )),
        ) {
            on_every_isa(|_| {
                let mut want = x.clone();
                reference::bias_add(l.view_mut(&mut want), &b).unwrap();
                let mut got = x.clone();
                bias_add(l.view_mut(&mut got), &b).unwrap();
                for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    prop_assert!(same(g, w), "bias_add [{k}]: got {g:e}, want {w:e}");
                }

                let mut xr = x.clone();
                let mut yr = vec![0.0f32; l.len()];
                reference::bias_add_activation(act, l.view_mut(&mut xr), &b, l.view_mut(&mut yr)).unwrap();
                let mut xg = x.clone();
                let mut yg = vec![f32::NAN; l.len()];
                bias_add_activation(act, l.view_mut(&mut xg), &b, l.view_mut(&mut yg)).unwrap();
                for i in 0..l.rows {
                    for j in 0..l.cols {
                        let k = l.index(i, j);
                        prop_assert!(same(xg[k], xr[k]), "bias_add_activation x[{i},{j}]");
                        if matches!(act, Activation::Identity | Activation::Relu) {
                            prop_assert!(same(yg[k], yr[k]), "{act} y[{i},{j}]: got {:e}, want {:e}", yg[k], yr[k]);
                        } else {
                            check_close(&format!("{act} y[{i},{j}]"), yg[k], yr[k],
                                activation::forward_tolerance(act, xr[k], yr[k]))?;
                        }
                    }
                }
                Ok(())
            })?;
        }

        #[test]
        fn bias_grad_and_fused_backward_match_reference(
            act in prop::sample::select(Activation::ALL.to_vec()),
            (l, x, dy) in layout_strategy().prop_flat_map(|l| (
                Just(l),
                prop::collection::vec(sum_value(), l.len()),
                prop::collection::vec(sum_value(), l.len()),
            )),
        ) {
            on_every_isa(|_| {
                let mut want = vec![0.0f32; l.cols];
                reference::bias_grad(l.view(&dy), &mut want).unwrap();
                let mut got = vec![f32::NAN; l.cols];
                bias_grad(l.view(&dy), &mut got).unwrap();
                for j in 0..l.cols {
                    let abs: f64 = (0..l.rows).map(|i| dy[l.index(i, j)].abs() as f64).sum();
                    check_close(&format!("bias_grad[{j}]"), got[j], want[j], sum_tolerance(abs, l.rows))?;
                }

                let mut gr = dy.clone();
                let mut dbr = vec![0.0f32; l.cols];
                reference::activation_backward_bias_grad(act, l.view(&x), l.view_mut(&mut gr), &mut dbr).unwrap();
                let mut gg = dy.clone();
                let mut dbg = vec![f32::NAN; l.cols];
                activation_backward_bias_grad(act, l.view(&x), l.view_mut(&mut gg), &mut dbg).unwrap();
                for j in 0..l.cols {
                    let mut abs = 0.0f64;
                    let mut elementwise = 0.0f64;
                    let mut skip_sum = false;
                    for i in 0..l.rows {
                        let k = l.index(i, j);
                        if inf_times_tiny_derivative(x[k], dy[k], gg[k], gr[k]) {
                            skip_sum = true;
                            continue;
                        }
                        if matches!(act, Activation::Identity | Activation::Relu) {
                            prop_assert!(same(gg[k], gr[k]), "{act} grad[{i},{j}]");
                        } else {
                            let tol = activation::backward_tolerance(act, x[k], dy[k], gr[k]);
                            check_close(&format!("{act} grad[{i},{j}]"), gg[k], gr[k], tol)?;
                            elementwise += tol;
                        }
                        abs += gr[k].abs() as f64;
                    }
                    if skip_sum {
                        continue;
                    }
                    // The column sum of the kernel's own gradients: the sum's rounding plus each
                    // element's tolerance.
                    check_close(&format!("{act} dbias[{j}]"), dbg[j], dbr[j],
                        sum_tolerance(abs, l.rows) + elementwise + 2.0 * EPS * (dbr[j] as f64).abs())?;
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn shapes_are_checked() {
        let x = [0.0f32; 6];
        let mut g = [0.0f32; 6];
        let mut db = [0.0f32; 3];
        let xr = nnkern::MatRef::new(&x, 2, 3).unwrap();
        assert!(activation_backward_bias_grad(
            Activation::Relu,
            xr,
            nnkern::MatMut::new(&mut g, 3, 2).unwrap(),
            &mut db
        )
        .is_err());
        assert!(activation_backward_bias_grad(
            Activation::Relu,
            xr,
            nnkern::MatMut::new(&mut g, 2, 3).unwrap(),
            &mut db[..2]
        )
        .is_err());
        let mut y = [0.0f32; 6];
        let mut xm = [0.0f32; 6];
        assert!(bias_add_activation(
            Activation::Relu,
            nnkern::MatMut::new(&mut xm, 2, 3).unwrap(),
            &[0.0; 3],
            nnkern::MatMut::new(&mut y, 3, 2).unwrap()
        )
        .is_err());
        assert!(bias_add(nnkern::MatMut::new(&mut xm, 2, 3).unwrap(), &[0.0; 2]).is_err());
        assert!(bias_grad(xr, &mut db[..1]).is_err());
    }
}

mod softmax_xent {
    use super::*;
    use nnkern::{log_softmax, softmax, softmax_xent, softmax_xent_loss, MatMut, MatRef, Targets};

    fn logit() -> impl Strategy<Value = f32> {
        prop_oneof![
            20 => -10.0f32..10.0,
            3 => -1e4f32..1e4,
            1 => prop::sample::select(vec![1e4f32, -1e4, 0.0, -0.0, f32::NEG_INFINITY, f32::INFINITY, f32::NAN, 1e-40]),
        ]
    }

    /// `(max, ln Σ exp(x − max))` of row `i` in f64, for the tolerances.
    fn row_stats(x: &MatRef<'_, f32>, i: usize) -> (f64, f64) {
        let max = (0..x.cols())
            .map(|j| x[(i, j)] as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..x.cols()).map(|j| (x[(i, j)] as f64 - max).exp()).sum();
        (max, sum.ln())
    }

    /// The f32 sum of `n` exponentials is within `(n + 4)·2⁻²⁴` relative (lanes, then a
    /// reduction tree), each exponential within 1.5 ulp, and the scaling adds two roundings:
    /// `(n + 16)` units of 2⁻²⁴ covers all of it.
    fn rel(n: usize) -> f64 {
        (n as f64 + 16.0) * EPS
    }

    fn layout_and_logits() -> impl Strategy<Value = (Layout, Vec<f32>)> {
        layout_strategy()
            .prop_map(|mut l| {
                l.cols = l.cols.max(1);
                l
            })
            .prop_flat_map(|l| (Just(l), prop::collection::vec(logit(), l.len())))
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn softmax_and_log_softmax_match_reference((l, x) in layout_and_logits()) {
            let xv = l.view(&x);
            let mut want = vec![0.0f32; l.len()];
            reference::softmax(xv, l.view_mut(&mut want)).unwrap();
            let mut want_log = vec![0.0f32; l.len()];
            reference::log_softmax(xv, l.view_mut(&mut want_log)).unwrap();
            on_every_isa(|isa| {
                let mut got = vec![f32::NAN; l.len()];
                softmax(xv, l.view_mut(&mut got)).unwrap();
                let mut got_log = vec![f32::NAN; l.len()];
                log_softmax(xv, l.view_mut(&mut got_log)).unwrap();
                for i in 0..l.rows {
                    let (max, ln_sum) = row_stats(&xv, i);
                    for j in 0..l.cols {
                        let k = l.index(i, j);
                        // Plus the rounding of x − max, which e^(x − max) magnifies by |x − max|.
                        let arg = (2.0 * EPS * (x[k] as f64 - max).abs()).min(1.0);
                        check_close(&format!("{isa} softmax[{i},{j}]"), got[k], want[k],
                            (rel(l.cols) + arg) * (want[k] as f64).abs())?;
                        // x − max is exact near the max and off by 2⁻²⁴·|x − max| elsewhere, ln Σ
                        // carries the sum's relative error as an absolute one.
                        let tol = 4.0 * EPS * ((x[k] as f64 - max).abs() + ln_sum.abs()) + rel(l.cols);
                        check_close(&format!("{isa} log_softmax[{i},{j}]"), got_log[k], want_log[k], tol)?;
                    }
                }
                Ok(())
            })?;
        }

        #[test]
        fn fused_cross_entropy_matches_reference(
            (l, x, labels, t) in layout_and_logits().prop_flat_map(|(l, x)| (
                Just(l),
                Just(x),
                prop::collection::vec(0..l.cols as u32, l.rows),
                prop::collection::vec(0.0f32..1.0, l.len()),
            )),
            soft in any::<bool>(),
        ) {
            let xv = l.view(&x);
            let targets = if soft { Targets::Soft(l.view(&t)) } else { Targets::Labels(&labels) };
            let mut want_d = vec![0.0f32; l.len()];
            let want = reference::softmax_xent(xv, targets, l.view_mut(&mut want_d)).unwrap();
            // Loss tolerance, relative to each row's scale: the terms ln Σe and (max − x) each
            // carry 2 roundings plus the sum's relative error; rows are summed in f64.
            let mut loss_tol = 0.0f64;
            for i in 0..l.rows {
                let (max, ln_sum) = row_stats(&xv, i);
                loss_tol += if soft {
                    (0..l.cols).map(|j| t[l.index(i, j)] as f64 * ((max - x[l.index(i, j)] as f64).abs() + ln_sum.abs() + 1.0)).sum::<f64>()
                } else {
                    (max - x[l.index(i, labels[i] as usize)] as f64).abs() + ln_sum.abs() + 1.0
                } * rel(l.cols);
            }
            let loss_tol = loss_tol / l.rows.max(1) as f64 + 2.0 * EPS * (want as f64).abs();
            on_every_isa(|isa| {
                let mut d = vec![f32::NAN; l.len()];
                let loss = softmax_xent(xv, targets, l.view_mut(&mut d)).unwrap();
                check_close(&format!("{isa} loss"), loss, want, loss_tol)?;
                let loss_only = softmax_xent_loss(xv, targets).unwrap();
                check_close(&format!("{isa} loss only"), loss_only, want, loss_tol)?;
                let batch = l.rows as f64;
                for i in 0..l.rows {
                    let (max, _) = row_stats(&xv, i);
                    for j in 0..l.cols {
                        let k = l.index(i, j);
                        let tk = if soft { t[k] as f64 } else { f64::from(u8::from(labels[i] as usize == j)) };
                        let p = want_d[k] as f64 * batch + tk;
                        // (p − t)/batch with p carrying rel(cols), t·(1/batch) 2 roundings.
                        let arg = (2.0 * EPS * (x[k] as f64 - max).abs()).min(1.0);
                        let tol = ((rel(l.cols) + arg) * p.abs() + 4.0 * EPS * tk) / batch;
                        check_close(&format!("{isa} dlogits[{i},{j}]"), d[k], want_d[k], tol)?;
                    }
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn logits_of_1e4_are_stable_and_bad_input_is_an_error() {
        let x = [1e4f32, -1e4, 0.0, 3.0, 1e4, 1e4 - 1.0];
        let mut d = [f32::NAN; 6];
        for isa in nnkern::testing::test_isas() {
            with_isa(isa, || {
                let loss = softmax_xent(
                    MatRef::new(&x, 2, 3).unwrap(),
                    Targets::Labels(&[1, 2]),
                    MatMut::new(&mut d, 2, 3).unwrap(),
                )
                .unwrap();
                // Row 0: 2e4; row 1: lse − (1e4 − 1) = 1 + ln(1 + e⁻¹ + e^(3−1e4)) = 1.3132617.
                assert!(
                    (loss as f64 - (2e4 + 1.313_261_687_518_223) / 2.0).abs() < 1e-3,
                    "{loss}"
                );
                assert_eq!(&d[..3], &[0.5, -0.5, 0.0]);
            })
            .unwrap();
        }
        let mut y = [0.0f32; 6];
        assert!(softmax(MatRef::new(&x, 2, 3).unwrap(), MatMut::new(&mut y, 3, 2).unwrap()).is_err());
        assert!(softmax_xent_loss(MatRef::new(&x, 2, 3).unwrap(), Targets::Labels(&[0, 3])).is_err());
        assert_eq!(
            softmax_xent_loss(MatRef::new(&x[..0], 0, 3).unwrap(), Targets::Labels(&[])).unwrap(),
            0.0
        );
    }
}

mod optim {
    use super::*;
    use nnkern::{
        adam_step, clip_global_norm, global_norm, sgd_step, AdamConfig, AdamEpsilon, AdamState, SgdConfig, SgdState,
        WeightDecay,
    };

    fn adam_config() -> impl Strategy<Value = (AdamConfig, u64)> {
        (
            // 1e-25: a step so small that k/(√v·a + ε) could be subnormal (the unfolded update).
            prop_oneof![8 => 0.0f32..0.1, 1 => Just(1e-25f32)],
            prop_oneof![Just(0.9f32), 0.0f32..0.999],
            prop_oneof![Just(0.999f32), 0.5f32..0.99999],
            // 1e-30: √v of a tiny v outweighs ε; 1e-40: a subnormal ε (the exact path).
            prop_oneof![
                8 => prop_oneof![Just(1e-8f32), Just(1e-7f32), 1e-10f32..1e-3],
                1 => Just(1e-30f32),
                1 => Just(1e-40f32),
            ],
            prop_oneof![Just(0.0f32), 0.0f32..0.1],
            any::<bool>(),
            any::<bool>(),
            prop_oneof![1u64..5, 1u64..100_000],
        )
            .prop_map(|(lr, beta1, beta2, eps, weight_decay, decoupled, keras, step)| {
                (
                    AdamConfig {
                        lr,
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                        decay: if decoupled {
                            WeightDecay::Decoupled
                        } else {
                            WeightDecay::L2
                        },
                        epsilon: if keras {
                            AdamEpsilon::Keras
                        } else {
                            AdamEpsilon::PyTorch
                        },
                    },
                    step,
                )
            })
    }

    fn param() -> impl Strategy<Value = f32> {
        prop_oneof![
            20 => -4.0f32..4.0,
            3 => -1e-3f32..1e-3,
            1 => prop::sample::select(vec![0.0f32, -0.0, f32::NAN, f32::INFINITY, -f32::INFINITY, 1e-40, -1e-40, 1e-30, 1e20]),
        ]
    }
    /// Second moments: ≥ 0, including the subnormal range Adam's moments decay into.
    fn second_moment() -> impl Strategy<Value = f32> {
        prop_oneof![
            10 => 0.0f32..4.0,
            3 => 0.0f32..1e-6,
            // Below 2⁻⁶⁴, where the root is taken of v·2⁶⁴.
            2 => 1e-38f32..1e-19,
            2 => (1u32..0x0080_0000).prop_map(f32::from_bits),
            1 => Just(0.0f32),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// Tolerances, from the f32 arithmetic of `w −= k·m/(√v·a + ε)` against the f64 reference
        /// (u = 2⁻²⁴): m within 4u of its two terms' magnitudes, v within 6u of its terms',
        /// and w within 2u of itself plus the error of the update: 4u of it, and what the
        /// errors in m and √v make of it.
        #[test]
        fn adam_matches_reference(
            (cfg, step) in adam_config(),
            (w, g, m, v, off) in len_strategy().prop_flat_map(|n| (
                prop::collection::vec(param(), n + 3),
                prop::collection::vec(param(), n + 3),
                prop::collection::vec(param(), n + 3),
                prop::collection::vec(second_moment(), n + 3),
                0usize..4,
            )),
        ) {
            let n = w.len() - 3;
            let (w, g, m, v) = (&w[off..off + n], &g[..n], &m[3 - off.min(3)..][..n], &v[..n]);
            let (mut wr, mut mr, mut vr) = (w.to_vec(), m.to_vec(), v.to_vec());
            reference::adam_step(&cfg, &mut AdamState::from_moments(&mut mr[..], &mut vr[..]), step, &mut wr, g).unwrap();
            let u = EPS;
            let (c1, c2) = cfg.bias_corrections(step);
            let (lr, wd, b1, b2) = (cfg.lr as f64, cfg.weight_decay as f64, cfg.beta1 as f64, cfg.beta2 as f64);
            let (k, a) = match cfg.epsilon {
                AdamEpsilon::PyTorch => (lr / c1, 1.0 / c2.sqrt()),
                AdamEpsilon::Keras => (lr * c2.sqrt() / c1, 1.0),
            };
            on_every_isa(|isa| {
                let (mut wg, mut mg, mut vg) = (w.to_vec(), m.to_vec(), v.to_vec());
                adam_step(&cfg, &mut AdamState::from_moments(&mut mg[..], &mut vg[..]), step, &mut wg, g).unwrap();
                for i in 0..n {
                    let (wi, gi, mi, vi) = (w[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64);
                    let decay = if cfg.decay == WeightDecay::L2 { wd * wi } else { 0.0 };
                    let gterm = gi.abs() + decay.abs();
                    let tol_m = 4.0 * u * (b1 * mi.abs() + (1.0 - b1) * gterm);
                    let tol_v = 6.0 * u * (b2 * vi + (1.0 - b2) * gterm * gterm);
                    check_close(&format!("{isa} m[{i}]"), mg[i], mr[i], tol_m)?;
                    check_close(&format!("{isa} v[{i}]"), vg[i], vr[i], tol_v)?;
                    if vr[i].is_infinite() && v[i].is_finite() && g[i].is_finite() {
                        // v overflowed f32 (|g| ≳ 1e19): the reference's update still uses its
                        // f64 v, the kernel's uses the stored ∞ and leaves w alone.
                        continue;
                    }
                    let (m1, v1) = (mr[i] as f64, (vr[i] as f64).max(0.0));
                    let den = v1.sqrt() * a + cfg.eps as f64;
                    let update = k * m1 / den;
                    // The kernel's moments are f32: a subnormal one is off by up to half a step of
                    // the subnormal grid (2⁻¹⁵⁰) before it enters the update, the reference's f64
                    // moments are not.
                    let sub = 2f64.powi(-149);
                    let dden = a * ((tol_v + sub).sqrt() + 2.0 * u * v1.sqrt()) + u * den;
                    let tol_w = 2.0 * u * (wr[i] as f64).abs()
                        + 2.0 * u * (lr * wd * wi).abs()
                        + k * (tol_m + sub + 4.0 * u * m1.abs()) / den
                        + k * m1.abs() * dden / (den * den)
                        + 4.0 * u * update.abs();
                    check_close(&format!("{isa} w[{i}]"), wg[i], wr[i], if tol_w.is_nan() { 0.0 } else { tol_w })?;
                }
                Ok(())
            })?;
        }

        /// SGD: b within 3u of its terms' magnitudes, w within 2u of itself plus lr times b's error.
        #[test]
        fn sgd_matches_reference(
            lr in 0.0f32..0.5, momentum in 0.0f32..0.99, wd in prop_oneof![Just(0.0f32), 0.0f32..0.1],
            (w, g, b) in len_strategy().prop_flat_map(|n| (
                prop::collection::vec(param(), n),
                prop::collection::vec(param(), n),
                prop::collection::vec(param(), n),
            )),
        ) {
            let cfg = SgdConfig { lr, momentum, weight_decay: wd };
            let (mut wr, mut br) = (w.clone(), b.clone());
            reference::sgd_step(&cfg, &mut SgdState::from_buffer(&mut br[..]), &mut wr, &g).unwrap();
            on_every_isa(|isa| {
                let (mut wg, mut bg) = (w.clone(), b.clone());
                sgd_step(&cfg, &mut SgdState::from_buffer(&mut bg[..]), &mut wg, &g).unwrap();
                for i in 0..w.len() {
                    let terms = (momentum as f64 * b[i] as f64).abs() + (g[i] as f64).abs() + (wd as f64 * w[i] as f64).abs();
                    let tol_b = 3.0 * EPS * terms;
                    check_close(&format!("{isa} buf[{i}]"), bg[i], br[i], tol_b)?;
                    let tol_w = 2.0 * EPS * (wr[i] as f64).abs() + lr as f64 * (tol_b + 2.0 * EPS * (br[i] as f64).abs());
                    check_close(&format!("{isa} w[{i}]"), wg[i], wr[i], if tol_w.is_nan() { 0.0 } else { tol_w })?;
                }
                Ok(())
            })?;
        }

        /// The norm: squares summed in f32 blocks of 16 per lane, then f64: relative 32u.
        /// Clipping scales by max_norm/norm rounded to f32: 2 roundings, 1 ulp of each value.
        #[test]
        fn global_norm_and_clipping_match_reference(
            parts in prop::collection::vec(len_strategy().prop_flat_map(|n| prop::collection::vec(sum_value(), n)), 0..4),
            max_norm in prop_oneof![0.001f32..10.0, 10.0f32..1000.0],
        ) {
            let refs: Vec<&[f32]> = parts.iter().map(|p| &p[..]).collect();
            let want = reference::global_norm(&refs).unwrap();
            let mut clipped_ref = parts.clone();
            {
                let mut r: Vec<&mut [f32]> = clipped_ref.iter_mut().map(|p| &mut p[..]).collect();
                reference::clip_global_norm(&mut r, max_norm).unwrap();
            }
            on_every_isa(|isa| {
                let got = global_norm(&refs).unwrap();
                check_close(&format!("{isa} norm"), got, want, 32.0 * EPS * (want as f64).abs())?;
                let mut clipped = parts.clone();
                let mut r: Vec<&mut [f32]> = clipped.iter_mut().map(|p| &mut p[..]).collect();
                let n = clip_global_norm(&mut r, max_norm).unwrap();
                check_close(&format!("{isa} clip norm"), n, want, 32.0 * EPS * (want as f64).abs())?;
                for (p, (a, b)) in clipped.iter().zip(&clipped_ref).enumerate() {
                    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
                        // The two norms differ by up to 32u, which the scale inherits; near the
                        // threshold they may even fall on either side of max_norm.
                        let scale_err = 64.0 * EPS * (x as f64).abs().max((y as f64).abs());
                        check_close(&format!("{isa} clipped[{p}][{i}]"), x, y, 4.0 * EPS * (y as f64).abs() + scale_err)?;
                    }
                }
                Ok(())
            })?;
        }
    }

    /// One step of `adam_step` on `isa` on `ours` and of the reference on `theirs`, from the
    /// state each holds.
    fn adam_beside_reference(
        cfg: &AdamConfig,
        isa: Isa,
        step: u64,
        g: &[f32],
        ours: (&mut [f32], &mut [f32], &mut [f32]),
        theirs: (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let (wr, mr, vr) = theirs;
        reference::adam_step(cfg, &mut AdamState::from_moments(mr, vr), step, wr, g).unwrap();
        let (w, m, v) = ours;
        with_isa(isa, || {
            adam_step(cfg, &mut AdamState::from_moments(m, v), step, w, g).unwrap()
        })
        .unwrap();
    }

    /// Moments deep in the subnormal range (dead units: zero or tiny gradients) take the
    /// scaled path; each step, from the reference's state, must match the reference's step
    /// to within one subnormal step (2⁻¹⁴⁹, the double rounding into the subnormal grid)
    /// plus 4u of the value.
    #[test]
    fn subnormal_moments_follow_the_reference_as_they_decay() {
        let n = 53;
        for cfg in [AdamConfig::default(), AdamConfig::keras(), AdamConfig::adamw()] {
            for isa in nnkern::testing::test_isas() {
                let mut w: Vec<f32> = (0..n).map(|i| (i as f32 - 20.0) * 0.01).collect();
                let g: Vec<f32> = (0..n)
                    .map(|i| if i % 3 == 0 { 0.0 } else { (i as f32) * 1e-30 })
                    .collect();
                let mut m: Vec<f32> = (0..n).map(|i| f32::from_bits(0x0070_0000 - 9000 * i as u32)).collect();
                let mut v: Vec<f32> = (0..n).map(|i| f32::from_bits(0x0040_0000 + 7777 * i as u32)).collect();
                for step in 1..200 {
                    let (mut wr, mut mr, mut vr) = (w.clone(), m.clone(), v.clone());
                    adam_beside_reference(
                        &cfg,
                        isa,
                        step,
                        &g,
                        (&mut w, &mut m, &mut v),
                        (&mut wr, &mut mr, &mut vr),
                    );
                    for i in 0..n {
                        let sub = 2f64.powi(-149);
                        assert!(
                            (m[i] as f64 - mr[i] as f64).abs() <= sub + 4.0 * EPS * (mr[i] as f64).abs(),
                            "{isa} step {step} m[{i}]: {:e} vs {:e}",
                            m[i],
                            mr[i]
                        );
                        assert!(
                            (v[i] as f64 - vr[i] as f64).abs() <= sub + 4.0 * EPS * (vr[i] as f64).abs(),
                            "{isa} step {step} v[{i}]: {:e} vs {:e}",
                            v[i],
                            vr[i]
                        );
                        assert!(
                            (w[i] as f64 - wr[i] as f64).abs() <= 4.0 * EPS * (wr[i] as f64).abs() + 1e-12,
                            "{isa} step {step} w[{i}]: {:e} vs {:e}",
                            w[i],
                            wr[i]
                        );
                    }
                    (w, m, v) = (wr, mr, vr);
                }
                // The zero-gradient lanes decayed through the subnormal range.
                assert!(m.iter().step_by(3).all(|&x| x.abs() < f32::MIN_POSITIVE));
            }
        }
    }

    /// Steps whose quotient `k/(√v·a + ε)` would leave f32's normal range: a tiny step over a
    /// huge second moment (the quotient would be subnormal, keeping a few bits), a large step
    /// over a tiny ε with a zero moment (it would overflow, and 0·∞ is NaN), a subnormal ε.
    /// Every weight within 8u of the reference's.
    #[test]
    fn steps_at_the_ends_of_the_range_keep_the_update_exact() {
        let g = [1e20f32, -3e19, 1e10, 1e-3, 0.0, -2.5, 7e-30, 0.0, 1e-20];
        let cases = [(1e-25f32, 1e-8f32), (4.0, 1e-38), (0.01, 1e-40), (1e-20, 1e-38)];
        for (lr, eps) in cases {
            for cfg in [AdamConfig::default(), AdamConfig::keras()] {
                let cfg = AdamConfig { lr, eps, ..cfg };
                for isa in nnkern::testing::test_isas() {
                    let (mut w, mut m, mut v) = ([0.0f32; 9], [0.0f32; 9], [0.0f32; 9]);
                    let (mut wr, mut mr, mut vr) = (w, m, v);
                    adam_beside_reference(&cfg, isa, 1, &g, (&mut w, &mut m, &mut v), (&mut wr, &mut mr, &mut vr));
                    for i in 0..g.len() {
                        assert!(
                            (w[i] as f64 - wr[i] as f64).abs() <= 8.0 * EPS * (wr[i] as f64).abs(),
                            "{isa} lr {lr:e} eps {eps:e} w[{i}]: {:e} vs {:e}",
                            w[i],
                            wr[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_gradients_fall_back_to_f64_sums() {
        let big = [1e20f32, 1e20];
        assert!((global_norm(&[&big]).unwrap() as f64 - 1.414_213_6e20).abs() < 1e14);
        let tiny = [1e-25f32; 4];
        assert!((global_norm(&[&tiny]).unwrap() as f64 - 2e-25).abs() < 1e-31);
        assert!(global_norm(&[&[f32::INFINITY, 1.0]]).unwrap().is_infinite());
        assert!(global_norm(&[]).unwrap() == 0.0);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut w = [0.0f32; 3];
        let (mut m, mut v) = ([0.0f32; 3], [0.0f32; 3]);
        assert!(adam_step(
            &AdamConfig::default(),
            &mut AdamState::from_moments(&mut m[..], &mut v[..]),
            1,
            &mut w,
            &[0.0; 2]
        )
        .is_err());
        assert!(adam_step(
            &AdamConfig::default(),
            &mut AdamState::from_moments(&mut m[..], &mut v[..]),
            0,
            &mut w,
            &[0.0; 3]
        )
        .is_err());
        let mut b = [0.0f32; 2];
        assert!(sgd_step(
            &SgdConfig::default(),
            &mut SgdState::from_buffer(&mut b[..]),
            &mut w,
            &[0.0; 3]
        )
        .is_err());
        assert!(clip_global_norm(&mut [], -1.0).is_err());
    }
}

mod metrics {
    use super::*;
    use nnkern::{argmax_rows, count_correct};

    /// Few distinct values, so rows have ties; NaN and ±∞ mixed in.
    fn tie_value() -> impl Strategy<Value = f32> {
        prop_oneof![
            20 => (-3i32..3).prop_map(|v| v as f32),
            1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0]),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// Argmax is exact: same index as the reference (first on ties, first NaN wins).
        #[test]
        fn argmax_and_count_match_reference(
            (l, x, labels) in prop_oneof![layout_strategy(), (300usize..600, 1usize..12).prop_map(|(rows, cols)| Layout { rows, cols, pad: 1, off: 1, col_major: false })]
                .prop_map(|mut l| { l.cols = l.cols.max(1); l })
                .prop_flat_map(|l| (
                    Just(l),
                    prop::collection::vec(tie_value(), l.len()),
                    prop::collection::vec(0..l.cols as u32, l.rows),
                )),
        ) {
            let xv = l.view(&x);
            let mut want = vec![0u32; l.rows];
            reference::argmax_rows(xv, &mut want).unwrap();
            let want_count = reference::count_correct(xv, &labels).unwrap();
            on_every_isa(|isa| {
                let mut got = vec![u32::MAX; l.rows];
                argmax_rows(xv, &mut got).unwrap();
                prop_assert_eq!(&got, &want, "{}", isa);
                prop_assert_eq!(count_correct(xv, &labels).unwrap(), want_count, "{}", isa);
                Ok(())
            })?;
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = [0.0f32; 6];
        let xv = nnkern::MatRef::new(&x, 2, 3).unwrap();
        assert!(argmax_rows(xv, &mut [0; 3]).is_err());
        assert!(count_correct(xv, &[0]).is_err());
        assert!(argmax_rows(nnkern::MatRef::new(&x[..0], 2, 0).unwrap(), &mut [0; 2]).is_err());
        assert_eq!(
            count_correct(nnkern::MatRef::new(&x[..0], 0, 3).unwrap(), &[]).unwrap(),
            0
        );
    }
}
