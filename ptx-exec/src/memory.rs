//! The global heap kernels run against: allocations at fake device addresses,
//! separated by unmapped gaps so small overruns land outside every allocation.

use std::cell::Cell;

use half::{bf16, f16};

use crate::Error;

/// Where the first allocation starts; any address below it is unmapped.
const HEAP_BASE: u64 = 0x0000_1000_0000_0000;
/// Unmapped bytes between two allocations: an overrun must go a long way to land in another one.
const GAP: u64 = 1 << 20;
/// Generic addresses of shared memory: `[SHARED_WINDOW, SHARED_WINDOW + 4 GiB)`.
pub(crate) const SHARED_WINDOW: u64 = 0x0000_7000_0000_0000;
/// Generic addresses of local memory.
pub(crate) const LOCAL_WINDOW: u64 = 0x0000_7100_0000_0000;
/// Generic addresses of the kernel parameters (`cvta.param`).
pub(crate) const PARAM_WINDOW: u64 = 0x0000_7200_0000_0000;
pub(crate) const WINDOW_SIZE: u64 = 1 << 32;

/// A buffer in [`Memory`]: its device address and length in bytes. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Device address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len: usize,
}

impl Buffer {
    /// A view `len` bytes long starting `offset` bytes in (pointer arithmetic
    /// only: bounds checks stay against the whole allocation).
    pub fn slice(&self, offset: usize, len: usize) -> Buffer {
        assert!(offset + len <= self.len, "Buffer::slice out of range");
        Buffer {
            addr: self.addr + offset as u64,
            len,
        }
    }
}

#[derive(Debug)]
struct Alloc {
    base: u64,
    data: Vec<u8>,
}

/// Host memory standing in for a GPU's global memory.
#[derive(Debug, Default)]
pub struct Memory {
    allocs: Vec<Alloc>,
    next: u64,
    last: Cell<usize>,
}

impl Memory {
    /// An empty heap.
    pub fn new() -> Memory {
        Memory {
            allocs: Vec::new(),
            next: HEAP_BASE,
            last: Cell::new(0),
        }
    }

    /// Allocates `len` bytes filled with `0xFF` (all-NaN as f32), 256-byte aligned.
    pub fn alloc(&mut self, len: usize) -> Buffer {
        self.alloc_bytes(&vec![0xFF; len])
    }

    /// Allocates `len` zero bytes.
    pub fn alloc_zeroed(&mut self, len: usize) -> Buffer {
        self.alloc_bytes(&vec![0; len])
    }

    /// Allocates a copy of `bytes`.
    pub fn alloc_bytes(&mut self, bytes: &[u8]) -> Buffer {
        let base = self.next;
        self.next = (base + bytes.len() as u64 + GAP).div_ceil(256) * 256;
        self.allocs.push(Alloc {
            base,
            data: bytes.to_vec(),
        });
        Buffer {
            addr: base,
            len: bytes.len(),
        }
    }

    /// Allocates `len` bytes, each set to `fill` (`0xFF` poisons them as all-NaN f32),
    /// 256-byte aligned: [`Memory::alloc`] with an error instead of an abort when the
    /// host cannot provide the bytes or the fake address space is used up.
    pub fn try_alloc(&mut self, len: usize, fill: u8) -> Result<Buffer, Error> {
        let end = self
            .next
            .checked_add(len as u64)
            .and_then(|e| e.checked_add(GAP))
            .filter(|&e| e <= SHARED_WINDOW)
            .ok_or_else(|| Error::Memory(format!("no room for {len} more bytes in the device address space")))?;
        let mut data = Vec::new();
        data.try_reserve_exact(len)
            .map_err(|_| Error::Memory(format!("the host could not provide {len} bytes")))?;
        data.resize(len, fill);
        let base = self.next;
        self.next = end.div_ceil(256) * 256;
        self.allocs.push(Alloc { base, data });
        Ok(Buffer { addr: base, len })
    }

    /// Frees `buf`, which must be a whole allocation as an `alloc*` call returned it.
    /// Its addresses are never handed out again, so a later access through a stale
    /// pointer is an out-of-bounds fault, not a read of some other allocation.
    pub fn free(&mut self, buf: Buffer) -> Result<(), Error> {
        let i = self.allocs.partition_point(|a| a.base < buf.addr);
        match self.allocs.get(i) {
            Some(a) if a.base == buf.addr && a.data.len() == buf.len => {
                self.allocs.remove(i);
                Ok(())
            }
            _ => Err(Error::Memory(format!(
                "free of {} bytes at {:#x}: not an allocation",
                buf.len, buf.addr
            ))),
        }
    }

    /// Copies `dst.len()` bytes of `buf`, starting `offset` bytes in, into `dst`.
    pub fn read_into(&self, buf: Buffer, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        if offset.checked_add(dst.len()).is_none_or(|end| end > buf.len) {
            return Err(Error::Memory(format!(
                "read of {} bytes at offset {offset} from a {}-byte buffer",
                dst.len(),
                buf.len
            )));
        }
        let src = self
            .get(buf.addr + offset as u64, dst.len())
            .ok_or_else(|| Error::Memory(format!("no allocation at {:#x}", buf.addr)))?;
        dst.copy_from_slice(src);
        Ok(())
    }

    /// Bytes held by the live allocations.
    pub fn allocated_bytes(&self) -> usize {
        self.allocs.iter().map(|a| a.data.len()).sum()
    }

    /// Allocates a copy of `v`.
    pub fn alloc_f32(&mut self, v: &[f32]) -> Buffer {
        self.alloc_bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Allocates a copy of `v`.
    pub fn alloc_u32(&mut self, v: &[u32]) -> Buffer {
        self.alloc_bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Allocates a copy of `v`.
    pub fn alloc_i32(&mut self, v: &[i32]) -> Buffer {
        self.alloc_bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Allocates a copy of `v`.
    pub fn alloc_bf16(&mut self, v: &[bf16]) -> Buffer {
        self.alloc_bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Allocates a copy of `v`.
    pub fn alloc_f16(&mut self, v: &[f16]) -> Buffer {
        self.alloc_bytes(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }

    fn find(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let hit = |i: usize| {
            let a = &self.allocs[i];
            if addr >= a.base && addr.saturating_add(len as u64) <= a.base + a.data.len() as u64 {
                Some((i, (addr - a.base) as usize))
            } else {
                None
            }
        };
        let last = self.last.get();
        if last < self.allocs.len() {
            if let Some(r) = hit(last) {
                return Some(r);
            }
        }
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i == 0 {
            return None;
        }
        let r = hit(i - 1);
        if r.is_some() {
            self.last.set(i - 1);
        }
        r
    }

    /// A description of the allocation nearest `addr`, for error messages.
    pub(crate) fn describe_near(&self, addr: u64) -> String {
        let i = self.allocs.partition_point(|a| a.base <= addr);
        if i == 0 {
            return String::new();
        }
        let a = &self.allocs[i - 1];
        let end = a.base + a.data.len() as u64;
        if addr >= end && addr - end < GAP {
            format!(
                " ({} bytes past the end of the {}-byte allocation at {:#x})",
                addr - end,
                a.data.len(),
                a.base
            )
        } else if addr >= a.base && addr < end {
            format!(
                " (runs past the end of the {}-byte allocation at {:#x})",
                a.data.len(),
                a.base
            )
        } else {
            String::new()
        }
    }

    pub(crate) fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (i, off) = self.find(addr, len)?;
        Some(&self.allocs[i].data[off..off + len])
    }

    pub(crate) fn get_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (i, off) = self.find(addr, len)?;
        Some(&mut self.allocs[i].data[off..off + len])
    }

    /// Copies `bytes` into `buf` at byte `offset`.
    pub fn write_bytes(&mut self, buf: Buffer, offset: usize, bytes: &[u8]) -> Result<(), Error> {
        if offset.checked_add(bytes.len()).is_none_or(|end| end > buf.len) {
            return Err(Error::Memory(format!(
                "write of {} bytes at offset {offset} into a {}-byte buffer",
                bytes.len(),
                buf.len
            )));
        }
        let dst = self
            .get_mut(buf.addr + offset as u64, bytes.len())
            .ok_or_else(|| Error::Memory(format!("no allocation at {:#x}", buf.addr)))?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    /// The bytes of `buf`.
    pub fn read_bytes(&self, buf: Buffer) -> Result<Vec<u8>, Error> {
        self.get(buf.addr, buf.len)
            .map(|s| s.to_vec())
            .ok_or_else(|| Error::Memory(format!("no allocation of {} bytes at {:#x}", buf.len, buf.addr)))
    }

    /// Overwrites `buf` with `v` (which must be exactly as long).
    pub fn write_f32(&mut self, buf: Buffer, v: &[f32]) -> Result<(), Error> {
        self.write_bytes(buf, 0, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Overwrites `buf` with `v`.
    pub fn write_u32(&mut self, buf: Buffer, v: &[u32]) -> Result<(), Error> {
        self.write_bytes(buf, 0, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }

    /// Overwrites `buf` with `v`.
    pub fn write_i32(&mut self, buf: Buffer, v: &[i32]) -> Result<(), Error> {
        self.write_bytes(buf, 0, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Overwrites `buf` with `v`.
    pub fn write_bf16(&mut self, buf: Buffer, v: &[bf16]) -> Result<(), Error> {
        self.write_bytes(buf, 0, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }
    /// Overwrites `buf` with `v`.
    pub fn write_f16(&mut self, buf: Buffer, v: &[f16]) -> Result<(), Error> {
        self.write_bytes(buf, 0, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
    }

    /// `buf` read as little-endian f32.
    pub fn read_f32(&self, buf: Buffer) -> Result<Vec<f32>, Error> {
        Ok(self
            .read_bytes(buf)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    /// `buf` read as little-endian u32.
    pub fn read_u32(&self, buf: Buffer) -> Result<Vec<u32>, Error> {
        Ok(self
            .read_bytes(buf)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    /// `buf` read as little-endian i32.
    pub fn read_i32(&self, buf: Buffer) -> Result<Vec<i32>, Error> {
        Ok(self
            .read_bytes(buf)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
    /// `buf` read as little-endian bf16.
    pub fn read_bf16(&self, buf: Buffer) -> Result<Vec<bf16>, Error> {
        Ok(self
            .read_bytes(buf)?
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]))
            .collect())
    }
    /// `buf` read as little-endian f16.
    pub fn read_f16(&self, buf: Buffer) -> Result<Vec<f16>, Error> {
        Ok(self
            .read_bytes(buf)?
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect())
    }
}
