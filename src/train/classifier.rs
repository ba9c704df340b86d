//! Training the Fashion-MNIST classifier ([`crate::nets::classifier::Classifier`]) that judges generated
//! images: cross-entropy on all ten classes, candle_nn's AdamW, every random number from our seeded stream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::common::lr_at;
use crate::error::{Error, Result};
use crate::io::idx::{load_fashion_mnist, Split, FASHION_CLASSES};
use crate::io::{write_safetensors, F32Tensor};
use crate::nets::classifier::{logits, shapes, Classifier, ClassifierConfig, D_IN, KIND, N_CLASSES};
use crate::nets::header::backend;
use crate::rng::{self, Rng};

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
    crate::limits::at_most("batch", recipe.batch, super::recipe::MAX_BATCH)?;
    crate::limits::at_most("epochs", recipe.epochs, 10_000)?;
    if let Some(h) = recipe.arch.hidden.iter().find(|&&h| h > crate::limits::MAX_WIDTH) {
        return Err(Error::param("hidden", h, format!("the limit is {}", crate::limits::MAX_WIDTH)));
    }
    let train = load_fashion_mnist(dir, Split::Train, None)?;
    let test = load_fashion_mnist(dir, Split::Test, None)?;
    let device = Device::Cpu;
    let mut rng: Rng = rng::seeded(recipe.seed);
    let vars = init_vars(&recipe.arch, &mut rng, &device)?;
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
            opt.set_learning_rate(lr_at(step, recipe.lr, recipe.lr_final, 0, total));
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
            if !loss.is_finite() {
                return Err(Error::Diverged { what: format!("loss ({loss})"), step, hint: "lower the recipe's lr".into() });
            }
            progress(step, loss);
        }
    }
    let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let clf = Classifier { cfg: recipe.arch.clone(), params, device, test_accuracy: None };
    let acc = clf.accuracy(&test)?;
    save_classifier(recipe, &clf, acc)?;
    Ok(acc)
}

/// Initial weights and biases U(±1/√fan_in), drawn from our seeded stream in layer order.
fn init_vars(arch: &ClassifierConfig, rng: &mut Rng, device: &Device) -> Result<Vec<Var>> {
    let mut vars = Vec::new();
    for (o, inp) in shapes(arch) {
        let b = 1.0 / (inp as f64).sqrt();
        for len in [o * inp, o] {
            let v: Vec<f32> = (0..len).map(|_| ((2.0 * rng::uniform(rng) - 1.0) * b) as f32).collect();
            let shape = if len == o { vec![o] } else { vec![o, inp] };
            vars.push(Var::from_tensor(&Tensor::from_vec(v, shape, device).map_err(backend("classifier init"))?).map_err(backend("classifier init"))?);
        }
    }
    Ok(vars)
}

/// Write the trained classifier to the recipe's `out` with its metadata (recipe, test accuracy `acc`),
/// atomically; never a non-finite one.
fn save_classifier(recipe: &ClassifierRecipe, clf: &Classifier, acc: f64) -> Result<()> {
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
    crate::io::check_finite_tensors(&recipe.out, &tensors)?;
    write_safetensors(&recipe.out, &tensors, &meta)
}
