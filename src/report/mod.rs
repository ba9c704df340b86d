//! What a run leaves behind: the weighted samples as safetensors, a JSON report (settings, per-step
//! ESS / resampling / ancestors / log Ẑ, timing and throughput) and a picture of a weighted resample.
//! Every file is written atomically.
//!
//! Rooms: [`plot`] (a small PNG canvas), [`metrics`] (sample-quality measures), [`classes`] (class
//! fractions by the classifier), [`wfr`] (figures of the energy samplers).

#[cfg(feature = "nets")]
pub mod classes;
pub mod metrics;
pub mod plot;
pub mod wfr;

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::Result;
use crate::io::{write_json, write_safetensors, F32Tensor};
use plot::{Canvas, PALETTE};
use crate::rng::Rng;
use crate::diffusion::SampleRun;

/// Write `samples` `[N, ...shape]` and normalised `log_weights` `[N]` (F32), plus string metadata.
pub fn save_samples(path: &Path, run: &SampleRun, metadata: &HashMap<String, String>) -> Result<()> {
    let samples: Vec<f32> = run.samples.iter().map(|&v| v as f32).collect();
    let log_w: Vec<f32> = run.log_weights.iter().map(|&v| v as f32).collect();
    let mut shape = vec![run.len()];
    shape.extend_from_slice(&run.shape);
    write_safetensors(
        path,
        &[F32Tensor { name: "samples", shape, data: &samples }, F32Tensor { name: "log_weights", shape: vec![run.len()], data: &log_w }],
        metadata,
    )
}

/// The report of a run: `settings` as given, then results, throughput and per-step diagnostics.
pub fn report(settings: Value, run: &SampleRun) -> Value {
    let n = run.len() as f64;
    let steps = run.steps.len() as f64;
    json!({
        "settings": settings,
        "result": {
            "particles": run.len(),
            "shape": run.shape,
            "log_z": run.log_z,
            "final_ess": run.final_ess,
            "final_ess_fraction": run.final_ess / n,
            "resamples": run.resamples,
            "lineages": run.lineages,
            "min_ess_fraction": run.steps.iter().map(|s| s.ess / n).fold(1.0, f64::min),
        },
        "timing": {
            "wall_seconds": run.wall_seconds,
            "particle_steps_per_second": n * steps / run.wall_seconds.max(1e-12),
            "score_evaluations": run.score_evals,
            "score_evaluations_per_second": run.score_evals as f64 / run.wall_seconds.max(1e-12),
            "threads": rayon::current_num_threads(),
        },
        "steps": {
            "t": run.steps.iter().map(|s| s.t).collect::<Vec<_>>(),
            "ess": run.steps.iter().map(|s| s.ess).collect::<Vec<_>>(),
            "resampled": run.steps.iter().map(|s| s.resampled).collect::<Vec<_>>(),
            "unique_ancestors": run.steps.iter().map(|s| s.unique_ancestors).collect::<Vec<_>>(),
            "log_z_increment": run.steps.iter().map(|s| s.log_z_increment).collect::<Vec<_>>(),
            "gamma": run.steps.iter().map(|s| s.gamma).collect::<Vec<_>>(),
            "move_accept": run.steps.iter().map(|s| s.move_accept).collect::<Vec<_>>(),
            "move_step": run.steps.iter().map(|s| s.move_step).collect::<Vec<_>>(),
        },
    })
}

/// Write [`report`] as JSON.
pub fn save_report(path: &Path, settings: Value, run: &SampleRun) -> Result<()> {
    write_json(path, &report(settings, run))
}

/// A scatter plot of the first two coordinates of a weighted resample of the particles (a histogram
/// for 1-D data), with an ESS trace underneath.
pub fn save_scatter(path: &Path, run: &SampleRun, title: &str, rng: &mut Rng) -> Result<()> {
    let d = run.dim();
    let pts = run.resampled(run.len(), rng);
    let (w, h) = (640u32, 760u32);
    let mut c = Canvas::new(w, h);
    let xs: Vec<f64> = pts.iter().step_by(d).copied().collect();
    let range = |v: &[f64]| {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return (-1.0, 1.0);
        }
        let (lo, hi) = (s[s.len() / 500], s[s.len() - 1 - s.len() / 500]);
        let pad = 0.08 * (hi - lo).max(1e-9);
        (lo - pad, hi + pad)
    };
    let rect = (70, 40, w - 30, 560);
    if d >= 2 {
        let ys: Vec<f64> = pts.iter().skip(1).step_by(d).copied().collect();
        let (xr, yr) = (range(&xs), range(&ys));
        // Equal scales on both axes, so shapes are not distorted.
        let span = (xr.1 - xr.0).max(yr.1 - yr.0) / 2.0;
        let (cx, cy) = ((xr.0 + xr.1) / 2.0, (yr.0 + yr.1) / 2.0);
        let sx = span * (rect.2 - rect.0) as f64 / (rect.3 - rect.1) as f64;
        let p = c.panel(rect, (cx - sx, cx + sx), (cy - span, cy + span), title, "x[0]", "x[1]");
        p.points(&mut c, &xs, &ys, PALETTE[0], 2);
    } else {
        let xr = range(&xs);
        let bins = 80;
        let width = (xr.1 - xr.0) / bins as f64;
        let mut counts = vec![0.0; bins];
        for &x in &xs {
            let b = ((x - xr.0) / width).floor();
            if b >= 0.0 && (b as usize) < bins {
                counts[b as usize] += 1.0 / (xs.len() as f64 * width);
            }
        }
        let edges: Vec<f64> = (0..=bins).map(|i| xr.0 + i as f64 * width).collect();
        let top = counts.iter().copied().fold(0.0, f64::max) * 1.1;
        let p = c.panel(rect, xr, (0.0, top.max(1e-9)), title, "x", "density");
        p.bars(&mut c, &edges, &counts, PALETTE[0]);
    }
    // ESS trace against step.
    let n = run.len() as f64;
    let steps: Vec<f64> = run.steps.iter().map(|s| s.step as f64).collect();
    let ess: Vec<f64> = run.steps.iter().map(|s| s.ess / n).collect();
    let p = c.panel((70, 620, w - 30, h - 40), (0.0, steps.len().max(1) as f64), (0.0, 1.05), "", "step", "ESS / N");
    p.line(&mut c, &steps, &ess, PALETTE[1], 1);
    let marks: Vec<f64> = run.steps.iter().filter(|s| s.resampled).map(|s| s.step as f64).collect();
    p.points(&mut c, &marks, &vec![0.02; marks.len()], PALETTE[3], 2);
    p.legend(&mut c, &[("ESS / N", PALETTE[1]), ("resampled", PALETTE[3])]);
    c.save_png(path)
}

/// A labelled grid of a weighted resample of image samples (shape `[channels, height, width]`, values in
/// [−1, 1]; the first channel is shown in grey), each pixel drawn as `scale × scale`. `labels`, when
/// given, are written under the images in order (e.g. a classifier's verdicts).
#[allow(clippy::too_many_arguments)]
pub fn save_image_grid(path: &Path, images: &[f64], shape: &[usize], rows: usize, cols: usize, scale: u32, title: &str, labels: Option<&[String]>) -> Result<()> {
    check_grid(shape, (rows, cols), scale)?;
    let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let per = shape.iter().product::<usize>();
    let n = (images.len() / per.max(1)).min(rows * cols);
    let label_h = if labels.is_some() { 12 } else { 0 };
    let (cw, ch) = (w as u32 * scale + 6, h as u32 * scale + 6 + label_h);
    let mut c = Canvas::new(cols as u32 * cw + 10, rows as u32 * ch + 34);
    c.text(8, 8, title, crate::report::plot::BLACK);
    for i in 0..n {
        let (r, k) = (i / cols, i % cols);
        let (x0, y0) = (5 + (k as u32 * cw) as i64 + 3, 26 + (r as u32 * ch) as i64 + 3);
        let px: Vec<f32> = images[i * per..i * per + h * w].iter().map(|&v| ((v + 1.0) / 2.0) as f32).collect();
        c.gray_image(x0, y0, w, h, &px, scale);
        if let Some(l) = labels.and_then(|l| l.get(i)) {
            let max_chars = (w as u32 * scale / 6) as usize;
            let s: String = l.chars().take(max_chars).collect();
            c.text(x0, y0 + (h as u32 * scale) as i64 + 2, &s, crate::report::plot::BLACK);
        }
    }
    c.save_png(path)
}

/// Check that an image grid of `grid` = rows × cols images of `shape` ([.., h, w]) at `scale` pixels
/// per value fits the stated limits (at most [`crate::limits::MAX_GRID_IMAGES`] images and
/// [`crate::limits::MAX_PICTURE_PIXELS`] pixels), before anything is sampled or drawn.
pub fn check_grid(shape: &[usize], grid: (usize, usize), scale: u32) -> Result<()> {
    use crate::limits::{MAX_GRID_IMAGES, MAX_PICTURE_PIXELS};
    let (rows, cols) = grid;
    let value = format!("{rows}x{cols}");
    if rows == 0 || cols == 0 || rows.checked_mul(cols).is_none_or(|m| m > MAX_GRID_IMAGES) {
        return Err(crate::error::Error::param("grid size", value, format!("need 1 to {MAX_GRID_IMAGES} images in all (e.g. 8x8)")));
    }
    if shape.len() < 2 {
        return Ok(());
    }
    let (h, w) = (shape[shape.len() - 2] as u64, shape[shape.len() - 1] as u64);
    let side = |n: usize, px: u64, pad: u64| px.checked_mul(scale as u64)?.checked_add(pad)?.checked_mul(n as u64)?.checked_add(34);
    let pixels = side(cols, w, 6).zip(side(rows, h, 18)).and_then(|(a, b)| a.checked_mul(b));
    match pixels {
        Some(p) if p <= MAX_PICTURE_PIXELS && p <= u32::MAX as u64 => Ok(()),
        _ => Err(crate::error::Error::param(
            "grid size",
            value,
            format!("a picture of {rows}x{cols} images of {h}x{w} pixels exceeds {MAX_PICTURE_PIXELS} pixels; use a smaller grid"),
        )),
    }
}

/// The picture for a run: an image grid (`grid` = rows × cols) for image-shaped samples
/// (`[c, h, w]`), otherwise the scatter plot of [`save_scatter`].
pub fn save_picture(path: &Path, run: &SampleRun, title: &str, grid: (usize, usize), labels: Option<&[String]>, rng: &mut Rng) -> Result<()> {
    if run.shape.len() == 3 {
        let m = (grid.0 * grid.1).min(run.len());
        let imgs = run.resampled(m, rng);
        save_image_grid(path, &imgs, &run.shape, grid.0, grid.1, 3, title, labels)
    } else {
        save_scatter(path, run, title, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_grid_has_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        let imgs: Vec<f64> = (0..6 * 4 * 5).map(|i| (i % 7) as f64 / 3.0 - 1.0).collect();
        let labels: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
        save_image_grid(&p, &imgs, &[1, 4, 5], 2, 3, 3, "t", Some(&labels)).unwrap();
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (3 * (5 * 3 + 6) + 10, 2 * (4 * 3 + 6 + 12) + 34));
    }
}
