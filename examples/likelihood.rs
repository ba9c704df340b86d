//! Where does a product of the conv experts put its mass? Computes log q(x) at t_min of chosen images
//! under weights/fmnist_unet_c and weights/fmnist_unet_d by the probability-flow ODE, with the
//! divergence by Hutchinson VJPs (unbiased), and prints per group of images the mean of log q_c,
//! log q_d and of log q_c + log q_d (the product's unnormalised log-density) relative to real trousers.
//! The groups: an all-black frame (every pixel −1, the data's background value), real test images of the
//! shared classes (Trouser, Bag) and of each expert's own third class (Dress for c, Ankle boot for d).
//!
//! The estimator is first checked against closed-form truth: a 3-component Gaussian mixture in 784
//! dimensions on the same schedule and grid, whose log q_t is exact.
//!
//! cargo run --release --example likelihood -- [STEPS=150] [PROBES=4] [PER_CLASS=8] [SEED=0]
//!
//! The ODE: dx/dt = v = −½β(t)(x + s(x, t)), so d log p_t(x_t)/dt = −∇·v = ½β(t)(d + ∇·s), and
//! log p_{t_min}(x) = log p_{t_max}(x_{t_max}) + ∫ ∇·v dt, with p_{t_max} = N(0, I) for the networks
//! (α² at t_max is 4·10⁻⁵ for DDPM's table) and the exact marginal for the check. Heun steps on the
//! sampler's default grid, run from t_min up.

use std::path::Path;

use wfrmix::io::idx::{load_fashion_mnist, Split, FASHION_CLASSES, FASHION_MNIST_DIR};
use wfrmix::nets::classifier::Classifier;
use wfrmix::rng::{fill_normal, seeded, Rng};
use wfrmix::{load_model, DivergenceEstimator, GaussianMixture, Probe, SamplerConfig, ScoreModel};

/// log q_{t_min}(x) for every row of `x`, and x carried to t_max (returned).
fn ode_log_density(model: &dyn ScoreModel, x0: &[f64], steps: usize, probes: usize, rng: &mut Rng) -> Result<(Vec<f64>, Vec<f64>), Box<dyn std::error::Error>> {
    let sch = model.schedule();
    let d = model.dim();
    let n = x0.len() / d;
    let cfg = SamplerConfig::DEFAULT;
    let mut ts = cfg.grid.times(&sch, steps, sch.t_max(), cfg.t_min);
    ts.reverse();
    let est = DivergenceEstimator::vjp(probes, Probe::Rademacher)?;
    let mut x = x0.to_vec();
    let mut integral = vec![0.0; n];
    let (mut s, mut div) = (vec![0.0; n * d], vec![0.0; n]);
    // v(x, t) into `v`, ∇·v into `dv`
    let mut field = |x: &[f64], t: f64, v: &mut [f64], dv: &mut [f64], rng: &mut Rng| -> Result<(), Box<dyn std::error::Error>> {
        model.score(x, t, &mut s)?;
        est.estimate(model, x, t, rng, &mut div)?;
        let b = sch.beta(t);
        for i in 0..n * d {
            v[i] = -0.5 * b * (x[i] + s[i]);
        }
        for j in 0..n {
            dv[j] = -0.5 * b * (d as f64 + div[j]);
        }
        Ok(())
    };
    let (mut k1, mut k2, mut xt) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d]);
    let (mut d1, mut d2) = (vec![0.0; n], vec![0.0; n]);
    for w in ts.windows(2) {
        let (t0, t1) = (w[0], w[1]);
        let h = t1 - t0;
        field(&x, t0, &mut k1, &mut d1, rng)?;
        for i in 0..n * d {
            xt[i] = x[i] + h * k1[i];
        }
        field(&xt, t1, &mut k2, &mut d2, rng)?;
        for i in 0..n * d {
            x[i] += 0.5 * h * (k1[i] + k2[i]);
        }
        for j in 0..n {
            integral[j] += 0.5 * h * (d1[j] + d2[j]);
        }
    }
    Ok((integral, x))
}

fn std_normal_log_density(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(d).map(|r| -0.5 * r.iter().map(|v| v * v).sum::<f64>() - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()).collect()
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, def: u64| std::env::args().nth(i).map_or(Ok(def), |s| s.parse::<u64>());
    let (steps, probes, per_class, seed) = (arg(1, 150)? as usize, arg(2, 4)? as usize, arg(3, 8)? as usize, arg(4, 0)?);
    let c = load_model(Path::new("weights/fmnist_unet_c"))?;
    let d_model = load_model(Path::new("weights/fmnist_unet_d"))?;
    let d = c.dim();
    let mut rng = seeded(seed);

    // Check against closed-form truth: 3 components in 784 dimensions, stds 0.05-0.3, on c's schedule.
    let (k, n_check) = (3, 12);
    let mut means = vec![0.0; k * d];
    fill_normal(&mut rng, &mut means);
    means.iter_mut().for_each(|m| *m = m.tanh());
    let stds: Vec<f64> = (0..k * d).map(|i| [0.05, 0.1, 0.3][i / d]).collect();
    let gmm = GaussianMixture::new(means.clone(), stds.clone(), vec![0.5, 0.3, 0.2], d, c.schedule())?;
    let mut xg = vec![0.0; n_check * d];
    fill_normal(&mut rng, &mut xg);
    for (j, row) in xg.chunks_mut(d).enumerate() {
        let comp = j % k;
        for (i, v) in row.iter_mut().enumerate() {
            *v = means[comp * d + i] + stds[comp * d + i] * *v;
        }
    }
    let cfg = SamplerConfig::DEFAULT;
    let (integral, xt) = ode_log_density(&gmm, &xg, steps, probes, &mut rng)?;
    let mut end = vec![0.0; n_check];
    gmm.log_density(&xt, c.schedule().t_max(), &mut end)?;
    let mut exact = vec![0.0; n_check];
    gmm.log_density(&xg, cfg.t_min, &mut exact)?;
    let err: Vec<f64> = (0..n_check).map(|j| end[j] + integral[j] - exact[j]).collect();
    let (em, es) = mean_sd(&err);
    let (xm, _) = mean_sd(&exact);
    println!("check, exact 3-component mixture in d = {d}: ODE minus exact log q_t_min over {n_check} points: mean {em:+.2}, sd {es:.2} (exact values ≈ {xm:.0}); {steps} Heun steps, {probes} Rademacher probes");
    println!();

    // The images.
    let test = load_fashion_mnist(Path::new(FASHION_MNIST_DIR), Split::Test, None)?;
    let mut groups: Vec<(String, Vec<f64>)> = vec![("all-black frame (every pixel −1)".into(), vec![-1.0; d])];
    for class in [1u8, 8, 3, 9] {
        let rows: Vec<f64> = (0..test.len()).filter(|&i| test.labels[i] == class).take(per_class).flat_map(|i| test.image(i).iter().map(|&p| p as f64)).collect();
        groups.push((format!("real {} ({per_class} test images)", FASHION_CLASSES[class as usize]), rows));
    }
    let all: Vec<f64> = groups.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    let n = all.len() / d;
    let labels = Classifier::load(Path::new("weights/fmnist_classifier.safetensors"))?.predict(&all)?;
    let mut logq = Vec::new();
    for model in [c.as_ref(), d_model.as_ref()] {
        let (integral, xt) = ode_log_density(model, &all, steps, probes, &mut rng)?;
        let prior = std_normal_log_density(&xt, d);
        logq.push((0..n).map(|j| prior[j] + integral[j]).collect::<Vec<f64>>());
    }
    let sum: Vec<f64> = (0..n).map(|j| logq[0][j] + logq[1][j]).collect();
    // relative to the real trousers' mean
    let ref_rows = 1..1 + per_class;
    let base = |v: &[f64]| mean_sd(&v[ref_rows.clone()]).0;
    let (bc, bd, bs) = (base(&logq[0]), base(&logq[1]), base(&sum));
    println!("log q at t_min in nats relative to the real trousers' mean (mean ± sd over the group, and its largest; the trousers' own means: log q_c {bc:.0}, log q_d {bd:.0}):");
    println!();
    println!("| images | judged as | log q_c | log q_d | log q_c + log q_d (the product) |");
    println!("|---|---|---|---|---|");
    let mut start = 0;
    for (name, rows) in &groups {
        let m = rows.len() / d;
        let r = start..start + m;
        let f = |v: &[f64], b: f64| {
            let (mu, sd) = mean_sd(&v[r.clone()]);
            let max = v[r.clone()].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m > 1 { format!("{:+.0} ± {:.0} (max {:+.0})", mu - b, sd, max - b) } else { format!("{:+.0}", mu - b) }
        };
        let mut judged: Vec<&str> = labels[r.clone()].iter().map(|&l| FASHION_CLASSES[l as usize]).collect();
        judged.sort_unstable();
        judged.dedup();
        println!("| {name} | {} | {} | {} | {} |", judged.join(", "), f(&logq[0], bc), f(&logq[1], bd), f(&sum, bs));
        start += m;
    }
    Ok(())
}
