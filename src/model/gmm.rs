//! Exact Gaussian-mixture experts: q_0 = Σ_k π_k N(μ_k, diag(v_k)) diffused by the VP process is
//! q_t = Σ_k π_k N(α_t μ_k, diag(α_t² v_k + σ_t²)), so score, log-density, divergence and Hessian-vector
//! products are closed form at every t (maths §1). These are the ground truth the engine is tested
//! against, and the first kind of file `mix-sample --models` accepts.
//!
//! File format: a `.safetensors` file whose header metadata has `"kind": "gaussian_mixture"` and that
//! holds `means` `[K, D]`, `stds` `[K, D]` (> 0) and `weights` `[K]` (> 0, normalised on load), F32 or F64.
//! Optional metadata: `beta_min`, `beta_max` (the forward schedule; defaults 0.1 and 20), `name`.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{write_safetensors, F32Tensor};
use crate::model::ScoreModel;
use crate::rng::{self, Rng};
use crate::schedule::VpSchedule;
use crate::io::tensors::TensorFile;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A diagonal-covariance Gaussian mixture in R^D with exact diffused quantities.
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    name: String,
    shape: Vec<usize>,
    k: usize,
    d: usize,
    means: Vec<f64>,
    vars: Vec<f64>,
    log_weights: Vec<f64>,
    schedule: VpSchedule,
    precision: Precision,
}

/// The arithmetic of the score kernel, the one every sampling step calls.
///
/// `F64` (the default) is the reference: the closed forms the engine is tested against, bit-reproducible
/// across machines. `F32` evaluates the quadratic forms and the score in f32 (the responsibilities'
/// exponentials and normalisation stay f64) with sums in 16 fixed lanes, so twice the SIMD width and no
/// serial add chain; also bit-reproducible across machines and thread counts, with a relative error of
/// up to ≈ 10⁻⁵ in the score (measured at d = 40: 0.1–7·10⁻⁶ of 1 + |s|). Log-density, divergence and VJP are always f64 (log-densities are
/// differences of numbers of size d, and log Ẑ tests compare them to 10⁻²).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f64 throughout (default).
    #[default]
    F64,
    /// The score in f32.
    F32,
}

/// [`AtTime`]'s means and inverse variances rounded to f32, for [`Precision::F32`].
struct AtTime32 {
    am: Vec<f32>,
    inv_var: Vec<f32>,
    log_norm: Vec<f64>,
}

impl AtTime32 {
    fn new(p: &AtTime) -> Self {
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect();
        AtTime32 { am: f(&p.am), inv_var: f(&p.inv_var), log_norm: p.log_norm.clone() }
    }
}

/// Per-time constants of q_t.
struct AtTime {
    /// α_t μ_k, K × D.
    am: Vec<f64>,
    /// 1 / (α² v_kj + σ²), K × D.
    inv_var: Vec<f64>,
    /// Σ_j 1 / V_kj, K.
    sum_inv_var: Vec<f64>,
    /// log π_k − ½ Σ_j ln(2π V_kj).
    log_norm: Vec<f64>,
}

impl AtTime {
    #[inline(always)]
    fn row<'a>(&self, v: &'a [f64], k: usize, d: usize) -> &'a [f64] {
        &v[k * d..(k + 1) * d]
    }
}

impl GaussianMixture {
    /// A checked mixture: `means` and `stds` are K × D row-major, `weights` has K positive entries.
    pub fn new(means: Vec<f64>, stds: Vec<f64>, weights: Vec<f64>, d: usize, schedule: VpSchedule) -> Result<Self> {
        let here = Path::new("<in memory>");
        let k = weights.len();
        if k == 0 || d == 0 || means.len() != k * d || stds.len() != k * d {
            return Err(Error::TensorShape {
                path: here.into(),
                tensor: "means/stds/weights".into(),
                found: vec![means.len(), stds.len(), k],
                expected: format!("K×D, K×D and K values with K ≥ 1, D = {d} ≥ 1"),
            });
        }
        check_values(here, "means", &means, |v| v.is_finite(), "must be finite")?;
        check_values(here, "stds", &stds, |v| v.is_finite() && v > 0.0, "standard deviations must be finite and > 0")?;
        check_values(here, "weights", &weights, |v| v.is_finite() && v > 0.0, "weights must be finite and > 0")?;
        let total: f64 = weights.iter().sum();
        Ok(GaussianMixture {
            name: "gaussian_mixture".into(),
            shape: vec![d],
            k,
            d,
            means,
            vars: stds.iter().map(|s| s * s).collect(),
            log_weights: weights.iter().map(|w| (w / total).ln()).collect(),
            schedule,
            precision: Precision::F64,
        })
    }

    /// Rename (used in messages).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same mixture with its score kernel in `precision` ([`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The score kernel's precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Load from a file in the format above.
    pub fn load(path: &Path) -> Result<Self> {
        let f = TensorFile::open(path)?;
        match f.metadata("kind") {
            Some("gaussian_mixture") => Self::from_file(&f),
            other => Err(Error::Metadata {
                path: path.into(),
                key: "kind".into(),
                reason: format!("expected \"gaussian_mixture\", found {other:?}"),
            }),
        }
    }

    /// Build from an opened file (metadata `kind` already checked by the caller).
    pub fn from_file(f: &TensorFile) -> Result<Self> {
        let path = f.path();
        let (wshape, weights) = f.tensor_shaped("weights", &[None])?;
        let k = wshape[0];
        let (mshape, means) = f.tensor_shaped("means", &[Some(k), None])?;
        let d = mshape[1];
        let (_, stds) = f.tensor_shaped("stds", &[Some(k), Some(d)])?;
        if k == 0 || d == 0 {
            return Err(Error::TensorShape { path: path.into(), tensor: "means".into(), found: mshape, expected: "[K ≥ 1, D ≥ 1]".into() });
        }
        check_values(path, "stds", &stds, |v| v > 0.0, "standard deviations must be > 0")?;
        check_values(path, "weights", &weights, |v| v > 0.0, "mixture weights must be > 0")?;
        let schedule = VpSchedule::new(f.metadata_f64("beta_min", 0.1)?, f.metadata_f64("beta_max", 20.0)?).map_err(|e| {
            Error::Metadata { path: path.into(), key: "beta_min/beta_max".into(), reason: e.to_string() }
        })?;
        let name = f.metadata("name").map(String::from).unwrap_or_else(|| path.display().to_string());
        Ok(Self::new(means, stds, weights, d, schedule)?.with_name(name))
    }

    /// Write in the file format above (F32 tensors), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let means: Vec<f32> = self.means.iter().map(|&v| v as f32).collect();
        let stds: Vec<f32> = self.vars.iter().map(|&v| v.sqrt() as f32).collect();
        let weights: Vec<f32> = self.weights().iter().map(|&v| v as f32).collect();
        let mut meta = HashMap::new();
        meta.insert("kind".to_string(), "gaussian_mixture".to_string());
        meta.insert("beta_min".to_string(), self.schedule.beta_min().to_string());
        meta.insert("beta_max".to_string(), self.schedule.beta_max().to_string());
        meta.insert("name".to_string(), self.name.clone());
        write_safetensors(
            path,
            &[
                F32Tensor { name: "means", shape: vec![self.k, self.d], data: &means },
                F32Tensor { name: "stds", shape: vec![self.k, self.d], data: &stds },
                F32Tensor { name: "weights", shape: vec![self.k], data: &weights },
            ],
            &meta,
        )
    }

    /// Number of components K.
    pub fn components(&self) -> usize {
        self.k
    }

    /// Component means, K × D.
    pub fn means(&self) -> &[f64] {
        &self.means
    }

    /// Component variances, K × D.
    pub fn variances(&self) -> &[f64] {
        &self.vars
    }

    /// Normalised component weights.
    pub fn weights(&self) -> Vec<f64> {
        self.log_weights.iter().map(|l| l.exp()).collect()
    }

    /// Exact per-coordinate mean and variance of q_0.
    pub fn mean_and_variance(&self) -> (Vec<f64>, Vec<f64>) {
        let (d, w) = (self.d, self.weights());
        let mut mean = vec![0.0; d];
        let mut m2 = vec![0.0; d];
        for k in 0..self.k {
            for j in 0..d {
                let (mu, v) = (self.means[k * d + j], self.vars[k * d + j]);
                mean[j] += w[k] * mu;
                m2[j] += w[k] * (v + mu * mu);
            }
        }
        let var = (0..d).map(|j| m2[j] - mean[j] * mean[j]).collect();
        (mean, var)
    }

    /// `n` exact samples from q_0, row-major n × D.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Vec<f64> {
        let w = self.weights();
        let mut out = vec![0.0; n * self.d];
        let mut z = vec![0.0; self.d];
        for row in out.chunks_mut(self.d) {
            let u = rng::uniform(rng);
            let mut c = 0.0;
            let mut k = self.k - 1;
            for (j, &wj) in w.iter().enumerate() {
                c += wj;
                if u < c {
                    k = j;
                    break;
                }
            }
            rng::fill_normal(rng, &mut z);
            for j in 0..self.d {
                row[j] = self.means[k * self.d + j] + self.vars[k * self.d + j].sqrt() * z[j];
            }
        }
        out
    }

    /// The diffused marginal q_t as a mixture in its own right.
    pub fn diffused(&self, t: f64) -> GaussianMixture {
        let (a, s2) = (self.schedule.alpha(t), self.schedule.sigma2(t));
        let mut g = self.clone();
        g.means.iter_mut().for_each(|m| *m *= a);
        g.vars.iter_mut().for_each(|v| *v = a * a * *v + s2);
        g
    }

    /// The normalised product q·p (a mixture of K_q·K_p Gaussians) and log ∫ q p.
    pub fn product(&self, other: &GaussianMixture) -> Result<(GaussianMixture, f64)> {
        if self.d != other.d {
            return Err(Error::Incompatible { a: self.name.clone(), b: other.name.clone(), reason: format!("dimensions {} and {}", self.d, other.d) });
        }
        let d = self.d;
        let (mut means, mut stds, mut logw) = (Vec::new(), Vec::new(), Vec::new());
        for a in 0..self.k {
            for b in 0..other.k {
                let mut lw = self.log_weights[a] + other.log_weights[b];
                for j in 0..d {
                    let (m1, v1) = (self.means[a * d + j], self.vars[a * d + j]);
                    let (m2, v2) = (other.means[b * d + j], other.vars[b * d + j]);
                    let s = v1 + v2;
                    lw += -0.5 * ((m1 - m2).powi(2) / s + s.ln() + LN_2PI);
                    means.push((m1 * v2 + m2 * v1) / s);
                    stds.push((v1 * v2 / s).sqrt());
                }
                logw.push(lw);
            }
        }
        let log_z = crate::particles::log_sum_exp(&logw);
        let weights = logw.iter().map(|l| (l - log_z).exp()).collect();
        Ok((GaussianMixture::new(means, stds, weights, d, self.schedule.clone())?.with_name(format!("{}*{}", self.name, other.name)), log_z))
    }

    /// The mixture Σ_i c_i q_i of several mixtures (c normalised).
    pub fn mixture(parts: &[&GaussianMixture], coefficients: &[f64]) -> Result<GaussianMixture> {
        let d = parts.first().map(|p| p.d).ok_or_else(|| Error::param("mixture parts", 0, "need at least one"))?;
        let (mut means, mut stds, mut w) = (Vec::new(), Vec::new(), Vec::new());
        for (p, &c) in parts.iter().zip(coefficients) {
            if p.d != d {
                return Err(Error::Incompatible { a: parts[0].name.clone(), b: p.name.clone(), reason: "dimensions differ".into() });
            }
            means.extend_from_slice(&p.means);
            stds.extend(p.vars.iter().map(|v| v.sqrt()));
            w.extend(p.weights().iter().map(|x| x * c));
        }
        GaussianMixture::new(means, stds, w, d, parts[0].schedule.clone())
    }

    fn at_time(&self, t: f64) -> AtTime {
        let (alpha, s2) = (self.schedule.alpha(t), self.schedule.sigma2(t));
        let am = self.means.iter().map(|m| alpha * m).collect();
        let inv_var: Vec<f64> = self.vars.iter().map(|v| 1.0 / (alpha * alpha * v + s2)).collect();
        let mut log_norm = Vec::with_capacity(self.k);
        let mut sum_inv_var = Vec::with_capacity(self.k);
        for k in 0..self.k {
            let mut ln = self.log_weights[k];
            for j in 0..self.d {
                ln -= 0.5 * (LN_2PI + (alpha * alpha * self.vars[k * self.d + j] + s2).ln());
            }
            log_norm.push(ln);
            sum_inv_var.push(crate::lanes::sum(&inv_var[k * self.d..(k + 1) * self.d]));
        }
        AtTime { am, inv_var, sum_inv_var, log_norm }
    }

    /// One particle's responsibilities r_k into `resp`; returns log q_t(x).
    #[inline(always)]
    fn responsibilities(&self, p: &AtTime, x: &[f64], resp: &mut [f64]) -> f64 {
        let d = self.d;
        for (k, r) in resp.iter_mut().enumerate() {
            *r = p.log_norm[k] - 0.5 * crate::lanes::weighted_dist2(x, p.row(&p.am, k, d), p.row(&p.inv_var, k, d));
        }
        normalise(resp)
    }

    /// The rows of the f32 score kernel ([`Precision::F32`]): x rounded to f32, the quadratic forms and
    /// s = Σ_k r_k (α μ_k − x) / V_k in f32, the responsibilities from them in f64.
    #[inline(always)]
    fn score_rows_f32(&self, p: &AtTime32, x: &[f64], out: &mut [f64]) {
        let d = self.d;
        let (mut xr, mut o, mut resp) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f64; self.k]);
        for (row, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            xr.iter_mut().zip(row).for_each(|(a, &b)| *a = b as f32);
            for (k, r) in resp.iter_mut().enumerate() {
                let (am, iv) = (&p.am[k * d..(k + 1) * d], &p.inv_var[k * d..(k + 1) * d]);
                *r = p.log_norm[k] - 0.5 * f64::from(crate::lanes::weighted_dist2_f32(&xr, am, iv));
            }
            normalise(&mut resp);
            o.fill(0.0);
            for (k, &r) in resp.iter().enumerate() {
                let (am, iv, r) = (&p.am[k * d..(k + 1) * d], &p.inv_var[k * d..(k + 1) * d], r as f32);
                for j in 0..d {
                    o[j] += r * ((am[j] - xr[j]) * iv[j]);
                }
            }
            dst.iter_mut().zip(&o).for_each(|(a, &b)| *a = f64::from(b));
        }
    }

    /// Component k's score s_k = (α μ_k − x) / V_k into `comp`.
    #[inline(always)]
    fn component_score(&self, p: &AtTime, x: &[f64], k: usize, comp: &mut [f64]) {
        let (am, iv) = (p.row(&p.am, k, self.d), p.row(&p.inv_var, k, self.d));
        for j in 0..self.d {
            comp[j] = (am[j] - x[j]) * iv[j];
        }
    }

    /// Evaluate `kernel` at the batch `x` and time t (`v`: the VJP's vectors), with AVX2 where the CPU
    /// has it. The arithmetic and its order are the same either way (no fused multiply-add), so are the
    /// results.
    fn eval(&self, kernel: Kernel, x: &[f64], t: f64, v: &[f64], out: &mut [f64]) {
        let p = self.at_time(t);
        if matches!(kernel, Kernel::Score) && self.precision == Precision::F32 {
            let p = AtTime32::new(&p);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { score_f32_avx2(self, &p, x, out) };
            }
            return self.score_rows_f32(&p, x, out);
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { eval_avx2(self, kernel, &p, x, v, out) };
        }
        self.eval_rows(kernel, &p, x, v, out)
    }

    /// The rows of [`GaussianMixture::eval`]. Everything it calls is inlined (no closures), so that all of
    /// it is compiled for the instruction set of the caller ([`eval_avx2`] or the baseline).
    #[inline(always)]
    fn eval_rows(&self, kernel: Kernel, p: &AtTime, x: &[f64], v: &[f64], out: &mut [f64]) {
        let d = self.d;
        let (mut resp, mut comp, mut s) = (vec![0.0; self.k], vec![0.0; d], vec![0.0; d]);
        for (b, row) in x.chunks_exact(d).enumerate() {
            let lse = self.responsibilities(p, row, &mut resp);
            match kernel {
                Kernel::Score => self.score_row(p, &resp, row, &mut out[b * d..(b + 1) * d]),
                Kernel::LogDensity => out[b] = lse,
                Kernel::Divergence => out[b] = self.divergence_row(p, &resp, row, &mut comp, &mut s),
                Kernel::Vjp => self.vjp_row(p, &resp, row, &v[b * d..(b + 1) * d], &mut comp, &mut s, &mut out[b * d..(b + 1) * d]),
            }
        }
    }

    /// s = Σ_k r_k (α μ_k − x) / V_k, accumulated over k in order.
    #[inline(always)]
    fn score_row(&self, p: &AtTime, resp: &[f64], x: &[f64], o: &mut [f64]) {
        let d = self.d;
        o.fill(0.0);
        for (k, &r) in resp.iter().enumerate() {
            let (am, iv) = (p.row(&p.am, k, d), p.row(&p.inv_var, k, d));
            for j in 0..d {
                o[j] += r * ((am[j] - x[j]) * iv[j]);
            }
        }
    }

    /// ∇·s = Σ_k r_k (|s_k|² − Σ_j 1/V_kj) − |s|².
    #[inline(always)]
    fn divergence_row(&self, p: &AtTime, resp: &[f64], x: &[f64], comp: &mut [f64], s: &mut [f64]) -> f64 {
        s.fill(0.0);
        let mut acc = 0.0;
        for (k, &r) in resp.iter().enumerate() {
            self.component_score(p, x, k, comp);
            acc += r * (crate::lanes::norm2(comp) - p.sum_inv_var[k]);
            s.iter_mut().zip(comp.iter()).for_each(|(sj, cj)| *sj += r * cj);
        }
        acc - crate::lanes::norm2(s)
    }

    /// The Jacobian is the (symmetric) Hessian: H v = Σ_k r_k (−v/V_k + s_k (s_k·v)) − s (s·v).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn vjp_row(&self, p: &AtTime, resp: &[f64], x: &[f64], v: &[f64], comp: &mut [f64], s: &mut [f64], o: &mut [f64]) {
        let d = self.d;
        o.fill(0.0);
        s.fill(0.0);
        for (k, &r) in resp.iter().enumerate() {
            self.component_score(p, x, k, comp);
            let skv = crate::lanes::dot(comp, v);
            let iv = p.row(&p.inv_var, k, d);
            for j in 0..d {
                o[j] += r * (comp[j] * skv - v[j] * iv[j]);
                s[j] += r * comp[j];
            }
        }
        let sv = crate::lanes::dot(s, v);
        o.iter_mut().zip(s.iter()).for_each(|(oj, sj)| *oj -= sj * sv);
    }

    fn check_batch(&self, x: &[f64], out: usize, per_row: usize) -> Result<()> {
        if !x.len().is_multiple_of(self.d) || out != x.len() / self.d * per_row {
            return Err(Error::param(
                format!("batch for `{}`", self.name),
                format!("{} inputs / {} outputs", x.len(), out),
                format!("expected n × {} inputs and n × {per_row} outputs", self.d),
            ));
        }
        Ok(())
    }
}

fn check_values(path: &Path, tensor: &str, v: &[f64], ok: impl Fn(f64) -> bool, reason: &str) -> Result<()> {
    match v.iter().enumerate().find(|(_, &x)| !ok(x)) {
        Some((index, &value)) => Err(Error::BadValue { path: path.into(), tensor: tensor.into(), index, value, reason: reason.into() }),
        None => Ok(()),
    }
}

impl ScoreModel for GaussianMixture {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_shape(&self) -> &[usize] {
        &self.shape
    }

    fn schedule(&self) -> VpSchedule {
        self.schedule.clone()
    }

    fn score(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.check_batch(x, out.len(), self.d)?;
        self.eval(Kernel::Score, x, t, &[], out);
        Ok(())
    }

    fn has_log_density(&self) -> bool {
        true
    }

    fn log_density(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.check_batch(x, out.len(), 1)?;
        self.eval(Kernel::LogDensity, x, t, &[], out);
        Ok(())
    }

    fn has_divergence(&self) -> bool {
        true
    }

    fn divergence(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.check_batch(x, out.len(), 1)?;
        self.eval(Kernel::Divergence, x, t, &[], out);
        Ok(())
    }

    fn has_vjp(&self) -> bool {
        true
    }

    fn vjp(&self, x: &[f64], t: f64, v: &[f64], out: &mut [f64]) -> Result<()> {
        self.check_batch(x, out.len(), self.d)?;
        self.check_batch(v, out.len(), self.d)?;
        self.eval(Kernel::Vjp, x, t, v, out);
        Ok(())
    }
}

/// Log-responsibilities a_k in `resp` become r_k = softmax(a)_k; returns log Σ_k e^{a_k}.
#[inline(always)]
fn normalise(resp: &mut [f64]) -> f64 {
    // r_k = e_k / Σ e, e_k = exp(a_k − max a): one exponential per component.
    let m = resp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        let lse = crate::particles::log_sum_exp(resp);
        resp.iter_mut().for_each(|r| *r = crate::lanes::exp(*r - lse));
        return lse;
    }
    let mut total = 0.0;
    for r in resp.iter_mut() {
        *r = crate::lanes::exp(*r - m);
        total += *r;
    }
    resp.iter_mut().for_each(|r| *r /= total);
    m + crate::lanes::ln(total)
}

/// What [`GaussianMixture::eval`] computes per particle.
#[derive(Clone, Copy)]
enum Kernel {
    Score,
    LogDensity,
    Divergence,
    Vjp,
}

/// [`GaussianMixture::eval_rows`] compiled for AVX2 (4 f64 lanes: the lane sums of [`crate::lanes`] fill
/// one register, and the element-wise loops run 4 wide).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn eval_avx2(g: &GaussianMixture, kernel: Kernel, p: &AtTime, x: &[f64], v: &[f64], out: &mut [f64]) {
    g.eval_rows(kernel, p, x, v, out)
}

/// [`GaussianMixture::score_rows_f32`] compiled for AVX2 (8 f32 lanes).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn score_f32_avx2(g: &GaussianMixture, p: &AtTime32, x: &[f64], out: &mut [f64]) {
    g.score_rows_f32(p, x, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build of the kernels gives the same bits as the baseline build (same operations in the
    /// same order; Rust never fuses a multiply and an add), for every kernel, at d = 13 (lane tails).
    #[test]
    fn simd_and_baseline_kernels_agree_bitwise() {
        let (k, d, n) = (3, 13, 50);
        let mut r = rng::seeded(3);
        let mut means = vec![0.0; k * d];
        rng::fill_normal(&mut r, &mut means);
        let stds = (0..k * d).map(|i| 0.3 + 0.1 * (i % 5) as f64).collect();
        let g = GaussianMixture::new(means, stds, vec![1.0, 2.0, 3.0], d, VpSchedule::default()).unwrap();
        let (mut x, mut v) = (vec![0.0; n * d], vec![0.0; n * d]);
        rng::fill_normal(&mut r, &mut x);
        rng::fill_normal(&mut r, &mut v);
        let p = g.at_time(0.3);
        for (kernel, width) in [(Kernel::Score, d), (Kernel::LogDensity, 1), (Kernel::Divergence, 1), (Kernel::Vjp, d)] {
            let (mut a, mut b) = (vec![0.0; n * width], vec![0.0; n * width]);
            g.eval(kernel, &x, 0.3, &v, &mut a);
            g.eval_rows(kernel, &p, &x, &v, &mut b);
            assert!(a.iter().zip(&b).all(|(u, w)| u.to_bits() == w.to_bits()));
        }
    }

    /// The f32 score kernel: the AVX2 and baseline builds give the same bits, and the score is the f64
    /// one to f32 accuracy. Bound: the inputs are rounded to f32 (relative 6·10⁻⁸), each quadratic form
    /// over d = 40 terms of size ≲ 10 carries an error ≲ 40·10·6·10⁻⁸ = 2.4·10⁻⁵ into the
    /// log-responsibilities, hence into r_k relatively, and |s_k| ≲ 20: ≲ 10⁻³ absolute; asserted below
    /// 2·10⁻³ of (1 + |s|) per coordinate. d = 40 also exercises the 16-lane tail.
    #[test]
    fn f32_score_kernel_is_reproducible_and_close_to_f64() {
        let (k, d, n) = (4, 40, 64);
        let mut r = rng::seeded(5);
        let mut means = vec![0.0; k * d];
        rng::fill_normal(&mut r, &mut means);
        let stds = (0..k * d).map(|i| 0.3 + 0.1 * (i % 5) as f64).collect();
        let g64 = GaussianMixture::new(means, stds, vec![1.0, 2.0, 3.0, 4.0], d, VpSchedule::default()).unwrap();
        let g32 = g64.clone().with_precision(Precision::F32);
        let mut x = vec![0.0; n * d];
        rng::fill_normal(&mut r, &mut x);
        for t in [0.05, 0.3, 0.9] {
            let (mut a, mut b, mut c) = (vec![0.0; n * d], vec![0.0; n * d], vec![0.0; n * d]);
            g64.score(&x, t, &mut a).unwrap();
            g32.score(&x, t, &mut b).unwrap();
            g32.score_rows_f32(&AtTime32::new(&g32.at_time(t)), &x, &mut c);
            assert!(b.iter().zip(&c).all(|(u, w)| u.to_bits() == w.to_bits()), "AVX2 and baseline f32 kernels differ");
            let worst = a.iter().zip(&b).map(|(u, w)| (u - w).abs() / (1.0 + u.abs())).fold(0.0, f64::max);
            eprintln!("t = {t}: f32 score within {worst:.1e} of f64 (relative to 1 + |s|)");
            assert!(worst < 2e-3, "t = {t}: f32 score off by {worst} relative");
        }
    }
}
