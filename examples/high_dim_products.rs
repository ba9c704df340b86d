//! Products and geometric mixtures in high dimension (issue: they collapsed onto one ancestor for d ≥ 8):
//! component masses of the closed-form product against the sampler's, for the plain drift (γ = 1, no
//! moves), the variance-minimising drift γ* alone, and γ* with Metropolis-adjusted moves (the default).
//!
//! Experts: `shared/experts.rs::high_dim` (two 3-component diagonal mixtures whose product has 9
//! components; every coordinate's variance mismatch adds weight noise ∝ √d).
//!
//! cargo run --release --example high_dim_products [-- D...]

use wfrmix::report::metrics::{component_fractions, total_variation};
use wfrmix::{rng, Composition, DriftGamma, MoveConfig, Sampler, SamplerConfig};

#[path = "shared/experts.rs"]
mod experts;


fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dims: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a dimension")).collect();
    let dims = if dims.is_empty() { vec![2, 8, 64, 256] } else { dims };
    let n = 2048;
    println!("| d | drift, moves | TV of the 9 component masses | lineages | resamplings | mean γ | mean acceptance | wall s |");
    println!("|---|---|---|---|---|---|---|---|");
    for d in dims {
        let (a, b) = experts::high_dim(d);
        let (prod, _) = a.product(&b)?;
        let exact = prod.sample(100_000, &mut rng::seeded(9));
        let truth = component_fractions(&prod, &exact, &vec![1e-5; 100_000]);
        for (label, gamma, moves) in [
            ("γ = 1, none", DriftGamma::Fixed(1.0), MoveConfig::NONE),
            ("γ*, none", DriftGamma::Adaptive, MoveConfig::NONE),
            ("γ*, 1 MALA (default)", DriftGamma::Adaptive, MoveConfig::DEFAULT),
        ] {
            let cfg = SamplerConfig { particles: n, seed: 1, drift_gamma: gamma, moves, ..SamplerConfig::DEFAULT };
            let r = Sampler::new(&[&a, &b], Composition::product(2)?, cfg)?.run(|_| {})?;
            let tv = total_variation(&component_fractions(&prod, &r.samples, &r.weights()), &truth);
            let mg = r.steps.iter().map(|s| s.gamma).sum::<f64>() / r.steps.len() as f64;
            let acc: Vec<f64> = r.steps.iter().filter_map(|s| s.move_accept).collect();
            let ma = if acc.is_empty() { "—".to_string() } else { format!("{:.2}", acc.iter().sum::<f64>() / acc.len() as f64) };
            println!("| {d} | {label} | {tv:.3} | {} | {} | {mg:.2} | {ma} | {:.1} |", r.lineages, r.resamples, r.wall_seconds);
        }
    }
    Ok(())
}
