//! Samplers for an unnormalized energy π ∝ exp(−U) (DESIGN.md §7, MATH-NOTES.md §2.2–§2.4, §2.7, §6):
//! Langevin (ULA, optionally Metropolis-adjusted), the Wasserstein–Fisher–Rao weighted SDE (Langevin
//! transport plus birth–death through particle log-weights driven by a weighted kernel density estimate
//! of the particles' own density), pure Fisher–Rao reweighting, and annealed SMC from a Gaussian with an
//! adaptive (conditional-ESS) β schedule giving log Ẑ. All weights, resampling and log Ẑ go through the
//! one particle system in [`crate::particles`].
//!
//! Time convention: KL-gradient-flow time τ; Langevin is `dX = −∇U dτ + √2 dW`.

#![allow(clippy::needless_range_loop)] // index loops over row-major [n, d] buffers read clearer here

use rayon::prelude::*;

use crate::energy::Energy;
use crate::error::{Error, Result};
use crate::particles::{gather_rows, log_sum_exp, ParticleWeights, ResamplePolicy};
use crate::rng::{self, Rng};

// ---------------------------------------------------------------------------------------------------
// Kernel density estimate
// ---------------------------------------------------------------------------------------------------

/// How the KDE bandwidth h is chosen.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Bandwidth {
    /// A fixed h > 0. Recommended for multimodal targets: take h below the width of one mode
    /// (MATH-NOTES §2.3 uses h = 0.1 for modes of std ≈ 0.16).
    Fixed(f64),
    /// Silverman's rule with weights, recomputed every step:
    /// `h = (4/(d+2))^{1/(d+4)} · ESS^{−1/(d+4)} · σ̂`, where σ̂ is the geometric mean over coordinates of
    /// `min(weighted std, weighted IQR/1.349)`. Oversmooths multimodal clouds.
    Silverman,
}

/// Which KDE algorithm evaluates `log ρ̂(x_i)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub enum KdeMethod {
    /// Binned in 1-D when N > 256 and in 2-D when N > 768 (where the grid's fixed cost is repaid), exact
    /// otherwise.
    #[default]
    Auto,
    /// Exact O(N²) sum over all particle pairs (any d).
    Exact,
    /// Linear binning on a grid of spacing h/`cells_per_bandwidth`, Gaussian convolution truncated at
    /// 5h, linear interpolation back to the particles: O(N + grid) per step; d = 1 or 2 only.
    Binned,
}

/// Weighted Gaussian KDE `ρ̂(x) = Σ_j W_j N(x; X_j, h² I)` (self term included; MATH-NOTES §2.3 option 1).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Kde {
    /// Bandwidth rule.
    pub bandwidth: Bandwidth,
    /// Exact or binned evaluation.
    pub method: KdeMethod,
    /// Grid cells per bandwidth for [`KdeMethod::Binned`] (default 6).
    pub cells_per_bandwidth: f64,
}

impl Default for Kde {
    fn default() -> Self {
        Kde { bandwidth: Bandwidth::Fixed(0.1), method: KdeMethod::Auto, cells_per_bandwidth: 6.0 }
    }
}

/// Largest binned grid (cells) before the binned KDE refuses (Auto then falls back to exact).
const MAX_GRID_CELLS: usize = 1 << 22;
/// Largest particle count the samplers accept (memory guard).
pub const MAX_PARTICLES: usize = 1 << 28;
/// Kernel truncation radius in bandwidths.
const KERNEL_RADIUS: f64 = 5.0;

impl Kde {
    /// A KDE with a fixed bandwidth and automatic method.
    pub fn fixed(h: f64) -> Self {
        Kde { bandwidth: Bandwidth::Fixed(h), ..Kde::default() }
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if let Bandwidth::Fixed(h) = self.bandwidth {
            if !(h.is_finite() && h > 0.0) {
                return Err(Error::param("bandwidth", h, "must be finite and > 0"));
            }
        }
        if !(self.cells_per_bandwidth.is_finite() && self.cells_per_bandwidth >= 1.0 && self.cells_per_bandwidth <= 64.0) {
            return Err(Error::param("cells per bandwidth", self.cells_per_bandwidth, "must lie in [1, 64]"));
        }
        Ok(())
    }

    /// The bandwidth for particles `x` ([n, d]) with normalised weights `w`.
    pub fn bandwidth_for(&self, x: &[f64], d: usize, w: &[f64]) -> f64 {
        match self.bandwidth {
            Bandwidth::Fixed(h) => h,
            Bandwidth::Silverman => silverman(x, d, w),
        }
    }

    /// Writes `log ρ̂(x_i)` for every particle into `out`; returns the bandwidth used.
    pub fn log_density(&self, x: &[f64], d: usize, w: &[f64], out: &mut [f64]) -> Result<f64> {
        let h = self.bandwidth_for(x, d, w);
        let n = w.len();
        match self.method {
            KdeMethod::Exact => log_kde_exact(x, d, w, h, out),
            KdeMethod::Binned => log_kde_binned(x, d, w, h, self.cells_per_bandwidth, out)?,
            KdeMethod::Auto => {
                if (d == 1 && n > 256) || (d == 2 && n > 768) {
                    if log_kde_binned(x, d, w, h, self.cells_per_bandwidth, out).is_err() {
                        log_kde_exact(x, d, w, h, out);
                    }
                } else {
                    log_kde_exact(x, d, w, h, out);
                }
            }
        }
        Ok(h)
    }
}

/// Weighted Silverman bandwidth (see [`Bandwidth::Silverman`]).
pub fn silverman(x: &[f64], d: usize, w: &[f64]) -> f64 {
    let n = w.len();
    let ess = 1.0 / w.iter().map(|v| v * v).sum::<f64>().max(1e-300);
    let mut log_sigma = 0.0;
    for c in 0..d {
        let mean: f64 = (0..n).map(|i| w[i] * x[i * d + c]).sum();
        let var: f64 = (0..n).map(|i| w[i] * (x[i * d + c] - mean).powi(2)).sum();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| x[a * d + c].total_cmp(&x[b * d + c]));
        let quant = |q: f64| {
            let mut acc = 0.0;
            for &i in &idx {
                acc += w[i];
                if acc >= q {
                    return x[i * d + c];
                }
            }
            idx.last().map_or(0.0, |&i| x[i * d + c])
        };
        let iqr = quant(0.75) - quant(0.25);
        let mut s = var.sqrt();
        if iqr > 0.0 {
            s = s.min(iqr / 1.349);
        }
        log_sigma += s.max(1e-8).ln();
    }
    let df = d as f64;
    (4.0 / (df + 2.0)).powf(1.0 / (df + 4.0)) * ess.powf(-1.0 / (df + 4.0)) * (log_sigma / df).exp()
}

/// Exact weighted Gaussian KDE: `log ρ̂(x_i) = LSE_j(log W_j − ‖x_i − x_j‖²/(2h²)) − (d/2) log(2πh²)`.
/// O(N²·d), parallel over i (each sum sequential, so deterministic).
pub fn log_kde_exact(x: &[f64], d: usize, w: &[f64], h: f64, out: &mut [f64]) {
    let logw: Vec<f64> = w.iter().map(|v| v.ln()).collect();
    let c = -0.5 * d as f64 * (2.0 * std::f64::consts::PI * h * h).ln();
    let inv = 1.0 / (2.0 * h * h);
    out.par_iter_mut().enumerate().for_each(|(i, o)| {
        let xi = &x[i * d..(i + 1) * d];
        let (mut m, mut s) = (f64::NEG_INFINITY, 0.0);
        for (j, lw) in logw.iter().enumerate() {
            if *lw == f64::NEG_INFINITY {
                continue;
            }
            let xj = &x[j * d..(j + 1) * d];
            let mut q = 0.0;
            for k in 0..d {
                let z = xi[k] - xj[k];
                q += z * z;
            }
            let v = lw - q * inv;
            if v > m {
                s = s * (m - v).exp() + 1.0;
                m = v;
            } else {
                s += (v - m).exp();
            }
        }
        *o = m + s.ln() + c;
    });
}

/// A 1-D grid axis covering `[lo, hi]` plus the kernel radius.
struct Axis {
    origin: f64,
    cells: usize,
}

fn axis(lo: f64, hi: f64, delta: f64, radius: usize) -> Axis {
    let origin = lo - (radius as f64 + 1.0) * delta;
    let cells = ((hi - lo) / delta).ceil() as usize + 2 * radius + 4;
    Axis { origin, cells }
}

fn kernel_taps(h: f64, delta: f64, radius: usize) -> Vec<f64> {
    let norm = 1.0 / (2.0 * std::f64::consts::PI * h * h).sqrt();
    (0..=2 * radius)
        .map(|m| {
            let u = (m as f64 - radius as f64) * delta;
            norm * (-u * u / (2.0 * h * h)).exp()
        })
        .collect()
}

/// Convolve `src` (length n, stride 1) with symmetric `taps` (centre at `radius`) into `dst`.
fn convolve_line(src: &[f64], taps: &[f64], radius: usize, dst: &mut [f64]) {
    let n = src.len();
    for (k, o) in dst.iter_mut().enumerate() {
        let lo = k.saturating_sub(radius);
        let hi = (k + radius).min(n - 1);
        let mut s = 0.0;
        for (j, v) in src.iter().enumerate().take(hi + 1).skip(lo) {
            s += v * taps[j + radius - k];
        }
        *o = s;
    }
}

/// Binned weighted Gaussian KDE in d = 1 or 2 (see [`KdeMethod::Binned`]). Errors if d > 2, or if the
/// cloud is so spread out that the grid would exceed 2²² cells.
pub fn log_kde_binned(x: &[f64], d: usize, w: &[f64], h: f64, cells_per_h: f64, out: &mut [f64]) -> Result<()> {
    if d == 0 || d > 2 {
        return Err(Error::param("KDE dimension", d, "the binned KDE supports d = 1 or 2; use the exact KDE"));
    }
    let n = w.len();
    let delta = h / cells_per_h;
    let radius = (KERNEL_RADIUS * cells_per_h).ceil() as usize;
    let taps = kernel_taps(h, delta, radius);
    let mut axes = Vec::with_capacity(d);
    for c in 0..d {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..n {
            lo = lo.min(x[i * d + c]);
            hi = hi.max(x[i * d + c]);
        }
        if !(lo.is_finite() && hi.is_finite()) {
            return Err(Error::param("particle positions", "non-finite", "cannot bin non-finite positions"));
        }
        axes.push(axis(lo, hi, delta, radius));
    }
    let total: usize = axes.iter().map(|a| a.cells).product();
    if axes.iter().any(|a| a.cells > MAX_GRID_CELLS) || total > MAX_GRID_CELLS {
        return Err(Error::param(
            "binned KDE grid",
            format!("{total} cells"),
            format!("the particles spread over more than {MAX_GRID_CELLS} cells of h/{cells_per_h}; use a larger bandwidth or the exact KDE"),
        ));
    }
    // Cell coordinates of each particle.
    let pos = |i: usize, c: usize| -> (usize, f64) {
        let t = (x[i * d + c] - axes[c].origin) / delta;
        let k = t.floor();
        (k as usize, t - k)
    };
    if d == 1 {
        let g = axes[0].cells;
        let mut grid = vec![0.0; g];
        for i in 0..n {
            let (k, f) = pos(i, 0);
            grid[k] += w[i] * (1.0 - f);
            grid[k + 1] += w[i] * f;
        }
        let mut dens = vec![0.0; g];
        dens.par_chunks_mut(4096).enumerate().for_each(|(b, chunk)| {
            let start = b * 4096;
            for (o, v) in chunk.iter_mut().enumerate() {
                let k = start + o;
                let lo = k.saturating_sub(radius);
                let hi = (k + radius).min(g - 1);
                let mut s = 0.0;
                for (j, gv) in grid.iter().enumerate().take(hi + 1).skip(lo) {
                    s += gv * taps[j + radius - k];
                }
                *v = s;
            }
        });
        out.par_iter_mut().enumerate().for_each(|(i, o)| {
            let (k, f) = pos(i, 0);
            let v = dens[k] * (1.0 - f) + dens[k + 1] * f;
            *o = v.max(1e-300).ln();
        });
    } else {
        let (gx, gy) = (axes[0].cells, axes[1].cells);
        let mut grid = vec![0.0; gx * gy]; // row-major [gy][gx]
        for i in 0..n {
            let (kx, fx) = pos(i, 0);
            let (ky, fy) = pos(i, 1);
            grid[ky * gx + kx] += w[i] * (1.0 - fx) * (1.0 - fy);
            grid[ky * gx + kx + 1] += w[i] * fx * (1.0 - fy);
            grid[(ky + 1) * gx + kx] += w[i] * (1.0 - fx) * fy;
            grid[(ky + 1) * gx + kx + 1] += w[i] * fx * fy;
        }
        // Convolve along x (rows), then along y (columns, via a transpose).
        let mut tmp = vec![0.0; gx * gy];
        tmp.par_chunks_mut(gx).zip(grid.par_chunks(gx)).for_each(|(dst, src)| convolve_line(src, &taps, radius, dst));
        let mut tr = vec![0.0; gx * gy]; // [gx][gy]
        for ky in 0..gy {
            for kx in 0..gx {
                tr[kx * gy + ky] = tmp[ky * gx + kx];
            }
        }
        let mut dens = vec![0.0; gx * gy]; // [gx][gy]
        dens.par_chunks_mut(gy).zip(tr.par_chunks(gy)).for_each(|(dst, src)| convolve_line(src, &taps, radius, dst));
        out.par_iter_mut().enumerate().for_each(|(i, o)| {
            let (kx, fx) = pos(i, 0);
            let (ky, fy) = pos(i, 1);
            let at = |a: usize, b: usize| dens[a * gy + b];
            let v = at(kx, ky) * (1.0 - fx) * (1.0 - fy)
                + at(kx + 1, ky) * fx * (1.0 - fy)
                + at(kx, ky + 1) * (1.0 - fx) * fy
                + at(kx + 1, ky + 1) * fx * fy;
            *o = v.max(1e-300).ln();
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Langevin moves
// ---------------------------------------------------------------------------------------------------

/// The transport part of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// No transport: particles stay put (pure Fisher–Rao reweighting).
    None,
    /// Unadjusted Langevin: `x ← x − Δ∇U(x) + √(2Δ) ξ`.
    Ula,
    /// Metropolis-adjusted Langevin (the ULA proposal, accepted with the MH ratio).
    Mala,
}

fn non_finite(what: &str, step: usize, t: f64) -> Error {
    Error::NonFinite {
        what: what.into(),
        step,
        t,
        hint: "the target returned NaN/inf or the Langevin step is unstable; reduce the time step or check the target".into(),
    }
}

fn eval(target: &dyn Energy, x: &[f64], u: &mut [f64], g: &mut [f64], step: usize, t: f64) -> Result<()> {
    target.energy_grad_batch(x, u, g)?;
    if u.iter().any(|v| !v.is_finite()) {
        return Err(non_finite("energy U(x)", step, t));
    }
    if g.iter().any(|v| !v.is_finite()) {
        return Err(non_finite("energy gradient ∇U(x)", step, t));
    }
    Ok(())
}

/// One Langevin step of all particles for `target`, with `u`, `g` = U, ∇U at `x` on entry and at the new
/// `x` on exit. Returns the acceptance rate (1 for ULA). Noise and uniforms are drawn sequentially.
#[allow(clippy::too_many_arguments)]
fn langevin_step(
    target: &dyn Energy,
    x: &mut Vec<f64>,
    u: &mut Vec<f64>,
    g: &mut Vec<f64>,
    dt: f64,
    mala: bool,
    rng: &mut Rng,
    step: usize,
    t: f64,
) -> Result<f64> {
    let d = target.dim();
    let n = u.len();
    let mut xi = vec![0.0; x.len()];
    rng::fill_normal(rng, &mut xi);
    let s = (2.0 * dt).sqrt();
    let mut y = vec![0.0; x.len()];
    y.par_iter_mut().zip(x.par_iter().zip(g.par_iter()).zip(xi.par_iter())).for_each(|(yv, ((xv, gv), z))| {
        *yv = xv - dt * gv + s * z;
    });
    let mut uy = vec![0.0; n];
    let mut gy = vec![0.0; x.len()];
    if !mala {
        eval(target, &y, &mut uy, &mut gy, step, t)?;
        *x = y;
        *u = uy;
        *g = gy;
        return Ok(1.0);
    }
    target.energy_grad_batch(&y, &mut uy, &mut gy)?;
    if uy.iter().any(|v| v.is_nan()) || gy.iter().any(|v| v.is_nan()) {
        return Err(non_finite("energy at a MALA proposal", step, t));
    }
    let unif: Vec<f64> = (0..n).map(|_| rng::uniform(rng)).collect();
    let inv4 = 1.0 / (4.0 * dt);
    let accept: Vec<bool> = (0..n)
        .into_par_iter()
        .map(|i| {
            if !uy[i].is_finite() || gy[i * d..(i + 1) * d].iter().any(|v| !v.is_finite()) {
                return false;
            }
            let (mut fwd, mut bwd) = (0.0, 0.0);
            for k in 0..d {
                let a = y[i * d + k] - x[i * d + k] + dt * g[i * d + k];
                let b = x[i * d + k] - y[i * d + k] + dt * gy[i * d + k];
                fwd += a * a;
                bwd += b * b;
            }
            let log_alpha = u[i] - uy[i] + (fwd - bwd) * inv4;
            unif[i].ln() < log_alpha
        })
        .collect();
    let mut acc = 0usize;
    for i in 0..n {
        if accept[i] {
            acc += 1;
            x[i * d..(i + 1) * d].copy_from_slice(&y[i * d..(i + 1) * d]);
            g[i * d..(i + 1) * d].copy_from_slice(&gy[i * d..(i + 1) * d]);
            u[i] = uy[i];
        }
    }
    Ok(acc as f64 / n.max(1) as f64)
}

// ---------------------------------------------------------------------------------------------------
// WFR / Langevin / Fisher–Rao sampler
// ---------------------------------------------------------------------------------------------------

/// Settings of [`WfrSampler`]: Langevin is `lambda = 0`, pure Fisher–Rao is `transport = None`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct WfrConfig {
    /// Time step Δ > 0.
    pub dt: f64,
    /// Total time τ ≥ 0; the run takes `round(time/dt)` steps.
    pub time: f64,
    /// Reaction rate λ ≥ 0 (0: no birth–death).
    pub lambda: f64,
    /// Transport kernel.
    pub transport: Transport,
    /// Density estimate for the reaction.
    pub kde: Kde,
    /// Adaptive resampling rule (default: systematic when ESS < N/2).
    pub resample: ResamplePolicy,
}

impl WfrConfig {
    /// Plain Langevin (ULA, or MALA with `mala = true`), no reaction.
    pub fn langevin(dt: f64, time: f64, mala: bool) -> Self {
        WfrConfig {
            dt,
            time,
            lambda: 0.0,
            transport: if mala { Transport::Mala } else { Transport::Ula },
            kde: Kde::default(),
            resample: ResamplePolicy::default(),
        }
    }

    /// WFR: ULA transport plus birth–death at rate λ with the given KDE.
    pub fn wfr(dt: f64, time: f64, lambda: f64, kde: Kde) -> Self {
        WfrConfig { dt, time, lambda, transport: Transport::Ula, kde, resample: ResamplePolicy::default() }
    }

    /// Pure Fisher–Rao: birth–death only, particles fixed.
    pub fn fisher_rao(dt: f64, time: f64, lambda: f64, kde: Kde) -> Self {
        WfrConfig { dt, time, lambda, transport: Transport::None, kde, resample: ResamplePolicy::default() }
    }
}

/// Diagnostics of one step.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct StepInfo {
    /// Step index (0 = the initial state).
    pub step: usize,
    /// Time after the step.
    pub t: f64,
    /// ESS after the reweighting, before resampling.
    pub ess: f64,
    /// Whether the particles were resampled.
    pub resampled: bool,
    /// Distinct ancestors if resampled, else N.
    pub unique_ancestors: usize,
    /// MALA acceptance rate (1 for ULA, 0 without transport).
    pub acceptance: f64,
    /// KDE bandwidth used (0 without reaction).
    pub bandwidth: f64,
}

/// What an observer sees after every step (and once before the first).
pub struct StepView<'a> {
    /// Particle positions, row-major [n, d].
    pub x: &'a [f64],
    /// Dimension d.
    pub dim: usize,
    /// The particle weights.
    pub weights: &'a ParticleWeights,
    /// This step's diagnostics.
    pub info: &'a StepInfo,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct WfrRun {
    /// Final positions [n, d].
    pub x: Vec<f64>,
    /// Dimension d.
    pub dim: usize,
    /// Final weights.
    pub weights: ParticleWeights,
    /// Per-step diagnostics (index 0 = initial state).
    pub trace: Vec<StepInfo>,
}

/// A validated Langevin / WFR / Fisher–Rao sampler (MATH-NOTES §2.7):
/// per step, transport (ULA/MALA), then `r_i = log ρ̂(x_i) + U(x_i)`,
/// `a_i −= λΔ (r_i − Σ_j W_j r_j)`, then [`ParticleWeights::step`] (adaptive resampling).
#[derive(Clone, Debug)]
pub struct WfrSampler {
    cfg: WfrConfig,
    steps: usize,
}

impl WfrSampler {
    /// Check the settings once.
    pub fn new(cfg: WfrConfig) -> Result<Self> {
        if !(cfg.dt.is_finite() && cfg.dt > 0.0) {
            return Err(Error::param("dt", cfg.dt, "the time step must be finite and > 0"));
        }
        if !(cfg.time.is_finite() && cfg.time >= 0.0) {
            return Err(Error::param("time", cfg.time, "must be finite and >= 0"));
        }
        let steps = (cfg.time / cfg.dt).round();
        if steps > 1e9 {
            return Err(Error::param("time / dt", steps, "more than 10⁹ steps; increase dt or shorten the run"));
        }
        if !(cfg.lambda.is_finite() && cfg.lambda >= 0.0) {
            return Err(Error::param("lambda", cfg.lambda, "the reaction rate must be finite and >= 0"));
        }
        if cfg.lambda * cfg.dt > 1.0 {
            return Err(Error::param("lambda·dt", cfg.lambda * cfg.dt, "must be <= 1 for the explicit reaction step"));
        }
        cfg.kde.validate()?;
        Ok(WfrSampler { cfg, steps: steps as usize })
    }

    /// The settings.
    pub fn config(&self) -> &WfrConfig {
        &self.cfg
    }

    /// Number of steps a run takes.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Run from positions `x0` ([n, d], equal weights), calling `observe` before the first step and after
    /// every step. All randomness comes from `rng`, drawn sequentially.
    pub fn run(
        &self,
        target: &dyn Energy,
        x0: Vec<f64>,
        rng: &mut Rng,
        observe: &mut dyn FnMut(&StepView),
    ) -> Result<WfrRun> {
        self.run_weighted(target, x0, None, rng, observe)
    }

    /// Like [`WfrSampler::run`], but the initial ensemble may carry log-weights `log_w0` (e.g.
    /// `log ρ0(x) − log q(x)` for particles drawn from q to represent ρ0).
    pub fn run_weighted(
        &self,
        target: &dyn Energy,
        x0: Vec<f64>,
        log_w0: Option<Vec<f64>>,
        rng: &mut Rng,
        observe: &mut dyn FnMut(&StepView),
    ) -> Result<WfrRun> {
        let d = target.dim();
        if x0.is_empty() || x0.len() % d != 0 {
            return Err(Error::param("initial particles", x0.len(), format!("need n >= 1 rows of d = {d} values")));
        }
        if x0.iter().any(|v| !v.is_finite()) {
            return Err(Error::param("initial particles", "non-finite", "all initial positions must be finite"));
        }
        let n = x0.len() / d;
        let cfg = &self.cfg;
        let mut x = x0;
        let mut u = vec![0.0; n];
        let mut g = vec![0.0; n * d];
        eval(target, &x, &mut u, &mut g, 0, 0.0)?;
        let mut pw = ParticleWeights::new(n);
        if let Some(lw) = log_w0 {
            if lw.len() != n {
                return Err(Error::param("initial log-weights", lw.len(), format!("need one per particle ({n})")));
            }
            if lw.iter().any(|v| v.is_nan() || *v == f64::INFINITY) || lw.iter().all(|v| *v == f64::NEG_INFINITY) {
                return Err(Error::param("initial log-weights", "NaN/+inf/all -inf", "must be < +inf, not NaN, and not all -inf"));
            }
            pw.set_log_weights(lw);
        }
        let mut trace = Vec::with_capacity(self.steps + 1);
        let info0 = StepInfo { step: 0, t: 0.0, ess: pw.ess(), unique_ancestors: n, ..Default::default() };
        observe(&StepView { x: &x, dim: d, weights: &pw, info: &info0 });
        trace.push(info0);
        let mut logrho = vec![0.0; n];
        let mut inc = vec![0.0; n];
        for step in 1..=self.steps {
            let t = step as f64 * cfg.dt;
            let acceptance = match cfg.transport {
                Transport::None => 0.0,
                Transport::Ula => langevin_step(target, &mut x, &mut u, &mut g, cfg.dt, false, rng, step, t)?,
                Transport::Mala => langevin_step(target, &mut x, &mut u, &mut g, cfg.dt, true, rng, step, t)?,
            };
            let mut info = StepInfo { step, t, ess: pw.ess(), unique_ancestors: n, acceptance, ..Default::default() };
            if cfg.lambda > 0.0 {
                let w = pw.normalized();
                info.bandwidth = cfg.kde.log_density(&x, d, &w, &mut logrho)?;
                let rbar: f64 = (0..n).map(|i| w[i] * (logrho[i] + u[i])).sum();
                if !rbar.is_finite() {
                    return Err(non_finite("reaction rate log ρ̂ + U", step, t));
                }
                let c = cfg.lambda * cfg.dt;
                inc.par_iter_mut().enumerate().for_each(|(i, a)| *a = -c * (logrho[i] + u[i] - rbar));
                let ws = pw.step(&inc, &cfg.resample, t, rng);
                info.ess = ws.ess;
                info.resampled = ws.resampled;
                info.unique_ancestors = ws.unique_ancestors;
                if let Some(idx) = ws.ancestors {
                    x = gather_rows(&x, d, &idx);
                    g = gather_rows(&g, d, &idx);
                    u = gather_rows(&u, 1, &idx);
                }
            }
            observe(&StepView { x: &x, dim: d, weights: &pw, info: &info });
            trace.push(info);
        }
        Ok(WfrRun { x, dim: d, weights: pw, trace })
    }
}

/// Weighted fraction of particles whose first coordinate is > 0 (the right-hand-well mass).
pub fn right_mass(x: &[f64], d: usize, w: &[f64]) -> f64 {
    w.iter().enumerate().filter(|(i, _)| x[i * d] > 0.0).map(|(_, v)| v).sum()
}

/// Weighted mean and covariance (row-major d×d) of particles.
pub fn weighted_moments(x: &[f64], d: usize, w: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let total: f64 = w.iter().sum();
    let mut mean = vec![0.0; d];
    for (i, wi) in w.iter().enumerate() {
        for k in 0..d {
            mean[k] += wi * x[i * d + k] / total;
        }
    }
    let mut cov = vec![0.0; d * d];
    for (i, wi) in w.iter().enumerate() {
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] += wi * (x[i * d + a] - mean[a]) * (x[i * d + b] - mean[b]) / total;
            }
        }
    }
    (mean, cov)
}

// ---------------------------------------------------------------------------------------------------
// Closed-form Gaussian flows (MATH-NOTES §2.5), 1-D
// ---------------------------------------------------------------------------------------------------

/// Mean and variance at time t of the Wasserstein (Langevin/OU) flow from N(m0, c0) to π = N(mp, cp), 1-D.
pub fn gaussian_w_flow(m0: f64, c0: f64, mp: f64, cp: f64, t: f64) -> (f64, f64) {
    let m = (-t / cp).exp();
    (m * m0 + (1.0 - m) * mp, cp + m * (c0 - cp) * m)
}

/// Mean and variance at time t of the pure Fisher–Rao flow (λ = 1), 1-D.
pub fn gaussian_fr_flow(m0: f64, c0: f64, mp: f64, cp: f64, t: f64) -> (f64, f64) {
    let e = (-t).exp();
    let c = 1.0 / (1.0 / cp + e * (1.0 / c0 - 1.0 / cp));
    (mp + e * c / c0 * (m0 - mp), c)
}

/// Mean and variance at time t of the WFR flow (λ = 1), 1-D. Needs `c0 != cp`.
pub fn gaussian_wfr_flow(m0: f64, c0: f64, mp: f64, cp: f64, t: f64) -> (f64, f64) {
    let gamma = 1.0 / cp + 0.5;
    let e = (gamma * t).exp();
    let gt = e * (1.0 / (c0 - cp) + 1.0 / (2.0 + cp)) * e - 1.0 / (cp + 2.0);
    let c = cp + 1.0 / gt;
    (mp + (c - cp) * (t / cp).exp() / (c0 - cp) * (m0 - mp), c)
}

// ---------------------------------------------------------------------------------------------------
// Annealed SMC
// ---------------------------------------------------------------------------------------------------

/// Settings of [`AnnealSampler`]: geometric path from N(0, σ0² I) to π ∝ exp(−U)
/// (`U_β = (1−β)‖x‖²/(2σ0²) + βU`), β chosen adaptively so the conditional ESS of each increment is
/// `cess_target`·N, then resampling by `resample`, then `moves` Langevin moves targeting π_β.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct AnnealConfig {
    /// Number of particles N.
    pub particles: usize,
    /// Standard deviation σ0 of the Gaussian start.
    pub sigma0: f64,
    /// Conditional-ESS fraction per level, in (0, 1).
    pub cess_target: f64,
    /// Langevin moves per level.
    pub moves: usize,
    /// Move kernel: `Mala` (exact; default) or `Ula` (biased by O(step)).
    pub transport: Transport,
    /// Initial Langevin step size (MALA adapts it per level towards 50–65% acceptance).
    pub step: f64,
    /// Resampling rule (default ESS < N/2, systematic).
    pub resample: ResamplePolicy,
    /// Refuse to run more than this many levels.
    pub max_levels: usize,
}

impl Default for AnnealConfig {
    fn default() -> Self {
        AnnealConfig {
            particles: 2048,
            sigma0: 1.0,
            cess_target: 0.9,
            moves: 5,
            transport: Transport::Mala,
            step: 0.05,
            resample: ResamplePolicy::default(),
            max_levels: 10_000,
        }
    }
}

/// One annealing level's diagnostics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LevelInfo {
    /// Level index (1-based).
    pub level: usize,
    /// β after this level.
    pub beta: f64,
    /// ESS after the reweighting.
    pub ess: f64,
    /// Whether resampled.
    pub resampled: bool,
    /// Distinct ancestors if resampled, else N.
    pub unique_ancestors: usize,
    /// Mean MALA acceptance of this level's moves.
    pub acceptance: f64,
    /// Step size used.
    pub step: f64,
    /// log Ẑ so far (including the Gaussian start's normaliser).
    pub log_z: f64,
}

/// The result of an annealed run.
#[derive(Clone, Debug)]
pub struct AnnealRun {
    /// Final positions [n, d].
    pub x: Vec<f64>,
    /// Dimension d.
    pub dim: usize,
    /// Final weights.
    pub weights: ParticleWeights,
    /// Estimate of `log ∫ exp(−U)`.
    pub log_z: f64,
    /// Per-level diagnostics.
    pub levels: Vec<LevelInfo>,
}

/// `U_β` for the annealing path (a private wrapper so the Langevin move code is shared).
struct Tempered<'a> {
    target: &'a dyn Energy,
    beta: f64,
    inv_var0: f64,
}

impl Energy for Tempered<'_> {
    fn dim(&self) -> usize {
        self.target.dim()
    }
    fn describe(&self) -> String {
        format!("tempered β={} {}", self.beta, self.target.describe())
    }
    fn value_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let u = self.target.value_grad(x, grad);
        let mut u0 = 0.0;
        for (gk, xk) in grad.iter_mut().zip(x) {
            u0 += 0.5 * xk * xk * self.inv_var0;
            *gk = self.beta * *gk + (1.0 - self.beta) * xk * self.inv_var0;
        }
        if self.beta == 0.0 {
            u0 // ignore a non-finite U at β = 0
        } else {
            self.beta * u + (1.0 - self.beta) * u0
        }
    }
}

/// A validated annealed-SMC sampler (MATH-NOTES §2.4, §6.4).
#[derive(Clone, Debug)]
pub struct AnnealSampler {
    cfg: AnnealConfig,
}

impl AnnealSampler {
    /// Check the settings once.
    pub fn new(cfg: AnnealConfig) -> Result<Self> {
        if cfg.particles < 2 || cfg.particles > MAX_PARTICLES {
            return Err(Error::param("particles", cfg.particles, format!("need 2 ..= {MAX_PARTICLES}")));
        }
        if !(cfg.sigma0.is_finite() && cfg.sigma0 > 0.0) {
            return Err(Error::param("sigma0", cfg.sigma0, "the start's standard deviation must be finite and > 0"));
        }
        if !(cfg.cess_target > 0.0 && cfg.cess_target < 1.0) {
            return Err(Error::param("CESS target", cfg.cess_target, "must lie strictly between 0 and 1"));
        }
        if !(cfg.step.is_finite() && cfg.step > 0.0) {
            return Err(Error::param("step", cfg.step, "the Langevin step must be finite and > 0"));
        }
        if cfg.transport == Transport::None && cfg.moves > 0 {
            return Err(Error::param("transport", "none", "annealing needs ULA or MALA moves (or moves = 0)"));
        }
        if cfg.max_levels == 0 {
            return Err(Error::param("max levels", 0, "must be >= 1"));
        }
        Ok(AnnealSampler { cfg })
    }

    /// Run; `observe` is called after every level.
    pub fn run(&self, target: &dyn Energy, rng: &mut Rng, observe: &mut dyn FnMut(&LevelInfo)) -> Result<AnnealRun> {
        let cfg = &self.cfg;
        let (n, d) = (cfg.particles, target.dim());
        let inv_var0 = 1.0 / (cfg.sigma0 * cfg.sigma0);
        let mut x = vec![0.0; n * d];
        rng::fill_normal(rng, &mut x);
        x.iter_mut().for_each(|v| *v *= cfg.sigma0);
        let log_z0 = 0.5 * d as f64 * (2.0 * std::f64::consts::PI * cfg.sigma0 * cfg.sigma0).ln();
        let mut pw = ParticleWeights::new(n);
        let mut levels = Vec::new();
        let mut beta = 0.0;
        let mut step = cfg.step;
        let mut ut = vec![0.0; n]; // U at the current x
        let mut du = vec![0.0; n]; // U − U0
        while beta < 1.0 {
            let level = levels.len() + 1;
            if level > cfg.max_levels {
                return Err(Error::param(
                    "max levels",
                    cfg.max_levels,
                    format!("annealing reached only β = {beta:.4}; raise the limit or lower the CESS target"),
                ));
            }
            target.energy_batch(&x, &mut ut)?;
            if ut.iter().any(|v| !v.is_finite()) {
                return Err(non_finite("energy U(x)", level, beta));
            }
            du.par_iter_mut().enumerate().for_each(|(i, o)| {
                let r2: f64 = x[i * d..(i + 1) * d].iter().map(|v| v * v).sum();
                *o = ut[i] - 0.5 * r2 * inv_var0;
            });
            // Conditional ESS fraction of the increment −δ·du under the current weights.
            let logw: Vec<f64> = {
                let lw = pw.log_weights();
                let l = log_sum_exp(lw);
                lw.iter().map(|a| a - l).collect()
            };
            let cess = |delta: f64| -> f64 {
                let a: Vec<f64> = (0..n).map(|i| logw[i] - delta * du[i]).collect();
                let b: Vec<f64> = (0..n).map(|i| logw[i] - 2.0 * delta * du[i]).collect();
                (2.0 * log_sum_exp(&a) - log_sum_exp(&b)).exp()
            };
            let mut delta = 1.0 - beta;
            if cess(delta) < cfg.cess_target {
                let (mut lo, mut hi) = (0.0, delta);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    if cess(mid) >= cfg.cess_target {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                delta = lo.max(1e-12 * (1.0 - beta)).max(f64::MIN_POSITIVE);
            }
            let new_beta = if delta >= 1.0 - beta { 1.0 } else { beta + delta };
            let inc: Vec<f64> = du.iter().map(|v| -(new_beta - beta) * v).collect();
            let ws = pw.step(&inc, &cfg.resample, level as f64, rng);
            if let Some(idx) = &ws.ancestors {
                x = gather_rows(&x, d, idx);
            }
            beta = new_beta;
            // Moves targeting π_β.
            let temp = Tempered { target, beta, inv_var0 };
            let mut acc_sum = 0.0;
            if cfg.moves > 0 {
                let mut u = vec![0.0; n];
                let mut g = vec![0.0; n * d];
                eval(&temp, &x, &mut u, &mut g, level, beta)?;
                for _ in 0..cfg.moves {
                    acc_sum += langevin_step(&temp, &mut x, &mut u, &mut g, step, cfg.transport == Transport::Mala, rng, level, beta)?;
                }
            }
            let acceptance = if cfg.moves > 0 { acc_sum / cfg.moves as f64 } else { 0.0 };
            let info = LevelInfo {
                level,
                beta,
                ess: ws.ess,
                resampled: ws.resampled,
                unique_ancestors: ws.unique_ancestors,
                acceptance,
                step,
                log_z: pw.log_z() + log_z0,
            };
            if cfg.transport == Transport::Mala && cfg.moves > 0 {
                if acceptance > 0.65 {
                    step *= 1.3;
                } else if acceptance < 0.5 {
                    step *= 0.7;
                }
            }
            observe(&info);
            levels.push(info);
        }
        let log_z = pw.log_z() + log_z0;
        if !log_z.is_finite() {
            return Err(non_finite("log Ẑ", levels.len(), 1.0));
        }
        Ok(AnnealRun { x, dim: d, weights: pw, log_z, levels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_reproduce_math_notes() {
        // MATH-NOTES §2.5: m0 = 3, C0 = 0.25, π = N(0, 1).
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 6e-5 && (a.1 - b.1).abs() < 6e-5;
        assert!(close(gaussian_w_flow(3.0, 0.25, 0.0, 1.0, 1.0), (1.1036, 0.8985)));
        assert!(close(gaussian_fr_flow(3.0, 0.25, 0.0, 1.0, 1.0), (2.0985, 0.4754)));
        assert!(close(gaussian_wfr_flow(3.0, 0.25, 0.0, 1.0, 1.0), (0.5325, 0.9510)));
        assert!(close(gaussian_wfr_flow(3.0, 0.25, 0.0, 1.0, 2.0), (0.0732, 0.9975)));
    }

    #[test]
    fn binned_kde_matches_exact() {
        let mut rng = rng::seeded(1);
        for d in [1usize, 2] {
            let n = 800;
            let mut x = vec![0.0; n * d];
            rng::fill_normal(&mut rng, &mut x);
            for i in 0..n / 3 {
                x[i * d] += 3.0;
            }
            let w: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64).collect();
            let s: f64 = w.iter().sum();
            let w: Vec<f64> = w.iter().map(|v| v / s).collect();
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            log_kde_exact(&x, d, &w, 0.2, &mut a);
            log_kde_binned(&x, d, &w, 0.2, 6.0, &mut b).unwrap();
            let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            // Linear binning + linear interpolation at δ = h/6: error ≈ δ²/h² · O(1) ≈ 3% in density.
            assert!(worst < 0.03, "d={d}: max |Δ log ρ̂| = {worst}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The double-well teleportation experiment
// ---------------------------------------------------------------------------------------------------

/// Settings of the double-well experiment: a tilted 1-D double well whose right-hand well holds
/// `true_right_mass` of π, particles started with `start_left_fraction` in the left well (each drawn from
/// π restricted to its well), then Langevin and WFR run side by side from the same start.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TeleportConfig {
    /// Barrier h in units of V (the barrier in units of U is h/ε).
    pub barrier: f64,
    /// Temperature ε.
    pub epsilon: f64,
    /// π(x > 0); the tilt is solved for by quadrature.
    pub true_right_mass: f64,
    /// Fraction of particles started in the left well.
    pub start_left_fraction: f64,
    /// Particles N.
    pub particles: usize,
    /// Time step.
    pub dt: f64,
    /// Total time.
    pub time: f64,
    /// Reaction rate λ of WFR.
    pub lambda: f64,
    /// KDE bandwidth of WFR (fixed).
    pub bandwidth: f64,
    /// Record the right-well mass every this many steps.
    pub record_every: usize,
}

impl Default for TeleportConfig {
    /// Barrier 6 (h = 0.3, ε = 0.05), truth 20/80, start 90/10, N = 16384, Δ = 10⁻³, τ = 8, λ = 1, h = 0.1.
    fn default() -> Self {
        TeleportConfig {
            barrier: 0.3,
            epsilon: 0.05,
            true_right_mass: 0.8,
            start_left_fraction: 0.9,
            particles: 16384,
            dt: 1e-3,
            time: 8.0,
            lambda: 1.0,
            bandwidth: 0.1,
            record_every: 10,
        }
    }
}

/// One sampler's outcome in the experiment.
#[derive(Clone, Debug)]
pub struct TeleportTrack {
    /// Right-well mass at each recorded time.
    pub right_mass: Vec<f64>,
    /// Final positions (1-D).
    pub x: Vec<f64>,
    /// Final normalised weights.
    pub w: Vec<f64>,
    /// Number of resampling events.
    pub resamplings: usize,
}

/// The experiment's outcome.
#[derive(Clone, Debug)]
pub struct TeleportResult {
    /// The target (tilt solved so that π(x>0) = `true_right_mass`).
    pub target: crate::energy::DoubleWell,
    /// Recorded times (t = 0 first).
    pub times: Vec<f64>,
    /// Plain Langevin (ULA).
    pub langevin: TeleportTrack,
    /// WFR (ULA + birth–death).
    pub wfr: TeleportTrack,
}

impl TeleportResult {
    /// Right-well mass of a track at the recorded time nearest `t`.
    pub fn mass_at(&self, track: &TeleportTrack, t: f64) -> f64 {
        let k = (0..self.times.len())
            .min_by(|&a, &b| (self.times[a] - t).abs().total_cmp(&(self.times[b] - t).abs()))
            .unwrap_or(0);
        track.right_mass[k]
    }
}

/// Run the double-well experiment: Langevin with `rng`'s stream first, then WFR continuing the same
/// stream, both from one initial cloud.
pub fn teleport_experiment(cfg: &TeleportConfig, rng: &mut Rng) -> Result<TeleportResult> {
    if cfg.particles < 2 {
        return Err(Error::param("particles", cfg.particles, "need at least 2"));
    }
    if cfg.record_every == 0 {
        return Err(Error::param("record every", 0, "must be >= 1"));
    }
    let tilt = crate::energy::DoubleWell::tilt_for_right_mass(cfg.barrier, cfg.epsilon, cfg.true_right_mass)?;
    let target = crate::energy::DoubleWell::new(1, cfg.barrier, tilt, cfg.epsilon)?;
    let x0 = target.sample_wells(cfg.particles, cfg.start_left_fraction, rng)?;
    let lang = WfrSampler::new(WfrConfig::langevin(cfg.dt, cfg.time, false))?;
    let wfr = WfrSampler::new(WfrConfig::wfr(cfg.dt, cfg.time, cfg.lambda, Kde::fixed(cfg.bandwidth)))?;
    let mut times = Vec::new();
    let mut tracks = Vec::new();
    for (k, sampler) in [lang, wfr].iter().enumerate() {
        let mut masses = Vec::new();
        let mut resamplings = 0;
        let run = sampler.run(&target, x0.clone(), rng, &mut |v: &StepView| {
            if v.info.resampled {
                resamplings += 1;
            }
            if v.info.step % cfg.record_every == 0 {
                if k == 0 {
                    times.push(v.info.t);
                }
                masses.push(right_mass(v.x, 1, &v.weights.normalized()));
            }
        })?;
        let w = run.weights.normalized();
        tracks.push(TeleportTrack { right_mass: masses, x: run.x, w, resamplings });
    }
    let wfr_track = tracks.pop().expect("two tracks");
    let lang_track = tracks.pop().expect("two tracks");
    Ok(TeleportResult { target, times, langevin: lang_track, wfr: wfr_track })
}

// ---------------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------------

/// Weighted histogram as a density (mass per unit length) on `bins` equal bins of `[lo, hi]`.
pub fn weighted_histogram(x: &[f64], w: &[f64], lo: f64, hi: f64, bins: usize) -> (Vec<f64>, Vec<f64>) {
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|k| lo + k as f64 * width).collect();
    let mut h = vec![0.0; bins];
    for (xi, wi) in x.iter().zip(w) {
        let k = ((xi - lo) / width).floor();
        if k >= 0.0 && (k as usize) < bins {
            h[k as usize] += wi / width;
        }
    }
    (edges, h)
}

/// The exact density of a tabulated 1-D marginal at points `xs` (by finite differences of its CDF).
fn density_curve(m: &crate::energy::Density1d, xs: &[f64]) -> Vec<f64> {
    let e = 1e-3;
    xs.iter().map(|&x| (m.cdf(x + e) - m.cdf(x - e)) / (2.0 * e)).collect()
}

/// The double-well experiment figure: right-well mass against time for Langevin and WFR with the true
/// value dashed, and both final weighted histograms against the exact density (quadrature).
pub fn plot_teleport(res: &TeleportResult, cfg: &TeleportConfig, path: &std::path::Path) -> Result<()> {
    use crate::plot::{Canvas, BLACK, PALETTE};
    let mut c = Canvas::new(1260, 440);
    let truth = res.target.right_mass();
    let t_end = res.times.last().copied().unwrap_or(1.0);
    let p = c.panel((70, 60, 450, 380), (0.0, t_end), (0.0, 1.0), "right-well mass P(x>0)", "time tau", "mass");
    p.hline(&mut c, truth, BLACK, true);
    p.line(&mut c, &res.times, &res.langevin.right_mass, PALETTE[0], 2);
    p.line(&mut c, &res.times, &res.wfr.right_mass, PALETTE[1], 2);
    p.legend(&mut c, &[("Langevin (ULA)", PALETTE[0]), ("WFR lambda=1", PALETTE[1]), ("truth (dashed)", BLACK)]);
    let (lo, hi) = (-1.8, 1.8);
    let xs: Vec<f64> = (0..=360).map(|k| lo + (hi - lo) * k as f64 / 360.0).collect();
    let dens = density_curve(res.target.marginal(), &xs);
    let top = dens.iter().copied().fold(0.0, f64::max) * 1.35;
    for (k, (name, track)) in [("Langevin", &res.langevin), ("WFR", &res.wfr)].iter().enumerate() {
        let x0 = 530 + k as u32 * 370;
        let title = format!("{name} at tau={t_end}: weighted histogram vs exact");
        let p = c.panel((x0, 60, x0 + 320, 380), (lo, hi), (0.0, top), &title, "x", "density");
        let (edges, h) = weighted_histogram(&track.x, &track.w, lo, hi, 72);
        p.bars(&mut c, &edges, &h, PALETTE[k]);
        p.line(&mut c, &xs, &dens, BLACK, 2);
    }
    let caption = format!(
        "tilted double well U = [4h(x^4/4 - x^2/2) + c x]/eps, h = {}, eps = {}, c = {:.4}: barrier {:.1} (units of U), pi(x>0) = {:.3}, start {:.0}/{:.0} in the wells, N = {}, dt = {}",
        cfg.barrier,
        cfg.epsilon,
        res.target.tilt(),
        cfg.barrier / cfg.epsilon,
        truth,
        100.0 * cfg.start_left_fraction,
        100.0 * (1.0 - cfg.start_left_fraction),
        cfg.particles,
        cfg.dt
    );
    c.text(20, 412, &caption, BLACK);
    c.save_png(path)
}

/// A picture of final samples: in 1-D a weighted histogram (with the exact density when `exact` is given),
/// in d ≥ 2 a scatter of the first two coordinates of a weighted resample (at most 4000 points).
pub fn plot_samples(
    path: &std::path::Path,
    x: &[f64],
    d: usize,
    w: &[f64],
    exact: Option<&crate::energy::Density1d>,
    title: &str,
) -> Result<()> {
    use crate::plot::{Canvas, BLACK, PALETTE};
    let n = w.len();
    let mut c = Canvas::new(640, 520);
    let span = |k: usize| {
        let mut v: Vec<f64> = (0..n).map(|i| x[i * d + k]).filter(|v| v.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let (a, b) = (v[(v.len() as f64 * 0.001) as usize], v[((v.len() as f64 * 0.999) as usize).min(v.len() - 1)]);
        let pad = 0.1 * (b - a).max(1e-6);
        (a - pad, b + pad)
    };
    if n == 0 {
        return Err(Error::param("samples", 0, "nothing to plot"));
    }
    if d == 1 {
        let (lo, hi) = span(0);
        let (edges, h) = weighted_histogram(x, w, lo, hi, 80);
        let xs: Vec<f64> = (0..=400).map(|k| lo + (hi - lo) * k as f64 / 400.0).collect();
        let dens = exact.map(|m| density_curve(m, &xs));
        let top = h.iter().chain(dens.iter().flatten()).copied().fold(0.0, f64::max) * 1.15;
        let p = c.panel((70, 50, 610, 460), (lo, hi), (0.0, top), title, "x", "density");
        p.bars(&mut c, &edges, &h, PALETTE[0]);
        if let Some(dd) = dens {
            p.line(&mut c, &xs, &dd, BLACK, 2);
            p.legend(&mut c, &[("samples (weighted)", PALETTE[0]), ("exact", BLACK)]);
        }
    } else {
        let m = n.min(4000);
        let idx = crate::particles::Resampler::Systematic.ancestors(w, m, &mut crate::rng::seeded(0));
        let xs: Vec<f64> = idx.iter().map(|&i| x[i * d]).collect();
        let ys: Vec<f64> = idx.iter().map(|&i| x[i * d + 1]).collect();
        let p = c.panel((70, 50, 610, 460), span(0), span(1), title, "x1", "x2");
        p.points(&mut c, &xs, &ys, PALETTE[0], 2);
    }
    c.save_png(path)
}
