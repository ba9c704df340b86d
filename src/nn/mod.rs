//! Neural score networks (DESIGN.md §1: noise prediction, s = −ε̂/σ_t), trained with candle
//! (`crate::train`).
//!
//! - [`mlp::ScoreMlp`], a time-conditioned MLP for vector data (file kind `score_mlp`), evaluated by a
//!   hand-written f64 forward and reverse pass;
//! - [`unet::ScoreUnet`], a small time-conditioned U-Net for images (file kind `score_unet`), evaluated
//!   through candle in f32;
//! - [`classifier::Classifier`], a Fashion-MNIST classifier used to judge generated images (file kind
//!   `fmnist_classifier`).


pub mod classifier;
pub mod mlp;
pub mod ops;
pub mod unet;

pub use mlp::{CandleMlp, MlpConfig, NetInfo, ScoreMlp};
pub use unet::{ScoreUnet, UnetConfig, UnetGraph};
