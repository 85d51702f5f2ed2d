//! `cargo run -p nnkern-ptxgen --example ptxgen` rewrites `kernels/*.ptx` from `kernels/src/`;
//! with `--check` it only reports the files that differ (exit status 1).

use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let files = match nnkern_ptxgen::generate(&nnkern_ptxgen::kernels_dir()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for (path, text) in files {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old == text {
            continue;
        }
        stale += 1;
        if check {
            eprintln!("{} differs from its template", path.display());
        } else if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            eprintln!("wrote {}", path.display());
        }
    }
    if check && stale > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
