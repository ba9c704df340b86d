//! Is the conv experts' geometric mixture all-Trouser because of its target or because of the sampler?
//! Runs q_c^½ q_d^½ (weights/fmnist_unet_c, weights/fmnist_unet_d) with resampling off, so that every
//! particle keeps its own Feynman–Kac weight to the end, judges each final image with the shipped
//! classifier and prints, per class, the particles, the log of the class's total normalised weight (an
//! importance-sampling estimate of the target's class mass) and the spread of the log-weights inside the
//! class. A gap between classes far larger than the spread inside them is the target's doing: the
//! weights, which correct any drift to the target, rank whole classes apart.
//!
//! cargo run --release --example geometric_classes -- [PARTICLES=64] [STEPS=the default] [SEED=0] [BETA=0.5]

use std::path::Path;

use wfrmix::io::idx::FASHION_CLASSES;
use wfrmix::nets::classifier::Classifier;
use wfrmix::particles::log_sum_exp as lse;
use wfrmix::{load_model, Composition, ResamplePolicy, Resampler, Sampler, SamplerConfig, ScoreModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize| std::env::args().nth(i);
    let particles = arg(1).map_or(Ok(64), |s| s.parse())?;
    let steps = arg(2).map_or(Ok(SamplerConfig::DEFAULT.steps), |s| s.parse())?;
    let seed = arg(3).map_or(Ok(0), |s| s.parse())?;
    let beta: f64 = arg(4).map_or(Ok(0.5), |s| s.parse())?;
    let c = load_model(Path::new("weights/fmnist_unet_c"))?;
    let d = load_model(Path::new("weights/fmnist_unet_d"))?;
    let models: [&dyn ScoreModel; 2] = [c.as_ref(), d.as_ref()];
    let resample = ResamplePolicy::new(Resampler::Systematic, 0.0, None)?;
    let cfg = SamplerConfig { particles, steps, seed, resample, ..SamplerConfig::DEFAULT };
    let run = Sampler::new(&models, Composition::geometric(&[1.0 - beta, beta])?, cfg)?.run(|_| {})?;
    let labels = Classifier::load(Path::new("weights/fmnist_classifier.safetensors"))?.predict(&run.samples)?;
    let total = lse(&run.log_weights);
    println!("geometric c^{:.2} d^{beta:.2}, N = {particles}, {steps} steps, seed {seed}, no resampling: log Z = {:.1}, final ESS = {:.2}", 1.0 - beta, run.log_z, run.final_ess);
    println!();
    println!("| class | particles | log class mass (normalised weights) | log-weights inside the class: max, median, min |");
    println!("|---|---|---|---|");
    for class in 0..10u8 {
        let mut lw: Vec<f64> = labels.iter().zip(&run.log_weights).filter(|(l, _)| **l == class).map(|(_, w)| w - total).collect();
        if lw.is_empty() {
            continue;
        }
        lw.sort_by(|a, b| b.total_cmp(a));
        println!("| {} {} | {} | {:.1} | {:.1}, {:.1}, {:.1} |", class, FASHION_CLASSES[class as usize], lw.len(), lse(&lw), lw[0], lw[lw.len() / 2], lw[lw.len() - 1]);
    }
    Ok(())
}
