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
            // Columns contiguous: a transpose. f32 on x86 with AVX goes
            // through 8 × 8 blocks in registers.
            #[cfg(target_arch = "x86_64")]
            if T::IS_F32 && std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: T is f32 (IS_F32 is only true of f32), AVX is
                // present, and the addresses are those of this function's
                // contract.
                x86::transpose_f32(src.cast::<f32>(), s_inner, h, kc, dst, dst_stride);
                return;
            }
            // Otherwise read each source run once, scatter by dst_stride;
            // half types convert whole runs first (vectorised).
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `dst[p·dst_stride + x] = src[p + x·s_inner]` for `x < h`, `p < kc`:
    /// blocks of 8 rows × 8 steps of k are loaded as 8 vectors, transposed
    /// in registers (8 unpacks, 8 shuffles, 8 lane permutes) and stored as 8
    /// vectors of 8 (masked to the rows there are). The last `kc mod 8`
    /// steps are one more block, loaded masked to those steps, of which only
    /// their columns are stored. 8 loads, 24 shuffles and 8 stores per 64
    /// elements instead of 64 loads and 64 scattered stores.
    ///
    /// # Safety
    /// AVX must be available; every `src[p + x·s_inner]` readable and every
    /// `dst[p·dst_stride + x]` writable for `x < h`, `p < kc`, the two not
    /// overlapping. Nothing else is read or written (masked lanes are not
    /// accessed).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose_f32(
        src: *const f32,
        s_inner: isize,
        h: usize,
        kc: usize,
        dst: *mut f32,
        dst_stride: usize,
    ) {
        let rem = kc % 8;
        // Lanes below `n` set, as a mask for the masked loads and stores.
        let first = |n: usize| {
            let lanes: [i32; 8] = std::array::from_fn(|j| if j < n { -1 } else { 0 });
            // SAFETY: an unaligned load of 8 i32 from a local array.
            unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) }
        };
        let k_mask = first(rem);
        // The partial group (the last rows) first: with `dst_stride == h`
        // (a whole packed panel: AVX2's 6 rows, AVX-512's 14) its stores may
        // then be full ones whose lanes past the panel's width fall on the
        // next row's first columns, which the full groups after it, or its
        // own next row's store, overwrite (see `group`).
        for x0 in (0..h).step_by(8).rev() {
            let hg = (h - x0).min(8);
            // SAFETY: rows x0 .. x0 + hg < h of `src` and their destination
            // columns, as this function's contract gives them; `room` is what
            // `group` needs: with dst_stride == h the floats from this
            // group's start to the panel's end are the contract's.
            unsafe {
                let (src, dst) = (src.offset(x0 as isize * s_inner), dst.add(x0));
                if hg == 8 {
                    group::<true>(src, s_inner, 8, kc, k_mask, first(8), dst, dst_stride, 0);
                } else {
                    let room = if dst_stride == h { kc * dst_stride - x0 } else { 0 };
                    group::<false>(src, s_inner, hg, kc, k_mask, first(hg), dst, dst_stride, room);
                }
            }
        }
    }

    /// One group of `hg ≤ 8` rows of [`transpose_f32`] (`FULL`: `hg = 8`,
    /// so no row is masked): row `j` starts at `src + j·s_inner`, its column
    /// `x` goes to `dst + p·dst_stride + j`. `k_mask` has the lanes below
    /// `kc mod 8` set, `row_mask` those below `hg`. `room > 0` (a partial
    /// group, the last rows of a panel with `dst_stride == h`, run before
    /// the full groups): the `room` floats from `dst` on are the panel's
    /// rest, and an 8-lane store may spill into them.
    ///
    /// # Safety
    /// As [`transpose_f32`], for these `hg` rows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn group<const FULL: bool>(
        src: *const f32,
        s_inner: isize,
        hg: usize,
        kc: usize,
        k_mask: __m256i,
        row_mask: __m256i,
        dst: *mut f32,
        dst_stride: usize,
        room: usize,
    ) {
        let k8 = kc / 8 * 8;
        let rem = kc - k8;
        // SAFETY (body): row j < hg is read at p .. p + 8 ≤ kc, and in the
        // last block at k8 .. kc only (masked loads do not touch masked
        // lanes); rows past hg are not read (zeros stand in); the stores
        // write dst[(p + q)·dst_stride + j] for j < hg and p + q < kc only,
        // or, with room, the 8 floats from (p + q)·dst_stride, which end
        // within room: elements of the panel (dst_stride == h), each
        // rewritten with its own value by a later store.
        unsafe {
            let row = |j: usize| src.offset(j as isize * s_inner);
            // With `room` (the last rows of a whole panel, dst_stride == h)
            // a full store of row `p` spills its last `8 − hg` lanes onto the
            // first columns of the rows after it, which later stores
            // overwrite: this group's own (ascending `p`) when it is the
            // whole panel, else the full groups', which run after it. So
            // full stores wherever the 8 lanes end inside the panel, masked
            // ones after that. A masked store (`vmaskmovps`) took ten times
            // as long as a plain one on a Zen 3 core: it was most of the A
            // packing's cost there.
            let store = |p: usize, cols: &[__m256]| {
                for (q, &v) in cols.iter().enumerate() {
                    let at = (p + q) * dst_stride;
                    let d = dst.add(at);
                    if FULL || at + 8 <= room {
                        _mm256_storeu_ps(d, v);
                    } else {
                        _mm256_maskstore_ps(d, row_mask, v);
                    }
                }
            };
            for p in (0..k8).step_by(8) {
                let r: [__m256; 8] = std::array::from_fn(|j| {
                    if FULL || j < hg {
                        _mm256_loadu_ps(row(j).add(p))
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                store(p, &transpose8(r));
            }
            if rem > 0 {
                let r: [__m256; 8] = std::array::from_fn(|j| {
                    if FULL || j < hg {
                        _mm256_maskload_ps(row(j).add(k8), k_mask)
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                store(k8, &transpose8(r)[..rem]);
            }
        }
    }

    /// The 8 columns of the 8 × 8 block whose rows are `r`.
    #[inline]
    #[target_feature(enable = "avx")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
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

    /// The transposing pack (columns of the source contiguous: row-major A,
    /// or a transposed view of B) against the definition, for every height
    /// up to 4 groups of 8, k lengths around multiples of 8, and a
    /// destination stride wider than the panel: every named element is
    /// written with its source value and nothing else is touched.
    #[test]
    fn transposing_pack_matches_the_definition() {
        for h in 1..=32usize {
            for kc in [1usize, 7, 8, 9, 16, 23, 26, 64, 67] {
                for extra in [0usize, 3] {
                    let s_inner = kc as isize + 5;
                    let dst_stride = h + extra;
                    let src: Vec<f32> = (0..h * s_inner as usize).map(|i| i as f32 + 0.5).collect();
                    let poison = f32::from_bits(0x7fc0_dead);
                    let mut dst = vec![poison; kc * dst_stride + 8];
                    // SAFETY: (p, x) with p < kc, x < h is src[p + x·s_inner]
                    // < h·s_inner and dst[p·dst_stride + x] < kc·dst_stride.
                    unsafe { pack_panel(src.as_ptr(), 1, s_inner, h, kc, dst.as_mut_ptr(), dst_stride) };
                    for (i, &v) in dst.iter().enumerate() {
                        let (p, x) = (i / dst_stride, i % dst_stride);
                        if p < kc && x < h {
                            assert_eq!(v, src[p + x * s_inner as usize], "h {h} kc {kc} p {p} x {x}");
                        } else {
                            assert_eq!(v.to_bits(), poison.to_bits(), "h {h} kc {kc}: element {i} written");
                        }
                    }
                }
            }
        }
    }

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
