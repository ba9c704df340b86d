//! How the variance of Hutchinson divergence estimates affects the paths that need them (issue 13's first
//! study): the Fisher–Rao mixture (`fr`, whose weights use ∇·s_i) and the exact `state` mixture at noise
//! scale η = 0.5 (whose tracked ℓ_i need ∇·s_i when η ≠ 1), on overlapping exact experts in d = 2 … 256,
//! with the exact divergence, Rademacher and Gaussian probes by reverse mode (1 and 4 probes), and
//! Rademacher probes by central differences.
//!
//! Experts: A = N(−0.5 e₁, diag 0.6²) and B = N(0.7 e₁, diag(0.8², 0.5², …)), mixture 0.7 A + 0.3 B:
//! the truth is E[x₁] = −0.14. Reported: the weighted mean of x₁ minus the truth (4 seeds, mean ± sd) and
//! the final ESS / N.
//!
//! cargo run --release --example hutchinson_study [-- D...]

use wfrmix::{Composition, DivergenceEstimator, GaussianMixture, MixtureMethod, Probe, Sampler, SamplerConfig, VpSchedule};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dims: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a dimension")).collect();
    let dims = if dims.is_empty() { vec![2, 16, 64, 256] } else { dims };
    let (n, steps, seeds) = (2048, 500, 4u64);
    println!("N = {n}, {steps} steps, {seeds} seeds; error of E[x1] (truth -0.14), mean ± sd, and final ESS / N\n");
    println!("| d | path | exact | VJP Rademacher ×1 | VJP Gaussian ×1 | VJP Rademacher ×4 | central differences ×1 |");
    println!("|---|---|---|---|---|---|---|");
    for d in dims {
        let s = VpSchedule::default();
        let mut ma = vec![0.0; d];
        ma[0] = -0.5;
        let mut mb = vec![0.0; d];
        mb[0] = 0.7;
        let sb: Vec<f64> = (0..d).map(|j| if j == 0 { 0.8 } else { 0.5 }).collect();
        let a = GaussianMixture::new(ma, vec![0.6; d], vec![1.0], d, s.clone())?;
        let b = GaussianMixture::new(mb, sb, vec![1.0], d, s)?;
        let ests = [
            DivergenceEstimator::exact(),
            DivergenceEstimator::vjp(1, Probe::Rademacher)?,
            DivergenceEstimator::vjp(1, Probe::Gaussian)?,
            DivergenceEstimator::vjp(4, Probe::Rademacher)?,
            DivergenceEstimator::fd(1, Probe::Rademacher, 1e-2)?,
        ];
        for (path, method, eta) in [("fr", MixtureMethod::Fr, 1.0), ("state, η = 0.5", MixtureMethod::State, 0.5)] {
            let mut cells = Vec::new();
            for est in &ests {
                let (mut errs, mut ess) = (Vec::new(), 0.0);
                for seed in 0..seeds {
                    let cfg = SamplerConfig { particles: n, steps, seed, noise_scale: eta, divergence: *est, ..SamplerConfig::DEFAULT };
                    let r = Sampler::new(&[&a, &b], Composition::mixture(&[0.7, 0.3], method)?, cfg)?.run(|_| {})?;
                    errs.push(r.weighted_mean(|x| x[0]) + 0.14);
                    ess += r.final_ess / n as f64 / seeds as f64;
                }
                let m = errs.iter().sum::<f64>() / seeds as f64;
                let sd = (errs.iter().map(|e| (e - m).powi(2)).sum::<f64>() / (seeds - 1) as f64).sqrt();
                cells.push(format!("{m:+.3} ± {sd:.3}, ESS {ess:.2}"));
            }
            println!("| {d} | {path} | {} |", cells.join(" | "));
        }
    }
    Ok(())
}
