//! Engine throughput: particle-steps per second for a two-model mixture of two 4-component exact experts
//! at N = 4096 in d = 2, 64 and 784, without divergences (state method) and with Hutchinson divergences
//! (fr method, one Rademacher probe by reverse-mode VJP or by central differences; not at d = 784);
//! and the product of the same two experts in d = 2, 64 and 256 with the default variance-minimising
//! drift and one Metropolis move per step, against the plain drift (γ = 1, no moves). `state_f32`: the
//! `state` run with the experts' score kernel in f32 (`Precision::F32`).
//!
//! cargo bench --bench engine            (RAYON_NUM_THREADS=1 for the single-thread figure)

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wfrmix::model::gmm::Precision;
use wfrmix::rng;
use wfrmix::{Composition, DivergenceEstimator, DriftGamma, GaussianMixture, MixtureMethod, MoveConfig, Probe, Sampler, SamplerConfig, VpSchedule};

fn expert(k: usize, d: usize, shift: f64, seed: u64) -> GaussianMixture {
    let mut m = vec![0.0; k * d];
    rng::fill_normal(&mut rng::seeded(seed), &mut m);
    m.iter_mut().for_each(|v| *v += shift);
    GaussianMixture::new(m, vec![0.5; k * d], vec![1.0; k], d, VpSchedule::default()).unwrap()
}

fn bench(c: &mut Criterion) {
    let n = 4096;
    let steps = 20;
    let mut g = c.benchmark_group("mixture_N4096");
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    g.throughput(Throughput::Elements((n * steps) as u64));
    for d in [2usize, 64, 784] {
        let (a, b) = (expert(4, d, 1.0, 1), expert(4, d, -1.0, 2));
        let cases = [
            ("state", MixtureMethod::State, DivergenceEstimator::exact()),
            ("fr+vjp", MixtureMethod::Fr, DivergenceEstimator::vjp(1, Probe::Rademacher).unwrap()),
            ("fr+fd", MixtureMethod::Fr, DivergenceEstimator::fd(1, Probe::Rademacher, 1e-2).unwrap()),
        ];
        for (name, method, divergence) in cases.into_iter().take(if d > 64 { 1 } else { 3 }) {
            let cfg = SamplerConfig { particles: n, steps, divergence, ..Default::default() };
            let models = [&a, &b];
            let s = Sampler::new(&models, Composition::mixture(&[0.7, 0.3], method).unwrap(), cfg).unwrap();
            g.bench_function(format!("d{d}/{name}"), |bch| bch.iter(|| s.run(|_| {}).unwrap()));
        }
        // The same `state` run with the experts' score kernel in f32 (Precision::F32).
        let (a, b) = (a.with_precision(Precision::F32), b.with_precision(Precision::F32));
        let cfg = SamplerConfig { particles: n, steps, ..Default::default() };
        let models = [&a, &b];
        let s = Sampler::new(&models, Composition::mixture(&[0.7, 0.3], MixtureMethod::State).unwrap(), cfg).unwrap();
        g.bench_function(format!("d{d}/state_f32"), |bch| bch.iter(|| s.run(|_| {}).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("product_N4096");
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    g.throughput(Throughput::Elements((n * steps) as u64));
    for d in [2usize, 64, 256] {
        let (a, b) = (expert(4, d, 0.5, 1), expert(4, d, -0.5, 2));
        for (name, drift_gamma, moves) in [("default", DriftGamma::Adaptive, MoveConfig::DEFAULT), ("plain", DriftGamma::Fixed(1.0), MoveConfig::NONE)] {
            let cfg = SamplerConfig { particles: n, steps, drift_gamma, moves, ..Default::default() };
            let models = [&a, &b];
            let s = Sampler::new(&models, Composition::product(2).unwrap(), cfg).unwrap();
            g.bench_function(format!("d{d}/{name}"), |bch| bch.iter(|| s.run(|_| {}).unwrap()));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
