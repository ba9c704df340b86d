//! `mix-sample` (and `mix-train` without its dataset) end to end: outputs on success, a clear error and
//! a non-zero exit (and no output file) on every kind of bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use wfrmix::io::{write_safetensors, F32Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_mix-sample");

#[allow(clippy::too_many_arguments)]
fn gmm_file(dir: &Path, name: &str, means: &[f32], mshape: Vec<usize>, stds: &[f32], sshape: Vec<usize>, weights: &[f32], meta: &[(&str, &str)]) -> PathBuf {
    let p = dir.join(name);
    let mut m: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    m.entry("kind".into()).or_insert_with(|| "gaussian_mixture".into());
    let k = weights.len();
    let mut tensors = vec![F32Tensor { name: "weights", shape: vec![k], data: weights }];
    if !means.is_empty() {
        tensors.push(F32Tensor { name: "means", shape: mshape, data: means });
    }
    if !stds.is_empty() {
        tensors.push(F32Tensor { name: "stds", shape: sshape, data: stds });
    }
    write_safetensors(&p, &tensors, &m).unwrap();
    p
}

fn good(dir: &Path, name: &str, d: usize) -> PathBuf {
    let means: Vec<f32> = (0..2 * d).map(|i| if i < d { 1.0 } else { -1.0 }).collect();
    gmm_file(dir, name, &means, vec![2, d], &vec![0.5; 2 * d], vec![2, d], &[1.0, 2.0], &[])
}

fn mix_sample(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).arg("--quiet").env("RAYON_NUM_THREADS", "1").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs and expects failure whose message contains every `needle`; also checks that no output file
/// appeared in `dir` beyond what was there.
fn fails(dir: &Path, args: &[&str], needles: &[&str]) {
    let before: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = dir.join("out.png");
    let rep = dir.join("r.json");
    let mut all: Vec<&str> = args.to_vec();
    let (o, r) = (out.to_str().unwrap().to_string(), rep.to_str().unwrap().to_string());
    all.extend(["--out", &o, "--report", &r, "--particles", "64", "--steps", "5"]);
    let (ok, _, err) = mix_sample(&all);
    assert!(!ok, "expected failure for {args:?}");
    assert!(!err.contains("panicked"), "panic for {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "message for {args:?} lacks `{n}`: {err}");
    }
    let after: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len(), "files appeared after a failure: {after:?}");
}

#[test]
fn writes_samples_report_and_picture() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (good(dir.path(), "a.safetensors", 2), good(dir.path(), "b.safetensors", 2));
    let (png, rep, smp) = (dir.path().join("m.png"), dir.path().join("r.json"), dir.path().join("s.safetensors"));
    let args = [
        "--models", a.to_str().unwrap(), b.to_str().unwrap(), "--compose", "geometric", "--beta", "0.3", "--particles", "300",
        "--steps", "50", "--out", png.to_str().unwrap(), "--report", rep.to_str().unwrap(), "--save-samples", smp.to_str().unwrap(),
    ];
    let (ok, _, err) = mix_sample(&args);
    assert!(ok, "{err}");
    let f = wfrmix::io::tensors::TensorFile::open(&smp).unwrap();
    let (shape, samples) = f.tensor_f64("samples").unwrap();
    assert_eq!(shape, vec![300, 2]);
    assert!(samples.iter().all(|v| v.is_finite()));
    let (_, lw) = f.tensor_f64("log_weights").unwrap();
    assert!(wfrmix::particles::log_sum_exp(&lw).abs() < 1e-4, "log-weights are normalised");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(report["steps"]["ess"].as_array().unwrap().len(), 50);
    assert!(report["result"]["log_z"].as_f64().unwrap().is_finite());
    assert!(report["timing"]["particle_steps_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(report["settings"]["composition"]["kind"], "geometric");
    let img = image::open(&png).unwrap();
    assert!(img.width() > 100 && img.height() > 100);
    // Same seed, same samples.
    let smp2 = dir.path().join("s2.safetensors");
    let args2 = ["--models", a.to_str().unwrap(), b.to_str().unwrap(), "--compose", "geometric", "--beta", "0.3", "--particles", "300", "--steps", "50", "--save-samples", smp2.to_str().unwrap()];
    assert!(mix_sample(&args2).0);
    // Same seed, same samples (the header's metadata order may differ; the tensors may not).
    let again = wfrmix::io::tensors::TensorFile::open(&smp2).unwrap().tensor_f64("samples").unwrap().1;
    assert!(again == samples, "a second run with the same seed gave different samples");
}

#[test]
fn bad_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = good(d, "a.safetensors", 2);
    let a_s = a.to_str().unwrap();
    let missing = d.join("nope.safetensors");
    fails(d, &["--models", a_s, missing.to_str().unwrap()], &["nope.safetensors", "cannot read"]);

    let junk = d.join("junk.safetensors");
    std::fs::write(&junk, b"this is not a safetensors file at all").unwrap();
    fails(d, &["--models", a_s, junk.to_str().unwrap()], &["junk.safetensors", "not a valid safetensors"]);

    let trunc = d.join("trunc.safetensors");
    let bytes = std::fs::read(&a).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() - 7]).unwrap();
    fails(d, &["--models", a_s, trunc.to_str().unwrap()], &["trunc.safetensors"]);

    let no_stds = gmm_file(d, "nostds.safetensors", &[0.0, 0.0], vec![1, 2], &[], vec![], &[1.0], &[]);
    fails(d, &["--models", a_s, no_stds.to_str().unwrap()], &["nostds.safetensors", "missing tensor `stds`"]);

    let shaped = gmm_file(d, "shape.safetensors", &[0.0, 0.0], vec![1, 2], &[1.0, 1.0, 1.0], vec![1, 3], &[1.0], &[]);
    fails(d, &["--models", a_s, shaped.to_str().unwrap()], &["shape.safetensors", "`stds`", "[1, 3]", "[1, 2]"]);

    let neg = gmm_file(d, "neg.safetensors", &[0.0, 0.0], vec![1, 2], &[1.0, -0.5], vec![1, 2], &[1.0], &[]);
    fails(d, &["--models", a_s, neg.to_str().unwrap()], &["neg.safetensors", "`stds`", "entry 1", "-0.5"]);

    let zero_w = gmm_file(d, "w0.safetensors", &[0.0, 0.0, 1.0, 1.0], vec![2, 2], &[1.0; 4], vec![2, 2], &[1.0, 0.0], &[]);
    fails(d, &["--models", a_s, zero_w.to_str().unwrap()], &["w0.safetensors", "`weights`", "> 0"]);

    let nan = gmm_file(d, "nan.safetensors", &[f32::NAN, 0.0], vec![1, 2], &[1.0, 1.0], vec![1, 2], &[1.0], &[]);
    fails(d, &["--models", a_s, nan.to_str().unwrap()], &["nan.safetensors", "`means`", "finite"]);

    let unknown = gmm_file(d, "kind.safetensors", &[0.0, 0.0], vec![1, 2], &[1.0, 1.0], vec![1, 2], &[1.0], &[("kind", "unet")]);
    fails(d, &["--models", a_s, unknown.to_str().unwrap()], &["kind.safetensors", "`kind`", "unet"]);
}

#[test]
fn incompatible_models_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = good(d, "a.safetensors", 2);
    let b = good(d, "b.safetensors", 2);
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let three = good(d, "three.safetensors", 3);
    fails(d, &["--models", a_s, three.to_str().unwrap()], &["data shapes differ", "[2]", "[3]"]);
    let sched = gmm_file(d, "sched.safetensors", &[0.0, 0.0], vec![1, 2], &[1.0, 1.0], vec![1, 2], &[1.0], &[("beta_max", "10")]);
    fails(d, &["--models", a_s, sched.to_str().unwrap()], &["schedules differ", "sched.safetensors"]);
    fails(d, &["--models", a_s, b_s, "--beta", "1.5"], &["beta", "1.5", "[0, 1]"]);
    fails(d, &["--models", a_s, b_s, "--beta", "-0.1"], &["beta", "-0.1"]);
    fails(d, &["--models", a_s, b_s, "--weights", "1,2,3"], &["one weight or exponent per model"]);
    fails(d, &["--models", a_s, b_s, "--compose", "product", "--noise-scale", "0"], &["noise scale", "unstable"]);
    fails(d, &["--models", a_s, b_s, "--compose", "power", "--m", "0.5"], &["exponent m", ">= 1"]);
    // The drift's γ and the moves apply to geometric targets and power means with m > 1 only.
    fails(d, &["--models", a_s, b_s, "--moves", "2"], &["--moves", "leave it out for --compose mixture"]);
    fails(d, &["--models", a_s, b_s, "--compose", "power", "--m", "1", "--drift-gamma", "1"], &["--drift-gamma", "--m > 1", "--compose power --m 1"]);
    fails(d, &["--models", a_s, b_s, "--ess-threshold", "2"], &["ESS threshold"]);
    fails(d, &["--models", a_s, "--compose", "mixture"], &["two or more models"]);
    fails(d, &["--models", a_s, b_s, three.to_str().unwrap(), "--beta", "0.3"], &["beta", "exactly two models"]);
    // Zero particles or steps: the flags given last win over the helper's defaults.
    for (flag, what) in [("--particles", "particles"), ("--steps", "steps")] {
        let out = Command::new(BIN).args(["--models", a_s, b_s, flag, "0", "--quiet"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(what) && err.contains("at least one"), "{err}");
    }
}

#[test]
fn unwritable_outputs_fail_before_sampling_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = good(d, "a.safetensors", 2);
    let b = good(d, "b.safetensors", 2);
    let out = d.join("out.png");
    let (ok, _, err) = mix_sample(&[
        "--models", a.to_str().unwrap(), b.to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--report", "/nonexistent-dir/r.json", "--steps", "5", "--particles", "10",
    ]);
    assert!(!ok && err.contains("/nonexistent-dir/r.json") && err.contains("cannot write"), "{err}");
    assert!(!out.exists(), "no picture written when the report path is bad");
    let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(leftovers.iter().all(|f| !f.ends_with(".tmp")), "{leftovers:?}");
}

#[test]
fn missing_fashion_mnist_names_the_debian_package_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recipe = dir.join("r.json");
    let out = dir.join("net.safetensors");
    std::fs::write(
        &recipe,
        format!(
            r#"{{"kind": "score_mlp", "data": "fashion-mnist:1,8", "out": "{}", "arch": {{"width": 8, "depth": 1, "time_freqs": 2, "max_freq": 10.0}},
               "steps": 2, "batch": 4, "lr": 1e-3, "weight_decay": 0.0, "t_min": 0.001, "seed": 1}}"#,
            out.display()
        ),
    )
    .unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_mix-train"))
        .args(["--recipe", recipe.to_str().unwrap(), "--quiet"])
        .env("FASHION_MNIST_DIR", dir.join("no-such-dir"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{err}");
    assert!(err.contains("no-such-dir") && err.contains("apt-get install dataset-fashion-mnist"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("r.json")], "nothing but the recipe in {}", dir.display());
}

#[test]
fn outputs_that_alias_an_input_or_each_other_are_refused_and_the_input_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (up, down) = (dir.path().join("up.safetensors"), dir.path().join("down.safetensors"));
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/gmm2d_up.safetensors"), &up).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/gmm2d_down.safetensors"), &down).unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&up, &link).unwrap();
    let before = std::fs::read(&up).unwrap();
    let report = dir.path().join("r.json");
    let cases: [(&str, &Path); 4] = [("--save-samples", &up), ("--out", &link), ("--report", &down), ("--save-samples", &report)];
    for (flag, path) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["--models".as_ref(), up.as_os_str(), down.as_os_str(), "--particles".as_ref(), "10".as_ref(), "--steps".as_ref(), "5".as_ref()]);
        cmd.arg(flag).arg(path);
        if path == report {
            cmd.arg("--report").arg(&report);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {}: {err}", path.display());
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        assert!(err.contains(flag) || err.contains("--report"), "names the flag: {err}");
    }
    assert_eq!(std::fs::read(&up).unwrap(), before, "the input model is unchanged");
    assert!(!report.exists(), "nothing written");
    let wfr = Command::new(env!("CARGO_BIN_EXE_wfr-sample"))
        .args(["--target".as_ref(), format!("gmm:{}", up.display()).as_ref(), "--sampler".as_ref(), "anneal".as_ref(), "--save-samples".as_ref(), link.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(wfr.status.code(), Some(1));
    assert_eq!(std::fs::read(&up).unwrap(), before, "the target file is unchanged");
}
