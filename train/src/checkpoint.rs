//! The checkpoint: model, optimizer state and run history in one file.
//!
//! Format (version 1), all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `NNKERNCK` |
//! | 4 | format version, `u32` (1) |
//! | 4 | header length `H`, `u32` |
//! | H | header: a UTF-8 JSON object — `dims` (layer widths, input first), `activation`, `optimizer` (kind and every hyperparameter), `batch_size`, `val_split`, `clip_norm`, `seed`, `epochs`, `train_samples`, `train_fingerprint` (CRC-32 of the training split), `step` (optimizer steps taken), `history` (one object per completed epoch) |
//! | 4 | tensor count `T`, `u32`: 1 + 2 for Adam (`m`, `v`), 1 + 1 for SGD (momentum) |
//! | T × (8 + 4n) | each tensor: element count `n` as `u64`, then `n` × `f32`; the first holds the parameters (`W_1, b_1, W_2, b_2, …`, each `W` row-major inputs × outputs), every tensor has the parameter count implied by `dims` |
//! | 4 | CRC-32 (IEEE, as in gzip) of every byte before it |
//!
//! Files are written atomically (temporary file, `fsync`, rename), so a
//! crash leaves either the previous checkpoint or the new one. Reading checks
//! the magic, the version, every length against the file size, the shapes
//! against `dims`, and the checksum, and names the file in any error.

use super::fsutil::write_atomic;
use super::mlp::{param_layout, Optimizer};
use super::{BatchSize, Dataset, EpochMetrics, TrainConfig};
use crate::error::{Error, Result};
use nnkern::ops::activation::Activation;
use nnkern::ops::optim::{AdamConfig, AdamEpsilon, SgdConfig, WeightDecay};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The first eight bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"NNKERNCK";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// Everything needed to continue a run, or to use its model.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Layer widths `[inputs, hidden…, classes]`.
    pub dims: Vec<usize>,
    /// The run's options.
    pub config: TrainConfig,
    /// Samples in the training file (before the validation split).
    pub train_samples: usize,
    /// CRC-32 of the training split ([`Dataset::train_fingerprint`]).
    pub train_fingerprint: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// Metrics of the completed epochs.
    pub history: Vec<EpochMetrics>,
    /// The parameters.
    pub params: Vec<f32>,
    /// Optimizer buffers: `m`, `v` for Adam; the momentum for SGD.
    pub opt_state: Vec<Vec<f32>>,
}

fn bad(path: &str, what: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_string(),
        what: what.into(),
    }
}

fn opt_json(o: &Optimizer) -> Value {
    match o {
        Optimizer::Adam(c) => json!({
            "kind": "adam",
            "lr": c.lr as f64,
            "beta1": c.beta1 as f64,
            "beta2": c.beta2 as f64,
            "eps": c.eps as f64,
            "weight_decay": c.weight_decay as f64,
            "decay": match c.decay { WeightDecay::L2 => "l2", WeightDecay::Decoupled => "decoupled" },
            "epsilon": match c.epsilon { AdamEpsilon::Keras => "keras", AdamEpsilon::PyTorch => "pytorch" },
        }),
        Optimizer::Sgd(c) => json!({
            "kind": "sgd",
            "lr": c.lr as f64,
            "momentum": c.momentum as f64,
            "weight_decay": c.weight_decay as f64,
        }),
    }
}

fn opt_value(v: &Value) -> Option<f64> {
    match v {
        Value::Null => Some(f64::NAN),
        v => v.as_f64(),
    }
}

fn metrics_json(m: &EpochMetrics) -> Value {
    json!({
        "epoch": m.epoch,
        "train_loss": m.train_loss,
        "train_acc": m.train_acc,
        "val_loss": m.val_loss,
        "val_acc": m.val_acc,
        "epoch_seconds": m.epoch_seconds,
    })
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a str,
}

impl Fields<'_> {
    fn get(&self, k: &str) -> Result<&Value> {
        self.obj
            .get(k)
            .ok_or_else(|| bad(self.path, format!("header has no field {k:?}")))
    }
    fn f64(&self, k: &str) -> Result<f64> {
        opt_value(self.get(k)?).ok_or_else(|| bad(self.path, format!("header field {k:?} is not a number")))
    }
    fn f32(&self, k: &str) -> Result<f32> {
        Ok(self.f64(k)? as f32)
    }
    fn u64(&self, k: &str) -> Result<u64> {
        self.get(k)?
            .as_u64()
            .ok_or_else(|| bad(self.path, format!("header field {k:?} is not an unsigned integer")))
    }
    fn str(&self, k: &str) -> Result<&str> {
        self.get(k)?
            .as_str()
            .ok_or_else(|| bad(self.path, format!("header field {k:?} is not a string")))
    }
    fn opt_f64(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k)? {
            Value::Null => Ok(None),
            v => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(self.path, format!("header field {k:?} is not a number"))),
        }
    }
}

fn parse_optimizer(v: &Value, path: &str) -> Result<Optimizer> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(path, "header field \"optimizer\" is not an object"))?;
    let f = Fields { obj, path };
    match f.str("kind")? {
        "adam" => Ok(Optimizer::Adam(AdamConfig {
            lr: f.f32("lr")?,
            beta1: f.f32("beta1")?,
            beta2: f.f32("beta2")?,
            eps: f.f32("eps")?,
            weight_decay: f.f32("weight_decay")?,
            decay: match f.str("decay")? {
                "l2" => WeightDecay::L2,
                "decoupled" => WeightDecay::Decoupled,
                o => return Err(bad(path, format!("unknown weight decay {o:?}"))),
            },
            epsilon: match f.str("epsilon")? {
                "keras" => AdamEpsilon::Keras,
                "pytorch" => AdamEpsilon::PyTorch,
                o => return Err(bad(path, format!("unknown epsilon placement {o:?}"))),
            },
        })),
        "sgd" => Ok(Optimizer::Sgd(SgdConfig {
            lr: f.f32("lr")?,
            momentum: f.f32("momentum")?,
            weight_decay: f.f32("weight_decay")?,
        })),
        o => Err(bad(path, format!("unknown optimizer {o:?}"))),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                bad(
                    self.path,
                    format!(
                        "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                        self.pos,
                        self.bytes.len()
                    ),
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl Checkpoint {
    /// The optimizer buffers a checkpoint of this optimizer holds.
    fn opt_buffers(o: &Optimizer) -> usize {
        match o {
            Optimizer::Adam(_) => 2,
            Optimizer::Sgd(_) => 1,
        }
    }

    /// Serialises the checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        let c = &self.config;
        let header = json!({
            "dims": self.dims,
            "activation": c.activation.name(),
            "optimizer": opt_json(&c.optimizer),
            "batch_size": c.batch_size.to_string(),
            "val_split": c.val_split,
            "clip_norm": c.clip_norm.map(|x| x as f64),
            "seed": c.seed,
            "epochs": c.epochs,
            "train_samples": self.train_samples,
            "train_fingerprint": self.train_fingerprint,
            "step": self.step,
            "history": self.history.iter().map(metrics_json).collect::<Vec<_>>(),
        })
        .to_string();
        let tensors: Vec<&[f32]> = std::iter::once(self.params.as_slice())
            .chain(self.opt_state.iter().map(|v| v.as_slice()))
            .collect();
        let body: usize = tensors.iter().map(|t| 8 + 4 * t.len()).sum();
        let mut out = Vec::with_capacity(8 + 4 + 4 + header.len() + 4 + body + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
        for t in tensors {
            out.extend_from_slice(&(t.len() as u64).to_le_bytes());
            for x in t {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }

    /// Reads and validates a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| bad(&name, format!("cannot read: {e}")))?;
        Checkpoint::from_bytes(&bytes, &name)
    }

    /// Parses a checkpoint held in memory; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Checkpoint> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(bad(
                path,
                "not an nnkern checkpoint (the file does not start with NNKERNCK)",
            ));
        }
        if bytes.len() < 8 + 4 + 4 + 4 + 4 {
            return Err(bad(path, format!("truncated: {} bytes", bytes.len())));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(bad(
                path,
                format!("checkpoint format version {version}; this build reads version {VERSION}"),
            ));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(bad(
                path,
                format!(
                    "damaged: checksum {actual:08x} does not match the stored {stored:08x} (truncated or altered file)"
                ),
            ));
        }
        let mut r = Reader {
            bytes: body,
            pos: 12,
            path,
        };
        let hlen = r.u32("the header length")? as usize;
        let header = r.take(hlen, "the header")?;
        let header: Value =
            serde_json::from_slice(header).map_err(|e| bad(path, format!("header is not valid JSON: {e}")))?;
        let obj = header
            .as_object()
            .ok_or_else(|| bad(path, "header is not a JSON object"))?;
        let f = Fields { obj, path };
        let dims: Vec<usize> = f
            .get("dims")?
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(path, "header field \"dims\" is not a list of widths"))?;
        let (_, n_params) = param_layout(&dims).map_err(|e| bad(path, format!("dims {dims:?}: {e}")))?;
        let activation: Activation = f.str("activation")?.parse().map_err(|e| bad(path, format!("{e}")))?;
        let optimizer = parse_optimizer(f.get("optimizer")?, path)?;
        let batch_size: BatchSize = f.str("batch_size")?.parse().map_err(|e| bad(path, format!("{e}")))?;
        let config = TrainConfig {
            hidden: dims[1..dims.len() - 1].to_vec(),
            activation,
            optimizer,
            batch_size,
            epochs: f.u64("epochs")? as usize,
            val_split: f.f64("val_split")?,
            clip_norm: f.opt_f64("clip_norm")?.map(|x| x as f32),
            seed: f.u64("seed")?,
        };
        let mut history = Vec::new();
        for (i, h) in f
            .get("history")?
            .as_array()
            .ok_or_else(|| bad(path, "header field \"history\" is not a list"))?
            .iter()
            .enumerate()
        {
            let obj = h
                .as_object()
                .ok_or_else(|| bad(path, format!("history entry {i} is not an object")))?;
            let hf = Fields { obj, path };
            history.push(EpochMetrics {
                epoch: hf.u64("epoch")? as usize,
                train_loss: hf.f64("train_loss")?,
                train_acc: hf.f64("train_acc")?,
                val_loss: hf.opt_f64("val_loss")?,
                val_acc: hf.opt_f64("val_acc")?,
                epoch_seconds: hf.f64("epoch_seconds")?,
            });
        }
        let tensors = r.u32("the tensor count")? as usize;
        let expected = 1 + Checkpoint::opt_buffers(&config.optimizer);
        if tensors != expected {
            return Err(bad(
                path,
                format!("holds {tensors} tensors; a model with this optimizer needs {expected}"),
            ));
        }
        let mut all = Vec::with_capacity(tensors);
        for t in 0..tensors {
            let n = r.u64("a tensor length")?;
            if n != n_params as u64 {
                return Err(bad(
                    path,
                    format!("tensor {t} holds {n} values but dims {dims:?} need {n_params}"),
                ));
            }
            let bytes = n_params
                .checked_mul(4)
                .ok_or_else(|| bad(path, format!("dims {dims:?} need more parameters than memory holds")))?;
            let raw = r.take(bytes, "tensor data")?;
            all.push(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect::<Vec<f32>>(),
            );
        }
        if r.pos != body.len() {
            return Err(bad(
                path,
                format!("{} unexpected bytes after the tensors", body.len() - r.pos),
            ));
        }
        let params = all.remove(0);
        Ok(Checkpoint {
            dims,
            config,
            train_samples: f.u64("train_samples")? as usize,
            train_fingerprint: f.u64("train_fingerprint")? as u32,
            step: f.u64("step")?,
            history,
            params,
            opt_state: all,
        })
    }

    /// Refuses to resume under options or data other than the run's own
    /// (`--epochs` may differ: it says how far to go).
    pub fn check_compatible(&self, cfg: &TrainConfig, data: &Dataset, path: &str) -> Result<()> {
        let want = cfg.dims(data.train.features, data.classes);
        if want != self.dims {
            let fmt = |d: &[usize]| d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("-");
            return Err(bad(
                path,
                format!(
                    "checkpoint of another model shape: it holds {} but the options and data ask for {} (--hidden, --data)",
                    fmt(&self.dims),
                    fmt(&want)
                ),
            ));
        }
        let c = &self.config;
        let mismatch = |opt: &str, have: String, want: String| {
            bad(
                path,
                format!("the checkpoint was trained with {opt} {have}, the options give {want}; resume with the same options"),
            )
        };
        if c.activation != cfg.activation {
            return Err(mismatch(
                "--activation",
                c.activation.to_string(),
                cfg.activation.to_string(),
            ));
        }
        if c.optimizer != cfg.optimizer {
            return Err(mismatch(
                "--optimizer/--lr",
                super::TrainConfig {
                    optimizer: c.optimizer,
                    ..cfg.clone()
                }
                .optimizer_name(),
                cfg.optimizer_name(),
            ));
        }
        if c.batch_size != cfg.batch_size {
            return Err(mismatch(
                "--batch-size",
                c.batch_size.to_string(),
                cfg.batch_size.to_string(),
            ));
        }
        if c.val_split.to_bits() != cfg.val_split.to_bits() {
            return Err(mismatch(
                "--val-split",
                c.val_split.to_string(),
                cfg.val_split.to_string(),
            ));
        }
        if c.clip_norm != cfg.clip_norm {
            return Err(mismatch(
                "--clip-norm",
                format!("{:?}", c.clip_norm),
                format!("{:?}", cfg.clip_norm),
            ));
        }
        if c.seed != cfg.seed {
            return Err(mismatch("--seed", c.seed.to_string(), cfg.seed.to_string()));
        }
        if self.train_samples != data.train.len() || self.train_fingerprint != data.train_fingerprint() {
            return Err(bad(
                path,
                format!(
                    "the checkpoint was trained on other data ({} training samples, fingerprint {:08x}) than {} ({} samples, fingerprint {:08x})",
                    self.train_samples,
                    self.train_fingerprint,
                    data.source,
                    data.train.len(),
                    data.train_fingerprint()
                ),
            ));
        }
        Ok(())
    }
}
