//! wfrmix: sample compositions of diffusion models (mixtures, products, annealed and power-mean
//! versions) and unnormalized multimodal densities by simulating weighted SDEs.
//!
//! The maths lives in `shared/DESIGN.md`; each module's header says which section it implements.

pub mod compose;
pub mod data;
pub mod divergence;
pub mod energy;
pub mod error;
pub mod io;
pub mod hub;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod output;
pub mod particles;
pub mod plot;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod tensors;
pub mod train;
pub mod train_unet;
pub mod wfr;

pub use error::{Error, Result};
pub use compose::{ComposeKind, Composition, CompositionSpec, MixtureMethod};
pub use divergence::{DivergenceEstimator, Probe};
pub use model::{load_model, GaussianMixture, ScoreModel};
pub use particles::{ResamplePolicy, Resampler};
pub use sampler::{Integrator, SampleRun, Sampler, SamplerConfig, StepInfo};
pub use schedule::{TimeGrid, VpSchedule};
