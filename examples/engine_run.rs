//! The engine-throughput configuration of the README's throughput table, as one timed run: a two-model
//! `state` mixture of two 4-component exact experts in d = 64 (or `--d D`), N = 4096 particles,
//! 1000 steps, on the threads rayon is given. Prints the wall time and particle-steps per second.
//!
//! cargo run --release --example engine_run -- [d] [particles] [steps] [method: state|fr] [seed] [precision: f64|f32]
//! (f32: the experts' score kernel in f32, `Precision::F32`)

use wfrmix::model::gmm::Precision;
use wfrmix::rng;
use wfrmix::{Composition, DivergenceEstimator, GaussianMixture, MixtureMethod, Probe, Sampler, SamplerConfig, VpSchedule};

fn expert(k: usize, d: usize, shift: f64, seed: u64) -> GaussianMixture {
    let mut m = vec![0.0; k * d];
    rng::fill_normal(&mut rng::seeded(seed), &mut m);
    m.iter_mut().for_each(|v| *v += shift);
    GaussianMixture::new(m, vec![0.5; k * d], vec![1.0; k], d, VpSchedule::default()).unwrap()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (d, n, steps) = (arg(1, 64), arg(2, 4096), arg(3, 1000));
    let fr = std::env::args().nth(4).is_some_and(|m| m == "fr");
    let precision = if std::env::args().nth(6).is_some_and(|p| p == "f32") { Precision::F32 } else { Precision::F64 };
    let (a, b) = (expert(4, d, 1.0, 1).with_precision(precision), expert(4, d, -1.0, 2).with_precision(precision));
    let (method, divergence) = if fr {
        (MixtureMethod::Fr, DivergenceEstimator::vjp(1, Probe::Rademacher)?)
    } else {
        (MixtureMethod::State, DivergenceEstimator::exact())
    };
    let seed = arg(5, 0) as u64;
    let cfg = SamplerConfig { particles: n, steps, divergence, seed, ..Default::default() };
    let models = [&a, &b];
    let s = Sampler::new(&models, Composition::mixture(&[0.7, 0.3], method)?, cfg)?;
    let run = s.run(|_| {})?;
    let mean0 = run.weighted_mean(|x| x[0]);
    let truth = GaussianMixture::mixture(&[&a, &b], &[0.7, 0.3])?.mean_and_variance().0[0];
    println!(
        "d = {d}, N = {n}, {steps} steps, {precision:?} score kernel, {} threads: {:.2} s, {:.3} M particle-steps/s (weighted mean of x_0 {mean0:.4}, exact {truth:.4})",
        rayon::current_num_threads(),
        run.wall_seconds,
        run.particle_steps_per_second() / 1e6
    );
    Ok(())
}
