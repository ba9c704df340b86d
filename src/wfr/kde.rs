//! Weighted Gaussian kernel density estimates of the particles' own density (maths §7): exact O(N²·d),
//! and binned (linear binning + separable convolution) in d = 1 and 2.

#![allow(clippy::needless_range_loop)] // index loops over row-major [n, d] buffers read clearer here

use rayon::prelude::*;

use crate::error::{Error, Result};

/// How the KDE bandwidth h is chosen.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Bandwidth {
    /// A fixed h > 0. Recommended for multimodal targets: take h below the width of one mode
    /// (maths §9.2 uses h = 0.1 for modes of std ≈ 0.16).
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

/// Weighted Gaussian KDE `ρ̂(x) = Σ_j W_j N(x; X_j, h² I)` (self term included; maths §9.2 option 1).
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
/// O(N²·d), parallel over i; each row's exponents go to a buffer and their LSE is taken in bulk
/// ([`crate::particles::lse_and_ess`]: fixed order, so deterministic).
pub fn log_kde_exact(x: &[f64], d: usize, w: &[f64], h: f64, out: &mut [f64]) {
    let logw: Vec<f64> = w.iter().map(|&v| crate::lanes::ln(v)).collect();
    let c = -0.5 * d as f64 * (2.0 * std::f64::consts::PI * h * h).ln();
    let inv = 1.0 / (2.0 * h * h);
    let n = logw.len();
    out.par_iter_mut().enumerate().for_each_init(
        || vec![0.0; n],
        |v, (i, o)| {
            let xi = &x[i * d..(i + 1) * d];
            for (j, (vj, lw)) in v.iter_mut().zip(&logw).enumerate() {
                *vj = lw - crate::lanes::dist2(xi, &x[j * d..(j + 1) * d]) * inv;
            }
            *o = crate::particles::lse_and_ess(v).0 + c;
        },
    );
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
            norm * crate::lanes::exp(-u * u / (2.0 * h * h))
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
    let grid = Grid { axes, delta, radius, taps };
    if d == 1 {
        binned_1d(x, w, &grid, out);
    } else {
        binned_2d(x, w, &grid, out);
    }
    Ok(())
}

/// The binned KDE's grid: per-axis origin and cell count, the cell width, the kernel's radius in cells
/// and its taps.
struct Grid {
    axes: Vec<Axis>,
    delta: f64,
    radius: usize,
    taps: Vec<f64>,
}

impl Grid {
    /// Cell index and fractional offset of particle i's coordinate c (x is n × d).
    fn pos(&self, x: &[f64], d: usize, i: usize, c: usize) -> (usize, f64) {
        let t = (x[i * d + c] - self.axes[c].origin) / self.delta;
        let k = t.floor();
        (k as usize, t - k)
    }
}

/// d = 1: linear binning, the convolution with the kernel's taps, and linear interpolation back.
fn binned_1d(x: &[f64], w: &[f64], gr: &Grid, out: &mut [f64]) {
    let (n, radius, taps) = (w.len(), gr.radius, &gr.taps);
    let pos = |i: usize, c: usize| gr.pos(x, 1, i, c);
    let g = gr.axes[0].cells;
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
        *o = crate::lanes::ln(v.max(1e-300));
    });
}

/// d = 2: bilinear binning, the separable convolution (rows, then columns through a transpose), and
/// bilinear interpolation back.
fn binned_2d(x: &[f64], w: &[f64], gr: &Grid, out: &mut [f64]) {
    let (n, radius, taps) = (w.len(), gr.radius, &gr.taps);
    let pos = |i: usize, c: usize| gr.pos(x, 2, i, c);
    let (gx, gy) = (gr.axes[0].cells, gr.axes[1].cells);
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
    tmp.par_chunks_mut(gx).zip(grid.par_chunks(gx)).for_each(|(dst, src)| convolve_line(src, taps, radius, dst));
    let mut tr = vec![0.0; gx * gy]; // [gx][gy]
    for ky in 0..gy {
        for kx in 0..gx {
            tr[kx * gy + ky] = tmp[ky * gx + kx];
        }
    }
    let mut dens = vec![0.0; gx * gy]; // [gx][gy]
    dens.par_chunks_mut(gy).zip(tr.par_chunks(gy)).for_each(|(dst, src)| convolve_line(src, taps, radius, dst));
    out.par_iter_mut().enumerate().for_each(|(i, o)| {
        let (kx, fx) = pos(i, 0);
        let (ky, fy) = pos(i, 1);
        let at = |a: usize, b: usize| dens[a * gy + b];
        let v = at(kx, ky) * (1.0 - fx) * (1.0 - fy)
            + at(kx + 1, ky) * fx * (1.0 - fy)
            + at(kx, ky + 1) * (1.0 - fx) * fy
            + at(kx + 1, ky + 1) * fx * fy;
        *o = crate::lanes::ln(v.max(1e-300));
    });
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

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

