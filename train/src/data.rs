//! MNIST-format IDX files: parsing, validation, and the bundled digits.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code, the
//! number of dimensions, then one `u32` per dimension — followed by the
//! elements. The trainer reads unsigned-byte files (type `0x08`) only: images
//! with 3 dimensions (count × rows × cols) and labels with 1 (count). Files may
//! be gzipped (detected by the gzip magic, not the name).
//!
//! Everything a file claims is checked against what it holds before any
//! memory is sized from it: the element count must equal the payload length
//! exactly, and a gzip stream is never inflated past the size its header
//! announces, so a corrupt or hostile file gives an [`Error::Data`] naming the
//! file, never a panic or a huge allocation.
//!
//! Images stay as bytes (a quarter of the memory of `f32`); the trainer scales
//! them by 1/255 when it gathers a batch.

use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// File names of the four standard MNIST files, without the optional `.gz`.
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The digits bundled in `data/mnist-10k/` (8,000 train, 2,000 test), gzipped.
static BUNDLED: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../data/mnist-10k/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../data/mnist-10k/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../data/mnist-10k/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../data/mnist-10k/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// The largest payload accepted from one file (4 GiB − 1): far above any
/// MNIST-like set, low enough that a header claiming more is rejected before
/// allocating, and small enough that every sample index fits a `u32`.
const MAX_PAYLOAD: u64 = u32::MAX as u64;

/// A parsed IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions from the header, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

fn data_err(path: &str, what: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_string(),
        what: what.into(),
    }
}

/// Reads exactly `len` bytes from `r`, failing with a message naming `path`
/// when the stream ends early or holds more.
fn read_exact_then_eof(r: &mut impl Read, len: u64, path: &str, what: &str) -> Result<Vec<u8>> {
    // Reserve what the header announces only up to 64 KiB: a corrupt header
    // must not make an 11-byte file allocate megabytes; real data grows the
    // vector as it comes (amortised doubling, a few reallocations for MNIST).
    let mut out = Vec::with_capacity(len.min(64 << 10) as usize);
    r.take(len)
        .read_to_end(&mut out)
        .map_err(|e| data_err(path, format!("cannot read {what}: {e}")))?;
    if (out.len() as u64) < len {
        return Err(data_err(
            path,
            format!(
                "truncated: the header announces {len} bytes of {what} but the file holds {}",
                out.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => Ok(out),
        Ok(_) => Err(data_err(
            path,
            format!("the file holds more bytes than the header announces ({len} bytes of {what})"),
        )),
        Err(e) => Err(data_err(path, format!("cannot read past {what}: {e}"))),
    }
}

/// Parses an IDX file held in `bytes` (gzipped or not); `path` names it in errors.
///
/// `ndims` is the number of dimensions expected (3 for images, 1 for labels).
pub fn parse_idx(bytes: &[u8], path: &str, ndims: usize) -> Result<Idx> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        parse_idx_stream(&mut GzDecoder::new(bytes), path, ndims)
    } else {
        parse_idx_stream(&mut &bytes[..], path, ndims)
    }
}

fn parse_idx_stream(r: &mut impl Read, path: &str, ndims: usize) -> Result<Idx> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(data_err(path, format!("cannot read the IDX header: {e}"))),
        }
    }
    if got < 4 {
        return Err(data_err(
            path,
            format!("truncated: {got} bytes, too short for an IDX header"),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(data_err(
            path,
            format!(
                "not an IDX file: magic {:02x}{:02x}{:02x}{:02x}, expected 0000 then type and dimension count",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    if magic[2] != 0x08 {
        return Err(data_err(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported; expected 0x08 (unsigned byte)",
                magic[2]
            ),
        ));
    }
    if magic[3] as usize != ndims {
        return Err(data_err(
            path,
            format!("IDX file has {} dimensions, expected {ndims}", magic[3]),
        ));
    }
    let dim_bytes = read_dims(r, path, ndims)?;
    let mut dims = Vec::with_capacity(ndims);
    let mut total: u64 = 1;
    for chunk in dim_bytes.chunks_exact(4) {
        let d = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as u64;
        total = total.saturating_mul(d);
        dims.push(d as usize);
    }
    if total > MAX_PAYLOAD {
        return Err(data_err(
            path,
            format!("dimensions {dims:?} announce {total} bytes, more than the {MAX_PAYLOAD} accepted"),
        ));
    }
    let data = read_exact_then_eof(r, total, path, "elements")?;
    Ok(Idx { dims, data })
}

fn read_dims(r: &mut impl Read, path: &str, ndims: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4 * ndims];
    r.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            data_err(path, "truncated inside the IDX header")
        } else {
            data_err(path, format!("cannot read the IDX header: {e}"))
        }
    })?;
    Ok(buf)
}

/// Images and labels of one split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `count × features` bytes, row-major.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u32>,
    /// Features per image (rows × cols of the IDX image).
    pub features: usize,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the split holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A training and a test split with a common image size and class count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The training split (validation is carved from its end by the trainer).
    pub train: Split,
    /// The test split.
    pub test: Split,
    /// Number of classes: one more than the largest training label.
    pub classes: usize,
    /// Where the data came from, for messages.
    pub source: String,
}

fn split_from(images: Idx, labels: Idx, img_path: &str, lbl_path: &str) -> Result<Split> {
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(data_err(
            lbl_path,
            format!("holds {} labels but {img_path} holds {n} images", labels.dims[0]),
        ));
    }
    let features = h * w;
    if n > 0 && features == 0 {
        return Err(data_err(img_path, format!("images of size {h}x{w} have no pixels")));
    }
    Ok(Split {
        images: images.data,
        labels: labels.data.into_iter().map(u32::from).collect(),
        features,
    })
}

impl Dataset {
    /// Builds a dataset from the four files' contents, each given with the
    /// name used in errors, in the order of [`FILE_NAMES`].
    pub fn from_bytes(files: [(&str, &[u8]); 4], source: &str) -> Result<Dataset> {
        let [ti, tl, si, sl] = files;
        let train = split_from(parse_idx(ti.1, ti.0, 3)?, parse_idx(tl.1, tl.0, 1)?, ti.0, tl.0)?;
        let test = split_from(parse_idx(si.1, si.0, 3)?, parse_idx(sl.1, sl.0, 1)?, si.0, sl.0)?;
        if train.is_empty() {
            return Err(data_err(ti.0, "the training set is empty"));
        }
        if test.features != train.features {
            return Err(data_err(
                si.0,
                format!(
                    "images have {} pixels but the training images ({}) have {}",
                    test.features, ti.0, train.features
                ),
            ));
        }
        let classes = train.labels.iter().copied().max().unwrap_or(0) as usize + 1;
        if classes < 2 {
            return Err(data_err(
                tl.0,
                "every training label is 0: at least 2 classes are needed",
            ));
        }
        if let Some((i, &l)) = test.labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(data_err(
                sl.0,
                format!(
                    "label {l} at index {i} is out of range: the training labels ({}) have {classes} classes (0..={})",
                    tl.0,
                    classes - 1
                ),
            ));
        }
        Ok(Dataset {
            train,
            test,
            classes,
            source: source.to_string(),
        })
    }

    /// The digits bundled with the crate: 8,000 training and 2,000 test images of 28×28.
    pub fn bundled() -> Result<Dataset> {
        let f = BUNDLED;
        Dataset::from_bytes(
            [(f[0].0, f[0].1), (f[1].0, f[1].1), (f[2].0, f[2].1), (f[3].0, f[3].1)],
            "bundled MNIST digits",
        )
    }

    /// Reads the four standard files from `dir`; each may be gzipped
    /// (`NAME.gz`) or plain (`NAME`).
    pub fn from_dir(dir: &Path) -> Result<Dataset> {
        if !dir.is_dir() {
            return Err(data_err(&dir.display().to_string(), "not a directory (--data)"));
        }
        let mut paths: Vec<PathBuf> = Vec::with_capacity(4);
        for name in FILE_NAMES {
            let plain = dir.join(name);
            let gz = dir.join(format!("{name}.gz"));
            let p = if gz.is_file() {
                gz
            } else if plain.is_file() {
                plain
            } else {
                return Err(data_err(
                    &plain.display().to_string(),
                    format!("missing: neither {name} nor {name}.gz is in this directory"),
                ));
            };
            paths.push(p);
        }
        let mut contents = Vec::with_capacity(4);
        let mut names = Vec::with_capacity(4);
        for p in &paths {
            let name = p.display().to_string();
            contents.push(std::fs::read(p).map_err(|e| data_err(&name, format!("cannot read: {e}")))?);
            names.push(name);
        }
        Dataset::from_bytes(
            [
                (&names[0], &contents[0]),
                (&names[1], &contents[1]),
                (&names[2], &contents[2]),
                (&names[3], &contents[3]),
            ],
            &dir.display().to_string(),
        )
    }

    /// The first `n_train` training and `n_test` test samples (or all there are).
    pub fn head(&self, n_train: usize, n_test: usize) -> Dataset {
        let cut = |s: &Split, n: usize| {
            let n = n.min(s.len());
            Split {
                images: s.images[..n * s.features].to_vec(),
                labels: s.labels[..n].to_vec(),
                features: s.features,
            }
        };
        Dataset {
            train: cut(&self.train, n_train),
            test: cut(&self.test, n_test),
            classes: self.classes,
            source: format!("{} (first {n_train} train, {n_test} test)", self.source),
        }
    }

    /// Writes the data set into `dir` as the four standard IDX files,
    /// gzipped (`.gz`) or plain; images are written as `count × 1 × features`.
    pub fn write_dir(&self, dir: &Path, gzip: bool) -> Result<()> {
        use std::io::Write;
        let files = [
            write_idx(&[self.train.len(), 1, self.train.features], &self.train.images),
            write_idx(&[self.train.len()], &labels_u8(&self.train.labels)),
            write_idx(&[self.test.len(), 1, self.test.features], &self.test.images),
            write_idx(&[self.test.len()], &labels_u8(&self.test.labels)),
        ];
        for (name, bytes) in FILE_NAMES.iter().zip(files) {
            let (path, bytes) = if gzip {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let io = |e: std::io::Error| data_err(name, format!("cannot compress: {e}"));
                enc.write_all(&bytes).map_err(io)?;
                (dir.join(format!("{name}.gz")), enc.finish().map_err(io)?)
            } else {
                (dir.join(name), bytes)
            };
            super::fsutil::write_atomic(&path, &bytes)?;
        }
        Ok(())
    }

    /// A CRC-32 of the training split (images then labels), stored in
    /// checkpoints so a resume on different data is refused.
    pub fn train_fingerprint(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&(self.train.features as u64).to_le_bytes());
        h.update(&self.train.images);
        for &l in &self.train.labels {
            h.update(&l.to_le_bytes());
        }
        h.finalize()
    }
}

fn labels_u8(labels: &[u32]) -> Vec<u8> {
    labels.iter().map(|&l| l.min(255) as u8).collect()
}

/// Serialises an IDX file of unsigned bytes (used by tests and tools that
/// write small data sets).
pub fn write_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_digits_have_the_documented_shape() {
        let d = Dataset::bundled().unwrap();
        assert_eq!(d.train.len(), 8000);
        assert_eq!(d.test.len(), 2000);
        assert_eq!(d.train.features, 784);
        assert_eq!(d.classes, 10);
    }

    #[test]
    fn header_and_length_must_agree() {
        let good = write_idx(&[2, 2, 2], &[1; 8]);
        assert!(parse_idx(&good, "f", 3).is_ok());
        let short = &good[..good.len() - 1];
        let e = parse_idx(short, "f", 3).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut long = good.clone();
        long.push(0);
        let e = parse_idx(&long, "f", 3).unwrap_err().to_string();
        assert!(e.contains("more bytes"), "{e}");
        let mut bad = good.clone();
        bad[0] = 1;
        assert!(parse_idx(&bad, "f", 3).unwrap_err().to_string().contains("not an IDX"));
        assert!(parse_idx(&good, "f", 1).is_err());
        assert!(parse_idx(&good[..6], "f", 3).is_err());
        // A header announcing far more than the cap is refused before allocating.
        let huge = write_idx(&[u32::MAX as usize, u32::MAX as usize, 2], &[]);
        assert!(parse_idx(&huge, "f", 3).unwrap_err().to_string().contains("accepted"));
    }
}
