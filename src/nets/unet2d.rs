//! diffusers' `UNet2DModel` in candle, built from its `config.json` with diffusers' defaults for absent
//! keys, and loaded from `diffusion_pytorch_model.safetensors` under diffusers' tensor names (both the
//! current `to_q/to_k/to_v/to_out.0` attention naming and the older `query/key/value/proj_attn`).
//!
//! Supported: `DownBlock2D`, `AttnDownBlock2D`, `UpBlock2D`, `AttnUpBlock2D`, `UNetMidBlock2D` or no mid
//! block, `add_attention`, `attention_head_dim` (null: one head per block), `norm_num_groups`,
//! `attn_norm_num_groups`, `norm_eps`, `act_fn` (silu/swish, mish, gelu, relu), `resnet_time_scale_shift`
//! (`default`, `scale_shift`), `time_embedding_type` (`positional`, `fourier`), `time_embedding_dim`,
//! `flip_sin_to_cos`, `freq_shift`, `center_input_sample`, `downsample_padding` (0 pads right and
//! bottom), `downsample_type`/`upsample_type` `conv`, `mid_block_scale_factor`, and class conditioning by
//! `num_class_embeds` (an embedding added to the time embedding). Anything else that changes the
//! computation is refused by name. The forward pass follows `diffusers/models/unets/unet_2d.py` and its
//! blocks line by line (see the fixture tests in `tests/diffusers.rs`, which compares it with diffusers'
//! own outputs).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, GroupNorm, Linear, VarBuilder};
use crate::nets::kernels::Act;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::nets::header::{backend, candle_message};

fn d_in() -> usize {
    3
}
fn d_pos() -> String {
    "positional".into()
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2D".into())
}
fn d_channels() -> Vec<usize> {
    vec![224, 448, 672, 896]
}
fn d_layers() -> usize {
    2
}
fn d_one() -> f64 {
    1.0
}
fn d_pad() -> usize {
    1
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_head() -> Option<usize> {
    Some(8)
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_default() -> String {
    "default".into()
}

/// `UNet2DModel`'s `config.json`: every key that changes the computation, with diffusers' defaults.
/// Keys it does not know (`_class_name`, `_diffusers_version`, `dropout`, `sample_size`, ...) are ignored.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct Unet2dConfig {
    #[serde(default = "d_in")]
    pub in_channels: usize,
    #[serde(default = "d_in")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_pos")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: usize,
    #[serde(default = "d_one")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_pad")]
    pub downsample_padding: usize,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_head")]
    pub attention_head_dim: Option<usize>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub attn_norm_num_groups: Option<usize>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// `sample_size` (int or [h, w]); the data shape comes from it.
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
}

/// The JSON object in `text`, read from `path` (a diffusers config file); errors name the file and `key`.
pub(crate) fn json_object(path: &Path, key: &str, text: &str) -> Result<serde_json::Value> {
    let merr = |reason: String| Error::Metadata { path: path.into(), key: key.into(), reason };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| merr(format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(merr("must be a JSON object".into()));
    }
    Ok(v)
}

impl Unet2dConfig {
    /// Parse and check a `config.json` (`path` names it in errors).
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        Self::from_value(path, json_object(path, "config", text)?)
    }

    /// Check a parsed `config.json` object (`path` names it in errors).
    pub fn from_value(path: &Path, v: serde_json::Value) -> Result<Self> {
        let merr = |key: &str, reason: String| Error::Metadata { path: path.into(), key: key.into(), reason };
        let c: Unet2dConfig = serde_json::from_value(v).map_err(|e| merr("config", format!("not a UNet2DModel config: {e}")))?;
        let n = c.block_out_channels.len();
        if n == 0 || n > 8 || c.down_block_types.len() != n || c.up_block_types.len() != n {
            return Err(merr("block_out_channels", format!("{n} levels with {} down and {} up blocks: need 1 to 8 levels and one block of each per level", c.down_block_types.len(), c.up_block_types.len())));
        }
        let lim = crate::limits::MAX_WIDTH;
        if c.block_out_channels.iter().any(|&ch| ch == 0 || ch > lim) || c.in_channels == 0 || c.out_channels == 0 || c.in_channels > lim || c.out_channels > lim {
            return Err(merr("block_out_channels", format!("channel counts must be 1 to {lim}")));
        }
        if c.layers_per_block == 0 || c.layers_per_block > 16 {
            return Err(merr("layers_per_block", format!("{} is outside 1 to 16", c.layers_per_block)));
        }
        if c.norm_num_groups == 0 || c.block_out_channels.iter().any(|ch| ch % c.norm_num_groups != 0) {
            return Err(merr("norm_num_groups", format!("{} must divide every channel count {:?}", c.norm_num_groups, c.block_out_channels)));
        }
        if let Some(h) = c.attention_head_dim {
            if h == 0 || c.block_out_channels.iter().any(|ch| ch % h != 0) {
                return Err(merr("attention_head_dim", format!("{h} must divide every channel count {:?}", c.block_out_channels)));
            }
        }
        for (key, v) in [("down_block_types", &c.down_block_types), ("up_block_types", &c.up_block_types)] {
            let ok: &[&str] = if key == "down_block_types" { &["DownBlock2D", "AttnDownBlock2D"] } else { &["UpBlock2D", "AttnUpBlock2D"] };
            if let Some(b) = v.iter().find(|b| !ok.contains(&b.as_str())) {
                return Err(merr(key, format!("`{b}` is not supported (supported: {})", ok.join(", "))));
            }
        }
        if let Some(m) = c.mid_block_type.as_deref().filter(|m| *m != "UNetMidBlock2D") {
            return Err(merr("mid_block_type", format!("`{m}` is not supported (UNetMidBlock2D or null)")));
        }
        let checks: [(&str, &str, &[&str]); 5] = [
            ("time_embedding_type", &c.time_embedding_type, &["positional", "fourier"]),
            ("resnet_time_scale_shift", &c.resnet_time_scale_shift, &["default", "scale_shift"]),
            ("act_fn", &c.act_fn, &["silu", "swish", "mish", "gelu", "relu"]),
            ("downsample_type", &c.downsample_type, &["conv"]),
            ("upsample_type", &c.upsample_type, &["conv"]),
        ];
        for (key, v, ok) in checks {
            if !ok.contains(&v) {
                return Err(merr(key, format!("`{v}` is not supported (supported: {})", ok.join(", "))));
            }
        }
        if let Some(t) = &c.class_embed_type {
            return Err(merr("class_embed_type", format!("`{t}` is not supported (class conditioning by num_class_embeds only)")));
        }
        if c.num_class_embeds.is_some_and(|k| k == 0 || k > 1 << 20) {
            return Err(merr("num_class_embeds", "must be 1 to 2^20".into()));
        }
        if !(c.norm_eps.is_finite() && c.norm_eps > 0.0) || !(c.mid_block_scale_factor.is_finite() && c.mid_block_scale_factor > 0.0) || !c.freq_shift.is_finite() {
            return Err(merr("norm_eps / mid_block_scale_factor / freq_shift", "must be finite (and the first two > 0)".into()));
        }
        if c.downsample_padding > 1 {
            return Err(merr("downsample_padding", format!("{} is not supported (0 or 1)", c.downsample_padding)));
        }
        Ok(c)
    }

    /// The image size [h, w] from `sample_size`, if given.
    pub fn sample_hw(&self) -> Option<(usize, usize)> {
        match self.sample_size.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64().map(|v| (v as usize, v as usize)),
            serde_json::Value::Array(a) if a.len() == 2 => Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)),
            _ => None,
        }
    }

    fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(self.block_out_channels[0] * 4)
    }
}

/// `act` on a tensor.
fn act_t(act: Act, x: &Tensor) -> candle_core::Result<Tensor> {
    match act {
        Act::Silu => x.silu(),
        Act::Gelu => x.gelu_erf(),
        Act::Relu => x.relu(),
        // x · tanh(softplus(x)), softplus(x) = ln(1 + eˣ) computed stably as max(x, 0) + ln(1 + e^−|x|).
        Act::Mish => {
            let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            x * sp.tanh()?
        }
    }
}

/// A group norm whose parameters stay readable (candle's `GroupNorm` hides them).
pub(super) struct GNorm {
    gn: GroupNorm,
    pub(super) groups: usize,
    pub(super) eps: f64,
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
}

impl GNorm {
    fn new(groups: usize, ch: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(ch, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(ch, "bias", candle_nn::Init::Const(0.0))?;
        Ok(GNorm { gn: GroupNorm::new(weight.clone(), bias.clone(), ch, groups, eps)?, groups, eps, weight, bias })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.gn.forward(x)
    }
}

pub(super) struct Resnet {
    pub(super) norm1: GNorm,
    pub(super) conv1: Conv2d,
    pub(super) temb: Linear,
    pub(super) norm2: GNorm,
    pub(super) conv2: Conv2d,
    pub(super) shortcut: Option<Conv2d>,
    pub(super) scale_shift: bool,
    pub(super) out_scale: f64,
    pub(super) act: Act,
}

fn conv(cin: usize, cout: usize, k: usize, padding: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    candle_nn::conv2d(cin, cout, k, Conv2dConfig { padding, stride, ..Default::default() }, vb)
}

impl Resnet {
    fn new(cin: usize, cout: usize, temb: usize, c: &Unet2dConfig, out_scale: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        let scale_shift = c.resnet_time_scale_shift == "scale_shift";
        let g = c.norm_num_groups;
        Ok(Resnet {
            norm1: GNorm::new(g, cin, c.norm_eps, vb.pp("norm1"))?,
            conv1: conv(cin, cout, 3, 1, 1, vb.pp("conv1"))?,
            temb: candle_nn::linear(temb, if scale_shift { 2 * cout } else { cout }, vb.pp("time_emb_proj"))?,
            norm2: GNorm::new(g, cout, c.norm_eps, vb.pp("norm2"))?,
            conv2: conv(cout, cout, 3, 1, 1, vb.pp("conv2"))?,
            shortcut: if cin != cout { Some(conv(cin, cout, 1, 0, 1, vb.pp("conv_shortcut"))?) } else { None },
            scale_shift,
            out_scale,
            act: Act::of(&c.act_fn),
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&act_t(self.act, &self.norm1.forward(x)?)?)?;
        let t = self.temb.forward(&act_t(self.act, temb)?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = if self.scale_shift {
            let ch = t.dim(1)? / 2;
            let (scale, shift) = (t.narrow(1, 0, ch)?, t.narrow(1, ch, ch)?);
            self.norm2.forward(&h)?.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?
        } else {
            self.norm2.forward(&h.broadcast_add(&t)?)?
        };
        let h = self.conv2.forward(&act_t(self.act, &h)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (skip + h)? / self.out_scale
    }
}

pub(super) struct Attn {
    pub(super) norm: Option<GNorm>,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) out: Linear,
    pub(super) heads: usize,
    pub(super) rescale: f64,
}

impl Attn {
    /// `groups` None: no group norm (the mid block with scale_shift and no attn_norm_num_groups).
    fn new(ch: usize, head_dim: usize, groups: Option<usize>, eps: f64, rescale: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        // Current naming, else the older one diffusers converts on load.
        let (q, k, v, o) = if vb.contains_tensor("to_q.weight") { ("to_q", "to_k", "to_v", "to_out.0") } else { ("query", "key", "value", "proj_attn") };
        Ok(Attn {
            norm: groups.map(|g| GNorm::new(g, ch, eps, vb.pp("group_norm"))).transpose()?,
            q: candle_nn::linear(ch, ch, vb.pp(q))?,
            k: candle_nn::linear(ch, ch, vb.pp(k))?,
            v: candle_nn::linear(ch, ch, vb.pp(v))?,
            out: candle_nn::linear(ch, ch, vb.pp(o))?,
            heads: ch / head_dim,
            rescale,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = match &self.norm {
            Some(n) => n.forward(x)?,
            None => x.clone(),
        };
        let seq = hn.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let dh = c / self.heads;
        let split = |t: Tensor| t.reshape((b, h * w, self.heads, dh))?.transpose(1, 2)?.contiguous();
        let q = split(self.q.forward(&seq)?)?;
        let k = split(self.k.forward(&seq)?)?;
        let v = split(self.v.forward(&seq)?)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?;
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b, h * w, c))?;
        let o = self.out.forward(&o)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        (o + x)? / self.rescale
    }
}

pub(super) struct DownBlock {
    pub(super) resnets: Vec<Resnet>,
    pub(super) attns: Vec<Attn>,
    pub(super) down: Option<Conv2d>,
    pub(super) pad_right: bool,
}

/// The heads' width of a block with `out` channels (`attention_head_dim`; null: one head).
fn head_dim(c: &Unet2dConfig, out: usize) -> usize {
    c.attention_head_dim.unwrap_or(out)
}

impl DownBlock {
    /// Down block `i` (`DownBlock2D` or `AttnDownBlock2D`): from the previous level's channels to
    /// `block_out_channels[i]`, with a strided conv unless it is the last level.
    fn new(c: &Unet2dConfig, i: usize, temb: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let ch = &c.block_out_channels;
        let (cin, cout) = (if i == 0 { ch[0] } else { ch[i - 1] }, ch[i]);
        let mut resnets = Vec::new();
        let mut attns = Vec::new();
        for j in 0..c.layers_per_block {
            resnets.push(Resnet::new(if j == 0 { cin } else { cout }, cout, temb, c, 1.0, vb.pp(format!("resnets.{j}")))?);
            if c.down_block_types[i] == "AttnDownBlock2D" {
                attns.push(Attn::new(cout, head_dim(c, cout), Some(c.norm_num_groups), c.norm_eps, 1.0, vb.pp(format!("attentions.{j}")))?);
            }
        }
        let down = if i + 1 < ch.len() { Some(conv(cout, cout, 3, c.downsample_padding, 2, vb.pp("downsamplers.0.conv"))?) } else { None };
        Ok(DownBlock { resnets, attns, down, pad_right: c.downsample_padding == 0 })
    }
}

pub(super) struct UpBlock {
    pub(super) resnets: Vec<Resnet>,
    pub(super) attns: Vec<Attn>,
    pub(super) up: Option<Conv2d>,
}

impl UpBlock {
    /// Up block `i` (`UpBlock2D` or `AttnUpBlock2D`), with diffusers' channel bookkeeping: its
    /// layers_per_block + 1 resnets take the previous block's output (first) or their own, concatenated
    /// with a skip of the matching down level (the last one: the next level down's).
    fn new(c: &Unet2dConfig, i: usize, temb: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let (prev, cout, cin) = (if i == 0 { rev[0] } else { rev[i - 1] }, rev[i], rev[(i + 1).min(n - 1)]);
        let layers = c.layers_per_block + 1;
        let mut resnets = Vec::new();
        let mut attns = Vec::new();
        for j in 0..layers {
            let skip = if j == layers - 1 { cin } else { cout };
            let rin = if j == 0 { prev } else { cout };
            resnets.push(Resnet::new(rin + skip, cout, temb, c, 1.0, vb.pp(format!("resnets.{j}")))?);
            if c.up_block_types[i] == "AttnUpBlock2D" {
                attns.push(Attn::new(cout, head_dim(c, cout), Some(c.norm_num_groups), c.norm_eps, 1.0, vb.pp(format!("attentions.{j}")))?);
            }
        }
        let up = if i + 1 < n { Some(conv(cout, cout, 3, 1, 1, vb.pp("upsamplers.0.conv"))?) } else { None };
        Ok(UpBlock { resnets, attns, up })
    }
}

pub(super) struct MidBlock {
    pub(super) first: Resnet,
    pub(super) attn: Option<Attn>,
    pub(super) second: Resnet,
}

impl MidBlock {
    /// `UNetMidBlock2D`: resnet, attention (unless `add_attention` is false), resnet, all scaled by
    /// `mid_block_scale_factor`; its attention's group norm is `attn_norm_num_groups`, else the resnets'
    /// groups with the default time shift and none with scale_shift (as diffusers builds it).
    fn new(c: &Unet2dConfig, temb: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let last = *c.block_out_channels.last().expect("checked non-empty");
        let groups = c.attn_norm_num_groups.or((c.resnet_time_scale_shift == "default").then_some(c.norm_num_groups));
        let s = c.mid_block_scale_factor;
        Ok(MidBlock {
            first: Resnet::new(last, last, temb, c, s, vb.pp("resnets.0"))?,
            attn: if c.add_attention { Some(Attn::new(last, head_dim(c, last), groups, c.norm_eps, s, vb.pp("attentions.0"))?) } else { None },
            second: Resnet::new(last, last, temb, c, s, vb.pp("resnets.1"))?,
        })
    }
}

/// The time embedding's input features.
#[derive(Clone)]
pub(super) enum TimeProj {
    Positional { dim: usize, flip: bool, shift: f64 },
    Fourier { weight: Vec<f32> },
}

impl TimeProj {
    /// The features of each of the labels `t` (row-major) and their number per label.
    pub(super) fn features(&self, t: &[f32]) -> (Vec<f32>, usize) {
        match self {
            TimeProj::Positional { dim, flip, shift } => {
                let half = dim / 2;
                let mut out = vec![0.0f32; t.len() * dim];
                for (b, &tb) in t.iter().enumerate() {
                    for i in 0..half {
                        // As diffusers: the exponent in f32, then t · exp(exponent) in f32.
                        let e = (-(10000f32).ln() * i as f32 / (half as f32 - *shift as f32)).exp();
                        let a = tb * e;
                        let (s, c) = (a.sin(), a.cos());
                        let (first, second) = if *flip { (c, s) } else { (s, c) };
                        out[b * dim + i] = first;
                        out[b * dim + half + i] = second;
                    }
                }
                (out, *dim)
            }
            TimeProj::Fourier { weight } => {
                let k = weight.len();
                let mut out = vec![0.0f32; t.len() * 2 * k];
                for (b, &tb) in t.iter().enumerate() {
                    let lt = tb.ln();
                    for (i, w) in weight.iter().enumerate() {
                        let a = lt * w * 2.0 * std::f32::consts::PI;
                        out[b * 2 * k + i] = a.sin();
                        out[b * 2 * k + k + i] = a.cos();
                    }
                }
                (out, 2 * k)
            }
        }
    }
}

/// A `UNet2DModel`, ready to evaluate.
pub struct Unet2d {
    pub(super) cfg: Unet2dConfig,
    pub(super) conv_in: Conv2d,
    pub(super) time: TimeProj,
    pub(super) lin1: Linear,
    pub(super) lin2: Linear,
    pub(super) class_emb: Option<Embedding>,
    pub(super) downs: Vec<DownBlock>,
    pub(super) mid: Option<MidBlock>,
    pub(super) ups: Vec<UpBlock>,
    pub(super) norm_out: GNorm,
    pub(super) conv_out: Conv2d,
    pub(super) device: Device,
}

impl Unet2d {
    /// Build the network of `cfg` from the tensors in `vb` (diffusers' names).
    pub fn new(cfg: Unet2dConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let c = &cfg;
        let ch = &c.block_out_channels;
        let n = ch.len();
        let temb = c.time_embed_dim();
        let device = vb.device().clone();
        let (time, tin) = if c.time_embedding_type == "fourier" {
            let w = vb.pp("time_proj").get(ch[0], "weight")?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            (TimeProj::Fourier { weight: w }, 2 * ch[0])
        } else {
            (TimeProj::Positional { dim: ch[0], flip: c.flip_sin_to_cos, shift: c.freq_shift }, ch[0])
        };
        let downs = (0..n).map(|i| DownBlock::new(c, i, temb, vb.pp(format!("down_blocks.{i}")))).collect::<candle_core::Result<Vec<_>>>()?;
        let mid = match &c.mid_block_type {
            None => None,
            Some(_) => Some(MidBlock::new(c, temb, vb.pp("mid_block"))?),
        };
        let ups = (0..n).map(|i| UpBlock::new(c, i, temb, vb.pp(format!("up_blocks.{i}")))).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Unet2d {
            conv_in: conv(c.in_channels, ch[0], 3, 1, 1, vb.pp("conv_in"))?,
            time,
            lin1: candle_nn::linear(tin, temb, vb.pp("time_embedding.linear_1"))?,
            lin2: candle_nn::linear(temb, temb, vb.pp("time_embedding.linear_2"))?,
            class_emb: c.num_class_embeds.map(|k| candle_nn::embedding(k, temb, vb.pp("class_embedding"))).transpose()?,
            downs,
            mid,
            ups,
            norm_out: GNorm::new(c.norm_num_groups, ch[0], c.norm_eps, vb.pp("conv_norm_out"))?,
            conv_out: conv(ch[0], c.out_channels, 3, 1, 1, vb.pp("conv_out"))?,
            device,
            cfg,
        })
    }

    /// Open `weights` (a `diffusion_pytorch_model.safetensors`) for `cfg`, in f32 on `device`. Missing
    /// or mis-shaped tensors are errors that name the file and the tensor.
    pub fn load(cfg: Unet2dConfig, weights: &Path, device: &Device) -> Result<Self> {
        let bytes = crate::io::read_limited(weights)?;
        // Validate the archive first, so a truncated file is reported as such.
        crate::io::tensors::TensorFile::from_bytes(weights, bytes.clone())?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(|e| Error::NotSafetensors { path: weights.into(), reason: candle_message(&e) })?;
        Unet2d::new(cfg, vb).map_err(|e| Error::Metadata {
            path: weights.into(),
            key: "tensors".into(),
            reason: format!("does not hold the network its config.json describes: {}", candle_message(&e)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Unet2dConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network's output for `x` [B, C, H, W] (f32) at timestep labels `t` (B values, fractional
    /// allowed; for `fourier`, noise levels) and class labels (B values) for class-conditional models.
    pub fn forward(&self, x: &Tensor, t: &[f32], class_labels: Option<&[u32]>) -> Result<Tensor> {
        let be = backend("evaluating the UNet2DModel");
        self.forward_inner(x, t, class_labels).map_err(be)
    }

    fn forward_inner(&self, x: &Tensor, t: &[f32], class_labels: Option<&[u32]>) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let b = x.dim(0)?;
        let x = if c.center_input_sample { ((x * 2.0)? - 1.0)? } else { x.clone() };
        let (feat, k) = self.time.features(t);
        let tf = Tensor::from_vec(feat, (b, k), &self.device)?;
        let mut emb = self.lin2.forward(&self.lin1.forward(&tf)?.silu()?)?;
        match (&self.class_emb, class_labels) {
            (Some(e), Some(l)) => emb = (emb + e.forward(&Tensor::from_slice(l, b, &self.device)?)?)?,
            (Some(_), None) => candle_core::bail!("this model is class-conditional: give a class label"),
            (None, Some(_)) => candle_core::bail!("this model is not class-conditional: leave the class label out"),
            (None, None) => {}
        }
        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.clone()];
        for blk in &self.downs {
            for (j, r) in blk.resnets.iter().enumerate() {
                h = r.forward(&h, &emb)?;
                if let Some(a) = blk.attns.get(j) {
                    h = a.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(d) = &blk.down {
                let hp = if blk.pad_right { h.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)? } else { h.clone() };
                h = d.forward(&hp)?;
                skips.push(h.clone());
            }
        }
        if let Some(m) = &self.mid {
            h = m.first.forward(&h, &emb)?;
            if let Some(a) = &m.attn {
                h = a.forward(&h)?;
            }
            h = m.second.forward(&h, &emb)?;
        }
        for blk in &self.ups {
            for (j, r) in blk.resnets.iter().enumerate() {
                let s = skips.pop().ok_or_else(|| candle_core::Error::Msg("skip connections ran out".into()))?;
                h = r.forward(&Tensor::cat(&[&h, &s], 1)?, &emb)?;
                if let Some(a) = blk.attns.get(j) {
                    h = a.forward(&h)?;
                }
            }
            if let Some(u) = &blk.up {
                let (_, _, hh, ww) = h.dims4()?;
                h = u.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
            }
        }
        let mut out = self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)?;
        if c.time_embedding_type == "fourier" {
            let tt = Tensor::from_slice(t, (b, 1, 1, 1), &self.device)?;
            out = out.broadcast_div(&tt)?;
        }
        Ok(out)
    }
}
