//! What a Rust program that depends on this crate gets: few crates, and no
//! C symbols (the C ABI lives in `nnkern-capi` / `nnkern-clib`, so a program
//! can link this crate beside OpenBLAS, MKL or another nnkern).

use std::process::Command;

fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_kernel_library_pulls_at_most_twenty_crates() {
    // Normal and build dependencies, as a user's `cargo add nnkern` resolves
    // them (dev-dependencies and the `cuda` feature excluded).
    let tree = cargo(&[
        "tree",
        "-p",
        "nnkern",
        "-e",
        "normal,build",
        "--prefix",
        "none",
        "--offline",
    ]);
    let mut crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| !c.is_empty())
        .collect();
    crates.sort_unstable();
    crates.dedup();
    assert!(crates.contains(&"nnkern") && crates.contains(&"half"), "{crates:?}");
    for unwanted in [
        "clap",
        "plotters",
        "serde_json",
        "rand",
        "flate2",
        "indicatif",
        "cudarc",
    ] {
        assert!(
            !crates.contains(&unwanted),
            "{unwanted} in the kernel library's tree: {crates:?}"
        );
    }
    assert!(crates.len() <= 20, "{} crates: {crates:?}", crates.len());
}

#[test]
fn a_program_using_the_kernels_has_no_c_symbols() {
    let mut args = vec![
        "build",
        "-p",
        "nnkern",
        "--example",
        "softmax_regression",
        "--message-format=json",
    ];
    if !cfg!(debug_assertions) {
        args.push("--release");
    }
    let json = cargo(&args);
    // The kernel library's rlib holds every symbol it defines (a linker may
    // drop unused ones from the program), the example what a program links.
    let artifact = |pred: &dyn Fn(&str) -> bool, key: &str, ext: &str| -> String {
        let line = json
            .lines()
            .find(|l| l.contains("\"reason\":\"compiler-artifact\"") && pred(l))
            .unwrap_or_else(|| panic!("no {key} artifact reported"));
        let end = line.find(ext).unwrap_or_else(|| panic!("no {ext} in {line}")) + ext.len();
        let start = line[..end].rfind('"').unwrap() + 1;
        line[start..end].to_string()
    };
    let exe = {
        let key = "\"executable\":\"";
        let line = json.lines().find(|l| l.contains(key)).expect("no executable reported");
        let start = line.find(key).unwrap() + key.len();
        line[start..start + line[start..].find('"').unwrap()].to_string()
    };
    let rlib = artifact(
        &|l| l.contains("\"name\":\"nnkern\"") && l.contains(".rlib"),
        "nnkern rlib",
        ".rlib",
    );
    for file in [rlib, exe] {
        let nm = Command::new("nm")
            .arg(&file)
            .output()
            .expect("nm (binutils) is needed for this test");
        assert!(
            nm.status.success(),
            "nm {file}: {}",
            String::from_utf8_lossy(&nm.stderr)
        );
        let symbols = String::from_utf8_lossy(&nm.stdout);
        // Defined symbols: `address type name`.
        let names: Vec<&str> = symbols
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[1] != "U").then(|| f[2])
            })
            .collect();
        assert!(
            names.iter().any(|n| n.contains("nnkern")),
            "nm read no nnkern symbols from {file}"
        );
        let c_abi: Vec<&&str> = names
            .iter()
            .filter(|n| n.starts_with("nnkern_") || n.starts_with("cblas_") || **n == "sgemm_" || **n == "xerbla_")
            .collect();
        assert!(c_abi.is_empty(), "C symbols in {file}: {c_abi:?}");
    }
}
