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
