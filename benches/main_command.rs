//! Wall time of the README's main command, end to end (process start, loading two Fashion-MNIST
//! experts and the classifier, 64 particles × the default steps (`SamplerConfig::DEFAULT`) of the `state` mixture, grid and
//! report written): runs the built `mix-sample` binary `REPS` times (default 3) and prints each wall
//! time, the median and the minimum. The experts are the conv networks weights/fmnist_unet_{a,b}
//! (goal: under 60 s on a 2-core machine); `EXPERTS=mlp` times the MLP alternative instead.
//!
//! cargo bench --bench main_command            (REPS=5 EXPERTS=mlp cargo bench --bench main_command)

use std::process::Command;
use std::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments of its own.
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let dir = std::env::temp_dir().join(format!("wfrmix-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let root = env!("CARGO_MANIFEST_DIR");
    let mlp = std::env::var("EXPERTS").is_ok_and(|e| e == "mlp");
    let models = if mlp { ["weights/mlp_fmnist_a.safetensors", "weights/mlp_fmnist_b.safetensors"] } else { ["weights/fmnist_unet_a", "weights/fmnist_unet_b"] };
    let mut times = Vec::new();
    for rep in 0..reps {
        let t0 = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_mix-sample"))
            .current_dir(root)
            .arg("--models")
            .args(models)
            .args(["--beta", "0.3", "--particles", "64", "--classifier", "weights/fmnist_classifier.safetensors", "--quiet"])
            .arg("--out")
            .arg(dir.join("grid.png"))
            .arg("--report")
            .arg(dir.join("report.json"))
            .output()
            .expect("running mix-sample");
        let s = t0.elapsed().as_secs_f64();
        assert!(out.status.success(), "mix-sample failed: {}", String::from_utf8_lossy(&out.stderr));
        println!("main command, run {}: {s:.2} s", rep + 1);
        times.push(s);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "main command ({}, 64 images, 2 experts, {} steps, {} threads): median {:.2} s, min {:.2} s over {reps} runs",
        models.join(" + "),
        wfrmix::SamplerConfig::DEFAULT.steps,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        times[reps / 2],
        times[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
