//! Class fractions of generated images by the shipped Fashion-MNIST classifier: what `mix-sample
//! --classifier` reports and the image tests check.

use crate::diffusion::SampleRun;
use crate::error::Result;
use crate::nets::classifier::{class_fractions, Classifier};
use crate::report::metrics::frechet_distance;

/// Weighted class fractions of a run's particles (by their final normalised weights): 10 values summing
/// to 1.
pub fn judge(classifier: &Classifier, run: &SampleRun) -> Result<Vec<f64>> {
    Ok(class_fractions(&classifier.predict(&run.samples)?, Some(&run.weights())))
}

/// A Fréchet distance in the classifier's feature space between generated images and real ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frechet {
    /// Generated (weighted) against real test images with the same class counts.
    pub distance: f64,
    /// Real against real: a second, disjoint draw of the same counts (the floor at this sample size).
    pub floor: f64,
    /// Real images per draw.
    pub n: usize,
}

/// The Fréchet distance between Gaussians fitted to the classifier's last hidden layer on the run's
/// particles (by their final weights) and on real Fashion-MNIST test images (`test`) drawn with the
/// run's weighted class fractions (as the classifier labels it: the distance measures the images
/// within their classes; the fractions are reported apart), and its floor: the same between two
/// disjoint real draws of those counts. `seed` fixes the draws. A class needs at most half its test
/// images; counts are capped there.
pub fn frechet_to_real(classifier: &Classifier, run: &SampleRun, test: &crate::io::idx::ImageSet, seed: u64) -> Result<Frechet> {
    frechet_to_real_images(classifier, &run.samples, &run.weights(), test, seed)
}

/// [`frechet_to_real`] for images `samples` (n × 784) with normalised weights `weights`.
pub fn frechet_to_real_images(classifier: &Classifier, samples: &[f64], weights: &[f64], test: &crate::io::idx::ImageSet, seed: u64) -> Result<Frechet> {
    let labels = classifier.predict(samples)?;
    let f = class_fractions(&labels, Some(weights));
    let count = weights.len();
    let mut r = crate::rng::seeded(seed ^ 0xf1d);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (c, &fc) in f.iter().enumerate() {
        let mut idx: Vec<usize> = (0..test.len()).filter(|&i| test.labels[i] as usize == c).collect();
        let want = ((fc * count as f64).round() as usize).min(idx.len() / 2);
        // A seeded partial Fisher–Yates shuffle: the first 2·want indices, without replacement.
        for i in 0..(2 * want).min(idx.len()) {
            let j = i + ((crate::rng::uniform(&mut r) * (idx.len() - i) as f64) as usize).min(idx.len() - i - 1);
            idx.swap(i, j);
        }
        for (k, &i) in idx[..2 * want].iter().enumerate() {
            let img = test.image(i).iter().map(|&p| p as f64);
            if k < want { a.extend(img) } else { b.extend(img) }
        }
    }
    let d = classifier.feature_dim();
    let n = a.len() / 784;
    let (fa, fb, fg) = (classifier.features(&a)?, classifier.features(&b)?, classifier.features(samples)?);
    Ok(Frechet { distance: frechet_distance(&fg, Some(weights), &fa, d), floor: frechet_distance(&fb, None, &fa, d), n })
}
