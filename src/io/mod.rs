//! Files in and out: output that never leaves a half-written file (everything is written to an exclusive
//! temporary file beside the target, synced, and renamed into place), the safetensors and JSON writers, and the readers in
//! the rooms below: [`tensors`] (safetensors with errors that name the tensor), [`hub`] (the local Hugging
//! Face cache) and [`idx`] (Fashion-MNIST's IDX files).

pub mod hub;
pub mod idx;
pub mod tensors;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};

/// A new temporary file beside `path`, created exclusively (`create_new`: never an existing file, never
/// through a symlink planted at the name) under an unpredictable name (a random 64-bit suffix from the
/// standard library's randomly keyed hasher), retried on the rare collision.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::hash::{BuildHasher, Hasher};
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut last = None;
    for _ in 0..16 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", h.finish()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// Make a rename in `path`'s directory durable (fsync of the directory; a no-op where directories
/// cannot be opened).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(_) => Ok(()),
    }
}

/// Write `bytes` to `path` atomically: a temporary file beside it (created exclusively under a random
/// name), written and synced, renamed into place, and the directory synced. On failure nothing is left at `path` (a file already
/// there stays as it was) and the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let werr = |source| Error::Write { path: path.to_path_buf(), cause: source };
    if path.as_os_str().is_empty() {
        return Err(werr(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty path")));
    }
    let (tmp, mut f) = create_temp(path).map_err(werr)?;
    let res = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

/// Write a directory of files atomically: a temporary directory beside `dir` (under a random name)
/// receives every file, written and synced; it then takes `dir`'s place (an existing `dir` is moved
/// aside first and removed after), so `dir` is never half-written: it holds the old files or all the
/// new ones. On failure the temporary directory is removed and an existing `dir` is left as it was.
pub fn write_dir_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let werr = |source| Error::Write { path: dir.to_path_buf(), cause: source };
    // A free name beside `dir`: reserve it as a file, then replace the file by a directory.
    let (tmp, f) = create_temp(dir).map_err(werr)?;
    drop(f);
    let res = (|| {
        std::fs::remove_file(&tmp)?;
        std::fs::create_dir(&tmp)?;
        for (name, bytes) in files {
            let mut f = std::fs::File::create(tmp.join(name))?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        if dir.exists() {
            let (old, f) = create_temp(dir)?;
            drop(f);
            std::fs::remove_file(&old)?;
            std::fs::rename(dir, &old)?;
            if let Err(e) = std::fs::rename(&tmp, dir) {
                let _ = std::fs::rename(&old, dir);
                return Err(e);
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, dir)?;
        }
        sync_dir(dir)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

/// Check that `path` can be created (its directory exists and is writable) before a long run starts,
/// so a bad `--out` fails in a second rather than after the sampling.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Write { path: path.to_path_buf(), cause: std::io::Error::other("is a directory; give a file name") });
    }
    match create_temp(path) {
        Ok((tmp, _)) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        }
        Err(source) => Err(Error::Write { path: path.to_path_buf(), cause: source }),
    }
}

/// What an output file holds; an existing file is replaced only by an output of its own kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A PNG picture.
    Picture,
    /// A safetensors file with a `samples` tensor.
    Samples,
    /// A JSON report (an object).
    Report,
    /// A network or checkpoint: a safetensors file with a `kind` in its metadata.
    Network,
    /// Anything (the user said so, e.g. `mix-train --force`).
    Any,
}

impl OutputKind {
    fn name(self) -> &'static str {
        match self {
            OutputKind::Picture => "a PNG picture",
            OutputKind::Samples => "a samples file (safetensors with `samples`)",
            OutputKind::Report => "a JSON report",
            OutputKind::Network => "a network file (safetensors with a `kind`)",
            OutputKind::Any => "a file",
        }
    }

    /// Whether the existing file at `path` is of this kind (an empty file counts as any kind: nothing is
    /// lost by replacing it).
    fn holds(self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else { return true };
        if meta.len() == 0 {
            return true;
        }
        match self {
            OutputKind::Picture => {
                let mut sig = [0u8; 8];
                std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut sig)).is_ok() && sig == *b"\x89PNG\r\n\x1a\n"
            }
            // A report is read whole to parse it (ours are far below 256 MiB; a larger file is not ours).
            OutputKind::Report => {
                meta.len() <= 1 << 28
                    && std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).is_some_and(|v| v.is_object())
            }
            // Safetensors files: only their header is read.
            OutputKind::Samples => tensors::TensorFile::peek_header(path).is_some_and(|(names, _)| names.iter().any(|n| n == "samples")),
            OutputKind::Network => tensors::TensorFile::peek_header(path).is_some_and(|(_, meta)| meta.contains_key("kind")),
            OutputKind::Any => true,
        }
    }
}

/// Check a run's outputs before it starts: every given `(flag, path, kind)` of `outputs` must name a file
/// (after resolving links) that is none of `inputs` and no other output, so a run can never overwrite the
/// model it reads or write two outputs to one file; a file already there must be of the output's kind
/// (a picture replaces a picture, never a user's document); and each must be writable
/// ([`check_writable`]), so a bad path fails in a second rather than after the work. `None` outputs are
/// not asked for.
pub fn check_outputs(inputs: &[&Path], outputs: &[(&str, Option<&Path>, OutputKind)]) -> Result<()> {
    let given: Vec<(&str, &Path)> = outputs.iter().filter_map(|&(f, p, _)| p.map(|p| (f, p))).collect();
    if let Some((flag, _)) = given.iter().find(|(_, p)| p.as_os_str().is_empty()) {
        return Err(Error::param(*flag, "\"\"", "an empty path; give a file name"));
    }
    check_distinct(inputs, &given)?;
    for &(flag, path, kind) in outputs {
        let Some(path) = path else { continue };
        if path.is_file() && !kind.holds(path) {
            return Err(Error::param(
                flag,
                path.display(),
                format!("the file exists and is not {}; it is not replaced: remove it or choose another path", kind.name()),
            ));
        }
    }
    given.iter().try_for_each(|(_, p)| check_writable(p))
}

fn check_distinct(inputs: &[&Path], outputs: &[(&str, &Path)]) -> Result<()> {
    // A file that does not exist yet cannot be an input; its parent's canonical form names it.
    let resolve = |p: &Path| -> PathBuf {
        std::fs::canonicalize(p).unwrap_or_else(|_| match (p.parent(), p.file_name()) {
            (Some(dir), Some(name)) => {
                let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
                std::fs::canonicalize(dir).map(|d| d.join(name)).unwrap_or_else(|_| p.to_path_buf())
            }
            _ => p.to_path_buf(),
        })
    };
    let ins: Vec<PathBuf> = inputs.iter().map(|p| resolve(p)).collect();
    let mut seen: Vec<(&str, PathBuf)> = Vec::new();
    for (flag, out) in outputs {
        let r = resolve(out);
        if let Some(i) = ins.iter().position(|p| *p == r) {
            return Err(Error::param(
                *flag,
                out.display(),
                format!("is the input {} (after resolving links); write the output to another file", inputs[i].display()),
            ));
        }
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == r) {
            return Err(Error::param(*flag, out.display(), format!("is also the {other} output; give each output its own file")));
        }
        seen.push((flag, r));
    }
    Ok(())
}

/// The bytes of `path`, read whole, refusing files over [`crate::limits::MAX_FILE_BYTES`] before
/// reading them.
pub fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let rerr = |cause| Error::Read { path: path.to_path_buf(), cause };
    let len = std::fs::metadata(path).map_err(rerr)?.len();
    if len > crate::limits::MAX_FILE_BYTES {
        return Err(rerr(std::io::Error::other(format!("{} bytes is more than the limit of {}", len, crate::limits::MAX_FILE_BYTES))));
    }
    std::fs::read(path).map_err(rerr)
}

/// One F32 tensor to write: name, shape, row-major data.
pub struct F32Tensor<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: &'a [f32],
}

/// An error unless every value of `tensors` is finite: a network or checkpoint with a NaN or an infinity
/// is never written to `path` (the file there, if any, stays as it was).
pub fn check_finite_tensors(path: &Path, tensors: &[F32Tensor<'_>]) -> Result<()> {
    for t in tensors {
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::BadValue {
                path: path.to_path_buf(),
                tensor: t.name.to_string(),
                index: i,
                value: t.data[i] as f64,
                reason: "not written: a network must be finite (the file already there, if any, is kept)".into(),
            });
        }
    }
    Ok(())
}

/// Write F32 tensors (and string metadata) as a safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[F32Tensor<'_>], metadata: &HashMap<String, String>) -> Result<()> {
    write_atomic(path, &safetensors_bytes(path, tensors, metadata)?)
}

/// The bytes [`write_safetensors`] writes (`path` names the file in errors).
pub fn safetensors_bytes(path: &Path, tensors: &[F32Tensor<'_>], metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
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
    Ok(sorted_header(out))
}

/// The same safetensors bytes with the JSON header's keys in sorted order. `safetensors::serialize`
/// writes the metadata in `HashMap` order, which changes from run to run; sorting makes the file a
/// function of its content, so the same recipe and seed give the same bytes. (serde_json's map is
/// ordered by key; the header is re-padded with spaces to a multiple of 8 bytes, as the format asks.)
fn sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length prefix")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors wrote valid JSON");
    let mut h = serde_json::to_vec(&header).expect("a serde_json::Value always serialises");
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + h.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Write a JSON value, pretty-printed, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).expect("a serde_json::Value always serialises");
    s.push('\n');
    write_atomic(path, s.as_bytes())
}
