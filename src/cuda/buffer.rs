//! Typed device buffers and matrix views over them.

use crate::error::{Error, Result};
use crate::matrix::{required_len, strides_are_disjoint};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// An element type a [`DeviceBuffer`] can hold: `f32`, `u32` (labels), `bf16`, `f16`.
pub trait DeviceElem: sealed::Sealed + DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin + 'static {}
impl DeviceElem for f32 {}
impl DeviceElem for u32 {}
impl DeviceElem for half::bf16 {}
impl DeviceElem for half::f16 {}

/// A buffer of `T` in device memory, owned; freed when dropped.
///
/// Made by [`Device::upload`](super::Device::upload), [`Device::zeros`](super::Device::zeros)
/// or [`Device::filled`](super::Device::filled); read back by
/// [`Device::download`](super::Device::download).
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    // None for an empty buffer: the driver does not allocate zero bytes.
    slice: Option<CudaSlice<T>>,
}

impl<T: DeviceElem> DeviceBuffer<T> {
    pub(crate) fn empty() -> Self {
        DeviceBuffer { slice: None }
    }
    pub(crate) fn from_slice(s: CudaSlice<T>) -> Self {
        DeviceBuffer { slice: Some(s) }
    }
    pub(crate) fn slice(&self) -> Option<&CudaSlice<T>> {
        self.slice.as_ref()
    }
    pub(crate) fn slice_mut(&mut self) -> Option<&mut CudaSlice<T>> {
        self.slice.as_mut()
    }
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.slice.as_ref().map_or(0, |s| s.len())
    }
    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The underlying cudarc slice (`None` when empty), for use with other libraries.
    pub fn as_cuda_slice(&self) -> Option<&CudaSlice<T>> {
        self.slice.as_ref()
    }
}

fn validate(
    arg: &'static str,
    len: usize,
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<()> {
    let needed = required_len(rows, cols, rs, cs)
        .and_then(|n| if n == 0 { Some(0) } else { n.checked_add(offset) })
        .ok_or(Error::Overflow {
            arg,
            what: "offset + (rows-1)*row_stride + (cols-1)*col_stride",
        })?;
    if needed > len {
        return Err(Error::BufferTooShort { arg, len, needed });
    }
    Ok(())
}

/// A read-only matrix view of a device buffer: element `(i, j)` at
/// `buf[offset + i * row_stride + j * col_stride]`.
#[derive(Debug)]
pub struct DeviceMatRef<'a, T> {
    pub(crate) buf: &'a DeviceBuffer<T>,
    pub(crate) offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<T> Clone for DeviceMatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DeviceMatRef<'_, T> {}

impl<'a, T: DeviceElem> DeviceMatRef<'a, T> {
    /// A row-major `rows × cols` view of `buf`.
    pub fn new(buf: &'a DeviceBuffer<T>, rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(buf, 0, rows, cols, cols, 1)
    }
    /// A column-major `rows × cols` view of `buf`.
    pub fn col_major(buf: &'a DeviceBuffer<T>, rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(buf, 0, rows, cols, 1, rows)
    }
    /// A view starting at element `offset` with explicit strides (in elements).
    pub fn from_strides(
        buf: &'a DeviceBuffer<T>,
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        validate("matrix", buf.len(), offset, rows, cols, row_stride, col_stride)?;
        Ok(DeviceMatRef {
            buf,
            offset,
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
        })
    }
    /// The transposed view; no data moves.
    #[must_use]
    pub fn t(self) -> Self {
        DeviceMatRef {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    /// `(row_stride, col_stride)`.
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }
}

/// A mutable matrix view of a device buffer; distinct elements never share an address.
#[derive(Debug)]
pub struct DeviceMatMut<'a, T> {
    pub(crate) buf: &'a mut DeviceBuffer<T>,
    pub(crate) offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<'a, T: DeviceElem> DeviceMatMut<'a, T> {
    /// A row-major `rows × cols` view of `buf`.
    pub fn new(buf: &'a mut DeviceBuffer<T>, rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(buf, 0, rows, cols, cols, 1)
    }
    /// A column-major `rows × cols` view of `buf`.
    pub fn col_major(buf: &'a mut DeviceBuffer<T>, rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(buf, 0, rows, cols, 1, rows)
    }
    /// A view starting at element `offset` with explicit strides; strides that map
    /// two elements to one address are [`Error::Aliasing`].
    pub fn from_strides(
        buf: &'a mut DeviceBuffer<T>,
        offset: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        validate("matrix", buf.len(), offset, rows, cols, row_stride, col_stride)?;
        if !strides_are_disjoint(rows, cols, row_stride, col_stride) {
            return Err(Error::Aliasing {
                arg: "matrix",
                what: format!(
                    "strides ({row_stride}, {col_stride}) map two elements of a {rows}x{cols} view to one address"
                ),
            });
        }
        Ok(DeviceMatMut {
            buf,
            offset,
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
        })
    }
    /// The transposed view; no data moves.
    #[must_use]
    pub fn t(self) -> Self {
        DeviceMatMut {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    /// `(row_stride, col_stride)`.
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }
    /// A read-only view of the same elements.
    pub fn as_ref(&self) -> DeviceMatRef<'_, T> {
        DeviceMatRef {
            buf: self.buf,
            offset: self.offset,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}
