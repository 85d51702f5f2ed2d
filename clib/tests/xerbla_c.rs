//! The error exits from a C program, linked against `libnnkern.so` and
//! against `libnnkern.a`: a program that defines `cblas_xerbla` and
//! `xerbla_` receives each bad call with the reference numbers (the weak
//! references bind to its definitions in both linkages); one that does not
//! gets a line on stderr per bad call and carries on. The shared library
//! defines `cblas_sgemm` and `sgemm_` and leaves both xerbla names undefined.
//!
//! Skips (with a message) when no C compiler is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

mod built;

const PROGRAM: &str = r#"
#include "nnkern.h"
#include <stdio.h>
#include <stdarg.h>

#ifdef DEFINE_XERBLA
int RowMajorStrg = 0;  /* the reference CBLAS's layout flag */
void cblas_xerbla(int p, const char *rout, const char *form, ...) {
    char text[256];
    va_list ap;
    va_start(ap, form);
    vsnprintf(text, sizeof text, form, ap);
    va_end(ap);
    printf("cblas_xerbla %d row=%d %s %s", p, RowMajorStrg, rout, text);
}
void xerbla_(const char *srname, const int *info, size_t len) {
    /* Also as a C string, as the reference CBLAS's xerbla_ prints it. */
    printf("xerbla_ %d [%.*s] [%s]\n", *info, (int)len, srname, srname);
}
#endif

int main(void) {
    float a[4] = {1, 2, 3, 4}, c[4] = {7, 7, 7, 7};
    const int two = 2, one = 1, minus = -1;
    const float alpha = 1.0f, beta = 0.0f;
    /* Row-major M < 0: the reference CBLAS reports 5; column-major lda: 9. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, -1, 2, 2, 1.0f, a, 2, a, 2, 0.0f, c, 2);
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1.0f, a, 1, a, 2, 0.0f, c, 2);
    /* SGEMM with LDA = 1 < M: INFO 8; N < 0: INFO 4. */
    sgemm_("N", "N", &two, &two, &two, &alpha, a, &one, a, &two, &beta, c, &two);
    sgemm_("N", "N", &two, &minus, &two, &alpha, a, &two, a, &two, &beta, c, &two);
    printf("C %g %g %g %g\n", c[0], c[1], c[2], c[3]);
    /* A valid call still works. */
    sgemm_("T", "N", &two, &two, &two, &alpha, a, &two, a, &two, &beta, c, &two);
    printf("C %g %g %g %g\n", c[0], c[1], c[2], c[3]);
    return 0;
}
"#;

fn have_cc() -> bool {
    Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn include() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../include")).to_path_buf()
}

/// Compiles PROGRAM with `defines` against the library (`shared` or the
/// static archive), runs it, returns (stdout, stderr).
fn build_and_run(name: &str, defines: &[&str], shared: bool) -> (String, String) {
    let dir = built::lib_dir();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let src = tmp.join("xerbla_program.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = tmp.join(name);
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(format!("-I{}", include().display()))
        .args(defines)
        .arg(&src);
    if shared {
        cmd.arg(format!("-L{}", dir.display()))
            .arg("-lnnkern")
            .arg(format!("-Wl,-rpath,{}", dir.display()));
    } else {
        cmd.arg(dir.join("libnnkern.a")).args(["-lpthread", "-ldl", "-lm"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(run.status.success(), "{name} exited with {:?}", run.status);
    (
        String::from_utf8(run.stdout).unwrap(),
        String::from_utf8(run.stderr).unwrap(),
    )
}

/// Aᵀ·A for the column-major 2×2 A = [1 3; 2 4].
const VALID: &str = "C 5 11 11 25\n";

#[test]
fn a_program_with_xerbla_receives_the_reference_numbers() {
    if !have_cc() {
        eprintln!("skipped: no C compiler (cc) on this machine");
        return;
    }
    for shared in [true, false] {
        let (out, err) = build_and_run(
            if shared { "xerbla_shared" } else { "xerbla_static" },
            &["-DDEFINE_XERBLA"],
            shared,
        );
        let lines: Vec<&str> = out.lines().collect();
        let want_prefix = [
            "cblas_xerbla 5 row=1 cblas_sgemm ** On entry to cblas_sgemm, parameter number 4 had an illegal value",
            "cblas_xerbla 9 row=0 cblas_sgemm ** On entry to cblas_sgemm, parameter number 9 had an illegal value",
            "xerbla_ 8 [SGEMM ] [SGEMM ]",
            "xerbla_ 4 [SGEMM ] [SGEMM ]",
            "C 7 7 7 7",
        ];
        assert_eq!(lines.len(), want_prefix.len() + 1, "shared={shared}:\n{out}");
        for (line, want) in lines.iter().zip(want_prefix) {
            assert!(line.starts_with(want), "shared={shared}: {line:?}, expected {want:?}");
        }
        assert!(out.ends_with(VALID), "shared={shared}:\n{out}");
        assert_eq!(
            err, "",
            "shared={shared}: nothing on stderr when the program has xerbla"
        );
    }
}

#[test]
fn a_program_without_xerbla_gets_one_line_per_bad_call() {
    if !have_cc() {
        eprintln!("skipped: no C compiler (cc) on this machine");
        return;
    }
    for shared in [true, false] {
        let (out, err) = build_and_run(if shared { "noxerbla_shared" } else { "noxerbla_static" }, &[], shared);
        assert_eq!(out, format!("C 7 7 7 7\n{VALID}"), "shared={shared}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 4, "shared={shared}:\n{err}");
        for (line, (routine, number)) in
            lines
                .iter()
                .zip([("cblas_sgemm", 4), ("cblas_sgemm", 9), ("SGEMM", 8), ("SGEMM", 4)])
        {
            assert!(
                line.starts_with(&format!("** On entry to {routine}, parameter number {number} ")),
                "shared={shared}: {line:?}"
            );
        }
    }
}

#[test]
fn the_shared_library_defines_sgemm_and_no_xerbla() {
    let Ok(out) = Command::new("nm")
        .args(["-D"])
        .arg(built::lib_dir().join("libnnkern.so"))
        .output()
    else {
        eprintln!("skipped: no nm on this machine");
        return;
    };
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    // `nm -D` lines: "[address] TYPE name".
    let kind = |name: &str| {
        table.lines().find_map(|l| {
            let mut parts = l.split_whitespace().rev();
            (parts.next() == Some(name)).then(|| parts.next().unwrap_or("").to_string())
        })
    };
    assert_eq!(kind("cblas_sgemm").as_deref(), Some("T"), "{table}");
    assert_eq!(kind("sgemm_").as_deref(), Some("T"), "{table}");
    // Weak and undefined: bound to the program's (or a reference BLAS's) at load time.
    assert_eq!(kind("cblas_xerbla").as_deref(), Some("w"), "{table}");
    assert_eq!(kind("xerbla_").as_deref(), Some("w"), "{table}");
}
