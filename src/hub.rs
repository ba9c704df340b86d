//! Model references for `--models`: a file path, or `hf:ORG/NAME/PATH/IN/REPO[@REVISION]` resolved from
//! the local Hugging Face hub cache (never the network).
//!
//! The cache is `$HF_HUB_CACHE` if set, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; its layout is
//! `models--ORG--NAME/refs/REVISION` (a file holding the commit hash) and
//! `models--ORG--NAME/snapshots/COMMIT/PATH`. REVISION defaults to `main`. Populate it on a machine with
//! network access, e.g. `hf download ORG/NAME PATH` (or `huggingface-cli download ORG/NAME PATH`), and copy
//! the cache directory over.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::model::ScoreModel;

/// Prefix of Hugging Face references.
pub const HF_PREFIX: &str = "hf:";

/// The hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if std::env::var_os("HF_HOME").is_some() {
        return Cache::from_env().path().clone();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// A parsed `hf:` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfRef {
    /// `ORG/NAME`.
    pub repo: String,
    /// Path of the file inside the repository.
    pub file: String,
    /// Branch, tag or commit (default `main`).
    pub revision: String,
}

impl HfRef {
    /// Parse `hf:ORG/NAME/PATH[@REVISION]`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::param("model reference", spec, format!("{why}; expected hf:ORG/NAME/FILE[@REVISION], e.g. hf:me/mlp2d/mlp2d_up.safetensors"));
        let rest = spec.strip_prefix(HF_PREFIX).ok_or_else(|| bad("missing the `hf:` prefix"))?;
        let (body, revision) = match rest.rsplit_once('@') {
            Some((b, r)) if !r.is_empty() && !r.contains('/') => (b, r.to_string()),
            Some(_) => return Err(bad("empty or malformed @REVISION")),
            None => (rest, "main".to_string()),
        };
        let parts: Vec<&str> = body.split('/').collect();
        if parts.len() < 3 || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return Err(bad("need an organisation, a repository name and a file"));
        }
        Ok(HfRef { repo: format!("{}/{}", parts[0], parts[1]), file: parts[2..].join("/"), revision })
    }

    /// The file's path in the cache at `cache_dir`, or an error saying how to populate the cache.
    pub fn resolve_in(&self, cache_dir: &Path) -> Result<PathBuf> {
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

/// A model reference as a local path: `hf:` references are looked up in `cache_dir` (default
/// [`hf_cache_dir`]); anything else is a path, returned as is.
pub fn resolve_model_ref(spec: &str, cache_dir: Option<&Path>) -> Result<PathBuf> {
    if spec.starts_with(HF_PREFIX) {
        let r = HfRef::parse(spec)?;
        match cache_dir {
            Some(c) => r.resolve_in(c),
            None => r.resolve_in(&hf_cache_dir()),
        }
    } else {
        Ok(PathBuf::from(spec))
    }
}

/// [`crate::model::load_model`] on a resolved reference.
pub fn load_model_ref(spec: &str, cache_dir: Option<&Path>) -> Result<Box<dyn ScoreModel>> {
    crate::model::load_model(&resolve_model_ref(spec, cache_dir)?)
}
