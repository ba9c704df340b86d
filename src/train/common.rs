//! What every trainer shares: reading a recipe file, the training data ([`DataSource`]), the learning-rate
//! schedule, the draw of training times, the network description of a run, gradients out of candle and
//! the AdamW update kept on the host (so that its moments can be checkpointed).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{Device, Tensor, Var};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::GaussianMixture;
use crate::nets::header::backend;
use crate::nets::NetInfo;
use crate::rng::{self, Rng};
use crate::schedule::VpSchedule;

/// The default of every recipe's `data_dir`: Debian's Fashion-MNIST directory.
pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from(crate::io::idx::FASHION_MNIST_DIR)
}

/// Where training data comes from. Written `gmm:PATH` (samples from a Gaussian-mixture expert file, so
/// that a 2-D network has exact truth to be compared with). Image data sets would be further variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Exact samples of the Gaussian mixture in this file.
    Gmm(PathBuf),
    /// Fashion-MNIST training images (in [−1, 1], shape [1, 28, 28]) of these classes, read from the
    /// directory given to [`DataSource::open`] (by default [`crate::io::idx::FASHION_MNIST_DIR`]). Written
    /// `fashion-mnist:1,8`.
    FashionMnist(Vec<u8>),
}

/// Parse a class list such as `1,8` (labels 0–9, no repeats, non-empty).
pub fn parse_classes(s: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let c: u8 = part.trim().parse().ok().filter(|&c: &u8| c <= 9).ok_or_else(|| Error::param("classes", s, format!("`{part}` is not a Fashion-MNIST label 0–9")))?;
        if v.contains(&c) {
            return Err(Error::param("classes", s, format!("class {c} is repeated")));
        }
        v.push(c);
    }
    Ok(v)
}

impl FromStr for DataSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some(("gmm", p)) if !p.is_empty() => Ok(DataSource::Gmm(PathBuf::from(p))),
            Some(("fashion-mnist", c)) => Ok(DataSource::FashionMnist(parse_classes(c)?)),
            _ => Err(Error::param("data", s, "expected gmm:PATH (samples from a Gaussian-mixture expert file) or fashion-mnist:CLASSES (e.g. fashion-mnist:1,8)")),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Gmm(p) => write!(f, "gmm:{}", p.display()),
            DataSource::FashionMnist(c) => {
                write!(f, "fashion-mnist:{}", c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// An opened data source.
pub enum Data {
    /// A Gaussian mixture to sample from.
    Gmm(GaussianMixture),
    /// Images to draw from (uniformly, with replacement).
    Images(crate::io::idx::ImageSet),
}

impl DataSource {
    /// Open the source; `fashion_mnist_dir` is where Fashion-MNIST's IDX files are.
    pub fn open(&self, fashion_mnist_dir: &Path) -> Result<Data> {
        match self {
            DataSource::Gmm(p) => Ok(Data::Gmm(GaussianMixture::load(p)?)),
            DataSource::FashionMnist(c) => {
                Ok(Data::Images(crate::io::idx::load_fashion_mnist(fashion_mnist_dir, crate::io::idx::Split::Train, Some(c))?))
            }
        }
    }
}

impl Data {
    /// Shape of one item.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Data::Gmm(g) => crate::model::ScoreModel::data_shape(g).to_vec(),
            Data::Images(s) => vec![1, s.rows, s.cols],
        }
    }

    /// The forward schedule recorded with the data, if any.
    pub fn schedule(&self) -> Option<VpSchedule> {
        match self {
            Data::Gmm(g) => Some(crate::model::ScoreModel::schedule(g)),
            Data::Images(_) => None,
        }
    }

    /// `n` items, row-major.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Vec<f64> {
        self.sample_labelled(n, rng).0
    }

    /// `n` items, row-major, with their class labels (images; none for a Gaussian mixture). The same
    /// draws as [`Self::sample`].
    pub fn sample_labelled(&self, n: usize, rng: &mut Rng) -> (Vec<f64>, Option<Vec<u32>>) {
        match self {
            Data::Gmm(g) => (g.sample(n, rng), None),
            Data::Images(s) => {
                let mut v = Vec::with_capacity(n * s.rows * s.cols);
                let mut labels = Vec::with_capacity(n);
                for _ in 0..n {
                    let i = ((rng::uniform(rng) * s.len() as f64) as usize).min(s.len() - 1);
                    v.extend(s.image(i).iter().map(|&p| p as f64));
                    labels.push(s.labels[i] as u32);
                }
                (v, Some(labels))
            }
        }
    }
}

/// Read a JSON recipe file (of either trainer).
pub(crate) fn load_recipe<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), cause: source })?;
    serde_json::from_str(&s).map_err(|e| Error::param(format!("recipe {}", path.display()), "(file)", e.to_string()))
}

/// The training time of batch item `i` of `batch`: the first ⌊t_log_fraction·batch⌋ items log-uniform
/// on [t_min, 1], the rest uniform.
pub(crate) fn draw_t(i: usize, batch: usize, t_min: f64, t_log_fraction: f64, rng: &mut Rng) -> f64 {
    let u = rng::uniform(rng);
    if (i as f64) < (t_log_fraction * batch as f64).floor() {
        (t_min.ln() * (1.0 - u)).exp()
    } else {
        t_min + (1.0 - t_min) * u
    }
}

/// Learning rate at step `k` (0-based) of `steps`: linear warm-up to `lr` over `warmup` steps, then a
/// cosine from `lr` to `lr_final` (default `lr`).
pub(crate) fn lr_at(k: usize, lr: f64, lr_final: Option<f64>, warmup: usize, steps: usize) -> f64 {
    if k < warmup {
        return lr * (k + 1) as f64 / warmup as f64;
    }
    let end = lr_final.unwrap_or(lr);
    let span = steps.saturating_sub(warmup).max(1) as f64;
    let p = ((k - warmup) as f64 / span).min(1.0);
    end + 0.5 * (lr - end) * (1.0 + (std::f64::consts::PI * p).cos())
}

/// Open the data source `data` of `recipe` and describe the network to be trained on it: the forward
/// schedule is `beta_min`/`beta_max` where the recipe gives them, else the data's (else the default);
/// the name is `name`, else the stem of the output file `out`; the recipe is recorded as JSON.
pub(crate) fn open_data(
    recipe: &impl Serialize,
    data: &str,
    beta_min: Option<f64>,
    beta_max: Option<f64>,
    name: Option<&String>,
    out: &Path,
    fashion_mnist_dir: &Path,
) -> Result<(Data, NetInfo)> {
    let source: DataSource = data.parse()?;
    let data = source.open(fashion_mnist_dir)?;
    let from_data = data.schedule().unwrap_or_default();
    let schedule = VpSchedule::new(beta_min.unwrap_or(from_data.beta_min()), beta_max.unwrap_or(from_data.beta_max()))?;
    let info = NetInfo {
        data_shape: data.shape(),
        schedule,
        trained_on: source.to_string(),
        recipe: Some(serde_json::to_string(recipe).expect("plain struct")),
        name: name.cloned().unwrap_or_else(|| out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
    };
    Ok((data, info))
}

/// The value of `loss` and its gradient with respect to each of `vars`, flattened, in their order.
pub(crate) fn loss_and_grads(loss: &Tensor, vars: &[Var]) -> candle_core::Result<(f64, Vec<Vec<f32>>)> {
    let grads = loss.backward()?;
    let mut gs = Vec::with_capacity(vars.len());
    for var in vars {
        let g = grads.get(var).ok_or_else(|| candle_core::Error::Msg("no gradient recorded for a parameter".into()))?;
        gs.push(g.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((loss.to_scalar::<f32>()? as f64, gs))
}

/// Copy the host parameters (with their shapes) into the candle variables.
pub(crate) fn set_vars(vars: &[Var], params: &[Vec<f32>], shapes: &[Vec<usize>], device: &Device) -> Result<()> {
    for ((var, p), shape) in vars.iter().zip(params).zip(shapes) {
        let tensor = Tensor::from_slice(p, shape.as_slice(), device).map_err(backend("updating a parameter"))?;
        var.set(&tensor).map_err(backend("updating a parameter"))?;
    }
    Ok(())
}

/// AdamW's constants: the moments' decay rates β1, β2, the weights `g1`, `g2` of the new gradient
/// (nominally 1 − β; see [`ADAM`] and the U-Net trainer's) and ε.
pub(crate) struct AdamConsts {
    pub beta1: f64,
    pub beta2: f64,
    pub g1: f64,
    pub g2: f64,
    pub eps: f64,
}

/// AdamW's first and second moments, one vector per parameter tensor.
pub(crate) struct Moments {
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl Moments {
    /// Zero moments for `params`.
    pub fn zeros(params: &[Vec<f32>]) -> Self {
        Moments { m: params.iter().map(|p| vec![0.0; p.len()]).collect(), v: params.iter().map(|p| vec![0.0; p.len()]).collect() }
    }

    /// One AdamW update of `params` by `grads` at 0-based step `step` (candle_nn::AdamW's rule
    /// θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + ε), in f64 on the f32 state).
    pub fn update(&mut self, c: &AdamConsts, params: &mut [Vec<f32>], grads: &[Vec<f32>], step: usize, lr: f64, weight_decay: f64) {
        let t = (step + 1) as i32;
        let (c1, c2) = (1.0 / (1.0 - c.beta1.powi(t)), 1.0 / (1.0 - c.beta2.powi(t)));
        let decay = 1.0 - lr * weight_decay;
        for (i, g) in grads.iter().enumerate() {
            let (p, m, v) = (&mut params[i], &mut self.m[i], &mut self.v[i]);
            for j in 0..g.len() {
                let gj = g[j] as f64;
                let mj = c.beta1 * m[j] as f64 + c.g1 * gj;
                let vj = c.beta2 * v[j] as f64 + c.g2 * gj * gj;
                m[j] = mj as f32;
                v[j] = vj as f32;
                p[j] = (p[j] as f64 * decay - lr * (mj * c1) / ((vj * c2).sqrt() + c.eps)) as f32;
            }
        }
    }
}

