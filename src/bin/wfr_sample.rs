//! `wfr-sample`: sample an unnormalized energy with Langevin, MALA, WFR (Langevin + birth–death), pure
//! Fisher–Rao or annealed SMC, or run the double-well teleportation experiment. Thin: parses the command
//! line and calls the library (`wfrmix::energy`, `wfrmix::wfr`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wfrmix::energy::{target_from_name, DoubleWell, Energy, TargetKnobs};
use wfrmix::particles::{ResamplePolicy, Resampler};
use wfrmix::wfr::{
    plot_samples, plot_teleport, right_mass, teleport_experiment, weighted_moments, AnnealConfig, AnnealSampler, Bandwidth, Kde,
    KdeMethod, StepView, TeleportConfig, Transport, WfrConfig, WfrSampler,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SamplerKind {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KdeKind {
    Auto,
    Exact,
    Binned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Experiment {
    /// Langevin vs WFR on a tilted double well started with the wrong well proportions.
    DoubleWell,
}

/// Sample π ∝ exp(−U) with Langevin / WFR / annealed SMC.
#[derive(Parser, Debug)]
#[command(name = "wfr-sample", version)]
struct Args {
    /// Target: double-well, double-well-2d, many-well-D (e.g. many-well-8, many-well-32), gaussian-D, gmm:PATH.
    #[arg(long, default_value = "double-well")]
    target: String,
    /// Double-well barrier h (units of V; the barrier in units of U is h/epsilon).
    #[arg(long, default_value_t = 0.25)]
    barrier: f64,
    /// Double-well tilt c (c < 0 favours the right well).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    tilt: f64,
    /// Double-well temperature epsilon (U = V/epsilon).
    #[arg(long, default_value_t = 0.05)]
    epsilon: f64,
    /// Sampler.
    #[arg(long, value_enum, default_value_t = SamplerKind::Wfr)]
    sampler: SamplerKind,
    /// Number of particles.
    #[arg(long, default_value_t = 4096)]
    particles: usize,
    /// Total time tau (Langevin/WFR/FR).
    #[arg(long, default_value_t = 4.0)]
    time: f64,
    /// Time step (Langevin/WFR/FR).
    #[arg(long, default_value_t = 1e-3, allow_hyphen_values = true)]
    dt: f64,
    /// Seed of the random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reaction rate lambda (WFR/FR).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    lambda: f64,
    /// KDE bandwidth: a number, or `silverman`.
    #[arg(long, default_value = "0.1", allow_hyphen_values = true)]
    bandwidth: String,
    /// KDE algorithm.
    #[arg(long, value_enum, default_value_t = KdeKind::Auto)]
    kde: KdeKind,
    /// Initial particles: `gauss:MEAN,STD` (every coordinate) or, for double wells, `wells:P` (fraction P in
    /// the left well, each drawn from π restricted to its well).
    #[arg(long, default_value = "gauss:0,1")]
    init: String,
    /// Resample when ESS < this fraction of N (0: never, 1: every step).
    #[arg(long, default_value_t = 0.5)]
    ess_threshold: f64,
    /// Resampling scheme: systematic, stratified, multinomial, residual.
    #[arg(long, default_value = "systematic")]
    resampler: String,
    /// Annealing: standard deviation of the Gaussian start.
    #[arg(long, default_value_t = 2.0)]
    sigma0: f64,
    /// Annealing: conditional-ESS fraction per level.
    #[arg(long, default_value_t = 0.9)]
    cess: f64,
    /// Annealing: Langevin moves per level.
    #[arg(long, default_value_t = 5)]
    moves: usize,
    /// Annealing: initial Langevin step (MALA adapts it).
    #[arg(long, default_value_t = 0.05)]
    step: f64,
    /// Annealing: use ULA moves instead of MALA.
    #[arg(long)]
    ula_moves: bool,
    /// Run a canned experiment instead (uses --out, --report, --seed, --particles, --time, --dt, --lambda).
    #[arg(long, value_enum)]
    experiment: Option<Experiment>,
    /// Write a PNG picture.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the final particles (`samples` [N, d], `weights` [N]) as safetensors.
    #[arg(long)]
    save_samples: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn progress(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn parse_bandwidth(s: &str) -> Result<Bandwidth> {
    if s.eq_ignore_ascii_case("silverman") {
        return Ok(Bandwidth::Silverman);
    }
    let h: f64 = s.parse().with_context(|| format!("--bandwidth `{s}`: expected a number or `silverman`"))?;
    Ok(Bandwidth::Fixed(h))
}

fn initial(args: &Args, target: &dyn Energy, rng: &mut wfrmix::rng::Rng) -> Result<Vec<f64>> {
    let d = target.dim();
    if let Some(p) = args.init.strip_prefix("wells:") {
        let p: f64 = p.parse().with_context(|| format!("--init `{}`: expected wells:P with P in [0, 1]", args.init))?;
        let dim = d;
        if dim > 2 || !args.target.starts_with("double-well") {
            bail!("--init wells:P needs a double-well target (got `{}`)", args.target);
        }
        let dw = DoubleWell::new(dim, args.barrier, args.tilt, args.epsilon)?;
        return Ok(dw.sample_wells(args.particles, p, rng)?);
    }
    if let Some(rest) = args.init.strip_prefix("gauss:") {
        let parts: Vec<&str> = rest.split(',').collect();
        let (m, s) = match parts.as_slice() {
            [m, s] => (
                m.trim().parse::<f64>().with_context(|| format!("--init `{}`: bad mean", args.init))?,
                s.trim().parse::<f64>().with_context(|| format!("--init `{}`: bad std", args.init))?,
            ),
            _ => bail!("--init `{}`: expected gauss:MEAN,STD", args.init),
        };
        if !(m.is_finite() && s.is_finite() && s >= 0.0) {
            bail!("--init `{}`: mean must be finite and std finite and >= 0", args.init);
        }
        let mut x = vec![0.0; args.particles * d];
        wfrmix::rng::fill_normal(rng, &mut x);
        x.iter_mut().for_each(|v| *v = m + s * *v);
        return Ok(x);
    }
    bail!("--init `{}`: expected gauss:MEAN,STD or wells:P", args.init)
}

fn save_samples(path: &std::path::Path, x: &[f64], d: usize, w: &[f64], target: &str) -> Result<()> {
    let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let ws: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let meta = HashMap::from([("target".to_string(), target.to_string()), ("kind".to_string(), "weighted_samples".to_string())]);
    wfrmix::io::write_safetensors(
        path,
        &[
            wfrmix::io::F32Tensor { name: "samples", shape: vec![w.len(), d], data: &xs },
            wfrmix::io::F32Tensor { name: "weights", shape: vec![w.len()], data: &ws },
        ],
        &meta,
    )?;
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    for p in [&args.out, &args.report, &args.save_samples].into_iter().flatten() {
        wfrmix::io::check_writable(p)?;
    }
    if args.particles < 2 || args.particles > wfrmix::wfr::MAX_PARTICLES {
        bail!("invalid particles = {}: need 2 ..= {}", args.particles, wfrmix::wfr::MAX_PARTICLES);
    }
    let mut rng = wfrmix::rng::seeded(args.seed);
    if let Some(Experiment::DoubleWell) = args.experiment {
        let cfg = TeleportConfig {
            particles: args.particles,
            time: args.time,
            dt: args.dt,
            lambda: args.lambda,
            ..TeleportConfig::default()
        };
        if !(cfg.dt.is_finite() && cfg.dt > 0.0) {
            bail!("invalid dt = {}: the time step must be finite and > 0", cfg.dt);
        }
        if !args.quiet {
            eprintln!("running Langevin then WFR, {} particles, tau = {} ...", cfg.particles, cfg.time);
        }
        let res = teleport_experiment(&cfg, &mut rng)?;
        let truth = res.target.right_mass();
        let mut rows = Vec::new();
        println!("true right-well mass {truth:.4}\n{:>6} {:>10} {:>10}", "tau", "Langevin", "WFR");
        for t in [0.0, 0.5, 1.0, 2.0, 4.0, 8.0].into_iter().filter(|t| *t <= cfg.time + 1e-9) {
            let (l, w) = (res.mass_at(&res.langevin, t), res.mass_at(&res.wfr, t));
            println!("{t:>6.1} {l:>10.4} {w:>10.4}");
            rows.push(serde_json::json!({"tau": t, "langevin": l, "wfr": w}));
        }
        if let Some(p) = &args.out {
            plot_teleport(&res, &cfg, p)?;
        }
        if let Some(p) = &args.report {
            let v = serde_json::json!({"experiment": "double-well", "config": cfg, "seed": args.seed, "tilt": res.target.tilt(),
                "true_right_mass": truth, "right_mass": rows, "times": res.times,
                "langevin_trace": res.langevin.right_mass, "wfr_trace": res.wfr.right_mass});
            wfrmix::io::write_json(p, &v)?;
        }
        if let Some(p) = &args.save_samples {
            save_samples(p, &res.wfr.x, 1, &res.wfr.w, "double-well experiment (WFR)")?;
        }
        return Ok(());
    }

    let knobs = TargetKnobs { barrier: args.barrier, tilt: args.tilt, epsilon: args.epsilon };
    let target = target_from_name(&args.target, &knobs)?;
    let d = target.dim();
    let resample = ResamplePolicy::new(args.resampler.parse::<Resampler>()?, args.ess_threshold, None)?;
    let exact_1d = if args.target.starts_with("double-well") {
        Some(DoubleWell::new(d, args.barrier, args.tilt, args.epsilon)?)
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let (x, w, mut report) = if args.sampler == SamplerKind::Anneal {
        let cfg = AnnealConfig {
            particles: args.particles,
            sigma0: args.sigma0,
            cess_target: args.cess,
            moves: args.moves,
            transport: if args.ula_moves { Transport::Ula } else { Transport::Mala },
            step: args.step,
            resample,
            ..AnnealConfig::default()
        };
        let sampler = AnnealSampler::new(cfg)?;
        let pb = progress(1000, args.quiet, "beta x1000");
        let run = sampler.run(target.as_ref(), &mut rng, &mut |l| pb.set_position((l.beta * 1000.0) as u64))?;
        pb.finish_and_clear();
        let exact = target.log_z();
        println!("log Z estimate {:.4} ({} levels){}", run.log_z, run.levels.len(),
            exact.map_or(String::new(), |e| format!("; exact {e:.4}, error {:+.4}", run.log_z - e)));
        let w = run.weights.normalized();
        let rep = serde_json::json!({"sampler": "anneal", "config": cfg, "log_z": run.log_z, "log_z_exact": exact,
            "levels": run.levels});
        (run.x, w, rep)
    } else {
        let bandwidth = parse_bandwidth(&args.bandwidth)?;
        let method = match args.kde {
            KdeKind::Auto => KdeMethod::Auto,
            KdeKind::Exact => KdeMethod::Exact,
            KdeKind::Binned => KdeMethod::Binned,
        };
        let kde = Kde { bandwidth, method, ..Kde::default() };
        let (transport, lambda) = match args.sampler {
            SamplerKind::Langevin => (Transport::Ula, 0.0),
            SamplerKind::Mala => (Transport::Mala, 0.0),
            SamplerKind::Wfr => (Transport::Ula, args.lambda),
            _ => (Transport::None, args.lambda),
        };
        let cfg = WfrConfig { dt: args.dt, time: args.time, lambda, transport, kde, resample };
        let sampler = WfrSampler::new(cfg)?;
        let x0 = initial(args, target.as_ref(), &mut rng)?;
        let pb = progress(sampler.steps() as u64, args.quiet, "steps");
        let mut masses = Vec::new();
        let every = (sampler.steps() / 400).max(1);
        let run = sampler.run(target.as_ref(), x0, &mut rng, &mut |v: &StepView| {
            if v.info.step % every == 0 {
                pb.set_position(v.info.step as u64);
                masses.push((v.info.t, right_mass(v.x, v.dim, &v.weights.normalized()), v.info.ess));
            }
        })?;
        pb.finish_and_clear();
        let w = run.weights.normalized();
        let (mean, cov) = weighted_moments(&run.x, d, &w);
        let resamplings = run.trace.iter().filter(|s| s.resampled).count();
        let rm = right_mass(&run.x, d, &w);
        println!("{} steps, {} resamplings, final ESS {:.1}, P(x1 > 0) = {rm:.4}{}", sampler.steps(), resamplings,
            run.weights.ess(), exact_1d.as_ref().map_or(String::new(), |t| format!(" (exact {:.4})", t.right_mass())));
        let rep = serde_json::json!({"sampler": format!("{:?}", args.sampler).to_lowercase(), "config": cfg,
            "right_mass": rm, "right_mass_exact": exact_1d.as_ref().map(|t| t.right_mass()), "mean": mean, "cov": cov,
            "resamplings": resamplings, "trace_t_mass_ess": masses});
        (run.x, w, rep)
    };
    let secs = t0.elapsed().as_secs_f64();
    if let Some(obj) = report.as_object_mut() {
        obj.insert("target".into(), serde_json::json!(target.describe()));
        obj.insert("seed".into(), serde_json::json!(args.seed));
        obj.insert("particles".into(), serde_json::json!(args.particles));
        obj.insert("wall_seconds".into(), serde_json::json!(secs));
    }
    if let Some(p) = &args.out {
        let title = format!("{} / {:?}", args.target, args.sampler).to_lowercase();
        plot_samples(p, &x, d, &w, exact_1d.as_ref().filter(|_| d == 1).map(|t| t.marginal()), &title)?;
    }
    if let Some(p) = &args.report {
        wfrmix::io::write_json(p, &report)?;
    }
    if let Some(p) = &args.save_samples {
        save_samples(p, &x, d, &w, &args.target)?;
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        // Print the cause chain, skipping causes whose text the message above already contains.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg = format!("{msg}: {c}");
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
