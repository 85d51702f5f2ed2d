//! `nnkern train` / `eval` as a user runs them: outputs, kill and resume,
//! and bad input rejected with a clear message, a non-zero exit code and no
//! output file left behind.

use nnkern_train::{checkpoint::Checkpoint, Dataset};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn nnkern(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnkern"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run nnkern")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("train_cli_{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A small MNIST-format directory cut from the bundled digits.
fn data_dir(root: &Path, name: &str, n_train: usize, gzip: bool) -> PathBuf {
    let d = root.join(name);
    fs::create_dir_all(&d).unwrap();
    Dataset::bundled()
        .unwrap()
        .head(n_train, 100)
        .write_dir(&d, gzip)
        .unwrap();
    d
}

fn files_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn quiet_default_data_prints_only_the_result_from_any_directory() {
    let d = scratch("quiet");
    let o = nnkern(&d, &["train", "--epochs", "1", "--hidden", "8", "--quiet"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("test_loss: ") && out.contains("test_accuracy: "),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");
}

#[test]
fn metrics_plot_checkpoint_and_eval() {
    let d = scratch("outputs");
    let data = data_dir(&d, "gz", 500, true);
    let data = data.to_str().unwrap();
    let o = nnkern(
        &d,
        &[
            "train",
            "--data",
            data,
            "--hidden",
            "16,8",
            "--epochs",
            "2",
            "--metrics",
            "m.jsonl",
            "--plot",
            "p.svg",
            "--save",
            "model.ck",
            "--seed",
            "5",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("Epoch 1/2") && out.contains("Epoch 2/2") && out.contains("val_accuracy"),
        "{out}"
    );
    assert!(out.lines().last().unwrap().starts_with("test_loss: "), "{out}");

    let m = fs::read_to_string(d.join("m.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = m.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{m}");
    for (i, l) in lines[..2].iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        for k in ["train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds"] {
            assert!(l[k].as_f64().is_some(), "{k} in {l}");
        }
    }
    for k in ["test_loss", "test_acc", "train_seconds"] {
        assert!(lines[2][k].as_f64().is_some(), "{k} in {}", lines[2]);
    }
    assert!(fs::read_to_string(d.join("p.svg")).unwrap().contains("<svg"));

    let o = nnkern(&d, &["eval", "--model", "model.ck", "--data", data]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let acc = lines[2]["test_acc"].as_f64().unwrap();
    assert!(out.contains(&format!("test_accuracy: {acc:.4}")), "{out}");
    assert!(out.contains("confusion matrix"), "{out}");
    // Ten rows of counts that add up to the 100 test samples.
    let total: usize = out
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(k, _)| k.trim().parse::<usize>().is_ok())
        .flat_map(|(_, r)| r.split_whitespace().map(|c| c.parse::<usize>().unwrap()))
        .sum();
    assert_eq!(total, 100, "{out}");

    let o = nnkern(
        &d,
        &[
            "train", "--data", data, "--hidden", "4", "--epochs", "1", "--plot", "p.png", "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(fs::read(d.join("p.png")).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    // Only the outputs asked for: no temporary files left behind.
    assert_eq!(files_in(&d), ["gz", "m.jsonl", "model.ck", "p.png", "p.svg"]);
}

#[test]
fn killed_and_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one() {
    let d = scratch("resume");
    let data = data_dir(&d, "plain", 1000, false);
    let data = data.to_str().unwrap();
    let mut epochs = 6;
    loop {
        let e = epochs.to_string();
        let common = [
            "train",
            "--data",
            data,
            "--hidden",
            "24",
            "--epochs",
            &e,
            "--batch-size",
            "8",
            "--threads",
            "2",
            "--seed",
            "11",
            "--quiet",
        ];
        let ck = d.join("run.ck");
        let _ = fs::remove_file(&ck);
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnkern"))
            .current_dir(&d)
            .args(common)
            .args(["--save", "run.ck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it the moment the first epoch's checkpoint is in place.
        let start = Instant::now();
        while !ck.exists() && start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let done = Checkpoint::load(&ck).unwrap().history.len();
        if done == epochs {
            // Finished before the kill landed: give it more to do.
            assert!(epochs < 200, "could not interrupt the run");
            epochs *= 4;
            continue;
        }
        assert!(done >= 1);
        eprintln!("killed after {done} of {epochs} epochs");

        let o = nnkern(
            &d,
            &[
                &common[..],
                &["--save", "run.ck", "--resume", "run.ck", "--metrics", "r.jsonl"],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", text(&o).1);
        let o = nnkern(
            &d,
            &[&common[..], &["--save", "whole.ck", "--metrics", "w.jsonl"]].concat(),
        );
        assert!(o.status.success(), "{}", text(&o).1);

        let (a, b) = (
            Checkpoint::load(&ck).unwrap(),
            Checkpoint::load(&d.join("whole.ck")).unwrap(),
        );
        assert_eq!(a.history.len(), epochs);
        assert!(a.params.iter().zip(&b.params).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(a.opt_state, b.opt_state);
        assert_eq!(a.step, b.step);
        // The metrics agree too, but for the wall times.
        let strip = |f: &str| -> Vec<String> {
            fs::read_to_string(d.join(f))
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let o = v.as_object_mut().unwrap();
                    o.remove("epoch_seconds");
                    o.remove("train_seconds");
                    v.to_string()
                })
                .collect()
        };
        assert_eq!(strip("r.jsonl"), strip("w.jsonl"));
        assert_eq!(strip("r.jsonl").len(), epochs + 1);
        break;
    }
}

/// Runs `train` with every output option pointing into a fresh `out/`
/// directory, expects failure, and checks that the message names `needle`
/// and that `out/` is still empty.
fn rejects(d: &Path, args: &[&str], needles: &[&str]) {
    let out = d.join("out");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let hidden: &[&str] = if args.contains(&"--hidden") {
        &[]
    } else {
        &["--hidden", "4"]
    };
    let all = [
        &["train", "--epochs", "1", "--quiet"][..],
        hidden,
        args,
        &["--metrics", "out/m.jsonl", "--plot", "out/p.svg", "--save", "out/c.ck"][..],
    ]
    .concat();
    let o = nnkern(d, &all);
    let (stdout, err) = text(&o);
    assert!(!o.status.success(), "{args:?} was accepted: {stdout}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in: {err}");
    }
    assert!(files_in(&out).is_empty(), "{args:?} left {:?}", files_in(&out));
}

fn corrupt(root: &Path, name: &str, gzip: bool, file: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let dir = data_dir(root, name, 200, gzip);
    let p = dir.join(file);
    let mut b = fs::read(&p).unwrap();
    f(&mut b);
    fs::write(&p, b).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn bad_data_is_rejected_naming_the_file() {
    let d = scratch("bad_data");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            corrupt(&d, "magic", false, "train-images-idx3-ubyte", |b| b[0] = 7),
            vec!["train-images-idx3-ubyte", "not an IDX"],
        ),
        (
            corrupt(&d, "short", false, "t10k-images-idx3-ubyte", |b| {
                b.truncate(b.len() - 10)
            }),
            vec!["t10k-images-idx3-ubyte", "truncated"],
        ),
        (
            corrupt(&d, "long", false, "train-labels-idx1-ubyte", |b| b.push(1)),
            vec!["train-labels-idx1-ubyte", "more bytes"],
        ),
        (
            corrupt(&d, "range", false, "t10k-labels-idx1-ubyte", |b| {
                let n = b.len();
                b[n - 3] = 10;
            }),
            vec!["t10k-labels-idx1-ubyte", "label 10", "out of range"],
        ),
        (
            corrupt(&d, "count", false, "train-labels-idx1-ubyte", |b| {
                b[7] = b[7].wrapping_sub(1);
                b.pop();
            }),
            vec!["train-labels-idx1-ubyte", "199 labels", "200 images"],
        ),
        (
            corrupt(&d, "gz", true, "train-images-idx3-ubyte.gz", |b| {
                b.truncate(b.len() / 2)
            }),
            vec!["train-images-idx3-ubyte.gz"],
        ),
        (
            corrupt(&d, "type", false, "train-images-idx3-ubyte", |b| b[2] = 0x0d),
            vec!["train-images-idx3-ubyte", "0x0d"],
        ),
    ];
    for (dir, needles) in &cases {
        rejects(&d, &["--data", dir], needles);
    }
    let missing = data_dir(&d, "missing", 50, false);
    fs::remove_file(missing.join("t10k-labels-idx1-ubyte")).unwrap();
    rejects(
        &d,
        &["--data", missing.to_str().unwrap()],
        &["t10k-labels-idx1-ubyte", "missing"],
    );
    rejects(&d, &["--data", "no/such/dir"], &["no/such/dir"]);
}

#[test]
fn impossible_options_are_rejected_naming_the_option() {
    let d = scratch("bad_options");
    for (args, needle) in [
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--batch-size", "lots"], "--batch-size"),
        (&["--val-split", "1"], "--val-split"),
        (&["--val-split", "1.5"], "--val-split"),
        (&["--val-split", "-0.1"], "--val-split"),
        (&["--lr", "NaN"], "--lr"),
        (&["--lr", "inf"], "--lr"),
        (&["--hidden", "0"], "--hidden"),
        (&["--hidden", "12,x"], "--hidden"),
        (&["--clip-norm", "0"], "--clip-norm"),
        (&["--activation", "swish"], "--activation"),
        (&["--optimizer", "lbfgs"], "--optimizer"),
        (&["--momentum", "0.5"], "--momentum"),
        (&["--backend", "tpu"], "--backend"),
        (&["--threads", "0"], "--threads"),
        (&["--epochs", "-1"], "--epochs"),
    ] {
        rejects(&d, args, &[needle]);
    }
    // A build without the CUDA backend says so, for the GPU and the executor alike;
    // with it and no GPU, `--backend cuda` names the missing device (and leaves
    // nothing behind either), never panicking.
    for b in ["cuda", "cuda-executor"] {
        let needles: &[&str] = if cfg!(feature = "cuda") {
            &["--backend"]
        } else {
            &["--backend: cuda: this build has no CUDA backend", "use --backend cpu"]
        };
        if cfg!(feature = "cuda") && (b == "cuda-executor" || std::path::Path::new("/proc/driver/nvidia").exists()) {
            continue;
        }
        rejects(&d, &["--backend", b], needles);
    }
    // A plot name without a known image extension is refused before training.
    let o = nnkern(&d, &["train", "--epochs", "1", "--hidden", "4", "--plot", "curves.jpg"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--plot"));
    assert!(!d.join("curves.jpg").exists());
}

#[test]
fn bad_checkpoints_are_rejected_and_a_diverging_run_keeps_the_last_good_one() {
    let d = scratch("bad_checkpoints");
    let data = data_dir(&d, "data", 200, true);
    let data = data.to_str().unwrap();
    let o = nnkern(
        &d,
        &[
            "train", "--data", data, "--hidden", "8", "--epochs", "1", "--save", "good.ck", "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let good = fs::read(d.join("good.ck")).unwrap();

    // Another shape.
    rejects(
        &d,
        &["--data", data, "--hidden", "9", "--resume", "good.ck"],
        &["good.ck", "another model shape", "784-8-10", "784-9-10"],
    );
    // Damaged: one flipped bit in the weights, or cut short.
    let mut flipped = good.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 1;
    fs::write(d.join("flipped.ck"), &flipped).unwrap();
    rejects(
        &d,
        &["--data", data, "--hidden", "8", "--resume", "flipped.ck"],
        &["flipped.ck", "damaged"],
    );
    fs::write(d.join("short.ck"), &good[..good.len() / 3]).unwrap();
    rejects(
        &d,
        &["--data", data, "--hidden", "8", "--resume", "short.ck"],
        &["short.ck"],
    );
    fs::write(d.join("text.ck"), b"{\"weights\": []}").unwrap();
    rejects(
        &d,
        &["--data", data, "--hidden", "8", "--resume", "text.ck"],
        &["text.ck", "not an nnkern checkpoint"],
    );
    rejects(
        &d,
        &["--data", data, "--hidden", "8", "--resume", "absent.ck"],
        &["absent.ck"],
    );
    let o = nnkern(&d, &["eval", "--model", "flipped.ck", "--data", data]);
    assert!(!o.status.success() && text(&o).1.contains("flipped.ck"));

    // A loss that blows up stops training, names the step, and leaves the
    // checkpoint already at the --save path untouched.
    fs::copy(d.join("good.ck"), d.join("keep.ck")).unwrap();
    let o = nnkern(
        &d,
        &[
            "train",
            "--data",
            data,
            "--hidden",
            "8",
            "--epochs",
            "2",
            "--optimizer",
            "sgd",
            "--lr",
            "1e30",
            "--save",
            "keep.ck",
            "--metrics",
            "nan.jsonl",
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("at step") && err.contains("training stopped"), "{err}");
    assert_eq!(fs::read(d.join("keep.ck")).unwrap(), good);
    assert!(!d.join("nan.jsonl").exists());
}

/// A build without the `mpi` feature refuses `--distributed mpi` with a
/// message saying how to get it, and a plain failure status (not a panic's).
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_without_the_mpi_feature_is_a_clear_error() {
    let d = scratch("no_mpi");
    let o = nnkern(&d, &["train", "--distributed", "mpi", "--epochs", "1", "--hidden", "8"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("--distributed: mpi: this build has no MPI support") && err.contains("--features mpi"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.is_empty(), "{out}");
}
