//! The weighted particle system shared by every sampler: log-weights (f64), effective sample size,
//! four unbiased resampling schemes, the adaptive resampling rule and the running log-normaliser log Ẑ
//! (maths §6). Per-particle state (positions, tracked log-densities, ...) lives with the caller, who
//! copies rows with [`gather_rows`] using the ancestor indices a resampling returns.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::rng::{self, Rng};

/// `log Σ exp(a_i)`, stable; `-inf` for an empty slice or all `-inf`.
pub fn log_sum_exp(a: &[f64]) -> f64 {
    lse_and_ess(a).0
}

/// `log Σ exp(a_i)` and the effective sample size `(Σw)² / Σw²` of the weights `w_i = exp(a_i)`, from one
/// exponential per entry: the entries are shifted by their maximum and summed in blocks of
/// [`crate::rng::BLOCK`] (four lanes within a block, blocks in order; up to 16 entries in order), on the
/// thread pool when there are many, so the result does not depend on the thread count. (−∞, 0) when every entry is −∞ or there are
/// none; (+∞, 0) when one is +∞; NaN propagates.
pub fn lse_and_ess(a: &[f64]) -> (f64, f64) {
    use rayon::prelude::*;
    let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return (f64::NEG_INFINITY, 0.0);
    }
    if m == f64::INFINITY {
        return (f64::INFINITY, 0.0);
    }
    if a.len() <= 16 {
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in a {
            let e = crate::lanes::exp(v - m);
            s1 += e;
            s2 += e * e;
        }
        return (m + crate::lanes::ln(s1), s1 * s1 / s2);
    }
    let block = |c: &[f64]| {
        let mut e = [0.0f64; 256];
        let (mut s1, mut s2) = (0.0, 0.0);
        for part in c.chunks(256) {
            let e = &mut e[..part.len()];
            e.iter_mut().zip(part).for_each(|(o, &v)| *o = crate::lanes::exp(v - m));
            s1 += crate::lanes::sum(e);
            s2 += crate::lanes::norm2(e);
        }
        (s1, s2)
    };
    let (s1, s2) = if a.len() <= crate::rng::BLOCK {
        block(a)
    } else {
        let sums: Vec<(f64, f64)> =
            if a.len() > 4 * crate::rng::BLOCK { a.par_chunks(crate::rng::BLOCK).map(block).collect() } else { a.chunks(crate::rng::BLOCK).map(block).collect() };
        sums.iter().fold((0.0, 0.0), |(x, y), (p, q)| (x + p, y + q))
    };
    (m + crate::lanes::ln(s1), s1 * s1 / s2)
}

/// Normalised weights `exp(a_i - LSE(a))`.
pub fn normalized_weights(log_w: &[f64]) -> Vec<f64> {
    shifted_exp(log_w, log_sum_exp(log_w))
}

/// `exp(a_i - lse)` for every entry.
fn shifted_exp(log_w: &[f64], lse: f64) -> Vec<f64> {
    log_w.iter().map(|&a| crate::lanes::exp(a - lse)).collect()
}

/// Effective sample size `(Σw)² / Σw²`, from max-shifted log-weights (0 when all are −∞).
pub fn ess(log_w: &[f64]) -> f64 {
    lse_and_ess(log_w).1
}

/// Number of distinct entries in a list of ancestor indices.
pub fn unique_count(ancestors: &[usize]) -> usize {
    let mut seen = vec![false; ancestors.iter().copied().max().map_or(0, |m| m + 1)];
    let mut n = 0;
    for &a in ancestors {
        if !seen[a] {
            seen[a] = true;
            n += 1;
        }
    }
    n
}

/// Copy rows of a row-major buffer (`row` values per particle) in the order of `idx`.
pub fn gather_rows<T: Copy>(data: &[T], row: usize, idx: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        out.extend_from_slice(&data[i * row..(i + 1) * row]);
    }
    out
}

/// A resampling scheme. All four are unbiased: particle i gets N·W_i copies in expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Resampler {
    /// One uniform, N evenly spaced points: lowest variance in practice, O(N).
    #[default]
    Systematic,
    /// One uniform per stratum `[i/N, (i+1)/N)`.
    Stratified,
    /// N independent draws (highest variance).
    Multinomial,
    /// ⌊N·W_i⌋ deterministic copies, the remainder drawn systematically from the residual weights.
    Residual,
}

impl Resampler {
    /// All schemes, for tests and help texts.
    pub const ALL: [Resampler; 4] =
        [Resampler::Systematic, Resampler::Stratified, Resampler::Multinomial, Resampler::Residual];

    /// Draw `n` ancestor indices from normalised weights `w` (Σw = 1 up to rounding).
    pub fn ancestors(self, w: &[f64], n: usize, rng: &mut Rng) -> Vec<usize> {
        match self {
            Resampler::Systematic => {
                let u = rng::uniform(rng);
                invert_sorted(w, (0..n).map(|i| (i as f64 + u) / n as f64), n)
            }
            Resampler::Stratified => {
                let us: Vec<f64> = (0..n).map(|i| (i as f64 + rng::uniform(rng)) / n as f64).collect();
                invert_sorted(w, us.into_iter(), n)
            }
            Resampler::Multinomial => {
                let mut us: Vec<f64> = (0..n).map(|_| rng::uniform(rng)).collect();
                us.sort_by(f64::total_cmp);
                invert_sorted(w, us.into_iter(), n)
            }
            Resampler::Residual => {
                let mut out = Vec::with_capacity(n);
                let mut resid = Vec::with_capacity(w.len());
                for (i, &wi) in w.iter().enumerate() {
                    let copies = (n as f64 * wi).floor() as usize;
                    out.extend(std::iter::repeat_n(i, copies));
                    resid.push(n as f64 * wi - copies as f64);
                }
                let rest = n.saturating_sub(out.len());
                if rest > 0 {
                    let total: f64 = resid.iter().sum();
                    if total > 0.0 {
                        resid.iter_mut().for_each(|r| *r /= total);
                        let u = rng::uniform(rng);
                        out.extend(invert_sorted(&resid, (0..rest).map(|i| (i as f64 + u) / rest as f64), rest));
                    } else {
                        // Rounding left no residual mass: fill with the heaviest particle.
                        let best = (0..w.len()).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap_or(0);
                        out.extend(std::iter::repeat_n(best, rest));
                    }
                }
                out.truncate(n);
                out
            }
        }
    }
}

/// Map sorted uniforms through the inverse CDF of `w` by a linear merge; the last index absorbs rounding.
fn invert_sorted(w: &[f64], us: impl Iterator<Item = f64>, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    let total: f64 = w.iter().sum();
    let last = w.len() - 1;
    let mut j = 0;
    let mut cum = w[0] / total;
    for u in us {
        while cum < u && j < last {
            j += 1;
            cum += w[j] / total;
        }
        out.push(j);
    }
    out
}

impl FromStr for Resampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "systematic" => Ok(Resampler::Systematic),
            "stratified" => Ok(Resampler::Stratified),
            "multinomial" => Ok(Resampler::Multinomial),
            "residual" => Ok(Resampler::Residual),
            _ => Err(Error::param("resampler", s, "expected systematic, stratified, multinomial or residual")),
        }
    }
}

impl fmt::Display for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Resampler::Systematic => "systematic",
            Resampler::Stratified => "stratified",
            Resampler::Multinomial => "multinomial",
            Resampler::Residual => "residual",
        };
        f.write_str(s)
    }
}

/// When to resample: a scheme, an ESS threshold κ (resample when ESS < κ·N; 0 never, 1 every step) and
/// an optional window of times in which resampling is allowed. Checked on construction.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ResamplePolicy {
    scheme: Resampler,
    ess_threshold: f64,
    /// Resampling only at times t with `lo <= t <= hi` (any time scale the caller uses).
    window: Option<(f64, f64)>,
}

impl Default for ResamplePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ResamplePolicy {
    /// Systematic resampling when ESS < N/2, at any time.
    pub const DEFAULT: ResamplePolicy = ResamplePolicy { scheme: Resampler::Systematic, ess_threshold: 0.5, window: None };

    /// A checked policy.
    pub fn new(scheme: Resampler, ess_threshold: f64, window: Option<(f64, f64)>) -> Result<Self> {
        if !(0.0..=1.0).contains(&ess_threshold) {
            return Err(Error::param("ESS threshold", ess_threshold, "must lie in [0, 1] (fraction of the particle count)"));
        }
        if let Some((lo, hi)) = window {
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return Err(Error::param("resampling window", format!("{lo}..{hi}"), "needs finite lo <= hi"));
            }
        }
        Ok(ResamplePolicy { scheme, ess_threshold, window })
    }

    /// The resampling scheme.
    pub fn scheme(&self) -> Resampler {
        self.scheme
    }

    /// The ESS threshold κ.
    pub fn ess_threshold(&self) -> f64 {
        self.ess_threshold
    }

    /// The window of times in which resampling is allowed, if any.
    pub fn window(&self) -> Option<(f64, f64)> {
        self.window
    }

    fn allows(&self, t: f64) -> bool {
        self.window.is_none_or(|(lo, hi)| t >= lo && t <= hi)
    }
}

/// What one call of [`ParticleWeights::step`] did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct WeightStep {
    /// ESS after this step's increments, before any resampling.
    pub ess: f64,
    /// Whether the particles were resampled.
    pub resampled: bool,
    /// Distinct ancestors among the resampled particles (N if not resampled).
    pub unique_ancestors: usize,
    /// This step's contribution to log Ẑ: `log Σ_i W_i^prev exp(Δa_i)`.
    pub log_z_increment: f64,
    /// Ancestor indices when resampled; copy every per-particle row with them.
    #[serde(skip)]
    pub ancestors: Option<Vec<usize>>,
}

/// Log-weights of N particles with the running normaliser estimate.
#[derive(Clone, Debug)]
pub struct ParticleWeights {
    log_w: Vec<f64>,
    /// Σ over closed resampling epochs of `LSE(a) - log N`.
    log_z_closed: f64,
    /// (LSE(log_w), ESS), when known (computed once after every change of the log-weights).
    summary: Option<(f64, f64)>,
}

impl ParticleWeights {
    /// N particles with equal weights.
    pub fn new(n: usize) -> Self {
        ParticleWeights { log_w: vec![0.0; n], log_z_closed: 0.0, summary: None }
    }

    /// Number of particles.
    pub fn len(&self) -> usize {
        self.log_w.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.log_w.is_empty()
    }

    /// Unnormalised log-weights since the last resampling.
    pub fn log_weights(&self) -> &[f64] {
        &self.log_w
    }

    /// Normalised weights.
    pub fn normalized(&self) -> Vec<f64> {
        shifted_exp(&self.log_w, self.summary().0)
    }

    /// LSE of the log-weights and the ESS, from the cache when the weights have not changed.
    fn summary(&self) -> (f64, f64) {
        self.summary.unwrap_or_else(|| lse_and_ess(&self.log_w))
    }

    /// Current effective sample size.
    pub fn ess(&self) -> f64 {
        self.summary().1
    }

    /// Current estimate of log(Z_end / Z_start): closed epochs plus the open one.
    pub fn log_z(&self) -> f64 {
        self.log_z_closed + self.summary().0 - crate::lanes::ln(self.log_w.len() as f64)
    }

    /// Add log-weight increments (one per particle), then resample under `policy` if the ESS is low and
    /// `t` lies in the policy's window. Returns the step's diagnostics, with the ancestors if resampled.
    pub fn step(&mut self, increments: &[f64], policy: &ResamplePolicy, t: f64, rng: &mut Rng) -> WeightStep {
        assert_eq!(increments.len(), self.log_w.len(), "one increment per particle");
        let before = self.summary().0;
        for (a, d) in self.log_w.iter_mut().zip(increments) {
            *a += d;
        }
        let (after, ess) = lse_and_ess(&self.log_w);
        self.summary = Some((after, ess));
        let n = self.log_w.len();
        let mut out = WeightStep { ess, resampled: false, unique_ancestors: n, log_z_increment: after - before, ancestors: None };
        if policy.allows(t) && ess < policy.ess_threshold * n as f64 {
            let idx = self.resample(policy.scheme, rng);
            out.resampled = true;
            out.unique_ancestors = unique_count(&idx);
            out.ancestors = Some(idx);
        }
        out
    }

    /// Resample now with `scheme`: closes the epoch in log Ẑ, resets all weights to equal, and returns
    /// the ancestor indices.
    pub fn resample(&mut self, scheme: Resampler, rng: &mut Rng) -> Vec<usize> {
        let n = self.log_w.len();
        self.log_z_closed += self.summary().0 - crate::lanes::ln(n as f64);
        let w = self.normalized();
        let idx = scheme.ancestors(&w, n, rng);
        self.log_w.iter_mut().for_each(|a| *a = 0.0);
        // What lse_and_ess gives for n zeros, exactly (sums of ones are exact).
        self.summary = Some((crate::lanes::ln(n as f64), n as f64));
        idx
    }

    /// Set the log-weights directly (e.g. an initial importance weight `log p(x) - log r(x)`).
    pub fn set_log_weights(&mut self, log_w: Vec<f64>) {
        assert_eq!(log_w.len(), self.log_w.len());
        self.log_w = log_w;
        self.summary = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lse_and_ess_simple_cases() {
        assert!((log_sum_exp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        // Equal weights: ESS = N; one particle carrying all the mass: ESS = 1.
        assert!((ess(&[3.0; 10]) - 10.0).abs() < 1e-12);
        assert!((ess(&[0.0, -1e4, -1e4]) - 1.0).abs() < 1e-12);
        // Two groups of weights 1 and 2 over 2 particles: (3)^2 / 5.
        assert!((ess(&[0.0, 2f64.ln()]) - 9.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn gather_and_unique() {
        let d = [1, 2, 3, 4, 5, 6];
        assert_eq!(gather_rows(&d, 2, &[2, 0, 2]), vec![5, 6, 1, 2, 5, 6]);
        assert_eq!(unique_count(&[2, 0, 2]), 2);
    }
}
