//! The C ABI: `cblas_sgemm`, the Fortran-ABI `sgemm_` and the `nnkern_*`
//! functions declared in `include/nnkern.h`, exported from `libnnkern.so` /
//! `libnnkern.a`.
//!
//! Every entry point
//! - returns a status code (`NNKERN_OK` = 0, else one of `NNKERN_ERR_*`;
//!   `cblas_sgemm` and `sgemm_` follow BLAS and return nothing, see
//!   [`cblas`]);
//! - on failure stores a message for [`nnkern_last_error`] (per thread) and
//!   leaves every output untouched;
//! - validates every argument before it builds a Rust slice from a pointer:
//!   null pointers, negative sizes or strides, sizes whose extent overflows
//!   the address space, misaligned pointers, unknown enum values, and an
//!   output whose memory overlaps an input (Rust callers get that guarantee
//!   from the borrow checker; C callers get [`NNKERN_ERR_ALIASING`]);
//! - catches any Rust panic ([`NNKERN_ERR_PANIC`]) so none unwinds into C.
//!
//! A pointer may be null only when the buffer it describes has no elements.
//! Matrices are described by rows, cols, a row stride and a column stride
//! (in elements), as [`nnkern::MatRef`] is; a transpose is a swap of strides.
//! Overlap is checked on the address span of each buffer (first to last
//! element), so two views that interleave without sharing an element are
//! rejected too.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![allow(clippy::too_many_arguments)]

pub mod cblas;
mod elementwise;
mod gemm;
mod optim;

pub use cblas::*;
pub use elementwise::*;
pub use gemm::*;
pub use optim::*;

use nnkern::error::Error;
use nnkern::matrix::{required_len, MatMut, MatRef};
use nnkern::simd::{with_isa, Isa};
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Success.
pub const NNKERN_OK: c_int = 0;
/// A required pointer was null.
pub const NNKERN_ERR_NULL_POINTER: c_int = 1;
/// A size or stride is negative, a leading dimension too small, an enum value
/// unknown, or a pointer misaligned.
pub const NNKERN_ERR_INVALID_ARGUMENT: c_int = 2;
/// Two arguments disagree on a dimension.
pub const NNKERN_ERR_SHAPE_MISMATCH: c_int = 3;
/// A buffer's extent (from its sizes and strides) overflows the address space.
pub const NNKERN_ERR_OVERFLOW: c_int = 4;
/// An output overlaps an input or another output, or its strides map two
/// elements to one address.
pub const NNKERN_ERR_ALIASING: c_int = 5;
/// A class label is not below the number of classes.
pub const NNKERN_ERR_LABEL_OUT_OF_RANGE: c_int = 6;
/// A hyperparameter is out of its range (e.g. Adam's `beta1` ≥ 1).
pub const NNKERN_ERR_INVALID_VALUE: c_int = 7;
/// The requested ISA is not supported by this CPU.
pub const NNKERN_ERR_UNSUPPORTED: c_int = 8;
/// CUDA is unavailable or a CUDA call failed.
pub const NNKERN_ERR_CUDA: c_int = 10;
/// The system could not provide memory the call needs.
pub const NNKERN_ERR_OUT_OF_MEMORY: c_int = 11;
/// A Rust panic was caught at the boundary (a bug in nnkern; please report it).
pub const NNKERN_ERR_PANIC: c_int = 99;

/// ISA code for [`nnkern_force_isa`]: go back to the detected best ISA.
pub const NNKERN_ISA_AUTO: c_int = -1;
/// ISA code: portable scalar code.
pub const NNKERN_ISA_SCALAR: c_int = 0;
/// ISA code: x86-64 AVX2 + FMA + F16C.
pub const NNKERN_ISA_AVX2: c_int = 1;
/// ISA code: x86-64 AVX-512 F/BW/DQ/VL.
pub const NNKERN_ISA_AVX512: c_int = 2;
/// ISA code: AArch64 NEON.
pub const NNKERN_ISA_NEON: c_int = 3;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static FORCED_ISA: Cell<Option<Isa>> = const { Cell::new(None) };
    static DRY_RUN: Cell<bool> = const { Cell::new(false) };
    static DRY_RUN_REACHED: Cell<bool> = const { Cell::new(false) };
}

/// The message an entry stops with in a [`dry_run`].
const DRY_RUN_STOP: &str = "dry run: every argument check passed";

fn stop_if_dry() -> nnkern::Result<()> {
    if DRY_RUN.try_with(|d| d.get()).unwrap_or(false) {
        let _ = DRY_RUN_REACHED.try_with(|r| r.set(true));
        return Err(Error::Internal {
            what: DRY_RUN_STOP.to_string(),
        });
    }
    Ok(())
}

/// Runs `call` (one C entry) with every entry stopping after its argument
/// checks, before it forms any slice from a pointer: `Ok(())` if the checks
/// passed, else `Err(status)` of the failed check (for `cblas_sgemm`, which
/// has no status, `call` returns the reported parameter position or 0). For
/// fuzzing descriptions of buffers far larger than memory: the sizing
/// arithmetic of the entry runs, no element is touched. Only with the
/// `testing` feature (the fuzz harnesses enable it).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub fn dry_run(call: impl FnOnce() -> c_int) -> Result<(), c_int> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = DRY_RUN.try_with(|d| d.set(false));
        }
    }
    DRY_RUN.with(|d| d.set(true));
    DRY_RUN_REACHED.with(|r| r.set(false));
    let _reset = Reset;
    let status = call();
    if DRY_RUN_REACHED.with(|r| r.get()) {
        Ok(())
    } else if status == NNKERN_OK {
        // Entries without buffers (or with only empty ones) finish normally.
        Ok(())
    } else {
        Err(status)
    }
}

/// The status code of an error.
pub fn status_of(e: &Error) -> c_int {
    match e {
        Error::ShapeMismatch { .. } => NNKERN_ERR_SHAPE_MISMATCH,
        // From C the buffer length is derived from the sizes, so this only
        // arises from an inconsistent description.
        Error::BufferTooShort { .. } => NNKERN_ERR_INVALID_ARGUMENT,
        Error::Overflow { .. } => NNKERN_ERR_OVERFLOW,
        Error::Aliasing { .. } => NNKERN_ERR_ALIASING,
        Error::LabelOutOfRange { .. } => NNKERN_ERR_LABEL_OUT_OF_RANGE,
        Error::InvalidValue { .. } => NNKERN_ERR_INVALID_VALUE,
        Error::NullPointer { .. } => NNKERN_ERR_NULL_POINTER,
        Error::Unsupported { .. } => NNKERN_ERR_UNSUPPORTED,
        Error::InvalidArgument { .. } => NNKERN_ERR_INVALID_ARGUMENT,
        Error::NoCuda(_) | Error::Cuda(_) => NNKERN_ERR_CUDA,
        Error::OutOfMemory { .. } => NNKERN_ERR_OUT_OF_MEMORY,
        Error::Internal { .. } => NNKERN_ERR_PANIC,
        // `nnkern::Error` is non-exhaustive: a variant added to the kernel
        // library before this table learns it reads as an internal error.
        _ => NNKERN_ERR_PANIC,
    }
}

pub(crate) fn set_last_error(msg: &str) {
    // Interior NULs cannot occur in our messages, but never panic over it.
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // try_with: a call from a thread-local destructor must not panic.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// The message `nnkern_last_error()` returns, as a Rust string.
pub fn last_error_string() -> String {
    LAST_ERROR
        .try_with(|e| e.borrow().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Runs the body of an entry point: applies the ISA forced for this thread,
/// turns an error into its status code and message, and stops any panic.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> nnkern::Result<()>) -> c_int {
    let run = AssertUnwindSafe(|| match FORCED_ISA.try_with(|f| f.get()).ok().flatten() {
        Some(isa) => with_isa(isa, body).and_then(|r| r),
        None => body(),
    });
    match catch_unwind(run) {
        Ok(Ok(())) => NNKERN_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {e}"));
            status_of(&e)
        }
        Err(p) => {
            set_last_error(&format!("{name}: internal error (panic): {}", panic_message(&*p)));
            NNKERN_ERR_PANIC
        }
    }
}

/// A size argument: non-negative and at most `isize::MAX`.
pub(crate) fn size(arg: &'static str, v: i64) -> nnkern::Result<usize> {
    if v < 0 {
        return Err(Error::invalid(arg, format!("negative size {v}")));
    }
    usize::try_from(v)
        .ok()
        .filter(|&u| u <= isize::MAX as usize)
        .ok_or(Error::Overflow { arg, what: "size" })
}

/// A stride argument: non-negative.
pub(crate) fn stride(arg: &'static str, v: i64) -> nnkern::Result<usize> {
    if v < 0 {
        return Err(Error::invalid(
            arg,
            format!("negative stride {v}; strides must be >= 0"),
        ));
    }
    usize::try_from(v).map_err(|_| Error::Overflow { arg, what: "stride" })
}

/// A raw buffer described from C: where it starts and how many elements of
/// `T` it spans. Checked for null (when non-empty), alignment, and an extent
/// that fits in `isize` bytes, before any slice is made.
#[derive(Clone, Copy)]
pub(crate) struct Span<T> {
    arg: &'static str,
    ptr: *const T,
    len: usize,
}

impl<T> Span<T> {
    pub(crate) fn new(arg: &'static str, ptr: *const T, len: usize) -> nnkern::Result<Self> {
        if len == 0 {
            return Ok(Span { arg, ptr, len });
        }
        if ptr.is_null() {
            return Err(Error::NullPointer { arg, len });
        }
        if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
            return Err(Error::invalid(
                arg,
                format!("pointer {ptr:p} is not aligned to {} bytes", std::mem::align_of::<T>()),
            ));
        }
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or(Error::Overflow {
                arg,
                what: "buffer size in bytes",
            })?;
        if (ptr as usize).checked_add(bytes).is_none() {
            return Err(Error::Overflow {
                arg,
                what: "end address of the buffer",
            });
        }
        Ok(Span { arg, ptr, len })
    }

    /// A matrix buffer: `rows × cols` with the given strides.
    pub(crate) fn matrix(
        arg: &'static str,
        ptr: *const T,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> nnkern::Result<Self> {
        let len = required_len(rows, cols, row_stride, col_stride).ok_or(Error::Overflow {
            arg,
            what: "(rows-1)*row_stride + (cols-1)*col_stride",
        })?;
        Self::new(arg, ptr, len)
    }

    fn range(&self) -> (usize, usize) {
        let start = self.ptr as usize;
        (start, start + self.len * std::mem::size_of::<T>())
    }

    /// Errors when `self` (an output) shares any byte with `other`.
    pub(crate) fn check_disjoint<U>(&self, other: &Span<U>) -> nnkern::Result<()> {
        let (a0, a1) = self.range();
        let (b0, b1) = other.range();
        if a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1 {
            return Err(Error::Aliasing {
                arg: self.arg,
                what: format!("output overlaps {} in memory", other.arg),
            });
        }
        Ok(())
    }

    /// The elements as a slice (every argument check of the entry is done
    /// by then; in a [`dry_run`] the call stops here instead).
    ///
    /// # Safety
    /// The caller's contract: `ptr` points to `len` initialised elements that
    /// nobody writes during the call.
    pub(crate) unsafe fn slice<'a>(&self) -> nnkern::Result<&'a [T]> {
        stop_if_dry()?;
        if self.len == 0 {
            return Ok(&[]);
        }
        // SAFETY: non-null and aligned (checked in `new`), extent within
        // isize (checked in `new`); validity and no concurrent writes are the
        // caller's contract.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// A small argument the entry must read to finish its checks (a config
    /// struct, a list of buffer pointers and lengths): a slice even in a
    /// [`dry_run`], which needs these to be real.
    ///
    /// # Safety
    /// As [`Span::slice`].
    pub(crate) unsafe fn meta_slice<'a>(&self) -> &'a [T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: as in `slice`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The elements as a mutable slice.
    ///
    /// # Safety
    /// As [`Span::slice`], and the caller has checked (with
    /// [`Span::check_disjoint`]) that no other slice made for this call
    /// overlaps it.
    pub(crate) unsafe fn slice_mut<'a>(&self) -> nnkern::Result<&'a mut [T]> {
        stop_if_dry()?;
        if self.len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `slice`; exclusivity is checked by the caller
        // against every other buffer of the call.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut T, self.len) })
    }
}

/// A matrix argument from C: pointer, shape and strides, validated.
pub(crate) struct CMat<T> {
    pub(crate) span: Span<T>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<T> CMat<T> {
    pub(crate) fn new(
        arg: &'static str,
        ptr: *const T,
        rows: usize,
        cols: usize,
        row_stride: i64,
        col_stride: i64,
    ) -> nnkern::Result<Self> {
        let rs = stride(arg, row_stride)?;
        let cs = stride(arg, col_stride)?;
        let span = Span::matrix(arg, ptr, rows, cols, rs, cs)?;
        let m = CMat {
            span,
            rows,
            cols,
            rs,
            cs,
        };
        m.check(false)?;
        Ok(m)
    }

    /// An output matrix: as [`CMat::new`], and its strides must map distinct
    /// elements to distinct addresses. Every check of a view is made here, at
    /// construction, so an entry has checked all its matrices before it forms
    /// the first slice.
    pub(crate) fn new_out(
        arg: &'static str,
        ptr: *mut T,
        rows: usize,
        cols: usize,
        row_stride: i64,
        col_stride: i64,
    ) -> nnkern::Result<Self> {
        let m = Self::new(arg, ptr as *const T, rows, cols, row_stride, col_stride)?;
        m.check(true)?;
        Ok(m)
    }

    /// The view's own checks (logical element count, extent, and for an
    /// output, distinct addresses) on the span's length, before any slice.
    fn check(&self, output: bool) -> nnkern::Result<()> {
        nnkern::matrix::check_view(
            self.span.arg,
            self.span.len,
            self.rows,
            self.cols,
            self.rs,
            self.cs,
            output,
        )
    }

    /// # Safety
    /// As [`Span::slice`].
    pub(crate) unsafe fn view<'a>(&self) -> nnkern::Result<MatRef<'a, T>> {
        self.check(false)?;
        // SAFETY: forwarded contract.
        let data = unsafe { self.span.slice()? };
        MatRef::from_strides_named(self.span.arg, data, self.rows, self.cols, self.rs, self.cs)
    }

    /// # Safety
    /// As [`Span::slice_mut`].
    pub(crate) unsafe fn view_mut<'a>(&self) -> nnkern::Result<MatMut<'a, T>> {
        self.check(true)?;
        // SAFETY: forwarded contract.
        let data = unsafe { self.span.slice_mut()? };
        MatMut::from_strides_named(self.span.arg, data, self.rows, self.cols, self.rs, self.cs)
    }
}

/// Checks that every output span is disjoint from every other span given.
pub(crate) fn check_outputs_disjoint(outputs: &[Span<u8>], inputs: &[Span<u8>]) -> nnkern::Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        for other in outputs[i + 1..].iter().chain(inputs) {
            o.check_disjoint(other)?;
        }
    }
    Ok(())
}

impl<T> Span<T> {
    /// The same span seen as bytes, for overlap checks across element types.
    pub(crate) fn bytes(&self) -> Span<u8> {
        Span {
            arg: self.arg,
            ptr: self.ptr as *const u8,
            len: self.len * std::mem::size_of::<T>(),
        }
    }
}

fn isa_from_code(code: c_int) -> Option<Isa> {
    match code {
        NNKERN_ISA_SCALAR => Some(Isa::Scalar),
        NNKERN_ISA_AVX2 => Some(Isa::Avx2),
        NNKERN_ISA_AVX512 => Some(Isa::Avx512),
        NNKERN_ISA_NEON => Some(Isa::Neon),
        _ => None,
    }
}

fn isa_code(isa: Isa) -> c_int {
    match isa {
        Isa::Scalar => NNKERN_ISA_SCALAR,
        Isa::Avx2 => NNKERN_ISA_AVX2,
        Isa::Avx512 => NNKERN_ISA_AVX512,
        Isa::Neon => NNKERN_ISA_NEON,
        #[allow(unreachable_patterns)]
        _ => NNKERN_ISA_SCALAR,
    }
}

/// The library version, e.g. `"0.1.0"`, as a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn nnkern_version() -> *const c_char {
    static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}

/// The message of the last failed call on this thread (`""` if none has
/// failed). The pointer stays valid until the next failing call on the same
/// thread.
#[no_mangle]
pub extern "C" fn nnkern_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.try_with(|e| e.borrow().as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// A static description of a status code.
#[no_mangle]
pub extern "C" fn nnkern_status_string(status: c_int) -> *const c_char {
    let s: &'static CStr = match status {
        NNKERN_OK => c"ok",
        NNKERN_ERR_NULL_POINTER => c"null pointer",
        NNKERN_ERR_INVALID_ARGUMENT => c"invalid argument",
        NNKERN_ERR_SHAPE_MISMATCH => c"shape mismatch",
        NNKERN_ERR_OVERFLOW => c"size overflows the address space",
        NNKERN_ERR_ALIASING => c"output overlaps an input",
        NNKERN_ERR_LABEL_OUT_OF_RANGE => c"label out of range",
        NNKERN_ERR_INVALID_VALUE => c"invalid value",
        NNKERN_ERR_UNSUPPORTED => c"not supported by this CPU",
        NNKERN_ERR_CUDA => c"CUDA error",
        NNKERN_ERR_OUT_OF_MEMORY => c"out of memory",
        NNKERN_ERR_PANIC => c"internal error",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// Sets the upper bound on threads the kernels use, process-wide (`n ≥ 1`).
#[no_mangle]
pub extern "C" fn nnkern_set_num_threads(n: i64) -> c_int {
    guard("nnkern_set_num_threads", || {
        if n < 1 {
            return Err(Error::invalid("n", format!("at least 1 thread expected, got {n}")));
        }
        nnkern::set_num_threads(usize::try_from(n).unwrap_or(usize::MAX))
    })
}

/// The upper bound on threads the kernels use.
#[no_mangle]
pub extern "C" fn nnkern_num_threads() -> i64 {
    catch_unwind(nnkern::num_threads).map_or(1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The ISA calls from this thread use now (`NNKERN_ISA_*`).
#[no_mangle]
pub extern "C" fn nnkern_active_isa() -> c_int {
    catch_unwind(|| {
        let isa = FORCED_ISA.with(|f| f.get()).unwrap_or_else(nnkern::active_isa);
        isa_code(isa)
    })
    .unwrap_or(NNKERN_ISA_SCALAR)
}

/// One core's f32 FMA peak in GFLOP/s for the ISA calls from this thread
/// use (see `nnkern::cpu::fma_peak_of`: measured once per ISA, ~40 ms, then
/// cached); 0 if it could not be measured.
#[no_mangle]
pub extern "C" fn nnkern_fma_peak_gflops() -> f64 {
    catch_unwind(|| {
        let isa = FORCED_ISA.with(|f| f.get()).unwrap_or_else(nnkern::active_isa);
        nnkern::cpu::fma_peak_of(isa).unwrap_or(0.0)
    })
    .unwrap_or(0.0)
}

/// 1 if this CPU can run `isa` (`NNKERN_ISA_*`), else 0.
#[no_mangle]
pub extern "C" fn nnkern_isa_supported(isa: c_int) -> c_int {
    catch_unwind(|| isa_from_code(isa).is_some_and(Isa::is_supported) as c_int).unwrap_or(0)
}

/// The name of an ISA code (`"avx512"`, ...), or `"unknown"`.
#[no_mangle]
pub extern "C" fn nnkern_isa_name(isa: c_int) -> *const c_char {
    let s: &'static CStr = match isa_from_code(isa) {
        Some(Isa::Scalar) => c"scalar",
        Some(Isa::Avx2) => c"avx2",
        Some(Isa::Avx512) => c"avx512",
        Some(Isa::Neon) => c"neon",
        _ if isa == NNKERN_ISA_AUTO => c"auto",
        _ => c"unknown",
    };
    s.as_ptr()
}

/// Forces every later nnkern call from the calling thread to use `isa`
/// (`NNKERN_ISA_AUTO` goes back to the detected best one).
#[no_mangle]
pub extern "C" fn nnkern_force_isa(isa: c_int) -> c_int {
    guard("nnkern_force_isa", || {
        if isa == NNKERN_ISA_AUTO {
            FORCED_ISA.with(|f| f.set(None));
            return Ok(());
        }
        let chosen = isa_from_code(isa).ok_or_else(|| Error::invalid("isa", format!("unknown ISA code {isa}")))?;
        if !chosen.is_supported() {
            return Err(Error::Unsupported {
                arg: "isa",
                what: format!("{chosen} is not supported by this CPU"),
            });
        }
        FORCED_ISA.with(|f| f.set(Some(chosen)));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard("test_entry", || panic!("deliberate"));
        assert_eq!(status, NNKERN_ERR_PANIC);
        let msg = last_error_string();
        assert!(msg.contains("test_entry") && msg.contains("deliberate"), "{msg}");
    }

    #[test]
    fn errors_map_to_their_status() {
        assert_eq!(
            guard("e", || Err(Error::NullPointer { arg: "x", len: 3 })),
            NNKERN_ERR_NULL_POINTER
        );
        // The status comes from the variant, never from the message text.
        assert_eq!(
            guard("e", || Err(Error::invalid("x", "null pointer for 3 elements"))),
            NNKERN_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            guard("e", || Err(Error::Unsupported {
                arg: "isa",
                what: "reworded".into()
            })),
            NNKERN_ERR_UNSUPPORTED
        );
        assert_eq!(
            guard("e", || Err(Error::Internal { what: "task".into() })),
            NNKERN_ERR_PANIC
        );
        assert_eq!(
            guard("e", || Err(Error::shape("b", (1, 2), (2, 2)))),
            NNKERN_ERR_SHAPE_MISMATCH
        );
        assert_eq!(guard("e", || Ok(())), NNKERN_OK);
    }

    #[test]
    fn spans_reject_what_a_slice_cannot_hold() {
        let x = [0.0f32; 4];
        assert!(Span::new("x", x.as_ptr(), 4).is_ok());
        assert!(Span::<f32>::new("x", std::ptr::null(), 0).is_ok());
        assert!(Span::<f32>::new("x", std::ptr::null(), 1).is_err());
        assert!(Span::new("x", x.as_ptr(), usize::MAX / 2).is_err());
        let misaligned = (x.as_ptr() as usize + 1) as *const f32;
        assert!(Span::new("x", misaligned, 1).is_err());
        let a = Span::new("a", x.as_ptr(), 2).unwrap();
        // SAFETY: offset 2 is within `x`.
        let b = Span::new("b", unsafe { x.as_ptr().add(2) }, 2).unwrap();
        // SAFETY: offset 1 is within `x`.
        let c = Span::new("c", unsafe { x.as_ptr().add(1) }, 2).unwrap();
        assert!(a.check_disjoint(&b).is_ok());
        assert!(a.check_disjoint(&c).is_err());
        assert!(Span::new("e", x.as_ptr(), 0).unwrap().check_disjoint(&a).is_ok());
    }
}

/// Test support for this workspace's tests and fuzz harnesses (feature
/// `testing`); not a stable API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    use std::cell::Cell;
    use std::ffi::{c_char, c_int};

    thread_local! {
        static CBLAS_PARAM: Cell<c_int> = const { Cell::new(-1) };
    }

    /// A CBLAS error handler that records the parameter position for the
    /// calling thread (see [`last_cblas_param`]); prints nothing.
    ///
    /// # Safety
    /// None of its pointers are read; it is `unsafe extern "C"` only to have the
    /// handler type `nnkern_set_cblas_error_handler` takes.
    pub unsafe extern "C" fn record_cblas_error(param: c_int, _routine: *const c_char, _message: *const c_char) {
        CBLAS_PARAM.with(|p| p.set(param));
    }

    /// The position [`record_cblas_error`] last recorded on this thread (−1 if
    /// none), and resets it.
    pub fn last_cblas_param() -> c_int {
        CBLAS_PARAM.with(|p| p.replace(-1))
    }
}
