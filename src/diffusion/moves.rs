//! What keeps geometric targets (geometric mixtures, products, annealing) and power means right in high
//! dimension (maths §4a′–4a″, §4c): the drift u = −γ f + g² S whose γ minimises the variance of the Feynman–Kac weight
//! rate across the particles each step ([`DriftGamma`], [`gamma_star`]), and resample-move with a
//! Metropolis-adjusted Langevin step that needs only scores ([`MoveConfig`]; the log-density change
//! along a move is the trapezoidal line integral of the composed score).

use crate::error::{Error, Result};

/// The γ of the drift u = −γ f + g² S for geometric targets (maths §4a′). Any γ chosen from the particles
/// before a step is valid: the weight uses the same γ as the move.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DriftGamma {
    /// γ* = 1 + Cov_w(R, k) / Var_w(k) each step (R the weight rate at γ = 1, k = f·S/g²): the γ that
    /// makes the weighted variance of the weight rate smallest (clamped to [0, 2 max(Σc, 1)]).
    Adaptive,
    /// A fixed γ (1: the plain reverse SDE of the composed score, maths §4a).
    Fixed(f64),
}

impl DriftGamma {
    /// The default: adaptive.
    pub const DEFAULT: DriftGamma = DriftGamma::Adaptive;

    /// Check a fixed γ: finite.
    pub fn check(self) -> Result<Self> {
        match self {
            DriftGamma::Fixed(g) if !g.is_finite() => Err(Error::param("drift gamma", g, "must be finite (or adaptive)")),
            g => Ok(g),
        }
    }
}

impl serde::Serialize for DriftGamma {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            DriftGamma::Adaptive => s.serialize_str("adaptive"),
            DriftGamma::Fixed(g) => s.serialize_f64(*g),
        }
    }
}

impl std::str::FromStr for DriftGamma {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("adaptive") {
            return Ok(DriftGamma::Adaptive);
        }
        let g: f64 = s.trim().parse().map_err(|_| Error::param("drift gamma", s, "expected `adaptive` or a number (1 = plain drift)"))?;
        DriftGamma::Fixed(g).check()
    }
}

/// Metropolis-adjusted Langevin moves at fixed t after each step, for geometric targets (maths §4a″):
/// x′ = x + ε S(x) + √(2ε) z, accepted with the trapezoidal log-density change ½(S + S′)·(x′ − x). The
/// step is ε = 2 r² d / mean|S|² (for a target of local scale σ, a proposal noise of 2rσ per coordinate);
/// r adapts after every move toward the target acceptance and is capped at [`MoveConfig::R_MAX`] so
/// that proposals stay short enough for the trapezoidal rule (maths §4a″ has the measurement). Each move costs one score per model.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MoveConfig {
    per_step: usize,
    target_accept: f64,
}

impl MoveConfig {
    /// The largest step scale r: proposals move each coordinate by at most about 0.4 of the local scale
    /// (0.5 let them cross between modes 2 sd apart and biased the masses by 0.06, maths §4a″).
    pub const R_MAX: f64 = 0.2;
    /// The first move's step scale.
    pub const R_START: f64 = 0.1;
    /// One move per step, target acceptance 0.6.
    pub const DEFAULT: MoveConfig = MoveConfig { per_step: 1, target_accept: 0.6 };
    /// No moves.
    pub const NONE: MoveConfig = MoveConfig { per_step: 0, target_accept: 0.6 };

    /// `per_step` moves after every step (at most 64), adapted toward acceptance `target_accept` ∈ (0, 1).
    pub fn new(per_step: usize, target_accept: f64) -> Result<Self> {
        crate::limits::at_most("moves per step", per_step, 64)?;
        if !(target_accept > 0.0 && target_accept < 1.0) {
            return Err(Error::param("move acceptance target", target_accept, "must lie strictly between 0 and 1"));
        }
        Ok(MoveConfig { per_step, target_accept })
    }

    /// Moves per step.
    pub fn per_step(&self) -> usize {
        self.per_step
    }

    /// The acceptance rate the step size adapts toward.
    pub fn target_accept(&self) -> f64 {
        self.target_accept
    }
}

impl Default for MoveConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// γ* = 1 + Cov_w(r, k) / Var_w(k) for per-particle weight rates `r` (at γ = 1) and `k` = f·S/g², with
/// normalised weights `w`; `fallback` when k does not vary. Clamped to [0, `max`].
pub fn gamma_star(r: &[f64], k: &[f64], w: &[f64], fallback: f64, max: f64) -> f64 {
    let mean = |v: &[f64]| v.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
    let (mr, mk) = (mean(r), mean(k));
    let (mut cov, mut var) = (0.0, 0.0);
    for i in 0..r.len() {
        let dk = k[i] - mk;
        cov += w[i] * (r[i] - mr) * dk;
        var += w[i] * dk * dk;
    }
    let g = 1.0 + cov / var;
    if var > 1e-300 && g.is_finite() {
        g.clamp(0.0, max)
    } else {
        fallback
    }
}

/// log α of one MALA proposal x → x′ with scores S = S(x), S′ = S(x′) and step ε: the trapezoidal
/// log-density change ½(S + S′)·(x′ − x) plus the log ratio of the Gaussian proposal densities.
pub fn mala_log_accept(x: &[f64], xp: &[f64], s: &[f64], sp: &[f64], eps: f64) -> f64 {
    mala_log_accept_given(trapezoid(s, sp, x, xp), x, xp, s, sp, eps)
}

/// log α of one MALA proposal x → x′ whose log-density change `dlog` is known (power means: from the
/// ℓ_i carried along the move), with drift scores S, S′ at the two ends and step ε.
pub fn mala_log_accept_given(dlog: f64, x: &[f64], xp: &[f64], s: &[f64], sp: &[f64], eps: f64) -> f64 {
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for j in 0..x.len() {
        let dx = xp[j] - x[j];
        let f = dx - eps * s[j];
        let b = -dx - eps * sp[j];
        fwd += f * f;
        bwd += b * b;
    }
    dlog + (fwd - bwd) / (4.0 * eps)
}

/// The trapezoidal line integral ½(s + s′)·(x′ − x) of a score from x to x′ (exact when the density
/// is Gaussian).
pub fn trapezoid(s: &[f64], sp: &[f64], x: &[f64], xp: &[f64]) -> f64 {
    let mut acc = 0.0;
    for j in 0..x.len() {
        acc += 0.5 * (s[j] + sp[j]) * (xp[j] - x[j]);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_star_minimises_the_weighted_variance() {
        // r = 3 − 2k exactly: r + (1 − γ)k is constant at γ = −1 (clamped to 0) and at γ* = 1 + Cov/Var.
        let k = [0.5, 1.0, 2.0, 4.0];
        let w = [0.1, 0.2, 0.3, 0.4];
        let r: Vec<f64> = k.iter().map(|k| 3.0 + 0.5 * k).collect();
        assert!((gamma_star(&r, &k, &w, 1.0, 10.0) - 1.5).abs() < 1e-12);
        let r: Vec<f64> = k.iter().map(|k| 3.0 - 2.0 * k).collect();
        assert_eq!(gamma_star(&r, &k, &w, 1.0, 10.0), 0.0);
        assert_eq!(gamma_star(&r, &[1.0; 4], &w, 0.7, 10.0), 0.7);
    }

    #[test]
    fn mala_acceptance_is_exact_for_a_gaussian() {
        // For N(0, σ²) the trapezoidal rule is exact: log α = log π(x′) − log π(x) + log q(x|x′) − log q(x′|x).
        let (sig2, eps) = (0.7_f64, 0.3);
        let (x, xp) = ([0.4, -1.2], [1.1, 0.3]);
        let score = |v: &[f64; 2]| [-v[0] / sig2, -v[1] / sig2];
        let logp = |v: &[f64; 2]| -(v[0] * v[0] + v[1] * v[1]) / (2.0 * sig2);
        let logq = |to: &[f64; 2], from: &[f64; 2]| {
            let s = score(from);
            -((to[0] - from[0] - eps * s[0]).powi(2) + (to[1] - from[1] - eps * s[1]).powi(2)) / (4.0 * eps)
        };
        let want = logp(&xp) - logp(&x) + logq(&x, &xp) - logq(&xp, &x);
        assert!((mala_log_accept(&x, &xp, &score(&x), &score(&xp), eps) - want).abs() < 1e-12);
    }
}
