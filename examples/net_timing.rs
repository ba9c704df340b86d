//! Timings behind docs/nets.md: the MLP's f64 inference path (score and VJP) against candle (forward,
//! and the input gradient by candle's backward), and DSM training steps per second. Thread counts come
//! from the environment (CANDLE_NUM_THREADS for candle's element-wise pool, RAYON_NUM_THREADS for its
//! matmuls), so run it under several settings:
//!
//! CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 cargo run --release --example net_timing
//! CANDLE_NUM_THREADS=2 RAYON_NUM_THREADS=2 cargo run --release --example net_timing

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use wfrmix::nets::{CandleMlp, ScoreMlp};
use wfrmix::train::{Recipe, Trainer};
use wfrmix::ScoreModel;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut reps = 1;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        let s = t.elapsed().as_secs_f64();
        if s > 0.5 {
            return s / reps as f64;
        }
        reps *= 2;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = ScoreMlp::load(Path::new("weights/mlp2d_up.safetensors"))?;
    let cfg = net.config();
    let d = net.dim();
    println!(
        "CANDLE_NUM_THREADS={:?} RAYON_NUM_THREADS={:?}; net {:?} ({} parameters)",
        std::env::var("CANDLE_NUM_THREADS").ok(),
        std::env::var("RAYON_NUM_THREADS").ok(),
        cfg,
        cfg.parameters(d)
    );
    let t = 0.3;
    for n in [256usize, 4000] {
        let mut x = vec![0.0; n * d];
        wfrmix::rng::fill_normal(&mut wfrmix::rng::seeded(1), &mut x);
        let v = x.clone();
        let mut out = vec![0.0; n * d];
        let fwd = time(|| net.score(&x, t, &mut out).unwrap());
        let vjp = time(|| net.vjp(&x, t, &v, &mut out).unwrap());
        // candle: the same network in f32.
        let dev = Device::Cpu;
        let cm = CandleMlp::new(&net, &dev)?;
        let mut e = vec![0.0; cfg.time_features()];
        cfg.embed(&cfg.freqs(), t, &mut e);
        let input: Vec<f32> = x.chunks(d).flat_map(|r| r.iter().chain(e.iter()).map(|&a| a as f32).collect::<Vec<_>>()).collect();
        let xin = Var::from_tensor(&Tensor::from_vec(input, (n, d + e.len()), &dev)?)?;
        let vt = Tensor::from_vec(v.iter().map(|&a| a as f32).collect::<Vec<_>>(), (n, d), &dev)?;
        let cfwd = time(|| {
            cm.forward(xin.as_tensor()).unwrap();
        });
        let cvjp = time(|| {
            let y = cm.forward(xin.as_tensor()).unwrap();
            let g = (y * &vt).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(xin.as_tensor()).unwrap();
        });
        println!(
            "batch {n:5}: f64 path score {:8.1} µs, vjp {:8.1} µs ({:.2}x);  candle f32 forward {:8.1} µs, input gradient by backward {:8.1} µs ({:.2}x)",
            fwd * 1e6,
            vjp * 1e6,
            vjp / fwd,
            cfwd * 1e6,
            cvjp * 1e6,
            cvjp / cfwd
        );
    }
    let mut recipe = Recipe::load(Path::new("models/mlp2d_up.json"))?;
    recipe.steps = 1000;
    let mut tr = Trainer::new(recipe)?;
    let s = Instant::now();
    for _ in 0..1000 {
        tr.step()?;
    }
    println!("training (batch 512): {:.0} steps/s", 1000.0 / s.elapsed().as_secs_f64());
    Ok(())
}
