//! One folder per operation: its public entry point, validation, and the
//! naive reference beside it.

pub mod activation;
pub mod bias;
pub mod gemm;
pub mod metrics;
pub mod optim;
pub mod softmax_xent;
