//! `libnnkern.so` and `libnnkern.a` export every function `include/nnkern.h`
//! declares (the header itself is checked against the Rust source by
//! `capi/tests/capi_header.rs`); `clib/tests/xerbla_c.rs` checks that the
//! error handlers `cblas_xerbla` / `xerbla_` stay undefined (the program's).

use std::path::{Path, PathBuf};

mod built;

fn lib(name: &str) -> PathBuf {
    built::lib_dir().join(name)
}

/// Function names the header declares: identifiers directly followed by `(`
/// in declarations that end with `);`, outside comments.
fn header_functions() -> Vec<String> {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../include/nnkern.h"));
    let text = std::fs::read_to_string(path).unwrap();
    let mut code = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = &rest[i + rest[i..].find("*/").expect("unterminated comment") + 2..];
    }
    code.push_str(rest);
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    for decl in code.split(';') {
        let decl = decl.trim();
        if decl.starts_with("typedef") || !decl.ends_with(')') {
            continue;
        }
        let Some(open) = decl.find('(') else { continue };
        let head = decl[..open].trim_end();
        let name: String = head
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

fn contains(bytes: &[u8], name: &str) -> bool {
    let needle = format!("{name}\0");
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn both_libraries_export_every_declared_function() {
    let names = header_functions();
    for required in ["cblas_sgemm", "sgemm_", "nnkern_sgemm", "nnkern_last_error"] {
        assert!(
            names.iter().any(|n| n == required),
            "{required} not found in the header: {names:?}"
        );
    }
    for file in ["libnnkern.so", "libnnkern.a"] {
        let path = lib(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (cargo test builds it)", path.display()));
        for name in &names {
            assert!(contains(&bytes, name), "{name} not found in {}", path.display());
        }
    }
}
