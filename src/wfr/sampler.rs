//! The Langevin / WFR / pure Fisher–Rao sampler on an energy (maths §7): transport by Langevin moves,
//! reaction by birth–death log-weights from the particles' own kernel density estimate.

#![allow(clippy::needless_range_loop)] // index loops over row-major [n, d] buffers read clearer here

use rayon::prelude::*;

use super::energy::Energy;
use super::kde::Kde;
use super::langevin::{eval, langevin_step, non_finite, Transport};
use crate::error::{Error, Result};
use crate::particles::{gather_rows, ParticleWeights, ResamplePolicy};
use crate::rng::Rng;

/// Settings of [`WfrSampler`]: Langevin is `lambda = 0`, pure Fisher–Rao is `transport = None`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct WfrConfig {
    /// Time step Δ > 0.
    pub dt: f64,
    /// Total time τ ≥ 0; the run takes `round(time/dt)` steps.
    pub time: f64,
    /// Reaction rate λ ≥ 0 (0: no birth–death).
    pub lambda: f64,
    /// Transport kernel.
    pub transport: Transport,
    /// Density estimate for the reaction.
    pub kde: Kde,
    /// Adaptive resampling rule (default: systematic when ESS < N/2).
    pub resample: ResamplePolicy,
}

impl WfrConfig {
    /// Plain Langevin (ULA, or MALA with `mala = true`), no reaction.
    pub fn langevin(dt: f64, time: f64, mala: bool) -> Self {
        WfrConfig {
            dt,
            time,
            lambda: 0.0,
            transport: if mala { Transport::Mala } else { Transport::Ula },
            kde: Kde::default(),
            resample: ResamplePolicy::default(),
        }
    }

    /// WFR: ULA transport plus birth–death at rate λ with the given KDE.
    pub fn wfr(dt: f64, time: f64, lambda: f64, kde: Kde) -> Self {
        WfrConfig { dt, time, lambda, transport: Transport::Ula, kde, resample: ResamplePolicy::default() }
    }

    /// Pure Fisher–Rao: birth–death only, particles fixed.
    pub fn fisher_rao(dt: f64, time: f64, lambda: f64, kde: Kde) -> Self {
        WfrConfig { dt, time, lambda, transport: Transport::None, kde, resample: ResamplePolicy::default() }
    }
}

/// Diagnostics of one step.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StepInfo {
    /// Step index (0 = the initial state).
    pub step: usize,
    /// Time after the step.
    pub t: f64,
    /// ESS after the reweighting, before resampling.
    pub ess: f64,
    /// Whether the particles were resampled.
    pub resampled: bool,
    /// Distinct ancestors if resampled, else N.
    pub unique_ancestors: usize,
    /// MALA acceptance rate (1 for ULA, 0 without transport).
    pub acceptance: f64,
    /// KDE bandwidth used (0 without reaction).
    pub bandwidth: f64,
}

/// What an observer sees after every step (and once before the first).
pub struct StepView<'a> {
    /// Particle positions, row-major [n, d].
    pub x: &'a [f64],
    /// Dimension d.
    pub dim: usize,
    /// The particle weights.
    pub weights: &'a ParticleWeights,
    /// This step's diagnostics.
    pub info: &'a StepInfo,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct WfrRun {
    /// Final positions [n, d].
    pub x: Vec<f64>,
    /// Dimension d.
    pub dim: usize,
    /// Final weights.
    pub weights: ParticleWeights,
    /// Per-step diagnostics (index 0 = initial state).
    pub trace: Vec<StepInfo>,
}

/// A validated Langevin / WFR / Fisher–Rao sampler (maths §9.1):
/// per step, transport (ULA/MALA), then `r_i = log ρ̂(x_i) + U(x_i)`,
/// `a_i −= λΔ (r_i − Σ_j W_j r_j)`, then [`ParticleWeights::step`] (adaptive resampling).
#[derive(Clone, Debug)]
pub struct WfrSampler {
    cfg: WfrConfig,
    steps: usize,
}

impl WfrSampler {
    /// Check the settings once.
    pub fn new(cfg: WfrConfig) -> Result<Self> {
        if !(cfg.dt.is_finite() && cfg.dt > 0.0) {
            return Err(Error::param("dt", cfg.dt, "the time step must be finite and > 0"));
        }
        if !(cfg.time.is_finite() && cfg.time >= 0.0) {
            return Err(Error::param("time", cfg.time, "must be finite and >= 0"));
        }
        let steps = (cfg.time / cfg.dt).round();
        if steps > 1e9 {
            return Err(Error::param("time / dt", steps, "more than 10⁹ steps; increase dt or shorten the run"));
        }
        if !(cfg.lambda.is_finite() && cfg.lambda >= 0.0) {
            return Err(Error::param("lambda", cfg.lambda, "the reaction rate must be finite and >= 0"));
        }
        if cfg.lambda * cfg.dt > 1.0 {
            return Err(Error::param("lambda·dt", cfg.lambda * cfg.dt, "must be <= 1 for the explicit reaction step"));
        }
        cfg.kde.validate()?;
        Ok(WfrSampler { cfg, steps: steps as usize })
    }

    /// The settings.
    pub fn config(&self) -> &WfrConfig {
        &self.cfg
    }

    /// Number of steps a run takes.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Run from positions `x0` ([n, d], equal weights), calling `observe` before the first step and after
    /// every step. All randomness comes from `rng`, drawn sequentially.
    pub fn run(
        &self,
        target: &dyn Energy,
        x0: Vec<f64>,
        rng: &mut Rng,
        observe: &mut dyn FnMut(&StepView),
    ) -> Result<WfrRun> {
        self.run_weighted(target, x0, None, rng, observe)
    }

    /// Like [`WfrSampler::run`], but the initial ensemble may carry log-weights `log_w0` (e.g.
    /// `log ρ0(x) − log q(x)` for particles drawn from q to represent ρ0).
    pub fn run_weighted(
        &self,
        target: &dyn Energy,
        x0: Vec<f64>,
        log_w0: Option<Vec<f64>>,
        rng: &mut Rng,
        observe: &mut dyn FnMut(&StepView),
    ) -> Result<WfrRun> {
        let d = target.dim();
        if x0.is_empty() || !x0.len().is_multiple_of(d) {
            return Err(Error::param("initial particles", x0.len(), format!("need n >= 1 rows of d = {d} values")));
        }
        if x0.iter().any(|v| !v.is_finite()) {
            return Err(Error::param("initial particles", "non-finite", "all initial positions must be finite"));
        }
        let n = x0.len() / d;
        let cfg = &self.cfg;
        let mut x = x0;
        let mut u = vec![0.0; n];
        let mut g = vec![0.0; n * d];
        eval(target, &x, &mut u, &mut g, 0, 0.0)?;
        let mut pw = ParticleWeights::new(n);
        if let Some(lw) = log_w0 {
            if lw.len() != n {
                return Err(Error::param("initial log-weights", lw.len(), format!("need one per particle ({n})")));
            }
            if lw.iter().any(|v| v.is_nan() || *v == f64::INFINITY) || lw.iter().all(|v| *v == f64::NEG_INFINITY) {
                return Err(Error::param("initial log-weights", "NaN/+inf/all -inf", "must be < +inf, not NaN, and not all -inf"));
            }
            pw.set_log_weights(lw);
        }
        let mut trace = Vec::with_capacity(self.steps + 1);
        let info0 = StepInfo { step: 0, t: 0.0, ess: pw.ess(), unique_ancestors: n, ..Default::default() };
        observe(&StepView { x: &x, dim: d, weights: &pw, info: &info0 });
        trace.push(info0);
        let mut logrho = vec![0.0; n];
        let mut inc = vec![0.0; n];
        for step in 1..=self.steps {
            let t = step as f64 * cfg.dt;
            let acceptance = match cfg.transport {
                Transport::None => 0.0,
                Transport::Ula => langevin_step(target, &mut x, &mut u, &mut g, cfg.dt, false, rng, step, t)?,
                Transport::Mala => langevin_step(target, &mut x, &mut u, &mut g, cfg.dt, true, rng, step, t)?,
            };
            let mut info = StepInfo { step, t, ess: pw.ess(), unique_ancestors: n, acceptance, ..Default::default() };
            if cfg.lambda > 0.0 {
                let w = pw.normalized();
                info.bandwidth = cfg.kde.log_density(&x, d, &w, &mut logrho)?;
                let rbar: f64 = (0..n).map(|i| w[i] * (logrho[i] + u[i])).sum();
                if !rbar.is_finite() {
                    return Err(non_finite("reaction rate log ρ̂ + U", step, t));
                }
                let c = cfg.lambda * cfg.dt;
                inc.par_iter_mut().enumerate().for_each(|(i, a)| *a = -c * (logrho[i] + u[i] - rbar));
                let ws = pw.step(&inc, &cfg.resample, t, rng);
                info.ess = ws.ess;
                info.resampled = ws.resampled;
                info.unique_ancestors = ws.unique_ancestors;
                if let Some(idx) = ws.ancestors {
                    x = gather_rows(&x, d, &idx);
                    g = gather_rows(&g, d, &idx);
                    u = gather_rows(&u, 1, &idx);
                }
            }
            observe(&StepView { x: &x, dim: d, weights: &pw, info: &info });
            trace.push(info);
        }
        Ok(WfrRun { x, dim: d, weights: pw, trace })
    }
}

