//! One loader for every model reference: a self-describing `.safetensors` file (its header's `kind` names
//! the loader: exact expert or network), a diffusers checkpoint directory (`UNet2DModel`), or
//! `hf:ORG/NAME/FILE[@REVISION]` / `hf:ORG/NAME[@REVISION]` resolved from the local Hugging Face cache
//! (never the network). It sits above [`crate::model`] and [`crate::nets`], so that neither
//! names the other.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::hub::resolve_model_ref;
use crate::model::{GaussianMixture, ScoreModel};

/// Resolves model references and opens them. [`Loader::default`] resolves plain paths only; give it the
/// hub cache directory ([`crate::io::hub::cache_dir`]) for `hf:` references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loader {
    hf_cache: Option<PathBuf>,
    /// None, one label for every model, or one per model of [`Loader::load_all`].
    class_labels: Vec<u32>,
    device: Placement,
}

/// Where a diffusers checkpoint's network runs: the CPU (the f32 CPU kernels, the default) or CUDA GPU
/// `n` through candle (a build with the `cuda` feature). Every other model runs on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device n.
    Cuda(usize),
}

impl std::str::FromStr for Placement {
    type Err = Error;

    /// `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::param("device", s, "expected cpu, cuda or cuda:N");
        match s {
            "cpu" => Ok(Placement::Cpu),
            "cuda" => Ok(Placement::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Placement::Cuda).ok_or_else(bad),
        }
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Cpu => write!(f, "cpu"),
            Placement::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Loader {
    /// A loader that also resolves `hf:` references in the hub cache at `dir`.
    pub fn hf_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hf_cache = Some(dir.into());
        self
    }

    /// A loader that gives class-conditional checkpoints the class `label` (required for them, refused
    /// for any other model).
    pub fn class_label(mut self, label: Option<u32>) -> Self {
        self.class_labels = label.into_iter().collect();
        self
    }

    /// A loader that gives class-conditional checkpoints these class labels: none, one for every model,
    /// or one per model of [`Self::load_all`] in order (so one conditional checkpoint can be composed
    /// with itself, class against class).
    pub fn class_labels(mut self, labels: Vec<u32>) -> Self {
        self.class_labels = labels;
        self
    }

    /// A loader that places diffusers checkpoints on `device`.
    pub fn device(mut self, device: Placement) -> Self {
        self.device = device;
        self
    }

    /// Open the model `reference` points to: a file path, or an `hf:` reference (with the loader's one
    /// class label, if it has one).
    pub fn load(&self, reference: impl AsRef<Path>) -> Result<Box<dyn ScoreModel>> {
        match self.class_labels[..] {
            [] => self.load_labelled(reference.as_ref(), None),
            [l] => self.load_labelled(reference.as_ref(), Some(l)),
            _ => Err(Error::param("class labels", format!("{:?}", self.class_labels), "several labels are for load_all, one per model")),
        }
    }

    fn load_labelled(&self, path: &Path, class_label: Option<u32>) -> Result<Box<dyn ScoreModel>> {
        let path = match path.to_str() {
            Some(s) => resolve_model_ref(s, self.hf_cache.as_deref())?,
            None => path.to_path_buf(),
        };
        if path.is_dir() {
            return open_dir(&path, class_label, self.device);
        }
        if let Some(l) = class_label {
            return Err(Error::param("class label", l, format!("{} is not a class-conditional checkpoint", path.display())));
        }
        load_file(&path)
    }

    /// Open every reference, in order; with one class label per reference, each gets its own.
    pub fn load_all<P: AsRef<Path>>(&self, references: impl IntoIterator<Item = P>) -> Result<Vec<Box<dyn ScoreModel>>> {
        let refs: Vec<P> = references.into_iter().collect();
        if self.class_labels.len() > 1 {
            if self.class_labels.len() != refs.len() {
                return Err(Error::param("class labels", format!("{:?}", self.class_labels), format!("give one label for every model or one per model ({} models)", refs.len())));
            }
            return refs.iter().zip(&self.class_labels).map(|(r, &l)| self.load_labelled(r.as_ref(), Some(l))).collect();
        }
        refs.iter().map(|r| self.load(r)).collect()
    }
}

/// Open a model file or reference with [`Loader::default`] (plain paths; `hf:` needs a [`Loader`] with a
/// cache).
pub fn load_model(reference: impl AsRef<Path>) -> Result<Box<dyn ScoreModel>> {
    Loader::default().load(reference)
}

/// Open a self-describing model file. The safetensors header metadata key `kind` says what it holds:
/// `gaussian_mixture` (an exact expert, see [`GaussianMixture`]), `score_mlp` (a neural score network,
/// see [`crate::nets::ScoreMlp`]) or `score_unet` (an image U-Net, see [`crate::nets::ScoreUnet`]).
pub fn load_file(path: &Path) -> Result<Box<dyn ScoreModel>> {
    let file = crate::io::tensors::TensorFile::open(path)?;
    match file.metadata("kind") {
        Some("gaussian_mixture") => Ok(Box::new(GaussianMixture::from_file(&file)?)),
        #[cfg(feature = "nets")]
        Some(crate::nets::mlp::KIND) => Ok(Box::new(crate::nets::ScoreMlp::from_file(&file)?)),
        #[cfg(feature = "nets")]
        Some(crate::nets::unet::KIND) => Ok(Box::new(crate::nets::ScoreUnet::from_file(&file)?)),
        #[cfg(not(feature = "nets"))]
        Some(kind @ ("score_mlp" | "score_unet")) => Err(without_nets(path, kind)),
        Some(other) => Err(Error::Metadata {
            path: path.to_path_buf(),
            key: "kind".into(),
            reason: format!("unknown model kind `{other}` (known: gaussian_mixture, score_mlp, score_unet)"),
        }),
        None => Err(Error::Metadata {
            path: path.to_path_buf(),
            key: "kind".into(),
            reason: "missing from the safetensors header metadata; a model file must say what it holds, e.g. \"kind\": \"gaussian_mixture\"".into(),
        }),
    }
}


/// A diffusers checkpoint directory, on `device`.
#[cfg(feature = "nets")]
fn open_dir(path: &Path, class_label: Option<u32>, device: Placement) -> Result<Box<dyn ScoreModel>> {
    let dev = match device {
        Placement::Cpu => candle_core::Device::Cpu,
        Placement::Cuda(n) => candle_core::Device::new_cuda(n).map_err(|e| Error::Unsupported {
            model: path.display().to_string(),
            what: format!("device {device}"),
            hint: if cfg!(feature = "cuda") {
                format!("CUDA failed: {}", e.to_string().lines().next().unwrap_or_default())
            } else {
                "this build has no CUDA support: rebuild with `--features cuda` (needs the CUDA toolkit), or use --device cpu".into()
            },
        })?,
    };
    Ok(Box::new(crate::nets::diffusers::DiffusersModel::open_on(path, class_label, &dev)?))
}

#[cfg(not(feature = "nets"))]
fn open_dir(path: &Path, _: Option<u32>, _: Placement) -> Result<Box<dyn ScoreModel>> {
    Err(without_nets(path, "diffusers checkpoint"))
}

/// The error for a network model in a build without the `nets` feature.
#[cfg(not(feature = "nets"))]
fn without_nets(path: &Path, kind: &str) -> Error {
    Error::Unsupported {
        model: path.display().to_string(),
        what: format!("a loader for `{kind}` in this build"),
        hint: "wfrmix was built without its `nets` feature (neural networks); rebuild with default features".into(),
    }
}
