//! Training score networks by denoising score matching (what `mix-train` runs).
//!
//! Loss: E_{x_0, t, ε} |ε̂(α_t x_0 + σ_t ε, t) − ε|² (mean over the batch and coordinates), with
//! t ~ U(t_min, 1) (optionally partly log-uniform, `t_log_fraction`), ε ~ N(0, I) and x_0 from the [`DataSource`]. Every random number (data, t, ε and the
//! initial weights) comes from one seeded ChaCha8 stream ([`crate::rng`]); candle only does the forward
//! and backward passes. The optimiser is AdamW with candle_nn::AdamW's update rule
//! (θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + ε)), kept on the host so that its moments can be checkpointed: a
//! checkpoint holds the weights, the moments (`optim.m.*`, `optim.v.*`), the step count and the position of
//! the random stream, and resuming from it continues the run exactly.
//!
//! The learning rate warms up linearly over `warmup` steps, then follows a cosine from `lr` to `lr_final`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::F32Tensor;
use super::common::{loss_and_grads, open_data, set_vars, AdamConsts, Data, DataSource, Moments};
pub use super::recipe::{Recipe, MAX_BATCH};
use crate::nets::header::backend;
use crate::nets::mlp::{bias_name, weight_name};
use crate::nets::{CandleMlp, MlpConfig, NetInfo, ScoreMlp};
use crate::rng::{self, Rng};
use crate::io::tensors::TensorFile;

/// This trainer's AdamW constants (candle_nn::AdamW's defaults), the gradients' weights computed as 1 − β.
const ADAM: AdamConsts = AdamConsts { beta1: 0.9, beta2: 0.999, g1: 1.0 - 0.9, g2: 1.0 - 0.999, eps: 1e-8 };

/// A training run in progress.
pub struct Trainer {
    recipe: Recipe,
    data: Data,
    info: NetInfo,
    cfg: MlpConfig,
    model: CandleMlp,
    params: Vec<Vec<f32>>,
    shapes: Vec<Vec<usize>>,
    moments: Moments,
    step: usize,
    rng: Rng,
    freqs: Vec<f64>,
    device: Device,
}

impl Trainer {
    /// Start a fresh run: weights initialised from the recipe's seed.
    pub fn new(recipe: Recipe) -> Result<Self> {
        recipe.check()?;
        let (data, info) = open_data(&recipe, &recipe.data, recipe.beta_min, recipe.beta_max, recipe.name.as_ref(), &recipe.out, &recipe.data_dir)?;
        let mut rng = rng::seeded(recipe.seed);
        let net = ScoreMlp::init(recipe.arch, info.clone(), &mut rng)?;
        let params: Vec<Vec<f32>> = net.to_f32().into_iter().map(|(_, _, v)| v).collect();
        Self::assemble(recipe, data, info, params, None, 0, rng)
    }

    fn assemble(
        recipe: Recipe,
        data: Data,
        info: NetInfo,
        params: Vec<Vec<f32>>,
        moments: Option<Moments>,
        step: usize,
        rng: Rng,
    ) -> Result<Self> {
        let cfg = recipe.arch;
        let device = Device::Cpu;
        let net = ScoreMlp::from_f32(cfg, info.clone(), &params)?;
        let shapes: Vec<Vec<usize>> = net.to_f32().into_iter().map(|(_, s, _)| s).collect();
        let model = CandleMlp::new(&net, &device)?;
        let moments = moments.unwrap_or_else(|| Moments::zeros(&params));
        Ok(Trainer { freqs: cfg.freqs(), recipe, data, info, cfg, model, params, shapes, moments, step, rng, device })
    }

    /// Continue the run saved in checkpoint `ckpt`. The recipe's architecture, data and seed must be the
    /// checkpoint's; its `steps` may be larger (train longer).
    pub fn resume(recipe: Recipe, ckpt: &Path) -> Result<Self> {
        recipe.check()?;
        let f = TensorFile::open(ckpt)?;
        let net = ScoreMlp::from_file(&f)?;
        let merr = |key: &str, reason: String| Error::Metadata { path: ckpt.into(), key: key.into(), reason };
        if net.config() != recipe.arch {
            return Err(merr("arch", format!("checkpoint has {:?}, recipe has {:?}", net.config(), recipe.arch)));
        }
        let saved: Recipe = f
            .metadata("recipe")
            .ok_or_else(|| merr("recipe", "missing: not a mix-train checkpoint".into()))
            .and_then(|s| serde_json::from_str(s).map_err(|e| merr("recipe", e.to_string())))?;
        if saved.data != recipe.data || saved.seed != recipe.seed || saved.batch != recipe.batch {
            return Err(merr("recipe", format!("checkpoint was trained with data {}, seed {}, batch {}; the recipe says {}, {}, {}", saved.data, saved.seed, saved.batch, recipe.data, recipe.seed, recipe.batch)));
        }
        let int = |key: &str| -> Result<u128> {
            let s = f.metadata(key).ok_or_else(|| merr(key, "missing: not a mix-train checkpoint".into()))?;
            s.parse::<u128>().map_err(|e| merr(key, format!("`{s}`: {e}")))
        };
        let step = int("train_step")? as usize;
        let pos = int("train_rng_word_pos")?;
        let mut rng = rng::seeded(recipe.seed);
        rng.set_word_pos(pos);
        let params: Vec<Vec<f32>> = net.to_f32().into_iter().map(|(_, _, v)| v).collect();
        let mut ms = Vec::new();
        let mut vs = Vec::new();
        for (name, shape, _) in net.to_f32() {
            for (prefix, dst) in [("optim.m.", &mut ms), ("optim.v.", &mut vs)] {
                let tname = format!("{prefix}{name}");
                let (s, vals) = f.tensor_f64(&tname)?;
                if s != shape {
                    return Err(Error::TensorShape { path: ckpt.into(), tensor: tname, found: s, expected: format!("{shape:?} (the shape of {name})") });
                }
                dst.push(vals.iter().map(|&x| x as f32).collect::<Vec<f32>>());
            }
        }
        let source: DataSource = recipe.data.parse()?;
        let data = source.open(&recipe.data_dir)?;
        let mut info = net.info().clone();
        info.recipe = Some(serde_json::to_string(&recipe).expect("plain struct"));
        Self::assemble(recipe, data, info, params, Some(Moments { m: ms, v: vs }), step, rng)
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The recipe.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// One optimisation step on a fresh batch; returns the batch's DSM loss (before the update).
    pub fn step(&mut self) -> Result<f64> {
        let (b, d, k2) = (self.recipe.batch, self.info.data_shape.iter().product::<usize>(), self.cfg.time_features());
        let sched = self.info.schedule.clone();
        let x0 = self.data.sample(b, &mut self.rng);
        let mut eps = vec![0.0; b * d];
        rng::fill_normal(&mut self.rng, &mut eps);
        let mut input = Vec::with_capacity(b * (d + k2));
        let mut target: Vec<f32> = Vec::with_capacity(b * d);
        let mut e = vec![0.0; k2];
        for i in 0..b {
            let t = self.recipe.draw_t(i, &mut self.rng);
            let (a, s) = (sched.alpha(t), sched.sigma2(t).sqrt());
            input.extend((0..d).map(|j| (a * x0[i * d + j] + s * eps[i * d + j]) as f32));
            // With the input skip (ε̂ = σ_t·x_t + MLP), the candle MLP learns ε − σ_t·x_t.
            let c = if self.cfg.skip { s } else { 0.0 };
            target.extend((0..d).map(|j| (eps[i * d + j] - c * (a * x0[i * d + j] + s * eps[i * d + j])) as f32));
            self.cfg.embed(&self.freqs, t, &mut e);
            input.extend(e.iter().map(|&v| v as f32));
        }
        let (loss, grads) = (|| -> candle_core::Result<_> {
            let x = Tensor::from_vec(input, (b, d + k2), &self.device)?;
            let y = Tensor::from_vec(target, (b, d), &self.device)?;
            let loss = (self.model.forward(&x)? - y)?.sqr()?.mean_all()?;
            loss_and_grads(&loss, self.model.vars())
        })()
        .map_err(backend("computing the DSM loss and its gradient"))?;
        self.moments.update(&ADAM, &mut self.params, &grads, self.step, self.recipe.lr_at(self.step), self.recipe.weight_decay);
        set_vars(self.model.vars(), &self.params, &self.shapes, &self.device)?;
        self.step += 1;
        Ok(loss)
    }

    /// The network as it is now.
    pub fn network(&self) -> Result<ScoreMlp> {
        let mut info = self.info.clone();
        if let Some(n) = &self.recipe.name {
            info.name = n.clone();
        }
        ScoreMlp::from_f32(self.cfg, info, &self.params)
    }

    fn run_metadata(&self) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        meta.insert("train_step".into(), self.step.to_string());
        meta
    }

    /// Write a checkpoint (weights, AdamW moments, step, random-stream position), atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let net = self.network()?;
        let mut meta = self.run_metadata();
        meta.insert("train_rng_word_pos".into(), self.rng.get_word_pos().to_string());
        let names: Vec<String> = (0..=self.cfg.depth).flat_map(|i| [weight_name(i), bias_name(i)]).collect();
        let mnames: Vec<String> = names.iter().map(|n| format!("optim.m.{n}")).collect();
        let vnames: Vec<String> = names.iter().map(|n| format!("optim.v.{n}")).collect();
        let mut extra = Vec::new();
        for i in 0..names.len() {
            extra.push(F32Tensor { name: &mnames[i], shape: self.shapes[i].clone(), data: &self.moments.m[i] });
            extra.push(F32Tensor { name: &vnames[i], shape: self.shapes[i].clone(), data: &self.moments.v[i] });
        }
        net.save_with(path, &meta, &extra)
    }

    /// Write the trained network (no optimiser state), atomically.
    pub fn save_network(&self, path: &Path) -> Result<()> {
        self.network()?.save_with(path, &self.run_metadata(), &[])
    }
}

/// A Monte-Carlo estimate of the DSM loss of `net` on `data` with `n` fixed draws (seed `seed`), in f64
/// through the inference path; t ~ U(t_min, 1). Comparable across networks for the same seed.
pub fn dsm_loss(net: &ScoreMlp, data: &Data, n: usize, t_min: f64, seed: u64) -> Result<f64> {
    let mut rng = rng::seeded(seed);
    let d: usize = data.shape().iter().product();
    let sched = crate::model::ScoreModel::schedule(net);
    let x0 = data.sample(n, &mut rng);
    let mut eps = vec![0.0; n * d];
    rng::fill_normal(&mut rng, &mut eps);
    let mut total = 0.0;
    let mut xt = vec![0.0; d];
    let mut pred = vec![0.0; d];
    for i in 0..n {
        let t = t_min + (1.0 - t_min) * rng::uniform(&mut rng);
        let (a, s) = (sched.alpha(t), sched.sigma2(t).sqrt());
        for j in 0..d {
            xt[j] = a * x0[i * d + j] + s * eps[i * d + j];
        }
        net.predict_noise(&xt, t, &mut pred)?;
        total += (0..d).map(|j| (pred[j] - eps[i * d + j]).powi(2)).sum::<f64>() / d as f64;
    }
    Ok(total / n as f64)
}
