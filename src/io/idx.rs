//! Training data: Fashion-MNIST read from its IDX files (Debian package `dataset-fashion-mnist`,
//! installed under /usr/share/datasets/fashion-mnist), optionally gzipped, with a class subset.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const FASHION_CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Which half of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Images as f32 in [−1, 1] (n × rows × cols, row-major) with their labels.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image i.
    pub fn image(&self, i: usize) -> &[f32] {
        let p = self.rows * self.cols;
        &self.images[i * p..(i + 1) * p]
    }
}

/// Read a split of Fashion-MNIST from `dir` (files `train-images-idx3-ubyte[.gz]` etc.), keeping only
/// the labels in `classes` (all when `None`).
pub fn load_fashion_mnist(dir: &Path, split: Split, classes: Option<&[u8]>) -> Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    if let Some(bad) = classes.and_then(|c| c.iter().find(|&&l| l > 9)) {
        return Err(Error::param("class", bad, "Fashion-MNIST labels are 0..=9"));
    }
    let images = read_idx(&find(dir, &format!("{prefix}-images-idx3-ubyte"))?)?;
    let labels = read_idx(&find(dir, &format!("{prefix}-labels-idx1-ubyte"))?)?;
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        return Err(Error::param(
            "Fashion-MNIST files",
            format!("{:?} / {:?}", images.dims, labels.dims),
            format!("in {}: expected images [n, rows, cols] and labels [n] with the same n", dir.display()),
        ));
    }
    let (rows, cols) = (images.dims[1], images.dims[2]);
    let p = rows * cols;
    let mut out = ImageSet { images: Vec::new(), labels: Vec::new(), rows, cols };
    for (i, &l) in labels.data.iter().enumerate() {
        if classes.is_none_or(|c| c.contains(&l)) {
            out.labels.push(l);
            out.images.extend(images.data[i * p..(i + 1) * p].iter().map(|&b| b as f32 / 127.5 - 1.0));
        }
    }
    Ok(out)
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Read {
        path: dir.join(format!("{stem}.gz")),
        cause: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "Fashion-MNIST is not installed there; on Debian: apt-get install dataset-fashion-mnist (files go to /usr/share/datasets/fashion-mnist)",
        ),
    })
}

/// An IDX array of unsigned bytes.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

/// Largest IDX data after decompression (Fashion-MNIST's training images are 47 MB).
const MAX_IDX_BYTES: u64 = 1 << 30;

fn read_idx(path: &Path) -> Result<Idx> {
    read_idx_limited(path, MAX_IDX_BYTES)
}

fn read_idx_limited(path: &Path, limit: u64) -> Result<Idx> {
    let rerr = |cause| Error::Read { path: path.to_path_buf(), cause };
    let raw = super::read_limited(path)?;
    let bad = |reason: String| Error::param(format!("IDX file {}", path.display()), "header", reason);
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        // A gzip stream is read to at most the limit: a small file that inflates without end is an error.
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).take(limit + 1).read_to_end(&mut v).map_err(rerr)?;
        if v.len() as u64 > limit {
            return Err(bad(format!("the gzip stream inflates to more than {} bytes", limit)));
        }
        v
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("element type 0x{:02x}; only unsigned bytes (0x08) are supported", bytes[2])));
    }
    let nd = bytes[3] as usize;
    if bytes.len() < 4 + 4 * nd {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let n = crate::limits::product("IDX dimensions", &dims, limit as usize).map_err(|e| bad(e.to_string()))?;
    let data = &bytes[4 + 4 * nd..];
    if data.len() != n {
        return Err(bad(format!("dimensions {dims:?} need {n} bytes, the file holds {} (truncated?)", data.len())));
    }
    Ok(Idx { dims, data: data.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_gzipped_and_plain_idx_with_a_class_subset() {
        let dir = tempfile::tempdir().unwrap();
        let images: Vec<u8> = (0..3 * 2 * 2).map(|i| (i * 20) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&idx(&[3, 2, 2], &images)).unwrap();
        std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx(&[3], &[7, 1, 7])).unwrap();
        let s = load_fashion_mnist(dir.path(), Split::Train, Some(&[7])).unwrap();
        assert_eq!((s.len(), s.rows, s.cols), (2, 2, 2));
        assert_eq!(s.labels, vec![7, 7]);
        // Image 2 holds bytes 160..=220 → (b / 127.5 − 1).
        assert!((s.image(1)[0] - (160.0 / 127.5 - 1.0)).abs() < 1e-6);
        // Missing test split: the error says which package provides the data.
        let e = load_fashion_mnist(dir.path(), Split::Test, None).unwrap_err().to_string();
        assert!(e.contains("t10k-images") && e.contains("apt-get install dataset-fashion-mnist"), "{e}");
        // Truncated data.
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx(&[4], &[7, 1, 7])).unwrap();
        let e = load_fashion_mnist(dir.path(), Split::Train, None).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn absurd_dimensions_and_gzip_bombs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-idx3-ubyte");
        std::fs::write(&p, idx(&[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3])).unwrap();
        let e = read_idx(&p).err().unwrap().to_string();
        assert!(e.contains("IDX dimensions"), "{e}");
        // 64 MiB of zeros compress to 64 KB; with a 16 MiB limit reading stops there (the real limit,
        // 1 GiB, works the same way).
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx(&[1 << 26, 1, 1], &[])).unwrap();
        gz.write_all(&vec![0u8; 1 << 26]).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let e = read_idx_limited(&p, 1 << 24).err().unwrap().to_string();
        assert!(e.contains("inflates to more than"), "{e}");
    }

    #[test]
    fn reads_the_debian_package_when_installed() {
        let dir = Path::new(FASHION_MNIST_DIR);
        if !dir.exists() {
            // Under CI (the test runner's environment, not the library's) a missing package fails the test.
            assert!(std::env::var_os("CI").is_none(), "{FASHION_MNIST_DIR} absent under CI: install dataset-fashion-mnist");
            eprintln!("{FASHION_MNIST_DIR} absent: install dataset-fashion-mnist to run this check");
            return;
        }
        let s = load_fashion_mnist(dir, Split::Test, Some(&[0, 9])).unwrap();
        // The test split has 1000 images per class.
        assert_eq!((s.len(), s.rows, s.cols), (2000, 28, 28));
        assert!(s.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
