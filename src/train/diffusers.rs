//! Training a diffusers `UNet2DModel` (recipe kind `diffusers_unet2d`) by denoising score matching on
//! the CPU kernels' own reverse mode ([`crate::nets::unet2d_cpu`]), as DDPM trains it: a discrete
//! linear-β table (`beta_min`/`beta_max` of the recipe over 1000 labels: the recipe's defaults 0.1 and
//! 20 are DDPM's 1e-4 to 0.02), ε-prediction, AdamW and an optional moving average of the weights;
//! with `num_class_embeds` the model is class-conditional on the images' own labels. The
//! result is a checkpoint directory that diffusers loads (`UNet2DModel.from_pretrained`,
//! `DDPMScheduler.from_pretrained`) and `mix-sample --models` composes. Checkpoints hold the weights,
//! the moments, the average, the step and the random stream's position; resuming continues the run
//! bit for bit.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::tensors::TensorFile;
use crate::io::F32Tensor;
use crate::nets::diffusers::{save_dir, LinearBetas, Unet2dConfig};
use crate::nets::unet2d_cpu::Unet2dCpu;
use crate::rng::{self, Rng};
use crate::schedule::VpSchedule;
use super::common::{open_data, AdamConsts, Data, DataSource, Moments};
pub use super::recipe::DiffusersRecipe;

/// AdamW with candle_nn::AdamW's defaults (as the MLP trainer: g = 1 − β).
const ADAM: AdamConsts = AdamConsts { beta1: 0.9, beta2: 0.999, g1: 1.0 - 0.9, g2: 1.0 - 0.999, eps: 1e-8 };

/// Timestep labels of the training table.
pub const TRAIN_STEPS: usize = 1000;

/// A diffusers `UNet2DModel` training run.
pub struct DiffusersTrainer {
    recipe: DiffusersRecipe,
    cfg: Unet2dConfig,
    data: Data,
    net: Unet2dCpu,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    params: Vec<Vec<f32>>,
    ema: Option<Vec<Vec<f32>>>,
    moments: Moments,
    step: usize,
    rng: Rng,
    betas: LinearBetas,
    schedule: VpSchedule,
    recipe_json: String,
}

impl DiffusersTrainer {
    /// A fresh run.
    pub fn new(recipe: DiffusersRecipe) -> Result<Self> {
        let mut rng = rng::seeded(recipe.seed);
        let (cfg, data, betas, schedule) = Self::prepare(&recipe)?;
        let mut net = Unet2dCpu::init(cfg.clone(), &mut rng)?;
        let (names, shapes, params) = Self::split(&mut net);
        let moments = Moments::zeros(&params);
        let ema = recipe.ema_decay.map(|_| params.clone());
        let recipe_json = serde_json::to_string(&recipe).expect("plain struct");
        Ok(DiffusersTrainer { recipe, cfg, data, net, names, shapes, params, ema, moments, step: 0, rng, betas, schedule, recipe_json })
    }

    /// The recipe checked, its architecture completed from the data (`sample_size`), the data opened
    /// and the training table.
    fn prepare(recipe: &DiffusersRecipe) -> Result<(Unet2dConfig, Data, LinearBetas, VpSchedule)> {
        recipe.check()?;
        if let Some(k) = recipe.arch.num_class_embeds {
            // A class-conditional model learns class `c` from the images labelled c (Fashion-MNIST's own
            // labels), so every class of the data needs an embedding.
            match recipe.data.parse::<DataSource>()? {
                DataSource::FashionMnist(classes) => {
                    if let Some(&c) = classes.iter().find(|&&c| c as usize >= k) {
                        return Err(Error::param("arch.num_class_embeds", k, format!("the data `{}` has class {c}: a class-conditional model needs num_class_embeds > every label (10 for Fashion-MNIST)", recipe.data)));
                    }
                }
                DataSource::Gmm(_) => return Err(Error::param("arch.num_class_embeds", k, format!("the data `{}` has no labels: class-conditional recipes train on fashion-mnist:CLASSES", recipe.data))),
            }
        }
        let (data, info) = open_data(recipe, &recipe.data, recipe.beta_min, recipe.beta_max, recipe.name.as_ref(), &recipe.out, &recipe.data_dir)?;
        let shape = info.data_shape.clone();
        if shape.len() != 3 || shape[0] != recipe.arch.in_channels || recipe.arch.out_channels != shape[0] {
            return Err(Error::param("arch", format!("in/out_channels {}/{}", recipe.arch.in_channels, recipe.arch.out_channels), format!("the data `{}` has items of shape {shape:?}: a UNet2DModel needs [C, H, W] with in_channels = out_channels = C", recipe.data)));
        }
        let mut cfg = recipe.arch.clone();
        match cfg.sample_hw() {
            Some(hw) if hw != (shape[1], shape[2]) => return Err(Error::param("arch.sample_size", format!("{hw:?}"), format!("the data's images are {}x{}", shape[1], shape[2]))),
            Some(_) => {}
            None => cfg.sample_size = Some(serde_json::json!(shape[1])),
        }
        let levels = cfg.block_out_channels.len() as u32 - 1;
        if shape[1] % (1 << levels) != 0 || shape[2] % (1 << levels) != 0 {
            return Err(Error::param("arch.block_out_channels", format!("{} levels", levels + 1), format!("{}x{} images are not divisible by 2^{levels}", shape[1], shape[2])));
        }
        let betas = LinearBetas { steps: TRAIN_STEPS, beta_start: info.schedule.beta_min() / TRAIN_STEPS as f64, beta_end: info.schedule.beta_max() / TRAIN_STEPS as f64 };
        let table = VpSchedule::diffusers_betas("linear", betas.steps, betas.beta_start, betas.beta_end)?;
        let schedule = VpSchedule::discrete(format!("linear {} steps, beta {}..{}", betas.steps, betas.beta_start, betas.beta_end), &table)?;
        Ok((cfg, data, betas, schedule))
    }

    fn split(net: &mut Unet2dCpu) -> (Vec<String>, Vec<Vec<usize>>, Vec<Vec<f32>>) {
        let p = net.parameters();
        (p.iter().map(|(n, _, _)| n.clone()).collect(), p.iter().map(|(_, s, _)| s.clone()).collect(), p.iter().map(|(_, _, v)| v.to_vec()).collect())
    }

    /// Continue the run saved in checkpoint `ckpt` (written by [`Self::save_checkpoint`] from the same
    /// recipe; its `steps` may be larger).
    pub fn resume(recipe: DiffusersRecipe, ckpt: &Path) -> Result<Self> {
        let mut t = Self::new(recipe)?;
        let f = TensorFile::open(ckpt)?;
        let merr = |key: &str, reason: String| Error::Metadata { path: ckpt.into(), key: key.into(), reason };
        let saved: DiffusersRecipe = f
            .metadata("recipe")
            .ok_or_else(|| merr("recipe", "missing: not a mix-train checkpoint".into()))
            .and_then(|s| serde_json::from_str(s).map_err(|e| merr("recipe", e.to_string())))?;
        if saved.arch != t.recipe.arch || saved.data != t.recipe.data || saved.seed != t.recipe.seed || saved.batch != t.recipe.batch || saved.ema_decay != t.recipe.ema_decay || saved.hflip != t.recipe.hflip || saved.snr_gamma != t.recipe.snr_gamma {
            return Err(merr("recipe", "the checkpoint was trained with another architecture, data, seed, batch, ema_decay, hflip or snr_gamma than the recipe's".into()));
        }
        let int = |key: &str| -> Result<u128> {
            let s = f.metadata(key).ok_or_else(|| merr(key, "missing: not a mix-train checkpoint".into()))?;
            s.parse::<u128>().map_err(|e| merr(key, format!("`{s}`: {e}")))
        };
        t.step = int("train_step")? as usize;
        t.rng.set_word_pos(int("train_rng_word_pos")?);
        let read = |prefix: &str, name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let tname = format!("{prefix}{name}");
            let (s, vals) = f.tensor_f64(&tname)?;
            if s != shape {
                return Err(Error::TensorShape { path: ckpt.into(), tensor: tname, found: s, expected: format!("{shape:?}") });
            }
            Ok(vals.iter().map(|&x| x as f32).collect())
        };
        for (i, (name, shape)) in t.names.iter().zip(&t.shapes).enumerate() {
            t.params[i] = read("", name, shape)?;
            t.moments.m[i] = read("optim.m.", name, shape)?;
            t.moments.v[i] = read("optim.v.", name, shape)?;
            if let Some(e) = t.ema.as_mut() {
                e[i] = read("ema.", name, shape)?;
            }
        }
        t.net.set_parameters(&t.params);
        Ok(t)
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The recipe.
    pub fn recipe(&self) -> &DiffusersRecipe {
        &self.recipe
    }

    /// One AdamW step on a fresh batch; returns the batch's DSM loss (mean squared ε error, weighted by
    /// min(SNR, γ)/SNR per item when the recipe sets `snr_gamma`).
    pub fn step(&mut self) -> Result<f64> {
        let b = self.recipe.batch;
        let d: usize = self.data.shape().iter().product();
        let (mut x0, classes) = self.data.sample_labelled(b, &mut self.rng);
        if self.recipe.hflip {
            let w = self.data.shape()[2];
            for img in x0.chunks_mut(d) {
                if rng::uniform(&mut self.rng) < 0.5 {
                    img.chunks_mut(w).for_each(|row| row.reverse());
                }
            }
        }
        let classes = classes.filter(|_| self.cfg.num_class_embeds.is_some());
        let mut eps = vec![0.0; b * d];
        rng::par_fill_normal(&mut self.rng, &mut eps);
        let n = TRAIN_STEPS as f64;
        let mut xt = Vec::with_capacity(b * d);
        let mut labels = Vec::with_capacity(b);
        let mut weights = Vec::with_capacity(b);
        for i in 0..b {
            let t = self.recipe.draw_t(i, &mut self.rng);
            let label = ((n * t).round() - 1.0).clamp(0.0, n - 1.0);
            let tl = (label + 1.0) / n;
            let (a, s) = (self.schedule.alpha(tl), self.schedule.sigma2(tl).sqrt());
            xt.extend((0..d).map(|j| (a * x0[i * d + j] + s * eps[i * d + j]) as f32));
            labels.push(label as f32);
            if let Some(g) = self.recipe.snr_gamma {
                let snr = a * a / (s * s);
                weights.push((snr.min(g) / snr) as f32);
            }
        }
        let target: Vec<f32> = eps.iter().map(|&v| v as f32).collect();
        let w = self.recipe.snr_gamma.map(|_| weights.as_slice());
        let (loss, grads) = self.net.loss_and_grads(&xt, &labels, classes.as_deref(), &target, w)?;
        self.moments.update(&ADAM, &mut self.params, &grads.0, self.step, self.recipe.lr_at(self.step), self.recipe.weight_decay);
        self.net.set_parameters(&self.params);
        if let (Some(e), Some(decay)) = (self.ema.as_mut(), self.recipe.ema_decay) {
            // The usual warm-up: the first steps' average would otherwise keep most of the random init.
            let k = self.step as f64;
            let decay = decay.min((1.0 + k) / (10.0 + k));
            for (ev, pv) in e.iter_mut().zip(&self.params) {
                ev.iter_mut().zip(pv).for_each(|(a, &p)| *a = (decay * *a as f64 + (1.0 - decay) * p as f64) as f32);
            }
        }
        self.step += 1;
        Ok(loss)
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut meta = HashMap::new();
        meta.insert("recipe".to_string(), self.recipe_json.clone());
        meta.insert("kind".to_string(), super::recipe::DIFFUSERS_KIND.to_string());
        meta.insert("train_step".to_string(), self.step.to_string());
        meta.insert("trained_on".to_string(), self.recipe.data.clone());
        meta.insert("format".to_string(), "pt".to_string());
        meta
    }

    fn tensors<'a>(&'a self, values: &'a [Vec<f32>]) -> Vec<F32Tensor<'a>> {
        self.names.iter().zip(&self.shapes).zip(values).map(|((n, s), v)| F32Tensor { name: n, shape: s.clone(), data: v }).collect()
    }

    /// Write the network (the moving average when the recipe keeps one) as a diffusers checkpoint
    /// directory at `dir`.
    pub fn save_network(&self, dir: &Path) -> Result<()> {
        let values = self.ema.as_ref().unwrap_or(&self.params);
        save_dir(dir, &self.cfg, &self.tensors(values), self.betas, &self.metadata())
    }

    /// Write a checkpoint file (weights, moments, average, step, random-stream position), atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut meta = self.metadata();
        meta.insert("train_rng_word_pos".into(), self.rng.get_word_pos().to_string());
        let prefixed = |p: &str| -> Vec<String> { self.names.iter().map(|n| format!("{p}{n}")).collect() };
        let (mn, vn, en) = (prefixed("optim.m."), prefixed("optim.v."), prefixed("ema."));
        let mut all = self.tensors(&self.params);
        for (names, vals) in [(&mn, &self.moments.m), (&vn, &self.moments.v)].into_iter().chain(self.ema.as_ref().map(|e| (&en, e))) {
            all.extend(names.iter().zip(&self.shapes).zip(vals).map(|((n, s), v)| F32Tensor { name: n, shape: s.clone(), data: v }));
        }
        crate::io::check_finite_tensors(path, &all)?;
        crate::io::write_safetensors(path, &all, &meta)
    }
}
