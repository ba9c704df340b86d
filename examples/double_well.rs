//! The double-well teleportation experiment (maths §7): a tilted double well with a barrier of 6 in
//! units of U holds 80% of its mass in the right-hand well; 16384 particles start with 90% in the left
//! well. Plain Langevin has to cross the barrier (Kramers rate ≈ e^{−6}); WFR moves mass between the
//! wells through its birth–death weights at a rate that does not depend on the barrier.
//!
//!     cargo run --release --example double_well -- [FIGURE.png] [REPORT.json] [SEED]
//!
//! Defaults: docs/double_well.png, no report, seed 2026.

use std::path::PathBuf;

use anyhow::Context;
use wfrmix::report::wfr::plot_teleport;
use wfrmix::wfr::{teleport_experiment, TeleportConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let png = PathBuf::from(args.first().map_or("docs/double_well.png", String::as_str));
    let report = args.get(1).map(PathBuf::from);
    let seed: u64 = match args.get(2) {
        Some(s) => s.parse().with_context(|| format!("seed `{s}` is not a non-negative integer"))?,
        None => 2026,
    };
    wfrmix::io::check_writable(&png)?;
    if let Some(r) = &report {
        wfrmix::io::check_writable(r)?;
    }
    let cfg = TeleportConfig::default();
    let t0 = std::time::Instant::now();
    let res = teleport_experiment(&cfg, &mut wfrmix::rng::seeded(seed))?;
    let secs = t0.elapsed().as_secs_f64();
    let truth = res.target.right_mass();
    println!("{}", wfrmix::wfr::energy::Energy::describe(&res.target));
    println!("true right-well mass {truth:.4}; start {:.2}; N = {}, dt = {}, seed {seed}", 1.0 - cfg.start_left_fraction, cfg.particles, cfg.dt);
    println!("{:>6} {:>10} {:>10}", "tau", "Langevin", "WFR");
    let mut rows = Vec::new();
    for t in [0.0, 0.5, 1.0, 2.0, 4.0, 8.0] {
        if t <= cfg.time + 1e-9 {
            let (l, w) = (res.mass_at(&res.langevin, t), res.mass_at(&res.wfr, t));
            println!("{t:>6.1} {l:>10.4} {w:>10.4}");
            rows.push(serde_json::json!({"tau": t, "langevin": l, "wfr": w}));
        }
    }
    println!("resamplings (WFR): {}; wall time {secs:.1} s", res.wfr.resamplings);
    plot_teleport(&res, &cfg, &png)?;
    println!("wrote {}", png.display());
    if let Some(r) = report {
        let v = serde_json::json!({
            "config": cfg, "seed": seed, "tilt": res.target.tilt(), "true_right_mass": truth,
            "right_mass": rows, "wfr_resamplings": res.wfr.resamplings, "wall_seconds": secs,
            "times": res.times, "langevin_trace": res.langevin.right_mass, "wfr_trace": res.wfr.right_mass,
        });
        wfrmix::io::write_json(&r, &v)?;
        println!("wrote {}", r.display());
    }
    Ok(())
}
