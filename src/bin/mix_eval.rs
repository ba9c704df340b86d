//! `mix-eval`: evaluate one model on given inputs and times, writing its raw output, ε̂ and score (to check
//! a port against its original, or to benchmark a network). Thin: flags → [`wfrmix::jobs::eval::EvalJob`]
//! → summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use wfrmix::io::hub;
use wfrmix::jobs::eval::{self, EvalJob};
use wfrmix::registry::{Loader, Placement};

mod common;

/// Evaluate one model (a network file, a diffusers checkpoint directory or an hf: reference) on the tensor
/// `x` of a safetensors file at the given times; writes `output`, `epsilon` and `score`, each [T, N, ...].
#[derive(Parser, Debug)]
#[command(name = "mix-eval", version, about, long_about = None)]
struct Args {
    /// The model: a .safetensors model file, a diffusers checkpoint directory, or `hf:ORG/NAME[/FILE][@REVISION]`.
    #[arg(long, value_name = "MODEL")]
    model: PathBuf,
    /// Safetensors file holding the inputs `x`, [N, C, H, W] or [N, D].
    #[arg(long, value_name = "X.safetensors")]
    input: PathBuf,
    /// Forward times in (0, 1], comma-separated (a checkpoint's label is N t − 1).
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true)]
    t: Vec<f64>,
    /// Class label for class-conditional checkpoints.
    #[arg(long)]
    class: Option<u32>,
    /// Where a diffusers checkpoint runs: cpu (the CPU kernels), cuda or cuda:N (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: Placement,
    /// Output safetensors file.
    #[arg(long, value_name = "OUT.safetensors")]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No summary line.
    #[arg(long)]
    quiet: bool,
}

fn run(args: Args) -> Result<()> {
    common::set_threads(args.threads)?;
    let hf_cache = hub::cache_dir(std::env::var_os("HF_HUB_CACHE"), std::env::var_os("HF_HOME"), std::env::var_os("HOME"));
    let job = EvalJob {
        model: args.model,
        loader: Loader::default().hf_cache(hf_cache).class_label(args.class).device(args.device),
        input: args.input,
        times: args.t,
        out: args.out,
    };
    let outcome = eval::run(&job).context("evaluating")?;
    if !args.quiet {
        println!("{}", outcome.summary());
    }
    Ok(())
}

fn main() -> ExitCode {
    common::keep_freed_memory();
    match common::parse::<Args>("mix-eval") {
        Ok(args) => common::exit("mix-eval", run(args)),
        Err(code) => code,
    }
}
