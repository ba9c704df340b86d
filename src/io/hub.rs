//! Model references for `--models`: a file path, or `hf:ORG/NAME/PATH/IN/REPO[@REVISION]` (a file) or
//! `hf:ORG/NAME[@REVISION]` (the whole snapshot directory, e.g. a diffusers checkpoint) resolved from the
//! local Hugging Face hub cache (never the network).
//!
//! The cache is `$HF_HUB_CACHE` if set, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; its layout is
//! `models--ORG--NAME/refs/REVISION` (a file holding the commit hash) and
//! `models--ORG--NAME/snapshots/COMMIT/PATH`. REVISION defaults to `main`. Populate it on a machine with
//! network access, e.g. `hf download ORG/NAME PATH` (or `huggingface-cli download ORG/NAME PATH`), and copy
//! the cache directory over.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// Prefix of Hugging Face references.
pub const HF_PREFIX: &str = "hf:";

/// The hub cache directory the way Hugging Face's tools choose it, from the values of the environment
/// variables `HF_HUB_CACHE`, `HF_HOME` and `HOME` (the caller reads them; this library never reads the
/// environment): `$HF_HUB_CACHE` if set and not empty, else `$HF_HOME/hub`, else
/// `$HOME/.cache/huggingface/hub`.
pub fn cache_dir(hf_hub_cache: Option<OsString>, hf_home: Option<OsString>, home: Option<OsString>) -> PathBuf {
    if let Some(p) = hf_hub_cache.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(h) = hf_home {
        return PathBuf::from(h).join("hub");
    }
    home.map(PathBuf::from).unwrap_or_default().join(".cache").join("huggingface").join("hub")
}

/// A parsed `hf:` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfRef {
    /// `ORG/NAME`.
    pub repo: String,
    /// Path of the file inside the repository (empty: the snapshot directory itself).
    pub file: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
}

impl HfRef {
    /// Parse `hf:ORG/NAME/PATH[@REVISION]` or `hf:ORG/NAME[@REVISION]`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::param("model reference", spec, format!("{why}; expected hf:ORG/NAME/FILE[@REVISION], e.g. hf:me/mlp2d/mlp2d_up.safetensors"));
        let rest = spec.strip_prefix(HF_PREFIX).ok_or_else(|| bad("missing the `hf:` prefix"))?;
        let (body, revision) = match rest.rsplit_once('@') {
            Some((b, r)) if !r.is_empty() && !r.contains('/') => (b, r.to_string()),
            Some(_) => return Err(bad("empty or malformed @REVISION")),
            None => (rest, "main".to_string()),
        };
        let parts: Vec<&str> = body.split('/').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return Err(bad("need an organisation and a repository name (and a file, or none for the whole snapshot)"));
        }
        Ok(HfRef { repo: format!("{}/{}", parts[0], parts[1]), file: parts[2..].join("/"), revision })
    }

    /// The file's path in the cache at `cache_dir`, or an error saying how to populate the cache.
    pub fn resolve_in(&self, cache_dir: &Path) -> Result<PathBuf> {
        if self.file.is_empty() {
            return self.snapshot_in(cache_dir);
        }
        let cache = Cache::new(cache_dir.to_path_buf());
        let repo = cache.repo(Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone()));
        repo.get(&self.file).ok_or_else(|| {
            Error::param(
                "model reference",
                format!("hf:{}/{}@{}", self.repo, self.file, self.revision),
                format!(
                    "not in the Hugging Face cache at {} (looked for models--{}/refs/{} and the snapshot it names); \
                     wfrmix never downloads: populate the cache with `hf download {} {} --revision {}` on a machine \
                     with network access, or set HF_HUB_CACHE / HF_HOME to a cache that holds it",
                    cache_dir.display(),
                    self.repo.replace('/', "--"),
                    self.revision,
                    self.repo,
                    self.file,
                    self.revision
                ),
            )
        })
    }
}

impl HfRef {
    /// The snapshot directory of the revision: `models--ORG--NAME/snapshots/COMMIT`, COMMIT read from
    /// `refs/REVISION` (or REVISION itself when it is a commit present in the cache).
    fn snapshot_in(&self, cache_dir: &Path) -> Result<PathBuf> {
        let repo_dir = cache_dir.join(format!("models--{}", self.repo.replace('/', "--")));
        let commit = std::fs::read_to_string(repo_dir.join("refs").join(&self.revision)).map(|c| c.trim().to_string()).unwrap_or_else(|_| self.revision.clone());
        let dir = repo_dir.join("snapshots").join(&commit);
        if !commit.is_empty() && !commit.contains('/') && dir.is_dir() {
            return Ok(dir);
        }
        Err(Error::param(
            "model reference",
            format!("hf:{}@{}", self.repo, self.revision),
            format!(
                "no snapshot in the Hugging Face cache at {} (looked for {}/refs/{} and snapshots/COMMIT); wfrmix never \
                 downloads: populate the cache with `hf download {} --revision {}` on a machine with network access",
                cache_dir.display(),
                repo_dir.display(),
                self.revision,
                self.repo,
                self.revision
            ),
        ))
    }
}

/// A model reference as a local path: `hf:` references are looked up in the hub cache `cache_dir` (an
/// error naming the reference when none is given); anything else is a path, returned as is.
pub fn resolve_model_ref(spec: &str, cache_dir: Option<&Path>) -> Result<PathBuf> {
    if spec.starts_with(HF_PREFIX) {
        let r = HfRef::parse(spec)?;
        match cache_dir {
            Some(c) => r.resolve_in(c),
            None => Err(Error::param(
                "model reference",
                spec,
                "an hf: reference needs the Hugging Face cache directory (registry::Loader::hf_cache; mix-sample takes it from HF_HUB_CACHE / HF_HOME)",
            )),
        }
    } else {
        Ok(PathBuf::from(spec))
    }
}
