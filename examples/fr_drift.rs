//! Can the Fisher–Rao-corrected mixture (`--method fr`) be kept from collapsing on separated experts?
//! (issue 13's question; maths §4b.) The drift's coefficients go from fixed π (λ = 0, score averaging
//! plus weights: the seed's mechanism) to the exact mixture score (λ = 1, what `state` uses) through
//! c ∝ π·q^λ; the weights correct every λ to the same target, so any gap to the truth is the
//! estimator's variance, not a bias of the method.
//!
//! Two cases: the shipped 2-D experts gmm2d_up / gmm2d_down (separated: two modes at y = +2, three near
//! y = −2) at β = 0.3, and the 3-component experts of `high_dim_products` in d = 8 and 64 (overlapping
//! along one coordinate, a variance mismatch in every coordinate), β = 0.3, where the truth is the
//! first coordinate's distribution in exact mixture samples (TV over 20 bins).
//!
//! cargo run --release --example fr_drift -- [SEEDS=4] [N=4000] [STEPS=500] > table.md

#[path = "shared/experts.rs"]
mod experts;

use wfrmix::{rng, Composition, DivergenceEstimator, GaussianMixture, MixtureMethod, Probe, SampleRun, Sampler, SamplerConfig};

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt())
}

/// What a row measures on a run: a number and how it is printed.
type Measure<'a> = &'a dyn Fn(&SampleRun) -> f64;

/// Rows for one pair of experts: `measure` of each run (its truth printed beside it).
#[allow(clippy::too_many_arguments)]
fn rows(label: &str, a: &GaussianMixture, b: &GaussianMixture, beta: f64, truth: &str, measure: Measure, seeds: u64, n: usize, steps: usize, exact_div: bool) -> Result<(), Box<dyn std::error::Error>> {
    let run = |comp: Composition, seed: u64| -> Result<SampleRun, Box<dyn std::error::Error>> {
        let divergence = if exact_div { DivergenceEstimator::exact() } else { DivergenceEstimator::vjp(1, Probe::Rademacher)? };
        let cfg = SamplerConfig { particles: n, steps, seed, divergence, ..Default::default() };
        Ok(Sampler::new(&[a, b], comp, cfg)?.run(|_| {})?)
    };
    let pi = [1.0 - beta, beta];
    let mut cases: Vec<(String, Composition)> = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0].iter().map(|&l| Ok((format!("fr, λ = {l}"), Composition::mixture_fr_tempered(&pi, l)?))).collect::<Result<_, wfrmix::Error>>()?;
    cases.push(("state".into(), Composition::mixture(&pi, MixtureMethod::State)?));
    for (name, comp) in cases {
        let (mut f, mut ess, mut lin, mut res, mut wall) = (vec![], vec![], vec![], vec![], vec![]);
        for seed in 0..seeds {
            let r = run(comp.clone(), seed)?;
            f.push(measure(&r));
            ess.push(r.steps.iter().map(|s| s.ess).fold(f64::INFINITY, f64::min) / n as f64);
            lin.push(r.lineages as f64);
            res.push(r.steps.iter().filter(|s| s.resampled).count() as f64);
            wall.push(r.wall_seconds);
        }
        let (fm, fs) = mean_sd(&f);
        println!(
            "| {label} | {name} | {fm:.3} ± {fs:.3} ({truth}) | {:.3} | {:.0} | {:.0} | {:.2} |",
            mean_sd(&ess).0,
            mean_sd(&lin).0,
            mean_sd(&res).0,
            mean_sd(&wall).0
        );
    }
    Ok(())
}

/// Weighted histogram of the first coordinate: bins of width 0.5 on [−4, 5], plus the two tails.
fn hist0(xs: &[f64], w: &[f64], d: usize) -> Vec<f64> {
    let mut h = vec![0.0; 20];
    for (x, &wi) in xs.chunks(d).zip(w) {
        let b = ((x[0] + 4.0) / 0.5).floor().clamp(-1.0, 18.0) + 1.0;
        h[b as usize] += wi;
    }
    h
}

fn tv(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, def: u64| std::env::args().nth(i).map_or(Ok(def), |s| s.parse::<u64>());
    let (seeds, n, steps) = (arg(1, 4)?, arg(2, 4000)? as usize, arg(3, 500)? as usize);
    let beta = 0.3;
    println!("Mixture 0.7·A + 0.3·B; N = {n}, {steps} steps, {seeds} seeds (mean ± sd over seeds); default resampling (ESS < N/2).\n");
    println!("| experts: measure | drift | value (truth) | smallest ESS / N over the run | lineages | resamplings | wall s / run |");
    println!("|---|---|---|---|---|---|---|");
    let up = GaussianMixture::load("weights/gmm2d_up.safetensors".as_ref())?;
    let down = GaussianMixture::load("weights/gmm2d_down.safetensors".as_ref())?;
    let share = |r: &SampleRun| r.weighted_mean(|x| if x[1] < 0.0 { 1.0 } else { 0.0 });
    rows("2-D separated: B's share (y < 0)", &up, &down, beta, &format!("truth {beta}"), &share, seeds, n, steps, true)?;
    for d in [8usize, 64] {
        let (a, b) = experts::high_dim(d);
        // The experts differ along the first coordinate: the TV distance of its weighted histogram to
        // that of exact mixture samples (and, for scale, the TV between two exact sets of N).
        let truth = GaussianMixture::mixture(&[&a, &b], &[1.0 - beta, beta])?;
        let exact = hist0(&truth.sample(200_000, &mut rng::seeded(99)), &vec![1.0 / 200_000.0; 200_000], d);
        let floor: Vec<f64> = (0..seeds).map(|s| tv(&hist0(&truth.sample(n, &mut rng::seeded(500 + s)), &vec![1.0 / n as f64; n], d), &exact)).collect();
        let measure = |r: &SampleRun| tv(&hist0(&r.samples, &r.weights(), d), &exact);
        rows(&format!("d = {d}: TV of x₀'s histogram"), &a, &b, beta, &format!("exact samples {:.3}", mean_sd(&floor).0), &measure, seeds, n, steps, false)?;
    }
    Ok(())
}
