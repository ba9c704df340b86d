//! A diffusers checkpoint directory as a score model: the `UNet2DModel` of [`crate::nets::unet2d`]
//! with the checkpoint's scheduler (its discrete VP table, maths §1′) and prediction type (ε, v or x₀),
//! found in the root layout (google/ddpm-cifar10-32) or the pipeline layout (`unet/`, `scheduler/`).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::ScoreModel;
use crate::nets::header::backend;
use crate::schedule::VpSchedule;

pub use crate::nets::unet2d::{Unet2d, Unet2dConfig};
use crate::nets::unet2d_cpu::Unet2dCpu;
use crate::nets::unet2d::json_object;

/// What a checkpoint's network predicts (its scheduler's `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise ε.
    Epsilon,
    /// v = α ε − σ x₀.
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

impl Prediction {
    /// ε̂ from the network's prediction `p` at input x with the schedule's α and σ (maths §1′): ε directly;
    /// v: ε̂ = α v̂ + σ x; x₀: ε̂ = (x − α x̂₀)/σ.
    pub fn to_epsilon(self, p: f64, x: f64, alpha: f64, sigma: f64) -> f64 {
        match self {
            Prediction::Epsilon => p,
            Prediction::VPrediction => alpha * p + sigma * x,
            Prediction::Sample => (x - alpha * p) / sigma,
        }
    }
}

fn d_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    1e-4
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_eps_pred() -> String {
    "epsilon".into()
}

/// The keys of a diffusers `scheduler_config.json` that define the forward process (DDPM's defaults
/// for absent keys).
#[derive(Clone, Debug, Deserialize)]
struct SchedulerConfig {
    #[serde(default = "d_steps")]
    num_train_timesteps: usize,
    #[serde(default = "d_beta_start")]
    beta_start: f64,
    #[serde(default = "d_beta_end")]
    beta_end: f64,
    #[serde(default = "d_linear")]
    beta_schedule: String,
    #[serde(default)]
    trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_eps_pred")]
    prediction_type: String,
}

/// A diffusers `UNet2DModel` checkpoint as a score model: s(x, t) = −ε̂/σ_t, with ε̂ from the network's
/// prediction (ε, v or x₀) at the label N t − 1 of its discrete schedule (maths §1′).
pub struct DiffusersModel {
    net: Unet2d,
    /// The network on the f32 CPU kernels, when it lives on the CPU (candle evaluates it elsewhere).
    cpu: Option<Unet2dCpu>,
    name: String,
    shape: Vec<usize>,
    schedule: VpSchedule,
    prediction: Prediction,
    class_label: Option<u32>,
    schedule_source: String,
}

/// Rows per network call (bounds the f32 staging and, on a GPU, the activations' memory).
const CHUNK: usize = 256;

impl DiffusersModel {
    /// Open a diffusers checkpoint directory: `config.json` and `diffusion_pytorch_model.safetensors`
    /// at its root (as google/ddpm-cifar10-32 ships them) or under `unet/` (as pipelines save them), and
    /// the scheduler's `scheduler/scheduler_config.json` or a root `scheduler_config.json` (DDPM's
    /// defaults when there is none, said by [`Self::schedule_source`]). `class_label` is required for a
    /// class-conditional checkpoint and refused for any other. It runs on the CPU kernels of
    /// [`Unet2dCpu`]; [`Self::open_on`] places it on another device.
    pub fn open(dir: &Path, class_label: Option<u32>) -> Result<Self> {
        Self::open_on(dir, class_label, &Device::Cpu)
    }

    /// [`Self::open`] with the network on `device`: the CPU kernels for [`Device::Cpu`], candle's
    /// device-generic network on any other (a CUDA GPU with the `cuda` feature).
    pub fn open_on(dir: &Path, class_label: Option<u32>, device: &Device) -> Result<Self> {
        let unet_dir = if dir.join("config.json").is_file() { dir.to_path_buf() } else { dir.join("unet") };
        let cfg_path = unet_dir.join("config.json");
        let weights = unet_dir.join("diffusion_pytorch_model.safetensors");
        let text = std::fs::read_to_string(&cfg_path).map_err(|cause| Error::Read {
            path: cfg_path.clone(),
            cause: std::io::Error::new(cause.kind(), format!("{cause}; a diffusers checkpoint directory holds config.json (at its root or under unet/)")),
        })?;
        let merr = |key: &str, reason: String| Error::Metadata { path: cfg_path.clone(), key: key.into(), reason };
        let raw = json_object(&cfg_path, "config", &text)?;
        if let Some(class) = raw.get("_class_name").and_then(|v| v.as_str()).filter(|c| *c != "UNet2DModel") {
            return Err(merr("_class_name", format!("`{class}` is not supported (only UNet2DModel checkpoints)")));
        }
        let cfg = Unet2dConfig::from_value(&cfg_path, raw)?;
        if cfg.time_embedding_type == "fourier" {
            return Err(merr("time_embedding_type", "`fourier` checkpoints are variance-exploding score-SDE models; only variance-preserving (DDPM-type) checkpoints can be composed".into()));
        }
        let (h, w) = cfg.sample_hw().ok_or_else(|| merr("sample_size", "missing or not an image size: the data shape comes from it".into()))?;
        let shape = vec![cfg.in_channels, h, w];
        crate::limits::data_shape("sample_size", &shape).map_err(|e| merr("sample_size", e.to_string()))?;
        if cfg.in_channels != cfg.out_channels {
            return Err(merr("out_channels", format!("{} ≠ in_channels {}: the network must predict a tensor like its input", cfg.out_channels, cfg.in_channels)));
        }
        let levels = cfg.block_out_channels.len() as u32 - 1;
        if h % (1 << levels) != 0 || w % (1 << levels) != 0 {
            return Err(merr("sample_size", format!("{h}x{w} is not divisible by 2^{levels} ({} levels)", levels + 1)));
        }
        let (sched_cfg, schedule_source) = Self::scheduler(dir, &unet_dir)?;
        let sched_path = schedule_source.clone();
        let serr = |key: &str, reason: String| Error::Metadata { path: PathBuf::from(&sched_path), key: key.into(), reason };
        let betas = match &sched_cfg.trained_betas {
            Some(b) => b.clone(),
            None => VpSchedule::diffusers_betas(&sched_cfg.beta_schedule, sched_cfg.num_train_timesteps, sched_cfg.beta_start, sched_cfg.beta_end).map_err(|e| serr("beta_schedule", e.to_string()))?,
        };
        let name = format!("{} {} steps, beta {}..{}", sched_cfg.beta_schedule, betas.len(), sched_cfg.beta_start, sched_cfg.beta_end);
        let schedule = VpSchedule::discrete(name, &betas).map_err(|e| serr("betas", e.to_string()))?;
        let prediction = match sched_cfg.prediction_type.as_str() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            "sample" => Prediction::Sample,
            other => return Err(serr("prediction_type", format!("`{other}` is not supported (epsilon, v_prediction, sample)"))),
        };
        let net = Unet2d::load(cfg, &weights, device)?;
        let cpu = if device.is_cpu() { Some(Unet2dCpu::new(&net, h, w)?) } else { None };
        if let (Some(k), None) = (net.config().num_class_embeds, class_label) {
            return Err(merr("num_class_embeds", format!("the checkpoint is class-conditional ({k} classes): give a class label 0 to {} (mix-sample --class-label)", k - 1)));
        }
        let m = DiffusersModel { net, cpu, name: dir.display().to_string(), shape, schedule, prediction, class_label: None, schedule_source };
        match class_label {
            Some(l) => m.with_class_label(l),
            None => Ok(m),
        }
    }

    fn scheduler(dir: &Path, unet_dir: &Path) -> Result<(SchedulerConfig, String)> {
        let candidates = [dir.join("scheduler/scheduler_config.json"), dir.join("scheduler_config.json"), unet_dir.join("scheduler_config.json")];
        if let Some(p) = candidates.iter().find(|p| p.is_file()) {
            let text = std::fs::read_to_string(p).map_err(|cause| Error::Read { path: p.clone(), cause })?;
            let c = serde_json::from_value(json_object(p, "scheduler", &text)?).map_err(|e| Error::Metadata { path: p.clone(), key: "scheduler".into(), reason: e.to_string() })?;
            return Ok((c, p.display().to_string()));
        }
        let c: SchedulerConfig = serde_json::from_str("{}").expect("all keys have defaults");
        Ok((c, "DDPM's defaults (no scheduler config: linear 1000 steps, beta 0.0001..0.02, epsilon)".into()))
    }

    /// Use class `label` for every particle (class-conditional checkpoints: `num_class_embeds`).
    pub fn with_class_label(mut self, label: u32) -> Result<Self> {
        match self.net.config().num_class_embeds {
            Some(k) if (label as usize) < k => {
                self.class_label = Some(label);
                Ok(self)
            }
            Some(k) => Err(Error::param("class label", label, format!("`{}` has classes 0 to {}", self.name, k - 1))),
            None => Err(Error::param("class label", label, format!("`{}` is not class-conditional", self.name))),
        }
    }

    /// Where the schedule came from: the scheduler config's path, or DDPM's defaults.
    pub fn schedule_source(&self) -> &str {
        &self.schedule_source
    }

    /// What the network predicts.
    pub fn prediction(&self) -> Prediction {
        self.prediction
    }

    /// The network.
    pub fn network(&self) -> &Unet2d {
        &self.net
    }
}

impl ScoreModel for DiffusersModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_shape(&self) -> &[usize] {
        &self.shape
    }

    fn schedule(&self) -> VpSchedule {
        self.schedule.clone()
    }

    fn parallel_chunks(&self) -> bool {
        false
    }

    fn notes(&self) -> Vec<String> {
        let class = self.class_label.map(|l| format!(", class {l}")).unwrap_or_default();
        let place = if self.cpu.is_some() { "CPU kernels".to_string() } else { format!("{:?}", self.net.device().location()) };
        vec![format!("{}: UNet2DModel, {:?} prediction{class}, schedule from {}, on {place}", self.name, self.prediction, self.schedule_source)]
    }

    fn score_and_raw(&self, x: &[f64], t: f64, score: &mut [f64], raw: &mut [f64]) -> Result<bool> {
        self.eval(x, t, score, Some(raw))?;
        Ok(true)
    }

    fn score(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.eval(x, t, out, None)
    }

    fn has_vjp(&self) -> bool {
        self.cpu.is_some()
    }

    /// J_s(x)ᵀ v by reverse mode through the CPU kernels: with p the network's output and J_p its
    /// Jacobian, s = −ε̂/σ and ε̂ = p (ε), α p + σ x (v) or (x − α p)/σ (x₀), so Jᵀv = −J_pᵀv/σ,
    /// −(α J_pᵀv + σ v)/σ or −(v − α J_pᵀv)/σ².
    fn vjp(&self, x: &[f64], t: f64, v: &[f64], out: &mut [f64]) -> Result<()> {
        let Some(cpu) = &self.cpu else {
            return Err(self.unsupported("reverse-mode vector-Jacobian products off the CPU", "use --divergence fd, or --device cpu"));
        };
        let d: usize = self.shape.iter().product();
        if !x.len().is_multiple_of(d) || out.len() != x.len() || v.len() != x.len() {
            return Err(Error::param(format!("VJP batch for `{}`", self.name), format!("{} inputs / {} cotangents / {} outputs", x.len(), v.len(), out.len()), format!("expected n × {d} of each")));
        }
        let (a, s2, sigma, label) = self.at_time(t)?;
        for ((xc, vc), oc) in x.chunks(CHUNK * d).zip(v.chunks(CHUNK * d)).zip(out.chunks_mut(CHUNK * d)) {
            let m = xc.len() / d;
            let xf: Vec<f32> = xc.iter().map(|&v| v as f32).collect();
            let vf: Vec<f32> = vc.iter().map(|&v| v as f32).collect();
            let labels = self.class_label.map(|l| vec![l; m]);
            let mut g = vec![0.0f32; xc.len()];
            cpu.vjp(&xf, &vec![label; m], labels.as_deref(), &vf, &mut g)?;
            for ((o, &gp), &vv) in oc.iter_mut().zip(&g).zip(vc) {
                let gp = gp as f64;
                *o = match self.prediction {
                    Prediction::Epsilon => -gp / sigma,
                    Prediction::VPrediction => -(a * gp + sigma * vv) / sigma,
                    Prediction::Sample => -(vv - a * gp) / s2,
                };
            }
        }
        Ok(())
    }
}

impl DiffusersModel {
    /// α_t, σ_t², σ_t and the network's timestep label at t (> 0).
    fn at_time(&self, t: f64) -> Result<(f64, f64, f64, f32)> {
        let (a, s2) = (self.schedule.alpha(t), self.schedule.sigma2(t));
        if !(t.is_finite() && s2 > 0.0) {
            return Err(Error::param("t", t, "a diffusion checkpoint's score needs t > 0"));
        }
        Ok((a, s2, s2.sqrt(), self.schedule.label(t) as f32))
    }

    /// The score at x and t into `out`, and the network's raw output into `raw` when given.
    fn eval(&self, x: &[f64], t: f64, out: &mut [f64], mut raw: Option<&mut [f64]>) -> Result<()> {
        let d: usize = self.shape.iter().product();
        if !x.len().is_multiple_of(d) || out.len() != x.len() {
            return Err(Error::param(format!("batch for `{}`", self.name), format!("{} inputs / {} outputs", x.len(), out.len()), format!("expected n × {d} inputs and as many outputs")));
        }
        let (a, _, sigma, label) = self.at_time(t)?;
        let be = backend("evaluating a diffusers checkpoint");
        for (ci, (xc, oc)) in x.chunks(CHUNK * d).zip(out.chunks_mut(CHUNK * d)).enumerate() {
            let m = xc.len() / d;
            let xf: Vec<f32> = xc.iter().map(|&v| v as f32).collect();
            let labels = self.class_label.map(|l| vec![l; m]);
            let pred: Vec<f32> = match &self.cpu {
                Some(cpu) => {
                    let mut p = vec![0.0f32; xc.len()];
                    cpu.forward(&xf, &vec![label; m], labels.as_deref(), &mut p)?;
                    p
                }
                None => {
                    let dev = self.net.device();
                    let xt = Tensor::from_vec(xf, (m, self.shape[0], self.shape[1], self.shape[2]), dev).map_err(&be)?;
                    self.net.forward(&xt, &vec![label; m], labels.as_deref())?.flatten_all().and_then(|p| p.to_device(&Device::Cpu)).and_then(|p| p.to_vec1()).map_err(&be)?
                }
            };
            if let Some(r) = raw.as_deref_mut() {
                let start = ci * CHUNK * d;
                r[start..start + xc.len()].iter_mut().zip(&pred).for_each(|(o, &p)| *o = p as f64);
            }
            for ((o, &p), &xv) in oc.iter_mut().zip(&pred).zip(xc) {
                let p = p as f64;
                *o = -self.prediction.to_epsilon(p, xv, a, sigma) / sigma;
            }
        }
        Ok(())
    }
}

/// The diffusers version whose file layout [`save_dir`] writes (the one the fixtures were checked with).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// A DDPM forward process with linear β from `beta_start` to `beta_end` over `steps` labels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearBetas {
    pub steps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
}

/// Write a `UNet2DModel` checkpoint directory in diffusers' root layout, atomically
/// ([`crate::io::write_dir_atomic`]): `config.json` (`cfg` with `_class_name`), the weights
/// `diffusion_pytorch_model.safetensors` under diffusers' names (with `metadata` in its header, as
/// `mix-train` records its recipe), and a DDPM `scheduler_config.json` (ε-prediction). Non-finite
/// weights are refused before anything is written.
pub fn save_dir(dir: &Path, cfg: &Unet2dConfig, tensors: &[crate::io::F32Tensor<'_>], betas: LinearBetas, metadata: &std::collections::HashMap<String, String>) -> Result<()> {
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    crate::io::check_finite_tensors(&weights, tensors)?;
    let mut config = serde_json::to_value(cfg).expect("plain struct");
    config["_class_name"] = "UNet2DModel".into();
    config["_diffusers_version"] = DIFFUSERS_VERSION.into();
    let scheduler = serde_json::json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": betas.steps,
        "beta_start": betas.beta_start,
        "beta_end": betas.beta_end,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": true,
        "variance_type": "fixed_small"
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("JSON value") + "\n";
    let (c, sch) = (pretty(&config), pretty(&scheduler));
    let w = crate::io::safetensors_bytes(&weights, tensors, metadata)?;
    crate::io::write_dir_atomic(dir, &[("config.json", c.as_bytes()), ("scheduler_config.json", sch.as_bytes()), ("diffusion_pytorch_model.safetensors", &w)])
}
