//! SIMD row argmax over rows with unit column stride (other layouts use the
//! reference): one vector pass for the row maximum and for any NaN, then a
//! scan for the first element equal to it (the row is in L1 by then).
//! NaN counts as largest and the first one wins, as in NumPy and the reference.

use crate::ops::bias::kernels::Rows;
use crate::simd::vector::{dispatch, Simd};

/// `(max, has_nan)` of `x[0..n]`, `n ≥ 1`.
///
/// # Safety
/// `x .. x + n` readable.
#[inline(always)]
unsafe fn row_max_nan<S: Simd>(s: S, x: *const f32, n: usize) -> (f32, bool) {
    let l = S::LANES;
    let ninf = s.splat(f32::NEG_INFINITY);
    let mut m = ninf;
    let mut nan = s.lt(ninf, ninf);
    let mut j = 0;
    while j < n {
        let cnt = (n - j).min(l);
        // SAFETY: cnt elements remain; a partial load touches only those.
        let v = unsafe {
            if cnt == l {
                s.load(x.add(j))
            } else {
                s.load_partial(x.add(j), cnt, ninf)
            }
        };
        nan = s.or_m(nan, s.is_nan(v));
        m = s.max(m, v);
        j += cnt;
    }
    (s.reduce_max(m), s.any(nan))
}

#[inline(always)]
fn argmax_kernel<S: Simd>(s: S, x: Rows<&[f32]>, cols: usize, out: &mut [u32]) {
    let p = x.ptr.as_ptr();
    for (i, o) in out.iter_mut().enumerate().take(x.rows) {
        // SAFETY: the caller checked row i (cols ≥ 1 elements) lies inside the slice.
        let row = unsafe { std::slice::from_raw_parts(p.add(i * x.stride), cols) };
        // SAFETY: as above.
        let (max, has_nan) = unsafe { row_max_nan(s, row.as_ptr(), cols) };
        let first = if has_nan {
            row.iter().position(|v| v.is_nan())
        } else {
            row.iter().position(|&v| v == max)
        };
        *o = first.unwrap_or(0) as u32;
    }
}
dispatch!(pub(crate) fn argmax(x: Rows<&[f32]>, cols: usize, out: &mut [u32]) => argmax_kernel);
