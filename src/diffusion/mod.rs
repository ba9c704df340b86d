//! Sampling a composition of diffusion models with a weighted reverse SDE (maths §2–§6): the time grid is
//! stepped from t = 1 to t_min, particles move by the composition's drift score, carry tracked
//! log-densities and Feynman–Kac log-weights, and are resampled adaptively.
//!
//! - [`sampler`]: the checked [`Sampler`] and its run loop;
//! - [`divergence`]: exact and Hutchinson divergence estimates, for the compositions that need them;
//! - [`moves`]: the variance-minimising drift and the Metropolis-adjusted moves of geometric targets;
//! - `state`: the run's per-particle buffers and their reused scratch.

pub mod divergence;
pub mod moves;
pub mod sampler;
mod state;

pub use divergence::{DivergenceEstimator, Probe};
pub use moves::{DriftGamma, MoveConfig};
pub use sampler::{Integrator, SampleRun, Sampler, SamplerConfig, StepInfo};
