//! Neural score networks (maths §1: noise prediction, s = −ε̂/σ_t) and the classifier that judges images.
//!
//! - [`header`]: what every network file shares (metadata, schedule, σ_t, time embedding);
//! - [`mlp::ScoreMlp`], a time-conditioned MLP for vector data (file kind `score_mlp`), evaluated by a
//!   hand-written f64 forward and reverse pass, and [`mlp::CandleMlp`], its candle training graph;
//! - [`unet::ScoreUnet`], a small time-conditioned U-Net for images (file kind `score_unet`), evaluated
//!   through candle in f32, with its custom kernels in [`ops`];
//! - [`unet2d::Unet2d`], diffusers' `UNet2DModel` built from its `config.json`, and
//!   [`diffusers::DiffusersModel`], a checkpoint directory (network, scheduler, prediction) as a score model;
//! - [`unet2d_cpu::Unet2dCpu`], the same network on the f32 CPU kernels of [`kernels`] (im2col + GEMM
//!   convolutions, fused group norms, attention as GEMMs), the path checkpoints take on the CPU;
//! - [`classifier::Classifier`], a Fashion-MNIST classifier used to judge generated images (file kind
//!   `fmnist_classifier`).
//!
//! Training lives in [`crate::train`]; opening a file by its `kind` in [`crate::registry`].

pub mod classifier;
pub mod diffusers;
pub mod header;
pub mod kernels;
pub mod mlp;
pub mod ops;
pub mod unet;
pub mod unet2d;
pub mod unet2d_cpu;

pub use header::NetInfo;
pub use mlp::{CandleMlp, MlpConfig, ScoreMlp};
pub use unet::{ScoreUnet, UnetConfig, UnetGraph};
