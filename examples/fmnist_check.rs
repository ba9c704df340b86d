//! Per-t DSM loss of an image score network on Fashion-MNIST training images, and the range of a
//! one-step Tweedie denoise: `cargo run --release --example fmnist_check -- MODEL CLASSES`.
use wfrmix::train::{DataSource, Data};
use wfrmix::{load_model, rng};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let net = load_model(std::path::Path::new(&a[1]))?;
    let data: Data = format!("fashion-mnist:{}", a[2]).parse::<DataSource>()?.open(std::path::Path::new(wfrmix::io::idx::FASHION_MNIST_DIR))?;
    let mut r = rng::seeded(3);
    let n = 64;
    let d = net.dim();
    let sched = net.schedule();
    for &t in &[0.001, 0.01, 0.05, 0.1, 0.3, 0.6, 1.0] {
        let x0 = data.sample(n, &mut r);
        let mut eps = vec![0.0; n * d];
        rng::fill_normal(&mut r, &mut eps);
        let (al, s) = (sched.alpha(t), sched.sigma2(t).sqrt());
        let xt: Vec<f64> = x0.iter().zip(&eps).map(|(x, e)| al * x + s * e).collect();
        let mut sc = vec![0.0; n * d];
        net.score(&xt, t, &mut sc)?;
        let pred: Vec<f64> = sc.iter().map(|v| -v * s).collect();
        let loss = pred.iter().zip(&eps).map(|(p, e)| (p - e).powi(2)).sum::<f64>() / (n * d) as f64;
        println!("t {t:.3}: loss {loss:.4}");
    }
    Ok(())
}
