//! Unnormalized target energies π ∝ exp(−U) for the WFR samplers (maths §7, §9.6):
//! the [`Energy`] trait (U and ∇U, batched over particles, row-major `[n, d]`), the built-in targets
//! (tilted double well in 1-D/2-D with temperature, many-well, Gaussian, Gaussian mixture read from an
//! expert file) and the 1-D quadrature that gives their exact normalising constants and well masses.

#![allow(clippy::needless_range_loop)] // index loops over row-major [n, d] buffers read clearer here

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::{self, Rng};

/// A target energy U on R^d; the target density is π(x) ∝ exp(−U(x)).
///
/// Implement [`Energy::value_grad`] (one point); the batched methods evaluate it over `n` particles
/// stored row-major (`x[i*d..(i+1)*d]`), in parallel, with results that do not depend on the thread
/// count.
pub trait Energy: Send + Sync {
    /// Dimension d.
    fn dim(&self) -> usize;

    /// A short human-readable description (used in reports).
    fn describe(&self) -> String;

    /// U(x) at one point; writes ∇U(x) into `grad` (length d).
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64;

    /// U(x) at one point.
    fn value(&self, x: &[f64]) -> f64 {
        let mut g = vec![0.0; self.dim()];
        self.value_grad(x, &mut g)
    }

    /// `log ∫ exp(−U)`, when known exactly (closed form or quadrature).
    fn log_z(&self) -> Option<f64> {
        None
    }

    /// U at `n = x.len()/d` points into `u`.
    fn energy_batch(&self, x: &[f64], u: &mut [f64]) -> Result<()> {
        let d = self.dim();
        check_batch(x.len(), d, u.len(), None)?;
        x.par_chunks(d).zip(u.par_iter_mut()).for_each(|(xi, ui)| *ui = self.value(xi));
        Ok(())
    }

    /// U and ∇U at `n = x.len()/d` points (`grad` is `[n, d]`).
    fn energy_grad_batch(&self, x: &[f64], u: &mut [f64], grad: &mut [f64]) -> Result<()> {
        let d = self.dim();
        check_batch(x.len(), d, u.len(), Some(grad.len()))?;
        x.par_chunks(d)
            .zip(grad.par_chunks_mut(d))
            .zip(u.par_iter_mut())
            .for_each(|((xi, gi), ui)| *ui = self.value_grad(xi, gi));
        Ok(())
    }
}

fn check_batch(xlen: usize, d: usize, ulen: usize, glen: Option<usize>) -> Result<()> {
    if d == 0 || !xlen.is_multiple_of(d) || xlen / d != ulen || glen.is_some_and(|g| g != xlen) {
        return Err(Error::param(
            "particle buffer",
            format!("x: {xlen} values, U: {ulen}, grad: {glen:?}"),
            format!("expected x = [n, {d}] row-major, U = [n], grad = [n, {d}]"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Quadrature
// ---------------------------------------------------------------------------------------------------

/// `log ∫_lo^hi exp(logf(x)) dx` by composite Simpson on `intervals` (made even) equal intervals,
/// computed with the maximum of `logf` factored out so it neither overflows nor underflows.
pub fn log_integrate(logf: impl Fn(f64) -> f64, lo: f64, hi: f64, intervals: usize) -> f64 {
    let n = intervals.max(2).div_ceil(2) * 2;
    let h = (hi - lo) / n as f64;
    let vals: Vec<f64> = (0..=n).map(|k| logf(lo + k as f64 * h)).collect();
    let m = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    let mut s = 0.0;
    for (k, v) in vals.iter().enumerate() {
        let c = if k == 0 || k == n { 1.0 } else if k % 2 == 1 { 4.0 } else { 2.0 };
        s += c * (v - m).exp();
    }
    m + (s * h / 3.0).ln()
}

/// A tabulated 1-D density on a fine grid: normalising constant, interval masses and inverse-CDF
/// sampling. Used for the exact answers of the double-well and many-well targets.
#[derive(Clone, Debug)]
pub struct Density1d {
    lo: f64,
    step: f64,
    /// Cumulative mass at each grid node (trapezoid on the normalised density), `cdf[0] = 0`, last = 1.
    cdf: Vec<f64>,
    log_z: f64,
}

impl Density1d {
    /// Tabulate `exp(logf)` on `[lo, hi]` with `intervals` intervals (log Z by Simpson).
    pub fn new(logf: impl Fn(f64) -> f64 + Sync, lo: f64, hi: f64, intervals: usize) -> Self {
        let log_z = log_integrate(&logf, lo, hi, intervals);
        let n = intervals.max(2);
        let step = (hi - lo) / n as f64;
        let p: Vec<f64> = (0..=n).map(|k| (logf(lo + k as f64 * step) - log_z).exp()).collect();
        let mut cdf = Vec::with_capacity(n + 1);
        let mut c = 0.0;
        cdf.push(0.0);
        for k in 1..=n {
            c += 0.5 * (p[k - 1] + p[k]) * step;
            cdf.push(c);
        }
        let total = c;
        cdf.iter_mut().for_each(|v| *v /= total);
        Density1d { lo, step, cdf, log_z }
    }

    /// `log ∫ exp(logf)` over the tabulated range.
    pub fn log_z(&self) -> f64 {
        self.log_z
    }

    /// Cumulative mass at `x` (linear interpolation of the table; 0 left of it, 1 right of it).
    pub fn cdf(&self, x: f64) -> f64 {
        let t = (x - self.lo) / self.step;
        if t <= 0.0 {
            return 0.0;
        }
        let k = t.floor() as usize;
        if k + 1 >= self.cdf.len() {
            return 1.0;
        }
        let f = t - k as f64;
        self.cdf[k] * (1.0 - f) + self.cdf[k + 1] * f
    }

    /// Mass of `[a, b]`.
    pub fn mass(&self, a: f64, b: f64) -> f64 {
        self.cdf(b) - self.cdf(a)
    }

    /// Masses of the bins between consecutive `edges`.
    pub fn bin_masses(&self, edges: &[f64]) -> Vec<f64> {
        edges.windows(2).map(|e| self.mass(e[0], e[1])).collect()
    }

    /// The point with cumulative mass `u` (inverse CDF, linear within a grid cell).
    pub fn quantile(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0);
        let k = self.cdf.partition_point(|&c| c < u).clamp(1, self.cdf.len() - 1);
        let (c0, c1) = (self.cdf[k - 1], self.cdf[k]);
        let f = if c1 > c0 { (u - c0) / (c1 - c0) } else { 0.5 };
        self.lo + (k as f64 - 1.0 + f) * self.step
    }
}

// ---------------------------------------------------------------------------------------------------
// Tilted double well
// ---------------------------------------------------------------------------------------------------

/// Tilted double well in 1-D or 2-D at temperature ε:
///
/// `V(x) = 4h·(x₁⁴/4 − x₁²/2) + c·x₁  (+ x₂²/2 in 2-D)`,   `U = V/ε`,   π ∝ exp(−U).
///
/// With `h = 1/4, c = 0` this is the `x⁴/4 − x²/2` of maths §9.6: minima at x₁ = ±1, saddle at 0, barrier
/// `h` in units of V, i.e. `h/ε` in units of U. The tilt `c` makes the wells unequal (c < 0 favours the
/// right well). "Right-hand well" means x₁ > 0 throughout. The x₁-marginal and all well masses are exact
/// by 1-D quadrature ([`DoubleWell::marginal`]); in 2-D, x₂ ~ N(0, ε) independently.
#[derive(Clone, Debug)]
pub struct DoubleWell {
    dim: usize,
    barrier: f64,
    tilt: f64,
    epsilon: f64,
    marginal: Density1d,
}

impl DoubleWell {
    /// A checked double well: `dim` 1 or 2, `barrier > 0`, finite `tilt`, `epsilon > 0`.
    pub fn new(dim: usize, barrier: f64, tilt: f64, epsilon: f64) -> Result<Self> {
        if dim != 1 && dim != 2 {
            return Err(Error::param("double-well dimension", dim, "must be 1 or 2"));
        }
        if !(barrier.is_finite() && barrier > 0.0) {
            return Err(Error::param("barrier", barrier, "must be finite and > 0 (units of V)"));
        }
        if !tilt.is_finite() || tilt.abs() > 100.0 * barrier {
            return Err(Error::param("tilt", tilt, "must be finite and |tilt| <= 100·barrier"));
        }
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(Error::param("epsilon", epsilon, "the temperature must be finite and > 0"));
        }
        let (lo, hi) = Self::range(barrier, tilt, epsilon);
        let v1 = move |x: f64| barrier * (x * x * x * x - 2.0 * x * x) + tilt * x;
        let marginal = Density1d::new(move |x| -v1(x) / epsilon, lo, hi, 200_000);
        Ok(DoubleWell { dim, barrier, tilt, epsilon, marginal })
    }

    /// Integration range holding all but a negligible (< e⁻⁶⁰) part of the x₁-marginal.
    fn range(h: f64, c: f64, eps: f64) -> (f64, f64) {
        // For |x| >= L: V1 >= h(x⁴ - 2x²) - |c||x| grows past min V1 + 60ε.
        let l = 2.0 + (4.0 * (60.0 * eps + c.abs() * 3.0 + h) / h).powf(0.25) + c.abs() / h;
        (-l, l)
    }

    /// The tilt `c` for which the right-well mass π(x₁ > 0) equals `right_mass` (bisection on quadrature).
    pub fn tilt_for_right_mass(barrier: f64, epsilon: f64, right_mass: f64) -> Result<f64> {
        if !(right_mass > 0.0 && right_mass < 1.0) {
            return Err(Error::param("right-well mass", right_mass, "must lie strictly between 0 and 1"));
        }
        let (mut lo, mut hi) = (-barrier, barrier); // right mass decreases in c
        let mass = |c: f64| DoubleWell::new(1, barrier, c, epsilon).map(|w| w.right_mass());
        if mass(lo)? < right_mass || mass(hi)? > right_mass {
            return Err(Error::param("right-well mass", right_mass, "not reachable with |tilt| <= barrier"));
        }
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if mass(mid)? > right_mass {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(0.5 * (lo + hi))
    }

    /// Barrier h (units of V).
    pub fn barrier(&self) -> f64 {
        self.barrier
    }
    /// Tilt c.
    pub fn tilt(&self) -> f64 {
        self.tilt
    }
    /// Temperature ε.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The 1-D potential `V₁(x₁) = h(x₁⁴ − 2x₁²) + c x₁` (without the 1/ε).
    pub fn v1(&self, x: f64) -> f64 {
        self.barrier * (x * x * x * x - 2.0 * x * x) + self.tilt * x
    }

    /// The exact x₁-marginal of π (tabulated; quadrature).
    pub fn marginal(&self) -> &Density1d {
        &self.marginal
    }

    /// Exact π(x₁ > 0).
    pub fn right_mass(&self) -> f64 {
        1.0 - self.marginal.cdf(0.0)
    }

    /// `n` particles with exactly `round(n·left_fraction)` of them in the left well (x₁ < 0) and the rest
    /// in the right well, each drawn from π conditioned on its well (so only the well proportions are
    /// wrong); x₂ ~ N(0, ε) in 2-D. Row-major `[n, dim]`.
    pub fn sample_wells(&self, n: usize, left_fraction: f64, rng: &mut Rng) -> Result<Vec<f64>> {
        if !(0.0..=1.0).contains(&left_fraction) {
            return Err(Error::param("left-well fraction", left_fraction, "must lie in [0, 1]"));
        }
        let n_left = (n as f64 * left_fraction).round() as usize;
        let c0 = self.marginal.cdf(0.0);
        let mut out = vec![0.0; n * self.dim];
        for i in 0..n {
            let u = rng::uniform(rng);
            let q = if i < n_left { u * c0 } else { c0 + u * (1.0 - c0) };
            out[i * self.dim] = self.marginal.quantile(q);
        }
        if self.dim == 2 {
            let mut z = vec![0.0; n];
            rng::fill_normal(rng, &mut z);
            for i in 0..n {
                out[i * 2 + 1] = z[i] * self.epsilon.sqrt();
            }
        }
        Ok(out)
    }
}

impl Energy for DoubleWell {
    fn dim(&self) -> usize {
        self.dim
    }
    fn describe(&self) -> String {
        format!(
            "double well d={} V=4h(x^4/4-x^2/2)+c x{} with h={}, c={}, U=V/eps with eps={} (barrier {:.3} in units of U)",
            self.dim,
            if self.dim == 2 { "+y^2/2" } else { "" },
            self.barrier,
            self.tilt,
            self.epsilon,
            self.barrier / self.epsilon
        )
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let (h, c, ie) = (self.barrier, self.tilt, 1.0 / self.epsilon);
        let x1 = x[0];
        let mut v = h * (x1 * x1 * x1 * x1 - 2.0 * x1 * x1) + c * x1;
        grad[0] = (h * (4.0 * x1 * x1 * x1 - 4.0 * x1) + c) * ie;
        if self.dim == 2 {
            v += 0.5 * x[1] * x[1];
            grad[1] = x[1] * ie;
        }
        v * ie
    }
    fn value(&self, x: &[f64]) -> f64 {
        let x1 = x[0];
        let mut v = self.v1(x1);
        if self.dim == 2 {
            v += 0.5 * x[1] * x[1];
        }
        v / self.epsilon
    }
    fn log_z(&self) -> Option<f64> {
        let extra = if self.dim == 2 { 0.5 * (2.0 * std::f64::consts::PI * self.epsilon).ln() } else { 0.0 };
        Some(self.marginal.log_z() + extra)
    }
}

// ---------------------------------------------------------------------------------------------------
// Many-well
// ---------------------------------------------------------------------------------------------------

/// The many-well target of Midgley et al. (FAB, 2023): d/2 independent pairs, each
/// `u(x, y) = x⁴ − 6x² − 0.5x + y²/2` (coordinates `(x_{2k}, x_{2k+1})`, 0-based), so
/// `U(x) = Σ_k u(x_{2k}, x_{2k+1})` has 2^{d/2} modes (x ≈ ±1.7 in each pair; the right one is heavier).
/// `log Z = (d/2)·(log ∫exp(−x⁴+6x²+0.5x)dx + ½ log 2π)`, the first integral by 1-D quadrature.
#[derive(Clone, Debug)]
pub struct ManyWell {
    dim: usize,
    marginal: Density1d,
}

impl ManyWell {
    /// A many-well target in even dimension `dim >= 2`.
    pub fn new(dim: usize) -> Result<Self> {
        if dim < 2 || !dim.is_multiple_of(2) {
            return Err(Error::param("many-well dimension", dim, "must be even and >= 2"));
        }
        let marginal = Density1d::new(|x| -(x * x * x * x - 6.0 * x * x - 0.5 * x), -6.0, 6.0, 200_000);
        Ok(ManyWell { dim, marginal })
    }

    /// Exact mass of the right well (x > 0) of one pair's double-well coordinate.
    pub fn pair_right_mass(&self) -> f64 {
        1.0 - self.marginal.cdf(0.0)
    }

    /// The exact double-well-coordinate marginal.
    pub fn marginal(&self) -> &Density1d {
        &self.marginal
    }

    /// Exact mass of each well sign pattern; pattern index bit k set ⇔ x_{2k} > 0. Length 2^{d/2}
    /// (only for d <= 40).
    pub fn pattern_masses(&self) -> Result<Vec<f64>> {
        let k = self.dim / 2;
        if k > 20 {
            return Err(Error::param("many-well dimension", self.dim, "sign patterns are listed only for d <= 40"));
        }
        let p = self.pair_right_mass();
        Ok((0..1usize << k)
            .map(|m| (0..k).map(|b| if (m >> b) & 1 == 1 { p } else { 1.0 - p }).product())
            .collect())
    }

    /// The sign-pattern index of one particle (bit k set ⇔ x_{2k} > 0).
    pub fn pattern_of(x: &[f64]) -> usize {
        x.iter().step_by(2).enumerate().fold(0, |m, (k, &v)| if v > 0.0 { m | (1 << k) } else { m })
    }
}

impl Energy for ManyWell {
    fn dim(&self) -> usize {
        self.dim
    }
    fn describe(&self) -> String {
        format!("many-well d={} (sum over {} pairs of x^4-6x^2-0.5x+y^2/2)", self.dim, self.dim / 2)
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut u = 0.0;
        for k in 0..self.dim / 2 {
            let (a, b) = (x[2 * k], x[2 * k + 1]);
            u += a * a * a * a - 6.0 * a * a - 0.5 * a + 0.5 * b * b;
            grad[2 * k] = 4.0 * a * a * a - 12.0 * a - 0.5;
            grad[2 * k + 1] = b;
        }
        u
    }
    fn value(&self, x: &[f64]) -> f64 {
        x.chunks(2).map(|p| p[0].powi(4) - 6.0 * p[0] * p[0] - 0.5 * p[0] + 0.5 * p[1] * p[1]).sum()
    }
    fn log_z(&self) -> Option<f64> {
        Some((self.dim / 2) as f64 * (self.marginal.log_z() + 0.5 * (2.0 * std::f64::consts::PI).ln()))
    }
}

// ---------------------------------------------------------------------------------------------------
// Gaussian and Gaussian mixture
// ---------------------------------------------------------------------------------------------------

/// Diagonal Gaussian energy `U = Σ_k (x_k − m_k)²/(2 s_k²)` (unnormalised: `log Z = Σ log(√(2π) s_k)`).
#[derive(Clone, Debug)]
pub struct GaussianEnergy {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl GaussianEnergy {
    /// A checked diagonal Gaussian (equal lengths, finite means, positive finite stds).
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::param("gaussian", format!("{} means, {} stds", mean.len(), std.len()), "need d >= 1 of each"));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::param("gaussian mean", m, "must be finite"));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::param("gaussian std", s, "must be finite and > 0"));
        }
        Ok(GaussianEnergy { mean, std })
    }
}

impl Energy for GaussianEnergy {
    fn dim(&self) -> usize {
        self.mean.len()
    }
    fn describe(&self) -> String {
        format!("gaussian d={} mean={:?} std={:?}", self.mean.len(), self.mean, self.std)
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut u = 0.0;
        for k in 0..self.mean.len() {
            let z = (x[k] - self.mean[k]) / self.std[k];
            u += 0.5 * z * z;
            grad[k] = z / self.std[k];
        }
        u
    }
    fn log_z(&self) -> Option<f64> {
        Some(self.std.iter().map(|s| (s * (2.0 * std::f64::consts::PI).sqrt()).ln()).sum())
    }
}

/// Gaussian mixture energy `U(x) = −log Σ_k w_k N(x; μ_k, diag σ_k²)` (normalised: `log Z = 0`), e.g. a
/// Gaussian-mixture expert's data distribution (t = 0).
#[derive(Clone, Debug)]
pub struct GmmEnergy {
    means: Vec<f64>,
    stds: Vec<f64>,
    /// log w_k − Σ_d log σ_kd − (d/2) log 2π, per component.
    log_coef: Vec<f64>,
    k: usize,
    d: usize,
    source: String,
}

impl GmmEnergy {
    /// From row-major `means` `[K, D]`, `stds` `[K, D]` and `weights` `[K]` (normalised here).
    pub fn new(means: Vec<f64>, stds: Vec<f64>, weights: Vec<f64>, k: usize, d: usize) -> Result<Self> {
        if k == 0 || d == 0 || means.len() != k * d || stds.len() != k * d || weights.len() != k {
            return Err(Error::param("gaussian mixture", format!("K={k}, D={d}"), "means and stds must be [K, D], weights [K]"));
        }
        if let Some(s) = stds.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::param("gaussian-mixture std", s, "must be finite and > 0"));
        }
        if let Some(m) = means.iter().find(|m| !m.is_finite()) {
            return Err(Error::param("gaussian-mixture mean", m, "must be finite"));
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            return Err(Error::param("gaussian-mixture weight", w, "must be finite and > 0"));
        }
        let total: f64 = weights.iter().sum();
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let log_coef = (0..k)
            .map(|j| (weights[j] / total).ln() - stds[j * d..(j + 1) * d].iter().map(|s| s.ln() + half_log_2pi).sum::<f64>())
            .collect();
        Ok(GmmEnergy { means, stds, log_coef, k, d, source: String::new() })
    }

    /// Read a Gaussian-mixture expert file (see [`read_gmm_file`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let (means, stds, weights, k, d) = read_gmm_file(path)?;
        let mut g = GmmEnergy::new(means, stds, weights, k, d)?;
        g.source = path.display().to_string();
        Ok(g)
    }

    /// Number of components K.
    pub fn components(&self) -> usize {
        self.k
    }
}

impl Energy for GmmEnergy {
    fn dim(&self) -> usize {
        self.d
    }
    fn describe(&self) -> String {
        format!("gaussian mixture K={} D={} {}", self.k, self.d, self.source)
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let d = self.d;
        let mut lp = Vec::with_capacity(self.k);
        for j in 0..self.k {
            let mut q = 0.0;
            for c in 0..d {
                let z = (x[c] - self.means[j * d + c]) / self.stds[j * d + c];
                q += z * z;
            }
            lp.push(self.log_coef[j] - 0.5 * q);
        }
        let lse = crate::particles::log_sum_exp(&lp);
        grad.iter_mut().for_each(|g| *g = 0.0);
        for j in 0..self.k {
            let r = crate::lanes::exp(lp[j] - lse);
            for c in 0..d {
                let s = self.stds[j * d + c];
                grad[c] += r * (x[c] - self.means[j * d + c]) / (s * s);
            }
        }
        -lse
    }
    fn log_z(&self) -> Option<f64> {
        Some(0.0)
    }
}

/// `(means [K·D], stds [K·D], weights [K], K, D)` as read from a Gaussian-mixture file.
pub type GmmParts = (Vec<f64>, Vec<f64>, Vec<f64>, usize, usize);

/// Read a Gaussian-mixture expert file with the engine's loader ([`crate::GaussianMixture::load`],
/// whose errors name the file, tensor and value). Returns `(means, stds, weights, K, D)` with the
/// weights normalised to sum 1.
pub fn read_gmm_file(path: &Path) -> Result<GmmParts> {
    let g = crate::GaussianMixture::load(path)?;
    let (k, d) = (g.components(), g.means().len() / g.components());
    Ok((g.means().to_vec(), g.variances().iter().map(|v| v.sqrt()).collect(), g.weights(), k, d))
}

// ---------------------------------------------------------------------------------------------------
// Target names
// ---------------------------------------------------------------------------------------------------

/// Knobs of the built-in targets that take them (double wells).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TargetKnobs {
    /// Barrier h in units of V (default 1/4: maths §9.6).
    pub barrier: f64,
    /// Tilt c (default 0).
    pub tilt: f64,
    /// Temperature ε (default 0.05: a 5 kT barrier).
    pub epsilon: f64,
}

impl Default for TargetKnobs {
    fn default() -> Self {
        TargetKnobs { barrier: 0.25, tilt: 0.0, epsilon: 0.05 }
    }
}

/// A built-in target by name: `double-well`, `double-well-2d`, `many-well-D` (D even, e.g. `many-well-8`,
/// `many-well-32`), `gaussian-D` (standard normal in D dimensions) or `gmm:PATH` (a Gaussian-mixture file).
pub fn target_from_name(name: &str, knobs: &TargetKnobs) -> Result<Box<dyn Energy>> {
    if let Some(path) = name.strip_prefix("gmm:") {
        return Ok(Box::new(GmmEnergy::from_file(&PathBuf::from(path))?));
    }
    match name {
        "double-well" | "double-well-1d" => return Ok(Box::new(DoubleWell::new(1, knobs.barrier, knobs.tilt, knobs.epsilon)?)),
        "double-well-2d" => return Ok(Box::new(DoubleWell::new(2, knobs.barrier, knobs.tilt, knobs.epsilon)?)),
        _ => {}
    }
    let dim_of = |rest: &str| {
        rest.parse::<usize>().map_err(|_| Error::param("target", name, "the dimension after the dash must be a positive integer"))
    };
    if let Some(rest) = name.strip_prefix("many-well-") {
        return Ok(Box::new(ManyWell::new(dim_of(rest)?)?));
    }
    if let Some(rest) = name.strip_prefix("gaussian-") {
        let d = dim_of(rest)?;
        return Ok(Box::new(GaussianEnergy::new(vec![0.0; d], vec![1.0; d])?));
    }
    Err(Error::param(
        "target",
        name,
        "unknown; expected double-well, double-well-2d, many-well-D (e.g. many-well-8, many-well-32), gaussian-D or gmm:PATH",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let targets: Vec<Box<dyn Energy>> = vec![
            Box::new(DoubleWell::new(2, 0.3, -0.04, 0.05).unwrap()),
            Box::new(ManyWell::new(4).unwrap()),
            Box::new(GmmEnergy::new(vec![-1.0, 0.5, 2.0, 1.0], vec![0.5, 1.0, 0.7, 0.3], vec![1.0, 3.0], 2, 2).unwrap()),
        ];
        for t in &targets {
            let d = t.dim();
            let x: Vec<f64> = (0..d).map(|k| 0.3 + 0.41 * k as f64).collect();
            let mut g = vec![0.0; d];
            let u = t.value_grad(&x, &mut g);
            assert!((u - t.value(&x)).abs() < 1e-12 * (1.0 + u.abs()));
            for k in 0..d {
                let (mut a, mut b) = (x.clone(), x.clone());
                a[k] += 1e-6;
                b[k] -= 1e-6;
                let fd = (t.value(&a) - t.value(&b)) / 2e-6;
                assert!((fd - g[k]).abs() < 1e-5 * (1.0 + g[k].abs()), "{}: {fd} vs {}", t.describe(), g[k]);
            }
        }
    }

    #[test]
    fn quadrature_reproduces_known_values() {
        // c = 0.1, ε = 1 (h = 1/4): π(X>0) = 0.45579 (an independent 1e-4-step Riemann sum gives 0.455795;
        // an older reference quoted 0.4545, which is off in the third decimal; quadrature gives 0.4558).
        let w = DoubleWell::new(1, 0.25, 0.1, 1.0).unwrap();
        assert!((w.right_mass() - 0.455795).abs() < 2e-5, "{}", w.right_mass());
        // Many-well (FAB): Z_x = ∫exp(−x⁴+6x²+0.5x) ≈ 11784.50, so log Z(d=32) ≈ 164.69.
        let m = ManyWell::new(32).unwrap();
        assert!((m.marginal().log_z().exp() - 11784.50).abs() < 0.05);
        // Gaussian check of Simpson: ∫exp(−x²/2) = √(2π).
        let lz = log_integrate(|x| -0.5 * x * x, -12.0, 12.0, 2000);
        assert!((lz - 0.5 * (2.0 * std::f64::consts::PI).ln()).abs() < 1e-10);
    }
}
