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
    if recipe.batch == 0 || recipe.epochs == 0 {
        return Err(Error::param("recipe", "batch/epochs", "must be ≥ 1"));
    }
    crate::limits::at_most("batch", recipe.batch, super::recipe::MAX_BATCH)?;
    crate::limits::at_most("epochs", recipe.epochs, 10_000)?;
    recipe.arch.check()?;
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
                let loss = cross_entropy(&recipe.arch, &ps, &xt, &yt)?;
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

/// Mean cross-entropy of the logits of images `x` `[b, 784]` against one-hot labels `[b, 10]`, with the
/// log-softmax from plain ops (max shift, exp, sum, log), whose backward candle records correctly.
pub(crate) fn cross_entropy(cfg: &ClassifierConfig, params: &[Tensor], x: &Tensor, onehot: &Tensor) -> candle_core::Result<Tensor> {
    let z = logits(cfg, params, x)?;
    let z = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = z.broadcast_sub(&lse)?;
    (logp * onehot)?.sum_all()? * (-1.0 / x.dim(0)? as f64)
}

/// Initial weights and biases U(±1/√fan_in) (fan_in: a weight's size over its first axis), drawn from
/// our seeded stream in file order.
fn init_vars(arch: &ClassifierConfig, rng: &mut Rng, device: &Device) -> Result<Vec<Var>> {
    let mut vars = Vec::new();
    let mut fan_in = 1;
    for (name, shape) in shapes(arch) {
        if name.ends_with(".weight") {
            fan_in = shape[1..].iter().product::<usize>();
        }
        let b = 1.0 / (fan_in as f64).sqrt();
        let v: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| ((2.0 * rng::uniform(rng) - 1.0) * b) as f32).collect();
        let t = Tensor::from_vec(v, shape, device).map_err(backend("classifier init"))?;
        vars.push(Var::from_tensor(&t).map_err(backend("classifier init"))?);
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
        .zip(&clf.params)
        .map(|((n, s), t)| Ok((n, s, t.flatten_all()?.to_vec1::<f32>()?)))
        .collect::<candle_core::Result<_>>()
        .map_err(backend("reading the classifier"))?;
    let tensors: Vec<F32Tensor<'_>> = vals.iter().map(|(n, s, v)| F32Tensor { name: n, shape: s.clone(), data: v }).collect();
    crate::io::check_finite_tensors(&recipe.out, &tensors)?;
    write_safetensors(&recipe.out, &tensors, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The training loss's gradients (candle's backward through the im2col convolution, whose backward is
    /// `Col2im3`, SiLU, max-pool and the MLP) against central differences, in f64 on a small network:
    /// conv [2, 3], hidden [4].
    /// Step h = 1e-6: truncation error ~h²·|f⁽³⁾| ~ 1e-12 and rounding ~1e-16/h = 1e-10, so 1e-7 is
    /// loose; a max-pool tie within h of switching would break it, which random inputs make improbable.
    #[test]
    fn conv_classifier_gradients_match_central_differences() {
        let cfg = ClassifierConfig { conv: vec![2, 3], hidden: vec![4] };
        cfg.check().unwrap();
        let dev = Device::Cpu;
        let mut rng = rng::seeded(7);
        let mut u = |n: usize, s: f64| -> Vec<f64> { (0..n).map(|_| (2.0 * rng::uniform(&mut rng) - 1.0) * s).collect() };
        let shp = shapes(&cfg);
        let vals: Vec<Vec<f64>> = shp.iter().map(|(_, s)| u(s.iter().product(), 0.5)).collect();
        let b = 3;
        let x = Tensor::from_vec(u(b * D_IN, 1.0), (b, D_IN), &dev).unwrap();
        let mut oh = vec![0f64; b * N_CLASSES];
        for (r, k) in [1usize, 3, 8].iter().enumerate() {
            oh[r * N_CLASSES + k] = 1.0;
        }
        let y = Tensor::from_vec(oh, (b, N_CLASSES), &dev).unwrap();
        let tensors = |v: &[Vec<f64>]| -> Vec<Tensor> { v.iter().zip(&shp).map(|(v, (_, s))| Tensor::from_vec(v.clone(), s.clone(), &dev).unwrap()).collect() };
        let loss_at = |v: &[Vec<f64>]| cross_entropy(&cfg, &tensors(v), &x, &y).unwrap().to_scalar::<f64>().unwrap();
        let vars: Vec<Var> = tensors(&vals).iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ps: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let g = cross_entropy(&cfg, &ps, &x, &y).unwrap().backward().unwrap();
        let h = 1e-6;
        let mut checked = 0;
        for (i, var) in vars.iter().enumerate() {
            let gi = g.get(var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            // Up to 6 entries of each tensor, spread over it.
            let n = gi.len();
            for j in (0..n).step_by((n / 6).max(1)) {
                let (mut up, mut dn) = (vals.clone(), vals.clone());
                up[i][j] += h;
                dn[i][j] -= h;
                let fd = (loss_at(&up) - loss_at(&dn)) / (2.0 * h);
                assert!((fd - gi[j]).abs() < 1e-7, "{}[{j}]: backward {} vs central difference {fd}", shp[i].0, gi[j]);
                checked += 1;
            }
        }
        assert!(checked > 40, "{checked}");
    }

    /// Architectures the judge cannot run are refused by name.
    #[test]
    fn bad_architectures_are_refused() {
        for (cfg, key) in [
            (ClassifierConfig { conv: vec![8, 8, 8], hidden: vec![16] }, "arch.conv"),
            (ClassifierConfig { conv: vec![0], hidden: vec![16] }, "arch.conv"),
            (ClassifierConfig { conv: vec![8], hidden: vec![] }, "arch.hidden"),
            (ClassifierConfig { conv: vec![], hidden: vec![16, 0] }, "arch.hidden"),
        ] {
            let e = cfg.check().unwrap_err().to_string();
            assert!(e.contains(key), "{cfg:?}: {e}");
        }
    }
}
