//! How score errors of controlled kind and size propagate into each composition, against plain diffusion
//! sampling of one expert with the same error (issue 13's second study). The errors are in ε units, as a
//! network's (`wfrmix::model::perturbed`): a constant bias along x₁, a smooth non-gradient "wiggle"
//! field sin(3 x_j + j), and a missing mode (an expert without one of its components).
//!
//! - one expert: gmm2d_down alone (plain reverse diffusion, no weights): sliced W1 to its exact samples;
//! - mixture: 0.7·gmm2d_up + 0.3·gmm2d_down by `state`: the mass in down's half-plane (truth 0.3) and
//!   sliced W1 to exact samples of the mixture;
//! - product: the 6-D experts that share a mode (tests/compositions.rs): max |error| of the 12 moments.
//!
//! cargo run --release --example score_errors

use wfrmix::model::perturbed::{Perturbed, ScoreError};
use wfrmix::report::metrics::sliced_w1;
use wfrmix::{rng, Composition, GaussianMixture, MixtureMethod, Sampler, SamplerConfig, ScoreModel};

#[path = "shared/experts.rs"]
mod experts;


/// `g` with its component `drop` removed (the remaining weights renormalised).
fn without(g: &GaussianMixture, drop: usize) -> GaussianMixture {
    let d = g.means().len() / g.components();
    let keep: Vec<usize> = (0..g.components()).filter(|&k| k != drop).collect();
    let pick = |v: &[f64]| keep.iter().flat_map(|&k| v[k * d..(k + 1) * d].to_vec()).collect::<Vec<_>>();
    let sd: Vec<f64> = pick(g.variances()).iter().map(|v| v.sqrt()).collect();
    let w: Vec<f64> = keep.iter().map(|&k| g.weights()[k]).collect();
    GaussianMixture::new(pick(g.means()), sd, w, d, g.schedule()).unwrap()
}

fn perturb(g: &GaussianMixture, err: Option<(ScoreError, f64)>) -> Box<dyn ScoreModel> {
    match err {
        None => Box::new(g.clone()),
        Some((kind, delta)) => Box::new(Perturbed::new(g.clone(), kind, delta)),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, steps) = (4000, 500);
    let up = GaussianMixture::load("weights/gmm2d_up.safetensors".as_ref())?;
    let down = GaussianMixture::load("weights/gmm2d_down.safetensors".as_ref())?;
    let truth_mix = GaussianMixture::mixture(&[&up, &down], &[0.7, 0.3])?;
    let (pa, pb) = experts::shared_mode();
    let (prod, _) = pa.product(&pb)?;
    let (tm, tv) = prod.mean_and_variance();
    let w = vec![1.0 / n as f64; n];
    let exact_down = down.sample(n, &mut rng::seeded(11));
    let exact_mix = truth_mix.sample(n, &mut rng::seeded(12));
    let floor = sliced_w1(&down.sample(n, &mut rng::seeded(13)), &w, &exact_down, 2, 16);
    let cfg = SamplerConfig { particles: n, steps, seed: 1, ..SamplerConfig::DEFAULT };
    println!("N = {n}, {steps} steps, seed 1; sliced W1 between two exact sample sets of this size: {floor:.3}\n");
    println!("| score error (ε units) | one expert: W1 | mixture: mass (0.3) | mixture: W1 | product: max moment error |");
    println!("|---|---|---|---|---|");
    let mut cases: Vec<(String, Option<(ScoreError, f64)>, bool)> = vec![("none".into(), None, false)];
    for kind in [ScoreError::Bias, ScoreError::Wiggle] {
        for delta in [0.02, 0.05, 0.1, 0.2] {
            cases.push((format!("{kind:?} {delta}"), Some((kind, delta)), false));
        }
    }
    cases.push(("down misses its middle mode".into(), None, true));
    for (label, err, missing) in cases {
        let down_m = if missing { without(&down, 1) } else { down.clone() };
        let one = [perturb(&down_m, err)];
        let r1 = Sampler::new(&one, Composition::anneal(1.0)?, cfg.clone())?.run(|_| {})?;
        let w1_one = sliced_w1(&r1.samples, &r1.weights(), &exact_down, 2, 16);
        let mix = [perturb(&up, err), perturb(&down_m, err)];
        let rm = Sampler::new(&mix, Composition::mixture(&[0.7, 0.3], MixtureMethod::State)?, cfg.clone())?.run(|_| {})?;
        let frac = rm.weighted_mean(|x| if x[1] < 0.0 { 1.0 } else { 0.0 });
        let w1_mix = sliced_w1(&rm.samples, &rm.weights(), &exact_mix, 2, 16);
        let prod_err = if missing {
            "—".to_string()
        } else {
            let pm = [perturb(&pa, err), perturb(&pb, err)];
            let rp = Sampler::new(&pm, Composition::product(2)?, cfg.clone())?.run(|_| {})?;
            let d = 6;
            let m: Vec<f64> = (0..d).map(|j| rp.weighted_mean(|x| x[j])).collect();
            let v: Vec<f64> = (0..d).map(|j| rp.weighted_mean(|x| (x[j] - m[j]).powi(2))).collect();
            let e = (0..d).map(|j| (m[j] - tm[j]).abs().max((v[j] - tv[j]).abs())).fold(0.0, f64::max);
            format!("{e:.3}")
        };
        println!("| {label} | {w1_one:.3} | {frac:.3} | {w1_mix:.3} | {prod_err} |");
    }
    Ok(())
}
