//! Judge saved samples (`mix-sample --save-samples`) by each shipped classifier at once, with each
//! judge's ceiling on real test images of the same classes:
//! `cargo run --release --example judges -- CLASSES SAMPLES.safetensors...` (CLASSES e.g. `1,3,8`).
//! Prints, per file and judge: the fraction judged in CLASSES (by the particles' weights), each class's
//! fraction, and the Fréchet distance in the judge's features with its real-vs-real floor.
use std::path::Path;

use wfrmix::io::idx::{load_fashion_mnist, Split, FASHION_CLASSES, FASHION_MNIST_DIR};
use wfrmix::io::tensors::TensorFile;
use wfrmix::nets::classifier::{class_fractions, Classifier};
use wfrmix::report::classes::frechet_to_real_images;

const JUDGES: [&str; 2] = ["weights/fmnist_classifier.safetensors", "weights/fmnist_classifier_conv.safetensors"];

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 3, "usage: judges CLASSES SAMPLES.safetensors...");
    let classes = wfrmix::train::parse_classes(&a[1])?;
    let test = load_fashion_mnist(Path::new(FASHION_MNIST_DIR), Split::Test, None)?;
    let own = |f: &[f64]| classes.iter().map(|&c| f[c as usize]).sum::<f64>();
    let judges: Vec<(&str, Classifier)> = JUDGES.iter().map(|p| Ok((*p, Classifier::load(Path::new(p))?))).collect::<anyhow::Result<_>>()?;
    let real = load_fashion_mnist(Path::new(FASHION_MNIST_DIR), Split::Test, Some(&classes))?;
    let real_x: Vec<f64> = real.images.iter().map(|&p| p as f64).collect();
    for (name, j) in &judges {
        let f = class_fractions(&j.predict(&real_x)?, None);
        println!("{name}: test accuracy {:?}; ceiling on {} real test images of {}: {:.3}", j.test_accuracy, real.len(), a[1], own(&f));
    }
    for file in &a[2..] {
        let t = TensorFile::open(Path::new(file))?;
        let (_, x) = t.tensor_f64("samples")?;
        let (_, lw) = t.tensor_f64("log_weights")?;
        let m = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = lw.iter().map(|v| (v - m).exp()).collect();
        let total: f64 = w.iter().sum();
        let w: Vec<f64> = w.iter().map(|v| v / total).collect();
        for (name, j) in &judges {
            let f = class_fractions(&j.predict(&x)?, Some(&w));
            let per: Vec<String> = classes.iter().map(|&c| format!("{} {:.3}", FASHION_CLASSES[c as usize], f[c as usize])).collect();
            let fr = frechet_to_real_images(j, &x, &w, &test, 0)?;
            println!("{file} by {name}: own {:.3} ({}); Fréchet {:.1} / floor {:.1}", own(&f), per.join(", "), fr.distance, fr.floor);
        }
    }
    Ok(())
}
