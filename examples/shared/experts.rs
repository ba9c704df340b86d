//! Exact Gaussian-mixture experts with closed-form compositions, shared by the examples and the tests
//! (`#[path]`-included, so each example and test binary compiles its own copy of one source; each uses
//! only some of them).

#![allow(dead_code)]

use wfrmix::{GaussianMixture, VpSchedule};

/// Two 6-D experts that share one mode (like experts trained on overlapping class sets): A has modes
/// {m1, m2}, B has {m2, m3}; their product concentrates on m2.
pub fn shared_mode() -> (GaussianMixture, GaussianMixture) {
    let d = 6;
    let s = VpSchedule::default();
    let m1: Vec<f64> = (0..d).map(|j| if j % 2 == 0 { 2.0 } else { 0.0 }).collect();
    let m2: Vec<f64> = (0..d).map(|j| if j % 3 == 0 { -1.0 } else { 0.5 }).collect();
    let m3: Vec<f64> = (0..d).map(|j| if j < 3 { -2.0 } else { 1.0 }).collect();
    let sd: Vec<f64> = (0..2 * d).map(|i| 0.5 + 0.08 * (i % 4) as f64).collect();
    let a = GaussianMixture::new([m1, m2.clone()].concat(), sd.clone(), vec![1.0, 2.0], d, s.clone()).unwrap();
    let b = GaussianMixture::new([m2, m3].concat(), sd.iter().map(|v| v * 1.2).collect(), vec![1.5, 1.0], d, s).unwrap();
    (a, b)
}

/// Two 3-component experts in d dimensions whose means differ along the first coordinate only (A at
/// −2, 0, 2; B at −1, 1, 3), with per-coordinate stds 0.6–0.8 (A) and 0.7–0.9 (B) in every coordinate:
/// their product has 9 components whose masses barely depend on d, while the variance mismatch of every
/// coordinate adds weight noise ∝ √d.
pub fn high_dim(d: usize) -> (GaussianMixture, GaussianMixture) {
    let make = |centres: [f64; 3], sd0: f64, w: Vec<f64>| {
        let mut m = vec![0.0; 3 * d];
        let mut s = vec![0.0; 3 * d];
        for (j, c) in centres.iter().enumerate() {
            m[j * d] = *c;
            for i in 0..d {
                s[j * d + i] = sd0 + 0.05 * ((i + j) % 5) as f64;
            }
        }
        GaussianMixture::new(m, s, w, d, VpSchedule::default()).unwrap()
    };
    (make([-2.0, 0.0, 2.0], 0.6, vec![0.5, 0.3, 0.2]), make([-1.0, 1.0, 3.0], 0.7, vec![0.2, 0.3, 0.5]))
}

/// Two single diagonal Gaussians in d dimensions for the power mean m = 2 (issue 13): means ∓1.5 along
/// the first coordinate, stds 0.8–1.0 in every coordinate with a mismatch of up to 0.15 between the
/// two, so that the Bhattacharyya coefficient shrinks only slowly with d (≈ e^{−0.0047 d}) while the
/// power mean's weight rate, ∝ |s_A − s_B|², grows ∝ d.
pub fn power_pair(d: usize) -> (GaussianMixture, GaussianMixture) {
    let make = |centre: f64, shift: usize| {
        let mut m = vec![0.0; d];
        m[0] = centre;
        let s = (0..d).map(|i| 0.8 + 0.05 * ((i + shift) % 5) as f64).collect();
        GaussianMixture::new(m, s, vec![1.0], d, VpSchedule::default()).unwrap()
    };
    (make(-1.5, 0), make(1.5, 2))
}

/// The closed form of the power mean m = 2 of two single diagonal Gaussians A, B with weights a:
/// (a₀ √A + a₁ √B)² = a₀² A + a₁² B + 2 a₀ a₁ BC · N(μ_g, σ_g²), where √(AB) = BC · N(μ_g, σ_g²) with
/// precision 1/σ_g² = (1/σ_A² + 1/σ_B²)/2, μ_g = σ_g² (μ_A/σ_A² + μ_B/σ_B²)/2 and BC the Bhattacharyya
/// coefficient. Returns the normalised 3-component mixture and log Z₀ = log(a₀² + a₁² + 2 a₀ a₁ BC).
pub fn power2_closed(a: &GaussianMixture, b: &GaussianMixture, w: [f64; 2]) -> (GaussianMixture, f64) {
    let d = a.means().len() / a.components();
    let (ma, va, mb, vb) = (a.means(), a.variances(), b.means(), b.variances());
    let (mut mg, mut sg, mut log_bc) = (vec![0.0; d], vec![0.0; d], 0.0);
    for j in 0..d {
        let p = 0.5 * (1.0 / va[j] + 1.0 / vb[j]);
        mg[j] = 0.5 * (ma[j] / va[j] + mb[j] / vb[j]) / p;
        sg[j] = p.recip().sqrt();
        let s = va[j] + vb[j];
        log_bc += 0.5 * (2.0 * (va[j] * vb[j]).sqrt() / s).ln() - (ma[j] - mb[j]).powi(2) / (4.0 * s);
    }
    let mass = [w[0] * w[0], w[1] * w[1], 2.0 * w[0] * w[1] * log_bc.exp()];
    let z: f64 = mass.iter().sum();
    let means = [ma.to_vec(), mb.to_vec(), mg].concat();
    let sds = [va.iter().map(|v| v.sqrt()).collect::<Vec<_>>(), vb.iter().map(|v| v.sqrt()).collect(), sg].concat();
    (GaussianMixture::new(means, sds, mass.iter().map(|m| m / z).collect(), d, VpSchedule::default()).unwrap(), z.ln())
}
