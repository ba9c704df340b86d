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

/// Weighted mean and covariance (d × d, row-major) of the rows of `x` (`w`: normalised weights, `None`:
/// equal).
pub fn mean_cov(x: &[f64], w: Option<&[f64]>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d;
    let wt = |i: usize| w.map_or(1.0 / n as f64, |w| w[i]);
    let mut m = vec![0.0; d];
    for (i, r) in x.chunks_exact(d).enumerate() {
        m.iter_mut().zip(r).for_each(|(a, &b)| *a += wt(i) * b);
    }
    let mut c = vec![0.0; d * d];
    for (i, r) in x.chunks_exact(d).enumerate() {
        let wi = wt(i);
        for j in 0..d {
            let dj = wi * (r[j] - m[j]);
            for k in j..d {
                c[j * d + k] += dj * (r[k] - m[k]);
            }
        }
    }
    for j in 0..d {
        for k in 0..j {
            c[j * d + k] = c[k * d + j];
        }
    }
    (m, c)
}

/// Eigenvalues and eigenvectors (the columns of the second, row-major n × n) of the symmetric matrix
/// `m` by cyclic Jacobi rotations, to rounding. Each rotation updates rows p and q of the matrix (kept
/// symmetric by copying them into columns p and q) and rows p and q of the transposed eigenvector
/// matrix, so the inner loops run over contiguous memory.
pub fn sym_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    // vt: row i is eigenvector i.
    let mut vt = vec![0.0; n * n];
    (0..n).for_each(|i| vt[i * n + i] = 1.0);
    let (mut rp, mut rq) = (vec![0.0; n], vec![0.0; n]);
    for _sweep in 0..60 {
        let off: f64 = (0..n).map(|i| (0..n).filter(|&j| j != i).map(|j| a[i * n + j] * a[i * n + j]).sum::<f64>()).sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        // Converged when the off-diagonal mass is 1e-24 of the diagonal's; rounding keeps it from zero.
        if off <= 1e-24 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                if apq.abs() <= 1e-18 * (app.abs() + aqq.abs()) {
                    a[p * n + q] = 0.0;
                    a[q * n + p] = 0.0;
                    continue;
                }
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                rp.copy_from_slice(&a[p * n..(p + 1) * n]);
                rq.copy_from_slice(&a[q * n..(q + 1) * n]);
                for k in 0..n {
                    let (x, y) = (rp[k], rq[k]);
                    a[p * n + k] = c * x - s * y;
                    a[q * n + k] = s * x + c * y;
                }
                a[p * n + p] = app - t * apq;
                a[q * n + q] = aqq + t * apq;
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
                for k in 0..n {
                    if k != p && k != q {
                        a[k * n + p] = a[p * n + k];
                        a[k * n + q] = a[q * n + k];
                    }
                }
                rp.copy_from_slice(&vt[p * n..(p + 1) * n]);
                rq.copy_from_slice(&vt[q * n..(q + 1) * n]);
                for k in 0..n {
                    let (x, y) = (rp[k], rq[k]);
                    vt[p * n + k] = c * x - s * y;
                    vt[q * n + k] = s * x + c * y;
                }
            }
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            v[j * n + i] = vt[i * n + j];
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// The Fréchet distance between the Gaussians N(m1, c1) and N(m2, c2) in d dimensions:
/// |m1 − m2|² + tr(c1 + c2 − 2 (c1^½ c2 c1^½)^½) (the tr term equals tr (c1 c2)^½).
pub fn frechet_gaussians(m1: &[f64], c1: &[f64], m2: &[f64], c2: &[f64], d: usize) -> f64 {
    let (l1, v1) = sym_eigen(c1, d);
    // s = c1^½ = V diag(√λ) Vᵀ.
    let mut s = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            s[i * d + j] = (0..d).map(|k| v1[i * d + k] * l1[k].max(0.0).sqrt() * v1[j * d + k]).sum();
        }
    }
    let prod = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut o = vec![0.0; d * d];
        for i in 0..d {
            for k in 0..d {
                let aik = a[i * d + k];
                for j in 0..d {
                    o[i * d + j] += aik * b[k * d + j];
                }
            }
        }
        o
    };
    let mut m = prod(&prod(&s, c2), &s);
    // Symmetrise against rounding.
    for i in 0..d {
        for j in 0..i {
            let v = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = v;
            m[j * d + i] = v;
        }
    }
    let tr_sqrt: f64 = sym_eigen(&m, d).0.iter().map(|&l| l.max(0.0).sqrt()).sum();
    let dm: f64 = m1.iter().zip(m2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr = |c: &[f64]| (0..d).map(|i| c[i * d + i]).sum::<f64>();
    (dm + tr(c1) + tr(c2) - 2.0 * tr_sqrt).max(0.0)
}

/// The Fréchet distance between Gaussians fitted to the rows of `a` (weights `wa`) and of `b`.
pub fn frechet_distance(a: &[f64], wa: Option<&[f64]>, b: &[f64], d: usize) -> f64 {
    let (m1, c1) = mean_cov(a, wa, d);
    let (m2, c2) = mean_cov(b, None, d);
    frechet_gaussians(&m1, &c1, &m2, &c2, d)
}

#[cfg(test)]
mod frechet_tests {
    use super::*;

    #[test]
    fn frechet_matches_closed_forms() {
        // Commuting (diagonal) covariances: |Δm|² + Σ (σ1 − σ2)².
        let (m1, m2) = ([1.0, 0.0, 2.0], [0.0, 0.0, 0.0]);
        let c1 = [4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 9.0];
        let c2 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let want = 5.0 + 1.0 + 0.0 + 4.0;
        assert!((frechet_gaussians(&m1, &c1, &m2, &c2, 3) - want).abs() < 1e-12);
        // Non-commuting: c1 = [[2, 1], [1, 2]] against I: tr c1 + 2 − 2 tr c1^½ = 4 + 2 − 2(√3 + 1).
        let c1 = [2.0, 1.0, 1.0, 2.0];
        let c2 = [1.0, 0.0, 0.0, 1.0];
        let want = 4.0 - 2.0 * 3f64.sqrt();
        assert!((frechet_gaussians(&[0.0, 0.0], &c1, &[0.0, 0.0], &c2, 2) - want).abs() < 1e-12);
        // And against a rotated, non-diagonal c2: symmetric in its arguments.
        let c2 = [3.0, -0.5, -0.5, 1.0];
        let (ab, ba) = (frechet_gaussians(&[0.0, 1.0], &c1, &[1.0, 0.0], &c2, 2), frechet_gaussians(&[1.0, 0.0], &c2, &[0.0, 1.0], &c1, 2));
        assert!((ab - ba).abs() < 1e-12, "{ab} vs {ba}");
        // Eigen-decomposition reconstructs its matrix.
        let (l, v) = sym_eigen(&c2, 2);
        for i in 0..2 {
            for j in 0..2 {
                let r: f64 = (0..2).map(|k| v[i * 2 + k] * l[k] * v[j * 2 + k]).sum();
                assert!((r - c2[i * 2 + j]).abs() < 1e-12);
            }
        }
    }
}
