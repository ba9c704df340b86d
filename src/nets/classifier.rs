//! A small Fashion-MNIST classifier (file kind `fmnist_classifier`) used to judge generated images:
//! optional 3×3 convolution stages (each: convolution, SiLU, 2×2 max-pool) on the 1×28×28 image (pixels
//! in [−1, 1]), then an MLP with SiLU hidden layers and 10 logits, trained with cross-entropy on all ten
//! classes ([`crate::train::classifier`], run by `mix-train` for recipes of this kind). Without
//! convolution stages it is an MLP on the 784 pixels.
//!
//! File: tensors `conv.{i}.weight` `[c_i, c_{i-1}, 3, 3]` and `conv.{i}.bias` `[c_i]` per stage, then
//! `net.{i}.weight` `[out, in]`, `net.{i}.bias` `[out]`; metadata `kind`, `arch` (`{"hidden":[256,128]}`
//! or `{"conv":[32,64],"hidden":[128]}`), `data_shape` (`[1,28,28]`), `classes` (JSON list of names),
//! optional `recipe`, `test_accuracy`.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::io::idx::ImageSet;
use crate::error::{Error, Result};
use crate::nets::header::backend;
use crate::nets::ops::conv3x3_nhwc;
use crate::io::tensors::TensorFile;

/// The `kind` of classifier files.
pub const KIND: &str = "fmnist_classifier";

/// The architecture: convolution stages, then hidden layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Output channels of each 3×3 convolution stage (convolution with padding 1, SiLU, 2×2 max-pool), at
    /// most [`MAX_CONV_STAGES`]; empty (the default): an MLP on the pixels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conv: Vec<usize>,
    /// Widths of the hidden layers (SiLU); the last is the feature space of [`Classifier::features`].
    pub hidden: Vec<usize>,
}

/// At most two 2×2 pools, so that 28×28 halves exactly (to 14×14, then 7×7).
pub const MAX_CONV_STAGES: usize = 2;

impl ClassifierConfig {
    /// Check the architecture: at most [`MAX_CONV_STAGES`] stages, every width in 1..=`MAX_WIDTH`, at least
    /// one hidden layer (its activations are the judge's features).
    pub fn check(&self) -> Result<()> {
        if self.conv.len() > MAX_CONV_STAGES {
            return Err(Error::param("arch.conv", format!("{:?}", self.conv), format!("at most {MAX_CONV_STAGES} convolution stages (28×28 halves twice)")));
        }
        if self.hidden.is_empty() {
            return Err(Error::param("arch.hidden", "[]", "need at least one hidden layer (its activations are the Fréchet features)"));
        }
        for (key, v) in [("arch.conv", &self.conv), ("arch.hidden", &self.hidden)] {
            if let Some(w) = v.iter().find(|&&w| w == 0 || w > crate::limits::MAX_WIDTH) {
                return Err(Error::param(key, w, format!("every width must be in 1..={}", crate::limits::MAX_WIDTH)));
            }
        }
        Ok(())
    }

    /// Width of the MLP's input: the pixels, or the last stage's channels × its pooled side².
    fn flat_dim(&self) -> usize {
        match self.conv.last() {
            None => D_IN,
            Some(&c) => c * (SIDE >> self.conv.len()).pow(2),
        }
    }
}

pub(crate) const D_IN: usize = 784;
pub(crate) const N_CLASSES: usize = 10;
const SIDE: usize = 28;
/// Images per forward pass when judging (bounds the convolution stages' memory).
const CHUNK: usize = 512;

/// A loaded classifier.
pub struct Classifier {
    pub(crate) cfg: ClassifierConfig,
    pub(crate) params: Vec<Tensor>,
    pub(crate) device: Device,
    /// Accuracy on the Fashion-MNIST test set recorded at training time, if any.
    pub test_accuracy: Option<f64>,
}

/// Every tensor's name and shape, in file (and parameter) order.
pub(crate) fn shapes(cfg: &ClassifierConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    let mut prev = 1;
    for (i, &c) in cfg.conv.iter().enumerate() {
        v.push((format!("conv.{i}.weight"), vec![c, prev, 3, 3]));
        v.push((format!("conv.{i}.bias"), vec![c]));
        prev = c;
    }
    let mut prev = cfg.flat_dim();
    for (i, &h) in cfg.hidden.iter().chain([&N_CLASSES]).enumerate() {
        v.push((format!("net.{i}.weight"), vec![h, prev]));
        v.push((format!("net.{i}.bias"), vec![h]));
        prev = h;
    }
    v
}

/// The last hidden layer's activations for images `x` (n × 784).
fn trunk(cfg: &ClassifierConfig, params: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    let stages = cfg.conv.len();
    let mut h = x.clone();
    if stages > 0 {
        // Channels-last through the stages (one input channel: the same values as [n, 1, 28, 28]), then
        // back to channels-first to flatten in the files' order (c, y, x).
        h = h.reshape((n, SIDE, SIDE, 1))?;
        for s in 0..stages {
            h = max_pool2(&conv3x3_nhwc(&h, &params[2 * s], &params[2 * s + 1])?.silu()?)?;
        }
        h = h.permute((0, 3, 1, 2))?.contiguous()?.reshape((n, cfg.flat_dim()))?;
    }
    for l in 0..cfg.hidden.len() {
        let (w, b) = (&params[2 * (stages + l)], &params[2 * (stages + l) + 1]);
        h = h.matmul(&w.t()?)?.broadcast_add(b)?.silu()?;
    }
    Ok(h)
}

/// 2×2 max-pooling, channels-last, as maxima over reshaped axes. candle 0.11.1's own `max_pool2d` has a wrong backward
/// pass (it scales the gradient by the fraction of maxima in each window, ¼, instead of dividing by it);
/// `max` over an axis records the right one (checked by the finite-difference test).
fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    x.reshape((n, h / 2, 2, w / 2, 2, c))?.max(4)?.max(2)
}

/// The 10 logits for images `x` (n × 784).
pub(crate) fn logits(cfg: &ClassifierConfig, params: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    head(params, &trunk(cfg, params, x)?)
}

/// The output layer (the last two tensors) on the last hidden activations `h`.
fn head(params: &[Tensor], h: &Tensor) -> candle_core::Result<Tensor> {
    let k = params.len();
    h.matmul(&params[k - 2].t()?)?.broadcast_add(&params[k - 1])
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
        cfg.check().map_err(|e| merr("arch", format!("`{arch}`: {e}")))?;
        let device = Device::Cpu;
        let mut params = Vec::new();
        for (name, want) in shapes(&cfg) {
            let (s, v) = f.tensor_f64(&name)?;
            if s != want {
                return Err(Error::TensorShape { path: path.into(), tensor: name, found: s, expected: format!("{want:?} from arch = {arch}") });
            }
            let v: Vec<f32> = v.iter().map(|&a| a as f32).collect();
            params.push(Tensor::from_vec(v, want, &device).map_err(backend("loading the classifier"))?);
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
        let mut out = Vec::new();
        self.each_chunk(x, "classifying images", |h| {
            out.extend(head(&self.params, &h)?.argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|a| a as u8));
            Ok(())
        })?;
        Ok(out)
    }

    /// The last hidden layer's activations (after SiLU) for images (n × 784 values in [−1, 1]): n ×
    /// `hidden.last()` values, the feature space of [`crate::report::classes::frechet_to_real`].
    pub fn features(&self, x: &[f64]) -> Result<Vec<f64>> {
        if x.is_empty() {
            return Err(Error::param("images", 0, "need at least one image"));
        }
        let mut out = Vec::new();
        self.each_chunk(x, "computing classifier features", |h| {
            out.extend(h.flatten_all()?.to_vec1::<f32>()?.into_iter().map(|v| v as f64));
            Ok(())
        })?;
        Ok(out)
    }

    /// Run the trunk on chunks of at most [`CHUNK`] images, in order, handing each chunk's last hidden
    /// activations to `f`.
    fn each_chunk(&self, x: &[f64], what: &'static str, mut f: impl FnMut(Tensor) -> candle_core::Result<()>) -> Result<()> {
        if !x.len().is_multiple_of(D_IN) {
            return Err(Error::param("images", x.len(), "expected n × 784 pixel values (1×28×28 images)"));
        }
        (|| -> candle_core::Result<()> {
            for c in x.chunks(CHUNK * D_IN) {
                let xt = Tensor::from_vec(c.iter().map(|&a| a as f32).collect::<Vec<f32>>(), (c.len() / D_IN, D_IN), &self.device)?;
                f(trunk(&self.cfg, &self.params, &xt)?)?;
            }
            Ok(())
        })()
        .map_err(backend(what))
    }

    /// Width of [`Self::features`].
    pub fn feature_dim(&self) -> usize {
        self.cfg.hidden.last().copied().expect("checked: at least one hidden layer")
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
