//! Training by denoising score matching (maths §1): seeded AdamW runs from a JSON recipe (`models/*.json`)
//! with checkpoints and exact resume.
//!
//! - [`recipe`]: the one recipe type of every score network ([`recipe::ScoreRecipe`], generic over the
//!   architecture; [`Recipe`] for the MLP, [`recipe::UnetRecipe`] for the U-Net);
//! - [`common`]: what every trainer shares (recipe files, learning-rate schedule, t draws, AdamW, data);
//! - [`mlp`]: the MLP trainer ([`Trainer`]);
//! - [`unet`]: the U-Net trainer;
//! - [`diffusers`]: the diffusers `UNet2DModel` trainer on the CPU kernels' reverse mode, writing
//!   checkpoint directories diffusers loads;
//! - [`classifier`]: the Fashion-MNIST classifier that judges generated images.

pub mod classifier;
pub mod common;
pub mod diffusers;
pub mod mlp;
pub mod recipe;
pub mod unet;

pub use common::{parse_classes, Data, DataSource};
pub use mlp::{dsm_loss, Trainer};
pub use recipe::{Recipe, ScoreRecipe, UnetRecipe};
