//! What a run leaves behind: the weighted samples as safetensors, a JSON report (settings, per-step
//! ESS / resampling / ancestors / log Ẑ, timing and throughput) and a picture of a weighted resample.
//! Every file is written atomically.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::Result;
use crate::io::{write_json, write_safetensors, F32Tensor};
use crate::plot::{Canvas, PALETTE};
use crate::rng::Rng;
use crate::sampler::SampleRun;

/// Write `samples` [N, ...shape] and normalised `log_weights` [N] (F32), plus string metadata.
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
