//! The `nnkern` command-line tool: `train`, `eval` and `info`.

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nnkern::Activation;
use nnkern_train::Error;
use nnkern_train::{
    self as train, checkpoint::Checkpoint, distributed::Distributed, fsutil, metrics, plot, Backend, BatchSize, Cpu,
    Dataset, Score, TrainConfig, Trainer,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "nnkern", version, about = "Compute kernels for training neural networks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version, the ISA dispatch picked, the ISAs this CPU runs, the thread count and the GPU.
    Info,
    /// Train an MLP; with no options, the classic MNIST experiment on the bundled digits
    /// (784-500-10 ReLU, Adam with Keras's defaults, batch 32, 10 epochs, 20% validation).
    Train(Box<TrainArgs>),
    /// Report the test loss, accuracy and confusion matrix of a saved model.
    Eval(EvalArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Directory with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    /// t10k-labels-idx1-ubyte (each optionally .gz); default: the bundled 8,000 + 2,000 MNIST digits.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Hidden layer widths, comma-separated (e.g. 500 or 512,256); `none` for no hidden layer.
    #[arg(long, value_name = "H1[,H2…]", default_value = "500")]
    hidden: String,
    /// Hidden-layer activation: relu, sigmoid, tanh, gelu (tanh form) or gelu-erf.
    #[arg(long, default_value = "relu")]
    activation: String,
    /// adam (Keras's defaults: lr 1e-3, β 0.9/0.999, ε 1e-7), adamw (PyTorch's: ε 1e-8, weight decay 0.01)
    /// or sgd (momentum 0.9, lr 0.01).
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Learning rate (default: the optimizer's).
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Momentum of --optimizer sgd (default 0.9).
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f32>,
    /// Weight decay (default: 0 for adam and sgd, 0.01 decoupled for adamw).
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// Samples per step: a positive integer (1 = stochastic gradient descent) or `full` (batch gradient descent).
    #[arg(long, default_value = "32", value_name = "N|full")]
    batch_size: String,
    /// Epochs to train (a resumed run continues up to this many in all).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10)]
    epochs: usize,
    /// Fraction of the training set, taken from its end, held out for validation, in [0, 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.2)]
    val_split: f64,
    /// Clip the gradients to this global L2 norm before each step.
    #[arg(long, allow_negative_numbers = true, value_name = "NORM")]
    clip_norm: Option<f32>,
    /// Seed of the initial weights and of the shuffles.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    seed: u64,
    /// Threads the kernels may use (default: NNKERN_NUM_THREADS, else every CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// cpu (the library's dispatched kernels), cpu-reference (the naive reference kernels) or cuda.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Write the metrics as JSON lines (one object per epoch, then the test score).
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// Draw the loss and accuracy curves (.svg or .png).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Save a checkpoint (model and optimizer state) at the end of every epoch.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (give the options it was started with).
    #[arg(long, value_name = "FILE")]
    resume: Option<PathBuf>,
    /// Print only the final result.
    #[arg(long)]
    quiet: bool,
    /// Train data-parallel across the processes of an MPI job: `mpirun -np N nnkern train --distributed mpi`
    /// (needs a build with the `mpi` feature).
    #[arg(long, value_name = "mpi")]
    distributed: Option<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// A checkpoint written by `nnkern train --save`.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Data directory, as for `train`; default: the bundled digits.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Threads the kernels may use.
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_hidden(s: &str) -> Result<Vec<usize>, Error> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    t.split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(0) => Err(Error::invalid("--hidden", format!("{s:?}: a layer width of 0"))),
            Ok(n) => Ok(n),
            Err(_) => Err(Error::invalid(
                "--hidden",
                format!("{s:?}: expected comma-separated positive widths, e.g. 500 or 512,256"),
            )),
        })
        .collect()
}

fn set_threads(threads: Option<usize>) -> Result<(), Error> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::invalid("--threads", "0: expected at least 1"));
        }
        nnkern::set_num_threads(n)?;
    }
    Ok(())
}

/// The backend `--backend` names, made (so a missing GPU is reported before
/// any data is read).
enum Chosen {
    Cpu(Cpu),
    #[cfg(feature = "cuda")]
    Cuda(Box<train::Cuda>),
}

fn backend(name: &str) -> Result<Chosen, Error> {
    match name.trim().to_ascii_lowercase().as_str() {
        "cpu" => Ok(Chosen::Cpu(Cpu::new())),
        "cpu-reference" | "reference" => Ok(Chosen::Cpu(Cpu::reference())),
        // `cuda-executor` (not in the help): the CUDA backend on the PTX
        // executor, which runs the kernels on the CPU; for tests without a GPU.
        n @ ("cuda" | "gpu" | "cuda-executor") => cuda_backend(n == "cuda-executor"),
        other => Err(Error::invalid(
            "--backend",
            format!("unknown backend {other:?}; expected cpu, cpu-reference or cuda"),
        )),
    }
}

#[cfg(feature = "cuda")]
fn cuda_backend(executor: bool) -> Result<Chosen, Error> {
    let be = if executor {
        train::Cuda::executor()
    } else {
        train::Cuda::new(0)
    };
    match be {
        Ok(be) => Ok(Chosen::Cuda(Box::new(be))),
        Err(nnkern::Error::NoCuda(why)) => Err(Error::invalid(
            "--backend",
            format!("no CUDA device: {why}; use --backend cpu"),
        )),
        Err(e) => Err(Error::invalid("--backend", format!("cuda: {e}"))),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend(_executor: bool) -> Result<Chosen, Error> {
    Err(Error::invalid(
        "--backend",
        "cuda: this build has no CUDA backend (built without the `cuda` feature); use --backend cpu",
    ))
}

fn load_data(dir: Option<&Path>) -> Result<Dataset, Error> {
    match dir {
        Some(d) => Dataset::from_dir(d),
        None => Dataset::bundled(),
    }
}

fn config(a: &TrainArgs) -> Result<TrainConfig, Error> {
    let activation: Activation = a.activation.parse().map_err(|_| {
        Error::invalid(
            "--activation",
            format!(
                "unknown activation {:?}; expected relu, sigmoid, tanh, gelu or gelu-erf",
                a.activation
            ),
        )
    })?;
    let cfg = TrainConfig {
        hidden: parse_hidden(&a.hidden)?,
        activation,
        optimizer: train::optimizer_by_name(&a.optimizer, a.lr, a.momentum, a.weight_decay)?,
        batch_size: a.batch_size.parse::<BatchSize>()?,
        epochs: a.epochs,
        val_split: a.val_split,
        clip_norm: a.clip_norm,
        seed: a.seed,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn dims_string(d: &[usize]) -> String {
    d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-")
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

fn run_train(a: TrainArgs) -> Result<(), Error> {
    let process_start = Instant::now();
    let Some(kind) = a.distributed.clone() else {
        return run_train_on(a, process_start, None);
    };
    // Joined first, so that an error on any one rank from here on ends the job.
    let mut dist = Distributed::init(&kind)?;
    match run_train_on(a, process_start, Some(&mut dist)) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Ends the whole job at once unless every rank has this error.
            let e = dist.fail(e);
            if dist.is_root() {
                eprintln!("nnkern: error: {e}");
            }
            drop(dist);
            std::process::exit(1)
        }
    }
}

fn run_train_on(a: TrainArgs, process_start: Instant, dist: Option<&mut Distributed>) -> Result<(), Error> {
    // Every option is checked before any data is read or any file is touched.
    let cfg = config(&a)?;
    match backend(&a.backend)? {
        Chosen::Cpu(be) => train_with(a, cfg, be, process_start, dist),
        #[cfg(feature = "cuda")]
        Chosen::Cuda(be) => train_with(a, cfg, *be, process_start, dist),
    }
}

fn train_with<B: Backend>(
    a: TrainArgs,
    cfg: TrainConfig,
    be: B,
    process_start: Instant,
    mut dist: Option<&mut Distributed>,
) -> Result<(), Error> {
    set_threads(a.threads)?;
    // Only rank 0 of a distributed run prints and writes files.
    let root = dist.as_ref().is_none_or(|d| d.is_root());
    let a = if root {
        a
    } else {
        TrainArgs {
            plot: None,
            metrics: None,
            save: None,
            quiet: true,
            ..a
        }
    };
    if let Some(p) = &a.plot {
        plot::plot_format(p)?;
        fsutil::check_writable(p, "--plot")?;
    }
    if let Some(p) = &a.metrics {
        fsutil::check_writable(p, "--metrics")?;
    }
    if let Some(p) = &a.save {
        fsutil::check_writable(p, "--save")?;
    }
    let resume = match &a.resume {
        Some(p) => Some((Checkpoint::load(p)?, p.display().to_string())),
        None => None,
    };
    let data = load_data(a.data.as_deref())?;
    if let Some(d) = dist.as_deref_mut() {
        d.check_agreement(&cfg, &data, resume.as_ref().map(|(ck, _)| ck), be.name())?;
    }
    let mut t = match &resume {
        Some((ck, name)) => Trainer::resume(cfg, data, be, ck, name)?,
        None => Trainer::new(cfg, data, be)?,
    };
    if let Some(d) = dist.as_deref_mut() {
        d.sync_state(&mut t)?;
    }
    let quiet = a.quiet;
    let epochs = t.config().epochs;
    if !quiet {
        let (n_fit, n_val, n_test) = t.split_counts();
        println!(
            "nnkern train: {} {}, {}, batch {}, seed {}",
            dims_string(t.model().dims()),
            t.config().activation,
            t.config().optimizer_name(),
            t.config().batch_size,
            t.config().seed,
        );
        println!(
            "data: {} ({n_fit} train, {n_val} validation, {n_test} test); backend {} ({}, {} threads)",
            t.source(),
            t.backend_name(),
            nnkern::active_isa(),
            nnkern::num_threads()
        );
        if let Some((_, name)) = &resume {
            println!("resuming from {name} after epoch {}", t.epochs_done());
        }
    }
    let mut last_saved: Option<usize> = resume.as_ref().map(|(ck, _)| ck.history.len());
    while t.epochs_done() < epochs {
        let e = t.epochs_done() + 1;
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::with_draw_target(
                Some(t.batches_per_epoch() as u64),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            b.set_style(
                ProgressStyle::with_template("Epoch {prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            b.set_prefix(format!("{e}/{epochs}"));
            b
        };
        let mut next_msg = Instant::now();
        let mut on_step = |p: train::StepProgress| {
            bar.set_position(p.batch as u64);
            // The message is a new string: refresh it a few times a second only.
            let now = Instant::now();
            if !quiet && now >= next_msg {
                bar.set_message(format!("loss: {:.4} - accuracy: {:.4}", p.loss, p.acc));
                next_msg = now + Duration::from_millis(100);
            }
        };
        let result = match dist.as_deref_mut() {
            Some(d) => d.run_epoch(&mut t, &mut on_step),
            None => t.run_epoch(&mut on_step),
        };
        bar.finish_and_clear();
        let m = match result {
            Ok(m) => m,
            Err(err) => {
                let kept = match (&a.save, last_saved) {
                    (Some(p), Some(k)) => format!("; the last good checkpoint, {} (epoch {k}), is kept", p.display()),
                    (Some(p), None) => format!("; {} is left as it was (no epoch finished)", p.display()),
                    (None, _) => String::new(),
                };
                return Err(match err {
                    Error::InvalidArgument { arg, what } => Error::invalid(arg, format!("{what}{kept}")),
                    other => Error::invalid("training stopped", format!("{other}{kept}")),
                });
            }
        };
        if !quiet {
            let val = match (m.val_loss, m.val_acc) {
                (Some(l), Some(acc)) => format!(" - val_loss: {l:.4} - val_accuracy: {acc:.4}"),
                _ => String::new(),
            };
            println!(
                "Epoch {e}/{epochs} - {} - loss: {:.4} - accuracy: {:.4}{val}",
                fmt_secs(m.epoch_seconds),
                m.train_loss,
                m.train_acc
            );
        }
        if let Some(p) = &a.save {
            t.checkpoint()?.save(p)?;
            last_saved = Some(e);
        }
        if let Some(p) = &a.metrics {
            metrics::write(p, t.history(), None)?;
        }
    }
    let test: Score = match dist.as_deref_mut() {
        Some(d) => d.test(&mut t)?,
        None => t.test()?,
    };
    let train_seconds: f64 = t.history().iter().map(|m| m.epoch_seconds).sum();
    if let Some(p) = &a.metrics {
        metrics::write(p, t.history(), Some((&test, train_seconds)))?;
    }
    if let Some(p) = &a.plot {
        plot::write(p, t.history())?;
    }
    if !quiet {
        println!(
            "trained {} epochs in {} ({} in this process)",
            t.epochs_done(),
            fmt_secs(train_seconds),
            fmt_secs(process_start.elapsed().as_secs_f64())
        );
    }
    if let (Some(d), false) = (dist.as_deref(), quiet) {
        println!("{}", d.summary());
    }
    if root {
        println!("test_loss: {:.4} - test_accuracy: {:.4}", test.loss, test.acc);
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<(), Error> {
    set_threads(a.threads)?;
    let name = a.model.display().to_string();
    let ck = Checkpoint::load(&a.model)?;
    let data = load_data(a.data.as_deref())?;
    let n_test = data.test.len();
    let r = train::evaluate_checkpoint(&ck, data, Cpu::new(), &name)?;
    println!(
        "model {} ({} epochs) on {n_test} test samples",
        dims_string(&ck.dims),
        ck.history.len()
    );
    println!("test_loss: {:.4} - test_accuracy: {:.4}", r.score.loss, r.score.acc);
    println!("confusion matrix (rows: true class, columns: predicted class):");
    let k = r.confusion.len();
    let width = r
        .confusion
        .iter()
        .flatten()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(1)
        .max(k.to_string().len())
        + 1;
    let mut head = format!("{:>w$} |", "", w = k.to_string().len());
    for j in 0..k {
        head.push_str(&format!("{j:>width$}"));
    }
    println!("{head}");
    println!("{}", "-".repeat(head.len()));
    for (i, row) in r.confusion.iter().enumerate() {
        let mut line = format!("{i:>w$} |", w = k.to_string().len());
        for c in row {
            line.push_str(&format!("{c:>width$}"));
        }
        println!("{line}");
    }
    Ok(())
}

fn gpu_description() -> String {
    // The driver lists each GPU here; reading it needs no CUDA library.
    let mut names = Vec::new();
    if let Ok(dirs) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        for d in dirs.flatten() {
            if let Ok(info) = std::fs::read_to_string(d.path().join("information")) {
                if let Some(model) = info.lines().find_map(|l| l.strip_prefix("Model:")) {
                    names.push(model.trim().to_string());
                }
            }
        }
    }
    if names.is_empty() {
        "none found".to_string()
    } else {
        let note = if cfg!(feature = "cuda") {
            ""
        } else {
            " (the trainer's cuda backend is not in this build)"
        };
        format!("{}{note}", names.join(", "))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => {
            println!("nnkern {}", env!("CARGO_PKG_VERSION"));
            println!("isa: {}", nnkern::Isa::detected());
            let isa = nnkern::active_isa();
            println!("fma peak ({isa}, one core): {:.1} GFLOP/s", nnkern::cpu::fma_peak());
            let b = nnkern::ops::gemm::blocking();
            println!(
                "gemm blocking ({isa}, k = 1024): MR {} NR {} KC {} MC {} NC {}",
                b.mr, b.nr, b.kc, b.mc, b.nc
            );
            let supported: Vec<&str> = nnkern::Isa::supported().iter().map(|i| i.name()).collect();
            println!("isas supported: {}", supported.join(", "));
            println!("threads: {}", nnkern::num_threads());
            println!("gpu: {}", gpu_description());
            Ok(())
        }
        Command::Train(a) => run_train(*a),
        Command::Eval(a) => run_eval(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nnkern: error: {e}");
            ExitCode::FAILURE
        }
    }
}
