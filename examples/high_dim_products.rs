//! Products and geometric mixtures in high dimension (issue: they collapsed onto one ancestor for d ≥ 8):
//! component masses of the closed-form product against the sampler's, for the plain drift (γ = 1, no
//! moves), the variance-minimising drift γ* alone, and γ* with Metropolis-adjusted moves (the default).
//! Then the same for the geometric mixture a²·b (exponents 2 and 1: closed form a·a·b, 27 components),
//! with the TV of an exact sample of the same size beside it (the floor). Last, the power mean m = 2
//! (the Fisher–Rao mixture) of two Gaussians, whose closed form is a 3-component mixture
//! (`experts::power2_closed`), with the first coordinate's moments and log Ẑ against the truth.
//!
//! Experts: `shared/experts.rs::high_dim` (two 3-component diagonal mixtures whose product has 9
//! components; every coordinate's variance mismatch adds weight noise ∝ √d).
//!
//! cargo run --release --example high_dim_products [-- [power] D...]   (`power`: only the power-mean table)

use wfrmix::report::metrics::{component_fractions, total_variation};
use wfrmix::{rng, Composition, DriftGamma, MoveConfig, Sampler, SamplerConfig};

#[path = "shared/experts.rs"]
mod experts;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let power_only = args.first().is_some_and(|a| a == "power");
    let dims: Vec<usize> = args.iter().skip(power_only as usize).map(|a| a.parse().expect("a dimension")).collect();
    let dims = if dims.is_empty() { vec![2, 8, 64, 256] } else { dims };
    let n = 2048;
    if power_only {
        power_mean(&dims, n)?;
        return power_seeds(&dims, n);
    }
    for (target, exponents) in [("product a·b", [1.0, 1.0]), ("geometric a²·b", [2.0, 1.0])] {
        println!();
        println!("{target}, N = {n}:");
        println!();
        println!("| d | drift, moves | TV of the component masses | exact sample's TV (floor) | lineages | resamplings | mean γ | mean acceptance | wall s |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for &d in &dims {
            let (a, b) = experts::high_dim(d);
            // a^e0 · b^e1 with integer exponents is a product of mixtures, itself a mixture: the closed form
            let factors: Vec<_> = std::iter::repeat_n(&a, exponents[0] as usize).chain(std::iter::repeat_n(&b, exponents[1] as usize)).collect();
            let mut closed = factors[0].clone();
            for f in &factors[1..] {
                closed = closed.product(f)?.0;
            }
            let exact = closed.sample(100_000, &mut rng::seeded(9));
            let truth = component_fractions(&closed, &exact, &vec![1e-5; 100_000]);
            let floor_draw = closed.sample(n, &mut rng::seeded(10));
            let floor = total_variation(&component_fractions(&closed, &floor_draw, &vec![1.0 / n as f64; n]), &truth);
            for (label, gamma, moves) in [
                ("γ = 1, none", DriftGamma::Fixed(1.0), MoveConfig::NONE),
                ("γ*, none", DriftGamma::Adaptive, MoveConfig::NONE),
                ("γ*, 1 MALA (default)", DriftGamma::Adaptive, MoveConfig::DEFAULT),
            ] {
                let cfg = SamplerConfig { particles: n, seed: 1, drift_gamma: gamma, moves, ..SamplerConfig::DEFAULT };
                let r = Sampler::new(&[&a, &b], Composition::geometric(&exponents)?, cfg)?.run(|_| {})?;
                let tv = total_variation(&component_fractions(&closed, &r.samples, &r.weights()), &truth);
                let mg = r.steps.iter().map(|s| s.gamma).sum::<f64>() / r.steps.len() as f64;
                let acc: Vec<f64> = r.steps.iter().filter_map(|s| s.move_accept).collect();
                let ma = if acc.is_empty() { "—".to_string() } else { format!("{:.2}", acc.iter().sum::<f64>() / acc.len() as f64) };
                println!("| {d} | {label} | {tv:.3} | {floor:.3} | {} | {} | {mg:.2} | {ma} | {:.1} |", r.lineages, r.resamples, r.wall_seconds);
            }
        }
    }
    power_mean(&dims, n)?;
    power_seeds(&dims, n)
}

/// The power mean m = 2, weights (0.6, 0.4), of `experts::power_pair(d)` against its closed form.
fn power_mean(dims: &[usize], n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let w = [0.6, 0.4];
    println!();
    println!("power mean m = 2, a = (0.6, 0.4), N = {n}:");
    println!();
    println!("| d | drift, moves | TV of the 3 component masses | exact sample's TV (floor) | error of E x₀, Var x₀ (sd of either) | log Ẑ (truth) | final ESS / N | lineages | resamplings | mean γ | mean acceptance | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &d in dims {
        let (a, b) = experts::power_pair(d);
        let (closed, log_z) = experts::power2_closed(&a, &b, w);
        let exact = closed.sample(100_000, &mut rng::seeded(9));
        let truth = component_fractions(&closed, &exact, &vec![1e-5; 100_000]);
        let floor_draw = closed.sample(n, &mut rng::seeded(10));
        let floor = total_variation(&component_fractions(&closed, &floor_draw, &vec![1.0 / n as f64; n]), &truth);
        let (mt, vt) = closed.mean_and_variance();
        // The sd of a sample mean and of a sample variance of x₀ at N (kurtosis taken as Gaussian's).
        let (sd_m, sd_v) = ((vt[0] / n as f64).sqrt(), vt[0] * (2.0 / n as f64).sqrt());
        for (label, gamma, moves) in [
            ("γ = 1, none", DriftGamma::Fixed(1.0), MoveConfig::NONE),
            ("γ*, none", DriftGamma::Adaptive, MoveConfig::NONE),
            ("γ*, 1 MALA (default)", DriftGamma::Adaptive, MoveConfig::DEFAULT),
        ] {
            let cfg = SamplerConfig { particles: n, seed: 1, drift_gamma: gamma, moves, ..SamplerConfig::DEFAULT };
            let r = Sampler::new(&[&a, &b], Composition::power(&w, 2.0)?, cfg)?.run(|_| {})?;
            let m0 = r.weighted_mean(|x| x[0]);
            let v0 = r.weighted_mean(|x| (x[0] - m0).powi(2));
            let tv = total_variation(&component_fractions(&closed, &r.samples, &r.weights()), &truth);
            let mg = r.steps.iter().map(|s| s.gamma).sum::<f64>() / r.steps.len() as f64;
            let acc: Vec<f64> = r.steps.iter().filter_map(|s| s.move_accept).collect();
            let ma = if acc.is_empty() { "—".to_string() } else { format!("{:.2}", acc.iter().sum::<f64>() / acc.len() as f64) };
            println!(
                "| {d} | {label} | {tv:.3} | {floor:.3} | {:+.3}, {:+.3} ({sd_m:.3}, {sd_v:.3}) | {:.3} ({log_z:.3}) | {:.2} | {} | {} | {mg:.2} | {ma} | {:.1} |",
                m0 - mt[0],
                v0 - vt[0],
                r.log_z,
                r.final_ess / n as f64,
                r.lineages,
                r.resamples,
                r.wall_seconds
            );
        }
    }
    Ok(())
}

/// The power mean's errors over seeds 1–8 (mean ± standard error, and the run-to-run sd), plain drift
/// against the defaults: what single rows cannot show.
fn power_seeds(dims: &[usize], n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let w = [0.6, 0.4];
    println!();
    println!("power mean m = 2 over seeds 1-8 (N = {n}): error, mean ± standard error (run-to-run sd)");
    println!();
    println!("| d | drift, moves | E x₀ | Var x₀ | log Ẑ |");
    println!("|---|---|---|---|---|");
    let summary = |v: &[f64]| {
        let k = v.len() as f64;
        let m = v.iter().sum::<f64>() / k;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
        format!("{m:+.3} ± {:.3} ({sd:.3})", sd / k.sqrt())
    };
    for &d in dims {
        let (a, b) = experts::power_pair(d);
        let (closed, log_z) = experts::power2_closed(&a, &b, w);
        let (mt, vt) = closed.mean_and_variance();
        for (label, gamma, moves) in [("γ = 1, none", DriftGamma::Fixed(1.0), MoveConfig::NONE), ("γ*, 1 MALA (default)", DriftGamma::Adaptive, MoveConfig::DEFAULT)] {
            let (mut em, mut ev, mut ez) = (Vec::new(), Vec::new(), Vec::new());
            for seed in 1..=8 {
                let cfg = SamplerConfig { particles: n, seed, drift_gamma: gamma, moves, ..SamplerConfig::DEFAULT };
                let r = Sampler::new(&[&a, &b], Composition::power(&w, 2.0)?, cfg)?.run(|_| {})?;
                let m0 = r.weighted_mean(|x| x[0]);
                em.push(m0 - mt[0]);
                ev.push(r.weighted_mean(|x| (x[0] - m0).powi(2)) - vt[0]);
                ez.push(r.log_z - log_z);
            }
            println!("| {d} | {label} | {} | {} | {} |", summary(&em), summary(&ev), summary(&ez));
        }
    }
    Ok(())
}
