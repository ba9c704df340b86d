//! Products and geometric mixtures in high dimension (issue: they collapsed onto one ancestor for d ≥ 8):
//! component masses of the closed-form product against the sampler's, for the plain drift (γ = 1, no
//! moves), the variance-minimising drift γ* alone, and γ* with Metropolis-adjusted moves (the default).
//! Then the same for the geometric mixture a²·b (exponents 2 and 1: closed form a·a·b, 27 components),
//! with the TV of an exact sample of the same size beside it (the floor).
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
    Ok(())
}
