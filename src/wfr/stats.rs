//! Weighted statistics of a particle cloud: the right-hand-well mass, moments and histograms.

/// Weighted fraction of particles whose first coordinate is > 0 (the right-hand-well mass).
pub fn right_mass(x: &[f64], d: usize, w: &[f64]) -> f64 {
    w.iter().enumerate().filter(|(i, _)| x[i * d] > 0.0).map(|(_, v)| v).sum()
}

/// Weighted mean and covariance (row-major d×d) of particles.
pub fn weighted_moments(x: &[f64], d: usize, w: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let total: f64 = w.iter().sum();
    let mut mean = vec![0.0; d];
    for (i, wi) in w.iter().enumerate() {
        for k in 0..d {
            mean[k] += wi * x[i * d + k] / total;
        }
    }
    let mut cov = vec![0.0; d * d];
    for (i, wi) in w.iter().enumerate() {
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] += wi * (x[i * d + a] - mean[a]) * (x[i * d + b] - mean[b]) / total;
            }
        }
    }
    (mean, cov)
}


/// Weighted histogram as a density (mass per unit length) on `bins` equal bins of `[lo, hi]`.
pub fn weighted_histogram(x: &[f64], w: &[f64], lo: f64, hi: f64, bins: usize) -> (Vec<f64>, Vec<f64>) {
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|k| lo + k as f64 * width).collect();
    let mut h = vec![0.0; bins];
    for (xi, wi) in x.iter().zip(w) {
        let k = ((xi - lo) / width).floor();
        if k >= 0.0 && (k as usize) < bins {
            h[k as usize] += wi / width;
        }
    }
    (edges, h)
}
