//! Training by denoising score matching (maths §1): seeded AdamW runs from a JSON recipe (`models/*.json`)
//! with checkpoints and exact resume.
//!
//! - [`common`]: what every trainer shares (recipe files, learning-rate schedule, t draws, AdamW, data);
//! - [`mlp`]: the MLP trainer ([`Recipe`], [`Trainer`]);
//! - [`unet`]: the U-Net trainer;
//! - [`classifier`]: the Fashion-MNIST classifier that judges generated images.

pub mod classifier;
pub mod common;
pub mod mlp;
pub mod unet;

pub use common::{parse_classes, Data, DataSource};
pub use mlp::{dsm_loss, Recipe, Trainer};
