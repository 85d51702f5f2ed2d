//! The committed kernels are exactly what their templates give: an edit of a
//! generated file, or of a template without regenerating, fails here.

#[test]
fn committed_kernels_match_their_templates() {
    let files = nnkern_ptxgen::generate(&nnkern_ptxgen::kernels_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), nnkern_ptxgen::OUTPUTS.len());
    for (path, text) in files {
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if committed != text {
            let line = committed
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| committed.lines().count().min(text.lines().count()))
                + 1;
            panic!(
                "{} differs from its template from line {line} on: run `cargo run -p nnkern-ptxgen --example ptxgen`",
                path.display()
            );
        }
    }
}
