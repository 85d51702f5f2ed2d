//! Tensor maps: what the bulk tensor copies (`cp.async.bulk.tensor`, "TMA") of an
//! sm_90 kernel read a global array through, passed to the kernel by value as a
//! 128-byte, 64-byte-aligned `.param .align 64 .b8 name[128]` parameter.
//!
//! A [`TiledTensorMap`] describes one operand layout (address, element type,
//! dimensions, strides, box, swizzle, out-of-bounds fill) and is checked once, here,
//! against the rules `cuTensorMapEncodeTiled` documents, so that both engines refuse
//! the same layouts with the same error. Each engine then encodes it its own way:
//! the CUDA driver into its opaque `CUtensorMap`, the PTX executor into its model of
//! one (`nnkern_ptx_exec::TensorMap`, the `nkTMAPv1` layout). The 128 bytes travel
//! as a [`TensorMapArg`] inside a [`KernelArg`](super::KernelArg).

use crate::error::{Error, Result};

/// Bytes of a tensor-map kernel parameter (`CUtensorMap`).
pub const TENSOR_MAP_BYTES: usize = 128;

/// The element type of a tensor map (`CU_TENSOR_MAP_DATA_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorMapElem {
    /// bfloat16, 2 bytes.
    Bf16,
    /// IEEE half precision, 2 bytes.
    F16,
    /// IEEE single precision, 4 bytes.
    F32,
}

impl TensorMapElem {
    /// Bytes per element.
    pub fn bytes(self) -> u32 {
        match self {
            TensorMapElem::Bf16 | TensorMapElem::F16 => 2,
            TensorMapElem::F32 => 4,
        }
    }
}

/// Shared-memory swizzle of the copied box (`CU_TENSOR_MAP_SWIZZLE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorMapSwizzle {
    /// Rows as in global memory.
    None,
    /// 32-byte swizzle.
    B32,
    /// 64-byte swizzle.
    B64,
    /// 128-byte swizzle.
    B128,
}

impl TensorMapSwizzle {
    /// Bytes of the swizzle pattern's row (0 for none): the inner box dimension may
    /// span at most this many bytes.
    pub fn span(self) -> u32 {
        match self {
            TensorMapSwizzle::None => 0,
            TensorMapSwizzle::B32 => 32,
            TensorMapSwizzle::B64 => 64,
            TensorMapSwizzle::B128 => 128,
        }
    }
}

/// A tiled tensor map of up to 5 dimensions, innermost (contiguous) dimension first,
/// interleave none, element strides 1; out-of-bounds elements read as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TiledTensorMap {
    /// Device address of element (0, 0, ...).
    pub global_address: u64,
    /// Element type.
    pub elem: TensorMapElem,
    /// Number of dimensions, 1 to 5.
    pub rank: usize,
    /// Elements in each dimension (the first `rank` entries).
    pub dims: [u64; 5],
    /// Byte strides of dimensions 1.. (the first `rank - 1` entries).
    pub strides: [u64; 4],
    /// The box (the tile one copy moves) in each dimension (the first `rank` entries).
    pub box_dims: [u32; 5],
    /// Swizzle of the box in shared memory.
    pub swizzle: TensorMapSwizzle,
}

fn bad(msg: String) -> Error {
    Error::invalid("tensor map", msg)
}

impl TiledTensorMap {
    /// A 2-D map of `rows` rows of `cols` elements, rows `row_stride_bytes` apart,
    /// copied in boxes of `box_rows × box_cols`; checked by [`TiledTensorMap::validate`].
    #[allow(clippy::too_many_arguments)]
    pub fn matrix(
        global_address: u64,
        elem: TensorMapElem,
        rows: u64,
        cols: u64,
        row_stride_bytes: u64,
        box_rows: u32,
        box_cols: u32,
        swizzle: TensorMapSwizzle,
    ) -> Result<TiledTensorMap> {
        let map = TiledTensorMap {
            global_address,
            elem,
            rank: 2,
            dims: [cols, rows, 1, 1, 1],
            strides: [row_stride_bytes, 0, 0, 0],
            box_dims: [box_cols, box_rows, 1, 1, 1],
            swizzle,
        };
        map.validate()?;
        Ok(map)
    }

    /// The rules of `cuTensorMapEncodeTiled` (interleave none): rank 1 to 5; global
    /// address 16-byte aligned; every dimension 1 to 2³²; strides multiples of 16
    /// below 2⁴⁰, each at least the extent of the dimension below it (the rows of a
    /// map do not overlap); box dimensions 1 to 256, the inner one a multiple of 16
    /// bytes and, with a swizzle, at most the swizzle's span. Every product is
    /// checked, so no layout overflows.
    pub fn validate(&self) -> Result<()> {
        let r = self.rank;
        if !(1..=5).contains(&r) {
            return Err(bad(format!("rank {r} is not 1 to 5")));
        }
        if !self.global_address.is_multiple_of(16) {
            return Err(bad(format!(
                "global address {:#x} is not 16-byte aligned",
                self.global_address
            )));
        }
        let eb = u64::from(self.elem.bytes());
        for (i, &d) in self.dims[..r].iter().enumerate() {
            if d == 0 || d > 1 << 32 {
                return Err(bad(format!("dimension {i} has {d} elements (1 to 2^32 allowed)")));
            }
        }
        // The extent of dimension 0 in bytes, then of each dimension below the next stride.
        let mut extent = self.dims[0]
            .checked_mul(eb)
            .ok_or_else(|| bad("dimension 0 in bytes overflows".into()))?;
        for (i, &s) in self.strides[..r - 1].iter().enumerate() {
            if !s.is_multiple_of(16) || s >= 1 << 40 {
                return Err(bad(format!(
                    "stride {} is {s} bytes (a multiple of 16 below 2^40 required)",
                    i + 1
                )));
            }
            if s < extent {
                return Err(bad(format!(
                    "stride {} is {s} bytes, less than the {extent} bytes of the dimension below it",
                    i + 1
                )));
            }
            extent = s
                .checked_mul(self.dims[i + 1])
                .ok_or_else(|| bad(format!("dimension {} in bytes overflows", i + 1)))?;
        }
        for (i, &b) in self.box_dims[..r].iter().enumerate() {
            if !(1..=256).contains(&b) {
                return Err(bad(format!("box dimension {i} is {b} (1 to 256 allowed)")));
            }
        }
        // box_dims[0] <= 256 and eb <= 4: no overflow.
        let inner = self.box_dims[0] * self.elem.bytes();
        if !inner.is_multiple_of(16) {
            return Err(bad(format!(
                "the inner box dimension spans {inner} bytes, not a multiple of 16"
            )));
        }
        if self.swizzle != TensorMapSwizzle::None && inner > self.swizzle.span() {
            return Err(bad(format!(
                "the inner box dimension spans {inner} bytes, more than the {}-byte swizzle",
                self.swizzle.span()
            )));
        }
        Ok(())
    }

    /// The PTX executor's encoding of this map (the `nkTMAPv1` layout of
    /// `nnkern_ptx_exec::TensorMap`), after [`TiledTensorMap::validate`].
    pub fn executor_encoding(&self) -> Result<TensorMapArg> {
        self.validate()?;
        let r = self.rank;
        let swizzle = match self.swizzle {
            TensorMapSwizzle::None => nnkern_ptx_exec::Swizzle::None,
            TensorMapSwizzle::B32 => nnkern_ptx_exec::Swizzle::B32,
            TensorMapSwizzle::B64 => nnkern_ptx_exec::Swizzle::B64,
            TensorMapSwizzle::B128 => nnkern_ptx_exec::Swizzle::B128,
        };
        let map = nnkern_ptx_exec::TensorMap {
            global_address: self.global_address,
            element_bytes: self.elem.bytes(),
            // The executor holds dimensions as u32; a dimension of exactly 2^32 is the
            // one value validate() allows that it cannot.
            dims: self.dims[..r]
                .iter()
                .map(|&d| {
                    u32::try_from(d).map_err(|_| {
                        bad(format!(
                            "dimension of {d} elements is above the PTX executor's 2^32 - 1"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
            strides: self.strides[..r - 1].to_vec(),
            box_dims: self.box_dims[..r].to_vec(),
            element_strides: vec![1; r],
            swizzle,
            oob_nan: false,
        };
        let bytes = map
            .encode()
            .map_err(|e| bad(format!("the PTX executor cannot model it: {e}")))?;
        Ok(TensorMapArg { bytes })
    }
}

/// An encoded tensor map: 128 bytes, 64-byte aligned, passed by value (as CUDA's
/// `__grid_constant__ const CUtensorMap`). Its contents belong to the engine that
/// encoded it (the driver's are opaque).
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorMapArg {
    pub(crate) bytes: [u8; TENSOR_MAP_BYTES],
}

impl TensorMapArg {
    /// The 128 bytes the kernel receives.
    pub fn bytes(&self) -> &[u8; TENSOR_MAP_BYTES] {
        &self.bytes
    }
}

impl std::fmt::Debug for TensorMapArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorMapArg(")?;
        for b in &self.bytes[..24] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> TiledTensorMap {
        TiledTensorMap::matrix(
            0x1000,
            TensorMapElem::Bf16,
            300,
            700,
            704 * 2,
            128,
            64,
            TensorMapSwizzle::B128,
        )
        .unwrap()
    }

    fn refused(map: TiledTensorMap, what: &str) {
        match map.validate() {
            Err(Error::InvalidArgument {
                arg: "tensor map",
                what: reason,
            }) => {
                assert!(reason.contains(what), "{reason} (expected {what})")
            }
            other => panic!("{map:?}: expected a refusal naming {what}, got {other:?}"),
        }
        assert!(map.executor_encoding().is_err());
    }

    /// Each rule of cuTensorMapEncodeTiled is enforced, with an error naming it.
    #[test]
    fn every_encode_rule_is_checked() {
        let g = good();
        refused(TiledTensorMap { rank: 0, ..g }, "rank");
        refused(TiledTensorMap { rank: 6, ..g }, "rank");
        refused(
            TiledTensorMap {
                global_address: 0x1008,
                ..g
            },
            "16-byte aligned",
        );
        refused(
            TiledTensorMap {
                dims: [0, 300, 1, 1, 1],
                ..g
            },
            "dimension 0",
        );
        refused(
            TiledTensorMap {
                dims: [700, (1 << 32) + 1, 1, 1, 1],
                ..g
            },
            "dimension 1",
        );
        refused(
            TiledTensorMap {
                strides: [1400, 0, 0, 0],
                ..g
            },
            "multiple of 16",
        );
        refused(
            TiledTensorMap {
                strides: [1 << 40, 0, 0, 0],
                ..g
            },
            "below 2^40",
        );
        refused(
            TiledTensorMap {
                strides: [1392, 0, 0, 0],
                ..g
            },
            "less than the 1400 bytes",
        );
        refused(
            TiledTensorMap {
                box_dims: [64, 257, 1, 1, 1],
                ..g
            },
            "box dimension 1",
        );
        refused(
            TiledTensorMap {
                box_dims: [64, 0, 1, 1, 1],
                ..g
            },
            "box dimension 1",
        );
        refused(
            TiledTensorMap {
                box_dims: [4, 128, 1, 1, 1],
                ..g
            },
            "not a multiple of 16",
        );
        refused(
            TiledTensorMap {
                box_dims: [128, 128, 1, 1, 1],
                ..g
            },
            "more than the 128-byte swizzle",
        );
        refused(
            TiledTensorMap {
                swizzle: TensorMapSwizzle::B64,
                ..g
            },
            "more than the 64-byte swizzle",
        );
        // A 3-D map whose planes overlap; a 4-D one whose extent overflows u64 is
        // refused, not wrapped.
        refused(
            TiledTensorMap {
                rank: 3,
                dims: [700, 2, 5, 1, 1],
                strides: [1408, 1408, 0, 0],
                box_dims: [64, 128, 1, 1, 1],
                ..g
            },
            "stride 2 is 1408 bytes",
        );
        refused(
            TiledTensorMap {
                rank: 4,
                dims: [700, 1 << 32, 1 << 32, 1 << 32, 1],
                strides: [1 << 39, 1 << 39, 1 << 39, 0],
                box_dims: [64, 128, 1, 1, 1],
                ..g
            },
            "dimension 1 in bytes overflows",
        );
    }

    /// The executor's encoding is its own model's: magic, address, rank, element size,
    /// swizzle code, dimensions, stride, box.
    #[test]
    fn executor_encoding_is_the_executor_model() {
        let g = good();
        let b = g.executor_encoding().unwrap();
        let want =
            nnkern_ptx_exec::TensorMap::matrix(0x1000, 2, 300, 700, 1408, 128, 64, nnkern_ptx_exec::Swizzle::B128)
                .encode()
                .unwrap();
        assert_eq!(b.bytes(), &want);
        assert_eq!(&b.bytes()[0..8], b"nkTMAPv1");
        assert_eq!(std::mem::align_of::<TensorMapArg>(), 64);
        assert_eq!(std::mem::size_of::<TensorMapArg>(), 128);
        // A valid CUDA map the executor does not model (a swizzle wider than the box).
        let narrow = TiledTensorMap {
            box_dims: [32, 128, 1, 1, 1],
            ..g
        };
        narrow.validate().unwrap();
        assert!(matches!(narrow.executor_encoding(), Err(Error::InvalidArgument { .. })));
    }
}
