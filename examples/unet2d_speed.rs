//! Forward and VJP cost of diffusers' `UNet2DModel` on this machine: the CPU kernels (`Unet2dCpu`)
//! against the candle network (forward), as seconds per batch, GFLOP/s and the fraction of the cores' f32 peak: measured
//! here by an FMA loop in the CPU's widest vectors on every thread (`shared/peak.rs`), or `PEAK` (GFLOP/s) if set. Random weights; the configuration is the
//! diffusers course's MNIST model (`mnist`, 1.7 M parameters), DDPM-CIFAR-10's (`cifar`, 35.7 M) or a
//! `config.json` path. Threads: rayon's pool (RAYON_NUM_THREADS).
//!
//! Times are the fastest of REPS calls.
//!
//! cargo run --release --example unet2d_speed -- [mnist|cifar|DIR|CONFIG.json] [BATCH] [REPS] [candle|nocandle|fwd]  (fwd: the forward only, for profiles)

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrmix::nets::diffusers::{Unet2d, Unet2dConfig};
use wfrmix::nets::unet2d_cpu::Unet2dCpu;
use wfrmix::rng;

#[path = "shared/peak.rs"]
mod peak;

const MNIST: &str = r#"{"sample_size": 28, "in_channels": 1, "out_channels": 1, "layers_per_block": 2,
  "block_out_channels": [32, 64, 64], "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
  "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}"#;
const CIFAR: &str = r#"{"sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
  "block_out_channels": [128, 256, 256, 256], "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": null,
  "norm_eps": 1e-6, "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1}"#;

/// The fastest of `reps` timed calls (after the caller's warm-up): this machine's neighbours make
/// single times noisy, and the minimum is the least disturbed.
fn fastest(reps: usize, mut f: impl FnMut() -> wfrmix::Result<()>) -> wfrmix::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        f()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> anyhow::Result<()> {
    // As the binaries do (src/bin/common): keep freed memory in the process.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets allocator parameters before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("mnist");
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let reps: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let mode = args.get(4).map(String::as_str).unwrap_or("candle");
    let with_candle = mode == "candle";
    let (peak, isa) = match std::env::var("PEAK").ok().and_then(|s| s.parse().ok()) {
        Some(p) => (p, "PEAK"),
        None => peak::measured(),
    };
    let dir = Path::new(which).is_dir().then(|| Path::new(which).to_path_buf());
    let text = match (which, &dir) {
        ("mnist", _) => MNIST.to_string(),
        ("cifar", _) => CIFAR.to_string(),
        (_, Some(d)) => std::fs::read_to_string(d.join("config.json"))?,
        (path, None) => std::fs::read_to_string(path)?,
    };
    let cfg = Unet2dConfig::from_json(Path::new(which), &text)?;
    let (h, w) = cfg.sample_hw().expect("sample_size");
    let c = cfg.in_channels;
    let vm = VarMap::new();
    // A checkpoint directory (e.g. one benches/torch/unet2d_speed.py saved): its weights; else random.
    let net = match &dir {
        Some(d) => Unet2d::load(cfg, &d.join("diffusion_pytorch_model.safetensors"), &Device::Cpu)?,
        None => Unet2d::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?,
    };
    let mut params: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    let cpu = Unet2dCpu::new(&net, h, w)?;
    if dir.is_some() {
        params = cpu.parameter_sizes().iter().sum();
    }
    let flops = cpu.flops() as f64;
    let d = c * h * w;
    let mut x64 = vec![0.0; batch * d];
    rng::fill_normal(&mut rng::seeded(1), &mut x64);
    let x: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
    let t: Vec<f32> = (0..batch).map(|i| (i * 997 % 1000) as f32).collect();
    println!("{which}: {params} parameters, {:.3} GFLOP per image, batch {batch}, {} threads, peak {peak:.0} GFLOP/s ({isa})", flops / 1e9, rayon::current_num_threads());
    let mut out = vec![0.0f32; batch * d];
    cpu.forward(&x, &t, None, &mut out)?;
    let s = fastest(reps, || cpu.forward(&x, &t, None, &mut out))?;
    let rate = flops * batch as f64 / s / 1e9;
    println!("cpu kernels: {s:.3} s per batch, {rate:.1} GFLOP/s, {:.0}% of peak", 100.0 * rate / peak);
    if mode == "fwd" {
        return Ok(());
    }
    let mut g = vec![0.0f32; batch * d];
    let v: Vec<f32> = x.iter().rev().copied().collect();
    cpu.vjp(&x, &t, None, &v, &mut g)?;
    let sv = fastest(reps, || cpu.vjp(&x, &t, None, &v, &mut g))?;
    println!("cpu kernels VJP (forward + input gradient): {sv:.3} s per batch, {:.2} forwards", sv / s);
    if with_candle {
        let xt = Tensor::from_vec(x.clone(), (batch, c, h, w), &Device::Cpu)?;
        let mut got = net.forward(&xt, &t, None)?;
        let s2 = fastest(reps, || {
            got = net.forward(&xt, &t, None)?;
            Ok(())
        })?;
        let got: Vec<f32> = got.flatten_all()?.to_vec1()?;
        let diff = got.iter().zip(&out).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let scale = got.iter().fold(0.0f32, |m, a| m.max(a.abs()));
        println!("candle:      {s2:.3} s per batch, {:.1} GFLOP/s ({:.2}x the cpu kernels' time); max |candle − cpu| {diff:.2e} of max |out| {scale:.2}", flops * batch as f64 / s2 / 1e9, s2 / s);
    }
    Ok(())
}
