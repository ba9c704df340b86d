//! Figures of the energy samplers: the double-well experiment and final-sample pictures.

use crate::error::{Error, Result};
use crate::wfr::experiment::{TeleportConfig, TeleportResult};
use crate::wfr::stats::weighted_histogram;

/// The exact density of a tabulated 1-D marginal at points `xs` (by finite differences of its CDF).
fn density_curve(m: &crate::wfr::energy::Density1d, xs: &[f64]) -> Vec<f64> {
    let e = 1e-3;
    xs.iter().map(|&x| (m.cdf(x + e) - m.cdf(x - e)) / (2.0 * e)).collect()
}

/// The double-well experiment figure: right-well mass against time for Langevin and WFR with the true
/// value dashed, and both final weighted histograms against the exact density (quadrature).
pub fn plot_teleport(res: &TeleportResult, cfg: &TeleportConfig, path: &std::path::Path) -> Result<()> {
    use crate::report::plot::{Canvas, BLACK, PALETTE};
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
    exact: Option<&crate::wfr::energy::Density1d>,
    title: &str,
) -> Result<()> {
    use crate::report::plot::{Canvas, BLACK, PALETTE};
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
