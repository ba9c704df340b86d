//! Sample-quality measures used by the tests, the examples and the README tables.

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
