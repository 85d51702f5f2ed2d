//! `libnnkern.so` and `libnnkern.a`: the C ABI declared in
//! `include/nnkern.h` (`cblas_sgemm`, the Fortran-ABI `sgemm_` and the
//! `nnkern_*` functions), linked from the `nnkern-capi` crate. Nothing else
//! is defined here: the exported symbols are that crate's `#[no_mangle]`
//! functions.

#![deny(unsafe_op_in_unsafe_fn)]

pub use nnkern_capi::*;
