//! A small Fashion-MNIST classifier (file kind `fmnist_classifier`) used to judge generated images:
//! an MLP on the 784 pixels (in [−1, 1]) with SiLU hidden layers and 10 logits, trained with
//! cross-entropy on all ten classes ([`train_classifier`], run by `mix-train` for recipes of this kind).
//!
//! File: tensors `net.{i}.weight` [out, in], `net.{i}.bias` [out]; metadata `kind`, `arch`
//! (`{"hidden":[256,128]}`), `data_shape` (`[1,28,28]`), `classes` (JSON list of names), optional
//! `recipe`, `test_accuracy`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use crate::data::{load_fashion_mnist, ImageSet, Split, FASHION_CLASSES};
use crate::error::{Error, Result};
use crate::io::{write_safetensors, F32Tensor};
use crate::nn::mlp::backend;
use crate::rng::{self, Rng};
use crate::tensors::TensorFile;

/// The `kind` of classifier files.
pub const KIND: &str = "fmnist_classifier";

/// Hidden-layer widths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub hidden: Vec<usize>,
}

/// A training recipe for the classifier (`models/fmnist_classifier.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRecipe {
    /// Must be `fmnist_classifier`.
    pub kind: String,
    pub out: PathBuf,
    pub arch: ClassifierConfig,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    /// Final learning rate of a cosine decay over all steps (default: `lr`, i.e. constant).
    #[serde(default)]
    pub lr_final: Option<f64>,
    pub weight_decay: f64,
    pub seed: u64,
}

const D_IN: usize = 784;
const N_CLASSES: usize = 10;

/// A loaded classifier.
pub struct Classifier {
    cfg: ClassifierConfig,
    params: Vec<Tensor>,
    device: Device,
    /// Accuracy on the Fashion-MNIST test set recorded at training time, if any.
    pub test_accuracy: Option<f64>,
}

fn shapes(cfg: &ClassifierConfig) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut prev = D_IN;
    for &h in &cfg.hidden {
        v.push((h, prev));
        prev = h;
    }
    v.push((N_CLASSES, prev));
    v
}

fn logits(params: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
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

    /// Weighted class fractions of a run's particles (by their final normalised weights): 10 values
    /// summing to 1.
    pub fn judge(&self, run: &crate::SampleRun) -> Result<Vec<f64>> {
        Ok(class_fractions(&self.predict(&run.samples)?, Some(&run.weights())))
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

/// Train a classifier from a recipe on the Fashion-MNIST training set in `dir` (shuffled by our seeded
/// stream; initial weights U(±1/√fan_in) from it too; candle_nn's AdamW), then measure its test
/// accuracy and write it. Returns the test accuracy.
pub fn train_classifier(recipe: &ClassifierRecipe, dir: &Path, mut progress: impl FnMut(usize, f64)) -> Result<f64> {
    if recipe.kind != KIND {
        return Err(Error::param("kind", &recipe.kind, format!("expected `{KIND}`")));
    }
    if recipe.batch == 0 || recipe.epochs == 0 || recipe.arch.hidden.contains(&0) {
        return Err(Error::param("recipe", "batch/epochs/hidden", "must be ≥ 1"));
    }
    let train = load_fashion_mnist(dir, Split::Train, None)?;
    let test = load_fashion_mnist(dir, Split::Test, None)?;
    let device = Device::Cpu;
    let mut rng: Rng = rng::seeded(recipe.seed);
    let mut vars = Vec::new();
    for (o, inp) in shapes(&recipe.arch) {
        let b = 1.0 / (inp as f64).sqrt();
        for len in [o * inp, o] {
            let v: Vec<f32> = (0..len).map(|_| ((2.0 * rng::uniform(&mut rng) - 1.0) * b) as f32).collect();
            let shape = if len == o { vec![o] } else { vec![o, inp] };
            vars.push(Var::from_tensor(&Tensor::from_vec(v, shape, &device).map_err(backend("classifier init"))?).map_err(backend("classifier init"))?);
        }
    }
    let params = candle_nn::ParamsAdamW { lr: recipe.lr, weight_decay: recipe.weight_decay, ..Default::default() };
    let mut opt = candle_nn::AdamW::new(vars.clone(), params).map_err(backend("classifier optimiser"))?;
    let n = train.len();
    let total = recipe.epochs * n.div_ceil(recipe.batch);
    let mut step = 0;
    for _ in 0..recipe.epochs {
        // Fisher–Yates shuffle from our stream.
        let mut idx: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = ((rng::uniform(&mut rng) * (i + 1) as f64) as usize).min(i);
            idx.swap(i, j);
        }
        for chunk in idx.chunks(recipe.batch) {
            let b = chunk.len();
            opt.set_learning_rate(crate::train::lr_at(step, recipe.lr, recipe.lr_final, 0, total));
            let mut x = Vec::with_capacity(b * D_IN);
            let mut onehot = vec![0f32; b * N_CLASSES];
            for (r, &i) in chunk.iter().enumerate() {
                x.extend_from_slice(train.image(i));
                onehot[r * N_CLASSES + train.labels[i] as usize] = 1.0;
            }
            let loss = (|| -> candle_core::Result<f64> {
                let xt = Tensor::from_vec(x, (b, D_IN), &device)?;
                let yt = Tensor::from_vec(onehot, (b, N_CLASSES), &device)?;
                let ps: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                let z = logits(&ps, &xt)?;
                // log-softmax from plain ops (max shift, exp, sum, log).
                let z = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?;
                let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
                let logp = z.broadcast_sub(&lse)?;
                let loss = ((logp * yt)?.sum_all()? * (-1.0 / b as f64))?;
                opt.backward_step(&loss)?;
                loss.to_dtype(DType::F64)?.to_scalar::<f64>()
            })()
            .map_err(backend("a classifier training step"))?;
            step += 1;
            progress(step, loss);
        }
    }
    let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let clf = Classifier { cfg: recipe.arch.clone(), params, device, test_accuracy: None };
    let acc = clf.accuracy(&test)?;
    let mut meta = HashMap::new();
    meta.insert("kind".to_string(), KIND.to_string());
    meta.insert("arch".to_string(), serde_json::to_string(&recipe.arch).expect("plain struct"));
    meta.insert("data_shape".to_string(), "[1,28,28]".to_string());
    meta.insert("classes".to_string(), serde_json::to_string(&FASHION_CLASSES).expect("names"));
    meta.insert("recipe".to_string(), serde_json::to_string(recipe).expect("plain struct"));
    meta.insert("test_accuracy".to_string(), format!("{acc:.4}"));
    meta.insert("trained_on".to_string(), "fashion-mnist:0,1,2,3,4,5,6,7,8,9".to_string());
    let vals: Vec<(String, Vec<usize>, Vec<f32>)> = shapes(&recipe.arch)
        .into_iter()
        .enumerate()
        .flat_map(|(i, (o, inp))| [(format!("net.{i}.weight"), vec![o, inp]), (format!("net.{i}.bias"), vec![o])])
        .zip(&clf.params)
        .map(|((n, s), t)| Ok((n, s, t.flatten_all()?.to_vec1::<f32>()?)))
        .collect::<candle_core::Result<_>>()
        .map_err(backend("reading the classifier"))?;
    let tensors: Vec<F32Tensor<'_>> = vals.iter().map(|(n, s, v)| F32Tensor { name: n, shape: s.clone(), data: v }).collect();
    write_safetensors(&recipe.out, &tensors, &meta)?;
    Ok(acc)
}
