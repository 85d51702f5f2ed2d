//! The trainer's error type: a kernel error, a bad option, or a bad file.

/// What can go wrong in training, loading data or checkpoints, or on the
/// command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kernel rejected its arguments or failed (see [`nnkern::Error`]).
    #[error(transparent)]
    Kernel(#[from] nnkern::Error),
    /// An option or argument the trainer cannot use (named as on the command line).
    #[error("{arg}: {what}")]
    InvalidArgument {
        /// The option.
        arg: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// A numeric option outside its range.
    #[error("{arg} = {value}: expected {expected}")]
    InvalidValue {
        /// The option.
        arg: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range.
        expected: &'static str,
    },
    /// A size derived from the options does not fit in `usize`.
    #[error("{arg}: {what} overflows the address space")]
    Overflow {
        /// The option the size comes from.
        arg: &'static str,
        /// What overflowed.
        what: &'static str,
    },
    /// A data, checkpoint, metrics or plot file that is missing, truncated,
    /// corrupt or cannot be written.
    #[error("{path}: {what}")]
    Data {
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
}

/// The trainer's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(arg: &'static str, what: impl Into<String>) -> Self {
        Error::InvalidArgument { arg, what: what.into() }
    }

    /// A buffer of the wrong shape (a kernel [`nnkern::Error::ShapeMismatch`]).
    pub fn shape(arg: &'static str, got: (usize, usize), expected: (usize, usize)) -> Self {
        Error::Kernel(nnkern::Error::shape(arg, got, expected))
    }
}
