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
/// `m`, to rounding: a Householder reduction to tridiagonal form, then implicit QR steps with
/// Wilkinson's shift on the tridiagonal matrix (Golub & Van Loan, §8.3), both accumulated into the
/// eigenvectors. O(n³), in contrast to cyclic Jacobi's many O(n³) sweeps: for the classifier's
/// 128 × 128 feature covariances it takes milliseconds.
pub fn sym_eigen(m: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let (l, qt) = tridiagonal_qr(m, n, true);
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            v[i * n + j] = qt[j * n + i];
        }
    }
    (l, v)
}

/// The eigenvalues alone of the symmetric matrix `m` (n × n), as [`sym_eigen`] gives them.
pub fn sym_eigenvalues(m: &[f64], n: usize) -> Vec<f64> {
    tridiagonal_qr(m, n, false).0
}

/// [`sym_eigen`]'s work: the eigenvalues and, when `vectors`, the transposed eigenvector matrix (row j
/// is eigenvector j, so every update below runs over contiguous rows).
fn tridiagonal_qr(m: &[f64], n: usize, vectors: bool) -> (Vec<f64>, Vec<f64>) {
    let (mut d, mut e, mut qt) = householder_tridiagonal(m, n, vectors);
    let norm = d.iter().chain(&e).fold(0.0f64, |a, &b| a.max(b.abs()));
    // e[i] couples i and i + 1; it is negligible at rounding level of its neighbours (or, for a block
    // of zero eigenvalues, of the matrix).
    let small = |d: &[f64], e: &[f64], i: usize| e[i].abs() <= f64::EPSILON * (d[i].abs() + d[i + 1].abs()) + f64::EPSILON * f64::EPSILON * norm;
    let mut hi = n.saturating_sub(1);
    // Wilkinson's shift converges cubically, in ≈ 2 steps per eigenvalue; the cap only guards termination.
    let mut budget = 30 * n.max(1);
    while hi > 0 && budget > 0 {
        if small(&d, &e, hi - 1) {
            e[hi - 1] = 0.0;
            hi -= 1;
            continue;
        }
        let mut lo = hi - 1;
        while lo > 0 && !small(&d, &e, lo - 1) {
            lo -= 1;
        }
        budget -= 1;
        qr_step(&mut d, &mut e, lo, hi, vectors.then_some((&mut qt[..], n)));
    }
    (d, qt)
}

/// Reduces the symmetric `m` to tridiagonal form Qᵀ m Q by Householder reflections: the diagonal, the
/// off-diagonal (e[i] at (i, i + 1)) and, when `vectors`, Qᵀ row-major (else empty).
fn householder_tridiagonal(m: &[f64], n: usize, vectors: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut qt = vec![0.0; if vectors { n * n } else { 0 }];
    if vectors {
        (0..n).for_each(|i| qt[i * n + i] = 1.0);
    }
    let mut e = vec![0.0; n.saturating_sub(1)];
    let (mut v, mut p, mut u) = (vec![0.0; n], vec![0.0; n], vec![0.0; if vectors { n } else { 0 }]);
    for k in 0..n.saturating_sub(1) {
        // Reflect x = a[k + 1.., k] onto α e₁ with H = I − 2 v vᵀ, |v| = 1.
        let x = |i: usize| a[i * n + k];
        let xnorm = (k + 1..n).map(|i| x(i) * x(i)).sum::<f64>().sqrt();
        let alpha = if x(k + 1) > 0.0 { -xnorm } else { xnorm };
        (k + 1..n).for_each(|i| v[i] = x(i));
        v[k + 1] -= alpha;
        let vnorm = (k + 1..n).map(|i| v[i] * v[i]).sum::<f64>().sqrt();
        e[k] = alpha;
        if vnorm == 0.0 {
            // Already in place: x = 0, so α = 0 is the subdiagonal.
            continue;
        }
        (k + 1..n).for_each(|i| v[i] /= vnorm);
        // The trailing block B becomes H B H = B − 2 (v wᵀ + w vᵀ), w = B v − (vᵀ B v) v.
        for i in k + 1..n {
            p[i] = (k + 1..n).map(|j| a[i * n + j] * v[j]).sum();
        }
        let vbv: f64 = (k + 1..n).map(|i| v[i] * p[i]).sum();
        (k + 1..n).for_each(|i| p[i] -= vbv * v[i]);
        for i in k + 1..n {
            let (vi, wi) = (v[i], p[i]);
            for j in k + 1..n {
                a[i * n + j] -= 2.0 * (vi * p[j] + wi * v[j]);
            }
        }
        if vectors {
            // Q ← Q H: Qᵀ's rows k + 1.. lose 2 v_j u, u = Σ_j v_j Qᵀ_j.
            u.fill(0.0);
            for j in k + 1..n {
                let vj = v[j];
                u.iter_mut().zip(&qt[j * n..(j + 1) * n]).for_each(|(s, &q)| *s += vj * q);
            }
            for j in k + 1..n {
                let vj = 2.0 * v[j];
                qt[j * n..(j + 1) * n].iter_mut().zip(&u).for_each(|(q, &s)| *q -= vj * s);
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), e, qt)
}

/// One implicit symmetric QR step with Wilkinson's shift on the unreduced block lo..=hi of the
/// tridiagonal (d, e), chasing the bulge down with Givens rotations (applied to Qᵀ's rows if given).
fn qr_step(d: &mut [f64], e: &mut [f64], lo: usize, hi: usize, mut qt: Option<(&mut [f64], usize)>) {
    let delta = 0.5 * (d[hi - 1] - d[hi]);
    let b = e[hi - 1];
    let mu = d[hi] - b * b / (delta + if delta >= 0.0 { 1.0 } else { -1.0 } * delta.hypot(b));
    let (mut x, mut z) = (d[lo] - mu, e[lo]);
    for k in lo..hi {
        // G = [[c, s], [−s, c]] on (k, k + 1) with c x − s z = r, s x + c z = 0.
        let r = x.hypot(z);
        let (c, s) = if r == 0.0 { (1.0, 0.0) } else { (x / r, -z / r) };
        if k > lo {
            e[k - 1] = r;
        }
        let (a, bb, cc) = (d[k], e[k], d[k + 1]);
        d[k] = c * c * a - 2.0 * c * s * bb + s * s * cc;
        d[k + 1] = s * s * a + 2.0 * c * s * bb + c * c * cc;
        e[k] = c * s * (a - cc) + (c * c - s * s) * bb;
        if k + 1 < hi {
            // The rotation fills (k + 2, k): the bulge the next rotation removes.
            z = -s * e[k + 1];
            e[k + 1] *= c;
            x = e[k];
        }
        if let Some((q, n)) = qt.as_mut() {
            let n = *n;
            let (top, bottom) = q.split_at_mut((k + 1) * n);
            let (rk, rk1) = (&mut top[k * n..], &mut bottom[..n]);
            rk.iter_mut().zip(rk1.iter_mut()).for_each(|(p, q)| {
                let (u, w) = (*p, *q);
                *p = c * u - s * w;
                *q = s * u + c * w;
            });
        }
    }
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
    let tr_sqrt: f64 = sym_eigenvalues(&m, d).iter().map(|&l| l.max(0.0).sqrt()).sum();
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

    /// V diag(λ) Vᵀ = m and VᵀV = I to rounding (relative 1e-12 of the matrix's scale, > 30 n ε for
    /// the n ≤ 128 here), and the eigenvalues alone agree with those of the full decomposition.
    fn check_decomposition(m: &[f64], n: usize) {
        let (l, v) = sym_eigen(m, n);
        let scale = m.iter().fold(1e-300f64, |a, &b| a.max(b.abs()));
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| v[i * n + k] * l[k] * v[j * n + k]).sum();
                assert!((r - m[i * n + j]).abs() < 1e-12 * scale, "n = {n}: ({i}, {j}) {r} vs {}", m[i * n + j]);
                let o: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((o - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "n = {n}: VᵀV ({i}, {j}) = {o}");
            }
        }
        let (mut a, mut b) = (l.clone(), sym_eigenvalues(m, n));
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        a.iter().zip(&b).for_each(|(x, y)| assert!((x - y).abs() < 1e-12 * scale, "{x} vs {y}"));
    }

    #[test]
    fn eigen_decompositions_reconstruct_their_matrices() {
        let mut r = rng::seeded(4);
        for n in [1usize, 2, 3, 17, 60, 128] {
            let mut g = vec![0.0; n * n];
            rng::fill_normal(&mut r, &mut g);
            let sym: Vec<f64> = (0..n * n).map(|k| g[k] + g[(k % n) * n + k / n]).collect();
            check_decomposition(&sym, n);
            // A covariance of fewer points than dimensions, every 7th feature dead: rank-deficient,
            // a block of zero eigenvalues, as the classifier's features give.
            let pts = (n / 3).max(1);
            let mut x = vec![0.0; pts * n];
            rng::fill_normal(&mut r, &mut x);
            x.chunks_exact_mut(n).for_each(|row| row.iter_mut().step_by(7).for_each(|v| *v = 0.0));
            check_decomposition(&mean_cov(&x, None, n).1, n);
        }
        // Repeated eigenvalues: the identity and a diagonal with a double value.
        check_decomposition(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 3);
        check_decomposition(&[2.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 2.0], 3);
        check_decomposition(&[], 0);
    }
}
