//! `mix-sample`: compose score models and sample the composition with a weighted reverse SDE.
//! Thin: parses the flags into a [`wfrmix::jobs::mix::MixJob`], runs it with a progress bar, prints the
//! summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use wfrmix::io::hub;
use wfrmix::jobs::mix::{self, MixJob};
use wfrmix::registry::{Loader, Placement};
use wfrmix::{ComposeKind, CompositionSpec, DivergenceEstimator, DriftGamma, Integrator, MixtureMethod, MoveConfig, Probe, ResamplePolicy, Resampler, SamplerConfig, TimeGrid};

mod common;

/// The library's defaults are the CLI's (`SamplerConfig::default()`).
const DEFAULTS: SamplerConfig = SamplerConfig::DEFAULT;

/// Sample compositions of diffusion models (mixtures, power means, geometric mixtures, products,
/// annealing) with a weighted reverse SDE and adaptive resampling.
#[derive(Parser, Debug)]
#[command(name = "mix-sample", version, about, long_about = None)]
struct Args {
    /// Models: .safetensors files with a `kind` in their header metadata, diffusers UNet2DModel checkpoint
    /// directories, or Hugging Face references `hf:ORG/NAME/FILE[@REVISION]` (a file) and `hf:ORG/NAME[@REVISION]`
    /// (a checkpoint snapshot) resolved from the local hub cache (HF_HUB_CACHE, HF_HOME; never downloaded).
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    models: Vec<PathBuf>,
    /// How to compose.
    #[arg(long, value_enum, default_value_t = ComposeKind::Mixture)]
    compose: ComposeKind,
    /// Mixture sampling method.
    #[arg(long, value_enum, default_value_t = MixtureMethod::State)]
    method: MixtureMethod,
    /// fr only: the drift's coefficients are proportional to pi * q^lambda, from fixed weights (0: score
    /// averaging) toward the exact mixture score (1); the weights correct any lambda to the same target.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    fr_lambda: f64,
    /// The second model's share for two models: weights or exponents (1 - beta, beta) [default: 0.5].
    #[arg(long, allow_negative_numbers = true)]
    beta: Option<f64>,
    /// One weight (mixture, power) or exponent (geometric) per model, comma-separated; overrides --beta.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    weights: Option<Vec<f64>>,
    /// Power-mean exponent m (1 = linear mixture, 2 = Fisher-Rao mixture).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    m: f64,
    /// Annealing exponent gamma (one model to the power gamma).
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    gamma: f64,
    /// Noise scale eta: sigma = eta * g (1 = reverse SDE, 0 = probability-flow ODE).
    #[arg(long, default_value_t = DEFAULTS.noise_scale, allow_negative_numbers = true)]
    noise_scale: f64,
    /// Number of particles.
    #[arg(long, default_value_t = DEFAULTS.particles)]
    particles: usize,
    /// Number of reverse steps.
    #[arg(long, default_value_t = DEFAULTS.steps)]
    steps: usize,
    /// Last time of the grid.
    #[arg(long, default_value_t = DEFAULTS.t_min)]
    t_min: f64,
    /// Time grid: edm (default, rho = 7), edm:RHO, logsnr or uniform.
    #[arg(long, default_value = "edm")]
    grid: TimeGrid,
    /// Step rule.
    #[arg(long, value_enum, default_value_t = Integrator::Ancestral)]
    integrator: Integrator,
    /// Langevin corrector steps per step (geometric, product, anneal): lower weight variance, small log Z bias.
    #[arg(long, default_value_t = DEFAULTS.corrector_steps)]
    corrector_steps: usize,
    /// Corrector signal-to-noise ratio r: step = 2 r^2 d / mean |score|^2.
    #[arg(long, default_value_t = DEFAULTS.corrector_snr)]
    corrector_snr: f64,
    /// The drift's gamma for geometric, product, anneal and power (m > 1) targets: adaptive (the gamma that minimises the
    /// weights' variance each step) or a number (1 = the plain composed-score drift) [default: adaptive].
    #[arg(long, allow_hyphen_values = true)]
    drift_gamma: Option<DriftGamma>,
    /// Metropolis-adjusted score-only moves per step for geometric, product, anneal and power (m > 1) targets (0 = none;
    /// each costs one score per model) [default: 1].
    #[arg(long)]
    moves: Option<usize>,
    /// Acceptance rate the moves' step size adapts toward [default: 0.6].
    #[arg(long)]
    move_accept: Option<f64>,
    /// Class label for class-conditional diffusers checkpoints (num_class_embeds): one for every model,
    /// or one per model in --models order (e.g. `--models M M --class-label 1 8` composes two classes
    /// of one checkpoint).
    #[arg(long, num_args = 1..)]
    class_label: Vec<u32>,
    /// Where diffusers checkpoints run: cpu (the CPU kernels), cuda or cuda:N (a build with the `cuda`
    /// feature); other models always run on the CPU.
    #[arg(long, default_value = "cpu")]
    device: Placement,
    /// Skip the final noise-free denoising (Tweedie) step.
    #[arg(long)]
    no_denoise: bool,
    /// Seed of the run's random stream.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    seed: u64,
    /// Resampling scheme.
    #[arg(long, value_enum, default_value_t = Resampler::Systematic)]
    resampler: Resampler,
    /// Resample when ESS < threshold * N (0 = never, 1 = every step).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    ess_threshold: f64,
    /// Allow resampling only for forward times in LO:HI.
    #[arg(long, value_name = "LO:HI")]
    resample_window: Option<String>,
    /// Divergence estimator, where one is needed: exact | vjp | fd.
    #[arg(long, default_value = "vjp")]
    divergence: String,
    /// Hutchinson probes per step.
    #[arg(long, default_value_t = 1)]
    probes: usize,
    /// Hutchinson probe distribution.
    #[arg(long, value_enum, default_value_t = Probe::Rademacher)]
    probe: Probe,
    /// Central-difference step for --divergence fd.
    #[arg(long, default_value_t = 1e-2)]
    fd_step: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Picture of a weighted resample (PNG): a scatter plot of the first two coordinates, or an image grid for image data.
    #[arg(long, value_name = "FILE.png")]
    out: Option<PathBuf>,
    /// Image grid size for image data, ROWSxCOLS.
    #[arg(long, default_value = "8x8", value_name = "ROWSxCOLS")]
    grid_size: String,
    /// Save `samples` (N x ...) and normalised `log_weights` (N) (safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    save_samples: Option<PathBuf>,
    /// JSON report: settings, per-step ESS / resampling / ancestors, log Z, timing.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Fashion-MNIST classifier file (kind fmnist_classifier): adds the weighted class fractions of the
    /// samples to the report and the summary, and class labels under the grid images.
    #[arg(long, value_name = "FILE.safetensors")]
    classifier: Option<PathBuf>,
    /// No progress bar or summary.
    #[arg(long)]
    quiet: bool,
}

fn parse_window(s: &str) -> Result<(f64, f64)> {
    let (a, b) = s.split_once(':').with_context(|| format!("--resample-window `{s}`: expected LO:HI, e.g. 0.05:1"))?;
    let p = |v: &str| v.trim().parse::<f64>().with_context(|| format!("--resample-window `{s}`: `{v}` is not a number"));
    Ok((p(a)?, p(b)?))
}

fn parse_grid(s: &str) -> Result<(usize, usize)> {
    let (r, c) = s.split_once(['x', 'X']).with_context(|| format!("--grid-size `{s}`: expected ROWSxCOLS, e.g. 8x8"))?;
    let p = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0).with_context(|| format!("--grid-size `{s}`: `{v}` is not a positive integer"));
    Ok((p(r)?, p(c)?))
}

fn job(args: Args) -> Result<MixJob> {
    let window = args.resample_window.as_deref().map(parse_window).transpose()?;
    let hf_cache = hub::cache_dir(std::env::var_os("HF_HUB_CACHE"), std::env::var_os("HF_HOME"), std::env::var_os("HOME"));
    let tuned = matches!(args.compose, ComposeKind::Geometric | ComposeKind::Product | ComposeKind::Anneal) || (args.compose == ComposeKind::Power && args.m > 1.0);
    for (flag, given) in [("--drift-gamma", args.drift_gamma.is_some()), ("--moves", args.moves.is_some()), ("--move-accept", args.move_accept.is_some())] {
        anyhow::ensure!(
            !given || tuned,
            "{flag} applies to geometric, product and anneal compositions and to power with --m > 1 only; leave it out for --compose {}{}",
            format!("{:?}", args.compose).to_lowercase(),
            if args.compose == ComposeKind::Power { format!(" --m {}", args.m) } else { String::new() }
        );
    }
    Ok(MixJob {
        loader: Loader::default().hf_cache(hf_cache).class_labels(args.class_label).device(args.device),
        spec: CompositionSpec {
            kind: args.compose,
            n_models: args.models.len(),
            coefficients: args.weights,
            beta: args.beta,
            method: args.method,
            m: args.m,
            gamma: args.gamma,
            fr_lambda: args.fr_lambda,
        },
        config: SamplerConfig {
            particles: args.particles,
            steps: args.steps,
            t_min: args.t_min,
            grid: args.grid,
            integrator: args.integrator,
            noise_scale: args.noise_scale,
            resample: ResamplePolicy::new(args.resampler, args.ess_threshold, window)?,
            divergence: DivergenceEstimator::new(&args.divergence, args.probes, args.probe, args.fd_step)?,
            seed: args.seed,
            denoise: !args.no_denoise,
            corrector_steps: args.corrector_steps,
            corrector_snr: args.corrector_snr,
            drift_gamma: args.drift_gamma.unwrap_or(DEFAULTS.drift_gamma),
            moves: MoveConfig::new(
                args.moves.unwrap_or(DEFAULTS.moves.per_step()),
                args.move_accept.unwrap_or(DEFAULTS.moves.target_accept()),
            )?,
        },
        grid: parse_grid(&args.grid_size)?,
        models: args.models,
        out: args.out,
        save_samples: args.save_samples,
        report: args.report,
        classifier: args.classifier,
        fashion_mnist_dir: std::env::var_os("FASHION_MNIST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(wfrmix::io::idx::FASHION_MNIST_DIR)),
        memory_limit: common::available_memory(),
    })
}

fn run(args: Args) -> Result<()> {
    common::set_threads(args.threads)?;
    let quiet = args.quiet;
    let job = job(args)?;
    let n = job.config.particles as f64;
    let bar = common::bar(quiet, Some(job.config.steps as u64), "{elapsed_precise} [{bar:40}] {pos}/{len} steps  {msg}");
    let result = mix::run(&job, |s| {
        bar.set_position(s.step as u64);
        if s.step % 10 == 0 || s.step == s.steps {
            bar.set_message(format!("t {:.4}  ESS {:.0}%", s.t, 100.0 * s.ess / n));
        }
    });
    bar.finish_and_clear();
    let outcome = result?;
    if !quiet {
        println!("{}", outcome.summary());
    }
    Ok(())
}

fn main() -> ExitCode {
    common::keep_freed_memory();
    match common::parse::<Args>("mix-sample") {
        Ok(args) => common::exit("mix-sample", run(args)),
        Err(code) => code,
    }
}
