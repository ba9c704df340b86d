//! Writes the exact Gaussian-mixture expert files shipped in `weights/` (the ground-truth experts the
//! README's first command composes), using the library API.
//!
//! cargo run --release --example gmm_experts -- weights

use std::path::PathBuf;

use wfrmix::{GaussianMixture, VpSchedule};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "weights".into()));
    std::fs::create_dir_all(&dir)?;
    let s = VpSchedule::default();
    // "up": two modes at y = +2; "down": three modes at y = −2 (maths §4b's measured case).
    let up = GaussianMixture::new(vec![-2.0, 2.0, 2.0, 2.0], vec![0.5; 4], vec![1.0, 1.0], 2, s.clone())?.with_name("gmm2d_up");
    let down = GaussianMixture::new(vec![-3.0, -2.0, 0.0, -2.0, 3.0, -2.0], vec![0.4; 6], vec![1.0; 3], 2, s.clone())?.with_name("gmm2d_down");
    // Two overlapping experts for products and geometric mixtures: they share the mode at (0, 0).
    let left = GaussianMixture::new(vec![-2.5, 0.0, 0.0, 0.0], vec![0.6; 4], vec![1.0, 1.0], 2, s.clone())?.with_name("gmm2d_left");
    let right = GaussianMixture::new(vec![0.0, 0.0, 2.5, 0.0], vec![0.6; 4], vec![1.0, 1.0], 2, s)?.with_name("gmm2d_right");
    for (m, file) in [(&up, "gmm2d_up"), (&down, "gmm2d_down"), (&left, "gmm2d_left"), (&right, "gmm2d_right")] {
        let path = dir.join(format!("{file}.safetensors"));
        m.save(&path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
