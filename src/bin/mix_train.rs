//! `mix-train`: train a score network by denoising score matching from a recipe (see `models/*.json`).
//! A thin layer over `wfrmix::train`: parse, run with a progress bar, checkpoint, write the network.
//!
//! Threads: candle's CPU element-wise kernels use CANDLE_NUM_THREADS (else RAYON_NUM_THREADS, else the
//! physical cores) on a spin-waiting pool, and its matmuls RAYON_NUM_THREADS. For the small networks
//! trained here more threads bought nothing on a shared 2-core machine and made candle's forward up to 3x
//! slower (docs/nets.md), so mix-train sets both to 1 unless either is already set.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use wfrmix::io;
use wfrmix::train::{Recipe, Trainer};

/// Train a score network (denoising score matching, AdamW, seeded) from a JSON recipe.
#[derive(Parser, Debug)]
#[command(name = "mix-train", version, about, long_about = None)]
struct Args {
    /// Recipe file (JSON), e.g. models/mlp2d_up.json. Paths inside it are relative to the working directory.
    #[arg(long, value_name = "FILE.json")]
    recipe: PathBuf,
    /// Output network file (overrides the recipe's `out`).
    #[arg(long, value_name = "FILE.safetensors")]
    out: Option<PathBuf>,
    /// Total optimisation steps (overrides the recipe's `steps`).
    #[arg(long)]
    steps: Option<usize>,
    /// Checkpoint every N steps (overrides the recipe; 0 = never).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Checkpoint file (default: the output with extension .ckpt.safetensors).
    #[arg(long, value_name = "FILE.safetensors")]
    checkpoint: Option<PathBuf>,
    /// Stop after this many steps (the learning-rate schedule still spans all `steps`), writing the
    /// network and a checkpoint: a run split by --stop-at and --resume equals the uninterrupted one.
    #[arg(long)]
    stop_at: Option<usize>,
    /// Continue from this checkpoint (same recipe; exact continuation).
    #[arg(long, value_name = "CKPT.safetensors")]
    resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The recipe's `kind` (default `score_mlp`).
fn recipe_kind(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("recipe {}", path.display()))?;
    Ok(v.get("kind").and_then(|k| k.as_str()).unwrap_or(wfrmix::nn::mlp::KIND).to_string())
}

/// Train the Fashion-MNIST classifier (recipe kind `fmnist_classifier`).
fn run_classifier(args: &Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.recipe)?;
    let mut recipe: wfrmix::nn::classifier::ClassifierRecipe = serde_json::from_str(&text).with_context(|| format!("recipe {}", args.recipe.display()))?;
    if let Some(o) = &args.out {
        recipe.out = o.clone();
    }
    io::check_writable(&recipe.out)?;
    let start = Instant::now();
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()) };
    let acc = wfrmix::nn::classifier::train_classifier(&recipe, &wfrmix::train::fashion_mnist_dir(), |k, loss| {
        if k % 20 == 0 {
            bar.set_message(format!("step {k}  loss {loss:.4}"));
        }
    })?;
    bar.finish_and_clear();
    if !args.quiet {
        println!("trained in {:.1} s; test accuracy {:.4}; wrote {}", start.elapsed().as_secs_f64(), acc, recipe.out.display());
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    match recipe_kind(&args.recipe)?.as_str() {
        wfrmix::nn::classifier::KIND => return run_classifier(&args),
        wfrmix::nn::unet::KIND => return Ok(wfrmix::train_unet::run_cli(&args.recipe, args.out.clone(), args.steps, args.quiet)?),
        _ => {}
    }
    let mut recipe = Recipe::load(&args.recipe)?;
    if let Some(o) = args.out {
        recipe.out = o;
    }
    if let Some(s) = args.steps {
        recipe.steps = s;
    }
    if let Some(c) = args.checkpoint_every {
        recipe.checkpoint_every = c;
    }
    if let Some(c) = args.checkpoint {
        recipe.checkpoint = Some(c);
    }
    let ckpt = recipe.checkpoint_path();
    io::check_writable(&recipe.out)?;
    if recipe.checkpoint_every > 0 {
        io::check_writable(&ckpt)?;
    }
    let mut trainer = match &args.resume {
        Some(p) => Trainer::resume(recipe.clone(), p).with_context(|| format!("resuming from {}", p.display()))?,
        None => Trainer::new(recipe.clone())?,
    };
    let total = recipe.steps as u64;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(trainer.steps_done() as u64);
    let start = Instant::now();
    let first = trainer.steps_done();
    let mut ema: Option<f64> = None;
    let stop = args.stop_at.unwrap_or(recipe.steps).min(recipe.steps);
    while trainer.steps_done() < stop {
        let loss = trainer.step()?;
        let e = ema.map_or(loss, |e| 0.99 * e + 0.01 * loss);
        ema = Some(e);
        let k = trainer.steps_done();
        bar.set_position(k as u64);
        if k % 20 == 0 {
            bar.set_message(format!("loss {e:.4}  lr {:.2e}", recipe.lr_at(k)));
        }
        if recipe.checkpoint_every > 0 && k % recipe.checkpoint_every == 0 && k < stop {
            trainer.save_checkpoint(&ckpt)?;
        }
    }
    bar.finish_and_clear();
    trainer.save_network(&recipe.out)?;
    if recipe.checkpoint_every > 0 || stop < recipe.steps {
        trainer.save_checkpoint(&ckpt)?;
    }
    let secs = start.elapsed().as_secs_f64();
    if !args.quiet {
        println!(
            "{} steps in {:.1} s ({:.1} steps/s); final loss (EMA) {:.4}; wrote {}",
            trainer.steps_done() - first,
            secs,
            (trainer.steps_done() - first) as f64 / secs.max(1e-9),
            ema.unwrap_or(f64::NAN),
            recipe.out.display()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Set before any candle call (single-threaded here): see the module header.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mix-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
