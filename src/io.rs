//! File output that never leaves a half-written file: everything is written to a temporary file beside
//! the target and renamed into place. Also the small safetensors/JSON writers the binaries share.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Write `bytes` to `path` atomically (temporary file + rename). On failure nothing is left at `path`
/// and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let werr = |source| Error::Write { path: path.to_path_buf(), cause: source };
    if path.as_os_str().is_empty() {
        return Err(werr(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty path")));
    }
    let tmp = temp_path(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

/// Check that `path` can be created (its directory exists and is writable) before a long run starts,
/// so a bad `--out` fails in a second rather than after the sampling.
pub fn check_writable(path: &Path) -> Result<()> {
    let tmp = temp_path(path);
    match std::fs::File::create(&tmp) {
        Ok(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        Err(source) => Err(Error::Write { path: path.to_path_buf(), cause: source }),
    }
}

/// One F32 tensor to write: name, shape, row-major data.
pub struct F32Tensor<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// Write F32 tensors (and string metadata) as a safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[F32Tensor<'_>], metadata: &HashMap<String, String>) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for (t, b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), b).map_err(|e| Error::param(
            format!("tensor `{}`", t.name),
            format!("{:?}", t.shape),
            format!("shape does not match its {} values: {e}", t.data.len()),
        ))?;
        views.push((t.name.to_string(), view));
    }
    let meta = if metadata.is_empty() { None } else { Some(metadata.clone()) };
    let out = safetensors::serialize(views, meta).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        cause: std::io::Error::other(e.to_string()),
    })?;
    write_atomic(path, &out)
}

/// Write a JSON value, pretty-printed, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).expect("a serde_json::Value always serialises");
    s.push('\n');
    write_atomic(path, s.as_bytes())
}
