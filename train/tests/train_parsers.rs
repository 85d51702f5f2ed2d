//! The two parsers that read files from users — IDX data and checkpoints —
//! given damaged input: random byte changes, truncations and extensions of
//! valid files must give `Ok` or a clear `Err` naming the file, never a panic
//! or a huge allocation.

use nnkern_train::checkpoint::Checkpoint;
use nnkern_train::data::{parse_idx, write_idx};
use nnkern_train::{Cpu, Dataset, TrainConfig, Trainer};
use proptest::prelude::*;
use std::io::Write;
use std::sync::OnceLock;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// A valid IDX image file, plain and gzipped.
fn idx_files() -> &'static (Vec<u8>, Vec<u8>) {
    static F: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let data: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 13) as u8).collect();
        let plain = write_idx(&[5, 4, 3], &data);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&plain).unwrap();
        (plain, enc.finish().unwrap())
    })
}

fn checkpoint() -> &'static Vec<u8> {
    static C: OnceLock<Vec<u8>> = OnceLock::new();
    C.get_or_init(|| {
        let cfg = TrainConfig {
            hidden: vec![3],
            epochs: 1,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(cfg, Dataset::bundled().unwrap().head(40, 10), Cpu::new()).unwrap();
        t.run_epoch(&mut |_| {}).unwrap();
        t.checkpoint().unwrap().to_bytes()
    })
}

#[derive(Debug, Clone)]
enum Damage {
    Set(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Set(i, b)),
            any::<usize>().prop_map(Damage::Truncate),
            prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::Append),
        ],
        1..4,
    )
}

fn apply(bytes: &[u8], ds: &[Damage]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for d in ds {
        match d {
            Damage::Set(i, v) if !b.is_empty() => {
                let n = b.len();
                b[i % n] = *v;
            }
            Damage::Truncate(n) if !b.is_empty() => b.truncate(n % b.len()),
            Damage::Append(x) => b.extend_from_slice(x),
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn damaged_idx_files_never_panic(ds in damage(), gz in any::<bool>()) {
        let (plain, gzip) = idx_files();
        let b = apply(if gz { gzip } else { plain }, &ds);
        match parse_idx(&b, "img.idx", 3) {
            Ok(idx) => prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>()),
            Err(e) => prop_assert!(e.to_string().contains("img.idx"), "{}", e),
        }
    }

    #[test]
    fn damaged_checkpoints_are_refused(ds in damage()) {
        let good = checkpoint();
        let b = apply(good, &ds);
        match Checkpoint::from_bytes(&b, "run.ck") {
            // Only a change that leaves the bytes as they were may pass.
            Ok(_) => prop_assert_eq!(&b, good),
            Err(e) => prop_assert!(e.to_string().contains("run.ck"), "{}", e),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_idx(&b, "x", 1);
        let _ = parse_idx(&b, "x", 3);
        prop_assert!(Checkpoint::from_bytes(&b, "x").is_err());
    }
}

#[test]
fn a_checkpoint_claiming_absurd_shapes_is_refused_not_a_panic() {
    // A well-formed file (valid checksum) whose header claims 2^31 × 2^31 weights.
    let good = Checkpoint::from_bytes(checkpoint(), "ok.ck").unwrap();
    let mut huge = good.clone();
    huge.dims = vec![1 << 31, 1 << 31];
    huge.config.hidden = vec![];
    let e = Checkpoint::from_bytes(&huge.to_bytes(), "huge.ck")
        .unwrap_err()
        .to_string();
    assert!(e.contains("huge.ck"), "{e}");
}
