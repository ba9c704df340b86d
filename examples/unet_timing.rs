//! Forward / input-gradient / training-step cost of the U-Net on this machine.
//! `cargo run --release --example unet_timing -- [C0,C1,...] [BATCH]`
use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Tensor, Var};
use wfrmix::nets::{NetInfo, ScoreUnet, UnetConfig};
use wfrmix::{rng, ScoreModel};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let channels: Vec<usize> = args.get(1).map(|s| s.split(',').map(|c| c.parse().unwrap()).collect()).unwrap_or(vec![16, 32, 32]);
    let batch: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(64);
    let cfg = UnetConfig { channels, ..UnetConfig::default() };
    let info = NetInfo { data_shape: vec![1, 28, 28], schedule: Default::default(), trained_on: "none".into(), recipe: None, name: "t".into() };
    let net = ScoreUnet::init(cfg.clone(), info, &mut rng::seeded(0))?;
    println!("channels {:?}: {} parameters, batch {batch}", cfg.channels, cfg.parameters(&[1, 28, 28]));
    let d = 784;
    let mut x = vec![0.0; batch * d];
    rng::fill_normal(&mut rng::seeded(1), &mut x);
    let mut out = vec![0.0; batch * d];
    let reps = 3;
    net.score(&x, 0.5, &mut out)?;
    let t0 = Instant::now();
    for _ in 0..reps {
        net.score(&x, 0.5, &mut out)?;
    }
    let fwd = t0.elapsed().as_secs_f64() / reps as f64;
    let v = x.clone();
    let t0 = Instant::now();
    for _ in 0..reps {
        net.vjp(&x, 0.5, &v, &mut out)?;
    }
    let vjp = t0.elapsed().as_secs_f64() / reps as f64;
    // A training step: forward + backward with every parameter a variable.
    let vars: Vec<(String, Var)> = net.to_f32().into_iter().map(|(n, s, v)| (n, Var::from_tensor(&Tensor::from_vec(v, s, &candle_core::Device::Cpu).unwrap()).unwrap())).collect();
    let params: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    let g = wfrmix::nets::UnetGraph { cfg: &cfg, params: &params };
    let xt = Tensor::from_vec(x.iter().map(|&a| a as f32).collect::<Vec<f32>>(), (batch, 1, 28, 28), &candle_core::Device::Cpu)?;
    let et = Tensor::ones((batch, 32), candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let t0 = Instant::now();
    for _ in 0..reps {
        let loss = (g.forward(&xt, &et)? - &xt)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        for (_, v) in &vars {
            grads.get(v.as_tensor()).unwrap();
        }
    }
    let train = t0.elapsed().as_secs_f64() / reps as f64;
    println!("forward {:.1} ms, input VJP {:.1} ms ({:.1}x), training step {:.1} ms ({:.1}x)", 1e3 * fwd, 1e3 * vjp, vjp / fwd, 1e3 * train, train / fwd);
    Ok(())
}
