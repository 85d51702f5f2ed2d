//! Replays every committed fuzz input (seed corpora in `fuzz/seeds/<target>/`,
//! minimised findings in `fuzz/regressions/<target>/`) through the same
//! harness functions the cargo-fuzz targets call, plus a batch of
//! pseudo-random inputs per target.

use std::fs;
use std::path::Path;

fn replay_dir(dir: &Path, run: fn(&[u8])) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for p in &files {
        let data = fs::read(p).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| run(&data)) {
            std::panic::resume_unwind(Box::new(format!("{}: {:?}", p.display(), e.downcast_ref::<String>())));
        }
    }
    files.len()
}

#[test]
fn replay_committed_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for &(name, run) in nnkern_fuzzing::TARGETS {
        let n = replay_dir(&root.join("seeds").join(name), run) + replay_dir(&root.join("regressions").join(name), run);
        eprintln!("{name}: replayed {n} inputs");
        assert!(n > 0, "no committed inputs for fuzz target {name}");
    }
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for &(name, _) in nnkern_fuzzing::TARGETS {
        assert!(root.join("fuzz_targets").join(format!("{name}.rs")).is_file(), "{name}");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}");
    }
}

/// Random bytes of random lengths: cheap extra coverage on every test run.
#[test]
fn random_inputs() {
    let cases: u64 = std::env::var("FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for &(name, run) in nnkern_fuzzing::TARGETS {
        for case in 0..cases {
            let len = (next() % 256) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Err(e) = std::panic::catch_unwind(|| run(&data)) {
                panic!("{name} case {case} {data:?}: {:?}", e.downcast_ref::<String>());
            }
        }
    }
}
