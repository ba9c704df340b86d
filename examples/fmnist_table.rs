//! The README's Fashion-MNIST table from real runs, through the library API: class fractions (judged by
//! the shipped classifier, weighted by the final particle weights) of each single expert, of the
//! mixture of a {1, 8} and b {5, 7, 9} at several β by `state`, `fr` and `naive`, and of the product and
//! geometric mixture of the overlapping experts c {1, 3, 8} and d {1, 8, 9}.
//!
//! cargo run --release --example fmnist_table -- [PARTICLES=256] [STEPS=the default, 300] [SEED=0] [ROWS] > table.md
//! (ROWS: run only the rows whose label contains this text, e.g. `product`; $CLASSIFIER: another judge;
//! $EXPERTS=unet: the conv experts weights/fmnist_unet_{a,b,c,d} instead of the MLPs mlp_fmnist_*)

use std::path::Path;

use wfrmix::io::idx::FASHION_CLASSES;
use wfrmix::nets::classifier::Classifier;
use wfrmix::{load_model, ComposeKind, CompositionSpec, MixtureMethod, Sampler, SamplerConfig, ScoreModel};

struct Row {
    label: String,
    models: Vec<&'static str>,
    spec: CompositionSpec,
    /// Classes whose total fraction the row reports.
    target: Vec<u8>,
}

fn spec(kind: ComposeKind, method: MixtureMethod, n_models: usize, beta: Option<f64>, gamma: f64) -> CompositionSpec {
    CompositionSpec { kind, n_models, coefficients: None, beta, method, m: 2.0, gamma, fr_lambda: 0.0 }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, def: u64| std::env::args().nth(i).map_or(Ok(def), |s| s.parse::<u64>());
    let (particles, steps, seed) = (arg(1, 256)? as usize, arg(2, SamplerConfig::DEFAULT.steps as u64)? as usize, arg(3, 0)?);
    let judge = std::env::var("CLASSIFIER").unwrap_or_else(|_| "weights/fmnist_classifier.safetensors".into());
    let classifier = Classifier::load(Path::new(&judge))?;
    let unet = std::env::var("EXPERTS").is_ok_and(|e| e == "unet");
    let file = |n: &str| if unet { format!("weights/fmnist_unet_{n}") } else { format!("weights/mlp_fmnist_{n}.safetensors") };

    let mut rows = Vec::new();
    for (name, classes) in [("a", vec![1, 8]), ("b", vec![5, 7, 9]), ("c", vec![1, 3, 8]), ("d", vec![1, 8, 9])] {
        rows.push(Row { label: format!("expert {name} alone"), models: vec![name], spec: spec(ComposeKind::Anneal, MixtureMethod::State, 1, None, 1.0), target: classes });
    }
    // The conv experts cost ~50x the MLPs a step: one β per method for them.
    let betas = |mlp: Vec<f64>| if unet { vec![0.3] } else { mlp };
    for (method, betas) in [(MixtureMethod::State, betas(vec![0.2, 0.3, 0.5, 0.8])), (MixtureMethod::Fr, betas(vec![0.2, 0.5, 0.8])), (MixtureMethod::Naive, betas(vec![0.2, 0.5, 0.8]))] {
        for beta in betas {
            rows.push(Row {
                label: format!("mixture a/b β = {beta} `{method:?}`").to_lowercase(),
                models: vec!["a", "b"],
                spec: spec(ComposeKind::Mixture, method, 2, Some(beta), 1.0),
                target: vec![5, 7, 9],
            });
        }
    }
    rows.push(Row {
        label: "mixture a/b β = 0.3 `fr`, λ = 0.5".into(),
        models: vec!["a", "b"],
        spec: CompositionSpec { fr_lambda: 0.5, ..spec(ComposeKind::Mixture, MixtureMethod::Fr, 2, Some(0.3), 1.0) },
        target: vec![5, 7, 9],
    });
    rows.push(Row { label: "product c×d".into(), models: vec!["c", "d"], spec: spec(ComposeKind::Product, MixtureMethod::State, 2, None, 1.0), target: vec![1, 8] });
    rows.push(Row { label: "geometric c,d β = 0.5".into(), models: vec!["c", "d"], spec: spec(ComposeKind::Geometric, MixtureMethod::State, 2, Some(0.5), 1.0), target: vec![1, 8] });

    // The classifier's verdict on real test images of each expert's classes: the most a perfect expert
    // could score on the "own classes" criterion with this judge.
    let test = wfrmix::io::idx::load_fashion_mnist(std::path::Path::new(wfrmix::io::idx::FASHION_MNIST_DIR), wfrmix::io::idx::Split::Test, None)?;
    let x: Vec<f64> = test.images.iter().map(|&p| p as f64).collect();
    let pred = classifier.predict(&x)?;
    println!("Classifier on real test images of each expert's classes (the ceiling of the own-class fraction):\n");
    for (name, classes) in [("a", [1u8, 8].as_slice()), ("b", &[5, 7, 9]), ("c", &[1, 3, 8]), ("d", &[1, 8, 9]), ("c∩d", &[1, 8])] {
        let (mut n, mut hit) = (0usize, 0usize);
        for (p, l) in pred.iter().zip(&test.labels) {
            if classes.contains(l) {
                n += 1;
                hit += classes.contains(p) as usize;
            }
        }
        println!("- {name} {classes:?}: {:.3} of {n} test images judged in the set", hit as f64 / n as f64);
    }
    println!();
    println!("N = {particles} particles, {steps} steps, seed {seed}; fractions weighted by the final weights.\n");
    println!("| run | target classes | target fraction | largest classes | Fréchet / floor | pixels 1–99% | final ESS / N | lineages | wall s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let only = std::env::args().nth(4).unwrap_or_default();
    for row in rows.iter().filter(|r| r.label.contains(&only)) {
        let models: Vec<Box<dyn ScoreModel>> = row.models.iter().map(|m| load_model(Path::new(&file(m)))).collect::<Result<_, _>>()?;
        let refs: Vec<&dyn ScoreModel> = models.iter().map(|m| m.as_ref()).collect();
        let config = SamplerConfig { particles, steps, seed, ..SamplerConfig::default() };
        let run = Sampler::new(&refs, row.spec.build()?, config)?.run(|_| {})?;
        let f = wfrmix::report::classes::judge(&classifier, &run)?;
        let target: f64 = row.target.iter().map(|&c| f[c as usize]).sum();
        let fd = wfrmix::report::classes::frechet_to_real(&classifier, &run, &test, seed)?;
        let mut px = run.samples.clone();
        px.sort_by(f64::total_cmp);
        let q = |p: f64| px[((px.len() - 1) as f64 * p) as usize];
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&i, &j| f[j].total_cmp(&f[i]));
        let top: Vec<String> = order.iter().take(3).filter(|&&i| f[i] >= 0.005).map(|&i| format!("{} {:.3}", FASHION_CLASSES[i], f[i])).collect();
        let set: Vec<String> = row.target.iter().map(|c| c.to_string()).collect();
        println!(
            "| {} | {{{}}} | **{:.3}** | {} | {:.0} / {:.0} ({:.1}x) | {:.2} … {:.2} | {:.2} | {} | {:.1} |",
            row.label,
            set.join(", "),
            target,
            top.join(", "),
            fd.distance,
            fd.floor,
            fd.distance / fd.floor,
            q(0.01),
            q(0.99),
            run.final_ess / particles as f64,
            run.lineages,
            run.wall_seconds
        );
    }
    Ok(())
}
