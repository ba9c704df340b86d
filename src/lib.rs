//! wfrmix: sample compositions of diffusion models (mixtures, products, annealed and power-mean
//! versions) and unnormalized multimodal densities by simulating weighted SDEs.
//!
//! The maths lives in `shared/DESIGN.md`; each module's header says which section it implements.

pub mod energy;
pub mod error;
pub mod io;
pub mod particles;
pub mod rng;
pub mod wfr;

pub use error::{Error, Result};
