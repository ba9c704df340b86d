//! wfrmix: sample compositions of diffusion models (mixtures, products, annealed, geometric and
//! power-mean versions) and unnormalized multimodal densities by simulating weighted SDEs.
//!
//! The maths the code implements is the [`maths`] page (`docs/maths.md`); module headers cite its
//! sections as "maths §N".
//!
//! Rooms, lowest first; code in a room imports only rooms earlier in this order (`tests/layout.rs`
//! checks it): [`error`], [`limits`], [`lanes`], [`rng`] → [`io`] → [`schedule`] → [`particles`] → [`compose`] → [`model`] →
//! [`nets`] → [`registry`] → [`diffusion`] → [`wfr`] → [`train`] → [`report`] → [`jobs`] (what each binary
//! runs).

pub mod compose;
pub mod diffusion;
pub mod error;
pub mod io;
pub mod jobs;
pub mod lanes;
pub mod limits;
pub mod model;
#[cfg(feature = "nets")]
pub mod nets;
pub mod particles;
pub mod registry;
pub mod report;
pub mod rng;
pub mod schedule;
#[cfg(feature = "nets")]
pub mod train;
pub mod wfr;

/// The maths the code implements: forward process and schedules, the reverse step, the Feynman–Kac
/// weight of any (drift, target) pair, every composition, divergence estimates, weights and resampling,
/// WFR on energies, and the closed-form cases the tests check against.
#[doc = include_str!("../docs/maths.md")]
pub mod maths {}

pub use compose::{ComposeKind, Composition, CompositionSpec, MixtureMethod};
pub use diffusion::{DivergenceEstimator, DriftGamma, Integrator, MoveConfig, Probe, SampleRun, Sampler, SamplerConfig, StepInfo};
pub use error::{Error, Result};
pub use model::{GaussianMixture, ScoreModel};
pub use particles::{ResamplePolicy, Resampler};
pub use registry::load_model;
pub use schedule::{TimeGrid, VpSchedule};

/// The README's code blocks, compiled and run as doctests (its library example must keep working).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
