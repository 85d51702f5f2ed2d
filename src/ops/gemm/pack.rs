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

/// A reusable, 64-byte-aligned scratch buffer of f32, one per thread and
/// purpose, so repeated calls neither allocate nor page-fault.
pub(crate) struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    pub(crate) const fn new() -> Self {
        Scratch { buf: Vec::new() }
    }

    /// A pointer to at least `len` writable floats, aligned to 64 bytes,
    /// valid until the next call on this buffer.
    pub(crate) fn get(&mut self, len: usize) -> *mut f32 {
        const PAD: usize = 16;
        if self.buf.len() < len + PAD {
            self.buf = vec![0.0; len + PAD];
        }
        let p = self.buf.as_mut_ptr();
        let misalign = (p as usize / 4) % PAD;
        // SAFETY: the offset is below PAD, and PAD floats of slack were
        // allocated past `len`.
        unsafe { p.add((PAD - misalign) % PAD) }
    }
}
