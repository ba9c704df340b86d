//! Samplers for an unnormalized energy π ∝ exp(−U) (maths §7, §9.1–§9.4, §6):
//! Langevin (ULA, optionally Metropolis-adjusted), the Wasserstein–Fisher–Rao weighted SDE (Langevin
//! transport plus birth–death through particle log-weights driven by a weighted kernel density estimate
//! of the particles' own density), pure Fisher–Rao reweighting, and annealed SMC from a Gaussian with an
//! adaptive (conditional-ESS) β schedule giving log Ẑ. All weights, resampling and log Ẑ go through the
//! one particle system in [`crate::particles`].
//!
//! Time convention: KL-gradient-flow time τ; Langevin is `dX = −∇U dτ + √2 dW`.
//!
//! Rooms: [`energy`] (the targets), [`kde`] (the particles' own density), [`langevin`] (the moves),
//! [`sampler`] (Langevin / WFR / Fisher–Rao), [`anneal`] (annealed SMC), [`flows`] (closed forms),
//! [`stats`] (weighted measurements), [`experiment`] (the double-well teleportation experiment).

pub mod anneal;
pub mod energy;
pub mod experiment;
pub mod flows;
pub mod kde;
pub mod langevin;
pub mod sampler;
pub mod stats;

pub use anneal::{AnnealConfig, AnnealRun, AnnealSampler, LevelInfo};
pub use energy::{DoubleWell, Energy};
pub use experiment::{teleport_experiment, TeleportConfig, TeleportResult, TeleportTrack};
pub use flows::{gaussian_fr_flow, gaussian_w_flow, gaussian_wfr_flow};
pub use kde::{Bandwidth, Kde, KdeMethod};
pub use langevin::Transport;
pub use sampler::{StepInfo, StepView, WfrConfig, WfrRun, WfrSampler};
pub use stats::{right_mass, weighted_histogram, weighted_moments};

/// Largest particle count the samplers accept (memory guard).
pub const MAX_PARTICLES: usize = 1 << 28;
