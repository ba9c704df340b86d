//! Training the U-Net ([`crate::nets::ScoreUnet`], recipe kind `score_unet`) by denoising score
//! matching: the same loss, time sampling, AdamW update and learning-rate schedule as
//! the MLP's [`crate::train::Trainer`], from the same recipe type ([`crate::train::recipe::ScoreRecipe`]), over
//! the candle U-Net graph.
//! Every random number comes from the recipe's seeded ChaCha8 stream. The trained network (and, with
//! `checkpoint_every`, a checkpoint holding the weights; resuming is not implemented for the U-Net) is
//! written with the recipe in its metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::Result;
use crate::nets::header::backend;
use crate::nets::{ScoreUnet, UnetGraph};
use crate::rng::{self, Rng};
use super::common::{loss_and_grads, open_data, set_vars, AdamConsts, Data, Moments};
pub use super::recipe::UnetRecipe;

/// AdamW constants as this trainer has always had them: candle_nn::AdamW's defaults, but the gradients'
/// weights written as the literals 0.1 and 0.001, which differ in the last bit of an f64 from the MLP
/// trainer's 1 − β; kept so that a recipe trains the same network bit for bit as before.
const ADAM: AdamConsts = AdamConsts { beta1: 0.9, beta2: 0.999, g1: 0.1, g2: 0.001, eps: 1e-8 };

/// A U-Net training run.
pub struct UnetTrainer {
    pub recipe: UnetRecipe,
    data: Data,
    net: ScoreUnet,
    vars: Vec<Var>,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    params: Vec<Vec<f32>>,
    moments: Moments,
    step: usize,
    rng: Rng,
    device: Device,
}

impl UnetTrainer {
    /// A fresh run.
    pub fn new(recipe: UnetRecipe) -> Result<Self> {
        recipe.check()?;
        let (data, info) = open_data(&recipe, &recipe.data, recipe.beta_min, recipe.beta_max, recipe.name.as_ref(), &recipe.out, &recipe.data_dir)?;
        let mut rng = rng::seeded(recipe.seed);
        let net = ScoreUnet::init(recipe.arch.clone(), info, &mut rng)?;
        let device = Device::Cpu;
        let all = net.to_f32();
        let vars = all
            .iter()
            .map(|(_, s, v)| Var::from_tensor(&Tensor::from_slice(v, s.as_slice(), &device)?))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(backend("creating the U-Net variables"))?;
        let names = all.iter().map(|(n, _, _)| n.clone()).collect();
        let shapes = all.iter().map(|(_, s, _)| s.clone()).collect();
        let params: Vec<Vec<f32>> = all.into_iter().map(|(_, _, v)| v).collect();
        let moments = Moments::zeros(&params);
        Ok(UnetTrainer { recipe, data, net, vars, names, shapes, params, moments, step: 0, rng, device })
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// One AdamW step on a fresh batch; returns the batch's DSM loss.
    pub fn step(&mut self) -> Result<f64> {
        let b = self.recipe.batch;
        let shape = self.net.info().data_shape.clone();
        let d: usize = shape.iter().product();
        let sched = self.net.info().schedule.clone();
        let x0 = self.data.sample(b, &mut self.rng);
        let mut eps = vec![0.0; b * d];
        rng::fill_normal(&mut self.rng, &mut eps);
        let mut xt = Vec::with_capacity(b * d);
        let mut emb = Vec::new();
        for i in 0..b {
            let t = self.recipe.draw_t(i, &mut self.rng);
            let (a, s) = (sched.alpha(t), sched.sigma2(t).sqrt());
            xt.extend((0..d).map(|j| (a * x0[i * d + j] + s * eps[i * d + j]) as f32));
            emb.extend(self.net.embed(t).iter().map(|&v| v as f32));
        }
        let k2 = emb.len() / b;
        let target: Vec<f32> = eps.iter().map(|&v| v as f32).collect();
        let (loss, grads) = (|| -> candle_core::Result<_> {
            let x = Tensor::from_vec(xt, (b, shape[0], shape[1], shape[2]), &self.device)?;
            let e = Tensor::from_vec(emb, (b, k2), &self.device)?;
            let y = Tensor::from_vec(target, (b, shape[0], shape[1], shape[2]), &self.device)?;
            let map: HashMap<String, Tensor> = self.names.iter().cloned().zip(self.vars.iter().map(|v| v.as_tensor().clone())).collect();
            let g = UnetGraph { cfg: self.net.config(), params: &map };
            let loss = (g.forward(&x, &e)? - y)?.sqr()?.mean_all()?;
            loss_and_grads(&loss, &self.vars)
        })()
        .map_err(backend("computing the U-Net DSM loss and its gradient"))?;
        self.moments.update(&ADAM, &mut self.params, &grads, self.step, self.recipe.lr_at(self.step), self.recipe.weight_decay);
        set_vars(&self.vars, &self.params, &self.shapes, &self.device)?;
        self.step += 1;
        Ok(loss)
    }

    /// The network as it is now.
    pub fn network(&self) -> Result<ScoreUnet> {
        ScoreUnet::from_f32(self.recipe.arch.clone(), self.net.info().clone(), self.params.clone())
    }

    /// Write the network with `train_step` in its metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert("train_step".to_string(), self.step.to_string());
        self.network()?.save_with(path, &meta, &[])
    }
}
