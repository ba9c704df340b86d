//! Shared truth for the integration tests: the experts, exact references and distances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use wfrmix::io::{write_safetensors, F32Tensor};
use wfrmix::rng::{self, Rng};
use wfrmix::{load_model, GaussianMixture, SampleRun, VpSchedule};

/// maths §4b's case: "up" has two modes at y = +2, "down" three modes at y = −2.
pub fn up_down() -> (GaussianMixture, GaussianMixture) {
    let s = VpSchedule::default();
    let up = GaussianMixture::new(vec![-2.0, 2.0, 2.0, 2.0], vec![0.5; 4], vec![1.0, 1.0], 2, s.clone()).unwrap().with_name("up");
    let down = GaussianMixture::new(vec![-3.0, -2.0, 0.0, -2.0, 3.0, -2.0], vec![0.4; 6], vec![1.0; 3], 2, s).unwrap().with_name("down");
    (up, down)
}

/// A K-component mixture in d dimensions with means N(shift, spread²), stds in [0.5, 0.9] and unequal
/// weights, fixed by `seed`.
pub fn random_gmm(k: usize, d: usize, spread: f64, shift: f64, seed: u64) -> GaussianMixture {
    let mut r = rng::seeded(seed);
    let mut m = vec![0.0; k * d];
    rng::fill_normal(&mut r, &mut m);
    m.iter_mut().for_each(|v| *v = shift + spread * *v);
    let sd: Vec<f64> = (0..k * d).map(|i| 0.5 + 0.1 * (i % 5) as f64).collect();
    let w: Vec<f64> = (0..k).map(|i| 1.0 + 0.5 * i as f64).collect();
    GaussianMixture::new(m, sd, w, d, VpSchedule::default()).unwrap()
}

/// Weighted mean and per-coordinate variance of a run's particles.
pub fn moments(run: &SampleRun) -> (Vec<f64>, Vec<f64>) {
    let d = run.dim();
    let mean: Vec<f64> = (0..d).map(|j| run.weighted_mean(|x| x[j])).collect();
    let var: Vec<f64> = (0..d).map(|j| run.weighted_mean(|x| (x[j] - mean[j]).powi(2))).collect();
    (mean, var)
}

/// Exact mean and per-coordinate variance of a mixture.
pub fn gmm_moments(g: &GaussianMixture) -> (Vec<f64>, Vec<f64>) {
    g.mean_and_variance()
}

pub use wfrmix::report::metrics::sliced_w1;

/// Exact samples of `g`.
pub fn exact(g: &GaussianMixture, n: usize, seed: u64) -> Vec<f64> {
    g.sample(n, &mut rng::seeded(seed))
}

/// Noise floor of [`sliced_w1`] between two independent exact sample sets of size n: (mean, sd) over
/// `reps` replicates.
pub fn w1_noise_floor(g: &GaussianMixture, n: usize, reps: usize) -> (f64, f64) {
    let d = g.means().len() / g.components();
    let w = vec![1.0 / n as f64; n];
    let vals: Vec<f64> = (0..reps).map(|r| sliced_w1(&exact(g, n, 1000 + r as u64), &w, &exact(g, n, 2000 + r as u64), d, 16)).collect();
    let m = vals.iter().sum::<f64>() / reps as f64;
    let sd = (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (reps - 1) as f64).sqrt();
    (m, sd)
}

/// Quadrature of an unnormalised 2-D log-density on [lo, hi]² with n×n midpoints: (log Z, mean, cov).
pub fn quad2(logf: impl Fn(&[f64]) -> f64, lo: f64, hi: f64, n: usize) -> (f64, [f64; 2], [[f64; 2]; 2]) {
    let h = (hi - lo) / n as f64;
    let mut pts = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let p = [lo + (i as f64 + 0.5) * h, lo + (j as f64 + 0.5) * h];
            pts.push((p, logf(&p)));
        }
    }
    let mx = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (mut z, mut m, mut s) = (0.0, [0.0; 2], [[0.0; 2]; 2]);
    for (p, l) in &pts {
        let w = (l - mx).exp();
        z += w;
        for a in 0..2 {
            m[a] += w * p[a];
            for b in 0..2 {
                s[a][b] += w * p[a] * p[b];
            }
        }
    }
    for a in 0..2 {
        m[a] /= z;
    }
    for a in 0..2 {
        for b in 0..2 {
            s[a][b] = s[a][b] / z - m[a] * m[b];
        }
    }
    (mx + (z * h * h).ln(), m, s)
}

/// log q_0(x) of one point under a mixture.
pub fn log_q0(g: &GaussianMixture, x: &[f64]) -> f64 {
    use wfrmix::ScoreModel;
    let mut out = [0.0];
    g.log_density(x, 0.0, &mut out).unwrap();
    out[0]
}

/// A seeded generator.
pub fn rng(seed: u64) -> Rng {
    rng::seeded(seed)
}

/// Mean and standard error over particles of (estimate − exact) (divergence-estimator checks).
pub fn error_stats(est: &[f64], exact: &[f64]) -> (f64, f64) {
    let n = est.len() as f64;
    let diffs: Vec<f64> = est.iter().zip(exact).map(|(a, b)| a - b).collect();
    let m = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// A network's parameters as its `to_f32` gives them: (name, shape, values).
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Write a network file with header `meta` and tensors `ts` after `meta_edit` and `tensor_edit` (to make
/// bad files from a good network's).
pub fn write_edited(
    path: &Path,
    mut meta: HashMap<String, String>,
    mut ts: NamedTensors,
    meta_edit: impl FnOnce(&mut HashMap<String, String>),
    tensor_edit: impl FnOnce(&mut NamedTensors),
) {
    meta_edit(&mut meta);
    tensor_edit(&mut ts);
    let views: Vec<F32Tensor<'_>> = ts.iter().map(|(n, s, v)| F32Tensor { name: n, shape: s.clone(), data: v }).collect();
    write_safetensors(path, &views, &meta).unwrap();
}

/// The message of the error that loading `path` gives (panics if it loads).
pub fn load_err(path: &Path) -> String {
    match load_model(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// Whether a test that needs `what` (present: `present`) may run. Outside CI a missing input skips the
/// test, saying so; under CI (the `CI` variable set, as `.ci/run` and every CI service do) it fails, so
/// that CI cannot be green without running it.
pub fn require(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!("{what} is missing under CI (install dataset-fashion-mnist; the shipped weights are in the repository)");
    }
    eprintln!("skipped: {what} is missing (under CI this fails)");
    false
}

/// [`require`] for Debian's Fashion-MNIST files.
pub fn require_fashion_mnist() -> bool {
    require(Path::new(wfrmix::io::idx::FASHION_MNIST_DIR).join("t10k-labels-idx1-ubyte.gz").exists(), "Fashion-MNIST")
}
