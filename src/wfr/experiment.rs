//! The double-well teleportation experiment (maths §7): Langevin and WFR side by side from the wrong well
//! proportions, and how fast each gets the mass in each well right.

use super::kde::Kde;
use super::sampler::{StepView, WfrConfig, WfrSampler};
use super::stats::right_mass;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Settings of the double-well experiment: a tilted 1-D double well whose right-hand well holds
/// `true_right_mass` of π, particles started with `start_left_fraction` in the left well (each drawn from
/// π restricted to its well), then Langevin and WFR run side by side from the same start.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TeleportConfig {
    /// Barrier h in units of V (the barrier in units of U is h/ε).
    pub barrier: f64,
    /// Temperature ε.
    pub epsilon: f64,
    /// π(x > 0); the tilt is solved for by quadrature.
    pub true_right_mass: f64,
    /// Fraction of particles started in the left well.
    pub start_left_fraction: f64,
    /// Particles N.
    pub particles: usize,
    /// Time step.
    pub dt: f64,
    /// Total time.
    pub time: f64,
    /// Reaction rate λ of WFR.
    pub lambda: f64,
    /// KDE bandwidth of WFR (fixed).
    pub bandwidth: f64,
    /// Record the right-well mass every this many steps.
    pub record_every: usize,
}

impl Default for TeleportConfig {
    /// Barrier 6 (h = 0.3, ε = 0.05), truth 20/80, start 90/10, N = 16384, Δ = 10⁻³, τ = 8, λ = 1, h = 0.1.
    fn default() -> Self {
        TeleportConfig {
            barrier: 0.3,
            epsilon: 0.05,
            true_right_mass: 0.8,
            start_left_fraction: 0.9,
            particles: 16384,
            dt: 1e-3,
            time: 8.0,
            lambda: 1.0,
            bandwidth: 0.1,
            record_every: 10,
        }
    }
}

/// One sampler's outcome in the experiment.
#[derive(Clone, Debug)]
pub struct TeleportTrack {
    /// Right-well mass at each recorded time.
    pub right_mass: Vec<f64>,
    /// Final positions (1-D).
    pub x: Vec<f64>,
    /// Final normalised weights.
    pub w: Vec<f64>,
    /// Number of resampling events.
    pub resamplings: usize,
}

/// The experiment's outcome.
#[derive(Clone, Debug)]
pub struct TeleportResult {
    /// The target (tilt solved so that π(x>0) = `true_right_mass`).
    pub target: crate::wfr::energy::DoubleWell,
    /// Recorded times (t = 0 first).
    pub times: Vec<f64>,
    /// Plain Langevin (ULA).
    pub langevin: TeleportTrack,
    /// WFR (ULA + birth–death).
    pub wfr: TeleportTrack,
}

impl TeleportResult {
    /// Right-well mass of a track at the recorded time nearest `t`.
    pub fn mass_at(&self, track: &TeleportTrack, t: f64) -> f64 {
        let k = (0..self.times.len())
            .min_by(|&a, &b| (self.times[a] - t).abs().total_cmp(&(self.times[b] - t).abs()))
            .unwrap_or(0);
        track.right_mass[k]
    }
}

/// Run the double-well experiment: Langevin with `rng`'s stream first, then WFR continuing the same
/// stream, both from one initial cloud.
pub fn teleport_experiment(cfg: &TeleportConfig, rng: &mut Rng) -> Result<TeleportResult> {
    if cfg.particles < 2 {
        return Err(Error::param("particles", cfg.particles, "need at least 2"));
    }
    if cfg.record_every == 0 {
        return Err(Error::param("record every", 0, "must be >= 1"));
    }
    let tilt = crate::wfr::energy::DoubleWell::tilt_for_right_mass(cfg.barrier, cfg.epsilon, cfg.true_right_mass)?;
    let target = crate::wfr::energy::DoubleWell::new(1, cfg.barrier, tilt, cfg.epsilon)?;
    let x0 = target.sample_wells(cfg.particles, cfg.start_left_fraction, rng)?;
    let lang = WfrSampler::new(WfrConfig::langevin(cfg.dt, cfg.time, false))?;
    let wfr = WfrSampler::new(WfrConfig::wfr(cfg.dt, cfg.time, cfg.lambda, Kde::fixed(cfg.bandwidth)))?;
    let mut times = Vec::new();
    let mut tracks = Vec::new();
    for (k, sampler) in [lang, wfr].iter().enumerate() {
        let mut masses = Vec::new();
        let mut resamplings = 0;
        let run = sampler.run(&target, x0.clone(), rng, &mut |v: &StepView| {
            if v.info.resampled {
                resamplings += 1;
            }
            if v.info.step.is_multiple_of(cfg.record_every) {
                if k == 0 {
                    times.push(v.info.t);
                }
                masses.push(right_mass(v.x, 1, &v.weights.normalized()));
            }
        })?;
        let w = run.weights.normalized();
        tracks.push(TeleportTrack { right_mass: masses, x: run.x, w, resamplings });
    }
    let wfr_track = tracks.pop().expect("two tracks");
    let lang_track = tracks.pop().expect("two tracks");
    Ok(TeleportResult { target, times, langevin: lang_track, wfr: wfr_track })
}

