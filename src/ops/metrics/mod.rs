//! Row argmax and classification accuracy.

pub mod reference;

use crate::error::Result;
use crate::matrix::MatRef;

/// `out[i]` = index of the largest element of row `i` (the first one on
/// ties; a NaN counts as largest, as in NumPy). Rows must have ≥ 1 column.
pub fn argmax_rows(x: MatRef<'_, f32>, out: &mut [u32]) -> Result<()> {
    reference::argmax_rows(x, out)
}

/// How many rows of `logits` have their argmax equal to the label.
pub fn count_correct(logits: MatRef<'_, f32>, labels: &[u32]) -> Result<usize> {
    reference::count_correct(logits, labels)
}
