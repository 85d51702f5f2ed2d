//! The libraries under test, as this build made them.
//!
//! `cargo test` builds an integration test's library only when it can link
//! it into the test (an rlib); this package's library is a cdylib and a
//! staticlib, so the tests build it themselves, with the profile they were
//! built with, and use the files cargo reports (never a stale copy left in
//! `target/<profile>` by an older build).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The folder holding this build's `libnnkern.so` and `libnnkern.a`.
pub fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "nnkern-clib", "--lib", "--message-format=json"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build -p nnkern-clib failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One JSON object a line; the artifact line of this package names the files.
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout
            .lines()
            .find(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("nnkern-clib"))
            .expect("no artifact reported for nnkern-clib");
        let at = line
            .find("libnnkern.so\"")
            .expect("no libnnkern.so among the artifacts");
        let start = line[..at].rfind('"').unwrap() + 1;
        PathBuf::from(&line[start..at])
    })
    .clone()
}
