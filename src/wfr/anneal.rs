//! Annealed SMC on an energy (maths §7): a geometric path from a Gaussian to π, β chosen adaptively by the
//! conditional ESS, Langevin moves at each level, and the log Ẑ estimate.

#![allow(clippy::needless_range_loop)] // index loops over row-major [n, d] buffers read clearer here

use rayon::prelude::*;

use super::energy::Energy;
use super::langevin::{eval, langevin_step, non_finite, Transport};
use super::MAX_PARTICLES;
use crate::error::{Error, Result};
use crate::particles::{gather_rows, log_sum_exp, ParticleWeights, ResamplePolicy};
use crate::rng::{self, Rng};

/// Settings of [`AnnealSampler`]: geometric path from N(0, σ0² I) to π ∝ exp(−U)
/// (`U_β = (1−β)‖x‖²/(2σ0²) + βU`), β chosen adaptively so the conditional ESS of each increment is
/// `cess_target`·N, then resampling by `resample`, then `moves` Langevin moves targeting π_β.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct AnnealConfig {
    /// Number of particles N.
    pub particles: usize,
    /// Standard deviation σ0 of the Gaussian start.
    pub sigma0: f64,
    /// Conditional-ESS fraction per level, in (0, 1).
    pub cess_target: f64,
    /// Langevin moves per level.
    pub moves: usize,
    /// Move kernel: `Mala` (exact; default) or `Ula` (biased by O(step)).
    pub transport: Transport,
    /// Initial Langevin step size (MALA adapts it per level towards 50–65% acceptance).
    pub step: f64,
    /// Resampling rule (default ESS < N/2, systematic).
    pub resample: ResamplePolicy,
    /// Refuse to run more than this many levels.
    pub max_levels: usize,
}

impl Default for AnnealConfig {
    fn default() -> Self {
        AnnealConfig {
            particles: 2048,
            sigma0: 1.0,
            cess_target: 0.9,
            moves: 5,
            transport: Transport::Mala,
            step: 0.05,
            resample: ResamplePolicy::default(),
            max_levels: 10_000,
        }
    }
}

/// One annealing level's diagnostics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LevelInfo {
    /// Level index (1-based).
    pub level: usize,
    /// β after this level.
    pub beta: f64,
    /// ESS after the reweighting.
    pub ess: f64,
    /// Whether resampled.
    pub resampled: bool,
    /// Distinct ancestors if resampled, else N.
    pub unique_ancestors: usize,
    /// Mean MALA acceptance of this level's moves.
    pub acceptance: f64,
    /// Step size used.
    pub step: f64,
    /// log Ẑ so far (including the Gaussian start's normaliser).
    pub log_z: f64,
}

/// The result of an annealed run.
#[derive(Clone, Debug)]
pub struct AnnealRun {
    /// Final positions [n, d].
    pub x: Vec<f64>,
    /// Dimension d.
    pub dim: usize,
    /// Final weights.
    pub weights: ParticleWeights,
    /// Estimate of `log ∫ exp(−U)`.
    pub log_z: f64,
    /// Per-level diagnostics.
    pub levels: Vec<LevelInfo>,
}

/// `U_β` for the annealing path (a private wrapper so the Langevin move code is shared).
struct Tempered<'a> {
    target: &'a dyn Energy,
    beta: f64,
    inv_var0: f64,
}

impl Energy for Tempered<'_> {
    fn dim(&self) -> usize {
        self.target.dim()
    }
    fn describe(&self) -> String {
        format!("tempered β={} {}", self.beta, self.target.describe())
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let u = self.target.value_grad(x, grad);
        let mut u0 = 0.0;
        for (gk, xk) in grad.iter_mut().zip(x) {
            u0 += 0.5 * xk * xk * self.inv_var0;
            *gk = self.beta * *gk + (1.0 - self.beta) * xk * self.inv_var0;
        }
        if self.beta == 0.0 {
            u0 // ignore a non-finite U at β = 0
        } else {
            self.beta * u + (1.0 - self.beta) * u0
        }
    }
}

/// A validated annealed-SMC sampler (maths §9.4, §6).
#[derive(Clone, Debug)]
pub struct AnnealSampler {
    cfg: AnnealConfig,
}

impl AnnealSampler {
    /// Check the settings once.
    pub fn new(cfg: AnnealConfig) -> Result<Self> {
        if cfg.particles < 2 || cfg.particles > MAX_PARTICLES {
            return Err(Error::param("particles", cfg.particles, format!("need 2 ..= {MAX_PARTICLES}")));
        }
        if !(cfg.sigma0.is_finite() && cfg.sigma0 > 0.0) {
            return Err(Error::param("sigma0", cfg.sigma0, "the start's standard deviation must be finite and > 0"));
        }
        if !(cfg.cess_target > 0.0 && cfg.cess_target < 1.0) {
            return Err(Error::param("CESS target", cfg.cess_target, "must lie strictly between 0 and 1"));
        }
        if !(cfg.step.is_finite() && cfg.step > 0.0) {
            return Err(Error::param("step", cfg.step, "the Langevin step must be finite and > 0"));
        }
        if cfg.transport == Transport::None && cfg.moves > 0 {
            return Err(Error::param("transport", "none", "annealing needs ULA or MALA moves (or moves = 0)"));
        }
        if cfg.max_levels == 0 {
            return Err(Error::param("max levels", 0, "must be >= 1"));
        }
        Ok(AnnealSampler { cfg })
    }

    /// Run; `observe` is called after every level.
    pub fn run(&self, target: &dyn Energy, rng: &mut Rng, observe: &mut dyn FnMut(&LevelInfo)) -> Result<AnnealRun> {
        let cfg = &self.cfg;
        let (n, d) = (cfg.particles, target.dim());
        let inv_var0 = 1.0 / (cfg.sigma0 * cfg.sigma0);
        let mut x = vec![0.0; n * d];
        rng::par_fill_normal(rng, &mut x);
        x.iter_mut().for_each(|v| *v *= cfg.sigma0);
        let log_z0 = 0.5 * d as f64 * (2.0 * std::f64::consts::PI * cfg.sigma0 * cfg.sigma0).ln();
        let mut pw = ParticleWeights::new(n);
        let mut levels = Vec::new();
        let mut beta = 0.0;
        let mut step = cfg.step;
        let mut ut = vec![0.0; n]; // U at the current x
        let mut du = vec![0.0; n]; // U − U0
        while beta < 1.0 {
            let level = levels.len() + 1;
            if level > cfg.max_levels {
                return Err(Error::param(
                    "max levels",
                    cfg.max_levels,
                    format!("annealing reached only β = {beta:.4}; raise the limit or lower the CESS target"),
                ));
            }
            target.energy_batch(&x, &mut ut)?;
            if ut.iter().any(|v| !v.is_finite()) {
                return Err(non_finite("energy U(x)", level, beta));
            }
            du.par_iter_mut().enumerate().for_each(|(i, o)| {
                let r2: f64 = x[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
                *o = ut[i] - 0.5 * r2 * inv_var0;
            });
            let delta = next_delta(&pw, &du, 1.0 - beta, cfg.cess_target);
            let new_beta = if delta >= 1.0 - beta { 1.0 } else { beta + delta };
            let inc: Vec<f64> = du.iter().map(|v| -(new_beta - beta) * v).collect();
            let ws = pw.step(&inc, &cfg.resample, level as f64, rng);
            if let Some(idx) = &ws.ancestors {
                x = gather_rows(&x, d, idx);
            }
            beta = new_beta;
            let acceptance = self.move_particles(&Tempered { target, beta, inv_var0 }, &mut x, step, level, beta, rng)?;
            let info = LevelInfo {
                level,
                beta,
                ess: ws.ess,
                resampled: ws.resampled,
                unique_ancestors: ws.unique_ancestors,
                acceptance,
                step,
                log_z: pw.log_z() + log_z0,
            };
            if cfg.transport == Transport::Mala && cfg.moves > 0 {
                if acceptance > 0.65 {
                    step *= 1.3;
                } else if acceptance < 0.5 {
                    step *= 0.7;
                }
            }
            observe(&info);
            levels.push(info);
        }
        let log_z = pw.log_z() + log_z0;
        if !log_z.is_finite() {
            return Err(non_finite("log Ẑ", levels.len(), 1.0));
        }
        Ok(AnnealRun { x, dim: d, weights: pw, log_z, levels })
    }

    /// The level's Langevin moves targeting π_β (MALA or ULA, `cfg.moves` of them at step `step`); their
    /// mean acceptance (0 without moves).
    #[allow(clippy::too_many_arguments)]
    fn move_particles(&self, temp: &Tempered<'_>, x: &mut Vec<f64>, step: f64, level: usize, beta: f64, rng: &mut Rng) -> Result<f64> {
        let cfg = &self.cfg;
        if cfg.moves == 0 {
            return Ok(0.0);
        }
        let d = temp.target.dim();
        let n = x.len() / d;
        let mut u = vec![0.0; n];
        let mut g = vec![0.0; n * d];
        eval(temp, x, &mut u, &mut g, level, beta)?;
        let mut acc_sum = 0.0;
        for _ in 0..cfg.moves {
            acc_sum += langevin_step(temp, x, &mut u, &mut g, step, cfg.transport == Transport::Mala, rng, level, beta)?;
        }
        Ok(acc_sum / cfg.moves as f64)
    }
}

/// The next inverse-temperature increment δ ≤ `room`: the largest whose conditional ESS fraction of the
/// increment −δ·du under the current weights stays ≥ `target` (bisection, 60 halvings), or all of `room`.
fn next_delta(pw: &ParticleWeights, du: &[f64], room: f64, target: f64) -> f64 {
    let n = du.len();
    let logw: Vec<f64> = {
        let lw = pw.log_weights();
        let l = log_sum_exp(lw);
        lw.iter().map(|a| a - l).collect()
    };
    let cess = |delta: f64| -> f64 {
        let a: Vec<f64> = (0..n).map(|i| logw[i] - delta * du[i]).collect();
        let b: Vec<f64> = (0..n).map(|i| logw[i] - 2.0 * delta * du[i]).collect();
        (2.0 * log_sum_exp(&a) - log_sum_exp(&b)).exp()
    };
    let mut delta = room;
    if cess(delta) < target {
        let (mut lo, mut hi) = (0.0, delta);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if cess(mid) >= target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        delta = lo.max(1e-12 * room).max(f64::MIN_POSITIVE);
    }
    delta
}

