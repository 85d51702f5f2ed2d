//! Every `.ptx` file in the project's `kernels/` parses, and every kernel in
//! them is launched by the CPU tests of the kernels (`tests/ptx_kernels.rs`,
//! `tests/ptx_sm90.rs`),
//! so a new kernel cannot miss the CI check by accident.

use std::path::PathBuf;

fn project_root() -> PathBuf {
    let from_manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // test binaries may run elsewhere, from the repository root
    for root in [from_manifest, PathBuf::from(".")] {
        if root.join("kernels").is_dir() && root.join("tests").is_dir() {
            return root;
        }
    }
    panic!("kernels/ and tests/ not found next to ptx-exec/ or in the current directory");
}

#[test]
fn every_project_kernel_parses_and_is_launched_by_the_cpu_tests() {
    let root = project_root();
    let mut launches = String::new();
    for f in ["tests/ptx_kernels.rs", "tests/ptx_sm90.rs"] {
        launches += &std::fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kernels/*.ptx");
    let mut kernels = 0;
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let m = nnkern_ptx_exec::Module::parse(&src).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for name in m.kernel_names() {
            assert!(m.kernel(name).unwrap().instruction_count() > 1, "{name} is empty");
            assert!(
                launches.contains(&format!("\"{name}\"")),
                "{}: kernel `{name}` is never launched in tests/ptx_kernels.rs or tests/ptx_sm90.rs",
                f.display()
            );
            kernels += 1;
        }
    }
    assert!(kernels >= files.len());
}
