//! What each binary runs, as one library call: settings in (checked), files out (atomically), a result
//! back that the binary prints. Progress goes through a callback the binary renders; nothing here parses
//! arguments, prints or reads the environment.
//!
//! - [`mix`]: `mix-sample` (compose models, sample, write samples / report / picture);
//! - [`energy`]: `wfr-sample` (Langevin / WFR / annealed SMC on an energy, the double-well experiment);
//! - [`train`]: `mix-train` (any recipe kind, with checkpoints and exact resume);
//! - [`eval`]: `mix-eval` (one model's output, ε̂ and score on given inputs and times).

pub mod energy;
pub mod eval;
pub mod mix;
#[cfg(feature = "nets")]
pub mod train;
