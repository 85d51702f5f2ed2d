//! `cblas_sgemm`, call-compatible with CBLAS (`cblas.h` of the reference
//! BLAS, OpenBLAS, MKL), the Fortran-ABI `sgemm_` of the reference BLAS,
//! and their error reporting.
//!
//! A bad argument is reported, and `C` left untouched, through the first of:
//! 1. for `cblas_sgemm`, the handler installed with
//!    [`nnkern_set_cblas_error_handler`]: it receives the argument's 1-based
//!    position in the C signature (1 = `Order`, 4 = `M`, 9 = `lda`, ...);
//! 2. the program's `cblas_xerbla` (for `cblas_sgemm`) or `xerbla_` (for
//!    `sgemm_`), when the process has one, called with the numbers the
//!    reference implementation passes (see [`cblas_sgemm_reference_number`]
//!    and [`sgemm_info`]), with the reference CBLAS's `RowMajorStrg` set
//!    as the reference sets it when the process has that variable;
//! 3. otherwise one line on standard error, and the call returns: a bad call
//!    never ends the process.
//!
//! The message is also available from `nnkern_last_error()`. This library
//! defines neither `cblas_xerbla` nor `xerbla_`: a default of ours would
//! shadow the reference library's own in a process that preloads us in
//! front of it (its other routines would stop reporting as they do), and
//! would clash with the program's own definition when linked statically.
//! The two are found through weak references (see [`xerbla`]).

use super::{guard, set_last_error, CMat};
use nnkern::error::Error;
use std::ffi::{c_char, c_int, CString};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `enum CBLAS_ORDER`: taken as a plain `int` so an out-of-range value from
/// C is an error, not undefined behaviour.
pub type CblasOrder = c_int;
/// `enum CBLAS_TRANSPOSE`, as a plain `int` (see [`CblasOrder`]).
pub type CblasTranspose = c_int;

/// `CblasRowMajor`.
pub const CBLAS_ROW_MAJOR: c_int = 101;
/// `CblasColMajor`.
pub const CBLAS_COL_MAJOR: c_int = 102;
/// `CblasNoTrans`.
pub const CBLAS_NO_TRANS: c_int = 111;
/// `CblasTrans`.
pub const CBLAS_TRANS: c_int = 112;
/// `CblasConjTrans` (the same as `CblasTrans` for real matrices).
pub const CBLAS_CONJ_TRANS: c_int = 113;

/// An error handler: the 1-based position of the bad parameter, the routine
/// name and a message, both NUL-terminated and valid during the call only.
pub type NnkernCblasErrorHandler = Option<unsafe extern "C" fn(c_int, *const c_char, *const c_char)>;

static HANDLER: AtomicUsize = AtomicUsize::new(0);

/// Installs `handler` as the process-wide CBLAS error handler; NULL restores
/// the default one (the program's `cblas_xerbla` if it has one, else print
/// to standard error and return). Never aborts.
#[no_mangle]
pub extern "C" fn nnkern_set_cblas_error_handler(handler: NnkernCblasErrorHandler) {
    HANDLER.store(handler.map_or(0, |f| f as usize), Ordering::SeqCst);
}

/// The process's `cblas_xerbla` and `xerbla_`, if any, through weak
/// undefined references: at static link time they bind to the program's
/// definitions, at load time (shared library) to the first definition in
/// the process's global scope (the program's, or a reference BLAS/CBLAS
/// library's), and to null when there is none.
pub mod xerbla {
    use std::ffi::{c_char, c_int};

    /// `void cblas_xerbla(int p, const char *rout, const char *form, ...)`.
    pub type CblasXerbla = unsafe extern "C" fn(c_int, *const c_char, *const c_char, ...);
    /// `SUBROUTINE XERBLA(SRNAME, INFO)` as gfortran passes it: the name
    /// (blank-padded, not NUL-terminated), the info number, the name's length.
    pub type FortranXerbla = unsafe extern "C" fn(*const c_char, *const c_int, usize);

    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    mod weak {
        // Pointer-sized words holding the addresses of the weak symbols (0
        // when unresolved); hidden, so never exported.
        std::arch::global_asm!(
            ".pushsection .data.nnkern_capi_xerbla,\"aw\"",
            ".p2align 3",
            ".weak cblas_xerbla",
            ".weak xerbla_",
            ".weak RowMajorStrg",
            ".globl nnkern_capi_xerbla_addrs",
            ".hidden nnkern_capi_xerbla_addrs",
            "nnkern_capi_xerbla_addrs:",
            ".quad cblas_xerbla",
            ".quad xerbla_",
            ".quad RowMajorStrg",
            ".popsection",
        );
        extern "C" {
            static nnkern_capi_xerbla_addrs: [usize; 3];
        }
        pub(super) fn addrs() -> [usize; 3] {
            // SAFETY: a plain initialised array defined above; the dynamic
            // loader writes it before any code of ours runs, never after.
            unsafe { std::ptr::addr_of!(nnkern_capi_xerbla_addrs).read_volatile() }
        }
    }
    #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
    mod weak {
        pub(super) fn addrs() -> [usize; 3] {
            [0, 0, 0]
        }
    }

    /// The process's `cblas_xerbla`, if it has one.
    pub fn cblas() -> Option<CblasXerbla> {
        let raw = weak::addrs()[0];
        // SAFETY: a non-zero value is the address of the function named
        // `cblas_xerbla`, whose C type CBLAS fixes as `CblasXerbla`.
        (raw != 0).then(|| unsafe { std::mem::transmute::<usize, CblasXerbla>(raw) })
    }

    /// The reference CBLAS's `int RowMajorStrg`, if the process has one:
    /// the reference sets it to 1 while a row-major call runs (0 otherwise)
    /// and its `cblas_xerbla` reads it to map row-major numbers back.
    pub fn row_major_flag() -> Option<*mut c_int> {
        let raw = weak::addrs()[2];
        (raw != 0).then_some(raw as *mut c_int)
    }

    /// The process's `xerbla_`, if it has one.
    pub fn fortran() -> Option<FortranXerbla> {
        let raw = weak::addrs()[1];
        // SAFETY: a non-zero value is the address of the function named
        // `xerbla_`, the reference BLAS's `XERBLA(SRNAME, INFO)`.
        (raw != 0).then(|| unsafe { std::mem::transmute::<usize, FortranXerbla>(raw) })
    }
}

fn report_cblas(position: c_int, reference: c_int, row_major: bool, routine: &str, what: &str) {
    let message = format!("** On entry to {routine}, parameter number {position} had an illegal value ({what})");
    set_last_error(&message);
    let r = CString::new(routine).unwrap_or_default();
    let m = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let raw = HANDLER.load(Ordering::SeqCst);
    if raw != 0 {
        // SAFETY: `raw` was stored from a non-null
        // `unsafe extern "C" fn(c_int, *const c_char, *const c_char)` in
        // `nnkern_set_cblas_error_handler`, and function pointers round-trip
        // through usize on every supported target.
        let f: unsafe extern "C" fn(c_int, *const c_char, *const c_char) = unsafe { std::mem::transmute(raw) };
        // SAFETY: the handler's contract is the CBLAS one: two valid C strings
        // for the duration of the call.
        unsafe { f(position, r.as_ptr(), m.as_ptr()) };
        return;
    }
    // A panic (position 0) is ours to report, not a numbered argument.
    if let Some(x) = xerbla::cblas().filter(|_| position > 0) {
        let flag = xerbla::row_major_flag();
        if let Some(p) = flag {
            // SAFETY: the reference CBLAS's `int RowMajorStrg`, which it
            // writes the same way on every call (as unsynchronised as there).
            unsafe { p.write_volatile(row_major as c_int) };
        }
        // SAFETY: the CBLAS contract of cblas_xerbla: a number, the routine
        // name and a printf format, here "%s\n" with one C string.
        unsafe { x(reference, r.as_ptr(), c"%s\n".as_ptr(), m.as_ptr()) };
        if let Some(p) = flag {
            // SAFETY: as above; the reference leaves it 0 after each call.
            unsafe { p.write_volatile(0) };
        }
        return;
    }
    // Never panic over a closed standard error.
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn report_fortran(info: c_int, what: &str) {
    let message = format!("** On entry to SGEMM, parameter number {info} had an illegal value ({what})");
    set_last_error(&message);
    if let Some(x) = xerbla::fortran().filter(|_| info > 0) {
        // The reference passes the name blank-padded to six characters; the
        // NUL after them serves an `xerbla_` written in C that prints it
        // with %s (the one of the reference CBLAS does).
        let name = c"SGEMM ";
        // SAFETY: XERBLA(SRNAME, INFO) reads `len` characters of the name
        // (NUL-terminated beyond them) and one integer, valid for the call.
        unsafe { x(name.as_ptr(), &info, name.count_bytes()) };
        return;
    }
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// The reference BLAS's checks of `SGEMM(TRANSA, TRANSB, M, N, K, ALPHA, A,
/// LDA, B, LDB, BETA, C, LDC)`, in its order: the `INFO` number it passes
/// to `XERBLA` (1 `TRANSA`, 2 `TRANSB`, 3 `M`, 4 `N`, 5 `K`, 8 `LDA`,
/// 10 `LDB`, 13 `LDC`) and a reason; `None` when the description is valid.
/// `TRANSA`/`TRANSB` are `N`, `T` or `C`, either case.
pub fn sgemm_info(
    transa: u8,
    transb: u8,
    m: c_int,
    n: c_int,
    k: c_int,
    lda: c_int,
    ldb: c_int,
    ldc: c_int,
) -> Option<(c_int, String)> {
    let trans_ok = |t: u8| matches!(t.to_ascii_uppercase(), b'N' | b'T' | b'C');
    let show = |t: u8| (t as char).escape_default().to_string();
    if !trans_ok(transa) {
        return Some((1, format!("TRANSA = '{}', expected 'N', 'T' or 'C'", show(transa))));
    }
    if !trans_ok(transb) {
        return Some((2, format!("TRANSB = '{}', expected 'N', 'T' or 'C'", show(transb))));
    }
    for (info, name, v) in [(3, "M", m), (4, "N", n), (5, "K", k)] {
        if v < 0 {
            return Some((info, format!("{name} = {v} is negative")));
        }
    }
    let nota = transa.eq_ignore_ascii_case(&b'N');
    let notb = transb.eq_ignore_ascii_case(&b'N');
    let nrowa = if nota { m } else { k };
    let nrowb = if notb { k } else { n };
    for (info, name, v, min) in [(8, "LDA", lda, nrowa), (10, "LDB", ldb, nrowb), (13, "LDC", ldc, m)] {
        if v < min.max(1) {
            return Some((info, format!("{name} = {v}, expected at least {}", min.max(1))));
        }
    }
    None
}

/// The number the reference CBLAS passes to `cblas_xerbla` for an invalid
/// `cblas_sgemm` call, `None` when the call is valid.
///
/// 1 `Order`, 2 `TransA`, 3 `TransB`; then the reference calls the Fortran
/// `SGEMM` and reports its `INFO + 1`. Column-major that is the position in
/// the C signature (4 `M`, 5 `N`, 6 `K`, 9 `lda`, 11 `ldb`, 14 `ldc`).
/// Row-major it computes `Cᵀ = op(B)ᵀ·op(A)ᵀ`, calling `SGEMM` with `N`
/// and `M`, `B` and `A` exchanged: `N` is checked first and reported as 4,
/// `M` as 5, `ldb` as 9 and `lda` as 11 (a reference `cblas_xerbla` maps
/// them back to the C positions while the reference's `RowMajorStrg` is
/// set).
pub fn cblas_sgemm_reference_number(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    lda: c_int,
    ldb: c_int,
    ldc: c_int,
) -> Option<c_int> {
    let letter = |t: c_int| match t {
        CBLAS_NO_TRANS => Some(b'N'),
        CBLAS_TRANS => Some(b'T'),
        CBLAS_CONJ_TRANS => Some(b'C'),
        _ => None,
    };
    if order != CBLAS_ROW_MAJOR && order != CBLAS_COL_MAJOR {
        return Some(1);
    }
    let Some(ta) = letter(trans_a) else { return Some(2) };
    let Some(tb) = letter(trans_b) else { return Some(3) };
    let info = if order == CBLAS_COL_MAJOR {
        sgemm_info(ta, tb, m, n, k, lda, ldb, ldc)
    } else {
        sgemm_info(tb, ta, n, m, k, ldb, lda, ldc)
    };
    info.map(|(i, _)| i + 1)
}

/// The first invalid argument of a `cblas_sgemm` call by its position in
/// the C signature, checked in that order, with a reason; `None` when the
/// description is valid. (The same arguments are invalid as for
/// [`cblas_sgemm_reference_number`], which numbers and orders them as the
/// reference does.)
pub fn cblas_sgemm_check(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    lda: c_int,
    ldb: c_int,
    ldc: c_int,
) -> Option<(c_int, String)> {
    let trans = |t: c_int| matches!(t, CBLAS_NO_TRANS | CBLAS_TRANS | CBLAS_CONJ_TRANS);
    if order != CBLAS_ROW_MAJOR && order != CBLAS_COL_MAJOR {
        return Some((
            1,
            format!("Order = {order}, expected CblasRowMajor (101) or CblasColMajor (102)"),
        ));
    }
    if !trans(trans_a) {
        return Some((
            2,
            format!("TransA = {trans_a}, expected CblasNoTrans (111) or CblasTrans (112)"),
        ));
    }
    if !trans(trans_b) {
        return Some((
            3,
            format!("TransB = {trans_b}, expected CblasNoTrans (111) or CblasTrans (112)"),
        ));
    }
    for (pos, name, v) in [(4, "M", m), (5, "N", n), (6, "K", k)] {
        if v < 0 {
            return Some((pos, format!("{name} = {v} is negative")));
        }
    }
    let row_major = order == CBLAS_ROW_MAJOR;
    let ta = trans_a != CBLAS_NO_TRANS;
    let tb = trans_b != CBLAS_NO_TRANS;
    // The leading dimension must cover the stored matrix's rows (column-major)
    // or columns (row-major).
    let min_lda = match (row_major, ta) {
        (false, false) | (true, true) => m,
        (false, true) | (true, false) => k,
    };
    let min_ldb = match (row_major, tb) {
        (false, false) | (true, true) => k,
        (false, true) | (true, false) => n,
    };
    let min_ldc = if row_major { n } else { m };
    for (pos, name, v, min) in [
        (9, "lda", lda, min_lda),
        (11, "ldb", ldb, min_ldb),
        (14, "ldc", ldc, min_ldc),
    ] {
        if v < min.max(1) {
            return Some((pos, format!("{name} = {v}, expected at least {}", min.max(1))));
        }
    }
    None
}

/// Which matrix failed its memory checks (NULL, extent, overlap).
#[derive(Clone, Copy)]
enum Operand {
    A,
    B,
    C,
}

/// `C = alpha·op(A)·op(B) + beta·C` on a described call whose sizes and
/// leading dimensions passed the BLAS checks (all non-negative): builds the
/// views (NULL, extent and overlap checks, reported by operand) and runs the
/// kernel.
///
/// # Safety
/// As for any BLAS: `a`, `b`, `c` address the matrices the sizes and
/// leading dimensions describe; `c` is writable.
#[allow(clippy::too_many_arguments)]
unsafe fn blas_gemm(
    row_major: bool,
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, lda): (*const f32, i64),
    (b, ldb): (*const f32, i64),
    beta: f32,
    (c, ldc): (*mut f32, i64),
    bad: &mut Option<(Operand, String)>,
) -> nnkern::Result<()> {
    // Strides of op(X)(i, j) in a matrix stored with leading dimension ld:
    // column-major element (r, c) is at r + c·ld, row-major at r·ld + c;
    // a transpose swaps the roles.
    let strides = |ld: i64, t: bool| if row_major != t { (ld, 1) } else { (1, ld) };
    let (a_rs, a_cs) = strides(lda, ta);
    let (b_rs, b_cs) = strides(ldb, tb);
    let (c_rs, c_cs) = strides(ldc, false);
    let unread = alpha == 0.0 || k == 0;
    let dummy = [0.0f32];
    let (a, a_rs, a_cs) = if unread && a.is_null() {
        (dummy.as_ptr(), 0, 0)
    } else {
        (a, a_rs, a_cs)
    };
    let (b, b_rs, b_cs) = if unread && b.is_null() {
        (dummy.as_ptr(), 0, 0)
    } else {
        (b, b_rs, b_cs)
    };
    let checked = (|| {
        let am = CMat::new("A", a, m, k, a_rs, a_cs).map_err(|e| (Operand::A, e))?;
        let bm = CMat::new("B", b, k, n, b_rs, b_cs).map_err(|e| (Operand::B, e))?;
        let cm = CMat::new_out("C", c, m, n, c_rs, c_cs).map_err(|e| (Operand::C, e))?;
        cm.span.check_disjoint(&am.span).map_err(|e| (Operand::C, e))?;
        cm.span.check_disjoint(&bm.span).map_err(|e| (Operand::C, e))?;
        Ok::<_, (Operand, Error)>((am, bm, cm))
    })();
    let (am, bm, cm) = match checked {
        Ok(v) => v,
        Err((op, e)) => {
            *bad = Some((op, e.to_string()));
            return Ok(());
        }
    };
    // SAFETY: spans validated; C overlaps neither input; the memory
    // itself is the caller's contract, as for any BLAS.
    let (av, bv, cv) = unsafe { (am.view()?, bm.view()?, cm.view_mut()?) };
    nnkern::gemm(alpha, av, bv, beta, cv)
}

/// `C = alpha·op(A)·op(B) + beta·C`, as CBLAS defines it.
///
/// `Order` is `CblasRowMajor` (101) or `CblasColMajor` (102); `TransA` and
/// `TransB` are `CblasNoTrans` (111), `CblasTrans` (112) or `CblasConjTrans`
/// (113, the same as `CblasTrans` for real data). A bad argument is reported
/// as the module documentation says (handler, `cblas_xerbla`, or a line on
/// standard error) and through `nnkern_last_error()`, and `C` is not
/// touched. Beyond what CBLAS checks, NULL pointers to non-empty matrices
/// (positions 8, 10, 13) and a `C` that overlaps `A` or `B` (position 13)
/// are reported too, with those positions in every layout.
///
/// # Safety
/// As for any CBLAS: `A`, `B`, `C` address the matrices their sizes and
/// leading dimensions describe; `C` is writable.
#[no_mangle]
pub unsafe extern "C" fn cblas_sgemm(
    order: CblasOrder,
    trans_a: CblasTranspose,
    trans_b: CblasTranspose,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: f32,
    c: *mut f32,
    ldc: c_int,
) {
    const NAME: &str = "cblas_sgemm";
    // (position in the C signature, the reference's number, reason).
    let mut bad: Option<(c_int, c_int, String)> = None;
    let status = guard(NAME, || {
        if let Some((pos, what)) = cblas_sgemm_check(order, trans_a, trans_b, m, n, k, lda, ldb, ldc) {
            let reference = cblas_sgemm_reference_number(order, trans_a, trans_b, m, n, k, lda, ldb, ldc);
            bad = Some((pos, reference.unwrap_or(pos), what));
            return Ok(());
        }
        let mut operand = None;
        // SAFETY: sizes and leading dimensions checked (non-negative); the
        // memory is the caller's contract, forwarded.
        let r = unsafe {
            blas_gemm(
                order == CBLAS_ROW_MAJOR,
                (trans_a != CBLAS_NO_TRANS, trans_b != CBLAS_NO_TRANS),
                (m as usize, n as usize, k as usize),
                alpha,
                (a, lda as i64),
                (b, ldb as i64),
                beta,
                (c, ldc as i64),
                &mut operand,
            )
        };
        if let Some((op, what)) = operand {
            let pos = match op {
                Operand::A => 8,
                Operand::B => 10,
                Operand::C => 13,
            };
            bad = Some((pos, pos, what));
        }
        r
    });
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some((pos, reference, what)) = bad {
            report_cblas(pos, reference, order == CBLAS_ROW_MAJOR, NAME, &what);
        } else if status != super::NNKERN_OK {
            // Only a panic can get here (every argument was validated); CBLAS
            // has no status, so report it through the handler as position 0.
            report_cblas(0, 0, false, NAME, &super::last_error_string());
        }
    }));
}

/// Reads one by-reference Fortran argument: non-null and aligned, else
/// its `INFO` number.
///
/// # Safety
/// A non-null, aligned `p` points to a readable `T`.
unsafe fn fortran_arg<T: Copy>(p: *const T, info: c_int, name: &str) -> Result<T, (c_int, String)> {
    if p.is_null() {
        return Err((info, format!("{name} is a NULL pointer")));
    }
    if !(p as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err((info, format!("{name} = {p:p} is not aligned")));
    }
    // SAFETY: non-null and aligned; readable by the caller's contract.
    Ok(unsafe { p.read() })
}

/// `SGEMM` of the reference BLAS through the Fortran ABI (every argument by
/// reference, column-major matrices): `C = alpha·op(A)·op(B) + beta·C` with
/// `op(X)` = `X` for `TRANSA`/`TRANSB` = `'N'`, `Xᵀ` for `'T'` or `'C'`
/// (either case). Hidden string-length arguments after `ldc`, as Fortran
/// compilers pass them, are accepted and unused.
///
/// An invalid argument calls the process's `xerbla_` with `"SGEMM "` and
/// the reference's `INFO` (see [`sgemm_info`]) when the process has one,
/// else prints one line on standard error; either way the message is left
/// for `nnkern_last_error()`, `C` is untouched and the call returns. Beyond
/// the reference's checks, a NULL pointer is reported with its argument's
/// number (7 `A`, 9 `B`, 12 `C` when they describe elements), and a `C`
/// that overlaps `A` or `B` as 12. As the reference does, `M = 0`, `N = 0`,
/// or `(ALPHA = 0 or K = 0)` with `BETA = 1` returns at once; `BETA = 0`
/// never reads `C`, `ALPHA = 0` never reads `A` and `B`.
///
/// # Safety
/// As for any BLAS: the scalars point to readable values, `A`, `B`, `C`
/// address the matrices the sizes and leading dimensions describe, `C` is
/// writable.
#[no_mangle]
pub unsafe extern "C" fn sgemm_(
    transa: *const c_char,
    transb: *const c_char,
    m: *const c_int,
    n: *const c_int,
    k: *const c_int,
    alpha: *const f32,
    a: *const f32,
    lda: *const c_int,
    b: *const f32,
    ldb: *const c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: *const c_int,
) {
    let mut bad: Option<(c_int, String)> = None;
    let status = guard("sgemm_", || {
        // SAFETY: each pointer is the caller's contract; null and
        // misaligned ones are reported instead of read.
        let read = || unsafe {
            let ta = fortran_arg(transa.cast::<u8>(), 1, "TRANSA")?;
            let tb = fortran_arg(transb.cast::<u8>(), 2, "TRANSB")?;
            let (m, n, k) = (
                fortran_arg(m, 3, "M")?,
                fortran_arg(n, 4, "N")?,
                fortran_arg(k, 5, "K")?,
            );
            let lda = fortran_arg(lda, 8, "LDA")?;
            let ldb = fortran_arg(ldb, 10, "LDB")?;
            let ldc = fortran_arg(ldc, 13, "LDC")?;
            if let Some(e) = sgemm_info(ta, tb, m, n, k, lda, ldb, ldc) {
                return Err(e);
            }
            let alpha = fortran_arg(alpha, 6, "ALPHA")?;
            let beta = fortran_arg(beta, 11, "BETA")?;
            Ok((ta, tb, m, n, k, lda, ldb, ldc, alpha, beta))
        };
        let (ta, tb, m, n, k, lda, ldb, ldc, alpha, beta) = match read() {
            Ok(v) => v,
            Err(e) => {
                bad = Some(e);
                return Ok(());
            }
        };
        if m == 0 || n == 0 || ((alpha == 0.0 || k == 0) && beta == 1.0) {
            return Ok(());
        }
        let mut operand = None;
        // SAFETY: sizes and leading dimensions checked (non-negative); the
        // memory is the caller's contract, forwarded.
        let r = unsafe {
            blas_gemm(
                false,
                (!ta.eq_ignore_ascii_case(&b'N'), !tb.eq_ignore_ascii_case(&b'N')),
                (m as usize, n as usize, k as usize),
                alpha,
                (a, lda as i64),
                (b, ldb as i64),
                beta,
                (c, ldc as i64),
                &mut operand,
            )
        };
        if let Some((op, what)) = operand {
            let info = match op {
                Operand::A => 7,
                Operand::B => 9,
                Operand::C => 12,
            };
            bad = Some((info, what));
        }
        r
    });
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some((info, what)) = bad {
            report_fortran(info, &what);
        } else if status != super::NNKERN_OK {
            // Only a panic can get here; reported, never to xerbla_.
            report_fortran(0, &super::last_error_string());
        }
    }));
}
