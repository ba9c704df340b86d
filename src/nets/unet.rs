//! A small time-conditioned U-Net for images (file kind `score_unet`), built from candle ops whose
//! input gradients candle computes correctly (matmul, pad, narrow, cat/stack, reshape, broadcast,
//! sum/mean, sqr, sqrt, SiLU).
//!
//! Architecture ([`UnetConfig`], channels c_0 … c_{L−1}, data [C, H, W] with H, W divisible by 2^{L−1}):
//!
//! ```text
//! temb  = silu(W_t e(t) + b_t)                             e(t): 2K sinusoidal features as in the MLP
//! h     = conv3x3(x)                                       C → c_0
//! down l = 0 … L−1: h = ResBlock(h, temb) → skip_l; avg-pool 2×2 except at the last level
//! mid:  h = ResBlock(h, temb)
//! up   l = L−1 … 0: h = ResBlock(cat(h, skip_l), temb); nearest 2× upsample except at level 0
//! ε̂     = conv3x3(silu(GroupNorm(h)))                      c_0 → C
//! ResBlock(x) = conv3x3(silu(GN(conv3x3(silu(GN(x))) + W_b temb + b_b))) + skip(x)  (skip: 1×1 when
//!               the channel count changes)
//! s     = −ε̂ / σ_t                                         (noise prediction, maths §1)
//! ```
//!
//! Speed: the graph runs channels-last ([B, H, W, C]) so that a 3×3 convolution is one im2col (a custom
//! op with an exact col2im backward, [`crate::nets::ops`]) and one 2-D matmul, forward and backward; candle's
//! own conv2d backward goes through conv_transpose2d, which is many times slower on the CPU.
//! GroupNorm is a custom op with a hand-written exact backward (candle's fused norms record wrong or
//! no input gradients; the plain-op version was dominated by broadcasts). Upsampling is reshape + broadcast (its backward is a sum) and
//! downsampling a 2×2 mean. Weights are stored in the PyTorch layout ([out, in, 3, 3] for
//! convolutions, [out, in] for linear layers).
//!
//! Inference ([`ScoreModel`]) runs the same candle graph in f32 on the whole batch
//! (`parallel_chunks() = false`); the VJP runs candle's backward with the weights as constants, so no
//! weight gradients are kept.
//!
//! File metadata: `kind` = `score_unet`; `arch` = JSON [`UnetConfig`]; `data_shape` (e.g. `[1,28,28]`);
//! `beta_min`, `beta_max`; `parameterization` = `epsilon`; `trained_on`; optional `recipe`, `name`,
//! `train_step`. Checkpoints may also hold `optim.*` tensors (ignored here).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::F32Tensor;
use crate::model::ScoreModel;
use super::header::{backend, geometric_freqs, save_net, time_embedding, Header, NetInfo};
use crate::rng::{self, Rng};
use crate::schedule::VpSchedule;
use crate::io::tensors::TensorFile;

/// The `kind` of U-Net score-network files.
pub const KIND: &str = "score_unet";

/// Hyper-parameters of the U-Net (the `arch` metadata key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    /// Channels per resolution level (L ≥ 1 levels; each level halves the resolution).
    pub channels: Vec<usize>,
    /// GroupNorm groups (must divide every channel count).
    pub groups: usize,
    /// Width of the time embedding after its linear layer.
    pub time_dim: usize,
    /// Number of sinusoidal frequencies K (2K features).
    pub time_freqs: usize,
    /// Highest embedding frequency (the lowest is 1).
    pub max_freq: f64,
}

impl Default for UnetConfig {
    fn default() -> Self {
        UnetConfig { channels: vec![16, 32, 32], groups: 8, time_dim: 64, time_freqs: 16, max_freq: 200.0 }
    }
}

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug)]
enum Init {
    /// U(−1/√fan_in, 1/√fan_in) (PyTorch's default for conv and linear layers).
    Uniform(usize),
    Ones,
    Zeros,
}

impl UnetConfig {
    /// Range checks, given the data shape [C, H, W].
    pub fn check(&self, data_shape: &[usize]) -> std::result::Result<(), String> {
        if self.channels.is_empty() || self.channels.contains(&0) || self.groups == 0 || self.time_dim == 0 || self.time_freqs == 0 {
            return Err("channels (non-empty, each ≥ 1), groups, time_dim and time_freqs must be ≥ 1".into());
        }
        if let Some(c) = self.channels.iter().find(|&&c| c % self.groups != 0) {
            return Err(format!("groups = {} must divide every channel count (not {c})", self.groups));
        }
        if !(self.max_freq.is_finite() && self.max_freq >= 1.0) {
            return Err(format!("max_freq = {} must be finite and ≥ 1", self.max_freq));
        }
        use crate::limits::{MAX_FREQ, MAX_TIME_FREQS, MAX_WIDTH};
        const MAX_LEVELS: usize = 8;
        if self.channels.len() > MAX_LEVELS || self.channels.iter().chain([&self.time_dim]).any(|&c| c > MAX_WIDTH) || self.time_freqs > MAX_TIME_FREQS || self.max_freq > MAX_FREQ {
            return Err(format!(
                "at most {MAX_LEVELS} levels, {MAX_WIDTH} channels (and time_dim), {MAX_TIME_FREQS} time_freqs and max_freq {MAX_FREQ}; found {} levels, channels {:?}, time_dim {}, time_freqs {}, max_freq {}",
                self.channels.len(), self.channels, self.time_dim, self.time_freqs, self.max_freq
            ));
        }
        if data_shape.len() != 3 || data_shape.contains(&0) {
            return Err(format!("data_shape {data_shape:?}: a U-Net needs images [C, H, W]"));
        }
        let f = 1 << (self.channels.len() - 1);
        if !data_shape[1].is_multiple_of(f) || !data_shape[2].is_multiple_of(f) {
            return Err(format!("{} levels need H and W divisible by {f}; data_shape is {data_shape:?}", self.channels.len()));
        }
        Ok(())
    }

    /// Number of time-embedding features (2K).
    pub fn time_features(&self) -> usize {
        2 * self.time_freqs
    }

    /// The embedding frequencies ω_k = max_freq^{k/(K−1)}, as the MLP's.
    pub fn freqs(&self) -> Vec<f64> {
        geometric_freqs(self.time_freqs, self.max_freq)
    }

    fn res_specs(&self, p: &str, cin: usize, cout: usize, v: &mut Vec<(String, Vec<usize>, Init)>) {
        let t = self.time_dim;
        v.push((format!("{p}.norm1.weight"), vec![cin], Init::Ones));
        v.push((format!("{p}.norm1.bias"), vec![cin], Init::Zeros));
        v.push((format!("{p}.conv1.weight"), vec![cout, cin, 3, 3], Init::Uniform(9 * cin)));
        v.push((format!("{p}.conv1.bias"), vec![cout], Init::Uniform(9 * cin)));
        v.push((format!("{p}.time.weight"), vec![cout, t], Init::Uniform(t)));
        v.push((format!("{p}.time.bias"), vec![cout], Init::Uniform(t)));
        v.push((format!("{p}.norm2.weight"), vec![cout], Init::Ones));
        v.push((format!("{p}.norm2.bias"), vec![cout], Init::Zeros));
        v.push((format!("{p}.conv2.weight"), vec![cout, cout, 3, 3], Init::Uniform(9 * cout)));
        v.push((format!("{p}.conv2.bias"), vec![cout], Init::Uniform(9 * cout)));
        if cin != cout {
            v.push((format!("{p}.skip.weight"), vec![cout, cin], Init::Uniform(cin)));
            v.push((format!("{p}.skip.bias"), vec![cout], Init::Uniform(cin)));
        }
    }

    fn specs(&self, data_shape: &[usize]) -> Vec<(String, Vec<usize>, Init)> {
        let cin = data_shape[0];
        let ch = &self.channels;
        let l = ch.len();
        let (t, k2) = (self.time_dim, self.time_features());
        let mut v = vec![
            ("time.weight".to_string(), vec![t, k2], Init::Uniform(k2)),
            ("time.bias".to_string(), vec![t], Init::Uniform(k2)),
            ("conv_in.weight".to_string(), vec![ch[0], cin, 3, 3], Init::Uniform(9 * cin)),
            ("conv_in.bias".to_string(), vec![ch[0]], Init::Uniform(9 * cin)),
        ];
        let mut prev = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            self.res_specs(&format!("down.{i}"), prev, c, &mut v);
            prev = c;
        }
        self.res_specs("mid", prev, prev, &mut v);
        for i in (0..l).rev() {
            self.res_specs(&format!("up.{i}"), prev + ch[i], ch[i], &mut v);
            prev = ch[i];
        }
        v.push(("out.norm.weight".into(), vec![ch[0]], Init::Ones));
        v.push(("out.norm.bias".into(), vec![ch[0]], Init::Zeros));
        v.push(("out.conv.weight".into(), vec![cin, ch[0], 3, 3], Init::Uniform(9 * ch[0])));
        v.push(("out.conv.bias".into(), vec![cin], Init::Uniform(9 * ch[0])));
        v
    }

    /// Parameter names and shapes, in file order, for data [C, H, W].
    pub fn param_shapes(&self, data_shape: &[usize]) -> Vec<(String, Vec<usize>)> {
        self.specs(data_shape).into_iter().map(|(n, s, _)| (n, s)).collect()
    }

    /// Number of trainable parameters.
    pub fn parameters(&self, data_shape: &[usize]) -> usize {
        self.param_shapes(data_shape).iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// The candle graph of the U-Net, over a parameter lookup (constants for inference, variables for
/// training). Inputs: `x` [B, C, H, W], `emb` [B, 2K] (the sinusoidal features of each item's t).
pub struct UnetGraph<'a> {
    pub cfg: &'a UnetConfig,
    pub params: &'a HashMap<String, Tensor>,
}

fn silu(x: &Tensor) -> candle_core::Result<Tensor> {
    // candle's SiLU unary; its input gradient is covered by the finite-difference tests.
    x.silu()
}

impl UnetGraph<'_> {
    fn p(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.params.get(name).ok_or_else(|| candle_core::Error::Msg(format!("missing parameter {name}")))
    }

    /// 3×3 convolution, padding 1, channels-last: x [B, H, W, Ci] → [B, H, W, Co] (im2col + matmul).
    fn conv3(&self, x: &Tensor, prefix: &str) -> candle_core::Result<Tensor> {
        let w = self.p(&format!("{prefix}.weight"))?;
        let b = self.p(&format!("{prefix}.bias"))?;
        crate::nets::ops::conv3x3_nhwc(x, w, b)
    }

    /// 1×1 convolution (a linear map of the channels), channels-last.
    fn conv1(&self, x: &Tensor, prefix: &str) -> candle_core::Result<Tensor> {
        let w = self.p(&format!("{prefix}.weight"))?;
        let b = self.p(&format!("{prefix}.bias"))?;
        let (bs, h, wd, ci) = x.dims4()?;
        let co = w.dim(0)?;
        x.reshape((bs * h * wd, ci))?.matmul(&w.t()?)?.broadcast_add(b)?.reshape((bs, h, wd, co))
    }

    /// GroupNorm (eps 1e-5) with its affine map, channels-last ([`crate::nets::ops::GroupNorm`]: exact
    /// hand-written backward, checked against finite differences in tests/unet.rs).
    fn group_norm(&self, x: &Tensor, prefix: &str) -> candle_core::Result<Tensor> {
        let gn = crate::nets::ops::GroupNorm { groups: self.cfg.groups, eps: 1e-5 };
        x.contiguous()?.apply_op3(self.p(&format!("{prefix}.weight"))?, self.p(&format!("{prefix}.bias"))?, gn)
    }

    fn res_block(&self, x: &Tensor, temb: &Tensor, p: &str) -> candle_core::Result<Tensor> {
        let h = self.conv3(&silu(&self.group_norm(x, &format!("{p}.norm1"))?)?, &format!("{p}.conv1"))?;
        let (bs, co) = (h.dim(0)?, h.dim(3)?);
        let tw = self.p(&format!("{p}.time.weight"))?;
        let tb = self.p(&format!("{p}.time.bias"))?;
        let tproj = temb.matmul(&tw.t()?)?.broadcast_add(tb)?.reshape((bs, 1, 1, co))?;
        let h = h.broadcast_add(&tproj)?;
        let h = self.conv3(&silu(&self.group_norm(&h, &format!("{p}.norm2"))?)?, &format!("{p}.conv2"))?;
        let skip = if self.params.contains_key(&format!("{p}.skip.weight")) { self.conv1(x, &format!("{p}.skip"))? } else { x.clone() };
        h + skip
    }

    /// ε̂ for `x` [B, C, H, W] and time features `emb` [B, 2K]; returns [B, C, H, W].
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> candle_core::Result<Tensor> {
        let l = self.cfg.channels.len();
        let temb = silu(&emb.matmul(&self.p("time.weight")?.t()?)?.broadcast_add(self.p("time.bias")?)?)?;
        let x = x.permute((0, 2, 3, 1))?;
        let mut h = self.conv3(&x, "conv_in")?;
        let mut skips = Vec::with_capacity(l);
        for i in 0..l {
            h = self.res_block(&h, &temb, &format!("down.{i}"))?;
            skips.push(h.clone());
            if i + 1 < l {
                let (bs, hh, ww, c) = h.dims4()?;
                h = (h.reshape((bs, hh / 2, 2, ww / 2, 2, c))?.sum_keepdim(4)?.sum_keepdim(2)? * 0.25)?.reshape((bs, hh / 2, ww / 2, c))?;
            }
        }
        h = self.res_block(&h, &temb, "mid")?;
        for i in (0..l).rev() {
            h = Tensor::cat(&[&h, &skips[i]], 3)?;
            h = self.res_block(&h, &temb, &format!("up.{i}"))?;
            if i > 0 {
                let (bs, hh, ww, c) = h.dims4()?;
                h = h.reshape((bs, hh, 1, ww, 1, c))?.broadcast_as((bs, hh, 2, ww, 2, c))?.contiguous()?.reshape((bs, 2 * hh, 2 * ww, c))?;
            }
        }
        let h = self.conv3(&silu(&self.group_norm(&h, "out.norm")?)?, "out.conv")?;
        h.permute((0, 3, 1, 2))?.contiguous()
    }
}

/// A loaded (or freshly initialised) U-Net score network; a [`ScoreModel`].
pub struct ScoreUnet {
    info: NetInfo,
    cfg: UnetConfig,
    names: Vec<(String, Vec<usize>)>,
    values: Vec<Vec<f32>>,
    params: HashMap<String, Tensor>,
    freqs: Vec<f64>,
    device: Device,
}

impl ScoreUnet {
    /// A freshly initialised network (PyTorch-style uniform fan-in bounds, GroupNorm γ = 1, β = 0),
    /// drawn from our seeded stream.
    pub fn init(cfg: UnetConfig, info: NetInfo, rng: &mut Rng) -> Result<Self> {
        cfg.check(&info.data_shape).map_err(|r| Error::param("arch", serde_json::to_string(&cfg).unwrap_or_default(), r))?;
        let values = cfg
            .specs(&info.data_shape)
            .into_iter()
            .map(|(_, s, init)| {
                let n: usize = s.iter().product();
                match init {
                    Init::Ones => vec![1.0; n],
                    Init::Zeros => vec![0.0; n],
                    Init::Uniform(fan) => {
                        let b = 1.0 / (fan as f64).sqrt();
                        (0..n).map(|_| ((2.0 * rng::uniform(rng) - 1.0) * b) as f32).collect()
                    }
                }
            })
            .collect::<Vec<_>>();
        Self::from_f32(cfg, info, values)
    }

    /// Build from f32 parameters in the order of [`UnetConfig::param_shapes`].
    pub fn from_f32(cfg: UnetConfig, info: NetInfo, values: Vec<Vec<f32>>) -> Result<Self> {
        cfg.check(&info.data_shape).map_err(|r| Error::param("arch", serde_json::to_string(&cfg).unwrap_or_default(), r))?;
        let names = cfg.param_shapes(&info.data_shape);
        if values.len() != names.len() {
            return Err(Error::param("parameters", values.len(), format!("expected {} tensors", names.len())));
        }
        let device = Device::Cpu;
        let mut params = HashMap::new();
        for ((n, s), v) in names.iter().zip(&values) {
            if v.len() != s.iter().product::<usize>() {
                return Err(Error::param(n.clone(), format!("{} values", v.len()), format!("expected shape {s:?}")));
            }
            let t = Tensor::from_slice(v, s.as_slice(), &device).map_err(backend("creating the network's tensors"))?;
            params.insert(n.clone(), t);
        }
        Ok(ScoreUnet { freqs: cfg.freqs(), info, cfg, names, values, params, device })
    }

    /// Parameters with names and shapes, in file order.
    pub fn to_f32(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.names.iter().zip(&self.values).map(|((n, s), v)| (n.clone(), s.clone(), v.clone())).collect()
    }

    /// The architecture.
    pub fn config(&self) -> &UnetConfig {
        &self.cfg
    }

    /// Data source, schedule and recipe.
    pub fn info(&self) -> &NetInfo {
        &self.info
    }

    /// The candle graph over this network's (constant) parameters.
    pub fn graph(&self) -> UnetGraph<'_> {
        UnetGraph { cfg: &self.cfg, params: &self.params }
    }

    /// The sinusoidal time features e(t) (2K values).
    pub fn embed(&self, t: f64) -> Vec<f64> {
        let mut e = vec![0.0; self.cfg.time_features()];
        time_embedding(&self.freqs, t, &mut e);
        e
    }

    /// Open a `score_unet` file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_file(&TensorFile::open(path)?)
    }

    /// Build from an opened file, checking every metadata key against the tensors.
    pub fn from_file(f: &TensorFile) -> Result<Self> {
        let path = f.path();
        let h = Header::open(f, KIND)?;
        let (cfg, arch_s) = h.arch::<UnetConfig>()?;
        let (data_shape, shape_s) = h.data_shape("[1,28,28]")?;
        cfg.check(&data_shape).map_err(|r| h.err("arch", r))?;
        let info = h.info(data_shape)?;
        let mut expected = BTreeSet::new();
        let mut values = Vec::new();
        for (name, want) in cfg.param_shapes(&info.data_shape) {
            let (shape, vals) = f.tensor_f64(&name)?;
            if shape != want {
                return Err(Error::TensorShape {
                    path: path.into(),
                    tensor: name,
                    found: shape,
                    expected: format!("{want:?} from metadata arch = {arch_s} and data_shape = {shape_s}"),
                });
            }
            if vals.iter().any(|v| !v.is_finite()) {
                return Err(h.err("weights", format!("tensor {name} holds non-finite values")));
            }
            values.push(vals.iter().map(|&v| v as f32).collect::<Vec<f32>>());
            expected.insert(name);
        }
        if let Some(extra) = f.names().into_iter().find(|n| !expected.contains(n) && !n.starts_with("optim.")) {
            return Err(h.err("arch", format!("arch = {arch_s} does not use tensor `{extra}` held by the file")));
        }
        Self::from_f32(cfg, info, values)
    }

    /// The header metadata this network is written with.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.info.metadata(KIND, serde_json::to_string(&self.cfg).expect("plain struct"))
    }

    /// Write the network (F32), atomically, with extra metadata and tensors (checkpoint state).
    pub fn save_with(&self, path: &Path, extra_meta: &HashMap<String, String>, extra_tensors: &[F32Tensor<'_>]) -> Result<()> {
        let tensors = self.names.iter().zip(&self.values).map(|((n, s), v)| F32Tensor { name: n, shape: s.clone(), data: v }).collect();
        save_net(path, tensors, self.metadata(), extra_meta, extra_tensors)
    }

    /// Write the network (F32) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, &HashMap::new(), &[])
    }

    fn inputs(&self, x: &[f64], t: f64, n: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let s = &self.info.data_shape;
        let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let xt = Tensor::from_vec(xs, (n, s[0], s[1], s[2]), &self.device)?;
        let e: Vec<f32> = self.embed(t).iter().map(|&v| v as f32).collect();
        let k2 = e.len();
        let et = Tensor::from_vec(e, (1, k2), &self.device)?.broadcast_as((n, k2))?.contiguous()?;
        Ok((xt, et))
    }

    /// The network's noise prediction ε̂(x, t) for a batch (f32 arithmetic).
    pub fn predict_noise(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        let n = self.info.check_batch(x, out.len())?;
        if n == 0 {
            return Ok(());
        }
        let y = (|| -> candle_core::Result<Vec<f32>> {
            let (xt, et) = self.inputs(x, t, n)?;
            self.graph().forward(&xt, &et)?.flatten_all()?.to_vec1::<f32>()
        })()
        .map_err(backend("the U-Net forward pass"))?;
        out.iter_mut().zip(y).for_each(|(o, v)| *o = v as f64);
        Ok(())
    }
}

impl ScoreModel for ScoreUnet {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn data_shape(&self) -> &[usize] {
        &self.info.data_shape
    }

    fn schedule(&self) -> VpSchedule {
        self.info.schedule.clone()
    }

    fn score(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        let inv = -1.0 / self.info.sigma(t)?;
        self.predict_noise(x, t, out)?;
        out.iter_mut().for_each(|v| *v *= inv);
        Ok(())
    }

    fn has_vjp(&self) -> bool {
        true
    }

    /// J_s(x)ᵀ v = −(1/σ_t) ∇_x (v · ε̂(x)) by candle's backward (weights are constants).
    fn vjp(&self, x: &[f64], t: f64, v: &[f64], out: &mut [f64]) -> Result<()> {
        let n = self.info.check_batch(x, out.len())?;
        self.info.check_batch(v, out.len())?;
        if n == 0 {
            return Ok(());
        }
        let inv = -1.0 / self.info.sigma(t)?;
        let g = (|| -> candle_core::Result<Vec<f32>> {
            let (xt, et) = self.inputs(x, t, n)?;
            let xv = candle_core::Var::from_tensor(&xt)?;
            let vt = Tensor::from_vec(v.iter().map(|&a| a as f32).collect::<Vec<f32>>(), xt.shape(), &self.device)?;
            let y = self.graph().forward(xv.as_tensor(), &et)?;
            let grads = (y * vt)?.sum_all()?.backward()?;
            let g = grads.get(xv.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no input gradient recorded".into()))?;
            g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
        })()
        .map_err(backend("the U-Net input gradient"))?;
        out.iter_mut().zip(g).for_each(|(o, v)| *o = v as f64 * inv);
        Ok(())
    }

    fn parallel_chunks(&self) -> bool {
        // candle parallelises internally; the engine passes the whole batch.
        false
    }
}
