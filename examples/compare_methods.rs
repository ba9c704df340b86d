//! The README's accuracy tables, from real runs through the library API.
//!
//! 1. Linear mixture of the shipped 2-D experts (β = 0.3) by state, fr and naive: mass in the "down"
//!    expert's half-plane and sliced W1 to exact samples of the true mixture.
//! 2. Product of two 6-D experts that share a mode: moment errors against the closed-form product for
//!    the plain drift (γ = 1, no moves) with Euler–Maruyama on a uniform grid, the ancestral step on the
//!    default grid, the latter with one Langevin corrector per step, γ* alone, and the defaults (γ* and
//!    one Metropolis move per step) with both integrators.
//!
//! cargo run --release --example compare_methods

use wfrmix::report::metrics::sliced_w1;
use wfrmix::{rng, Composition, DriftGamma, GaussianMixture, Integrator, MixtureMethod, MoveConfig, Sampler, SamplerConfig, TimeGrid};

#[path = "shared/experts.rs"]
mod experts;

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1).max(1) as f64).sqrt();
    (m, sd)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds = 4u64;
    let (n, steps) = (4000, 1000);
    let up = GaussianMixture::load("weights/gmm2d_up.safetensors".as_ref())?;
    let down = GaussianMixture::load("weights/gmm2d_down.safetensors".as_ref())?;
    let beta = 0.3;
    let truth = GaussianMixture::mixture(&[&up, &down], &[1.0 - beta, beta])?;
    println!("## Linear mixture of gmm2d_up and gmm2d_down, beta = {beta}, N = {n}, {steps} steps, {seeds} seeds\n");
    println!("| method | mass in down's half-plane (truth {beta}) | sliced W1 to exact samples | final ESS / N | wall s / run |");
    println!("|---|---|---|---|---|");
    let floor: Vec<f64> = (0..seeds).map(|s| sliced_w1(&truth.sample(n, &mut rng::seeded(100 + s)), &vec![1.0 / n as f64; n], &truth.sample(n, &mut rng::seeded(200 + s)), 2, 16)).collect();
    for method in [MixtureMethod::State, MixtureMethod::Fr, MixtureMethod::Naive] {
        let (mut fr, mut w1, mut ess, mut wall) = (vec![], vec![], vec![], vec![]);
        for seed in 0..seeds {
            let cfg = SamplerConfig { particles: n, steps, seed, divergence: wfrmix::DivergenceEstimator::exact(), ..Default::default() };
            let r = Sampler::new(&[&up, &down], Composition::mixture(&[1.0 - beta, beta], method)?, cfg)?.run(|_| {})?;
            fr.push(r.weighted_mean(|x| if x[1] < 0.0 { 1.0 } else { 0.0 }));
            w1.push(sliced_w1(&r.samples, &r.weights(), &truth.sample(n, &mut rng::seeded(300 + seed)), 2, 16));
            ess.push(r.final_ess / n as f64);
            wall.push(r.wall_seconds);
        }
        let ((f, fs), (w, ws)) = (mean_sd(&fr), mean_sd(&w1));
        println!("| {method} | {f:.3} ± {fs:.3} | {w:.3} ± {ws:.3} | {:.2} | {:.2} |", mean_sd(&ess).0, mean_sd(&wall).0);
    }
    let (f, fs) = mean_sd(&floor);
    println!("| (two exact sample sets) | | {f:.3} ± {fs:.3} | | |\n");

    // Product of 6-D experts sharing the mode m2.
    let d = 6;
    let (a, b) = experts::shared_mode();
    let (prod, log_z) = a.product(&b)?;
    let (tm, tv) = prod.mean_and_variance();
    println!("## Product of two 6-D experts sharing a mode, N = {n}, {steps} steps, {} seeds (log Z truth {log_z:.3})\n", seeds + 2);
    println!("| integrator, grid | drift γ, Metropolis moves | corrector | max mean error | max variance error | log Z | lineages | wall s / run |");
    println!("|---|---|---|---|---|---|---|---|");
    let plain = (DriftGamma::Fixed(1.0), MoveConfig::NONE);
    let default = (DriftGamma::Adaptive, MoveConfig::DEFAULT);
    for (int, grid, (gamma, moves), corr) in [
        (Integrator::EulerMaruyama, TimeGrid::uniform(), plain, 0),
        (Integrator::Ancestral, TimeGrid::default(), plain, 0),
        (Integrator::Ancestral, TimeGrid::default(), plain, 1),
        (Integrator::Ancestral, TimeGrid::default(), (DriftGamma::Adaptive, MoveConfig::NONE), 0),
        (Integrator::EulerMaruyama, TimeGrid::uniform(), default, 0),
        (Integrator::Ancestral, TimeGrid::default(), default, 0),
    ] {
        let (mut me, mut ve, mut lz, mut lin, mut wall) = (vec![], vec![], vec![], vec![], vec![]);
        for seed in 0..seeds + 2 {
            let cfg = SamplerConfig { particles: n, steps, seed, integrator: int, grid, corrector_steps: corr, drift_gamma: gamma, moves, ..Default::default() };
            let r = Sampler::new(&[&a, &b], Composition::product(2)?, cfg)?.run(|_| {})?;
            let m: Vec<f64> = (0..d).map(|j| r.weighted_mean(|x| x[j])).collect();
            let v: Vec<f64> = (0..d).map(|j| r.weighted_mean(|x| (x[j] - m[j]).powi(2))).collect();
            me.push((0..d).map(|j| (m[j] - tm[j]).abs()).fold(0.0, f64::max));
            ve.push((0..d).map(|j| (v[j] - tv[j]).abs()).fold(0.0, f64::max));
            lz.push(r.log_z);
            lin.push(r.lineages as f64);
            wall.push(r.wall_seconds);
        }
        let ((m, ms), (v, vs), (l, ls)) = (mean_sd(&me), mean_sd(&ve), mean_sd(&lz));
        let name = match int {
            Integrator::EulerMaruyama => "Euler-Maruyama, uniform",
            Integrator::Ancestral => "ancestral, edm:7",
        };
        let g = match gamma {
            DriftGamma::Adaptive => "γ*".to_string(),
            DriftGamma::Fixed(g) => format!("{g}"),
        };
        println!("| {name} | {g}, {} | {corr} | {m:.3} ± {ms:.3} | {v:.3} ± {vs:.3} | {l:.2} ± {ls:.2} | {:.0} | {:.2} |", moves.per_step(), mean_sd(&lin).0, mean_sd(&wall).0);
    }
    Ok(())
}
