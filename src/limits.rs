//! Stated limits on every size that comes from a file or a flag, and the checked arithmetic that applies
//! them: a hostile header or flag gets an error that names it and the limit, never an overflow, a
//! division by zero or an allocation that aborts the process. Memory is estimated before it is allocated
//! ([`memory`]): a run that would not fit says how much it needs and what to lower.

use crate::error::{Error, Result};

/// Largest number of scalars in one data item (a 4096 × 4096 × 4 image).
pub const MAX_ITEM_VALUES: usize = 1 << 26;
/// Largest number of axes of a data item.
pub const MAX_RANK: usize = 8;
/// Largest number of particles of one run (memory decides long before this).
pub const MAX_PARTICLES: usize = 1 << 32;
/// Largest number of steps of one run.
pub const MAX_STEPS: usize = 1 << 24;
/// Largest number of sinusoidal time frequencies of a network, and their largest value.
pub const MAX_TIME_FREQS: usize = 4096;
/// Largest time frequency ω of a network's time embedding.
pub const MAX_FREQ: f64 = 1e6;
/// Largest hidden width or channel count of a network layer.
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest number of layers (MLP) or resolution levels (U-Net) of a network.
pub const MAX_LAYERS: usize = 64;
/// Largest number of images in a picture grid.
pub const MAX_GRID_IMAGES: usize = 4096;
/// Largest picture, in pixels (≈ 0.8 GB of RGB).
pub const MAX_PICTURE_PIXELS: u64 = 1 << 28;
/// Largest file read whole (model files, IDX data after decompression): 8 GiB.
pub const MAX_FILE_BYTES: u64 = 1 << 33;
/// Memory any one run may plan for, whatever the machine (1 TiB); binaries pass the machine's own
/// available memory as a lower limit.
pub const MAX_RUN_BYTES: u64 = 1 << 40;

/// The product of `dims` (`what` names them for the error), checked against overflow and `limit`.
pub fn product(what: &str, dims: &[usize], limit: usize) -> Result<usize> {
    let mut p: usize = 1;
    for &d in dims {
        p = p.checked_mul(d).filter(|&p| p <= limit).ok_or_else(|| {
            Error::param(what, format!("{dims:?}"), format!("more than {limit} values in all; use a smaller shape"))
        })?;
    }
    Ok(p)
}

/// A data item's shape: 1 to [`MAX_RANK`] axes, none of them 0, at most [`MAX_ITEM_VALUES`] values; its
/// number of values.
pub fn data_shape(what: &str, shape: &[usize]) -> Result<usize> {
    if shape.is_empty() || shape.len() > MAX_RANK || shape.contains(&0) {
        return Err(Error::param(what, format!("{shape:?}"), format!("a data shape needs 1 to {MAX_RANK} axes, none of them 0")));
    }
    product(what, shape, MAX_ITEM_VALUES)
}

/// `value` (flag or key `what`) is at most `limit`.
pub fn at_most(what: &str, value: usize, limit: usize) -> Result<usize> {
    if value > limit {
        return Err(Error::param(what, value, format!("the limit is {limit}")));
    }
    Ok(value)
}

/// Bytes of `buffers` f64 buffers of `rows × cols` scalars each (None on overflow).
pub fn f64_bytes(rows: usize, cols: usize, buffers: usize) -> Option<u64> {
    (rows as u64).checked_mul(cols as u64)?.checked_mul(buffers as u64)?.checked_mul(8)
}

/// Check a memory estimate `bytes` (None: it overflowed) of a run whose `what` is `value` against
/// `limit` bytes; the error says how much is needed, how much there is, and `lower` (what to reduce).
pub fn memory(what: &str, value: impl std::fmt::Display, bytes: Option<u64>, limit: u64, lower: &str) -> Result<u64> {
    let limit = limit.min(MAX_RUN_BYTES);
    match bytes {
        Some(b) if b <= limit => Ok(b),
        b => Err(Error::param(
            what,
            value,
            format!("the run needs {} of memory, more than the {} available; lower {lower}", b.map_or("more than 2^64 bytes".into(), gib), gib(limit)),
        )),
    }
}

/// Bytes as GiB, for messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_that_overflow_or_exceed_the_limit_are_errors() {
        assert_eq!(product("s", &[1, 28, 28], MAX_ITEM_VALUES).unwrap(), 784);
        assert!(product("s", &[1, 1 << 32, 1 << 32], MAX_ITEM_VALUES).is_err());
        assert!(data_shape("s", &[1, 65536, 65536]).is_err());
        assert!(data_shape("s", &[]).is_err());
        assert!(data_shape("s", &[3, 0]).is_err());
        assert!(memory("run", 1, f64_bytes(usize::MAX, 2, 3), u64::MAX, "--particles").is_err());
        assert_eq!(memory("run", 1, f64_bytes(10, 2, 3), 1 << 20, "--particles").unwrap(), 480);
    }
}
