//! The VP forward process (maths §1, §1′): the linear β schedule of our own files and the discrete tables
//! of pretrained checkpoints; and the reverse-time grids the sampler steps on (§2).
//!
//! Forward: dx = −½β(t)x dt + √β(t) dW, β(t) = β_min + t(β_max − β_min), so x_t | x_0 ~ N(α_t x_0, σ_t² I)
//! with α_t = exp(−½∫₀ᵗβ) and σ_t² = 1 − α_t².

use crate::error::{Error, Result};

pub mod grid;

pub use grid::TimeGrid;

/// A variance-preserving schedule on t ∈ [0, 1]: everything the sampler needs is ln α(t) (σ² = 1 − α²,
/// β = −d ln α²/dt). Either the continuous linear-β schedule of our own files, or a pretrained
/// checkpoint's discrete table (maths §1′): N steps with ᾱ_i = Π_{j≤i}(1 − β_j), the label i trained at
/// t_i = (i + 1)/N, ln α(t) = ½ ln ᾱ interpolated piecewise linearly in t (ln α(0) = 0), β(t) piecewise
/// constant, and the label of t is N t − 1.
#[derive(Clone, Debug, PartialEq)]
pub struct VpSchedule(Kind);

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Linear { beta_min: f64, beta_max: f64 },
    Discrete(std::sync::Arc<Discrete>),
}

/// A discrete schedule's table.
#[derive(Debug, PartialEq)]
struct Discrete {
    /// How it was made, for messages and reports (e.g. `linear 1000 steps, beta 0.0001..0.02`).
    name: String,
    /// −ln ᾱ_i, i = 0 … N − 1 (increasing).
    neg_log_abar: Vec<f64>,
}

impl Default for VpSchedule {
    fn default() -> Self {
        VpSchedule(Kind::Linear { beta_min: 0.1, beta_max: 20.0 })
    }
}

impl serde::Serialize for VpSchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match &self.0 {
            Kind::Linear { beta_min, beta_max } => {
                let mut st = s.serialize_struct("VpSchedule", 2)?;
                st.serialize_field("beta_min", beta_min)?;
                st.serialize_field("beta_max", beta_max)?;
                st.end()
            }
            Kind::Discrete(d) => {
                let mut st = s.serialize_struct("VpSchedule", 2)?;
                st.serialize_field("discrete", &d.name)?;
                st.serialize_field("num_train_timesteps", &d.neg_log_abar.len())?;
                st.end()
            }
        }
    }
}

impl std::fmt::Display for VpSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Linear { beta_min, beta_max } => write!(f, "linear beta in [{beta_min}, {beta_max}]"),
            Kind::Discrete(d) => write!(f, "discrete {}", d.name),
        }
    }
}

impl VpSchedule {
    /// A checked linear schedule: 0 < β_min ≤ β_max, both finite.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min.is_finite() && beta_min > 0.0) {
            return Err(Error::param("beta_min", beta_min, "must be finite and > 0"));
        }
        if !(beta_max.is_finite() && beta_max >= beta_min) {
            return Err(Error::param("beta_max", beta_max, format!("must be finite and >= beta_min = {beta_min}")));
        }
        Ok(VpSchedule(Kind::Linear { beta_min, beta_max }))
    }

    /// A discrete schedule from its per-step β_i (each in (0, 1), at least 2 of them), named `name`.
    pub fn discrete(name: impl Into<String>, betas: &[f64]) -> Result<Self> {
        let name = name.into();
        if betas.len() < 2 || betas.len() > 1 << 20 {
            return Err(Error::param("num_train_timesteps", betas.len(), "need 2 to 2^20 steps"));
        }
        if let Some((i, b)) = betas.iter().enumerate().find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0)) {
            return Err(Error::param(format!("beta_{i} of {name}"), b, "each step's beta must lie in (0, 1)"));
        }
        let mut acc = 0.0;
        let neg_log_abar = betas.iter().map(|b| { acc -= (-b).ln_1p(); acc }).collect();
        Ok(VpSchedule(Kind::Discrete(std::sync::Arc::new(Discrete { name, neg_log_abar }))))
    }

    /// The per-step betas of diffusers' `beta_schedule` (`linear`, `scaled_linear`, `squaredcos_cap_v2`)
    /// for `n` steps from `beta_start` to `beta_end` (the latter two unused by the cosine schedule).
    pub fn diffusers_betas(schedule: &str, n: usize, beta_start: f64, beta_end: f64) -> Result<Vec<f64>> {
        if !(2..=1 << 20).contains(&n) {
            return Err(Error::param("num_train_timesteps", n, "need 2 to 2^20 steps"));
        }
        let lin = |a: f64, b: f64| (0..n).map(move |i| a + (b - a) * i as f64 / (n - 1) as f64);
        Ok(match schedule {
            "linear" => lin(beta_start, beta_end).collect(),
            "scaled_linear" => lin(beta_start.sqrt(), beta_end.sqrt()).map(|v| v * v).collect(),
            "squaredcos_cap_v2" => {
                let abar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n).map(|i| (1.0 - abar((i + 1) as f64 / n as f64) / abar(i as f64 / n as f64)).min(0.999)).collect()
            }
            other => return Err(Error::param("beta_schedule", other, "supported: linear, scaled_linear, squaredcos_cap_v2")),
        })
    }

    /// β at t = 0 (for a discrete schedule, its first segment's).
    pub fn beta_min(&self) -> f64 {
        self.beta(0.0)
    }

    /// β at t = 1 (for a discrete schedule, its last segment's).
    pub fn beta_max(&self) -> f64 {
        self.beta(1.0)
    }

    /// The number of discrete training steps N, for a discrete schedule.
    pub fn train_steps(&self) -> Option<usize> {
        match &self.0 {
            Kind::Linear { .. } => None,
            Kind::Discrete(d) => Some(d.neg_log_abar.len()),
        }
    }

    /// The network label of time t for a discrete schedule (N t − 1, fractional), else t.
    pub fn label(&self, t: f64) -> f64 {
        match &self.0 {
            Kind::Linear { .. } => t,
            Kind::Discrete(d) => d.neg_log_abar.len() as f64 * t - 1.0,
        }
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        match &self.0 {
            Kind::Linear { beta_min, beta_max } => beta_min + t * (beta_max - beta_min),
            Kind::Discrete(d) => {
                let n = d.neg_log_abar.len();
                let i = ((t * n as f64).ceil() as usize).clamp(1, n) - 1;
                let prev = if i == 0 { 0.0 } else { d.neg_log_abar[i - 1] };
                (d.neg_log_abar[i] - prev) * n as f64
            }
        }
    }

    /// ∫₀ᵗ β(u) du.
    pub fn int_beta(&self, t: f64) -> f64 {
        match &self.0 {
            Kind::Linear { beta_min, beta_max } => beta_min * t + 0.5 * t * t * (beta_max - beta_min),
            Kind::Discrete(d) => {
                let n = d.neg_log_abar.len();
                let x = t * n as f64;
                let i = (x.ceil() as usize).clamp(1, n) - 1;
                let (lo, hi) = (if i == 0 { 0.0 } else { d.neg_log_abar[i - 1] }, d.neg_log_abar[i]);
                lo + (x - i as f64) * (hi - lo)
            }
        }
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
        match &self.0 {
            Kind::Linear { beta_min, beta_max } => {
                let (beta_min, db) = (*beta_min, beta_max - beta_min);
                if db <= 1e-12 * beta_min {
                    b / beta_min
                } else {
                    // Stable root of ½db·t² + β_min·t − b = 0.
                    2.0 * b / (beta_min + (beta_min * beta_min + 2.0 * db * b).sqrt())
                }
            }
            Kind::Discrete(d) => {
                let v = &d.neg_log_abar;
                let n = v.len();
                let i = v.partition_point(|&x| x < b).min(n - 1);
                let (lo, hi) = (if i == 0 { 0.0 } else { v[i - 1] }, v[i]);
                (i as f64 + (b - lo) / (hi - lo)) / n as f64
            }
        }
    }

    /// Where the reverse process starts: t = 1 when the log-SNR there is ≥ −15 (the linear schedules:
    /// −10.05 for ours, −10.12 for DDPM's table); otherwise (cosine schedules, whose β grows without bound
    /// near 1: −19.8 for `squaredcos_cap_v2` at 1000 steps) the t where it is −10, as close to N(0, I) as
    /// DDPM's own start.
    pub fn t_max(&self) -> f64 {
        // log SNR = ln(α²/σ²) = −ln(e^{∫β} − 1), so log SNR = −L ⇔ ∫β = ln(1 + e^L).
        let at = |l: f64| l.exp().ln_1p();
        if self.int_beta(1.0) <= at(15.0) {
            1.0
        } else {
            self.t_of_int_beta(at(10.0)).min(1.0)
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
    fn discrete_tables_interpolate_invert_and_match_ddpm() {
        // DDPM's linear betas: ᾱ_999 = Π(1 − β_i) ≈ 4.04e-5 and label(t) = 1000 t − 1.
        let betas = VpSchedule::diffusers_betas("linear", 1000, 1e-4, 0.02).unwrap();
        let s = VpSchedule::discrete("ddpm", &betas).unwrap();
        let abar: f64 = betas.iter().map(|b| 1.0 - b).product();
        assert!((s.alpha(1.0).powi(2) - abar).abs() < 1e-12 * abar.max(1e-300) + 1e-15);
        assert!((s.alpha(0.001).powi(2) - (1.0 - betas[0])).abs() < 1e-15);
        assert_eq!(s.label(0.5), 499.0);
        for &t in &[1e-4, 0.0015, 0.3, 0.7777, 1.0] {
            assert!((s.t_of_int_beta(s.int_beta(t)) - t).abs() < 1e-9, "{t}");
        }
        // β(t) is the table's slope: −N ln(1 − β_i) on segment i.
        assert!((s.beta(0.5) - (-(1.0 - betas[499]).ln() * 1000.0)).abs() < 1e-9);
        // It is close to the continuous β_min = 0.1, β_max = 20 (maths §1′) but not equal.
        let c = VpSchedule::default();
        assert!((s.alpha(0.5) / c.alpha(0.5) - 1.0).abs() < 0.01);
        assert_eq!(s.t_max(), 1.0);
        // The cosine schedule's log-SNR at 1 is far below −10: the reverse process starts earlier.
        let cos = VpSchedule::discrete("cos", &VpSchedule::diffusers_betas("squaredcos_cap_v2", 1000, 0.0, 0.0).unwrap()).unwrap();
        let tm = cos.t_max();
        assert!(tm < 1.0 && ((cos.alpha(tm).powi(2) / cos.sigma2(tm)).ln() + 10.0).abs() < 1e-6, "{tm}");
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
