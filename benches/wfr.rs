//! WFR throughput: particle-steps per second (one step = ULA move + weighted KDE + reweighting + adaptive
//! resampling) at N = 1024, 8192, 65536 on the double well in 1-D and 2-D, h = 0.1. Criterion reports
//! the rate as "elements/s" (elements = particle-steps). Quick settings: 10 samples, ~2 s per case.
//!
//!     cargo bench --bench wfr

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wfrmix::wfr::energy::DoubleWell;
use wfrmix::rng::seeded;
use wfrmix::wfr::{Kde, KdeMethod, WfrConfig, WfrSampler};

const STEPS: usize = 10;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wfr_particle_steps");
    g.sample_size(10).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    for dim in [1usize, 2] {
        let target = DoubleWell::new(dim, 0.25, 0.0, 0.05).expect("valid target");
        for (n, method) in [(1024, KdeMethod::Exact), (1024, KdeMethod::Binned), (8192, KdeMethod::Binned), (65536, KdeMethod::Binned)] {
            let x0 = target.sample_wells(n, 0.5, &mut seeded(1)).expect("valid start");
            let kde = Kde { method, ..Kde::fixed(0.1) };
            let sampler = WfrSampler::new(WfrConfig::wfr(1e-3, STEPS as f64 * 1e-3, 1.0, kde)).expect("valid config");
            g.throughput(Throughput::Elements((n * STEPS) as u64));
            let id = BenchmarkId::new(format!("{dim}d_{method:?}").to_lowercase(), n);
            g.bench_function(id, |b| {
                b.iter(|| sampler.run(&target, x0.clone(), &mut seeded(2), &mut |_| {}).expect("run"));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
