//! Matrix views over plain memory: shape plus a row stride and a column
//! stride, validated once when the view is made.
//!
//! A transposed view ([`MatRef::t`]) or a sub-matrix ([`MatRef::submatrix`])
//! costs nothing: it only rewrites the shape, the strides and the start.
//! Past construction, every element `(i, j)` with `i < rows`, `j < cols`
//! lies at `data[i * row_stride + j * col_stride]`, inside the slice; kernels
//! rely on that and do not check again.

use crate::error::{Error, Result};
use std::ops::{Index, IndexMut};

/// Number of elements a `rows × cols` view with the given strides reaches
/// (one past its last element), or `None` when that overflows `usize`.
pub fn required_len(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    let last_row = (rows - 1).checked_mul(row_stride)?;
    let last_col = (cols - 1).checked_mul(col_stride)?;
    last_row.checked_add(last_col)?.checked_add(1)
}

/// Whether distinct `(i, j)` of a `rows × cols` view map to distinct offsets.
///
/// The test is the usual sufficient one: the larger stride must step over
/// everything the smaller stride spans. Layouts that interleave rows and
/// columns without overlap are rejected too; no real layout needs them.
pub fn strides_are_disjoint(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    match (rows > 1, cols > 1) {
        (false, false) => true,
        (true, false) => row_stride != 0,
        (false, true) => col_stride != 0,
        (true, true) => {
            let (small, small_extent, big) = if row_stride <= col_stride {
                (row_stride, rows, col_stride)
            } else {
                (col_stride, cols, row_stride)
            };
            small != 0 && small.checked_mul(small_extent).is_some_and(|span| big >= span)
        }
    }
}

fn validate(
    arg: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<()> {
    // A view may hold more logical elements than memory (zero strides
    // broadcast), but never more than an `isize` can count: every size the
    // kernels derive from the shape (products, offsets, loop bounds) then
    // fits in `usize` with room to spare, as ndarray requires too.
    if rows.checked_mul(cols).is_none_or(|n| n > isize::MAX as usize) {
        return Err(Error::Overflow {
            arg,
            what: "rows*cols (the logical element count, which must not exceed isize::MAX)",
        });
    }
    let needed = required_len(rows, cols, row_stride, col_stride)
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or(Error::Overflow {
            arg,
            what: "(rows-1)*row_stride + (cols-1)*col_stride",
        })?;
    if needed > len {
        return Err(Error::BufferTooShort { arg, len, needed });
    }
    Ok(())
}

/// The checks [`MatRef::from_strides`] (and with `output`,
/// [`MatMut::from_strides`]) make, on a buffer length instead of a slice, so
/// a description of foreign memory can be checked before any slice is made.
pub fn check_view(
    arg: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    output: bool,
) -> Result<()> {
    validate(arg, len, rows, cols, row_stride, col_stride)?;
    if output && !strides_are_disjoint(rows, cols, row_stride, col_stride) {
        return Err(aliasing(arg, rows, cols, row_stride, col_stride));
    }
    Ok(())
}

fn aliasing(arg: &'static str, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Error {
    Error::Aliasing {
        arg,
        what: format!("strides ({row_stride}, {col_stride}) of a {rows}x{cols} output map two elements to one address"),
    }
}

/// The strides a view keeps: the stride of a dimension with at most one
/// element is never used to reach an element, so it is stored as 0 and no
/// offset computed from it can be negative or wrap; an empty view keeps
/// none. Every other stride is at most `len - 1 <= isize::MAX` (it reaches
/// an element inside the slice).
pub(crate) fn normalise(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> (usize, usize) {
    if rows == 0 || cols == 0 {
        return (0, 0);
    }
    (
        if rows == 1 { 0 } else { row_stride },
        if cols == 1 { 0 } else { col_stride },
    )
}

/// A read-only matrix view: `rows × cols` elements of `T`, element `(i, j)`
/// at `data[i * row_stride + j * col_stride]`.
///
/// ```
/// use nnkern::MatRef;
/// let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let m = MatRef::new(&a, 2, 3)?;          // row-major 2×3
/// assert_eq!(m[(1, 0)], 4.0);
/// let t = m.t();                           // 3×2, no copy
/// assert_eq!((t.rows(), t.cols()), (3, 2));
/// assert_eq!(t[(0, 1)], 4.0);
/// # Ok::<(), nnkern::Error>(())
/// ```
#[derive(Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<'_, T> {}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows × cols` view of `data` (row stride `cols`, column stride 1).
    /// An error if `data` is shorter than `rows · cols`.
    ///
    /// ```
    /// use nnkern::MatRef;
    /// let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    /// let m = MatRef::new(&a, 2, 3)?;
    /// assert_eq!((m[(0, 2)], m[(1, 0)]), (3.0, 4.0));
    /// assert!(MatRef::new(&a, 3, 3).is_err());   // 9 elements needed, 6 given
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(data, rows, cols, cols, 1)
    }

    /// The whole slice as one row: a `1 × data.len()` view (for the
    /// element-wise operations on plain slices).
    ///
    /// ```
    /// use nnkern::MatRef;
    /// let v = MatRef::row_vector(&[1.0f32, 2.0, 3.0])?;
    /// assert_eq!((v.shape(), v[(0, 2)]), ((1, 3), 3.0));
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn row_vector(data: &'a [T]) -> Result<Self> {
        Self::new(data, 1, data.len())
    }

    /// A column-major `rows × cols` view of `data` (row stride 1, column stride `rows`).
    ///
    /// ```
    /// use nnkern::MatRef;
    /// let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    /// let m = MatRef::col_major(&a, 2, 3)?;
    /// assert_eq!((m[(0, 1)], m[(1, 0)]), (3.0, 2.0));
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn col_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(data, rows, cols, 1, rows)
    }

    /// A view with explicit strides (in elements). Strides may be zero
    /// (broadcast) in a read-only view.
    ///
    /// ```
    /// use nnkern::MatRef;
    /// // The 2×2 block at the top left of a 3×4 buffer: row stride 4 (padded rows).
    /// let a: Vec<f32> = (0..12).map(|x| x as f32).collect();
    /// let m = MatRef::from_strides(&a, 2, 2, 4, 1)?;
    /// assert_eq!((m[(0, 1)], m[(1, 0)]), (1.0, 4.0));
    /// // A row broadcast over 3 rows (row stride 0).
    /// let b = MatRef::from_strides(&a, 3, 2, 0, 1)?;
    /// assert_eq!(b[(2, 1)], 1.0);
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn from_strides(data: &'a [T], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Result<Self> {
        Self::from_strides_named("matrix", data, rows, cols, row_stride, col_stride)
    }

    /// As [`MatRef::from_strides`], naming the argument in any error.
    ///
    /// ```
    /// use nnkern::MatRef;
    /// let e = MatRef::from_strides_named("weights", &[0.0f32; 3], 2, 2, 2, 1).unwrap_err();
    /// assert!(e.to_string().contains("weights"));
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn from_strides_named(
        arg: &'static str,
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        validate(arg, data.len(), rows, cols, row_stride, col_stride)?;
        let (row_stride, col_stride) = normalise(rows, cols, row_stride, col_stride);
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// The transposed view (`cols × rows`); no data moves.
    #[must_use]
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The `rows × cols` block starting at `(row0, col0)`.
    pub fn submatrix(self, row0: usize, col0: usize, rows: usize, cols: usize) -> Result<Self> {
        let (start, rows, cols) = sub_bounds(self.shape(), self.strides(), row0, col0, rows, cols)?;
        let (rs, cs) = normalise(rows, cols, self.row_stride, self.col_stride);
        Ok(MatRef {
            data: if rows == 0 || cols == 0 {
                &[]
            } else {
                &self.data[start..]
            },
            rows,
            cols,
            row_stride: rs,
            col_stride: cs,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }
    /// `(row_stride, col_stride)`.
    pub fn strides(&self) -> (usize, usize) {
        (self.row_stride, self.col_stride)
    }
    /// Whether the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }
    /// The slice the view starts at (element `(0, 0)` is its first element
    /// when the view is not empty).
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }
    /// Pointer to element `(0, 0)`.
    pub fn as_ptr(&self) -> *const T {
        self.data.as_ptr()
    }
    /// Whether rows are contiguous and packed one after the other
    /// (`col_stride == 1` and `row_stride == cols`, or trivially so).
    pub fn is_row_major_contiguous(&self) -> bool {
        (self.cols <= 1 || self.col_stride == 1) && (self.rows <= 1 || self.row_stride == self.cols)
    }
    /// Row `i` as a slice, when columns are contiguous (`col_stride == 1` or one column).
    pub fn row(&self, i: usize) -> Option<&'a [T]> {
        if i >= self.rows || !(self.col_stride == 1 || self.cols <= 1) {
            return None;
        }
        let start = i * self.row_stride;
        Some(&self.data[start..start + self.cols])
    }
    /// Element `(i, j)`, or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<&'a T> {
        if i < self.rows && j < self.cols {
            Some(&self.data[i * self.row_stride + j * self.col_stride])
        } else {
            None
        }
    }
}

impl<T> Index<(usize, usize)> for MatRef<'_, T> {
    type Output = T;
    fn index(&self, (i, j): (usize, usize)) -> &T {
        assert!(
            i < self.rows && j < self.cols,
            "index ({i}, {j}) outside a {}x{} view",
            self.rows,
            self.cols
        );
        &self.data[i * self.row_stride + j * self.col_stride]
    }
}

fn sub_bounds(
    (r, c): (usize, usize),
    (rs, cs): (usize, usize),
    row0: usize,
    col0: usize,
    rows: usize,
    cols: usize,
) -> Result<(usize, usize, usize)> {
    if row0.checked_add(rows).is_none_or(|end| end > r) {
        return Err(Error::invalid(
            "submatrix rows",
            format!("{row0}+{rows} exceeds {r} rows"),
        ));
    }
    if col0.checked_add(cols).is_none_or(|end| end > c) {
        return Err(Error::invalid(
            "submatrix cols",
            format!("{col0}+{cols} exceeds {c} columns"),
        ));
    }
    // Inside a validated view, so the offset cannot overflow.
    let start = if rows == 0 || cols == 0 {
        0
    } else {
        row0 * rs + col0 * cs
    };
    Ok((start, rows, cols))
}

/// A mutable matrix view. Its strides must map distinct elements to distinct
/// addresses (checked at construction), so a kernel may write every element
/// independently.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    /// A row-major `rows × cols` view of `data`.
    ///
    /// ```
    /// use nnkern::MatMut;
    /// let mut c = [0.0f32; 6];
    /// let mut m = MatMut::new(&mut c, 2, 3)?;
    /// m[(1, 2)] = 7.0;
    /// assert_eq!(c[5], 7.0);
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(data, rows, cols, cols, 1)
    }

    /// The whole slice as one row: a `1 × data.len()` view.
    ///
    /// ```
    /// use nnkern::{activation_forward_inplace, Activation, MatMut};
    /// let mut v = [-1.0f32, 2.0];
    /// activation_forward_inplace(Activation::Relu, MatMut::row_vector(&mut v)?)?;
    /// assert_eq!(v, [0.0, 2.0]);
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn row_vector(data: &'a mut [T]) -> Result<Self> {
        let n = data.len();
        Self::new(data, 1, n)
    }

    /// A column-major `rows × cols` view of `data`.
    ///
    /// ```
    /// use nnkern::MatMut;
    /// let mut c = [0.0f32; 6];
    /// MatMut::col_major(&mut c, 2, 3)?[(1, 0)] = 7.0;
    /// assert_eq!(c[1], 7.0);
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn col_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        Self::from_strides(data, rows, cols, 1, rows)
    }

    /// A view with explicit strides; they must not make two elements share an address.
    ///
    /// ```
    /// use nnkern::MatMut;
    /// let mut c = [0.0f32; 8];
    /// let mut m = MatMut::from_strides(&mut c, 2, 2, 4, 1)?;   // padded rows
    /// m[(1, 1)] = 1.0;
    /// assert_eq!(c[5], 1.0);
    /// assert!(MatMut::from_strides(&mut c, 2, 2, 0, 1).is_err()); // two rows on one address
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn from_strides(
        data: &'a mut [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        Self::from_strides_named("matrix", data, rows, cols, row_stride, col_stride)
    }

    /// As [`MatMut::from_strides`], naming the argument in any error.
    ///
    /// ```
    /// use nnkern::MatMut;
    /// let e = MatMut::from_strides_named("dx", &mut [0.0f32; 4], 2, 2, 1, 1).unwrap_err();
    /// assert!(e.to_string().contains("dx"));
    /// # Ok::<(), nnkern::Error>(())
    /// ```
    pub fn from_strides_named(
        arg: &'static str,
        data: &'a mut [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_view(arg, data.len(), rows, cols, row_stride, col_stride, true)?;
        let (row_stride, col_stride) = normalise(rows, cols, row_stride, col_stride);
        Ok(MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// The transposed view; no data moves.
    #[must_use]
    pub fn t(self) -> Self {
        MatMut {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// A read-only view of the same elements.
    pub fn rb(&self) -> MatRef<'_, T> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// A shorter-lived mutable view of the same elements.
    pub fn rb_mut(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// The `rows × cols` block starting at `(row0, col0)`.
    pub fn submatrix(self, row0: usize, col0: usize, rows: usize, cols: usize) -> Result<Self> {
        let (start, rows, cols) = sub_bounds(self.shape(), self.strides(), row0, col0, rows, cols)?;
        let (rs, cs) = normalise(rows, cols, self.row_stride, self.col_stride);
        Ok(MatMut {
            data: if rows == 0 || cols == 0 {
                &mut []
            } else {
                &mut self.data[start..]
            },
            rows,
            cols,
            row_stride: rs,
            col_stride: cs,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }
    /// `(row_stride, col_stride)`.
    pub fn strides(&self) -> (usize, usize) {
        (self.row_stride, self.col_stride)
    }
    /// Whether the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.cols == 0
    }
    /// Whether rows are contiguous and packed one after the other.
    pub fn is_row_major_contiguous(&self) -> bool {
        self.rb().is_row_major_contiguous()
    }
    /// The slice the view starts at.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data
    }
    /// Consumes the view, returning the slice it starts at.
    pub fn into_mut_slice(self) -> &'a mut [T] {
        self.data
    }
    /// Pointer to element `(0, 0)`.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.data.as_mut_ptr()
    }
    /// Row `i` as a mutable slice, when columns are contiguous.
    pub fn row_mut(&mut self, i: usize) -> Option<&mut [T]> {
        if i >= self.rows || !(self.col_stride == 1 || self.cols <= 1) {
            return None;
        }
        let start = i * self.row_stride;
        Some(&mut self.data[start..start + self.cols])
    }
    /// Element `(i, j)`, or `None` outside the view.
    pub fn get_mut(&mut self, i: usize, j: usize) -> Option<&mut T> {
        if i < self.rows && j < self.cols {
            Some(&mut self.data[i * self.row_stride + j * self.col_stride])
        } else {
            None
        }
    }
}

impl<T> Index<(usize, usize)> for MatMut<'_, T> {
    type Output = T;
    fn index(&self, (i, j): (usize, usize)) -> &T {
        assert!(
            i < self.rows && j < self.cols,
            "index ({i}, {j}) outside a {}x{} view",
            self.rows,
            self.cols
        );
        &self.data[i * self.row_stride + j * self.col_stride]
    }
}

impl<T> IndexMut<(usize, usize)> for MatMut<'_, T> {
    fn index_mut(&mut self, (i, j): (usize, usize)) -> &mut T {
        assert!(
            i < self.rows && j < self.cols,
            "index ({i}, {j}) outside a {}x{} view",
            self.rows,
            self.cols
        );
        &mut self.data[i * self.row_stride + j * self.col_stride]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_len_counts_last_element() {
        assert_eq!(required_len(0, 5, 5, 1), Some(0));
        assert_eq!(required_len(2, 3, 3, 1), Some(6));
        assert_eq!(required_len(2, 3, 1, 2), Some(6));
        assert_eq!(required_len(2, 3, 10, 1), Some(13));
        assert_eq!(required_len(2, 2, usize::MAX, 1), None);
    }

    #[test]
    fn short_buffer_and_overflow_are_errors() {
        let a = [0.0f32; 5];
        assert!(matches!(
            MatRef::new(&a, 2, 3),
            Err(Error::BufferTooShort { needed: 6, len: 5, .. })
        ));
        assert!(matches!(
            MatRef::from_strides(&a, 3, 3, usize::MAX / 2, 1),
            Err(Error::Overflow { .. })
        ));
        assert!(MatRef::new(&a[..0], 0, 1_000_000).is_ok());
    }

    #[test]
    fn logical_element_counts_beyond_isize_are_overflow() {
        let one = [0.0f32];
        // 1 × 2^61 with zero strides: one element of memory, a valid view.
        assert!(MatRef::from_strides(&one, 1, 1 << 61, 0, 0).is_ok());
        // 64 × 2^58 = 2^64 logical elements: not countable.
        assert!(matches!(
            MatRef::from_strides(&one, 64, 1 << 58, 0, 0),
            Err(Error::Overflow { .. })
        ));
        // 2^32 × 2^31 = 2^63 > isize::MAX.
        assert!(matches!(
            MatRef::from_strides(&one, 1 << 32, 1 << 31, 0, 0),
            Err(Error::Overflow { .. })
        ));
        assert!(MatRef::from_strides(&one, 1 << 31, 1 << 31, 0, 0).is_ok());
        let mut c = [0.0f32];
        assert!(matches!(
            MatMut::from_strides(&mut c, 1 << 40, 1 << 40, 0, 0),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn strides_of_unit_extents_are_normalised() {
        let a = [1.0f32, 2.0, 3.0];
        let r = MatRef::from_strides(&a, 1, 3, usize::MAX, 1).unwrap();
        assert_eq!(r.strides(), (0, 1));
        assert_eq!(r.t().strides(), (1, 0));
        let c = MatRef::from_strides(&a, 3, 1, 1, usize::MAX - 7).unwrap();
        assert_eq!(c.strides(), (1, 0));
        let e = MatRef::from_strides(&a[..0], 0, 3, 99, usize::MAX).unwrap();
        assert_eq!(e.strides(), (0, 0));
        let s = MatRef::new(&a, 1, 3).unwrap().submatrix(0, 1, 1, 1).unwrap();
        assert_eq!(s.strides(), (0, 0));
        assert_eq!(s[(0, 0)], 2.0);
        let mut m = [0.0f32; 3];
        let mm = MatMut::from_strides(&mut m, 1, 3, usize::MAX, 1).unwrap();
        assert_eq!(mm.strides(), (0, 1));
    }

    #[test]
    fn overlapping_output_strides_are_rejected() {
        let mut c = [0.0f32; 16];
        assert!(MatMut::from_strides(&mut c, 2, 2, 1, 1).is_err());
        assert!(MatMut::from_strides(&mut c, 2, 2, 0, 1).is_err());
        assert!(MatMut::from_strides(&mut c, 3, 3, 2, 1).is_err());
        assert!(MatMut::from_strides(&mut c, 3, 3, 3, 1).is_ok());
        assert!(MatMut::from_strides(&mut c, 3, 3, 1, 3).is_ok());
        assert!(MatMut::from_strides(&mut c, 1, 4, 0, 1).is_ok());
        // An empty view has no elements to collide, whatever its strides.
        assert!(MatMut::new(&mut c[..0], 5, 0).is_ok());
        assert!(MatMut::from_strides(&mut c[..0], 0, 5, 0, 0).is_ok());
        // Broadcast is fine for inputs.
        assert!(MatRef::from_strides(&c, 4, 4, 0, 1).is_ok());
    }

    #[test]
    fn transpose_and_submatrix_address_the_same_elements() {
        let a: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let m = MatRef::new(&a, 3, 4).unwrap();
        let s = m.submatrix(1, 1, 2, 2).unwrap();
        assert_eq!(s[(0, 0)], 5.0);
        assert_eq!(s[(1, 1)], 10.0);
        let st = s.t();
        assert_eq!(st[(0, 1)], 9.0);
        assert!(m.submatrix(2, 0, 2, 1).is_err());
        assert!(m.submatrix(3, 4, 0, 0).is_ok());
    }
}
