//! Compositions of K score models (maths §4): for each particle, from the models' scores s_i, the
//! tracked log-densities ℓ_i and (where needed) the divergences ∇·s_i, the drift score ŝ the sampler
//! moves with and the Feynman–Kac log-weight increment.
//!
//! The weight rate is split as G = A ∇·f + g² R(x, t): the sampler integrates the x-independent part
//! exactly and R with the trapezoidal rule over each step.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How a linear mixture is sampled (§4b).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MixtureMethod {
    /// Drift Σ w_i s_i with state-dependent weights from tracked log-densities: exact, no FK weights.
    #[default]
    State,
    /// Fixed-coefficient drift Σ π_i s_i plus the Fisher–Rao correction weights (needs divergences).
    Fr,
    /// Fixed-coefficient drift, no weights: biased; an ablation that shows what the correction buys.
    Naive,
}

impl FromStr for MixtureMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "state" => Ok(MixtureMethod::State),
            "fr" => Ok(MixtureMethod::Fr),
            "naive" => Ok(MixtureMethod::Naive),
            _ => Err(Error::param("mixture method", s, "expected state, fr or naive")),
        }
    }
}

impl fmt::Display for MixtureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MixtureMethod::State => "state",
            MixtureMethod::Fr => "fr",
            MixtureMethod::Naive => "naive",
        })
    }
}

/// A checked composition of K models. Build it with the constructors (or [`CompositionSpec::build`]),
/// which validate once; a value cannot be invalid.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct Composition(Kind);

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Kind {
    /// ρ_t = Σ π_i q_{i,t} (linear, "OR") mixture. `lambda` (fr only): the drift's coefficients are
    /// c ∝ π·q^λ, from fixed π (0, score averaging) toward the exact mixture score (1).
    Mixture {
        weights: Vec<f64>,
        method: MixtureMethod,
        #[serde(skip_serializing_if = "is_zero")]
        lambda: f64,
    },
    /// ρ_t = (Σ a_i q_{i,t}^{1/m})^m: m = 1 linear, m = 2 Fisher–Rao (Hellinger), m → ∞ geometric.
    Power { weights: Vec<f64>, m: f64 },
    /// ρ_t ∝ Π q_{i,t}^{c_i}: geometric mixture (c = (1−β, β)), product (c = 1), annealing (one model, c = γ).
    Geometric { exponents: Vec<f64> },
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn check_weights(name: &str, w: &[f64]) -> Result<Vec<f64>> {
    if w.is_empty() {
        return Err(Error::param(name, "[]", "need one weight per model"));
    }
    if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(Error::param(name, bad, "weights must be finite and >= 0"));
    }
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        return Err(Error::param(name, format!("{w:?}"), "weights must not all be zero"));
    }
    Ok(w.iter().map(|v| v / total).collect())
}

/// Two-model weights (1 − β, β) from a share β ∈ [0, 1].
pub fn beta_pair(beta: f64) -> Result<Vec<f64>> {
    if !(beta.is_finite() && (0.0..=1.0).contains(&beta)) {
        return Err(Error::param("beta", beta, "the second model's share must lie in [0, 1]"));
    }
    Ok(vec![1.0 - beta, beta])
}

impl Composition {
    /// Linear mixture with weights π (normalised here).
    pub fn mixture(weights: &[f64], method: MixtureMethod) -> Result<Self> {
        Ok(Composition(Kind::Mixture { weights: check_weights("mixture weights", weights)?, method, lambda: 0.0 }))
    }

    /// The Fisher–Rao-corrected mixture with a partly state-dependent drift: coefficients
    /// c_i ∝ π_i exp(λ ℓ_i), i.e. ∝ π_i q_i^λ, for λ ∈ [0, 1]. λ = 0 is [`MixtureMethod::Fr`]'s fixed π
    /// (score averaging); λ = 1 is the exact mixture score (the weights then stay constant, as with
    /// `state`). The weights correct any λ to the same target (maths §4b).
    pub fn mixture_fr_tempered(weights: &[f64], lambda: f64) -> Result<Self> {
        if !(lambda.is_finite() && (0.0..=1.0).contains(&lambda)) {
            return Err(Error::param("fr drift lambda", lambda, "must lie in [0, 1] (0: fixed weights, 1: the exact mixture score)"));
        }
        Ok(Composition(Kind::Mixture { weights: check_weights("mixture weights", weights)?, method: MixtureMethod::Fr, lambda }))
    }

    /// Power mean with weights a (normalised) and exponent m ≥ 1.
    pub fn power(weights: &[f64], m: f64) -> Result<Self> {
        if !(m.is_finite() && m >= 1.0) {
            return Err(Error::param("power-mean exponent m", m, "must be finite and >= 1 (1 = linear mixture, 2 = Fisher-Rao mixture)"));
        }
        Ok(Composition(Kind::Power { weights: check_weights("power-mean weights", weights)?, m }))
    }

    /// Geometric composition Π q_i^{c_i}, c_i ≥ 0 not all zero.
    pub fn geometric(exponents: &[f64]) -> Result<Self> {
        check_weights("geometric exponents", exponents)?;
        Ok(Composition(Kind::Geometric { exponents: exponents.to_vec() }))
    }

    /// Product of K models (all exponents 1).
    pub fn product(k: usize) -> Result<Self> {
        if k < 2 {
            return Err(Error::param("models for a product", k, "a product needs at least two models"));
        }
        Ok(Composition(Kind::Geometric { exponents: vec![1.0; k] }))
    }

    /// One model raised to the power γ > 0 (γ > 1 sharpens, γ < 1 flattens).
    pub fn anneal(gamma: f64) -> Result<Self> {
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(Error::param("anneal exponent gamma", gamma, "must be finite and > 0"));
        }
        Ok(Composition(Kind::Geometric { exponents: vec![gamma] }))
    }

    /// Whether the target is geometric (Π q_i^{c_i}: geometric mixture, product, annealing), whose drift
    /// score Σ c_i s_i is the target's own score.
    pub fn is_geometric(&self) -> bool {
        matches!(self.0, Kind::Geometric { .. })
    }

    /// Whether the drift's γ and the Metropolis-adjusted moves apply (maths §4a′–4a″, §4c): weighted
    /// geometric targets (geometric, product, anneal with γ ≠ 1) and power means with m > 1, whose
    /// drift score ŝ is the target's own score ∇ log ρ_t.
    pub fn moves_apply(&self) -> bool {
        match &self.0 {
            Kind::Geometric { .. } => self.is_weighted(),
            Kind::Power { m, .. } => *m > 1.0,
            Kind::Mixture { .. } => false,
        }
    }

    /// For power means, log ρ = m log Σ_i a_i exp(ℓ_i/m) at tracked log-densities ℓ (the target's
    /// log-density up to a constant, for the Metropolis moves' acceptance); `None` otherwise.
    pub fn power_log_density(&self, ell: &[f64]) -> Option<f64> {
        match &self.0 {
            Kind::Power { weights, m } => {
                let mx = weights.iter().zip(ell).filter(|(a, _)| **a > 0.0).map(|(_, l)| l / m).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = weights.iter().zip(ell).filter(|(a, _)| **a > 0.0).map(|(a, l)| a * (l / m - mx).exp()).sum();
                Some(m * (mx + sum.ln()))
            }
            _ => None,
        }
    }

    /// The sampling method, for linear mixtures.
    pub fn mixture_method(&self) -> Option<MixtureMethod> {
        match &self.0 {
            Kind::Mixture { method, .. } => Some(*method),
            _ => None,
        }
    }

    /// Number of models the composition takes.
    pub fn n_models(&self) -> usize {
        match &self.0 {
            Kind::Mixture { weights, .. } | Kind::Power { weights, .. } => weights.len(),
            Kind::Geometric { exponents } => exponents.len(),
        }
    }

    /// Whether per-particle log-densities ℓ_i are tracked.
    pub fn tracks_log_density(&self) -> bool {
        matches!(self.0, Kind::Mixture { method: MixtureMethod::State | MixtureMethod::Fr, .. } | Kind::Power { .. })
    }

    /// Whether particles carry non-trivial Feynman–Kac weights.
    pub fn is_weighted(&self) -> bool {
        match &self.0 {
            Kind::Mixture { method, .. } => *method == MixtureMethod::Fr,
            Kind::Power { m, .. } => *m > 1.0,
            Kind::Geometric { exponents } => !(exponents.len() == 1 && exponents[0] == 1.0),
        }
    }

    /// Whether divergences ∇·s_i are needed at noise scale η: for the Fisher–Rao correction, and for
    /// ℓ tracking when σ ≠ g.
    pub fn needs_divergence(&self, eta: f64) -> bool {
        matches!(self.0, Kind::Mixture { method: MixtureMethod::Fr, .. }) || (self.tracks_log_density() && eta != 1.0)
    }

    /// Precision of the composed prior at t = 1: Σ c_i for geometric targets (N(0, I/Σc)), else 1.
    pub fn prior_precision(&self) -> f64 {
        match &self.0 {
            Kind::Geometric { exponents } => exponents.iter().sum(),
            _ => 1.0,
        }
    }

    /// log Z_1, the normaliser of the composed target at t = 1 when every q_{i,1} = N(0, I) in d
    /// dimensions: (d/2)((1 − C) ln 2π − ln C) for geometric targets, 0 otherwise.
    pub fn log_z_prior(&self, d: usize) -> f64 {
        match &self.0 {
            Kind::Geometric { exponents } => {
                let c: f64 = exponents.iter().sum();
                0.5 * d as f64 * ((1.0 - c) * (2.0 * std::f64::consts::PI).ln() - c.ln())
            }
            _ => 0.0,
        }
    }

    /// State-dependent weights w_i from the tracked ℓ_i (mixture: softmax(log π + ℓ); power:
    /// softmax(log a + ℓ/m)). Written into `w`.
    pub fn state_weights(&self, ell: &[f64], w: &mut [f64]) {
        let (coef, scale) = match &self.0 {
            Kind::Mixture { weights, .. } => (weights, 1.0),
            Kind::Power { weights, m } => (weights, 1.0 / m),
            Kind::Geometric { exponents } => {
                w.copy_from_slice(exponents);
                return;
            }
        };
        softmax_scaled(coef, ell, scale, w);
    }

    /// The coefficient A of ∇·f in the weight rate G = A ∇·f + g² R: Σc − 1 for geometric targets, 0
    /// otherwise. ∇·f = −½β d does not depend on x, so this part is integrated exactly.
    pub fn div_f_coefficient(&self) -> f64 {
        match &self.0 {
            Kind::Geometric { exponents } => exponents.iter().sum::<f64>() - 1.0,
            _ => 0.0,
        }
    }

    /// One particle's drift score ŝ (into `drift`) and the state-dependent part R of its log-weight
    /// rate G = A ∇·f + g² R (maths §4):
    ///
    /// - geometric: R = ½(|Σ c_i s_i|² − Σ c_i |s_i|²), ŝ = Σ c_i s_i;
    /// - power mean: R = −½(1 − 1/m) Σ w_i |s_i − ŝ|², ŝ = Σ w_i s_i, w = softmax(log a + ℓ/m);
    /// - mixture, fr: R = κ [Σ(c_i − w_i)∇·s_i + λ Σ c_i |s_i − ŝ|² + ŝ·s_mix − Σ w_i |s_i|²], ŝ = Σ c_i s_i,
    ///   c = softmax(log π + λℓ) (c = π at λ = 0), κ = (1 + η²)/2;
    /// - mixture, state: ŝ = Σ w_i s_i, R = 0; naive: ŝ = Σ π_i s_i, R = 0.
    ///
    /// `scores[i]` is s_i at the particle, `ell` its ℓ_i, `div` its ∇·s_i (when
    /// [`Self::needs_divergence`]), `w` scratch of length K.
    #[allow(clippy::too_many_arguments)]
    pub fn drift_and_rate(&self, scores: &[&[f64]], ell: &[f64], div: Option<&[f64]>, kappa: f64, w: &mut [f64], drift: &mut [f64]) -> f64 {
        let d = drift.len();
        let k = scores.len();
        let combine = |c: &[f64], out: &mut [f64]| {
            out.iter_mut().for_each(|o| *o = 0.0);
            for i in 0..k {
                if c[i] != 0.0 {
                    for j in 0..d {
                        out[j] += c[i] * scores[i][j];
                    }
                }
            }
        };
        let sq = crate::lanes::norm2;
        match &self.0 {
            Kind::Mixture { weights, method, lambda } => match method {
                MixtureMethod::State => {
                    self.state_weights(ell, w);
                    combine(w, drift);
                    0.0
                }
                MixtureMethod::Naive => {
                    combine(weights, drift);
                    0.0
                }
                MixtureMethod::Fr => {
                    // ŝ = Σ c_i s_i with c = π at λ = 0, else c = softmax(log π + λℓ); then
                    // ∇·ŝ = Σ c_i ∇·s_i + Σ ∇c_i·s_i, and ∇c_i = λ c_i (s_i − ŝ) since ∇ℓ_i = s_i.
                    self.state_weights(ell, w);
                    let (mut small, mut large) = ([0.0f64; 8], Vec::new());
                    let c: &[f64] = if *lambda == 0.0 {
                        weights
                    } else {
                        let c = if k <= 8 {
                            &mut small[..k]
                        } else {
                            large.resize(k, 0.0);
                            &mut large[..]
                        };
                        softmax_scaled(weights, ell, *lambda, c);
                        c
                    };
                    combine(c, drift);
                    let div = div.expect("divergences are computed for the fr method");
                    let mut g = 0.0;
                    for i in 0..k {
                        let spread = if *lambda == 0.0 { 0.0 } else { lambda * c[i] * crate::lanes::dist2(scores[i], drift) };
                        g += (c[i] - w[i]) * div[i] + spread - w[i] * sq(scores[i]) + w[i] * crate::lanes::dot(drift, scores[i]);
                    }
                    kappa * g
                }
            },
            Kind::Power { m, .. } => {
                self.state_weights(ell, w);
                combine(w, drift);
                let mut var = 0.0;
                for i in 0..k {
                    var += w[i] * crate::lanes::dist2(scores[i], drift);
                }
                -0.5 * (1.0 - 1.0 / m) * var
            }
            Kind::Geometric { exponents } => {
                combine(exponents, drift);
                let mut q = sq(drift);
                for i in 0..k {
                    q -= exponents[i] * sq(scores[i]);
                }
                0.5 * q
            }
        }
    }
}

/// w_i ∝ coef_i exp(scale·ℓ_i), normalised, shifted by the largest exponent among the coef_i > 0 (no
/// logarithm of coef per call: the largest term is coef_i·1 > 0, so the sum cannot underflow to zero).
fn softmax_scaled(coef: &[f64], ell: &[f64], scale: f64, w: &mut [f64]) {
    let mut mx = f64::NEG_INFINITY;
    for i in 0..w.len() {
        if coef[i] > 0.0 {
            mx = mx.max(scale * ell[i]);
        }
    }
    let mut tot = 0.0;
    for i in 0..w.len() {
        w[i] = if coef[i] > 0.0 { coef[i] * crate::lanes::exp(scale * ell[i] - mx) } else { 0.0 };
        tot += w[i];
    }
    w.iter_mut().for_each(|v| *v /= tot);
}

/// The families a user picks by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ComposeKind {
    /// Linear mixture Σ π_i q_i (weights from --beta or --weights; method from --method).
    Mixture,
    /// Power mean (Σ a_i q_i^{1/m})^m (m = 1: the mixture; m → ∞: the maximum).
    Power,
    /// Geometric mixture Π q_i^{c_i} (exponents from --beta or --weights).
    Geometric,
    /// Product Π q_i (every exponent 1).
    Product,
    /// One model to the power --gamma (q^γ: sharper for γ > 1).
    Anneal,
}

impl FromStr for ComposeKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mixture" => Ok(ComposeKind::Mixture),
            "power" => Ok(ComposeKind::Power),
            "geometric" => Ok(ComposeKind::Geometric),
            "product" => Ok(ComposeKind::Product),
            "anneal" => Ok(ComposeKind::Anneal),
            _ => Err(Error::param("composition", s, "expected mixture, power, geometric, product or anneal")),
        }
    }
}

/// Everything that picks a composition, as a user states it. [`CompositionSpec::build`] checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct CompositionSpec {
    pub kind: ComposeKind,
    /// Number of models given.
    pub n_models: usize,
    /// Explicit weights or exponents, one per model (overrides `beta`).
    pub coefficients: Option<Vec<f64>>,
    /// The second model's share for two models: weights or exponents (1 − β, β); 0.5 when absent.
    pub beta: Option<f64>,
    pub method: MixtureMethod,
    /// Power-mean exponent.
    pub m: f64,
    /// Annealing exponent.
    pub gamma: f64,
    /// The fr method's drift coefficients ∝ π·q^λ (0: fixed π; see [`Composition::mixture_fr_tempered`]).
    pub fr_lambda: f64,
}

impl CompositionSpec {
    /// The checked composition.
    pub fn build(&self) -> Result<Composition> {
        let k = self.n_models;
        let coef = || -> Result<Vec<f64>> {
            match &self.coefficients {
                Some(c) if c.len() != k => Err(Error::param(
                    "weights",
                    format!("{c:?}"),
                    format!("give one weight or exponent per model ({k} models)"),
                )),
                Some(c) => Ok(c.clone()),
                None if k == 2 => beta_pair(self.beta.unwrap_or(0.5)),
                None if self.beta.is_some() => Err(Error::param(
                    "beta",
                    self.beta.unwrap_or_default(),
                    format!("beta is the second model's share and needs exactly two models ({k} given); give one weight per model instead"),
                )),
                None => Ok(vec![1.0 / k as f64; k]),
            }
        };
        match self.kind {
            ComposeKind::Mixture | ComposeKind::Power | ComposeKind::Geometric if k < 2 => Err(Error::param(
                "number of models",
                k,
                "mixtures, power means and geometric mixtures compose two or more models (use anneal for one)",
            )),
            ComposeKind::Mixture if self.fr_lambda != 0.0 && self.method != MixtureMethod::Fr => Err(Error::param(
                "fr drift lambda",
                self.fr_lambda,
                "applies to the fr method only (choose the fr method, or leave lambda at 0)",
            )),
            ComposeKind::Mixture if self.method == MixtureMethod::Fr => Composition::mixture_fr_tempered(&coef()?, self.fr_lambda),
            ComposeKind::Mixture => Composition::mixture(&coef()?, self.method),
            _ if self.fr_lambda != 0.0 => Err(Error::param("fr drift lambda", self.fr_lambda, "applies to mixtures by the fr method only")),
            ComposeKind::Power => Composition::power(&coef()?, self.m),
            ComposeKind::Geometric => Composition::geometric(&coef()?),
            ComposeKind::Product => Composition::product(k),
            ComposeKind::Anneal if k != 1 => Err(Error::param("number of models", k, "anneal takes exactly one model")),
            ComposeKind::Anneal => Composition::anneal(self.gamma),
        }
    }
}
