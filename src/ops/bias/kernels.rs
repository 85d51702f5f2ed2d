//! SIMD bias add, bias + activation (the dense layer's forward epilogue),
//! bias gradient, and activation backward fused with the bias gradient.
//!
//! Fast paths need rows with unit column stride (any row stride, so
//! sub-matrices work); other layouts go to the reference. Column sums keep
//! four vectors of column accumulators in registers and walk down the rows,
//! so each element is read once; they are summed in `f32` in row order.
//!
//! Speed against a copy of the same bytes: `docs/MEASUREMENTS.md`.

use crate::matrix::{MatMut, MatRef};
use crate::ops::activation::kernels::{with_act, Act};
use crate::ops::activation::Activation;
use crate::simd::vector::{dispatch, Simd};

/// `row[j] += b[j]`, or with `A`: `row[j] += b[j]; y[j] = f(row[j])`.
///
/// # Safety
/// `x`, `b` (and `y` when given) valid for `n` elements; `y` does not overlap `x` or `b`.
#[inline(always)]
unsafe fn add_row<S: Simd, A: Act>(s: S, x: *mut f32, b: *const f32, y: Option<*mut f32>, n: usize) {
    let l = S::LANES;
    let z = s.splat(0.0);
    // A partial first vector up to the alignment of the output that is
    // written last, so the full-vector stores there do not split cache lines
    // (rows of 500 floats start at every 16-byte offset).
    let mut j = crate::ops::activation::kernels::align_head::<S>(y.unwrap_or(x), n);
    // SAFETY: every access below stays inside the first n elements of x, b and y;
    // partial accesses touch only the elements they are given.
    unsafe {
        if j > 0 {
            let v = s.add(s.load_partial(x, j, z), s.load_partial(b, j, z));
            s.store_partial(x, j, v);
            if let Some(y) = y {
                s.store_partial(y, j, A::forward(s, v));
            }
        }
        while j + l <= n {
            let v = s.add(s.load(x.add(j)), s.load(b.add(j)));
            s.store(x.add(j), v);
            if let Some(y) = y {
                s.store(y.add(j), A::forward(s, v));
            }
            j += l;
        }
        if j < n {
            let m = n - j;
            let v = s.add(s.load_partial(x.add(j), m, z), s.load_partial(b.add(j), m, z));
            s.store_partial(x.add(j), m, v);
            if let Some(y) = y {
                s.store_partial(y.add(j), m, A::forward(s, v));
            }
        }
    }
}

/// Rows of a row-contiguous matrix: `ptr`, row count and row stride.
#[derive(Clone, Copy)]
pub(crate) struct Rows<P> {
    pub(crate) ptr: P,
    pub(crate) rows: usize,
    pub(crate) stride: usize,
}

/// Whether each row is contiguous (the fast paths' layout).
pub(crate) fn contiguous_rows(cols: usize, col_stride: usize) -> bool {
    cols <= 1 || col_stride == 1
}

/// The rows of `m`; only called when [`contiguous_rows`] holds.
pub(crate) fn rows_mut(m: MatMut<'_, f32>) -> Rows<&mut [f32]> {
    let (rows, stride) = (m.rows(), m.row_stride());
    Rows {
        ptr: m.into_mut_slice(),
        rows,
        stride,
    }
}

/// The rows of `m` when each is contiguous (column stride 1, or one column).
pub(crate) fn rows_ref<'a>(m: &MatRef<'a, f32>) -> Option<Rows<&'a [f32]>> {
    contiguous_rows(m.cols(), m.col_stride()).then(|| Rows {
        ptr: m.as_slice(),
        rows: m.rows(),
        stride: m.row_stride(),
    })
}

/// Longest row handled as one flat stream (the periodic bias lives on the stack).
const FLAT_MAX_COLS: usize = 1024;

/// A packed matrix (`stride == cols`) as one stream of `total` elements:
/// `x += bias[p mod cols]` and with `A`, `y = f(x)` (used for the plain bias
/// add: 83% of a copy at 32×500 against 65% row by row). The bias is read from
/// `b2[k] = bias[k mod cols]` (`cols + LANES` entries) at the running offset,
/// so there is no per-row tail and, after a partial first vector, every
/// store is aligned.
///
/// # Safety
/// `x` (and `y`) valid for `total` elements, `b2` for `cols + LANES`; `y` does not overlap `x`.
#[inline(always)]
unsafe fn add_flat<S: Simd, A: Act>(s: S, x: *mut f32, b2: *const f32, y: Option<*mut f32>, total: usize, cols: usize) {
    let l = S::LANES;
    let z = s.splat(0.0);
    let mut p = crate::ops::activation::kernels::align_head::<S>(y.unwrap_or(x), total);
    let mut o = 0;
    // SAFETY: every access stays inside the first `total` elements of x and y and inside b2.
    unsafe {
        if p > 0 {
            let v = s.add(s.load_partial(x, p, z), s.load_partial(b2, p, z));
            s.store_partial(x, p, v);
            if let Some(y) = y {
                s.store_partial(y, p, A::forward(s, v));
            }
            o = p % cols;
        }
        while p + l <= total {
            let v = s.add(s.load(x.add(p)), s.load(b2.add(o)));
            s.store(x.add(p), v);
            if let Some(y) = y {
                s.store(y.add(p), A::forward(s, v));
            }
            o += l;
            if o >= cols {
                o -= cols;
                if o >= cols {
                    o %= cols;
                }
            }
            p += l;
        }
        if p < total {
            let m = total - p;
            let v = s.add(s.load_partial(x.add(p), m, z), s.load_partial(b2.add(o), m, z));
            s.store_partial(x.add(p), m, v);
            if let Some(y) = y {
                s.store_partial(y.add(p), m, A::forward(s, v));
            }
        }
    }
}

/// `bias` repeated to `cols + LANES` entries, when it fits the stack buffer.
#[inline(always)]
fn periodic_bias<S: Simd>(bias: &[f32], buf: &mut [f32; FLAT_MAX_COLS + 16]) -> bool {
    let cols = bias.len();
    if cols == 0 || cols > FLAT_MAX_COLS || S::LANES > 16 {
        return false;
    }
    buf[..cols].copy_from_slice(bias);
    for k in cols..cols + S::LANES {
        buf[k] = buf[k - cols];
    }
    true
}

#[inline(always)]
fn bias_add_kernel<S: Simd>(s: S, x: Rows<&mut [f32]>, bias: &[f32]) {
    let n = bias.len();
    let p = x.ptr.as_mut_ptr();
    let mut buf = [0.0f32; FLAT_MAX_COLS + 16];
    if (x.stride == n || x.rows <= 1) && periodic_bias::<S>(bias, &mut buf) {
        // SAFETY: a packed matrix: rows·n elements from p lie inside the slice (checked by the
        // caller's view); buf holds n + LANES entries.
        unsafe { add_flat::<S, crate::ops::activation::kernels::Identity>(s, p, buf.as_ptr(), None, x.rows * n, n) };
        return;
    }
    for i in 0..x.rows {
        // SAFETY: the caller checked that row i (i·stride .. i·stride + n) lies inside the slice.
        unsafe {
            add_row::<S, crate::ops::activation::kernels::Identity>(s, p.add(i * x.stride), bias.as_ptr(), None, n)
        };
    }
}
dispatch!(pub(crate) fn bias_add(x: Rows<&mut [f32]>, bias: &[f32]) => bias_add_kernel);

#[inline(always)]
fn bias_add_activation_kernel<S: Simd>(s: S, act: Activation, x: Rows<&mut [f32]>, bias: &[f32], y: Rows<&mut [f32]>) {
    let n = bias.len();
    let (xp, yp) = (x.ptr.as_mut_ptr(), y.ptr.as_mut_ptr());
    // Row by row here: the flat stream was measured slower with the second
    // output (bias + ReLU, `cargo bench --bench elementwise`).
    with_act!(act, A => {
        for i in 0..x.rows {
            // SAFETY: the caller checked both rows i lie inside their slices; `x` and `y` are
            // distinct `&mut` borrows, so they do not overlap.
            unsafe { add_row::<S, A>(s, xp.add(i * x.stride), bias.as_ptr(), Some(yp.add(i * y.stride)), n) };
        }
    })
}
dispatch!(pub(crate) fn bias_add_activation(act: Activation, x: Rows<&mut [f32]>, bias: &[f32], y: Rows<&mut [f32]>) => bias_add_activation_kernel);

/// Loads `g[i, j .. j + m]` (`m <= LANES`); with `x`, applies the backward
/// `g = g·f'(x)` and stores it back. Returns the (new) values, zero past `m`.
///
/// # Safety
/// `(i, j .. j + m)` lies inside `g` (and `x`); `g` is writable when `x` is given.
#[inline(always)]
unsafe fn step<S: Simd, A: Act>(
    s: S,
    g: *mut f32,
    gs: usize,
    x: Option<(*const f32, usize)>,
    i: usize,
    j: usize,
    m: usize,
) -> S::V {
    let l = S::LANES;
    let z = s.splat(0.0);
    // SAFETY: guaranteed by the caller; partial accesses touch only the first m lanes.
    unsafe {
        let gp = g.add(i * gs + j);
        match x {
            None if m == l => s.load(gp),
            None => s.load_partial(gp, m, z),
            Some((xp, xs)) => {
                let xp = xp.add(i * xs + j);
                if m == l {
                    let v = A::backward(s, s.load(xp), s.load(gp));
                    s.store(gp, v);
                    v
                } else {
                    let v = A::backward(s, s.load_partial(xp, m, z), s.load_partial(gp, m, z));
                    s.store_partial(gp, m, v);
                    v
                }
            }
        }
    }
}

/// Column sums of `rows` rows of `n` columns, with an optional in-place
/// activation backward first: `g = g·f'(x)` (`A` = `Identity` and no `x`
/// for a plain bias gradient).
///
/// # Safety
/// Row `i` of `g` is `g + i·gs .. + n`, of `x` is `x + i·xs .. + n`, all valid
/// (`g` writable when `write_g`); `out` holds `n`; `x` does not overlap `g`.
#[inline(always)]
unsafe fn col_sums<S: Simd, A: Act>(
    s: S,
    g: *mut f32,
    gs: usize,
    x: Option<(*const f32, usize)>,
    rows: usize,
    n: usize,
    out: &mut [f32],
) {
    let l = S::LANES;
    let z = s.splat(0.0);
    let mut j = 0;
    while j + 4 * l <= n {
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        for i in 0..rows {
            // SAFETY: (i, j .. j + 4·LANES) lies inside both matrices, by this function's contract.
            unsafe {
                a0 = s.add(a0, step::<S, A>(s, g, gs, x, i, j, l));
                a1 = s.add(a1, step::<S, A>(s, g, gs, x, i, j + l, l));
                a2 = s.add(a2, step::<S, A>(s, g, gs, x, i, j + 2 * l, l));
                a3 = s.add(a3, step::<S, A>(s, g, gs, x, i, j + 3 * l, l));
            }
        }
        // SAFETY: j + 4·LANES <= n = out.len().
        unsafe {
            let o = out.as_mut_ptr().add(j);
            s.store(o, a0);
            s.store(o.add(l), a1);
            s.store(o.add(2 * l), a2);
            s.store(o.add(3 * l), a3);
        }
        j += 4 * l;
    }
    while j < n {
        let m = (n - j).min(l);
        let mut a = z;
        for i in 0..rows {
            // SAFETY: (i, j .. j + m) lies inside both matrices, by this function's contract.
            a = s.add(a, unsafe { step::<S, A>(s, g, gs, x, i, j, m) });
        }
        // SAFETY: j + m <= n = out.len().
        unsafe {
            let o = out.as_mut_ptr().add(j);
            if m == l {
                s.store(o, a);
            } else {
                s.store_partial(o, m, a);
            }
        }
        j += m;
    }
}

#[inline(always)]
fn bias_grad_kernel<S: Simd>(s: S, dy: Rows<&[f32]>, dbias: &mut [f32]) {
    let n = dbias.len();
    // SAFETY: the caller checked every row of `dy` lies inside the slice; nothing is written to
    // it (no backward), so casting to *mut is never used for a store.
    unsafe {
        col_sums::<S, crate::ops::activation::kernels::Identity>(
            s,
            dy.ptr.as_ptr() as *mut f32,
            dy.stride,
            None,
            dy.rows,
            n,
            dbias,
        )
    }
}
dispatch!(pub(crate) fn bias_grad(dy: Rows<&[f32]>, dbias: &mut [f32]) => bias_grad_kernel);

#[inline(always)]
fn backward_bias_grad_kernel<S: Simd>(
    s: S,
    act: Activation,
    x: Rows<&[f32]>,
    grad: Rows<&mut [f32]>,
    dbias: &mut [f32],
) {
    let n = dbias.len();
    let g = grad.ptr.as_mut_ptr();
    let xp = x.ptr.as_ptr();
    // SAFETY: the caller checked every row of `x` and `grad` lies inside its slice; `grad` is a
    // `&mut` borrow, so it overlaps neither `x` nor `dbias`.
    with_act!(act, A => unsafe { col_sums::<S, A>(s, g, grad.stride, Some((xp, x.stride)), x.rows, n, dbias) })
}
dispatch!(pub(crate) fn backward_bias_grad(act: Activation, x: Rows<&[f32]>, grad: Rows<&mut [f32]>, dbias: &mut [f32]) => backward_bias_grad_kernel);
