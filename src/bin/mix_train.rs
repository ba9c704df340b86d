//! `mix-train`: train a score network by denoising score matching from a recipe (see `models/*.json`).
//! Thin: parses the flags into a [`wfrmix::jobs::train::TrainJob`], runs it with a progress bar, prints the
//! summary. Fashion-MNIST is read from `$FASHION_MNIST_DIR`, else Debian's directory.
//!
//! Threads: candle's CPU element-wise kernels use CANDLE_NUM_THREADS (else RAYON_NUM_THREADS, else the
//! physical cores) on a spin-waiting pool, and its matmuls RAYON_NUM_THREADS. For the small networks
//! trained here more threads bought nothing on a shared 2-core machine and made candle's forward up to 3x
//! slower (docs/nets.md), so mix-train sets both to 1 unless either is already set. Recipes of kind
//! `diffusers_unet2d` train on our own CPU kernels instead, whose results do not depend on the thread
//! count: they get rayon's default pool (all cores, or RAYON_NUM_THREADS).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use wfrmix::jobs::train::{self, TrainJob};

mod common;

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
    /// Replace existing output files even when they were not written from this recipe (by default
    /// mix-train replaces only a network or checkpoint that records the same recipe and overrides).
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn run(args: Args) -> Result<()> {
    let job = TrainJob {
        recipe: args.recipe,
        out: args.out,
        steps: args.steps,
        checkpoint_every: args.checkpoint_every,
        checkpoint: args.checkpoint,
        stop_at: args.stop_at,
        resume: args.resume,
        data_dir: std::env::var_os("FASHION_MNIST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(wfrmix::io::idx::FASHION_MNIST_DIR)),
        force: args.force,
    };
    let bar = common::bar(args.quiet, None, "{elapsed_precise} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})  {msg}");
    let result = train::run(&job, |p| {
        if p.total > 0 {
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
        }
        if p.step % 20 == 0 {
            bar.set_message(format!("step {}  loss {:.4}  lr {:.2e}", p.step, p.loss_ema, p.lr));
        }
    });
    bar.finish_and_clear();
    let outcome = result?;
    if !args.quiet {
        println!("{}", outcome.summary());
    }
    Ok(())
}

/// Whether the recipe at `path` trains on the CPU kernels (kind `diffusers_unet2d`); unreadable recipes
/// are reported by the job itself.
fn on_cpu_kernels(path: &std::path::Path) -> bool {
    let kind = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok()).and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from));
    kind.as_deref() == Some(wfrmix::train::recipe::DIFFUSERS_KIND)
}

fn main() -> ExitCode {
    common::keep_freed_memory();
    match common::parse::<Args>("mix-train") {
        Ok(args) => {
            if std::env::var_os("CANDLE_NUM_THREADS").is_none() && std::env::var_os("RAYON_NUM_THREADS").is_none() && !on_cpu_kernels(&args.recipe) {
                // Set before any candle or rayon call (single-threaded here): see the module header.
                std::env::set_var("CANDLE_NUM_THREADS", "1");
                std::env::set_var("RAYON_NUM_THREADS", "1");
            }
            common::exit("mix-train", run(args))
        }
        Err(code) => code,
    }
}
