//! One recipe type for every score network (the JSON files in `models/`): [`ScoreRecipe`], generic over
//! the architecture's configuration ([`Arch`]: the MLP's [`MlpConfig`], the U-Net's [`UnetConfig`]), with
//! one set of defaults and one range check. Paths are relative to the working directory.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::common::{default_data_dir, draw_t, load_recipe, lr_at, DataSource};
use crate::error::{Error, Result};
use crate::nets::{MlpConfig, UnetConfig};
use crate::rng::Rng;

/// Largest training batch (memory is batch × (d + width) values per layer).
pub const MAX_BATCH: usize = 1 << 16;

/// What a recipe needs to know of an architecture.
pub trait Arch: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// The network file kind the recipe trains (`kind` in the recipe and in the network file).
    const KIND: &'static str;
    /// Whether the recipe JSON recorded in the network file writes `"checkpoint": null` when no
    /// checkpoint path is set. The MLP's always has and the U-Net's never has; kept so that rerunning a
    /// shipped recipe reproduces its file byte for byte.
    const RECORDS_UNSET_CHECKPOINT: bool;
    /// Range checks of the configuration on its own (checks that need the data's shape come later, when
    /// the network is built): the reason when it is invalid.
    fn check(&self) -> std::result::Result<(), String>;
}

impl Arch for MlpConfig {
    const KIND: &'static str = crate::nets::mlp::KIND;
    const RECORDS_UNSET_CHECKPOINT: bool = true;
    fn check(&self) -> std::result::Result<(), String> {
        MlpConfig::check(self)
    }
}

impl Arch for crate::nets::diffusers::Unet2dConfig {
    const KIND: &'static str = DIFFUSERS_KIND;
    const RECORDS_UNSET_CHECKPOINT: bool = false;
    fn check(&self) -> std::result::Result<(), String> {
        let v = serde_json::to_value(self).map_err(|e| e.to_string())?;
        crate::nets::diffusers::Unet2dConfig::from_value(Path::new("recipe"), v).map_err(|e| e.to_string())?;
        if self.time_embedding_type != "positional" {
            return Err("mix-train trains positional-embedding UNet2DModels (time_embedding_type positional)".into());
        }
        Ok(())
    }
}

/// The recipe kind of a diffusers `UNet2DModel` (written as a checkpoint directory).
pub const DIFFUSERS_KIND: &str = "diffusers_unet2d";

impl Arch for UnetConfig {
    const KIND: &'static str = crate::nets::unet::KIND;
    const RECORDS_UNSET_CHECKPOINT: bool = false;
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

fn kind_of<A: Arch>() -> String {
    A::KIND.to_string()
}

fn default_warmup() -> usize {
    200
}

fn skip_checkpoint<A: Arch>(c: &Option<PathBuf>) -> bool {
    c.is_none() && !A::RECORDS_UNSET_CHECKPOINT
}

/// A denoising-score-matching recipe for a network of architecture `A`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound = "A: Arch")]
pub struct ScoreRecipe<A: Arch> {
    /// The network's file kind (`A::KIND`; may be left out).
    #[serde(default = "kind_of::<A>")]
    pub kind: String,
    /// Data source, e.g. `gmm:weights/gmm2d_up.safetensors` or `fashion-mnist:1,8`.
    pub data: String,
    /// Where the trained network goes.
    pub out: PathBuf,
    /// Architecture.
    pub arch: A,
    /// Forward schedule; defaults to the data file's (else 0.1 and 20).
    #[serde(default)]
    pub beta_min: Option<f64>,
    #[serde(default)]
    pub beta_max: Option<f64>,
    /// Optimisation steps.
    pub steps: usize,
    /// Samples per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay (default: `lr`, i.e. constant).
    #[serde(default)]
    pub lr_final: Option<f64>,
    /// Linear warm-up steps (default 200).
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// AdamW decoupled weight decay λ.
    pub weight_decay: f64,
    /// Smallest training time.
    pub t_min: f64,
    /// Fraction of each batch whose t is drawn log-uniformly on [t_min, 1] instead of uniformly (more
    /// training at small noise levels; the loss's minimiser is the same for any t distribution).
    #[serde(default)]
    pub t_log_fraction: f64,
    /// Seed of the run's random stream.
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: never).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Checkpoint file (default: `out` with extension `ckpt.safetensors`).
    #[serde(default, skip_serializing_if = "skip_checkpoint::<A>")]
    pub checkpoint: Option<PathBuf>,
    /// Name stored in the network file.
    #[serde(default)]
    pub name: Option<String>,
    /// Decay of an exponential moving average of the weights, which is then what is written (as DDPM
    /// does; diffusers recipes only; absent: no average). Step k uses min(decay, (1 + k)/(10 + k)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Flip each training image left–right with probability ½, a fresh draw per image and step (the
    /// augmentation DDPM trains CIFAR-10 with; diffusers recipes on image data only; default off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hflip: bool,
    /// Min-SNR-γ loss weighting (Hang et al. 2023, diffusers' `--snr_gamma`): each item's squared ε
    /// error is weighted by min(SNR, γ)/SNR, SNR = α²/σ² at its timestep, which lowers the weight of
    /// the low-noise steps (diffusers recipes only; absent: every item weighs 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_gamma: Option<f64>,
    /// Where `fashion-mnist:` data is read: not part of the recipe file (the caller sets it; default
    /// [`crate::io::idx::FASHION_MNIST_DIR`]).
    #[serde(skip, default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl<A: Arch> ScoreRecipe<A> {
    /// Read a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        load_recipe(path)
    }

    /// Range checks.
    pub fn check(&self) -> Result<()> {
        if self.kind != A::KIND {
            return Err(Error::param("kind", &self.kind, format!("this recipe type trains `{}`", A::KIND)));
        }
        self.arch.check().map_err(|r| Error::param("arch", serde_json::to_string(&self.arch).unwrap_or_default(), r))?;
        if self.batch == 0 {
            return Err(Error::param("batch", self.batch, "must be ≥ 1"));
        }
        crate::limits::at_most("batch", self.batch, MAX_BATCH)?;
        let lr_ok = |v: f64| v.is_finite() && v > 0.0;
        if !lr_ok(self.lr) || !self.lr_final.is_none_or(lr_ok) {
            return Err(Error::param("lr / lr_final", format!("{} / {:?}", self.lr, self.lr_final), "must be finite and > 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::param("weight_decay", self.weight_decay, "must be finite and ≥ 0"));
        }
        if !(0.0..=1.0).contains(&self.t_log_fraction) {
            return Err(Error::param("t_log_fraction", self.t_log_fraction, "must lie in [0, 1]"));
        }
        if !(self.t_min > 0.0 && self.t_min < 1.0) {
            return Err(Error::param("t_min", self.t_min, "must lie in (0, 1)"));
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) || A::KIND != DIFFUSERS_KIND {
                return Err(Error::param("ema_decay", d, "must lie in [0, 1), for diffusers_unet2d recipes"));
            }
        }
        if let Some(g) = self.snr_gamma {
            if !(g.is_finite() && g > 0.0) || A::KIND != DIFFUSERS_KIND {
                return Err(Error::param("snr_gamma", g, "must be finite and > 0, for diffusers_unet2d recipes"));
            }
        }
        let source = self.data.parse::<DataSource>()?;
        if self.hflip && (A::KIND != DIFFUSERS_KIND || !matches!(source, DataSource::FashionMnist(_))) {
            return Err(Error::param("hflip", self.hflip, "flips images: only diffusers_unet2d recipes on fashion-mnist data take it"));
        }
        Ok(())
    }

    /// The checkpoint path.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.checkpoint.clone().unwrap_or_else(|| self.out.with_extension("ckpt.safetensors"))
    }

    /// The training time of batch item `i`: the first ⌊t_log_fraction·batch⌋ items log-uniform on
    /// [t_min, 1], the rest uniform.
    pub fn draw_t(&self, i: usize, rng: &mut Rng) -> f64 {
        draw_t(i, self.batch, self.t_min, self.t_log_fraction, rng)
    }

    /// Learning rate at step `k` (0-based).
    pub fn lr_at(&self, k: usize) -> f64 {
        lr_at(k, self.lr, self.lr_final, self.warmup, self.steps)
    }
}

/// The MLP's recipe (kind `score_mlp`).
pub type Recipe = ScoreRecipe<MlpConfig>;

/// The U-Net's recipe (kind `score_unet`).
pub type UnetRecipe = ScoreRecipe<UnetConfig>;

/// A diffusers `UNet2DModel`'s recipe (kind `diffusers_unet2d`; `out` is a checkpoint directory).
pub type DiffusersRecipe = ScoreRecipe<crate::nets::diffusers::Unet2dConfig>;
