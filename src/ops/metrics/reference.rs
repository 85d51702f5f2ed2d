//! The naive argmax.

use super::check_rows;
use crate::error::Result;
use crate::matrix::MatRef;

fn argmax_row(x: &MatRef<'_, f32>, i: usize) -> u32 {
    let mut best = 0;
    for j in 1..x.cols() {
        let (v, b) = (x[(i, j)], x[(i, best)]);
        if !b.is_nan() && (v > b || v.is_nan()) {
            best = j;
        }
    }
    best as u32
}

/// Row argmax (first on ties, NaN wins).
pub fn argmax_rows(x: MatRef<'_, f32>, out: &mut [u32]) -> Result<()> {
    check_rows(&x, "out", out.len())?;
    for (i, o) in out.iter_mut().enumerate() {
        *o = argmax_row(&x, i);
    }
    Ok(())
}

/// Rows whose argmax equals the label.
pub fn count_correct(logits: MatRef<'_, f32>, labels: &[u32]) -> Result<usize> {
    check_rows(&logits, "labels", labels.len())?;
    Ok(labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| argmax_row(&logits, i) == l)
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_nan() {
        let x = [1.0f32, 3.0, 3.0, 0.0, f32::NAN, 5.0, -1.0, -2.0, -3.0];
        let mut out = [9u32; 3];
        argmax_rows(MatRef::new(&x, 3, 3).unwrap(), &mut out).unwrap();
        assert_eq!(out, [1, 1, 0]);
        assert_eq!(count_correct(MatRef::new(&x, 3, 3).unwrap(), &[1, 2, 0]).unwrap(), 2);
        assert!(count_correct(MatRef::new(&x, 3, 3).unwrap(), &[1, 2]).is_err());
    }
}
