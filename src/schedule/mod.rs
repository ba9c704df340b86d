//! The VP forward process with a linear β schedule (maths §1) and the reverse-time grids the
//! sampler steps on (§2).
//!
//! Forward: dx = −½β(t)x dt + √β(t) dW, β(t) = β_min + t(β_max − β_min), so x_t | x_0 ~ N(α_t x_0, σ_t² I)
//! with α_t = exp(−½∫₀ᵗβ) and σ_t² = 1 − α_t².

use crate::error::{Error, Result};

pub mod grid;

pub use grid::TimeGrid;

/// A variance-preserving schedule with linear β(t) on t ∈ [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct VpSchedule {
    beta_min: f64,
    beta_max: f64,
}

impl Default for VpSchedule {
    fn default() -> Self {
        VpSchedule { beta_min: 0.1, beta_max: 20.0 }
    }
}

impl VpSchedule {
    /// A checked schedule: 0 < β_min ≤ β_max, both finite.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min.is_finite() && beta_min > 0.0) {
            return Err(Error::param("beta_min", beta_min, "must be finite and > 0"));
        }
        if !(beta_max.is_finite() && beta_max >= beta_min) {
            return Err(Error::param("beta_max", beta_max, format!("must be finite and >= beta_min = {beta_min}")));
        }
        Ok(VpSchedule { beta_min, beta_max })
    }

    /// β at t = 0.
    pub fn beta_min(&self) -> f64 {
        self.beta_min
    }

    /// β at t = 1.
    pub fn beta_max(&self) -> f64 {
        self.beta_max
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// ∫₀ᵗ β(u) du.
    pub fn int_beta(&self, t: f64) -> f64 {
        self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min)
    }

    /// ln α_t = −½∫₀ᵗβ.
    pub fn log_alpha(&self, t: f64) -> f64 {
        -0.5 * self.int_beta(t)
    }

    /// α_t.
    pub fn alpha(&self, t: f64) -> f64 {
        self.log_alpha(t).exp()
    }

    /// σ_t² = 1 − α_t², accurate for small t.
    pub fn sigma2(&self, t: f64) -> f64 {
        -(-self.int_beta(t)).exp_m1()
    }

    /// The t ≥ 0 with ∫₀ᵗβ = b (inverse of [`Self::int_beta`]).
    pub fn t_of_int_beta(&self, b: f64) -> f64 {
        let db = self.beta_max - self.beta_min;
        if db <= 1e-12 * self.beta_min {
            b / self.beta_min
        } else {
            // Stable root of ½db·t² + β_min·t − b = 0.
            2.0 * b / (self.beta_min + (self.beta_min * self.beta_min + 2.0 * db * b).sqrt())
        }
    }

    /// Noise-to-signal ratio σ_t/α_t.
    pub fn nsr(&self, t: f64) -> f64 {
        self.int_beta(t).exp_m1().sqrt()
    }

    /// The t with σ_t/α_t = r.
    pub fn t_of_nsr(&self, r: f64) -> f64 {
        self.t_of_int_beta((r * r).ln_1p())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_matches_closed_form_and_inverse() {
        let s = VpSchedule::default();
        // α_1 = exp(−½(0.1 + 0.5·19.9)) = exp(−5.025).
        assert!((s.alpha(1.0) - (-5.025f64).exp()).abs() < 1e-15);
        for &t in &[1e-4, 0.01, 0.3, 0.9, 1.0] {
            assert!((s.t_of_int_beta(s.int_beta(t)) - t).abs() < 1e-12 * t.max(1e-3));
            assert!((s.t_of_nsr(s.nsr(t)) - t).abs() < 1e-10);
            assert!((s.sigma2(t) + s.alpha(t).powi(2) - 1.0).abs() < 1e-14);
        }
        // g² = −2 d/dt log α: central difference.
        let (t, h) = (0.37, 1e-6);
        let fd = -2.0 * (s.log_alpha(t + h) - s.log_alpha(t - h)) / (2.0 * h);
        assert!((fd - s.beta(t)).abs() < 1e-6);
    }

    #[test]
    fn grids_run_from_one_to_t_min_monotonically() {
        let s = VpSchedule::default();
        for g in [TimeGrid::uniform(), TimeGrid::log_snr(), TimeGrid::default()] {
            let ts = g.times(&s, 50, 1.0, 1e-3);
            assert_eq!(ts.len(), 51);
            assert_eq!((ts[0], ts[50]), (1.0, 1e-3));
            assert!(ts.windows(2).all(|w| w[1] < w[0]), "{g}: {ts:?}");
        }
    }
}
