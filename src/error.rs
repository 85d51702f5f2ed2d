//! The one error type of the library.
//!
//! Every public function validates its arguments at the boundary and returns
//! `Result<_, Error>`; the message names the offending argument and what was
//! expected, so a caller can fix the call without reading the source.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in a call into nnkern.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two arguments disagree on a dimension (e.g. GEMM inner sizes).
    #[error("shape mismatch: {arg} is {got}, expected {expected}")]
    ShapeMismatch {
        /// The argument whose shape is wrong.
        arg: &'static str,
        /// Its shape as given.
        got: Shape,
        /// The shape the other arguments require.
        expected: Shape,
    },
    /// A slice is shorter than its shape and strides need.
    #[error("{arg}: buffer holds {len} elements but the view needs {needed}")]
    BufferTooShort {
        /// The argument whose buffer is too short.
        arg: &'static str,
        /// Elements in the buffer.
        len: usize,
        /// Elements the view reaches.
        needed: usize,
    },
    /// A shape or stride whose extent does not fit in `usize` (or `isize` for pointers).
    #[error("{arg}: {what} overflows the address space")]
    Overflow {
        /// The argument that overflows.
        arg: &'static str,
        /// What overflowed.
        what: &'static str,
    },
    /// An output view whose strides map two elements to the same address,
    /// or an output that overlaps an input (C ABI).
    #[error("{arg}: {what}")]
    Aliasing {
        /// The argument that aliases.
        arg: &'static str,
        /// How it aliases.
        what: String,
    },
    /// A class label that is not below the number of classes.
    #[error("{arg}[{index}] = {label} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The label argument.
        arg: &'static str,
        /// Position of the bad label.
        index: usize,
        /// The label value.
        label: u64,
        /// Number of classes (columns of the logits).
        classes: usize,
    },
    /// A hyperparameter or scalar that must be finite (or in a range) is not.
    #[error("{arg} = {value}: expected {expected}")]
    InvalidValue {
        /// The argument.
        arg: &'static str,
        /// The value given.
        value: f64,
        /// What was expected, e.g. "a finite value in [0, 1)".
        expected: &'static str,
    },
    /// A required pointer is null (C ABI).
    #[error("{arg}: null pointer for {len} elements")]
    NullPointer {
        /// The argument.
        arg: &'static str,
        /// Elements the pointer should address.
        len: usize,
    },
    /// Something this CPU or this build cannot do, such as a forced ISA the
    /// CPU lacks.
    #[error("{arg}: {what}")]
    Unsupported {
        /// The argument.
        arg: &'static str,
        /// What is not supported.
        what: String,
    },
    /// Any other invalid argument: unknown enum values from the C ABI,
    /// negative sizes, misaligned pointers.
    #[error("{arg}: {what}")]
    InvalidArgument {
        /// The argument.
        arg: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// No CUDA driver or no CUDA device (never a panic).
    #[error("CUDA is not available: {0}")]
    NoCuda(String),
    /// A CUDA driver call failed, or a PTX module failed to JIT (with the log).
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// The system could not provide memory the call needs (scratch bounded
    /// by the blocking, never by the problem size).
    #[error("out of memory: {what} needs {bytes} bytes")]
    OutOfMemory {
        /// What the memory was for.
        what: &'static str,
        /// How much was asked for.
        bytes: usize,
    },
    /// A bug inside the library, caught instead of crashing the caller (a
    /// panic in a kernel task, on whichever thread it ran).
    #[error("internal error: {what}")]
    Internal {
        /// What went wrong.
        what: String,
    },
}

/// A matrix shape (rows × cols) as printed in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl Shape {
    /// A `rows × cols` shape.
    pub const fn new(rows: usize, cols: usize) -> Self {
        Shape { rows, cols }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(arg: &'static str, what: impl Into<String>) -> Self {
        Error::InvalidArgument { arg, what: what.into() }
    }

    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(arg: &'static str, got: (usize, usize), expected: (usize, usize)) -> Self {
        Error::ShapeMismatch {
            arg,
            got: Shape::new(got.0, got.1),
            expected: Shape::new(expected.0, expected.1),
        }
    }
}

/// Checks that a hyperparameter is finite and within `[lo, hi]` (inclusive
/// bounds chosen by the caller through `lo_open`/`hi_open`).
pub(crate) fn check_range(
    arg: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
    expected: &'static str,
) -> Result<()> {
    let lo_ok = if lo_open { value > lo } else { value >= lo };
    let hi_ok = if hi_open { value < hi } else { value <= hi };
    if value.is_finite() && lo_ok && hi_ok {
        Ok(())
    } else {
        Err(Error::InvalidValue { arg, value, expected })
    }
}

/// Checks that a scalar is finite.
pub(crate) fn check_finite(arg: &'static str, value: f64) -> Result<()> {
    check_range(
        arg,
        value,
        f64::NEG_INFINITY,
        f64::INFINITY,
        false,
        false,
        "a finite value",
    )
}
