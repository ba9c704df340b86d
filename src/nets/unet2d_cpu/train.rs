//! Training the CPU `UNet2DModel`: its parameters under their diffusers names, PyTorch's default
//! initialisation, and the denoising score-matching loss with every parameter's gradient (the
//! forward and backward passes are the inference path's, in the parent module).

use rayon::prelude::*;

use super::{Level, Res, Tape, Unet2dCpu, Work, VJP_TEAM};
use crate::error::{Error, Result};
use crate::nets::header::backend;
use crate::nets::kernels::{Act, Conv, Grads, Lin, Norm, SelfAttention, Tensor2};
use crate::nets::unet2d::Unet2d;

impl Res {
    /// The resnet's modules under their diffusers names.
    fn modules<'a>(&'a mut self, p: &str, out: &mut Vec<(String, Module<'a>)>) {
        out.push((format!("{p}.norm1"), Module::Norm(&mut self.norm1)));
        out.push((format!("{p}.conv1"), Module::Conv(&mut self.conv1)));
        out.push((format!("{p}.time_emb_proj"), Module::Lin(&mut self.temb)));
        out.push((format!("{p}.norm2"), Module::Norm(&mut self.norm2)));
        out.push((format!("{p}.conv2"), Module::Conv(&mut self.conv2)));
        if let Some(c) = &mut self.shortcut {
            out.push((format!("{p}.conv_shortcut"), Module::Conv(c)));
        }
    }
}

/// A module with parameters, for walking the network.
enum Module<'a> {
    Conv(&'a mut Conv),
    Lin(&'a mut Lin),
    Norm(&'a mut Norm),
}

impl<'a> Module<'a> {
    fn id(&mut self) -> &mut usize {
        match self {
            Module::Conv(c) => &mut c.id,
            Module::Lin(l) => &mut l.id,
            Module::Norm(n) => &mut n.id,
        }
    }

    fn tensors(self) -> [Tensor2<'a>; 2] {
        match self {
            Module::Conv(c) => c.tensors(),
            Module::Lin(l) => l.tensors(),
            Module::Norm(n) => n.tensors(),
        }
    }
}

/// An attention block's modules under their diffusers names (the current naming).
fn attn_modules<'a>(a: &'a mut SelfAttention, p: &str, out: &mut Vec<(String, Module<'a>)>) {
    if let Some(n) = &mut a.norm {
        out.push((format!("{p}.group_norm"), Module::Norm(n)));
    }
    out.push((format!("{p}.to_q"), Module::Lin(&mut a.q)));
    out.push((format!("{p}.to_k"), Module::Lin(&mut a.k)));
    out.push((format!("{p}.to_v"), Module::Lin(&mut a.v)));
    out.push((format!("{p}.to_out.0"), Module::Lin(&mut a.out)));
}

impl Unet2dCpu {
    /// The modules with parameters under their diffusers names, in the network's parameter order, and
    /// the class embeddings (width, table) if any.
    #[allow(clippy::type_complexity)]
    fn modules(&mut self) -> (Vec<(String, Module<'_>)>, Option<(usize, &mut Vec<f32>)>) {
        let Unet2dCpu { conv_in, lin1, lin2, downs, mid, ups, norm_out, conv_out, class_emb, .. } = self;
        let mut out = vec![
            ("conv_in".to_string(), Module::Conv(conv_in)),
            ("time_embedding.linear_1".to_string(), Module::Lin(lin1)),
            ("time_embedding.linear_2".to_string(), Module::Lin(lin2)),
        ];
        fn blocks<'a>(out: &mut Vec<(String, Module<'a>)>, levels: &'a mut [Level], kind: &str, resample: &str) {
            for (i, blk) in levels.iter_mut().enumerate() {
                let p = format!("{kind}.{i}");
                for (j, r) in blk.resnets.iter_mut().enumerate() {
                    r.modules(&format!("{p}.resnets.{j}"), out);
                }
                for (j, a) in blk.attns.iter_mut().enumerate() {
                    attn_modules(a, &format!("{p}.attentions.{j}"), out);
                }
                if let Some(c) = &mut blk.resample {
                    out.push((format!("{p}.{resample}.0.conv"), Module::Conv(c)));
                }
            }
        }
        blocks(&mut out, downs, "down_blocks", "downsamplers");
        if let Some((first, a, second)) = mid {
            first.modules("mid_block.resnets.0", &mut out);
            if let Some(a) = a {
                attn_modules(a, "mid_block.attentions.0", &mut out);
            }
            second.modules("mid_block.resnets.1", &mut out);
        }
        blocks(&mut out, ups, "up_blocks", "upsamplers");
        out.push(("conv_norm_out".to_string(), Module::Norm(norm_out)));
        out.push(("conv_out".to_string(), Module::Conv(conv_out)));
        (out, class_emb.as_mut().map(|(dim, e)| (*dim, e)))
    }

    /// Number every module's tensors in the parameter order (the class embeddings last).
    pub(super) fn assign_ids(&mut self) {
        let mut n = 0;
        for (_, mut m) in self.modules().0 {
            *m.id() = n;
            n += 2;
        }
        self.class_id = n;
        self.param_sizes = self.parameters().iter().map(|(_, _, v)| v.len()).collect();
    }

    /// Every parameter tensor with its diffusers name, shape and values, in the parameter order (the
    /// order of [`Grads`]). Fourier time-projection weights are fixed, not parameters.
    pub fn parameters(&mut self) -> Vec<(String, Vec<usize>, &mut Vec<f32>)> {
        let (mods, class) = self.modules();
        let mut out = Vec::new();
        for (name, m) in mods {
            for (suffix, shape, v) in m.tensors() {
                out.push((format!("{name}.{suffix}"), shape, v));
            }
        }
        if let Some((dim, e)) = class {
            let k = e.len() / dim;
            out.push(("class_embedding.weight".to_string(), vec![k, dim], e));
        }
        out
    }

    /// The sizes of the parameter tensors, in the parameter order.
    pub fn parameter_sizes(&self) -> &[usize] {
        &self.param_sizes
    }

    /// A freshly initialised network of `cfg` (its `sample_size` gives the image size) with PyTorch's
    /// default initialisation, drawn from `rng`: convolution and linear weights and biases
    /// U(−1/√fan_in, 1/√fan_in), group norms γ = 1 and β = 0, class embeddings N(0, 1).
    pub fn init(cfg: crate::nets::unet2d::Unet2dConfig, rng: &mut crate::rng::Rng) -> Result<Self> {
        let (h, w) = cfg.sample_hw().ok_or_else(|| Error::param("sample_size", "missing", "the architecture needs the image size"))?;
        let vb = candle_nn::VarBuilder::zeros(candle_core::DType::F32, &candle_core::Device::Cpu);
        let net = Unet2d::new(cfg, vb).map_err(backend("building the UNet2DModel"))?;
        let mut m = Unet2dCpu::new(&net, h, w)?;
        let (mods, class) = m.modules();
        for (_, module) in mods {
            let is_norm = matches!(module, Module::Norm(_));
            let [(_, ws, wv), (_, _, bv)] = module.tensors();
            if is_norm {
                wv.fill(1.0);
                bv.fill(0.0);
            } else {
                let fan_in: usize = ws[1..].iter().product();
                let bound = 1.0 / (fan_in as f64).sqrt();
                for v in wv.iter_mut().chain(bv.iter_mut()) {
                    *v = ((2.0 * crate::rng::uniform(rng) - 1.0) * bound) as f32;
                }
            }
        }
        if let Some((_, e)) = class {
            let mut z = vec![0.0; e.len()];
            crate::rng::fill_normal(rng, &mut z);
            e.iter_mut().zip(&z).for_each(|(a, &b)| *a = b as f32);
        }
        Ok(m)
    }

    /// Replace the parameters by `values` (the order and sizes of [`Self::parameters`]).
    pub fn set_parameters(&mut self, values: &[Vec<f32>]) {
        for ((_, _, dst), src) in self.parameters().into_iter().zip(values) {
            dst.copy_from_slice(src);
        }
    }

    /// Denoising score matching on a batch: the mean over images and pixels of (net(x_t, t) − ε)², and
    /// its gradient with respect to every parameter (the order of [`Self::parameters`]). Teams of
    /// four images run forward and backward on one thread, four teams per gradient accumulator, the
    /// accumulators summed in order: the same bits on any thread count. With `weights` (one finite value
    /// per image), image i's squared errors count `weights[i]` times.
    pub fn loss_and_grads(&self, xt: &[f32], t: &[f32], class_labels: Option<&[u32]>, target: &[f32], weights: Option<&[f32]>) -> Result<(f64, Grads)> {
        let (di, dout) = self.sizes();
        self.check(xt, t, class_labels, target)?;
        if let Some(w) = weights {
            if w.len() != t.len() || w.iter().any(|v| !v.is_finite()) {
                return Err(Error::param("weights", format!("{} values", w.len()), format!("one finite weight per image ({})", t.len())));
            }
        }
        let n = (t.len() * dout) as f64;
        let slot = 4 * VJP_TEAM;
        let parts: Vec<(f64, Grads)> = xt
            .par_chunks(slot * di)
            .zip(target.par_chunks(slot * dout))
            .enumerate()
            .map_init(Work::default, |ws, (si, (xs, ys))| {
                let mut g = Grads::zeros(&self.param_sizes);
                let mut sq = 0.0f64;
                for (j, (xi, yi)) in xs.chunks(VJP_TEAM * di).zip(ys.chunks(VJP_TEAM * dout)).enumerate() {
                    let start = si * slot + j * VJP_TEAM;
                    let r = start..start + xi.len() / di;
                    let class = class_labels.map(|l| &l[r.clone()]);
                    let mut tape = Tape { recs: Vec::new(), keep_inputs: true };
                    let mut y = vec![0.0f32; yi.len()];
                    self.forward_team(xi, &t[r.clone()], class, &mut y, ws, Some(&mut tape));
                    let v: Vec<f32> = y
                        .iter()
                        .zip(yi)
                        .enumerate()
                        .map(|(k, (p, e))| {
                            let d = p - e;
                            let w = weights.map_or(1.0, |w| w[start + k / dout] as f64);
                            sq += w * (d as f64) * (d as f64);
                            (2.0 * w * d as f64 / n) as f32
                        })
                        .collect();
                    self.backward_team(tape, &v, &t[r], class, &mut [], ws, Some(&mut g));
                }
                (sq, g)
            })
            .collect();
        let mut total = Grads::zeros(&self.param_sizes);
        let mut sq = 0.0;
        for (s, g) in &parts {
            sq += s;
            total.add(g);
        }
        Ok((sq / n, total))
    }

    /// The time (and class) embedding's parameter gradients for the embedding gradients `demb`.
    pub(super) fn embedding_backward(&self, t: &[f32], class: Option<&[u32]>, demb: &[Vec<f32>], g: &mut Grads) {
        for (i, de) in demb.iter().enumerate() {
            let (feat, _) = self.time.features(&t[i..i + 1]);
            let h1 = self.lin1.vec(&feat, None);
            let dh1 = self.lin2.vec_backward(&h1, Some(Act::Silu), de, Some(g));
            self.lin1.vec_backward(&feat, None, &dh1, Some(g));
            if let (Some((dim, _)), Some(l)) = (&self.class_emb, class) {
                let l = l[i] as usize;
                g.0[self.class_id][l * dim..(l + 1) * dim].iter_mut().zip(de).for_each(|(a, &b)| *a += b);
            }
        }
    }
}
