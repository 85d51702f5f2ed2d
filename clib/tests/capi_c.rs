//! Compiles `examples/c/demo.c` with the system C compiler against
//! `include/nnkern.h` and the built library (shared, then static), runs it,
//! and compares every printed value with the same computation in Rust.
//! Also runs the README's Python ctypes snippet when `python3` exists.
//!
//! Skips (with a message) when no C compiler is installed.

use nnkern::{
    activation_backward, activation_forward, adam_step, gemm, softmax_xent, Activation, AdamConfig, AdamState, MatMut,
    MatRef, Targets,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn value(i: usize, salt: usize) -> f32 {
    ((i * 7 + salt * 3) % 11) as f32 * 0.25 - 1.25
}

fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| value(i, salt)).collect()
}

mod built;
use built::lib_dir;

/// The workspace root (include/, examples/, README.md).
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn expected() -> BTreeMap<String, Vec<f32>> {
    const M: usize = 3;
    const N: usize = 4;
    const K: usize = 5;
    let mut e = BTreeMap::new();
    let (a, b) = (values(M * K, 1), values(K * N, 2));
    let mut c = vec![0.0f32; M * N];
    let av = MatRef::new(&a, M, K).unwrap();
    let bv = MatRef::new(&b, K, N).unwrap();
    gemm(1.0, av, bv, 0.0, MatMut::new(&mut c, M, N).unwrap()).unwrap();
    e.insert("sgemm_row_nn".into(), c.clone());
    e.insert("nnkern_sgemm".into(), c.clone());
    let mut cc = vec![1.0f32; M * N];
    gemm(2.0, av, bv, 0.5, MatMut::col_major(&mut cc, M, N).unwrap()).unwrap();
    e.insert("sgemm_col_tt".into(), cc);
    let h: Vec<nnkern::bf16> = [1.0f32, 2.0, -1.0, 1.0]
        .iter()
        .map(|&x| nnkern::bf16::from_f32(x))
        .collect();
    let mut hc = vec![0.0f32; 4];
    let hv = MatRef::new(&h, 2, 2).unwrap();
    gemm(1.0, hv, hv, 0.0, MatMut::new(&mut hc, 2, 2).unwrap()).unwrap();
    e.insert("gemm_bf16".into(), hc);
    let (x, dy) = (values(6, 3), values(6, 4));
    let mut y = vec![0.0; 6];
    activation_forward(
        Activation::GeluTanh,
        MatRef::row_vector(&x).unwrap(),
        MatMut::row_vector(&mut y).unwrap(),
    )
    .unwrap();
    e.insert("gelu".into(), y);
    let mut dx = vec![0.0; 6];
    activation_backward(
        Activation::Sigmoid,
        MatRef::row_vector(&x).unwrap(),
        MatRef::row_vector(&dy).unwrap(),
        MatMut::row_vector(&mut dx).unwrap(),
    )
    .unwrap();
    e.insert("sigmoid_backward".into(), dx);
    let logits = values(6, 5);
    let mut dl = vec![0.0; 6];
    let loss = softmax_xent(
        MatRef::new(&logits, 2, 3).unwrap(),
        Targets::Labels(&[2, 0]),
        MatMut::new(&mut dl, 2, 3).unwrap(),
    )
    .unwrap();
    e.insert("xent_loss".into(), vec![loss]);
    e.insert("xent_dlogits".into(), dl);
    let cfg = AdamConfig {
        lr: 0.01,
        ..AdamConfig::adamw()
    };
    let (mut w, g) = (values(4, 6), values(4, 7));
    let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
    adam_step(
        &cfg,
        &mut AdamState::from_moments(&mut m[..], &mut v[..]),
        1,
        &mut w,
        &g,
    )
    .unwrap();
    e.insert("adamw_w".into(), w);
    e.insert("cblas_bad_lda_param".into(), vec![9.0]);
    e.insert("cblas_bad_lda_c_untouched".into(), vec![1.0]);
    e.insert("null_status".into(), vec![nnkern_capi::NNKERN_ERR_NULL_POINTER as f32]);
    e.insert("alias_status".into(), vec![nnkern_capi::NNKERN_ERR_ALIASING as f32]);
    e.insert(
        "bad_act_status".into(),
        vec![nnkern_capi::NNKERN_ERR_INVALID_ARGUMENT as f32],
    );
    e.insert(
        "negative_n_status".into(),
        vec![nnkern_capi::NNKERN_ERR_INVALID_ARGUMENT as f32],
    );
    e.insert("last_error_nonempty".into(), vec![1.0]);
    e
}

fn check_output(stdout: &str) {
    let want = expected();
    let mut seen = 0;
    for line in stdout.lines() {
        let mut parts = line.split_whitespace();
        let name = parts.next().unwrap();
        match name {
            "version" => assert_eq!(parts.next(), Some(env!("CARGO_PKG_VERSION"))),
            "isa" => assert!(parts.next().is_some_and(|s| s != "unknown")),
            _ => {
                let got: Vec<f32> = parts.map(|p| p.parse().unwrap()).collect();
                let w = want.get(name).unwrap_or_else(|| panic!("unexpected line {line}"));
                assert_eq!(got.len(), w.len(), "{name}");
                // Same kernels on the same inputs: equal up to the printed
                // precision (%.9g round-trips an f32 exactly).
                for (g, e) in got.iter().zip(w) {
                    assert!(
                        (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                        "{name}: C printed {got:?}, Rust gives {w:?}"
                    );
                }
                seen += 1;
            }
        }
    }
    assert_eq!(seen, want.len(), "C output:\n{stdout}");
}

fn compile_and_run(out: &Path, link: &[String]) {
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(out)
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join("examples/c/demo.c"))
        .args(link);
    let status = cmd.status().expect("run cc");
    assert!(status.success(), "cc failed: {cmd:?}");
    // Run with the rpath alone: cargo's LD_LIBRARY_PATH also names target/<profile>,
    // where an older `cargo build` may have left a libnnkern.so that would win.
    let run = Command::new(out).env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(
        run.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    check_output(&String::from_utf8(run.stdout).unwrap());
}

#[test]
fn c_program_against_shared_and_static_library() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (cc) on this machine");
        return;
    }
    let dir = lib_dir();
    let (so, a) = (dir.join("libnnkern.so"), dir.join("libnnkern.a"));
    assert!(
        so.is_file() && a.is_file(),
        "{} / {} not built",
        so.display(),
        a.display()
    );
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    compile_and_run(
        &tmp.join("demo_shared"),
        &[
            format!("-L{}", dir.display()),
            "-lnnkern".into(),
            format!("-Wl,-rpath,{}", dir.display()),
        ],
    );
    compile_and_run(
        &tmp.join("demo_static"),
        &[a.display().to_string(), "-lpthread".into(), "-ldl".into(), "-lm".into()],
    );
}

#[test]
fn header_compiles_as_cplusplus() {
    if !have("c++") {
        eprintln!("skipped: no C++ compiler");
        return;
    }
    let status = Command::new("c++")
        .args(["-x", "c++", "-Wall", "-Werror", "-fsyntax-only"])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join("examples/c/demo.c"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// The ```python block of the README, run as it stands against this build.
#[test]
fn readme_python_snippet() {
    if !have("python3") {
        eprintln!("skipped: no python3");
        return;
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("```python\n").expect("README has a python snippet") + "```python\n".len();
    let code = &readme[start..start + readme[start..].find("```").unwrap()];
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .env("NNKERN_LIB", lib_dir().join("libnnkern.so"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The snippet prints C = A·B for A = [[1,2],[3,4]], B = [[5,6],[7,8]].
    assert!(stdout.contains("[19.0, 22.0, 43.0, 50.0]"), "{stdout}");
}

/// The ```c block of the README, compiled and run as it stands.
#[test]
fn readme_c_snippet() {
    if !have("cc") {
        eprintln!("skipped: no C compiler (cc) on this machine");
        return;
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("```c\n").expect("README has a C snippet") + "```c\n".len();
    let code = &readme[start..start + readme[start..].find("```").unwrap()];
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = tmp.join("readme_snippet.c");
    std::fs::write(&src, code).unwrap();
    let dir = lib_dir();
    let exe = tmp.join("readme_snippet");
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(format!("-I{}", root().join("include").display()))
        .arg(&src)
        .arg(format!("-L{}", dir.display()))
        .arg("-lnnkern")
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new(&exe).env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "19 22 43 50\n");
}
