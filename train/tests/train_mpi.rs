//! `nnkern train --distributed mpi` under `mpirun` on this machine (2 ranks,
//! shared-memory transport): the same step as one process up to the
//! rounding of a reordered sum, replicas bitwise identical, resume exact,
//! a dead rank or mismatched ranks ending the job with an error, never a hang.
//!
//! Needs `mpirun` (Debian: openmpi-bin) on the PATH; the feature `mpi`
//! builds this file.

use nnkern_train::{checkpoint::Checkpoint, Dataset};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a job may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(120);

struct Run {
    ok: bool,
    code: Option<i32>,
    out: String,
    err: String,
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("train_mpi_{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// `mpirun` over one machine's shared memory, as CI (root, maybe no ssh) can run it.
fn mpirun_cmd(dir: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.current_dir(dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("NNKERN_TEST_MPI_EXIT")
        .env_remove("NNKERN_TEST_MPI_RANK_STATE")
        .args(["--oversubscribe", "--bind-to", "none"])
        .args(["--mca", "btl", "self,vader", "--mca", "plm", "isolated"]);
    c
}

/// Runs `cmd` to its end, killing it and failing the test after [`HANG`].
fn finish(mut cmd: Command, dir: &Path) -> Run {
    let (o, e) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let mut child = cmd
        .stdout(Stdio::from(File::create(&o).unwrap()))
        .stderr(Stdio::from(File::create(&e).unwrap()))
        .spawn()
        .expect("run mpirun (install openmpi-bin)");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the job hung (killed after {HANG:?}); stderr:\n{}",
                fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        ok: status.success(),
        code: status.code(),
        out: fs::read_to_string(&o).unwrap(),
        err: fs::read_to_string(&e).unwrap(),
    }
}

/// `mpirun -np N nnkern ARGS`, with extra environment for every rank.
fn mpi(dir: &Path, np: usize, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = mpirun_cmd(dir);
    for (k, v) in env {
        c.args(["-x", &format!("{k}={v}")]);
    }
    c.args(["-np", &np.to_string(), env!("CARGO_BIN_EXE_nnkern")])
        .args(args);
    finish(c, dir)
}

fn single(dir: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nnkern"));
    c.current_dir(dir).args(args);
    finish(c, dir)
}

fn data_dir(root: &Path, name: &str, n_train: usize, n_test: usize) -> PathBuf {
    let d = root.join(name);
    fs::create_dir_all(&d).unwrap();
    Dataset::bundled()
        .unwrap()
        .head(n_train, n_test)
        .write_dir(&d, false)
        .unwrap();
    d
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn assert_same_state(a: &Checkpoint, b: &Checkpoint, what: &str) {
    assert_eq!(a.step, b.step, "{what}: steps");
    assert!(same_bits(&a.params, &b.params), "{what}: weights differ");
    assert_eq!(a.opt_state.len(), b.opt_state.len(), "{what}");
    for (x, y) in a.opt_state.iter().zip(&b.opt_state) {
        assert!(same_bits(x, y), "{what}: optimizer state differs");
    }
}

/// One SGD step on a 32-row batch: 2 ranks of 16 rows against one process
/// of 32, weight by weight, within a bound on the rounding (the chunked
/// update: no clipping).
///
/// The model is `--hidden none`: logits `z_k = x_k·W + b` for row `k`, with
/// pixels `x_kj ∈ [0, 1]`, initial `|W_jc| ≤ L` (the Glorot limit) and `b = 0`;
/// `d_kc = (p_kc − y_kc)/n`, so `|d_kc| ≤ 1/n`; the gradient is
/// `g_jc = Σ_k x_kj·d_kc` (and `Σ_k d_kc` for the biases: `x = 1`), the step
/// `w' = w − lr·g`. The two runs compute the same real numbers in another
/// order: each rank divides by 16 instead of 32 and is weighted by 16/32
/// (both powers of two: exact), the row sum of `g` is split in two halves
/// added at the end, and the logits' GEMM may run another order for 16
/// rows than for 32. With `u = 2⁻²⁴` and `γ_m = m·u/(1 − m·u)`, any two
/// orders of a sum of `m` terms `t_i` differ by at most `2γ_m·Σ|t_i|`, so
///
/// - logits: `|Δz_kc| ≤ 2γ_{F+1}·L·S_k`, `S_k = 1 + Σ_j x_kj` (F = 784
///   features and the bias);
/// - softmax: its Jacobian has row sums `2p(1 − p) ≤ 1/2`, so `|Δp| ≤
///   |Δz|_max/2`, plus a few roundings of its own (`exp`, the sum, the
///   division: counted as `16u`), so `|Δd_kc| ≤ (γ_{F+1}·L·max_k S_k + 16u)/n`;
/// - gradient: `|Δg_jc| ≤ 2γ_n·Σ_k x_kj/n + Σ_k x_kj·|Δd_kc|`
///   `= (Σ_k x_kj/n)·(2γ_n + γ_{F+1}·L·max_k S_k + 16u)`;
/// - step: both runs round `w − lr·g` once more (and `lr·g`), at most
///   `2u·(|w'| + lr·|g|)` apart beyond `lr·|Δg|`.
///
/// With an odd batch (33 rows: shares of 16 and 17, weighted 16/33 and
/// 17/33, neither exact) each share's gradient is also rounded twice more
/// (its weight and the product): `2u` of each share's part of `|g|`, at most
/// `2u·Σ_k x_kj/n` together, counted as `4u` in the per-pixel factor.
///
/// A wrong weighting, a missing or doubled share, or a sum over one rank
/// only changes the step by about `lr·|g|` (≈ 1e-3 here), far above the
/// bound (≈ 1e-6 for most weights).
#[test]
fn two_ranks_of_half_a_batch_take_the_step_of_one_process() {
    two_ranks_against_one_process("equal", 32);
}

/// As above with shares of unequal size (16 and 17 rows), so each rank's
/// weight is its own.
#[test]
fn two_ranks_of_unequal_shares_take_the_step_of_one_process() {
    two_ranks_against_one_process("equal-odd", 33);
}

fn two_ranks_against_one_process(name: &str, n: usize) {
    let d = scratch(name);
    let (features, classes) = (784usize, 10usize);
    let n_s = n.to_string();
    let data = data_dir(&d, "data", n, 50);
    let data_s = data.to_str().unwrap();
    let lr = 0.1f32;
    let lr_s = lr.to_string();
    let common = [
        "train",
        "--data",
        data_s,
        "--hidden",
        "none",
        "--optimizer",
        "sgd",
        "--momentum",
        "0",
        "--lr",
        &lr_s,
        "--batch-size",
        &n_s,
        "--val-split",
        "0",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--seed",
        "3",
        "--quiet",
    ];
    let r = single(&d, &[&common[..], &["--save", "one.ck"]].concat());
    assert!(r.ok, "{}", r.err);
    let r = mpi(
        &d,
        2,
        &[&common[..], &["--distributed", "mpi", "--save", "two.ck"]].concat(),
        &[],
    );
    assert!(r.ok, "{}", r.err);
    let one = Checkpoint::load(&d.join("one.ck")).unwrap();
    let two = Checkpoint::load(&d.join("two.ck")).unwrap();
    assert_eq!((one.step, two.step), (1, 1), "one step each");

    // The initial weights, as the trainer draws them.
    let dims = [features, classes];
    let w0 = nnkern_train::mlp::glorot_uniform(&dims, &mut Xoshiro256PlusPlus::seed_from_u64(3)).unwrap();
    let limit = (6.0f64 / (features + classes) as f64).sqrt();
    let ds = Dataset::from_dir(&data).unwrap();
    let x = |k: usize, j: usize| ds.train.images[k * features + j] as f64 / 255.0;
    let s_max = (0..n)
        .map(|k| 1.0 + (0..features).map(|j| x(k, j)).sum::<f64>())
        .fold(0.0, f64::max);
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = |m: usize| m as f64 * u / (1.0 - m as f64 * u);
    let per_x = 2.0 * gamma(n) + gamma(features + 1) * limit * s_max + 16.0 * u + 4.0 * u;
    let mut worst = 0.0f64;
    for (i, ((&a, &b), &w)) in one.params.iter().zip(&two.params).zip(&w0).enumerate() {
        // Parameter i: weight (j, c) for i < F·C, else the bias of class i − F·C.
        let mean_x = if i < features * classes {
            (0..n).map(|k| x(k, i / classes)).sum::<f64>() / n as f64
        } else {
            1.0
        };
        let g = (w as f64 - a as f64).abs() / lr as f64;
        let tol =
            lr as f64 * mean_x * per_x + 2.0 * u * ((a as f64).abs() + lr as f64 * g) + f64::from(f32::MIN_POSITIVE);
        let diff = (a as f64 - b as f64).abs();
        assert!(
            diff <= tol,
            "parameter {i}: one process {a}, two ranks {b}, |Δ| = {diff:e} > {tol:e}"
        );
        worst = worst.max(diff / tol);
    }
    eprintln!("largest difference: {worst:.3} of the bound");
}

/// Uneven shares (batch 33), Adam: every rank ends each epoch with the same
/// bits, which are also those rank 0 saves. `extra` options; the summary
/// line must name how the update was shared.
fn ranks_end_bitwise_identical(name: &str, extra: &[&str], env: &[(&str, &str)], summary: &str) -> Checkpoint {
    let d = scratch(name);
    let states = d.join("ranks");
    fs::create_dir_all(&states).unwrap();
    let args = [
        &[
            "train",
            "--distributed",
            "mpi",
            "--hidden",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "33",
            "--threads",
            "1",
            "--save",
            "run.ck",
        ][..],
        extra,
    ]
    .concat();
    let env = [env, &[("NNKERN_TEST_MPI_RANK_STATE", states.to_str().unwrap())]].concat();
    let r = mpi(&d, 2, &args, &env);
    assert!(r.ok, "{}", r.err);
    // Only rank 0 prints.
    assert_eq!(r.out.matches("test_accuracy").count(), 1, "{}", r.out);
    assert!(r.out.contains("distributed: 2 ranks"), "{}", r.out);
    assert!(r.out.contains(summary), "{}", r.out);
    let r0 = Checkpoint::load(&states.join("rank0.ck")).unwrap();
    let r1 = Checkpoint::load(&states.join("rank1.ck")).unwrap();
    let saved = Checkpoint::load(&d.join("run.ck")).unwrap();
    assert_eq!(r0.history.len(), 2);
    assert_same_state(&r0, &r1, "rank 0 against rank 1");
    assert_same_state(&r0, &saved, "rank 0 against its checkpoint");
    saved
}

/// With clipping every rank gathers the summed gradient and takes the whole step.
#[test]
fn the_ranks_end_bitwise_identical() {
    ranks_end_bitwise_identical(
        "replicas",
        &["--clip-norm", "1"],
        &[],
        "all-gather of the summed gradient",
    );
}

/// Without clipping each rank updates its own chunk of the parameters and
/// moments; the parameters are gathered every step, the moments at the end
/// of each epoch, so the replicas and the checkpoint are whole.
#[test]
fn the_ranks_end_bitwise_identical_when_each_updates_its_chunk() {
    let ranged = ranks_end_bitwise_identical("replicas-ranged", &[], &[], "update of this rank's chunk");
    // The same run with the backend's buffers treated as off the host (a
    // GPU's): gradients copied out, the summed gradient gathered, the whole
    // step on every rank. The same arithmetic, so the same bits.
    let whole = ranks_end_bitwise_identical(
        "replicas-off-host",
        &[],
        &[("NNKERN_TEST_MPI_OFF_HOST", "1")],
        "all-gather of the summed gradient",
    );
    assert_same_state(&ranged, &whole, "each rank's chunk against the whole step");
}

#[test]
fn a_resumed_distributed_run_equals_an_uninterrupted_one() {
    let d = scratch("resume");
    let data = data_dir(&d, "data", 1000, 100);
    let data = data.to_str().unwrap();
    let run = |epochs: &str, extra: &[&str]| {
        let args = [
            &[
                "train",
                "--distributed",
                "mpi",
                "--data",
                data,
                "--hidden",
                "16",
                "--batch-size",
                "20",
                "--epochs",
                epochs,
                "--threads",
                "1",
                "--seed",
                "7",
                "--quiet",
            ][..],
            extra,
        ]
        .concat();
        let r = mpi(&d, 2, &args, &[]);
        assert!(r.ok, "{}", r.err);
        r.out
    };
    let whole = run("3", &["--save", "whole.ck"]);
    run("1", &["--save", "part.ck"]);
    let resumed = run("3", &["--save", "part.ck", "--resume", "part.ck"]);
    assert_eq!(whole, resumed, "the test scores");
    let a = Checkpoint::load(&d.join("whole.ck")).unwrap();
    let b = Checkpoint::load(&d.join("part.ck")).unwrap();
    assert_same_state(&a, &b, "resumed against uninterrupted");
    assert_eq!(a.history.len(), 3);
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!(
            (x.train_loss, x.train_acc, x.val_loss, x.val_acc),
            (y.train_loss, y.train_acc, y.val_loss, y.val_acc)
        );
    }
}

/// A rank that dies in the middle of epoch 2 ends the job with an error;
/// the checkpoint of epoch 1 stays whole.
#[test]
fn a_rank_that_dies_mid_epoch_stops_the_job() {
    for how in ["exit", "abort"] {
        let d = scratch(&format!("dies_{how}"));
        // 6400 training rows in batches of 32: step 250 is in epoch 2.
        let r = mpi(
            &d,
            2,
            &[
                "train",
                "--distributed",
                "mpi",
                "--hidden",
                "16",
                "--epochs",
                "3",
                "--threads",
                "1",
                "--save",
                "run.ck",
            ],
            &[("NNKERN_TEST_MPI_EXIT", &format!("1:250:{how}"))],
        );
        assert!(!r.ok, "{how}: the job succeeded:\n{}\n{}", r.out, r.err);
        assert!(!r.out.contains("test_accuracy"), "{how}: {}", r.out);
        assert!(!r.err.is_empty(), "{how}: no message");
        let ck = Checkpoint::load(&d.join("run.ck")).unwrap();
        assert_eq!(ck.history.len(), 1, "{how}");
        eprintln!("{how}: exit code {:?}; stderr:\n{}", r.code, r.err);
    }
}

/// An error on one rank alone (here: a data directory only rank 1 lacks)
/// ends the job through MPI_Abort instead of leaving rank 0 waiting.
#[test]
fn an_error_on_one_rank_aborts_the_job() {
    let d = scratch("one_error");
    let data = data_dir(&d, "data", 200, 50);
    let mut c = mpirun_cmd(&d);
    let bin = env!("CARGO_BIN_EXE_nnkern");
    let common = [
        "train",
        "--distributed",
        "mpi",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--data",
    ];
    c.args(["-np", "1", bin])
        .args(common)
        .arg(&data)
        .args([":", "-np", "1", bin])
        .args(common)
        .arg(d.join("missing"));
    let r = finish(c, &d);
    assert!(!r.ok, "{}", r.out);
    assert!(r.err.contains("error on rank 1 of 2"), "{}", r.err);
    assert!(r.err.contains("missing"), "{}", r.err);
}

/// Ranks started with different options or data stop together, naming the difference.
#[test]
fn mismatched_ranks_are_refused_with_the_difference_named() {
    let d = scratch("mismatch");
    let d1 = data_dir(&d, "d1", 200, 50);
    let d2 = data_dir(&d, "d2", 201, 50);
    let bin = env!("CARGO_BIN_EXE_nnkern");
    let cases: [(&[&str], &[&str], &str); 4] = [
        (
            &["--hidden", "16"],
            &["--hidden", "17"],
            "rank 1 has --hidden = [17], rank 0 has [16]",
        ),
        (
            &["--seed", "1"],
            &["--seed", "2"],
            "rank 1 has --seed = 2, rank 0 has 1",
        ),
        (&["--lr", "0.001"], &["--lr", "0.002"], "--optimizer"),
        (
            &["--data", d1.to_str().unwrap()],
            &["--data", d2.to_str().unwrap()],
            "rank 1 has the training data = 201 samples",
        ),
    ];
    for (a, b, want) in cases {
        let common = [
            "train",
            "--distributed",
            "mpi",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--quiet",
        ];
        let mut c = mpirun_cmd(&d);
        c.args(["-np", "1", bin])
            .args(common)
            .args(a)
            .args([":", "-np", "1", bin])
            .args(common)
            .args(b);
        let r = finish(c, &d);
        assert!(!r.ok, "{a:?} / {b:?}: {}", r.out);
        assert!(
            r.err.contains("the ranks disagree") && r.err.contains(want),
            "{a:?} / {b:?}:\n{}",
            r.err
        );
        assert!(!r.out.contains("test_accuracy"), "{}", r.out);
        // Reported once, by rank 0.
        assert_eq!(r.err.matches("the ranks disagree").count(), 1, "{}", r.err);
    }
}

#[test]
fn an_unknown_kind_is_an_error() {
    let d = scratch("kind");
    let r = single(&d, &["train", "--distributed", "gloo", "--epochs", "1"]);
    assert!(!r.ok);
    assert_eq!(r.code, Some(1));
    assert!(r.err.contains("--distributed: unknown kind \"gloo\""), "{}", r.err);
}
