//! Reading safetensors files with errors that name the file, the tensor and what is wrong with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// A safetensors file held in memory, header already validated.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Read and validate `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_bytes(path, super::read_limited(path)?)
    }

    /// Validate bytes that came from `path` (used in messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let not = |reason: String| Error::NotSafetensors { path: path.to_path_buf(), reason };
        // deserialize checks the header and that every tensor's byte range lies inside the file.
        SafeTensors::deserialize(&bytes).map_err(|e| not(format!("{e} (truncated, corrupted or not a safetensors file)")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| not(e.to_string()))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(TensorFile { path: path.to_path_buf(), bytes, metadata })
    }

    /// Only the header of the safetensors file at `path` (8-byte length and JSON, at most 100 MB as the
    /// format allows), without reading its tensors: the tensor names and the metadata. None when the
    /// file is not a safetensors file. For telling what an existing file is before replacing it.
    pub fn peek_header(path: &Path) -> Option<(Vec<String>, HashMap<String, String>)> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).ok()?;
        let n = u64::from_le_bytes(len);
        if n > 100_000_000 {
            return None;
        }
        let mut h = vec![0u8; n as usize];
        f.read_exact(&mut h).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&h).ok()?;
        let obj = v.as_object()?;
        let names = obj.keys().filter(|k| *k != "__metadata__").cloned().collect();
        let meta = obj
            .get("__metadata__")
            .and_then(|m| m.as_object())
            .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
            .unwrap_or_default();
        Some((names, meta))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A header metadata value.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// All header metadata.
    pub fn all_metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// A metadata value parsed as f64, or `default` when absent.
    pub fn metadata_f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.metadata(key) {
            None => Ok(default),
            Some(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| Error::Metadata {
                path: self.path.clone(),
                key: key.into(),
                reason: format!("`{s}` is not a finite number"),
            }),
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in from_bytes")
    }

    /// Names of the tensors in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.st().names().into_iter().map(String::from).collect();
        v.sort();
        v
    }

    /// A tensor converted to f64 (F32, F64, F16 and BF16 are accepted), with its shape. Every value
    /// must be finite.
    pub fn tensor_f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let st = self.st();
        let view = st.tensor(name).map_err(|_| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.into(),
            present: self.names().join(", "),
        })?;
        let data = view.data();
        let vals: Vec<f64> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect(),
            Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64).collect(),
            other => {
                return Err(Error::TensorDtype {
                    path: self.path.clone(),
                    tensor: name.into(),
                    found: format!("{other:?}"),
                    expected: "F32 or F64".into(),
                })
            }
        };
        if let Some((i, &v)) = vals.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::BadValue {
                path: self.path.clone(),
                tensor: name.into(),
                index: i,
                value: v,
                reason: "parameters must be finite".into(),
            });
        }
        Ok((view.shape().to_vec(), vals))
    }

    /// [`Self::tensor_f64`] with a shape check: `expected` entries of `None` match any size.
    pub fn tensor_shaped(&self, name: &str, expected: &[Option<usize>]) -> Result<(Vec<usize>, Vec<f64>)> {
        let (shape, vals) = self.tensor_f64(name)?;
        let ok = shape.len() == expected.len() && shape.iter().zip(expected).all(|(s, e)| e.is_none_or(|e| e == *s));
        if !ok {
            let want: Vec<String> = expected.iter().map(|e| e.map_or("_".to_string(), |v| v.to_string())).collect();
            return Err(Error::TensorShape {
                path: self.path.clone(),
                tensor: name.into(),
                found: shape,
                expected: format!("[{}]", want.join(", ")),
            });
        }
        Ok((shape, vals))
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        31 => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}
