//! The library's one error type: every variant names the file, tensor, shape, parameter or value at fault,
//! and says how to fix it where that is not obvious.

use std::path::PathBuf;

/// Everything that can go wrong in wfrmix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read (the I/O error is part of the message, so printing the
    /// error's chain does not repeat it).
    #[error("cannot read {}: {cause}", path.display())]
    Read { path: PathBuf, cause: std::io::Error },
    /// An output file could not be written (nothing is left behind at `path`).
    #[error("cannot write {}: {cause}", path.display())]
    Write { path: PathBuf, cause: std::io::Error },
    /// The bytes of a file are not a valid safetensors archive.
    #[error("{} is not a valid safetensors file: {reason}", path.display())]
    NotSafetensors { path: PathBuf, reason: String },
    /// A required tensor is absent.
    #[error("{}: missing tensor `{tensor}` (the file holds: {present})", path.display())]
    MissingTensor { path: PathBuf, tensor: String, present: String },
    /// A tensor has the wrong shape.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected}", path.display())]
    TensorShape { path: PathBuf, tensor: String, found: Vec<usize>, expected: String },
    /// A tensor has a dtype we cannot read.
    #[error("{}: tensor `{tensor}` has dtype {found}, expected {expected}", path.display())]
    TensorDtype { path: PathBuf, tensor: String, found: String, expected: String },
    /// A value inside a tensor is not allowed (NaN, infinite, non-positive, ...).
    #[error("{}: tensor `{tensor}` entry {index} is {value}: {reason}", path.display())]
    BadValue { path: PathBuf, tensor: String, index: usize, value: f64, reason: String },
    /// A metadata key in a model file is missing, unknown or inconsistent.
    #[error("{}: metadata key `{key}`: {reason}", path.display())]
    Metadata { path: PathBuf, key: String, reason: String },
    /// Two models cannot be composed.
    #[error("models `{a}` and `{b}` cannot be composed: {reason}")]
    Incompatible { a: String, b: String, reason: String },
    /// A user-facing parameter is out of range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter { name: String, value: String, reason: String },
    /// A model lacks something the chosen settings need.
    #[error("model `{model}` does not provide {what}; {hint}")]
    Unsupported { model: String, what: String, hint: String },
    /// The simulation produced NaN or infinity.
    #[error("non-finite {what} at step {step} (t = {t:.5}); {hint}")]
    NonFinite { what: String, step: usize, t: f64, hint: String },
    /// Training produced a non-finite loss or parameter (nothing was written at that step).
    #[error("training diverged: non-finite {what} at step {step}; {hint}")]
    Diverged { what: String, step: usize, hint: String },
    /// The tensor backend (candle) failed while training or building a network.
    #[error("candle failed while {what}: {reason}")]
    Backend { what: String, reason: String },
    /// A picture could not be encoded.
    #[error("cannot encode image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(name: impl Into<String>, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::InvalidParameter { name: name.into(), value: value.to_string(), reason: reason.into() }
    }
}
