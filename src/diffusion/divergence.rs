//! Divergence estimates ∇·s(x) = tr J_s(x) (maths §5): exact (the model's own, or d reverse-mode
//! passes), and Hutchinson's unbiased estimator E[εᵀ J ε] with Rademacher or Gaussian probes, where
//! εᵀ J ε comes from a reverse-mode vector–Jacobian product or from central differences of the score.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{for_chunks, ScoreModel};
use crate::rng::{self, Rng};

/// Probe distribution for Hutchinson's estimator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    /// ±1 entries: variance 2 Σ_{i≠j} J_ij² per probe (the lowest).
    #[default]
    Rademacher,
    /// N(0, 1) entries: adds 2 Σ J_ii².
    Gaussian,
}

impl FromStr for Probe {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rademacher" => Ok(Probe::Rademacher),
            "gaussian" => Ok(Probe::Gaussian),
            _ => Err(Error::param("probe", s, "expected rademacher or gaussian")),
        }
    }
}

/// How divergences are obtained. A value is always valid: build it with [`DivergenceEstimator::exact`],
/// [`DivergenceEstimator::vjp`], [`DivergenceEstimator::fd`] or [`DivergenceEstimator::new`], which check
/// the probe count and the step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct DivergenceEstimator(Estimator);

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Estimator {
    /// The model's exact divergence, else d reverse-mode passes with the basis vectors.
    Exact,
    /// Hutchinson with reverse-mode VJPs: one score-gradient pass per probe.
    Vjp { probes: usize, probe: Probe },
    /// Hutchinson with central differences εᵀ(s(x + hε) − s(x − hε))/(2h): two forwards per probe, O(h²) bias.
    Fd { probes: usize, probe: Probe, step: f64 },
}

impl Default for DivergenceEstimator {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for DivergenceEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Estimator::Exact => f.write_str("exact"),
            Estimator::Vjp { probes, probe } => write!(f, "vjp ({probes} {probe:?} probes)"),
            Estimator::Fd { probes, probe, step } => write!(f, "fd ({probes} {probe:?} probes, h = {step})"),
        }
    }
}

impl DivergenceEstimator {
    /// One Rademacher probe by a reverse-mode VJP.
    pub const DEFAULT: DivergenceEstimator = DivergenceEstimator(Estimator::Vjp { probes: 1, probe: Probe::Rademacher });

    /// A checked estimator from its name (`exact`, `vjp`, `fd`), probe count, probe kind and FD step.
    pub fn new(kind: &str, probes: usize, probe: Probe, step: f64) -> Result<Self> {
        if probes == 0 {
            return Err(Error::param("probes", probes, "Hutchinson needs at least one probe"));
        }
        match kind.to_ascii_lowercase().as_str() {
            "exact" => Ok(Self::exact()),
            "vjp" => Self::vjp(probes, probe),
            "fd" => Self::fd(probes, probe, step),
            _ => Err(Error::param("divergence estimator", kind, "expected exact, vjp or fd")),
        }
    }

    /// The model's exact divergence, else d reverse-mode passes with the basis vectors.
    pub fn exact() -> Self {
        DivergenceEstimator(Estimator::Exact)
    }

    /// Hutchinson with reverse-mode VJPs, `probes` ≥ 1 per step.
    pub fn vjp(probes: usize, probe: Probe) -> Result<Self> {
        if probes == 0 {
            return Err(Error::param("probes", probes, "Hutchinson needs at least one probe"));
        }
        Ok(DivergenceEstimator(Estimator::Vjp { probes, probe }))
    }

    /// Hutchinson with central differences of step h (finite, > 0), `probes` ≥ 1 per step.
    pub fn fd(probes: usize, probe: Probe, step: f64) -> Result<Self> {
        if probes == 0 {
            return Err(Error::param("probes", probes, "Hutchinson needs at least one probe"));
        }
        if !(step.is_finite() && step > 0.0) {
            return Err(Error::param("finite-difference step", step, "must be finite and > 0"));
        }
        Ok(DivergenceEstimator(Estimator::Fd { probes, probe, step }))
    }

    /// Check that `model` supports this estimator.
    pub fn check(&self, model: &dyn ScoreModel) -> Result<()> {
        match self.0 {
            Estimator::Exact if !model.has_divergence() && !model.has_vjp() => Err(model.unsupported(
                "an exact divergence or reverse-mode gradients",
                "use --divergence fd (Hutchinson with central differences)",
            )),
            Estimator::Vjp { .. } if !model.has_vjp() => {
                Err(model.unsupported("reverse-mode vector-Jacobian products", "use --divergence fd"))
            }
            _ => Ok(()),
        }
    }

    /// Score evaluations (per particle) one call of [`Self::estimate`] costs, counting a VJP as one.
    pub fn cost(&self, model: &dyn ScoreModel) -> usize {
        match self.0 {
            Estimator::Exact => {
                if model.has_divergence() {
                    1
                } else {
                    model.dim()
                }
            }
            Estimator::Vjp { probes, .. } => probes,
            Estimator::Fd { probes, .. } => 2 * probes,
        }
    }

    /// Divergences of `model`'s score at the batch `x` (n × d) and time t, into `out` (n). Probes are
    /// drawn from a keyed stream whose key comes from `rng` ([`crate::rng::par_fill_normal`]).
    pub fn estimate(&self, model: &dyn ScoreModel, x: &[f64], t: f64, rng: &mut Rng, out: &mut [f64]) -> Result<()> {
        let d = model.dim();
        let n = out.len();
        match self.0 {
            Estimator::Exact if model.has_divergence() => for_chunks(model, x, out, 1, |_, xc, oc| model.divergence(xc, t, oc)),
            Estimator::Exact => {
                let mut basis = vec![0.0; n * d];
                let mut jv = vec![0.0; n * d];
                out.iter_mut().for_each(|o| *o = 0.0);
                for j in 0..d {
                    basis.iter_mut().enumerate().for_each(|(i, b)| *b = if i % d == j { 1.0 } else { 0.0 });
                    vjp_batch(model, x, t, &basis, &mut jv)?;
                    for b in 0..n {
                        out[b] += jv[b * d + j];
                    }
                }
                Ok(())
            }
            Estimator::Vjp { probes, probe } => {
                let mut eps = vec![0.0; n * d];
                let mut jv = vec![0.0; n * d];
                out.iter_mut().for_each(|o| *o = 0.0);
                for _ in 0..probes {
                    draw(probe, rng, &mut eps);
                    vjp_batch(model, x, t, &eps, &mut jv)?;
                    accumulate(out, &eps, &jv, d, 1.0 / probes as f64);
                }
                Ok(())
            }
            Estimator::Fd { probes, probe, step } => {
                let mut eps = vec![0.0; n * d];
                let mut xp = vec![0.0; n * d];
                let mut xm = vec![0.0; n * d];
                let mut sp = vec![0.0; n * d];
                let mut sm = vec![0.0; n * d];
                out.iter_mut().for_each(|o| *o = 0.0);
                for _ in 0..probes {
                    draw(probe, rng, &mut eps);
                    xp.par_iter_mut().zip(xm.par_iter_mut()).zip(x.par_iter().zip(eps.par_iter())).for_each(|((p, m), (xi, e))| {
                        *p = xi + step * e;
                        *m = xi - step * e;
                    });
                    crate::model::batch_score(model, &xp, t, &mut sp)?;
                    crate::model::batch_score(model, &xm, t, &mut sm)?;
                    sp.par_iter_mut().zip(sm.par_iter()).for_each(|(p, m)| *p -= m);
                    accumulate(out, &eps, &sp, d, 1.0 / (2.0 * step * probes as f64));
                }
                Ok(())
            }
        }
    }
}

fn draw(probe: Probe, rng: &mut Rng, eps: &mut [f64]) {
    match probe {
        Probe::Rademacher => rng::par_fill_rademacher(rng, eps),
        Probe::Gaussian => rng::par_fill_normal(rng, eps),
    }
}

/// out_b += scale · ε_b · u_b.
fn accumulate(out: &mut [f64], eps: &[f64], u: &[f64], d: usize, scale: f64) {
    out.par_iter_mut().zip(eps.par_chunks(d).zip(u.par_chunks(d))).for_each(|(o, (e, v))| *o += scale * crate::lanes::dot(e, v));
}

fn vjp_batch(model: &dyn ScoreModel, x: &[f64], t: f64, v: &[f64], out: &mut [f64]) -> Result<()> {
    let d = model.dim();
    for_chunks(model, x, out, d, |row0, xc, oc| model.vjp(xc, t, &v[row0 * d..row0 * d + xc.len()], oc))
}
