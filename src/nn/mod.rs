//! Neural score networks (DESIGN.md §1: noise prediction, s = −ε̂/σ_t), trained with candle
//! (`crate::train`) and evaluated on the CPU by a hand-written f64 forward and reverse pass.
//!
//! One architecture so far: [`mlp::ScoreMlp`], a time-conditioned MLP for vector data (file kind
//! `score_mlp`). An image U-Net would be a sibling module with its own `kind`, reusing the metadata keys
//! (`arch`, `data_shape`, `beta_min`, `beta_max`, `parameterization`, `trained_on`, `recipe`).

pub mod mlp;

pub use mlp::{CandleMlp, MlpConfig, NetInfo, ScoreMlp};
