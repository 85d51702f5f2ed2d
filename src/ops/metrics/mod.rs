//! Row argmax and classification accuracy.

pub(crate) mod kernels;
pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::MatRef;
use crate::ops::bias::kernels::{rows_ref, Rows};
use crate::simd::active_isa;

/// Checks `len` against the rows of `x`, and that rows have a column to pick.
pub(crate) fn check_rows(x: &MatRef<'_, f32>, arg: &'static str, len: usize) -> Result<()> {
    if len != x.rows() {
        return Err(Error::shape(arg, (len, 1), (x.rows(), 1)));
    }
    if x.rows() > 0 && x.cols() == 0 {
        return Err(Error::invalid("x", "argmax of a row with no columns"));
    }
    if x.cols() > u32::MAX as usize {
        return Err(Error::invalid("x", "more columns than a u32 index holds"));
    }
    Ok(())
}

/// `out[i]` = index of the largest element of row `i` (the first one on
/// ties; a NaN counts as largest, as in NumPy). Rows must have ≥ 1 column.
///
/// ```
/// use nnkern::{argmax_rows, MatRef};
/// let x = [0.1f32, 0.7, 0.2, 5.0, 5.0, -1.0];
/// let mut out = [0u32; 2];
/// argmax_rows(MatRef::new(&x, 2, 3)?, &mut out)?;
/// assert_eq!(out, [1, 0]);                          // the first of equal maxima
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn argmax_rows(x: MatRef<'_, f32>, out: &mut [u32]) -> Result<()> {
    check_rows(&x, "out", out.len())?;
    match rows_ref(&x).filter(|_| x.cols() >= 1) {
        Some(rows) => {
            kernels::argmax(active_isa(), rows, x.cols(), out);
            Ok(())
        }
        None => reference::argmax_rows(x, out),
    }
}

/// How many rows of `logits` have their argmax equal to the label.
///
/// ```
/// use nnkern::{count_correct, MatRef};
/// let logits = [0.1f32, 0.9, 0.8, 0.2];
/// assert_eq!(count_correct(MatRef::new(&logits, 2, 2)?, &[1, 1])?, 1);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn count_correct(logits: MatRef<'_, f32>, labels: &[u32]) -> Result<usize> {
    check_rows(&logits, "labels", labels.len())?;
    let Some(rows) = rows_ref(&logits).filter(|_| logits.cols() >= 1) else {
        return reference::count_correct(logits, labels);
    };
    // Batches are small (the trainer's is 32 rows); a stack buffer avoids an allocation.
    let mut buf = [0u32; 256];
    let mut correct = 0;
    for (chunk, first) in labels.chunks(buf.len()).zip((0..).step_by(buf.len())) {
        let part = Rows {
            ptr: &rows.ptr[first * rows.stride..],
            rows: chunk.len(),
            stride: rows.stride,
        };
        let out = &mut buf[..chunk.len()];
        kernels::argmax(active_isa(), part, logits.cols(), out);
        correct += out.iter().zip(chunk).filter(|(a, b)| a == b).count();
    }
    Ok(correct)
}
