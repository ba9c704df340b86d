//! `wfr-sample`: sample an unnormalized energy with Langevin, MALA, WFR (Langevin + birth–death), pure
//! Fisher–Rao or annealed SMC, or run the double-well teleportation experiment. Thin: parses the flags
//! into a [`wfrmix::jobs::energy::EnergyJob`], runs it with a progress bar, prints the summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use wfrmix::jobs::energy::{self, EnergyJob, EnergySampler, Init};
use wfrmix::particles::{ResamplePolicy, Resampler};
use wfrmix::wfr::energy::TargetKnobs;
use wfrmix::wfr::{Bandwidth, Kde, KdeMethod};

mod common;

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
    #[arg(long, value_enum, default_value_t = EnergySampler::Wfr)]
    sampler: EnergySampler,
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
    /// Resampling scheme.
    #[arg(long, value_enum, default_value_t = Resampler::Systematic)]
    resampler: Resampler,
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
    /// Write the final particles (`samples`: N x d, normalised `log_weights`: N) as safetensors, as mix-sample does.
    #[arg(long)]
    save_samples: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_bandwidth(s: &str) -> Result<Bandwidth> {
    if s.eq_ignore_ascii_case("silverman") {
        return Ok(Bandwidth::Silverman);
    }
    let h: f64 = s.parse().with_context(|| format!("--bandwidth `{s}`: expected a number or `silverman`"))?;
    Ok(Bandwidth::Fixed(h))
}

fn parse_init(s: &str) -> Result<Init> {
    if let Some(p) = s.strip_prefix("wells:") {
        let p: f64 = p.parse().with_context(|| format!("--init `{s}`: expected wells:P with P in [0, 1]"))?;
        return Ok(Init::Wells { left_fraction: p });
    }
    if let Some(rest) = s.strip_prefix("gauss:") {
        let parts: Vec<&str> = rest.split(',').collect();
        return match parts.as_slice() {
            [m, sd] => Ok(Init::Gauss {
                mean: m.trim().parse::<f64>().with_context(|| format!("--init `{s}`: bad mean"))?,
                std: sd.trim().parse::<f64>().with_context(|| format!("--init `{s}`: bad std"))?,
            }),
            _ => bail!("--init `{s}`: expected gauss:MEAN,STD"),
        };
    }
    bail!("--init `{s}`: expected gauss:MEAN,STD or wells:P")
}

fn run(args: Args) -> Result<()> {
    let method = match args.kde {
        KdeKind::Auto => KdeMethod::Auto,
        KdeKind::Exact => KdeMethod::Exact,
        KdeKind::Binned => KdeMethod::Binned,
    };
    let job = EnergyJob {
        target: args.target,
        knobs: TargetKnobs { barrier: args.barrier, tilt: args.tilt, epsilon: args.epsilon },
        sampler: args.sampler,
        particles: args.particles,
        time: args.time,
        dt: args.dt,
        seed: args.seed,
        lambda: args.lambda,
        kde: Kde { bandwidth: parse_bandwidth(&args.bandwidth)?, method, ..Kde::default() },
        init: parse_init(&args.init)?,
        resample: ResamplePolicy::new(args.resampler, args.ess_threshold, None)?,
        sigma0: args.sigma0,
        cess: args.cess,
        moves: args.moves,
        step: args.step,
        ula_moves: args.ula_moves,
        experiment: matches!(args.experiment, Some(Experiment::DoubleWell)),
        out: args.out,
        report: args.report,
        save_samples: args.save_samples,
        memory_limit: common::available_memory(),
    };
    if job.experiment && !args.quiet {
        eprintln!("running Langevin then WFR, {} particles, tau = {} ...", job.particles, job.time);
    }
    let bar = common::bar(args.quiet, None, "{msg} [{bar:40}] {pos}/{len} ({eta})");
    bar.set_message(if job.sampler == EnergySampler::Anneal { "beta x1000" } else { "steps" });
    let result = energy::run(&job, |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    bar.finish_and_clear();
    println!("{}", result?);
    Ok(())
}

fn main() -> ExitCode {
    common::keep_freed_memory();
    match common::parse::<Args>("wfr-sample") {
        Ok(args) => common::exit("wfr-sample", run(args)),
        Err(code) => code,
    }
}
