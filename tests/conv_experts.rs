//! The shipped conv experts weights/fmnist_unet_{a,b,c,d} (diffusers `UNet2DModel` directories).
//! Sampling 256 images from one costs minutes here, so the suite checks two cheap properties of each
//! network and one sampled run; the 256-sample acceptance numbers are in docs/images.md
//! (`EXPERTS=unet cargo run --release --example fmnist_table`).
//!
//! - Each expert denoises real test images of its own classes better than those of the other classes
//!   (it learned its data, not a generic image prior), at three noise levels.
//! - Expert a, sampled (64 images, the default steps), gives its own classes.
//! - The class-conditional expert `fmnist_unet_cond`, given label 1 or 8, samples that class.

use std::path::{Path, PathBuf};

use wfrmix::io::idx::{load_fashion_mnist, Split, FASHION_MNIST_DIR};
use wfrmix::nets::classifier::Classifier;
use wfrmix::{load_model, rng, ComposeKind, CompositionSpec, MixtureMethod, Sampler, SamplerConfig, ScoreModel};

fn weights(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

const EXPERTS: [(&str, &[u8]); 4] = [("a", &[1, 8]), ("b", &[5, 7, 9]), ("c", &[1, 3, 8]), ("d", &[1, 8, 9])];

/// Mean squared error of the expert's ε-prediction (−σ·score) on `x0` noised to time t with seeded ε.
fn eps_mse(model: &dyn ScoreModel, x0: &[f64], t: f64, seed: u64) -> f64 {
    let s = model.schedule();
    let (a, sd) = (s.alpha(t), s.sigma2(t).sqrt());
    let mut eps = vec![0.0; x0.len()];
    rng::fill_normal(&mut rng::seeded(seed), &mut eps);
    let xt: Vec<f64> = x0.iter().zip(&eps).map(|(x, e)| a * x + sd * e).collect();
    let mut score = vec![0.0; x0.len()];
    model.score(&xt, t, &mut score).unwrap();
    score.iter().zip(&eps).map(|(s, e)| (-sd * s - e).powi(2)).sum::<f64>() / x0.len() as f64
}

#[test]
fn each_conv_expert_denoises_its_own_classes_best() {
    let test = load_fashion_mnist(Path::new(FASHION_MNIST_DIR), Split::Test, None).unwrap();
    let d = 784;
    // 64 images from the expert's classes and 64 from the rest, the first of each in the test set.
    let pick = |inside: &dyn Fn(u8) -> bool| -> Vec<f64> {
        let idx: Vec<usize> = (0..test.len()).filter(|&i| inside(test.labels[i])).take(64).collect();
        idx.iter().flat_map(|&i| test.images[i * d..(i + 1) * d].iter().map(|&p| p as f64)).collect()
    };
    for (name, classes) in EXPERTS {
        let model = load_model(weights(&format!("fmnist_unet_{name}"))).unwrap();
        let own = pick(&|l| classes.contains(&l));
        let other = pick(&|l| !classes.contains(&l));
        for t in [0.1, 0.3, 0.5] {
            let (mo, mx) = (eps_mse(model.as_ref(), &own, t, 7), eps_mse(model.as_ref(), &other, t, 7));
            eprintln!("expert {name} {classes:?}, t = {t}: ε MSE own {mo:.4}, other classes {mx:.4}");
            // Both are means over 64·784 = 50 176 squared errors with the same ε draws, so their
            // sampling noise is a few percent at most; a trained expert separates them by far more
            // (measured ratios in docs/images.md). 10% is the margin.
            assert!(mo < 0.9 * mx, "expert {name} at t = {t}: own-class MSE {mo} is not below 0.9 x the other classes' {mx}");
        }
    }
}

/// `particles` samples of one model alone (anneal with γ = 1 is the model itself), the default steps.
fn sample_alone(model: &dyn ScoreModel, particles: usize, seed: u64) -> wfrmix::SampleRun {
    let spec = CompositionSpec { kind: ComposeKind::Anneal, n_models: 1, coefficients: None, beta: None, method: MixtureMethod::State, m: 2.0, gamma: 1.0, fr_lambda: 0.0 };
    let cfg = SamplerConfig { particles, seed, ..SamplerConfig::default() };
    Sampler::new(&[model], spec.build().unwrap(), cfg).unwrap().run(|_| {}).unwrap()
}

#[test]
fn conv_expert_a_samples_its_own_classes() {
    // 64 images, the default 300 steps. At 256 images a's own-class fraction is 0.977 (the 6000-step
    // recipe, docs/images.md; the judge itself calls 0.979 of real Trouser/Bag images in the set);
    // here it is 0.969. At n = 64 and p = 0.97 the binomial sd is 0.021, so 0.90 is 3.3 sd below: a
    // real drop fails it, sampling noise does not.
    let model = load_model(weights("fmnist_unet_a")).unwrap();
    let run = sample_alone(model.as_ref(), 64, 11);
    let f = wfrmix::report::classes::judge(&Classifier::load(&weights("fmnist_classifier.safetensors")).unwrap(), &run).unwrap();
    let own = f[1] + f[8];
    eprintln!("conv expert a: own-class fraction {own:.3} ({f:?})");
    assert!(own >= 0.90, "conv expert a: own-class fraction {own:.3} < 0.90 ({f:?})");
    // Pixel values stay in a plausible range: the data live in [−1, 1]; the MLP experts reached −10
    // and +17. All but 1% of the pixels within [−1.5, 1.5].
    let outside = run.samples.iter().filter(|v| v.abs() > 1.5).count() as f64 / run.samples.len() as f64;
    assert!(outside < 0.01, "{outside} of the pixels outside [−1.5, 1.5]");
}

#[test]
fn conv_cond_expert_samples_the_label_it_is_given() {
    // The class-conditional expert weights/fmnist_unet_cond (all ten classes, num_class_embeds 10),
    // 16 images for label 1 (Trouser) and 16 for label 8 (Bag), the default 300 steps. At 26 images
    // per label both gave 26/26 (docs/images.md; the judge calls 0.982 and 0.975 of real ones). Even
    // at p = 0.95 per image, 12 or fewer of 16 has probability 0.007, so 0.75 fails a checkpoint that
    // ignores its label (Trouser and Bag are nothing alike), not sampling noise.
    let classifier = Classifier::load(&weights("fmnist_classifier.safetensors")).unwrap();
    for label in [1u32, 8] {
        let model = wfrmix::nets::diffusers::DiffusersModel::open(&weights("fmnist_unet_cond"), Some(label)).unwrap();
        let run = sample_alone(&model, 16, 5);
        let f = wfrmix::report::classes::judge(&classifier, &run).unwrap();
        eprintln!("conditional expert, label {label}: judged as the label {:.3} ({f:?})", f[label as usize]);
        assert!(f[label as usize] >= 0.75, "conditional expert, label {label}: only {:.3} judged as the label ({f:?})", f[label as usize]);
    }
}
