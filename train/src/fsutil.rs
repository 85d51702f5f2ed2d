//! Writing output files so that a reader never sees half of one.

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Data {
        path: path.display().to_string(),
        what: format!("{what}: {e}"),
    }
}

/// The temporary name `path` is written under before the rename: a hidden
/// file in the same directory (a rename is atomic only within one file system).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: to a temporary file in the same
/// directory, flushed to disk (`fsync`), then renamed over `path`, and the
/// directory synced so the rename survives a crash. On any failure the
/// temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| io_err(path, "cannot create a temporary file beside it", e))?;
        f.write_all(bytes).map_err(|e| io_err(path, "cannot write", e))?;
        f.sync_all().map_err(|e| io_err(path, "cannot flush to disk", e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| io_err(path, "cannot rename the temporary file into place", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Best effort: some file systems refuse to open or sync a directory.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Checks, before any work starts, that `path` can be written: its directory
/// exists and a file can be created in it (the probe is removed again).
pub fn check_writable(path: &Path, option: &'static str) -> Result<()> {
    if path.is_dir() {
        return Err(Error::invalid(option, format!("{} is a directory", path.display())));
    }
    let tmp = temp_path(path);
    match File::create(&tmp) {
        Ok(_) => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => Err(Error::invalid(
            option,
            format!("{} cannot be written: {e}", path.display()),
        )),
    }
}
