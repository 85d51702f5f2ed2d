//! Softmax over rows, log-softmax, and the fused softmax + cross-entropy
//! that gives the mean loss and `dlogits = (softmax − target) / batch` in
//! one pass.
//!
//! Rows are samples, columns are classes. Everything is computed with the
//! row maximum subtracted first, so logits of ±1e4 are fine.

pub(crate) mod kernels;
pub mod reference;

use crate::error::{Error, Result};
use crate::matrix::{MatMut, MatRef};
use crate::ops::bias::kernels::{contiguous_rows, rows_mut, rows_ref};
use crate::simd::active_isa;

/// The kernels' view of the targets, when their rows are contiguous.
fn targets_rows<'a>(t: &Targets<'a>) -> Option<kernels::Tgt<'a>> {
    match t {
        Targets::Labels(l) => Some(kernels::Tgt::Labels(l)),
        Targets::Soft(m) => rows_ref(m).map(kernels::Tgt::Soft),
    }
}

/// What the logits are scored against.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One class index per row, each `< classes`.
    Labels(&'a [u32]),
    /// A probability row per sample (soft targets, or one-hot), same shape as
    /// the logits. Rows are used as given (not renormalised).
    Soft(MatRef<'a, f32>),
}

/// Checks logits against targets (and an optional gradient output);
/// returns `(batch, classes)`.
pub fn check_xent(
    logits: &MatRef<'_, f32>,
    targets: &Targets<'_>,
    dlogits: Option<&MatMut<'_, f32>>,
) -> Result<(usize, usize)> {
    let (rows, cols) = logits.shape();
    if rows > 0 && cols == 0 {
        return Err(Error::invalid("logits", format!("{rows} rows with 0 classes")));
    }
    match targets {
        Targets::Labels(labels) => {
            if labels.len() != rows {
                return Err(Error::shape("labels", (labels.len(), 1), (rows, 1)));
            }
            if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= cols) {
                return Err(Error::LabelOutOfRange {
                    arg: "labels",
                    index,
                    label: label as u64,
                    classes: cols,
                });
            }
        }
        Targets::Soft(t) => {
            if t.shape() != (rows, cols) {
                return Err(Error::shape("targets", t.shape(), (rows, cols)));
            }
        }
    }
    if let Some(d) = dlogits {
        if d.shape() != (rows, cols) {
            return Err(Error::shape("dlogits", d.shape(), (rows, cols)));
        }
    }
    Ok((rows, cols))
}

pub(crate) fn check_same_shape(arg: &'static str, got: (usize, usize), expected: (usize, usize)) -> Result<()> {
    if got != expected {
        return Err(Error::shape(arg, got, expected));
    }
    Ok(())
}

/// `y = softmax(x)` row by row.
///
/// ```
/// use nnkern::{softmax, MatMut, MatRef};
/// let x = [0.0f32, 0.0, 1000.0, 1000.0];          // no overflow for large logits
/// let mut y = [0.0f32; 4];
/// softmax(MatRef::new(&x, 2, 2)?, MatMut::new(&mut y, 2, 2)?)?;
/// assert_eq!(y, [0.5; 4]);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn softmax(x: MatRef<'_, f32>, y: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    match rows_ref(&x) {
        Some(xr) if !x.is_empty() && contiguous_rows(y.cols(), y.col_stride()) => {
            kernels::softmax(active_isa(), xr, rows_mut(y), x.cols());
            Ok(())
        }
        _ => reference::softmax(x, y),
    }
}

/// `y = log(softmax(x))` row by row.
///
/// ```
/// use nnkern::{log_softmax, MatMut, MatRef};
/// let x = [1.0f32, 1.0];
/// let mut y = [0.0f32; 2];
/// log_softmax(MatRef::new(&x, 1, 2)?, MatMut::new(&mut y, 1, 2)?)?;
/// assert!((y[0] + std::f32::consts::LN_2).abs() < 1e-6);
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn log_softmax(x: MatRef<'_, f32>, y: MatMut<'_, f32>) -> Result<()> {
    check_same_shape("y", y.shape(), x.shape())?;
    match rows_ref(&x) {
        Some(xr) if !x.is_empty() && contiguous_rows(y.cols(), y.col_stride()) => {
            kernels::log_softmax(active_isa(), xr, rows_mut(y), x.cols());
            Ok(())
        }
        _ => reference::log_softmax(x, y),
    }
}

/// Mean cross-entropy of `softmax(logits)` against `targets` (0 for an empty batch).
///
/// ```
/// use nnkern::{softmax_xent_loss, MatRef, Targets};
/// let logits = [0.0f32; 4];                           // uniform over 4 classes
/// let loss = softmax_xent_loss(MatRef::new(&logits, 1, 4)?, Targets::Labels(&[2]))?;
/// assert!((loss - 4f32.ln()).abs() < 1e-6);
/// // Soft targets: one probability row per sample.
/// let soft = [0.25f32; 4];
/// let loss = softmax_xent_loss(MatRef::new(&logits, 1, 4)?, Targets::Soft(MatRef::new(&soft, 1, 4)?))?;
/// assert!((loss - 4f32.ln()).abs() < 1e-6);
/// assert!(softmax_xent_loss(MatRef::new(&logits, 1, 4)?, Targets::Labels(&[4])).is_err());
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn softmax_xent_loss(logits: MatRef<'_, f32>, targets: Targets<'_>) -> Result<f32> {
    let (rows, cols) = check_xent(&logits, &targets, None)?;
    if rows == 0 {
        return Ok(0.0);
    }
    match (rows_ref(&logits), targets_rows(&targets)) {
        (Some(x), Some(t)) => Ok((kernels::xent(active_isa(), x, t, None, cols) / rows as f64) as f32),
        _ => reference::softmax_xent_loss(logits, targets),
    }
}

/// Fused forward and backward: returns the mean loss and writes
/// `dlogits = (softmax(logits) − target) / batch`.
///
/// ```
/// use nnkern::{softmax_xent, MatRef, MatMut, Targets};
/// let logits = [2.0f32, 0.0, 0.0, 2.0];
/// let mut d = [0.0f32; 4];
/// let loss = softmax_xent(MatRef::new(&logits, 2, 2)?, Targets::Labels(&[0, 1]), MatMut::new(&mut d, 2, 2)?)?;
/// assert!((loss - 0.126_928).abs() < 1e-5);
/// assert!((d[0] + d[1]).abs() < 1e-7);   // each gradient row sums to zero
/// # Ok::<(), nnkern::Error>(())
/// ```
pub fn softmax_xent(logits: MatRef<'_, f32>, targets: Targets<'_>, dlogits: MatMut<'_, f32>) -> Result<f32> {
    let (rows, cols) = check_xent(&logits, &targets, Some(&dlogits))?;
    if rows == 0 {
        return Ok(0.0);
    }
    match (rows_ref(&logits), targets_rows(&targets)) {
        (Some(x), Some(t)) if contiguous_rows(dlogits.cols(), dlogits.col_stride()) => {
            let total = kernels::xent(active_isa(), x, t, Some(rows_mut(dlogits)), cols);
            Ok((total / rows as f64) as f32)
        }
        _ => reference::softmax_xent(logits, targets, dlogits),
    }
}
