//! Sample-quality measures used by the tests, the examples and the README tables.

use crate::model::GaussianMixture;
use crate::rng;

/// Sliced 1-Wasserstein distance between weighted points `x` (weights `wx`, Σ = 1) and equally
/// weighted points `y` (both row-major with `d` columns), averaged over `dirs` random unit directions
/// fixed by an internal seed (so two calls compare like with like).
pub fn sliced_w1(x: &[f64], wx: &[f64], y: &[f64], d: usize, dirs: usize) -> f64 {
    let mut r = rng::seeded(12345);
    let ny = y.len() / d;
    let mut total = 0.0;
    for _ in 0..dirs {
        let mut u = vec![0.0; d];
        rng::fill_normal(&mut r, &mut u);
        let nrm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
        u.iter_mut().for_each(|v| *v /= nrm);
        let proj = |p: &[f64]| p.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>();
        // Signed masses: +w for x, −1/ny for y; W1 = ∫ |cumulative mass| dt.
        let mut pts: Vec<(f64, f64)> = x.chunks_exact(d).zip(wx).map(|(p, &w)| (proj(p), w)).collect();
        pts.extend(y.chunks_exact(d).map(|p| (proj(p), -1.0 / ny as f64)));
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut cum = 0.0;
        for k in 0..pts.len().saturating_sub(1) {
            cum += pts[k].1;
            total += cum.abs() * (pts[k + 1].0 - pts[k].0);
        }
    }
    total / dirs as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliced_w1_of_a_shift_is_its_mean_projection() {
        // y = x + c in 1-D: W1 = |c| exactly.
        let x: Vec<f64> = (0..100).map(|i| i as f64 / 10.0).collect();
        let y: Vec<f64> = x.iter().map(|v| v + 0.3).collect();
        let w = vec![0.01; 100];
        assert!((sliced_w1(&x, &w, &y, 1, 4) - 0.3).abs() < 1e-9);
        assert!(sliced_w1(&x, &w, &x, 1, 4).abs() < 1e-12);
    }
}

/// The weighted fraction of `samples` (n × d, weights `w` summing to 1) that each component of `g` is
/// the most likely source of (largest w_j N(x; m_j, diag v_j)): on well-separated components, the
/// components' masses. Compare with the same fractions of exact samples of `g`, which removes the
/// assignment's own error.
pub fn component_fractions(g: &GaussianMixture, samples: &[f64], w: &[f64]) -> Vec<f64> {
    let (k, d) = (g.components(), samples.len() / w.len().max(1));
    let (m, v, lw) = (g.means(), g.variances(), g.weights().iter().map(|p| p.ln()).collect::<Vec<_>>());
    let mut out = vec![0.0; k];
    for (x, wi) in samples.chunks_exact(d).zip(w) {
        let score = |j: usize| lw[j] - 0.5 * (0..d).map(|i| (x[i] - m[j * d + i]).powi(2) / v[j * d + i] + v[j * d + i].ln()).sum::<f64>();
        let best = (0..k).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0);
        out[best] += wi;
    }
    out
}

/// Total variation ½ Σ |p_j − q_j| between two mass vectors.
pub fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}
