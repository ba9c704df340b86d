//! Class fractions of generated images by the shipped Fashion-MNIST classifier: what `mix-sample
//! --classifier` reports and the image tests check.

use crate::diffusion::SampleRun;
use crate::error::Result;
use crate::nets::classifier::{class_fractions, Classifier};

/// Weighted class fractions of a run's particles (by their final normalised weights): 10 values summing
/// to 1.
pub fn judge(classifier: &Classifier, run: &SampleRun) -> Result<Vec<f64>> {
    Ok(class_fractions(&classifier.predict(&run.samples)?, Some(&run.weights())))
}
