//! Typed device buffers and matrix views over them.

use super::device::Mem;
use super::engine::DeviceMemory;
use crate::error::{Error, Result};
use crate::matrix::{required_len, strides_are_disjoint};
use std::marker::PhantomData;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u32 {}
    impl Sealed for u8 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// An element type a [`DeviceBuffer`] can hold: `f32`, `u32` (labels), `u8`
/// (images), `bf16`, `f16`.
pub trait DeviceElem: sealed::Sealed + bytemuck::Pod + Default + Send + Sync + 'static {}
impl DeviceElem for f32 {}
impl DeviceElem for u32 {}
impl DeviceElem for u8 {}
impl DeviceElem for half::bf16 {}
impl DeviceElem for half::f16 {}

/// A buffer of `T` in device memory, owned; freed when dropped (after the work
/// already queued on its device).
///
/// Made by [`Device::upload`](super::Device::upload), [`Device::zeros`](super::Device::zeros)
/// or [`Device::filled`](super::Device::filled); read back by
/// [`Device::download`](super::Device::download). A buffer belongs to the device
/// that made it: passing it to an operation on another device is an error.
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    // None for an empty buffer: no engine allocates zero bytes.
    mem: Option<Mem>,
    len: usize,
    device: u64,
    _elem: PhantomData<T>,
}

impl<T: DeviceElem> DeviceBuffer<T> {
    pub(crate) fn empty(device: u64) -> Self {
        DeviceBuffer {
            mem: None,
            len: 0,
            device,
            _elem: PhantomData,
        }
    }
    /// `mem` holds `len` elements (`len * size_of::<T>()` bytes, checked by the caller).
    pub(crate) fn from_mem(device: u64, len: usize, mem: Mem) -> Self {
        DeviceBuffer {
            mem: Some(mem),
            len,
            device,
            _elem: PhantomData,
        }
    }
    pub(crate) fn mem(&self) -> Option<&Mem> {
        self.mem.as_ref()
    }
    pub(crate) fn mem_mut(&mut self) -> Option<&mut Mem> {
        self.mem.as_mut()
    }
    pub(crate) fn device_id(&self) -> u64 {
        self.device
    }
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device address of the first element (0 when empty), for passing the
    /// buffer to other libraries on the same device (e.g. cuBLAS). It stays valid
    /// while the buffer lives.
    pub fn device_ptr(&self) -> u64 {
        self.mem.as_ref().map_or(0, |m| m.addr())
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
