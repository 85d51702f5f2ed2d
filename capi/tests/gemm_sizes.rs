//! The C ABI at the edge of what a view can describe: an enormous valid
//! bf16 product (1 x 2^61 times 2^61 x 1, zero strides) runs without
//! faulting, and shapes whose element count cannot be counted return
//! `NNKERN_ERR_OVERFLOW` with C untouched, for every GEMM entry.

use nnkern::bf16;
use nnkern::f16;
use nnkern_capi::{self as capi, NNKERN_ERR_OVERFLOW, NNKERN_OK};

/// The environment variable under which this test binary, run again by a
/// test below, performs one enormous call instead of the tests.
const CHILD: &str = "NNKERN_GEMM_SIZES_CHILD";

fn enormous_c_call() {
    let one = [bf16::ONE];
    let mut c = [0.0f32];
    // SAFETY: zero strides, so one element of each input is all the call reads.
    let status = unsafe {
        capi::nnkern_gemm_bf16(
            1,
            1,
            1 << 61,
            1.0,
            one.as_ptr(),
            0,
            0,
            one.as_ptr(),
            0,
            0,
            0.0,
            c.as_mut_ptr(),
            1,
            1,
        )
    };
    assert_eq!(status, NNKERN_OK);
}

/// Entry point of the child process (does nothing in a normal test run).
#[test]
fn child_entry() {
    if std::env::var(CHILD).as_deref() == Ok("c") {
        enormous_c_call();
    }
}

#[test]
fn the_enormous_bf16_call_through_the_c_abi_runs_without_faulting() {
    nnkern::testing::runs_for_three_seconds("child_entry", CHILD, "c");
}

#[test]
fn uncountable_shapes_are_overflow_statuses() {
    let one = [1.0f32];
    let a = [bf16::ONE];
    let ah = [f16::ONE];
    let mut c = [7.0f32];
    // SAFETY: zero strides; the calls must fail before reading anything.
    let statuses = unsafe {
        [
            capi::nnkern_gemm_bf16(
                64,
                1,
                1 << 58,
                1.0,
                a.as_ptr(),
                0,
                0,
                a.as_ptr(),
                0,
                0,
                0.0,
                c.as_mut_ptr(),
                0,
                1,
            ),
            capi::nnkern_gemm_f16(
                64,
                1,
                1 << 58,
                1.0,
                ah.as_ptr(),
                0,
                0,
                ah.as_ptr(),
                0,
                0,
                0.0,
                c.as_mut_ptr(),
                0,
                1,
            ),
            capi::nnkern_sgemm(
                64,
                1,
                1 << 58,
                1.0,
                one.as_ptr(),
                0,
                0,
                one.as_ptr(),
                0,
                0,
                0.0,
                c.as_mut_ptr(),
                0,
                1,
            ),
        ]
    };
    for s in statuses {
        assert_eq!(s, NNKERN_ERR_OVERFLOW, "{}", capi::last_error_string());
    }
    assert_eq!(c, [7.0]);
}
