//! Packing: copying a block of A or B into the contiguous micro-panel layout
//! the microkernel streams, converting `bf16`/`f16` to `f32` on the way.
//!
//! A panel of `h <= MR` rows of A over `kc` steps of k is stored k-major:
//! element `(i, p)` at `p·MR + i`; a panel of `w <= NR` columns of B stores
//! `(p, j)` at `p·NR + j`. Rows and columns past `h`/`w` are left unwritten:
//! the kernels never read them (edge tiles use fewer rows and masked lanes).

use super::GemmInput;

/// Copies `dst[p·dst_stride + x] = src[p·s_outer + x·s_inner]` for
/// `x < h`, `p < kc`, converting to f32.
///
/// # Safety
/// Every source address named must be readable, every destination address
/// writable, and the two must not overlap.
pub(crate) unsafe fn pack_panel<T: GemmInput>(
    src: *const T,
    s_outer: isize,
    s_inner: isize,
    h: usize,
    kc: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    // SAFETY (whole body): every access is one the caller's contract names.
    unsafe {
        if s_inner == 1 || h == 1 {
            // Rows of the panel are contiguous in the source: convert whole runs.
            for p in 0..kc {
                let s = std::slice::from_raw_parts(src.offset(p as isize * s_outer), h);
                let d = std::slice::from_raw_parts_mut(dst.add(p * dst_stride), h);
                T::convert_slice(s, d);
            }
        } else if s_outer == 1 {
            // Columns contiguous: read each source run once, scatter by
            // dst_stride; half types convert whole runs first (vectorised).
            let mut tmp = [0.0f32; 256];
            for x in 0..h {
                let s = src.offset(x as isize * s_inner);
                let d = dst.add(x);
                if T::IS_F32 {
                    for p in 0..kc {
                        *d.add(p * dst_stride) = (*s.add(p)).to_f32();
                    }
                } else {
                    for p0 in (0..kc).step_by(tmp.len()) {
                        let len = tmp.len().min(kc - p0);
                        T::convert_slice(std::slice::from_raw_parts(s.add(p0), len), &mut tmp[..len]);
                        for (p, v) in tmp[..len].iter().enumerate() {
                            *d.add((p0 + p) * dst_stride) = *v;
                        }
                    }
                }
            }
        } else {
            for p in 0..kc {
                let s = src.offset(p as isize * s_outer);
                let d = dst.add(p * dst_stride);
                for x in 0..h {
                    *d.add(x) = (*s.offset(x as isize * s_inner)).to_f32();
                }
            }
        }
    }
}

/// A reusable, page-aligned scratch buffer of f32, one per thread and
/// purpose, so repeated calls neither allocate nor page-fault. It only grows,
/// and only to the sizes the driver's blocking bounds (see
/// `Blocking::scratch_floats`).
pub(crate) struct Scratch {
    /// The page-aligned start of the buffer (inside the allocation at `raw`).
    ptr: *mut f32,
    /// The allocation, as the allocator returned it.
    raw: *mut u8,
    /// Floats usable from `ptr` (0: nothing allocated).
    cap: usize,
}

/// Alignment of scratch buffers: a page, so a block never straddles more
/// pages (and TLB entries) than it must, and every cache line is whole.
const SCRATCH_ALIGN: usize = 4096;

impl Scratch {
    pub(crate) const fn new() -> Self {
        Scratch {
            ptr: std::ptr::null_mut(),
            raw: std::ptr::null_mut(),
            cap: 0,
        }
    }

    /// The allocation for `floats` usable floats: one page more than they
    /// need, at the allocator's own alignment, so that a zeroed allocation
    /// of this size comes as fresh zero pages from the system (`calloc`),
    /// untouched until packing writes them. (A zeroed allocation at page
    /// alignment would be written with zeros at once, making the whole
    /// bound resident on every thread whatever its products need.)
    fn layout(floats: usize) -> Option<std::alloc::Layout> {
        let bytes = floats.checked_mul(4)?.checked_add(SCRATCH_ALIGN)?;
        std::alloc::Layout::from_size_align(bytes, 16).ok()
    }

    /// Makes room for at least `len` floats. Returns false (and keeps the
    /// old buffer) when the system cannot provide them.
    pub(crate) fn reserve(&mut self, len: usize) -> bool {
        if len <= self.cap {
            return true;
        }
        let Some(layout) = Self::layout(len) else { return false };
        // SAFETY: `layout` has a non-zero size (at least one page).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        if raw.is_null() {
            return false;
        }
        let skip = (SCRATCH_ALIGN - raw as usize % SCRATCH_ALIGN) % SCRATCH_ALIGN;
        self.release();
        // SAFETY: skip < SCRATCH_ALIGN, and the allocation holds `len` floats
        // plus SCRATCH_ALIGN bytes, so `len` floats from `raw + skip` are inside it.
        self.ptr = unsafe { raw.add(skip) }.cast::<f32>();
        self.raw = raw;
        self.cap = len;
        true
    }

    fn release(&mut self) {
        if self.cap > 0 {
            if let Some(layout) = Self::layout(self.cap) {
                // SAFETY: allocated in `reserve` with this very layout.
                unsafe { std::alloc::dealloc(self.raw, layout) };
            }
            self.ptr = std::ptr::null_mut();
            self.raw = std::ptr::null_mut();
            self.cap = 0;
        }
    }

    /// A pointer to at least `len` writable floats, page-aligned, valid until
    /// the next call on this buffer; `None` when the system has no memory
    /// for it.
    pub(crate) fn get(&mut self, len: usize) -> Option<*mut f32> {
        self.reserve(len.max(1)).then_some(self.ptr)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_grows_only_and_stays_page_aligned() {
        let mut s = Scratch::new();
        let p = s.get(10).unwrap();
        assert_eq!(p as usize % SCRATCH_ALIGN, 0);
        assert_eq!(s.get(5), Some(p), "a smaller request reuses the buffer");
        let q = s.get(100_000).unwrap();
        assert_eq!(q as usize % SCRATCH_ALIGN, 0);
        assert!(s.cap >= 100_000);
        assert!(!s.reserve(usize::MAX), "an impossible size is refused, not a panic");
        assert_eq!(s.get(usize::MAX / 2), None);
        assert_eq!(s.get(1), Some(q));
    }
}
