//! Data-parallel training: `mpirun -np N nnkern train --distributed mpi`.
//!
//! Every rank holds the whole model and the whole data set. At the start,
//! the ranks compare their options, data sizes and data checksums (a
//! difference stops every rank with a message naming it), then rank 0's
//! weights and optimizer state are broadcast. Each epoch's shuffle depends
//! only on the seed and the epoch, so it is the same on every rank; each
//! global batch (`--batch-size` rows) is cut into `N` contiguous shares, one
//! per rank. A rank computes the mean gradient of its share; the ranks'
//! weighted losses and correct counts are gathered (a non-finite loss stops
//! every rank at once), then the gradients are summed, each share weighted
//! by `share rows / global rows`, in rank order 0, 1, …, N−1, a fixed order,
//! so a run is reproducible for a given `N` and every rank gets the same bits.
//!
//! The sum is a reduce-scatter ([`Reducer`]): the parameters are cut into
//! `N` chunks, rank `c` receives chunk `c` of every rank's gradient
//! (`MPI_Alltoallv`) and sums it. Then, without global-norm clipping, rank
//! `c` takes the optimizer step of its own chunk only (its chunk of the
//! moments stays current on it alone) and the updated chunks of the
//! parameters are gathered on every rank (`MPI_Allgatherv`): each rank sends
//! and receives `2·(N−1)/N` of the buffer, as a ring all-reduce does, while
//! the update is shared. With clipping (which needs the whole gradient's
//! norm), or a backend whose buffers are not in host memory, the summed
//! chunks of the gradient are gathered instead and every rank takes the
//! whole step: the same arithmetic, so the same bits. Either way the sum
//! never depends on the MPI library's choice of algorithm (`MPI_Allreduce`
//! does not promise an order), the replicas' weights are bitwise identical
//! after every step, and at the end of every epoch the moments' chunks are
//! gathered too, a checksum of the weights and optimizer state is compared
//! across ranks (a mismatch being an error) and the checkpoint is whole.
//! Validation and test scoring are split across the ranks the same way and
//! their sums reduced.
//!
//! Errors: one that every rank sees alike (a mismatched configuration,
//! diverged replicas, a non-finite loss) is returned on every rank, and the
//! ranks exit together; any other error on one rank ends the job through
//! `MPI_Abort` ([`Distributed::fail`]), so no rank waits forever on a peer
//! that is gone. A rank that dies outright makes `mpirun` end the job.
//!
//! Without the `mpi` feature, [`Distributed::init`] reports that the build
//! has no MPI support.

use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::{epoch_rng, score, Backend, EpochMetrics, Score, StepProgress, TrainConfig, Trainer};
use rand::seq::SliceRandom;
use std::time::Instant;

/// Test hook: `NNKERN_TEST_MPI_EXIT=RANK:STEP:exit|abort` makes rank `RANK`
/// leave (exit status 3, or `abort()`, i.e. death by a signal) just before
/// the all-reduce of global step `STEP` (1-based), as a crashed rank would.
const TEST_EXIT_ENV: &str = "NNKERN_TEST_MPI_EXIT";
/// `NNKERN_MPI_TIME_WAIT=1`: a barrier before every all-reduce, so that the
/// summary tells the wait for the slowest rank apart from the transfer
/// itself (costs one more synchronisation per step; for measurements).
const TIME_WAIT_ENV: &str = "NNKERN_MPI_TIME_WAIT";
/// Test hook: `NNKERN_TEST_MPI_OFF_HOST=1` treats the backend's buffers as
/// if they were not in host memory (as a GPU's are): gradients copied out,
/// the summed gradient gathered, the whole step on every rank.
const TEST_OFF_HOST_ENV: &str = "NNKERN_TEST_MPI_OFF_HOST";
/// Test hook: `NNKERN_TEST_MPI_RANK_STATE=DIR` makes every rank write its own
/// state as `DIR/rank<R>.ck` at the end of every epoch (to compare replicas).
const TEST_STATE_ENV: &str = "NNKERN_TEST_MPI_RANK_STATE";

#[cfg(feature = "mpi")]
mod imp {
    use crate::error::{Error, Result};
    use mpi::datatype::{Partition, PartitionMut};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    pub use mpi::Count;

    /// An initialised MPI environment and its world communicator.
    pub struct Comm {
        world: SimpleCommunicator,
        // Dropped last: finalises MPI.
        _universe: mpi::environment::Universe,
    }

    fn count(n: usize) -> Result<Count> {
        Count::try_from(n).map_err(|_| Error::invalid("--distributed", format!("{n} elements exceed MPI's count")))
    }

    impl Comm {
        pub fn init() -> Result<Comm> {
            // Only the main thread calls MPI (the kernels' worker threads never do).
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
                .ok_or_else(|| Error::invalid("--distributed", "MPI is already initialised in this process"))?;
            Ok(Comm {
                world: universe.world(),
                _universe: universe,
            })
        }
        pub fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        pub fn size(&self) -> usize {
            self.world.size() as usize
        }
        pub fn broadcast_f32(&self, buf: &mut [f32]) {
            self.world.process_at_rank(0).broadcast_into(buf);
        }
        pub fn all_gather_u64(&self, mine: &[u64], all: &mut [u64]) {
            self.world.all_gather_into(mine, all);
        }
        pub fn all_gather_varcount_u8(&self, mine: &[u8], all: &mut [u8], counts: &[usize]) -> Result<()> {
            let (counts, displs) = counts_displs(counts)?;
            let mut part = PartitionMut::new(all, counts, displs);
            self.world.all_gather_varcount_into(mine, &mut part);
            Ok(())
        }
        /// `MPI_Alltoallv` of `f32`s; counts and displacements in elements.
        pub fn all_to_all_f32(
            &self,
            send: &[f32],
            send_parts: (&[Count], &[Count]),
            recv: &mut [f32],
            recv_parts: (&[Count], &[Count]),
        ) {
            let send = Partition::new(send, send_parts.0, send_parts.1);
            let mut recv = PartitionMut::new(recv, recv_parts.0, recv_parts.1);
            self.world.all_to_all_varcount_into(&send, &mut recv);
        }
        /// `MPI_Allgatherv` of `f32`s.
        pub fn all_gather_f32(&self, mine: &[f32], all: &mut [f32], parts: (&[Count], &[Count])) {
            let mut recv = PartitionMut::new(all, parts.0, parts.1);
            self.world.all_gather_varcount_into(mine, &mut recv);
        }
        pub fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
        pub fn barrier(&self) {
            self.world.barrier();
        }
    }

    pub fn counts_displs(counts: &[usize]) -> Result<(Vec<Count>, Vec<Count>)> {
        let mut c = Vec::with_capacity(counts.len());
        let mut d = Vec::with_capacity(counts.len());
        let mut at = 0usize;
        for &n in counts {
            c.push(count(n)?);
            d.push(count(at)?);
            at = at
                .checked_add(n)
                .ok_or_else(|| Error::invalid("--distributed", "message size overflows"))?;
        }
        count(at)?;
        Ok((c, d))
    }
}

#[cfg(not(feature = "mpi"))]
mod imp {
    use crate::error::{Error, Result};

    /// MPI's count type, as in rsmpi.
    pub type Count = i32;

    /// No MPI in this build: no value of this type exists.
    pub enum Comm {}

    impl Comm {
        pub fn init() -> Result<Comm> {
            Err(Error::invalid(
                "--distributed",
                "mpi: this build has no MPI support (built without the `mpi` feature of nnkern-train; \
                 rebuild with `cargo build --release -p nnkern-train --features mpi`)",
            ))
        }
        pub fn rank(&self) -> usize {
            match *self {}
        }
        pub fn size(&self) -> usize {
            match *self {}
        }
        pub fn broadcast_f32(&self, _: &mut [f32]) {
            match *self {}
        }
        pub fn all_gather_u64(&self, _: &[u64], _: &mut [u64]) {
            match *self {}
        }
        pub fn all_gather_varcount_u8(&self, _: &[u8], _: &mut [u8], _: &[usize]) -> Result<()> {
            match *self {}
        }
        pub fn all_to_all_f32(&self, _: &[f32], _: (&[Count], &[Count]), _: &mut [f32], _: (&[Count], &[Count])) {
            match *self {}
        }
        pub fn all_gather_f32(&self, _: &[f32], _: &mut [f32], _: (&[Count], &[Count])) {
            match *self {}
        }
        pub fn abort(&self, _: i32) -> ! {
            match *self {}
        }
        pub fn barrier(&self) {
            match *self {}
        }
    }

    pub fn counts_displs(counts: &[usize]) -> Result<(Vec<Count>, Vec<Count>)> {
        let mut c = Vec::with_capacity(counts.len());
        let mut d = Vec::with_capacity(counts.len());
        let mut at = 0usize;
        let too_big = || Error::invalid("--distributed", "message size overflows");
        for &n in counts {
            c.push(Count::try_from(n).map_err(|_| too_big())?);
            d.push(Count::try_from(at).map_err(|_| too_big())?);
            at = at.checked_add(n).ok_or_else(too_big)?;
        }
        Ok((c, d))
    }
}

use imp::{counts_displs, Comm, Count};

/// Rows `[lo, hi)` of an `n`-row batch that rank `rank` of `size` takes:
/// contiguous shares that differ by at most one row.
pub fn share(n: usize, rank: usize, size: usize) -> (usize, usize) {
    // n ≤ the data set's length and size ≤ the rank count: no overflow in
    // practice; widen anyway.
    let cut = |r: usize| ((n as u128 * r as u128) / size as u128) as usize;
    (cut(rank), cut(rank + 1))
}

/// The gradient exchange: each rank's chunk of the parameters summed over
/// the ranks in rank order, the same bits on every rank.
pub struct Reducer {
    rank: usize,
    /// This rank's gradient, for a backend whose buffers are not in host memory.
    local: Vec<f32>,
    /// The whole summed gradient (when every rank takes the whole step).
    sum: Vec<f32>,
    /// Chunk `rank` of every rank's gradient, as this rank receives it, rank by rank.
    chunks: Vec<f32>,
    /// This rank's summed chunk (then, to gather, its chunk of the parameters or moments).
    mine: Vec<f32>,
    /// Chunk boundaries: chunk `c` is `starts[c]..starts[c + 1]`.
    starts: Vec<usize>,
    send_parts: (Vec<Count>, Vec<Count>),
    recv_parts: (Vec<Count>, Vec<Count>),
    gather_parts: (Vec<Count>, Vec<Count>),
}

impl Reducer {
    /// Buffers for exchanging `len` gradients among `size` ranks.
    pub fn new(len: usize, rank: usize, size: usize) -> Result<Reducer> {
        let starts: Vec<usize> = (0..=size).map(|c| share(len, c, size).0).collect();
        let lens: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let m = lens[rank];
        let gather_parts = counts_displs(&lens)?;
        let send_parts = gather_parts.clone();
        let recv_parts = counts_displs(&vec![m; size])?;
        Ok(Reducer {
            rank,
            local: vec![0.0; len],
            sum: vec![0.0; len],
            chunks: vec![0.0; m * size],
            mine: vec![0.0; m],
            starts,
            send_parts,
            recv_parts,
            gather_parts,
        })
    }

    /// The elements this rank sums (and, on the ranged path, updates).
    pub fn chunk(&self) -> std::ops::Range<usize> {
        self.starts[self.rank]..self.starts[self.rank + 1]
    }

    /// `mine = Σ_r weights[r]·(chunk of rank r's grads)`, in rank order
    /// (`MPI_Alltoallv`, then the sum here).
    fn reduce_scatter(&mut self, comm: &Comm, grads: &[f32], weights: &[f32]) {
        comm.all_to_all_f32(
            grads,
            (&self.send_parts.0, &self.send_parts.1),
            &mut self.chunks,
            (&self.recv_parts.0, &self.recv_parts.1),
        );
        sum_in_rank_order(&self.chunks, weights, &mut self.mine);
    }

    /// Every rank's `mine` into `all` at its chunk (`MPI_Allgatherv`).
    fn all_gather(&self, comm: &Comm, all: &mut [f32]) {
        comm.all_gather_f32(&self.mine, all, (&self.gather_parts.0, &self.gather_parts.1));
    }
}

/// `out[i] = ((w₀·p₀[i] + w₁·p₁[i]) + w₂·p₂[i]) + …`, each product rounded,
/// where part `r` is `chunks[r·m .. (r+1)·m]` and `m = out.len()`: the sum
/// the ranks would get by scaling their own gradients first, and the same
/// bits on every rank.
fn sum_in_rank_order(chunks: &[f32], weights: &[f32], out: &mut [f32]) {
    let m = out.len();
    if m == 0 {
        return;
    }
    for (r, (p, &w)) in chunks.chunks_exact(m).zip(weights).enumerate() {
        if r == 0 {
            for (o, &x) in out.iter_mut().zip(p) {
                *o = w * x;
            }
        } else {
            for (o, &x) in out.iter_mut().zip(p) {
                *o += w * x;
            }
        }
    }
}

/// Where a distributed run spends its steps (this rank's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Steps timed.
    pub steps: u64,
    /// Forward and backward of this rank's share (and copying its gradient
    /// out, for a backend off the host).
    pub compute_seconds: f64,
    /// Waiting for the slowest rank before the exchange (measured only
    /// with `NNKERN_MPI_TIME_WAIT=1`; otherwise part of `reduce_seconds`).
    pub wait_seconds: f64,
    /// The losses' gather and the gradient's reduce-scatter (waiting for
    /// slower ranks included, unless measured apart).
    pub reduce_seconds: f64,
    /// The optimizer step: of this rank's chunk of the parameters (ranged
    /// steps), or of all of them.
    pub update_seconds: f64,
    /// Gathering the updated chunks of the parameters (ranged steps) or the
    /// summed gradient's chunks (whole steps).
    pub gather_seconds: f64,
    /// Steps whose update was split among the ranks.
    pub ranged_steps: u64,
}

enum ExitHow {
    Exit,
    Abort,
}

/// A data-parallel run's communicator and buffers.
pub struct Distributed {
    comm: Comm,
    rank: usize,
    size: usize,
    reducer: Option<Reducer>,
    times: StepTimes,
    test_exit: Option<(usize, u64, ExitHow)>,
    time_wait: bool,
    /// Whether to use the backend's host views of its buffers (see [`TEST_OFF_HOST_ENV`]).
    host_views: bool,
    /// Set when an error was found alike on every rank (they all stop).
    collective_error: bool,
}

fn dist_err(what: impl Into<String>) -> Error {
    Error::invalid("--distributed", what)
}

impl Distributed {
    /// Joins the job `--distributed KIND` names (`mpi`).
    pub fn init(kind: &str) -> Result<Distributed> {
        match kind.trim().to_ascii_lowercase().as_str() {
            "mpi" => {}
            other => return Err(dist_err(format!("unknown kind {other:?}; expected mpi"))),
        }
        let comm = Comm::init()?;
        let (rank, size) = (comm.rank(), comm.size());
        let test_exit = std::env::var(TEST_EXIT_ENV).ok().and_then(|v| {
            let mut it = v.split(':');
            let r = it.next()?.parse().ok()?;
            let s = it.next()?.parse().ok()?;
            let how = match it.next()? {
                "abort" => ExitHow::Abort,
                _ => ExitHow::Exit,
            };
            Some((r, s, how))
        });
        Ok(Distributed {
            comm,
            rank,
            size,
            reducer: None,
            times: StepTimes::default(),
            test_exit,
            time_wait: std::env::var_os(TIME_WAIT_ENV).is_some_and(|v| v == "1"),
            host_views: std::env::var_os(TEST_OFF_HOST_ENV).is_none_or(|v| v != "1"),
            collective_error: false,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Whether this is rank 0 (the one that prints and writes files).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }
    /// Where this rank's steps went so far.
    pub fn times(&self) -> StepTimes {
        self.times
    }

    fn collective(&mut self, what: String) -> Error {
        self.collective_error = true;
        dist_err(what)
    }

    /// Ends this rank after `err`: an error every rank saw alike is
    /// returned (each rank exits on its own, rank 0 reports it); any other
    /// is printed with the rank's number and ends the whole job through
    /// `MPI_Abort`, since the other ranks may be waiting on this one.
    pub fn fail(&self, err: Error) -> Error {
        if self.collective_error || self.size == 1 {
            return err;
        }
        eprintln!("nnkern: error on rank {} of {}: {err}", self.rank, self.size);
        self.comm.abort(1)
    }

    /// Compares what defines the run on every rank (options, thread count,
    /// backend, kernel ISA, data sizes and checksums, the checkpoint resumed
    /// from) and fails on every rank, naming the first difference, unless
    /// they all agree.
    pub fn check_agreement(
        &mut self,
        cfg: &TrainConfig,
        data: &Dataset,
        resume: Option<&Checkpoint>,
        backend: &str,
    ) -> Result<()> {
        let test_crc = {
            let mut h = crc32fast::Hasher::new();
            h.update(&data.test.images);
            for &l in &data.test.labels {
                h.update(&l.to_le_bytes());
            }
            h.finalize()
        };
        let items: Vec<(&str, String)> = vec![
            ("--hidden", format!("{:?}", cfg.hidden)),
            ("--activation", cfg.activation.to_string()),
            (
                "--optimizer (with --lr, --momentum, --weight-decay)",
                cfg.optimizer_name(),
            ),
            ("--batch-size", cfg.batch_size.to_string()),
            ("--epochs", cfg.epochs.to_string()),
            ("--val-split", format!("{:?}", cfg.val_split)),
            ("--clip-norm", format!("{:?}", cfg.clip_norm)),
            ("--seed", cfg.seed.to_string()),
            ("--threads", nnkern::num_threads().to_string()),
            ("--backend", backend.to_string()),
            ("the kernel ISA (NNKERN_ISA)", nnkern::active_isa().to_string()),
            ("the nnkern version", env!("CARGO_PKG_VERSION").to_string()),
            (
                "the training data",
                format!(
                    "{} samples of {} features, {} classes, CRC-32 {:08x}",
                    data.train.len(),
                    data.train.features,
                    data.classes,
                    data.train_fingerprint()
                ),
            ),
            (
                "the test data",
                format!("{} samples, CRC-32 {test_crc:08x}", data.test.len()),
            ),
            (
                "--resume",
                match resume {
                    None => "none".to_string(),
                    Some(ck) => format!("a checkpoint after epoch {} (step {})", ck.history.len(), ck.step),
                },
            ),
        ];
        let mine: String = items
            .iter()
            .map(|(k, v)| format!("{}\t{}\n", k, v.replace(['\t', '\n'], " ")))
            .collect();
        let all = self.all_gather_bytes(mine.as_bytes())?;
        let root = String::from_utf8_lossy(&all[0]).into_owned();
        for (r, theirs) in all.iter().enumerate().skip(1) {
            let theirs = String::from_utf8_lossy(theirs);
            if theirs == root {
                continue;
            }
            let mut lines0 = root.lines();
            for line in theirs.lines() {
                let l0 = lines0.next().unwrap_or("");
                if line != l0 {
                    let (k, v) = line.split_once('\t').unwrap_or((line, ""));
                    let (_, v0) = l0.split_once('\t').unwrap_or((l0, ""));
                    return Err(self.collective(format!(
                        "the ranks disagree: rank {r} has {k} = {v}, rank 0 has {v0}; \
                         every rank must run the same options on the same data"
                    )));
                }
            }
            return Err(self.collective(format!(
                "the ranks disagree: rank {r}'s configuration differs from rank 0's"
            )));
        }
        Ok(())
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut lens = vec![0u64; self.size];
        self.comm.all_gather_u64(&[mine.len() as u64], &mut lens);
        let lens: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let total = lens.iter().try_fold(0usize, |a, &l| a.checked_add(l));
        let total = total.ok_or_else(|| dist_err("configuration message too long"))?;
        let mut all = vec![0u8; total];
        self.comm.all_gather_varcount_u8(mine, &mut all, &lens)?;
        let mut out = Vec::with_capacity(self.size);
        let mut at = 0;
        for l in lens {
            out.push(all[at..at + l].to_vec());
            at += l;
        }
        Ok(out)
    }

    /// Gives every rank rank 0's weights, optimizer state and step count,
    /// and sizes the all-reduce buffers.
    pub fn sync_state<B: Backend>(&mut self, t: &mut Trainer<B>) -> Result<()> {
        let (mut params, mut opt) = t.model.state_to_host(&mut t.be)?;
        self.comm.broadcast_f32(&mut params);
        for o in &mut opt {
            self.comm.broadcast_f32(o);
        }
        let step = t.model.step();
        t.model.set_state(&mut t.be, &params, &opt, step)?;
        self.reducer = Some(Reducer::new(t.model.n_params(), self.rank, self.size)?);
        Ok(())
    }

    /// [`Trainer::run_epoch`] across the ranks; the metrics are the global ones.
    pub fn run_epoch<B: Backend>(
        &mut self,
        t: &mut Trainer<B>,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochMetrics> {
        let Some(mut red) = self.reducer.take() else {
            return Err(dist_err("the ranks' state was not synchronised before training"));
        };
        let r = self.epoch_with(t, &mut red, on_step);
        self.reducer = Some(red);
        let m = r?;
        self.check_replicas(t)?;
        if let Some(dir) = std::env::var_os(TEST_STATE_ENV) {
            let p = std::path::Path::new(&dir).join(format!("rank{}.ck", self.rank));
            t.checkpoint()?.save(&p)?;
        }
        Ok(m)
    }

    fn epoch_with<B: Backend>(
        &mut self,
        t: &mut Trainer<B>,
        red: &mut Reducer,
        on_step: &mut dyn FnMut(StepProgress),
    ) -> Result<EpochMetrics> {
        let start = Instant::now();
        let epoch = t.history.len();
        for (i, p) in t.perm.iter_mut().enumerate() {
            *p = i as u32;
        }
        t.perm.shuffle(&mut epoch_rng(t.cfg.seed, epoch));
        let batches = t.batches_per_epoch();
        // Each rank updates only its chunk of the parameters, and the chunks
        // are then gathered, where the backend's buffers are host memory
        // with ranged steps and no global-norm clipping needs the whole
        // gradient; otherwise every rank gathers the summed gradient and
        // takes the whole step.
        let host = self.host_views && t.be.host_mut(t.model.params_and_grads_mut().1).is_some();
        let ranged = host && t.cfg.clip_norm.is_none() && t.be.supports_ranged_update();
        let chunk = red.chunk();
        let mut weights = vec![0f32; self.size];
        let mut losses = vec![0u64; 2 * self.size];
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut ranged_steps = 0;
        for b in 0..batches {
            let t0 = Instant::now();
            let global = &t.perm[b * t.batch..((b + 1) * t.batch).min(t.n_fit)];
            let n = global.len();
            for (r, w) in weights.iter_mut().enumerate() {
                // Each share's mean gradient, weighted by its part of the batch.
                let (lo, hi) = share(n, r, self.size);
                *w = ((hi - lo) as f64 / n as f64) as f32;
            }
            let (lo, hi) = share(n, self.rank, self.size);
            let rows = &global[lo..hi];
            let m = rows.len();
            let (loss, c) = if m > 0 {
                for (dst, &r) in t.batch_labels.iter_mut().zip(rows) {
                    *dst = t.train_labels[r as usize];
                }
                t.model
                    .load_batch(&mut t.be, &t.train_images, rows, &t.batch_labels[..m])?;
                t.model.compute_gradients(&mut t.be, m)?
            } else {
                (0.0, 0)
            };
            // The gradient to send: the model's own buffer where it is host
            // memory, else a copy; zeros from a rank without rows.
            if !host {
                if m > 0 {
                    t.model.grads_into(&mut t.be, &mut red.local)?;
                } else {
                    red.local.fill(0.0);
                }
            } else if m == 0 {
                let (_, grads) = t.model.params_and_grads_mut();
                t.be.host_mut(grads)
                    .expect("host memory, checked for the epoch")
                    .fill(0.0);
            }
            let step = t.model.step() + 1;
            if let Some((r, s, how)) = &self.test_exit {
                if *r == self.rank && *s == step {
                    match how {
                        ExitHow::Exit => std::process::exit(3),
                        ExitHow::Abort => std::process::abort(),
                    }
                }
            }
            let tw = Instant::now();
            if self.time_wait {
                self.comm.barrier();
            }
            let t1 = Instant::now();
            // The shares' weighted losses, summed in rank order, and correct counts.
            let w_mine = weights[self.rank];
            self.comm
                .all_gather_u64(&[(loss * w_mine).to_bits() as u64, c as u64], &mut losses);
            let mut loss = 0f32;
            let mut c = 0usize;
            for (r, pair) in losses.chunks_exact(2).enumerate() {
                let l = f32::from_bits(pair[0] as u32);
                loss = if r == 0 { l } else { loss + l };
                c += pair[1] as usize;
            }
            if !loss.is_finite() {
                return Err(self.collective(format!(
                    "training stopped: the loss became {loss} at step {step} (epoch {}, batch {} of {batches})",
                    epoch + 1,
                    b + 1
                )));
            }
            {
                let (_, grads) = t.model.params_and_grads_mut();
                match t.be.host_mut(grads).filter(|_| host) {
                    Some(g) => red.reduce_scatter(&self.comm, g, &weights),
                    None => {
                        let local = std::mem::take(&mut red.local);
                        red.reduce_scatter(&self.comm, &local, &weights);
                        red.local = local;
                    }
                }
            }
            let t2 = Instant::now();
            let (t3, t4) = if ranged {
                {
                    let (_, grads) = t.model.params_and_grads_mut();
                    let g = t.be.host_mut(grads).expect("host memory, checked for the epoch");
                    g[chunk.clone()].copy_from_slice(&red.mine);
                }
                t.model.apply_gradients_range(&mut t.be, chunk.clone())?;
                let t3 = Instant::now();
                let (params, _) = t.model.params_and_grads_mut();
                let p = t.be.host_mut(params).expect("host memory, checked for the epoch");
                red.mine.copy_from_slice(&p[chunk.clone()]);
                red.all_gather(&self.comm, p);
                ranged_steps += 1;
                (t3, Instant::now())
            } else {
                let mut sum = std::mem::take(&mut red.sum);
                red.all_gather(&self.comm, &mut sum);
                red.sum = sum;
                let gathered = Instant::now();
                t.model.set_grads(&mut t.be, &red.sum)?;
                t.model.apply_gradients(&mut t.be, t.cfg.clip_norm)?;
                // Here the gather came first: (update end, gather end) as if in that order.
                let end = Instant::now();
                (t2 + (end - gathered), end)
            };
            self.times.update_seconds += (t3 - t2).as_secs_f64();
            self.times.gather_seconds += (t4 - t3).as_secs_f64();
            self.times.steps += 1;
            self.times.compute_seconds += (tw - t0).as_secs_f64();
            self.times.wait_seconds += (t1 - tw).as_secs_f64();
            self.times.reduce_seconds += (t2 - t1).as_secs_f64();
            loss_sum += loss as f64 * n as f64;
            correct += c;
            seen += n;
            on_step(StepProgress {
                batch: b + 1,
                batches,
                loss: loss_sum / seen as f64,
                acc: correct as f64 / seen as f64,
            });
        }
        self.times.ranged_steps += ranged_steps;
        if ranged_steps > 0 {
            // Each rank's moments are current on its own chunk only.
            self.gather_optimizer_state(t, red)?;
        }
        let val = if t.n_val > 0 {
            Some(self.score_range(t, Split::Validation)?)
        } else {
            None
        };
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_acc: correct as f64 / seen as f64,
            val_loss: val.map(|s| s.loss),
            val_acc: val.map(|s| s.acc),
            epoch_seconds: start.elapsed().as_secs_f64(),
        };
        t.history.push(m);
        Ok(m)
    }

    /// Gives every rank every chunk of the optimizer state (after ranged
    /// steps, each rank's moments are current on its own chunk only), so
    /// that the replicas' state and the checkpoint are whole.
    fn gather_optimizer_state<B: Backend>(&mut self, t: &mut Trainer<B>, red: &mut Reducer) -> Result<()> {
        let (params, mut opt) = t.model.state_to_host(&mut t.be)?;
        let chunk = red.chunk();
        for o in &mut opt {
            red.mine.copy_from_slice(&o[chunk.clone()]);
            red.all_gather(&self.comm, o);
        }
        let step = t.model.step();
        t.model.set_state(&mut t.be, &params, &opt, step)
    }

    /// [`Trainer::test`] across the ranks.
    pub fn test<B: Backend>(&mut self, t: &mut Trainer<B>) -> Result<Score> {
        self.score_range(t, Split::Test)
    }

    fn score_range<B: Backend>(&mut self, t: &mut Trainer<B>, which: Split) -> Result<Score> {
        let (images, labels, first) = match which {
            Split::Validation => (&t.train_images, &t.train_labels[t.n_fit..t.n_fit + t.n_val], t.n_fit),
            Split::Test => (&t.test_images, &t.test_labels[..], 0),
        };
        let n = labels.len();
        let (lo, hi) = share(n, self.rank, self.size);
        let s = score(
            &mut t.be,
            &mut t.model,
            images,
            &labels[lo..hi],
            first + lo,
            &mut t.eval_rows,
        )?;
        let m = (hi - lo) as f64;
        let mine = [(s.loss * m).to_bits(), (s.acc * m).round() as u64];
        let mut all = vec![0u64; 2 * self.size];
        self.comm.all_gather_u64(&mine, &mut all);
        let (mut loss, mut correct) = (0.0f64, 0u64);
        for pair in all.chunks_exact(2) {
            loss += f64::from_bits(pair[0]);
            correct += pair[1];
        }
        if n == 0 {
            return Ok(Score { loss: 0.0, acc: 0.0 });
        }
        Ok(Score {
            loss: loss / n as f64,
            acc: correct as f64 / n as f64,
        })
    }

    /// Compares a checksum of every rank's weights, optimizer state and step
    /// count; fails on every rank when one differs from rank 0's.
    pub fn check_replicas<B: Backend>(&mut self, t: &mut Trainer<B>) -> Result<()> {
        let (params, opt) = t.model.state_to_host(&mut t.be)?;
        let mut h = crc32fast::Hasher::new();
        for x in params.iter().chain(opt.iter().flatten()) {
            h.update(&x.to_bits().to_le_bytes());
        }
        h.update(&t.model.step().to_le_bytes());
        let mine = h.finalize() as u64;
        let mut all = vec![0u64; self.size];
        self.comm.all_gather_u64(&[mine], &mut all);
        if let Some(r) = all.iter().position(|&c| c != all[0]) {
            return Err(self.collective(format!(
                "the replicas diverged after epoch {}: rank {r}'s weights and optimizer state have \
                 checksum {:08x}, rank 0's {:08x}",
                t.history.len(),
                all[r],
                all[0]
            )));
        }
        Ok(())
    }

    /// One line on where the steps went, for rank 0 to print.
    pub fn summary(&self) -> String {
        let s = self.times;
        let n = s.steps.max(1) as f64;
        let total = s.compute_seconds + s.wait_seconds + s.reduce_seconds + s.update_seconds + s.gather_seconds;
        let pct = |x: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
        let ms = |x: f64| 1e3 * x / n;
        let reduce = if self.time_wait {
            format!(
                "wait for the slowest rank {:.3} ms ({:.1}%), reduce-scatter {:.3} ms ({:.1}%)",
                ms(s.wait_seconds),
                pct(s.wait_seconds),
                ms(s.reduce_seconds),
                pct(s.reduce_seconds)
            )
        } else {
            format!(
                "reduce-scatter {:.3} ms ({:.1}%, waiting for the slowest rank included)",
                ms(s.reduce_seconds),
                pct(s.reduce_seconds)
            )
        };
        let (update, gather) = if s.ranged_steps == s.steps {
            ("update of this rank's chunk", "all-gather of the parameters")
        } else {
            ("update", "all-gather of the summed gradient")
        };
        format!(
            "distributed: {} ranks, {} steps; per step on rank 0: {:.3} ms = compute {:.3} ms, {reduce}, {update} {:.3} ms, {gather} {:.3} ms ({:.1}%)",
            self.size,
            s.steps,
            ms(total),
            ms(s.compute_seconds),
            ms(s.update_seconds),
            ms(s.gather_seconds),
            pct(s.gather_seconds),
        )
    }
}

#[derive(Clone, Copy)]
enum Split {
    Validation,
    Test,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        for n in 0..40 {
            for size in 1..6 {
                let mut next = 0;
                for r in 0..size {
                    let (lo, hi) = share(n, r, size);
                    assert_eq!(lo, next);
                    assert!(hi >= lo && hi - lo <= n.div_ceil(size));
                    next = hi;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn the_sum_goes_in_rank_order() {
        // (1 + 2^-24) + 2^-24 rounds to 1; (2^-24 + 2^-24) + 1 is 1 + 2^-23.
        let tiny = f32::EPSILON / 2.0;
        // Rank 0's chunk, then rank 1's, then rank 2's.
        let chunks = [1.0, tiny, tiny, tiny, tiny, 1.0];
        let mut out = [0.0; 2];
        sum_in_rank_order(&chunks, &[1.0; 3], &mut out);
        assert_eq!(out[0], 1.0);
        assert_eq!(out[1], 1.0 + f32::EPSILON);
    }

    #[test]
    fn each_part_is_weighted_then_summed() {
        // Each rank's part times its own weight (swapped weights would give
        // 0.25·3 + 0.1·5 = 1.25, one weight for both 0.8 or 2.0).
        let chunks = [3.0f32, -3.0, 5.0, 2.0];
        let w = [0.1f32, 0.25];
        let mut out = [0.0; 2];
        sum_in_rank_order(&chunks, &w, &mut out);
        assert_eq!(out[0].to_bits(), (0.1f32 * 3.0 + 0.25 * 5.0).to_bits());
        assert_eq!(out[1].to_bits(), (0.1f32 * -3.0 + 0.25 * 2.0).to_bits());
        assert!((out[0] - 1.55).abs() < 1e-6 && (out[1] - 0.2).abs() < 1e-6, "{out:?}");
    }
}
