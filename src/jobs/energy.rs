//! `wfr-sample`'s job: sample an unnormalized energy with Langevin, MALA, WFR, pure Fisher–Rao or annealed
//! SMC, or run the double-well teleportation experiment; write the samples, the report and the picture.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::json;

use crate::error::{Error, Result};
use crate::particles::ResamplePolicy;
use crate::report::wfr::{plot_samples, plot_teleport};
use crate::wfr::energy::{target_from_name, DoubleWell, Energy, TargetKnobs};
use crate::wfr::{
    right_mass, teleport_experiment, weighted_moments, AnnealConfig, AnnealSampler, Kde, StepView, TeleportConfig, Transport, WfrConfig,
    WfrSampler, MAX_PARTICLES,
};
use crate::{io, rng};

/// Which sampler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum EnergySampler {
    /// Unadjusted Langevin.
    Langevin,
    /// Metropolis-adjusted Langevin.
    Mala,
    /// Langevin + Fisher–Rao birth–death (weighted KDE).
    Wfr,
    /// Birth–death only (particles fixed).
    Fr,
    /// Annealed SMC from N(0, sigma0² I), adaptive β by conditional ESS; reports log Z.
    Anneal,
}

/// The initial particles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every coordinate N(mean, std²).
    Gauss { mean: f64, std: f64 },
    /// For double wells: this fraction in the left well, each particle drawn from π restricted to its well.
    Wells { left_fraction: f64 },
}

/// Everything `wfr-sample` is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct EnergyJob {
    /// Target name ([`target_from_name`]).
    pub target: String,
    /// Double-well knobs.
    pub knobs: TargetKnobs,
    /// The sampler.
    pub sampler: EnergySampler,
    /// Number of particles.
    pub particles: usize,
    /// Total time τ and time step (Langevin / WFR / FR).
    pub time: f64,
    pub dt: f64,
    /// Seed of the random stream.
    pub seed: u64,
    /// Reaction rate λ (WFR / FR).
    pub lambda: f64,
    /// The KDE of the particles' own density (WFR / FR).
    pub kde: Kde,
    /// Initial particles (Langevin / WFR / FR).
    pub init: Init,
    /// Resampling.
    pub resample: ResamplePolicy,
    /// Annealing settings: start sd, conditional-ESS fraction, Langevin moves per level, initial step,
    /// ULA instead of MALA moves.
    pub sigma0: f64,
    pub cess: f64,
    pub moves: usize,
    pub step: f64,
    pub ula_moves: bool,
    /// Run the double-well teleportation experiment instead (uses particles, time, dt, lambda, seed).
    pub experiment: bool,
    /// PNG picture, JSON report, samples (safetensors).
    pub out: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub save_samples: Option<PathBuf>,
    /// Bytes the run may use (the binary passes the machine's available memory).
    pub memory_limit: u64,
}

/// Progress of a run: `done` of `total` units (steps, or annealing β × 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// Run the job; returns the summary the binary prints.
pub fn run(job: &EnergyJob, mut progress: impl FnMut(Progress)) -> Result<String> {
    let target_file: Vec<&std::path::Path> = job.target.strip_prefix("gmm:").map(std::path::Path::new).into_iter().collect();
    let outputs = [
        ("--out", job.out.as_deref(), io::OutputKind::Picture),
        ("--report", job.report.as_deref(), io::OutputKind::Report),
        ("--save-samples", job.save_samples.as_deref(), io::OutputKind::Samples),
    ];
    io::check_outputs(&target_file, &outputs)?;
    if job.particles < 2 || job.particles > MAX_PARTICLES {
        return Err(Error::param("particles", job.particles, format!("need 2 ..= {MAX_PARTICLES}")));
    }
    let mut rng = rng::seeded(job.seed);
    if job.experiment {
        return experiment(job, &mut rng);
    }
    let target = target_from_name(&job.target, &job.knobs)?;
    let d = target.dim();
    // Positions, forces, noise, KDE and resampling buffers: about 8 n × d values.
    crate::limits::at_most("target dimension", d, crate::limits::MAX_ITEM_VALUES)?;
    crate::limits::memory("--particles", job.particles, crate::limits::f64_bytes(job.particles, d, 8), job.memory_limit, "--particles or the target's dimension")?;
    let exact_1d = if job.target.starts_with("double-well") {
        Some(DoubleWell::new(d, job.knobs.barrier, job.knobs.tilt, job.knobs.epsilon)?)
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let (x, w, summary, mut report) = if job.sampler == EnergySampler::Anneal {
        anneal(job, target.as_ref(), &mut rng, &mut progress)?
    } else {
        wfr(job, target.as_ref(), exact_1d.as_ref(), &mut rng, &mut progress)?
    };
    let secs = t0.elapsed().as_secs_f64();
    if let Some(obj) = report.as_object_mut() {
        obj.insert("target".into(), json!(target.describe()));
        obj.insert("seed".into(), json!(job.seed));
        obj.insert("particles".into(), json!(job.particles));
        obj.insert("wall_seconds".into(), json!(secs));
    }
    if let Some(p) = &job.out {
        let title = format!("{} / {:?}", job.target, job.sampler).to_lowercase();
        plot_samples(p, &x, d, &w, exact_1d.as_ref().filter(|_| d == 1).map(|t| t.marginal()), &title)?;
    }
    if let Some(p) = &job.report {
        io::write_json(p, &report)?;
    }
    if let Some(p) = &job.save_samples {
        save_samples(p, &x, d, &w, &job.target)?;
    }
    Ok(summary)
}

type Outcome = (Vec<f64>, Vec<f64>, String, serde_json::Value);

fn anneal(job: &EnergyJob, target: &dyn Energy, rng: &mut rng::Rng, progress: &mut impl FnMut(Progress)) -> Result<Outcome> {
    let cfg = AnnealConfig {
        particles: job.particles,
        sigma0: job.sigma0,
        cess_target: job.cess,
        moves: job.moves,
        transport: if job.ula_moves { Transport::Ula } else { Transport::Mala },
        step: job.step,
        resample: job.resample,
        ..AnnealConfig::default()
    };
    let sampler = AnnealSampler::new(cfg)?;
    let run = sampler.run(target, rng, &mut |l| progress(Progress { done: (l.beta * 1000.0) as u64, total: 1000 }))?;
    let exact = target.log_z();
    let summary = format!(
        "log Z estimate {:.4} ({} levels){}",
        run.log_z,
        run.levels.len(),
        exact.map_or(String::new(), |e| format!("; exact {e:.4}, error {:+.4}", run.log_z - e))
    );
    let w = run.weights.normalized();
    let rep = json!({"sampler": "anneal", "config": cfg, "log_z": run.log_z, "log_z_exact": exact, "levels": run.levels});
    Ok((run.x, w, summary, rep))
}

fn wfr(job: &EnergyJob, target: &dyn Energy, exact_1d: Option<&DoubleWell>, rng: &mut rng::Rng, progress: &mut impl FnMut(Progress)) -> Result<Outcome> {
    let d = target.dim();
    let (transport, lambda) = match job.sampler {
        EnergySampler::Langevin => (Transport::Ula, 0.0),
        EnergySampler::Mala => (Transport::Mala, 0.0),
        EnergySampler::Wfr => (Transport::Ula, job.lambda),
        _ => (Transport::None, job.lambda),
    };
    let cfg = WfrConfig { dt: job.dt, time: job.time, lambda, transport, kde: job.kde, resample: job.resample };
    let sampler = WfrSampler::new(cfg)?;
    let x0 = initial(job, target, rng)?;
    let mut masses = Vec::new();
    let every = (sampler.steps() / 400).max(1);
    let total = sampler.steps() as u64;
    let run = sampler.run(target, x0, rng, &mut |v: &StepView| {
        if v.info.step.is_multiple_of(every) {
            progress(Progress { done: v.info.step as u64, total });
            masses.push((v.info.t, right_mass(v.x, v.dim, &v.weights.normalized()), v.info.ess));
        }
    })?;
    let w = run.weights.normalized();
    let (mean, cov) = weighted_moments(&run.x, d, &w);
    let resamplings = run.trace.iter().filter(|s| s.resampled).count();
    let rm = right_mass(&run.x, d, &w);
    let summary = format!(
        "{} steps, {} resamplings, final ESS {:.1}, P(x1 > 0) = {rm:.4}{}",
        sampler.steps(),
        resamplings,
        run.weights.ess(),
        exact_1d.map_or(String::new(), |t| format!(" (exact {:.4})", t.right_mass()))
    );
    let rep = json!({"sampler": format!("{:?}", job.sampler).to_lowercase(), "config": cfg,
        "right_mass": rm, "right_mass_exact": exact_1d.map(|t| t.right_mass()), "mean": mean, "cov": cov,
        "resamplings": resamplings, "trace_t_mass_ess": masses});
    Ok((run.x, w, summary, rep))
}

fn experiment(job: &EnergyJob, rng: &mut rng::Rng) -> Result<String> {
    let cfg = TeleportConfig { particles: job.particles, time: job.time, dt: job.dt, lambda: job.lambda, ..TeleportConfig::default() };
    if !(cfg.dt.is_finite() && cfg.dt > 0.0) {
        return Err(Error::param("dt", cfg.dt, "the time step must be finite and > 0"));
    }
    let res = teleport_experiment(&cfg, rng)?;
    let truth = res.target.right_mass();
    let mut rows = Vec::new();
    let mut summary = format!("true right-well mass {truth:.4}\n{:>6} {:>10} {:>10}", "tau", "Langevin", "WFR");
    for t in [0.0, 0.5, 1.0, 2.0, 4.0, 8.0].into_iter().filter(|t| *t <= cfg.time + 1e-9) {
        let (l, w) = (res.mass_at(&res.langevin, t), res.mass_at(&res.wfr, t));
        summary.push_str(&format!("\n{t:>6.1} {l:>10.4} {w:>10.4}"));
        rows.push(json!({"tau": t, "langevin": l, "wfr": w}));
    }
    if let Some(p) = &job.out {
        plot_teleport(&res, &cfg, p)?;
    }
    if let Some(p) = &job.report {
        let v = json!({"experiment": "double-well", "config": cfg, "seed": job.seed, "tilt": res.target.tilt(),
            "true_right_mass": truth, "right_mass": rows, "times": res.times,
            "langevin_trace": res.langevin.right_mass, "wfr_trace": res.wfr.right_mass});
        io::write_json(p, &v)?;
    }
    if let Some(p) = &job.save_samples {
        save_samples(p, &res.wfr.x, 1, &res.wfr.w, "double-well experiment (WFR)")?;
    }
    Ok(summary)
}

fn initial(job: &EnergyJob, target: &dyn Energy, rng: &mut rng::Rng) -> Result<Vec<f64>> {
    let d = target.dim();
    match job.init {
        Init::Wells { left_fraction } => {
            if d > 2 || !job.target.starts_with("double-well") {
                return Err(Error::param("init", format!("wells:{left_fraction}"), format!("needs a double-well target (got `{}`)", job.target)));
            }
            DoubleWell::new(d, job.knobs.barrier, job.knobs.tilt, job.knobs.epsilon)?.sample_wells(job.particles, left_fraction, rng)
        }
        Init::Gauss { mean, std } => {
            if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
                return Err(Error::param("init", format!("gauss:{mean},{std}"), "mean must be finite and std finite and >= 0"));
            }
            let mut x = vec![0.0; job.particles * d];
            rng::par_fill_normal(rng, &mut x);
            x.iter_mut().for_each(|v| *v = mean + std * *v);
            Ok(x)
        }
    }
}

/// The final particles as `samples` [N, d] and their normalised `log_weights` [N] (F32; log-sum-exp 0),
/// the layout `mix-sample --save-samples` writes.
fn save_samples(path: &std::path::Path, x: &[f64], d: usize, w: &[f64], target: &str) -> Result<()> {
    let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let total: f64 = w.iter().sum();
    let lw: Vec<f32> = w.iter().map(|&v| (v / total).ln() as f32).collect();
    let meta = HashMap::from([("target".to_string(), target.to_string()), ("kind".to_string(), "weighted_samples".to_string())]);
    io::write_safetensors(
        path,
        &[io::F32Tensor { name: "samples", shape: vec![w.len(), d], data: &xs }, io::F32Tensor { name: "log_weights", shape: vec![w.len()], data: &lw }],
        &meta,
    )
}
