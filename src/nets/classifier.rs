//! A small Fashion-MNIST classifier (file kind `fmnist_classifier`) used to judge generated images:
//! an MLP on the 784 pixels (in [−1, 1]) with SiLU hidden layers and 10 logits, trained with
//! cross-entropy on all ten classes ([`crate::train::classifier`], run by `mix-train` for recipes of this
//! kind).
//!
//! File: tensors `net.{i}.weight` `[out, in]`, `net.{i}.bias` `[out]`; metadata `kind`, `arch`
//! (`{"hidden":[256,128]}`), `data_shape` (`[1,28,28]`), `classes` (JSON list of names), optional
//! `recipe`, `test_accuracy`.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::io::idx::ImageSet;
use crate::error::{Error, Result};
use crate::nets::header::backend;
use crate::io::tensors::TensorFile;

/// The `kind` of classifier files.
pub const KIND: &str = "fmnist_classifier";

/// Hidden-layer widths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub hidden: Vec<usize>,
}

pub(crate) const D_IN: usize = 784;
pub(crate) const N_CLASSES: usize = 10;

/// A loaded classifier.
pub struct Classifier {
    pub(crate) cfg: ClassifierConfig,
    pub(crate) params: Vec<Tensor>,
    pub(crate) device: Device,
    /// Accuracy on the Fashion-MNIST test set recorded at training time, if any.
    pub test_accuracy: Option<f64>,
}

pub(crate) fn shapes(cfg: &ClassifierConfig) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut prev = D_IN;
    for &h in &cfg.hidden {
        v.push((h, prev));
        prev = h;
    }
    v.push((N_CLASSES, prev));
    v
}

pub(crate) fn logits(params: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let layers = params.len() / 2;
    let mut h = x.clone();
    for l in 0..layers {
        h = h.matmul(&params[2 * l].t()?)?.broadcast_add(&params[2 * l + 1])?;
        if l + 1 < layers {
            h = h.silu()?;
        }
    }
    Ok(h)
}

impl Classifier {
    /// Open a classifier file.
    pub fn load(path: &Path) -> Result<Self> {
        let f = TensorFile::open(path)?;
        let merr = |key: &str, reason: String| Error::Metadata { path: path.into(), key: key.into(), reason };
        match f.metadata("kind") {
            Some(KIND) => {}
            other => return Err(merr("kind", format!("expected \"{KIND}\", found {other:?}"))),
        }
        let arch = f.metadata("arch").ok_or_else(|| merr("arch", "missing (e.g. {\"hidden\":[256,128]})".into()))?;
        let cfg: ClassifierConfig = serde_json::from_str(arch).map_err(|e| merr("arch", format!("`{arch}`: {e}")))?;
        let device = Device::Cpu;
        let mut params = Vec::new();
        for (i, (o, inp)) in shapes(&cfg).into_iter().enumerate() {
            for (name, want) in [(format!("net.{i}.weight"), vec![o, inp]), (format!("net.{i}.bias"), vec![o])] {
                let (s, v) = f.tensor_f64(&name)?;
                if s != want {
                    return Err(Error::TensorShape { path: path.into(), tensor: name, found: s, expected: format!("{want:?} from arch = {arch}") });
                }
                let v: Vec<f32> = v.iter().map(|&a| a as f32).collect();
                params.push(Tensor::from_vec(v, want, &device).map_err(backend("loading the classifier"))?);
            }
        }
        let test_accuracy = f.metadata("test_accuracy").and_then(|s| s.parse().ok());
        Ok(Classifier { cfg, params, device, test_accuracy })
    }

    /// The architecture.
    pub fn config(&self) -> &ClassifierConfig {
        &self.cfg
    }

    /// Predicted labels for images (n × 784 values in [−1, 1]).
    pub fn predict(&self, x: &[f64]) -> Result<Vec<u8>> {
        if x.len() % D_IN != 0 {
            return Err(Error::param("images", x.len(), "expected n × 784 pixel values (1×28×28 images)"));
        }
        let n = x.len() / D_IN;
        if n == 0 {
            return Ok(vec![]);
        }
        (|| -> candle_core::Result<Vec<u8>> {
            let xt = Tensor::from_vec(x.iter().map(|&a| a as f32).collect::<Vec<f32>>(), (n, D_IN), &self.device)?;
            let am = logits(&self.params, &xt)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
            Ok(am.into_iter().map(|a| a as u8).collect())
        })()
        .map_err(backend("classifying images"))
    }

    /// The last hidden layer's activations (after SiLU) for images (n × 784 values in [−1, 1]): n ×
    /// `hidden.last()` values, the feature space of [`crate::report::classes::frechet_to_real`].
    pub fn features(&self, x: &[f64]) -> Result<Vec<f64>> {
        if x.len() % D_IN != 0 {
            return Err(Error::param("images", x.len(), "expected n × 784 pixel values (1×28×28 images)"));
        }
        let n = x.len() / D_IN;
        if n == 0 || self.params.len() < 4 {
            return Err(Error::param("images", n, "need at least one image and a classifier with a hidden layer"));
        }
        (|| -> candle_core::Result<Vec<f64>> {
            let mut h = Tensor::from_vec(x.iter().map(|&a| a as f32).collect::<Vec<f32>>(), (n, D_IN), &self.device)?;
            let hidden = self.params.len() / 2 - 1;
            for l in 0..hidden {
                h = h.matmul(&self.params[2 * l].t()?)?.broadcast_add(&self.params[2 * l + 1])?.silu()?;
            }
            Ok(h.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as f64).collect())
        })()
        .map_err(backend("computing classifier features"))
    }

    /// Width of [`Self::features`].
    pub fn feature_dim(&self) -> usize {
        self.cfg.hidden.last().copied().unwrap_or(D_IN)
    }

    /// Fraction of correctly classified images of a labelled set.
    pub fn accuracy(&self, set: &ImageSet) -> Result<f64> {
        let x: Vec<f64> = set.images.iter().map(|&p| p as f64).collect();
        let pred = self.predict(&x)?;
        Ok(pred.iter().zip(&set.labels).filter(|(a, b)| a == b).count() as f64 / set.len().max(1) as f64)
    }
}

/// Fraction of each class (by the classifier's label) among samples with normalised weights `w`
/// (`None`: equal weights). Returns 10 fractions summing to 1.
pub fn class_fractions(labels: &[u8], w: Option<&[f64]>) -> Vec<f64> {
    let mut f = vec![0.0; N_CLASSES];
    let mut total = 0.0;
    for (i, &l) in labels.iter().enumerate() {
        let wi = w.map_or(1.0, |w| w[i]);
        f[l as usize] += wi;
        total += wi;
    }
    f.iter_mut().for_each(|v| *v /= total.max(f64::MIN_POSITIVE));
    f
}
