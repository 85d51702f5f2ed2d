//! Metrics as JSON lines: one object per epoch, then one with the test score.
//!
//! ```text
//! {"epoch":1,"train_loss":0.31,"train_acc":0.91,"val_loss":0.19,"val_acc":0.94,"epoch_seconds":0.07}
//! …
//! {"test_loss":0.14,"test_acc":0.957,"train_seconds":0.7}
//! ```
//! `val_loss`/`val_acc` are `null` without a validation split. The file is
//! rewritten whole and atomically after every epoch, so it always holds
//! complete lines only.

use super::fsutil::write_atomic;
use super::{EpochMetrics, Score};
use crate::error::Result;
use serde_json::json;
use std::path::Path;

/// The JSON line of one epoch.
pub fn epoch_line(m: &EpochMetrics) -> String {
    json!({
        "epoch": m.epoch,
        "train_loss": m.train_loss,
        "train_acc": m.train_acc,
        "val_loss": m.val_loss,
        "val_acc": m.val_acc,
        "epoch_seconds": m.epoch_seconds,
    })
    .to_string()
}

/// The final JSON line. `train_seconds` is the sum of the epochs' times
/// (including epochs run before a resume).
pub fn final_line(test: &Score, train_seconds: f64) -> String {
    json!({
        "test_loss": test.loss,
        "test_acc": test.acc,
        "train_seconds": train_seconds,
    })
    .to_string()
}

/// The whole file: every epoch, then the final line when the run is done.
pub fn render(history: &[EpochMetrics], last: Option<(&Score, f64)>) -> String {
    let mut s = String::new();
    for m in history {
        s.push_str(&epoch_line(m));
        s.push('\n');
    }
    if let Some((test, secs)) = last {
        s.push_str(&final_line(test, secs));
        s.push('\n');
    }
    s
}

/// Writes [`render`]'s output to `path` atomically.
pub fn write(path: &Path, history: &[EpochMetrics], last: Option<(&Score, f64)>) -> Result<()> {
    write_atomic(path, render(history, last).as_bytes())
}
