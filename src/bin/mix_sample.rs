//! `mix-sample`: compose score models and sample the composition with a weighted reverse SDE.
//! A thin layer over the library: parse, build checked settings, run, write outputs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use wfrmix::{
    io, load_model, output, rng, ComposeKind, CompositionSpec, DivergenceEstimator, Integrator, MixtureMethod, Probe,
    ResamplePolicy, Resampler, Sampler, SamplerConfig, ScoreModel, TimeGrid,
};

/// Sample compositions of diffusion models (mixtures, power means, geometric mixtures, products,
/// annealing) with a weighted reverse SDE and adaptive resampling.
#[derive(Parser, Debug)]
#[command(name = "mix-sample", version, about, long_about = None)]
struct Args {
    /// Model files (.safetensors with a `kind` in their header metadata), or Hugging Face references
    /// `hf:ORG/NAME/FILE[@REVISION]` resolved from the local hub cache (HF_HUB_CACHE, HF_HOME; never downloaded).
    #[arg(long, num_args = 1.., required = true, value_name = "FILE")]
    models: Vec<PathBuf>,
    /// How to compose: mixture | power | geometric | product | anneal.
    #[arg(long, default_value = "mixture")]
    compose: ComposeKind,
    /// Mixture sampling method: state (exact, tracked log-densities) | fr (Fisher-Rao correction weights) | naive (biased ablation).
    #[arg(long, default_value = "state")]
    method: MixtureMethod,
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
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    noise_scale: f64,
    /// Number of particles.
    #[arg(long, default_value_t = 1024)]
    particles: usize,
    /// Number of reverse steps.
    #[arg(long, default_value_t = 500)]
    steps: usize,
    /// Last time of the grid.
    #[arg(long, default_value_t = 1e-3)]
    t_min: f64,
    /// Time grid: edm (default, rho = 7), edm:RHO, logsnr or uniform.
    #[arg(long, default_value = "edm")]
    grid: TimeGrid,
    /// Step rule: ancestral (exact-mean VP step) or euler (plain Euler-Maruyama, for comparison).
    #[arg(long, default_value = "ancestral")]
    integrator: Integrator,
    /// Langevin corrector steps per step (geometric, product, anneal): lower weight variance, small log Z bias.
    #[arg(long, default_value_t = 0)]
    corrector_steps: usize,
    /// Corrector signal-to-noise ratio r: step = 2 r^2 d / mean |score|^2.
    #[arg(long, default_value_t = 0.05)]
    corrector_snr: f64,
    /// Skip the final noise-free denoising (Tweedie) step.
    #[arg(long)]
    no_denoise: bool,
    /// Seed of the run's random stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Resampling scheme: systematic | stratified | multinomial | residual.
    #[arg(long, default_value = "systematic")]
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
    /// Hutchinson probe distribution: rademacher | gaussian.
    #[arg(long, default_value = "rademacher")]
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
    /// Save `samples` [N, ...] and normalised `log_weights` [N] (safetensors).
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

fn run(args: Args) -> Result<()> {
    if let Some(t) = args.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting the thread count")?;
    }
    // Fail on unwritable outputs before spending time on sampling.
    for p in [&args.out, &args.save_samples, &args.report].into_iter().flatten() {
        io::check_writable(p)?;
    }
    let models: Vec<Box<dyn ScoreModel>> = args
        .models
        .iter()
        .map(|p| match p.to_str() {
            Some(s) if s.starts_with(wfrmix::hub::HF_PREFIX) => wfrmix::hub::load_model_ref(s, None),
            _ => load_model(p),
        })
        .collect::<wfrmix::Result<_>>()?;
    let refs: Vec<&dyn ScoreModel> = models.iter().map(|m| m.as_ref()).collect();
    let spec = CompositionSpec {
        kind: args.compose,
        n_models: refs.len(),
        coefficients: args.weights.clone(),
        beta: args.beta,
        method: args.method,
        m: args.m,
        gamma: args.gamma,
    };
    let composition = spec.build()?;
    let classifier = args.classifier.as_deref().map(wfrmix::nn::classifier::Classifier::load).transpose()?;
    if classifier.is_some() {
        anyhow::ensure!(refs[0].data_shape() == [1, 28, 28], "--classifier needs 1x28x28 image models, not data shape {:?}", refs[0].data_shape());
    }
    let grid = parse_grid(&args.grid_size)?;
    let window = args.resample_window.as_deref().map(parse_window).transpose()?;
    let config = SamplerConfig {
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
    };
    let sampler = Sampler::new(&refs, composition.clone(), config.clone())?;

    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::with_draw_target(Some(args.steps as u64), ProgressDrawTarget::stderr()) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} steps  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let n = args.particles as f64;
    let result = sampler.run(|s| {
        bar.set_position(s.step as u64);
        if s.step % 10 == 0 || s.step == s.steps {
            bar.set_message(format!("t {:.4}  ESS {:.0}%", s.t, 100.0 * s.ess / n));
        }
    });
    bar.finish_and_clear();
    let run = result?;

    let settings = json!({
        "models": args.models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "composition": composition,
        "sampler": config,
    });
    if let Some(p) = &args.save_samples {
        let mut meta = HashMap::new();
        meta.insert("composition".to_string(), serde_json::to_string(&composition).unwrap_or_default());
        meta.insert("seed".to_string(), args.seed.to_string());
        output::save_samples(p, &run, &meta)?;
    }
    // Class fractions by the classifier: weighted by the final normalised weights, and unweighted.
    let classes = match &classifier {
        Some(c) => {
            let labels = c.predict(&run.samples)?;
            let w = run.weights();
            let weighted = wfrmix::nn::classifier::class_fractions(&labels, Some(&w));
            let plain = wfrmix::nn::classifier::class_fractions(&labels, None);
            let named = |f: &[f64]| -> serde_json::Map<String, serde_json::Value> {
                f.iter().enumerate().map(|(i, v)| (format!("{i}:{}", wfrmix::data::FASHION_CLASSES[i]), json!(v))).collect()
            };
            Some(json!({
                "classifier": args.classifier.as_ref().map(|p| p.display().to_string()),
                "classifier_test_accuracy": c.test_accuracy,
                "weighted_fractions": named(&weighted),
                "unweighted_fractions": named(&plain),
                "weighted": weighted,
            }))
        }
        None => None,
    };
    if let Some(p) = &args.report {
        let mut rep = output::report(settings, &run);
        if let Some(c) = &classes {
            rep["classes"] = c.clone();
        }
        io::write_json(p, &rep)?;
    }
    if let Some(p) = &args.out {
        let names: Vec<String> = args
            .models
            .iter()
            .map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
            .collect();
        let title = format!("{:?} of {} ({} particles, seed {})", args.compose, names.join(" + "), args.particles, args.seed).to_lowercase();
        let mut prng = rng::seeded(args.seed ^ 0x5eed);
        match &classifier {
            Some(c) if run.shape.len() == 3 => {
                let m = (grid.0 * grid.1).min(run.len());
                let imgs = run.resampled(m, &mut prng);
                let labels: Vec<String> = c.predict(&imgs)?.iter().map(|&l| wfrmix::data::FASHION_CLASSES[l as usize].to_string()).collect();
                output::save_image_grid(p, &imgs, &run.shape, grid.0, grid.1, 3, &title, Some(&labels))?;
            }
            _ => output::save_picture(p, &run, &title, grid, None, &mut prng)?,
        }
    }
    if !args.quiet {
        println!(
            "{} particles x {} steps in {:.2} s ({:.3e} particle-steps/s); log Z = {:.4}; final ESS = {:.0} ({:.0}%); {} resamplings; {} surviving lineages",
            run.len(),
            run.steps.len(),
            run.wall_seconds,
            run.particle_steps_per_second(),
            run.log_z,
            run.final_ess,
            100.0 * run.final_ess / n,
            run.resamples,
            run.lineages
        );
        if let Some(c) = &classes {
            let f: Vec<String> = c["weighted"].as_array().into_iter().flatten().enumerate().filter_map(|(i, v)| v.as_f64().filter(|&v| v > 0.0).map(|v| format!("{i} {} {v:.3}", wfrmix::data::FASHION_CLASSES[i]))).collect();
            println!("class fractions (weighted): {}", f.join(", "));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mix-sample: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
