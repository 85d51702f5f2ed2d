//! # nnkern
//!
//! Hand-optimised compute kernels for training neural networks: GEMM,
//! activations, fused softmax + cross-entropy, bias and optimizer updates,
//! with runtime ISA dispatch on the CPU, and a naive
//! [`reference`](mod@reference) implementation of every operation that all fast kernels are
//! tested against.
//!
//! Every public function validates its arguments once, at the boundary, and
//! returns [`Result`]; matrices are described by [`MatRef`] / [`MatMut`]
//! views (shape plus row and column strides), so transposes and sub-matrices
//! cost nothing.
//!
//! ```
//! use nnkern::{gemm, MatMut, MatRef};
//! // C (2×2) = A (2×3) · Bᵀ, with B stored row-major as 2×3.
//! let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let b = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0];
//! let mut c = [0.0f32; 4];
//! gemm(1.0, MatRef::new(&a, 2, 3)?, MatRef::new(&b, 2, 3)?.t(), 0.0, MatMut::new(&mut c, 2, 2)?)?;
//! assert_eq!(c, [4.0, 2.0, 10.0, 5.0]);
//! # Ok::<(), nnkern::Error>(())
//! ```
//!
//! ## A training step
//!
//! One dense layer with softmax-cross-entropy and Adam, batch of 2:
//!
//! ```
//! use nnkern::{adam_step, bias_add, bias_grad, gemm, softmax_xent, AdamConfig, AdamState, MatMut, MatRef, Targets};
//! let x = [1.0f32, 0.0, 0.0, 1.0];                 // 2 samples × 2 features
//! let (mut w, mut b) = (vec![0.0f32; 4], vec![0.0f32; 2]); // 2 features × 2 classes
//! let (mut logits, mut dlogits) = ([0.0f32; 4], [0.0f32; 4]);
//! gemm(1.0, MatRef::new(&x, 2, 2)?, MatRef::new(&w, 2, 2)?, 0.0, MatMut::new(&mut logits, 2, 2)?)?;
//! bias_add(MatMut::new(&mut logits, 2, 2)?, &b)?;
//! let loss = softmax_xent(MatRef::new(&logits, 2, 2)?, Targets::Labels(&[0, 1]), MatMut::new(&mut dlogits, 2, 2)?)?;
//! assert!((loss - std::f32::consts::LN_2).abs() < 1e-6);  // uniform prediction
//! let (mut dw, mut db) = ([0.0f32; 4], [0.0f32; 2]);
//! let dl = MatRef::new(&dlogits, 2, 2)?;
//! gemm(1.0, MatRef::new(&x, 2, 2)?.t(), dl, 0.0, MatMut::new(&mut dw, 2, 2)?)?; // dW = Xᵀ·dlogits
//! bias_grad(dl, &mut db)?;
//! let cfg = AdamConfig::default();
//! let mut state = AdamState::new(w.len());
//! adam_step(&cfg, &mut state, 1, &mut w, &dw)?;
//! assert!(w[0] > 0.0 && w[1] < 0.0);               // class 0 now favoured for sample 0
//! # let _ = &mut b;
//! # Ok::<(), nnkern::Error>(())
//! ```
//!
//! From C, C++ or Python: the `nnkern-capi` crate of this workspace builds
//! `libnnkern.so` / `libnnkern.a`, declared in `include/nnkern.h`.
//!
//! ## Threads
//!
//! Kernels split large work over at most [`num_threads`] threads (by default
//! `NNKERN_NUM_THREADS`, else every CPU the process may use), and give the
//! same bits for every thread count. [`set_num_threads`] changes the bound
//! process-wide; [`with_threads`] bounds only the calls made inside it on
//! the calling thread, and [`gemm_with_threads`] one product.
//!
//! ## Features
//! - `cuda`: the GPU backend, the `cuda` module (hand-written PTX loaded through the
//!   CUDA driver at run time, or run on the CPU by the PTX executor; the crate
//!   builds without CUDA installed).
//! - `cublas`: `cuda`, plus cuBLAS loaded at run time, for the GPU
//!   benchmarks that time it beside the kernels.
//! - `testing`: hooks for this workspace's tests and fuzz harnesses (forced
//!   GEMM plans and kernels, lowered split thresholds); not a stable API.
//!
//! No feature is on by default.

#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod cpu;
#[cfg(feature = "cuda")]
#[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
pub mod cuda;
pub mod error;
pub mod matrix;
pub mod ops;
mod parallel;
pub mod simd;
pub mod threads;

pub use error::{Error, Result, Shape};
pub use matrix::{MatMut, MatRef};
pub use ops::activation::{
    activation_backward, activation_backward_inplace, activation_forward, activation_forward_inplace, Activation,
};
pub use ops::bias::{activation_backward_bias_grad, bias_add, bias_add_activation, bias_grad};
pub use ops::gemm::{gemm, gemm_with_threads, GemmInput};
pub use ops::metrics::{argmax_rows, count_correct};
pub use ops::optim::{
    adam_step, clip_global_norm, gemm_adam_step, gemm_sgd_step, global_norm, sgd_step, AdamConfig, AdamEpsilon,
    AdamState, SgdConfig, SgdState, WeightDecay,
};
pub use ops::softmax_xent::{log_softmax, softmax, softmax_xent, softmax_xent_loss, Targets};
pub use parallel::parallel_region;
pub use simd::{active_isa, with_isa, Isa};
pub use threads::{num_threads, set_num_threads, with_threads, AdaptiveThreads, Placement};

/// Test hooks (forced plans, task splits, the ISAs a test should cover);
/// only with the `testing` feature, for this workspace's tests and fuzz harnesses.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

/// Re-exports of the `half` element types GEMM accepts.
pub use half::{bf16, f16};

/// The naive reference of every operation: simple loops, `f64` accumulation,
/// obviously correct. Every fast kernel is tested against these; they are
/// public so users can test against them too.
pub mod reference {
    pub use crate::ops::activation::reference::*;
    pub use crate::ops::bias::reference::*;
    pub use crate::ops::gemm::reference::*;
    pub use crate::ops::metrics::reference::*;
    pub use crate::ops::optim::reference::*;
    pub use crate::ops::softmax_xent::reference::*;
}
