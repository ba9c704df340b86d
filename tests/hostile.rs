//! Hostile input for all four binaries, built here from the shipped files: truncations at many offsets,
//! bit flips and edits in headers and metadata, absurd shapes, NaN/Inf and overflowing tensors, absurd
//! and non-finite flag values, outputs that alias inputs (also through a symlink). Every case must end
//! with exit status 1 or 2 and one line on stderr (`BINARY: error: ...`) that names what is wrong, no
//! panic and no signal, no output file, and every input byte for byte as it was. Cases that may
//! legitimately succeed (a flipped bit that leaves a valid file) must then succeed cleanly.
//!
//! Also here: a fault test (runs killed with SIGKILL at random moments leave only whole files, and a
//! killed training resumes to the same bits as an uninterrupted one) and a property test over random
//! model headers and sampler settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use wfrmix::rng::{self, Rng};

const MIX: &str = env!("CARGO_BIN_EXE_mix-sample");
const WFR: &str = env!("CARGO_BIN_EXE_wfr-sample");
const TRAIN: &str = env!("CARGO_BIN_EXE_mix-train");
const EVAL: &str = env!("CARGO_BIN_EXE_mix-eval");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped(name: &str) -> PathBuf {
    root().join("weights").join(name)
}

/// One hostile case: a binary, its arguments, the files it reads (compared before and after) and the
/// outputs it was asked for (which must not exist after a failure).
struct Case {
    label: String,
    bin: &'static str,
    args: Vec<String>,
    inputs: Vec<PathBuf>,
    outputs: Vec<PathBuf>,
    /// `Some(needle)`: must fail, with `needle` in the message; `None`: may succeed.
    must_fail: Option<String>,
}

#[derive(Default)]
struct Tally {
    cases: usize,
    failed_cleanly: usize,
    succeeded: usize,
    problems: Vec<String>,
}

impl Tally {
    fn run(&mut self, c: Case) {
        self.cases += 1;
        let before: Vec<Option<Vec<u8>>> = c.inputs.iter().map(|p| std::fs::read(p).ok()).collect();
        for o in &c.outputs {
            let _ = std::fs::remove_file(o);
        }
        let out = Command::new(c.bin).args(&c.args).arg("--quiet").env("RAYON_NUM_THREADS", "1").current_dir(root()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let name = Path::new(c.bin).file_name().unwrap().to_string_lossy().into_owned();
        let mut bad = |why: String| self.problems.push(format!("[{}] {}: {}", c.label, why, err.trim()));
        for (p, b) in c.inputs.iter().zip(&before) {
            if std::fs::read(p).ok() != *b {
                bad(format!("input {} changed", p.display()));
            }
        }
        match out.status.code() {
            None => bad("killed by a signal".into()),
            Some(0) => {
                if let Some(n) = &c.must_fail {
                    bad(format!("succeeded; expected an error naming `{n}`"));
                } else {
                    self.succeeded += 1;
                }
            }
            Some(code) => {
                let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
                if !(code == 1 || code == 2) {
                    bad(format!("exit status {code}"));
                } else if err.contains("panicked") || lines.len() != 1 || !lines[0].starts_with(&format!("{name}: error: ")) {
                    bad("not one error line".into());
                } else if let Some(n) = c.must_fail.as_ref().filter(|n| !err.contains(n.as_str())) {
                    bad(format!("message lacks `{n}`"));
                } else if let Some(o) = c.outputs.iter().find(|o| o.exists()) {
                    bad(format!("output {} written", o.display()));
                } else {
                    self.failed_cleanly += 1;
                }
            }
        }
        for o in &c.outputs {
            let _ = std::fs::remove_file(o);
        }
    }
}

/// A safetensors file split into its header JSON and data.
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut h = serde_json::to_vec(header).unwrap();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Header edits: (label, metadata key, new value or None to remove it, needle of the expected error).
fn meta_edits(kind: &str) -> Vec<(String, &'static str, Option<String>, &'static str)> {
    let mut v: Vec<(String, &'static str, Option<String>, &'static str)> = vec![
        ("kind unknown".into(), "kind", Some("no_such_kind".into()), "kind"),
        ("kind missing".into(), "kind", None, "kind"),
        ("beta_min NaN".into(), "beta_min", Some("NaN".into()), "beta_min"),
        ("beta_min negative".into(), "beta_min", Some("-1".into()), "beta_min"),
        ("beta_max huge".into(), "beta_max", Some("1e400".into()), "beta_max"),
    ];
    if kind != "gaussian_mixture" {
        for (label, shape) in [
            ("shape 65536^2", "[1,65536,65536]"),
            ("shape 2^32^2", "[1,4294967296,4294967296]"),
            ("shape empty", "[]"),
            ("shape zero", "[0]"),
            ("shape negative", "[-1]"),
            ("shape string", "\"x\""),
            ("shape rank 9", "[1,1,1,1,1,1,1,1,1]"),
        ] {
            v.push((label.into(), "data_shape", Some(shape.into()), "data_shape"));
        }
        v.push(("parameterization v".into(), "parameterization", Some("v_prediction".into()), "parameterization"));
        v.push(("arch not JSON".into(), "arch", Some("{".into()), "arch"));
    }
    match kind {
        "score_mlp" => {
            v.push(("time_freqs 2^63".into(), "arch", Some(r#"{"width":64,"depth":3,"time_freqs":9223372036854775807,"max_freq":200.0}"#.into()), "arch"));
            v.push(("max_freq 1e300".into(), "arch", Some(r#"{"width":64,"depth":3,"time_freqs":16,"max_freq":1e300}"#.into()), "arch"));
            v.push(("width 0".into(), "arch", Some(r#"{"width":0,"depth":3,"time_freqs":16,"max_freq":200.0}"#.into()), "arch"));
            v.push(("depth 10^6".into(), "arch", Some(r#"{"width":64,"depth":1000000,"time_freqs":16,"max_freq":200.0}"#.into()), "arch"));
        }
        "score_unet" => {
            let levels: Vec<usize> = vec![8; 65];
            v.push(("65 levels".into(), "arch", Some(json!({"channels": levels, "groups": 8, "time_dim": 64, "time_freqs": 16, "max_freq": 200.0}).to_string()), "arch"));
            v.push(("groups 0".into(), "arch", Some(json!({"channels": [16, 32, 32], "groups": 0, "time_dim": 64, "time_freqs": 16, "max_freq": 200.0}).to_string()), "arch"));
            v.push(("time_freqs 2^62".into(), "arch", Some(json!({"channels": [16, 32, 32], "groups": 8, "time_dim": 64, "time_freqs": 1u64 << 62, "max_freq": 200.0}).to_string()), "arch"));
        }
        _ => {}
    }
    v
}

/// Every corrupted version of the file `base` (its bytes), written into `dir`, with the needle its error
/// must contain (None: may succeed).
fn corruptions(dir: &Path, base: &Path, kind: &str, rng: &mut Rng) -> Vec<(String, PathBuf, Option<String>)> {
    let bytes = std::fs::read(base).unwrap();
    let stem = base.file_stem().unwrap().to_string_lossy().into_owned();
    let n = bytes.len();
    let h = header_len(&bytes) + 8;
    let mut out = Vec::new();
    let mut put = |label: String, b: Vec<u8>, needle: Option<String>| {
        let p = dir.join(format!("{stem}.{}.safetensors", out.len()));
        std::fs::write(&p, b).unwrap();
        out.push((format!("{stem}: {label}"), p, needle));
    };
    let mut cuts: Vec<usize> = vec![0, 1, 4, 7, 8, 9, 12, h / 2, h - 1, h, h + 1, h + 4, (h + n) / 2, n - 4, n - 1];
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts.into_iter().filter(|&c| c < n) {
        // Every truncation must be an error that names the file.
        put(format!("truncated at {c} of {n}"), bytes[..c].to_vec(), Some(base.file_name().unwrap().to_string_lossy().replace(".safetensors", "")));
    }
    for i in 0..12 {
        let mut b = bytes.clone();
        let pos = if i < 2 { i * 3 } else { 8 + (rng::uniform(rng) * (h - 8) as f64) as usize };
        b[pos] ^= 1 << (i % 8);
        put(format!("bit {} flipped at byte {pos}", i % 8), b, None);
    }
    let (header, data) = split(&bytes);
    for (label, key, val, needle) in meta_edits(kind) {
        let mut hd = header.clone();
        let meta = hd["__metadata__"].as_object_mut().unwrap();
        match val {
            Some(v) => meta.insert(key.into(), Value::String(v)),
            None => meta.remove(key),
        };
        put(label, join(&hd, &data), Some(needle.into()));
    }
    // The first tensor's header entry: a wrong shape, an unknown dtype, offsets past the end.
    let first = header.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
    for (label, field, v) in [
        ("shape doubled", "shape", json!([1u64 << 40, 1u64 << 40])),
        ("dtype F64", "dtype", json!("F64")),
        ("dtype bogus", "dtype", json!("Q7")),
        ("offsets past the end", "data_offsets", json!([0, n * 2])),
    ] {
        let mut hd = header.clone();
        hd[&first][field] = v;
        put(format!("tensor {first}: {label}"), join(&hd, &data), Some(String::new()));
    }
    // Non-finite and overflowing values in the first F32 tensor.
    let off = header[&first]["data_offsets"][0].as_u64().unwrap() as usize;
    for (label, v) in [("NaN", f32::NAN), ("+inf", f32::INFINITY), ("1e38", 1e38f32)] {
        let mut d = data.clone();
        for j in 0..4.min((data.len() - off) / 4) {
            d[off + 4 * j..off + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
        }
        // A huge finite weight may give a valid network that overflows mid-run; both end in an error
        // except where the value is harmless (a GMM weight of 1e38 only rescales the others).
        let needle = if label == "1e38" { None } else { Some(String::new()) };
        put(format!("tensor {first}: {label}"), join(&header, &d), needle);
    }
    out
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

#[test]
fn hostile_files_flags_and_aliases_end_in_one_line_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (png, samples, report) = (dir.join("o.png"), dir.join("s.safetensors"), dir.join("r.json"));
    let outs = vec![png.clone(), samples.clone(), report.clone()];
    let out_args = |extra: &[&str]| -> Vec<String> {
        let mut a = s(&["--out", png.to_str().unwrap(), "--save-samples", samples.to_str().unwrap(), "--report", report.to_str().unwrap()]);
        a.extend(s(extra));
        a
    };
    let mut t = Tally::default();
    let mut r = rng::seeded(7);

    // Corrupted model files of every shipped kind, each composed with a good partner.
    let kinds = [
        ("gmm2d_up.safetensors", "gaussian_mixture", "gmm2d_down.safetensors", vec!["--particles", "64", "--steps", "5"]),
        ("mlp2d_up.safetensors", "score_mlp", "mlp2d_down.safetensors", vec!["--particles", "64", "--steps", "5"]),
        ("unet_fmnist_a.safetensors", "score_unet", "", vec!["--compose", "anneal", "--gamma", "1", "--particles", "8", "--steps", "3"]),
    ];
    for (file, kind, partner, extra) in &kinds {
        for (label, bad, needle) in corruptions(dir, &shipped(file), kind, &mut r) {
            let mut args = vec!["--models".to_string(), p(&bad)];
            let mut inputs = vec![bad.clone()];
            if !partner.is_empty() {
                args.push(p(&shipped(partner)));
                inputs.push(shipped(partner));
            }
            args.extend(out_args(extra));
            t.run(Case { label, bin: MIX, args, inputs, outputs: outs.clone(), must_fail: needle });
            std::fs::remove_file(&bad).unwrap();
        }
    }
    // The classifier, corrupted, as --classifier.
    for (label, bad, needle) in corruptions(dir, &shipped("fmnist_classifier.safetensors"), "fmnist_classifier", &mut r) {
        let mut args = s(&["--models", "weights/mlp_fmnist_a.safetensors", "--compose", "anneal", "--gamma", "1", "--classifier"]);
        args.push(p(&bad));
        args.extend(out_args(&["--particles", "8", "--steps", "3"]));
        // The classifier has no data_shape/beta keys to break: only structural cases must fail.
        let needle = needle.filter(|_| label.contains("truncated") || label.contains("tensor") || label.contains("kind"));
        t.run(Case { label, bin: MIX, args, inputs: vec![bad.clone()], outputs: outs.clone(), must_fail: needle });
        std::fs::remove_file(&bad).unwrap();
    }

    // Absurd and non-finite flag values of mix-sample.
    let gm = [p(&shipped("gmm2d_up.safetensors")), p(&shipped("gmm2d_down.safetensors"))];
    let mix_flags: &[(&[&str], &str)] = &[
        (&["--particles", "0"], "particles"),
        (&["--particles", "-1"], "-1"),
        (&["--particles", "1e20"], "--particles"),
        (&["--particles", "18446744073709551615"], "particles"),
        (&["--particles", "100000000000"], "particles"),
        (&["--particles", "3000000000"], "particles"),
        (&["--steps", "0"], "steps"),
        (&["--steps", "99999999999999"], "steps"),
        (&["--t-min", "nan"], "t_min"),
        (&["--t-min", "inf"], "t_min"),
        (&["--t-min", "0"], "t_min"),
        (&["--t-min", "1"], "t_min"),
        (&["--t-min=-1"], "t_min"),
        (&["--noise-scale", "nan"], "noise"),
        (&["--noise-scale=-1"], "noise"),
        (&["--noise-scale", "inf"], "noise"),
        (&["--method", "fr", "--noise-scale", "0"], "noise"),
        (&["--method", "fr", "--fr-lambda", "nan"], "lambda"),
        (&["--method", "fr", "--fr-lambda", "1.5"], "lambda"),
        (&["--method", "fr", "--fr-lambda=-0.1"], "lambda"),
        (&["--fr-lambda", "0.5"], "fr method only"),
        (&["--compose", "product", "--fr-lambda", "0.5"], "fr method only"),
        (&["--beta", "nan"], "beta"),
        (&["--beta", "2"], "beta"),
        (&["--beta=-1"], "beta"),
        (&["--weights", "nan,1"], "weights"),
        (&["--weights", "1"], "models"),
        (&["--weights", "0,0"], "weights"),
        (&["--weights=-1,2"], "weights"),
        (&["--weights", "inf,1"], "weights"),
        (&["--compose", "power", "--m", "nan"], "m"),
        (&["--compose", "power", "--m", "inf"], "m"),
        (&["--compose", "geometric", "--corrector-snr", "nan", "--corrector-steps", "1"], "SNR"),
        (&["--corrector-steps", "1"], "corrector"),
        (&["--ess-threshold", "nan"], "threshold"),
        (&["--ess-threshold", "2"], "threshold"),
        (&["--ess-threshold=-1"], "threshold"),
        (&["--resample-window", "a:b"], "--resample-window"),
        (&["--resample-window", "nan:1"], "window"),
        (&["--resample-window", "1:0"], "window"),
        (&["--method", "fr", "--probes", "0"], "probes"),
        (&["--method", "fr", "--divergence", "fd", "--fd-step", "nan"], "finite-difference"),
        (&["--method", "fr", "--divergence", "fd", "--fd-step", "0"], "finite-difference"),
        (&["--method", "fr", "--divergence", "fd", "--fd-step=-1"], "finite-difference"),
        (&["--threads", "0"], "threads"),
        (&["--grid", "edm:nan"], "grid"),
        (&["--grid", "edm:-1"], "grid"),
        (&["--grid", "foo"], "grid"),
        (&["--seed=-1"], "-1"),
        (&["--compose", "nope"], "nope"),
        (&["--integrator", "rk9"], "rk9"),
        (&["--resampler", "best"], "best"),
        (&["--divergence", "magic"], "magic"),
    ];
    for (flags, needle) in mix_flags {
        let mut args = vec!["--models".to_string(), gm[0].clone(), gm[1].clone()];
        args.extend(out_args(&["--particles", "64", "--steps", "5"]));
        args.extend(s(flags));
        t.run(Case { label: format!("mix-sample {}", flags.join(" ")), bin: MIX, args, inputs: vec![shipped("gmm2d_up.safetensors")], outputs: outs.clone(), must_fail: Some(needle.to_string()) });
    }
    for (flags, needle) in [(["--gamma", "nan"], "gamma"), (["--gamma=-1", ""], "gamma"), (["--gamma", "inf"], "gamma")] {
        let mut args = vec!["--models".to_string(), gm[0].clone(), "--compose".into(), "anneal".into()];
        args.extend(out_args(&["--particles", "64", "--steps", "5"]));
        args.extend(s(&flags).into_iter().filter(|a| !a.is_empty()));
        t.run(Case { label: format!("mix-sample anneal {}", flags.join(" ")), bin: MIX, args, inputs: vec![], outputs: outs.clone(), must_fail: Some(needle.into()) });
    }
    for grid in ["0x0", "100000x100000", "axb", "4096x4096", "8"] {
        let mut args = s(&["--models", "weights/mlp_fmnist_a.safetensors", "--compose", "anneal", "--gamma", "1", "--grid-size", grid]);
        args.extend(out_args(&["--particles", "8", "--steps", "3"]));
        t.run(Case { label: format!("mix-sample --grid-size {grid}"), bin: MIX, args, inputs: vec![], outputs: outs.clone(), must_fail: Some("grid-size".into()) });
    }

    // Outputs that alias an input or each other, also through a symlink, for every binary.
    let model_copy = dir.join("up.safetensors");
    std::fs::copy(shipped("gmm2d_up.safetensors"), &model_copy).unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&model_copy, &link).unwrap();
    for (flag, target) in [("--save-samples", &model_copy), ("--out", &model_copy), ("--report", &link), ("--save-samples", &link)] {
        let mut args = vec!["--models".to_string(), p(&model_copy), gm[1].clone(), "--particles".into(), "64".into(), "--steps".into(), "5".into()];
        args.extend([flag.to_string(), p(target)]);
        t.run(Case { label: format!("mix-sample {flag} = input"), bin: MIX, args, inputs: vec![model_copy.clone()], outputs: vec![], must_fail: Some(flag.into()) });
    }
    // An existing file of another kind at an output path is never replaced (a user's document, a model
    // that is not an input).
    let doc = dir.join("thesis.txt");
    std::fs::write(&doc, "my thesis\n").unwrap();
    let other_model = dir.join("other.safetensors");
    std::fs::copy(shipped("gmm2d_left.safetensors"), &other_model).unwrap();
    for (flag, target) in [("--out", &doc), ("--report", &doc), ("--save-samples", &doc), ("--save-samples", &other_model), ("--out", &other_model)] {
        let mut args = vec!["--models".to_string(), gm[0].clone(), gm[1].clone(), "--particles".into(), "64".into(), "--steps".into(), "5".into()];
        args.extend([flag.to_string(), p(target)]);
        t.run(Case { label: format!("mix-sample {flag} = an existing file of another kind"), bin: MIX, args, inputs: vec![doc.clone(), other_model.clone()], outputs: vec![], must_fail: Some("not replaced".into()) });
    }
    t.run(Case {
        label: "wfr-sample --report = a document".into(),
        bin: WFR,
        args: s(&["--particles", "64", "--time", "0.01", "--report", doc.to_str().unwrap()]),
        inputs: vec![doc.clone()],
        outputs: vec![],
        must_fail: Some("not replaced".into()),
    });
    let rep2 = dir.join("r2.json");
    std::fs::write(&rep2, "{}").unwrap();
    let rlink = dir.join("rlink.json");
    std::os::unix::fs::symlink(&rep2, &rlink).unwrap();
    t.run(Case {
        label: "wfr-sample --report aliases --out through a link".into(),
        bin: WFR,
        args: s(&["--particles", "64", "--time", "0.01", "--out", rep2.to_str().unwrap(), "--report", rlink.to_str().unwrap()]),
        inputs: vec![rep2.clone()],
        outputs: vec![],
        must_fail: Some("--report".into()),
    });

    // Absurd and non-finite flags of wfr-sample.
    let wfr_flags: &[(&[&str], &str)] = &[
        (&["--particles", "0"], "particles"),
        (&["--particles", "1"], "particles"),
        (&["--particles", "100000000000"], "particles"),
        (&["--time", "nan"], "time"),
        (&["--time=-1"], "time"),
        (&["--time", "inf"], "time"),
        (&["--dt", "nan"], "dt"),
        (&["--dt", "0"], "dt"),
        (&["--dt=-1"], "dt"),
        (&["--time", "1e9", "--dt", "1e-9"], "steps"),
        (&["--epsilon", "nan"], "epsilon"),
        (&["--epsilon=-1"], "epsilon"),
        (&["--lambda", "nan"], "lambda"),
        (&["--bandwidth", "nan"], "bandwidth"),
        (&["--bandwidth", "0"], "bandwidth"),
        (&["--bandwidth=-1"], "bandwidth"),
        (&["--barrier", "nan"], "barrier"),
        (&["--tilt", "inf"], "tilt"),
        (&["--ess-threshold", "nan"], "threshold"),
        (&["--ess-threshold", "2"], "threshold"),
        (&["--resampler", "best"], "best"),
        (&["--sampler", "anneal", "--sigma0", "nan"], "sigma0"),
        (&["--sampler", "anneal", "--cess", "0"], "CESS"),
        (&["--sampler", "anneal", "--cess", "2"], "CESS"),
        (&["--sampler", "anneal", "--step", "nan"], "step"),
        (&["--target", "many-well-0"], "many-well"),
        (&["--target", "many-well-100000000"], "dimension"),
        (&["--target", "gaussian-0"], "gaussian"),
        (&["--target", "gmm:no/such/file.safetensors"], "no/such/file"),
        (&["--target", "teapot"], "teapot"),
        (&["--init", "wells:2"], "left-well"),
        (&["--init", "gauss:nan,1"], "init"),
        (&["--init", "gauss:0,-1"], "init"),
        (&["--init", "gauss:0"], "init"),
    ];
    let wouts = vec![dir.join("w.png"), dir.join("w.json"), dir.join("w.safetensors")];
    for (flags, needle) in wfr_flags {
        let mut args = s(&["--particles", "64", "--out", wouts[0].to_str().unwrap(), "--report", wouts[1].to_str().unwrap(), "--save-samples", wouts[2].to_str().unwrap()]);
        if !flags.contains(&"--time") {
            args.extend(s(&["--time", "0.01"]));
        }
        args.extend(s(flags));
        t.run(Case { label: format!("wfr-sample {}", flags.join(" ")), bin: WFR, args, inputs: vec![], outputs: wouts.clone(), must_fail: Some(needle.to_string()) });
    }
    // A corrupted GMM as wfr-sample's target.
    for (label, bad, needle) in corruptions(dir, &shipped("gmm2d_left.safetensors"), "gaussian_mixture", &mut r).into_iter().step_by(3) {
        let mut args = s(&["--particles", "64", "--time", "0.01", "--report", wouts[1].to_str().unwrap()]);
        args.extend(["--target".to_string(), format!("gmm:{}", p(&bad))]);
        t.run(Case { label: format!("wfr-sample target {label}"), bin: WFR, args, inputs: vec![bad.clone()], outputs: wouts.clone(), must_fail: needle });
        std::fs::remove_file(&bad).unwrap();
    }

    // Diffusers checkpoint directories: truncated weights, bit flips in config.json; and mix-eval's flags.
    let fixture = root().join("tests/fixtures/diffusers/ddpm_tiny");
    let ck = dir.join("ck");
    let copy = |to: &Path| {
        std::fs::create_dir_all(to.join("scheduler")).unwrap();
        for f in ["config.json", "diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"] {
            std::fs::copy(fixture.join(f), to.join(f)).unwrap();
        }
    };
    copy(&ck);
    let wbytes = std::fs::read(fixture.join("diffusion_pytorch_model.safetensors")).unwrap();
    let cbytes = std::fs::read(fixture.join("config.json")).unwrap();
    for cut in [0, 7, 100, wbytes.len() / 2, wbytes.len() - 1] {
        std::fs::write(ck.join("diffusion_pytorch_model.safetensors"), &wbytes[..cut]).unwrap();
        let mut args = vec!["--models".to_string(), p(&ck)];
        args.extend(out_args(&["--compose", "anneal", "--gamma", "1", "--particles", "4", "--steps", "2"]));
        t.run(Case { label: format!("checkpoint weights truncated at {cut}"), bin: MIX, args, inputs: vec![], outputs: outs.clone(), must_fail: Some("diffusion_pytorch_model".into()) });
    }
    std::fs::write(ck.join("diffusion_pytorch_model.safetensors"), &wbytes).unwrap();
    for i in 0..8 {
        let mut b = cbytes.clone();
        let pos = (rng::uniform(&mut r) * b.len() as f64) as usize % b.len();
        b[pos] ^= 1 << i;
        std::fs::write(ck.join("config.json"), &b).unwrap();
        let mut args = vec!["--models".to_string(), p(&ck)];
        args.extend(out_args(&["--compose", "anneal", "--gamma", "1", "--particles", "4", "--steps", "2"]));
        t.run(Case { label: format!("checkpoint config.json bit {i} flipped at {pos}"), bin: MIX, args, inputs: vec![], outputs: outs.clone(), must_fail: None });
    }
    std::fs::write(ck.join("config.json"), &cbytes).unwrap();
    let x_in = fixture.join("reference.safetensors");
    let eout = dir.join("e.safetensors");
    for (flags, needle) in [
        (vec!["--t", "0"], "--t"),
        (vec!["--t", "nan"], "--t"),
        (vec!["--t", "2"], "--t"),
        (vec!["--t=-0.5"], "--t"),
        (vec!["--t", "0.5", "--class", "9"], "class"),
        (vec!["--t", "0.5", "--threads", "0"], "threads"),
        (vec!["--t", "0.5", "--device", "gpu"], "device"),
        (vec!["--t", "0.5", "--device", "cuda:x"], "device"),
        // This build has no `cuda` feature (CI's): the device is refused by name, with the fix.
        (vec!["--t", "0.5", "--device", "cuda:0"], if cfg!(feature = "cuda") { "" } else { "--features cuda" }),
    ] {
        let mut args = s(&["--model", ck.to_str().unwrap(), "--input", x_in.to_str().unwrap(), "--out", eout.to_str().unwrap()]);
        args.extend(s(&flags));
        t.run(Case { label: format!("mix-eval {}", flags.join(" ")), bin: EVAL, args, inputs: vec![x_in.clone()], outputs: vec![eout.clone()], must_fail: Some(needle.into()) });
    }
    for (label, input, out, needle) in [
        ("mix-eval --out = --input", x_in.clone(), x_in.clone(), "--out"),
        ("mix-eval --input missing", dir.join("nope.safetensors"), eout.clone(), "nope.safetensors"),
        ("mix-eval --out = a document", x_in.clone(), doc.clone(), "not replaced"),
        ("mix-eval --input = a model without x", shipped("gmm2d_up.safetensors"), eout.clone(), "`x`"),
    ] {
        let args = s(&["--model", ck.to_str().unwrap(), "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--t", "0.5"]);
        let outputs = if out == eout { vec![eout.clone()] } else { vec![] };
        t.run(Case { label: label.into(), bin: EVAL, args, inputs: vec![x_in.clone(), doc.clone()], outputs, must_fail: Some(needle.into()) });
    }

    // mix-train: broken recipes, flags and aliases.
    let base: Value = serde_json::from_str(&std::fs::read_to_string(root().join("models/mlp2d_up.json")).unwrap()).unwrap();
    let net = dir.join("net.safetensors");
    let mut recipe = base.clone();
    recipe["out"] = json!(p(&net));
    recipe["data"] = json!(format!("gmm:{}", p(&shipped("gmm2d_up.safetensors"))));
    recipe["steps"] = json!(20);
    recipe["checkpoint_every"] = json!(0);
    let recipe_text = serde_json::to_string_pretty(&recipe).unwrap();
    let rfile = dir.join("recipe.json");
    let ckpt = dir.join("net.ckpt.safetensors");
    let touts = vec![net.clone(), ckpt.clone()];
    let train_case = |t: &mut Tally, label: String, text: &str, flags: &[&str], needle: Option<&str>| {
        std::fs::write(&rfile, text).unwrap();
        let mut args = vec!["--recipe".to_string(), p(&rfile)];
        args.extend(s(flags));
        t.run(Case { label, bin: TRAIN, args, inputs: vec![rfile.clone()], outputs: touts.clone(), must_fail: needle.map(String::from) });
    };
    let n = recipe_text.len();
    for c in [0, 1, n / 4, n / 2, n - 2] {
        train_case(&mut t, format!("recipe truncated at {c}"), &recipe_text[..c], &[], Some("recipe"));
    }
    for (key, val, needle) in [
        ("steps", json!(0), "steps"),
        ("batch", json!(0), "batch"),
        ("batch", json!(1u64 << 40), "batch"),
        ("arch", json!({"width": 1 << 20, "depth": 3, "time_freqs": 16, "max_freq": 200.0}), "width"),
        ("lr", json!(-1.0), "lr"),
        ("lr", json!(f64::MAX), "lr"),
        ("t_min", json!(2.0), "t_min"),
        ("warmup", json!(-3), "-3"),
        ("arch", json!({"width": 0, "depth": 3, "time_freqs": 16, "max_freq": 200.0}), "width"),
        ("arch", json!({"width": 64, "depth": 3, "time_freqs": 1u64 << 62, "max_freq": 200.0}), "time_freqs"),
        ("data", json!("gmm:/no/such.safetensors"), "/no/such"),
        ("data", json!("bogus"), "data"),
        ("data", json!("fashion-mnist:11"), "11"),
        ("out", json!(""), "out"),
        ("kind", json!("no_such_kind"), "kind"),
        ("colour", json!("red"), "colour"),
    ] {
        let mut rc = recipe.clone();
        rc[key] = val.clone();
        train_case(&mut t, format!("recipe {key} = {val}"), &serde_json::to_string(&rc).unwrap(), &[], Some(needle));
    }
    for (flags, needle) in [
        (vec!["--steps", "0"], "steps"),
        (vec!["--steps=-1"], "-1"),
        (vec!["--stop-at", "0"], "stop"),
        (vec!["--resume", "/no/such.ckpt"], "/no/such.ckpt"),
        (vec!["--out", rfile.to_str().unwrap()], "--out"),
        (vec!["--checkpoint", net.to_str().unwrap(), "--checkpoint-every", "5"], "--checkpoint"),
        (vec!["--out", model_copy.to_str().unwrap()], "--out"),
        (vec!["--out", link.to_str().unwrap()], "--out"),
        (vec!["--out", doc.to_str().unwrap()], "not replaced"),
        (vec!["--out", other_model.to_str().unwrap()], "--force"),
    ] {
        train_case(&mut t, format!("mix-train {}", flags.join(" ")), &recipe_text, &flags, Some(needle));
    }
    // Diffusers UNet2DModel recipes: every bad architecture is refused by name before any data is read,
    // and no directory is created.
    let mut drecipe: Value = serde_json::from_str(&std::fs::read_to_string(root().join("models/fmnist_unet_a.json")).unwrap()).unwrap();
    let dout = dir.join("unet_dir");
    drecipe["out"] = json!(p(&dout));
    drecipe["steps"] = json!(2);
    let douts = vec![dout.clone(), dir.join("unet_dir.ckpt.safetensors")];
    for (key, val, needle) in [
        ("down_block_types", json!(["CrossAttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]), "down_block_types"),
        ("norm_num_groups", json!(7), "norm_num_groups"),
        ("attention_head_dim", json!(0), "attention_head_dim"),
        ("in_channels", json!(0), "block_out_channels"),
        ("num_class_embeds", json!(5), "num_class_embeds"),
        ("time_embedding_type", json!("fourier"), "positional"),
        ("block_out_channels", json!([32, 64]), "block_out_channels"),
        ("layers_per_block", json!(99), "layers_per_block"),
    ] {
        let mut rc = drecipe.clone();
        rc["arch"][key] = val.clone();
        std::fs::write(&rfile, serde_json::to_string(&rc).unwrap()).unwrap();
        let args = vec!["--recipe".to_string(), p(&rfile)];
        t.run(Case { label: format!("diffusers recipe arch.{key} = {val}"), bin: TRAIN, args, inputs: vec![rfile.clone()], outputs: douts.clone(), must_fail: Some(needle.into()) });
    }
    for (key, val, needle) in [("ema_decay", json!(1.5), "ema_decay"), ("steps", json!(0), "steps"), ("snr_gamma", json!(0.0), "snr_gamma"), ("snr_gamma", json!(-5.0), "snr_gamma")] {
        let mut rc = drecipe.clone();
        rc[key] = val.clone();
        std::fs::write(&rfile, serde_json::to_string(&rc).unwrap()).unwrap();
        let args = vec!["--recipe".to_string(), p(&rfile)];
        t.run(Case { label: format!("diffusers recipe {key} = {val}"), bin: TRAIN, args, inputs: vec![rfile.clone()], outputs: douts.clone(), must_fail: Some(needle.into()) });
    }
    // An MLP recipe may not ask for an average of the weights.
    let mut rc = recipe.clone();
    rc["ema_decay"] = json!(0.9);
    train_case(&mut t, "MLP recipe with ema_decay".into(), &serde_json::to_string(&rc).unwrap(), &[], Some("ema_decay"));
    // Nor flip its data: they are not images.
    let mut rc = recipe.clone();
    rc["hflip"] = json!(true);
    train_case(&mut t, "MLP recipe with hflip".into(), &serde_json::to_string(&rc).unwrap(), &[], Some("hflip"));
    // Nor weight its loss by the SNR (an MLP recipe's loss is its own).
    let mut rc = recipe.clone();
    rc["snr_gamma"] = json!(5.0);
    train_case(&mut t, "MLP recipe with snr_gamma".into(), &serde_json::to_string(&rc).unwrap(), &[], Some("snr_gamma"));
    // Classifier recipes: an architecture the judge cannot run is refused by name before any data is read.
    let mut crecipe: Value = serde_json::from_str(&std::fs::read_to_string(root().join("models/fmnist_classifier_conv.json")).unwrap()).unwrap();
    let cout = dir.join("judge.safetensors");
    crecipe["out"] = json!(p(&cout));
    for (arch, needle) in [
        (json!({"conv": [8, 8, 8], "hidden": [16]}), "arch.conv"),
        (json!({"conv": [0], "hidden": [16]}), "arch.conv"),
        (json!({"conv": [8], "hidden": []}), "arch.hidden"),
        (json!({"conv": [8], "hidden": [16], "pool": "avg"}), "pool"),
    ] {
        let mut rc = crecipe.clone();
        rc["arch"] = arch.clone();
        std::fs::write(&rfile, serde_json::to_string(&rc).unwrap()).unwrap();
        let args = vec!["--recipe".to_string(), p(&rfile)];
        t.run(Case { label: format!("classifier recipe arch = {arch}"), bin: TRAIN, args, inputs: vec![rfile.clone()], outputs: vec![cout.clone()], must_fail: Some(needle.into()) });
    }
    // A truncated checkpoint to resume from.
    let full = dir.join("full.safetensors");
    let bytes = std::fs::read(shipped("mlp2d_up.safetensors")).unwrap();
    std::fs::write(&full, &bytes[..bytes.len() / 2]).unwrap();
    train_case(&mut t, "mix-train --resume truncated".into(), &recipe_text, &["--resume", full.to_str().unwrap()], Some("full.safetensors"));
    assert!(model_copy.exists() && std::fs::read(&model_copy).unwrap() == std::fs::read(shipped("gmm2d_up.safetensors")).unwrap());

    eprintln!("{} hostile cases: {} failed cleanly, {} succeeded (allowed), {} problems", t.cases, t.failed_cleanly, t.succeeded, t.problems.len());
    assert!(t.problems.is_empty(), "{} of {} cases misbehaved:\n{}", t.problems.len(), t.cases, t.problems.join("\n"));
}

/// Spawn `bin` with `args`, kill it with SIGKILL after `ms` milliseconds (if still running) and say
/// whether it had finished by itself.
fn run_killed(bin: &str, args: &[String], ms: u64) -> bool {
    let mut child = Command::new(bin).args(args).arg("--quiet").env("RAYON_NUM_THREADS", "1").current_dir(root()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    while std::time::Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{bin} {args:?} failed by itself");
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    false
}

#[test]
fn runs_killed_at_random_moments_leave_whole_files_and_training_resumes_to_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut r = rng::seeded(11);
    // Training: the uninterrupted run, then runs killed at random moments and resumed from whatever
    // checkpoint they left; each must end with the same network, byte for byte.
    let mut recipe: Value = serde_json::from_str(&std::fs::read_to_string(root().join("models/mlp2d_up.json")).unwrap()).unwrap();
    recipe["data"] = json!(format!("gmm:{}", p(&shipped("gmm2d_up.safetensors"))));
    recipe["steps"] = json!(400);
    recipe["batch"] = json!(128);
    recipe["checkpoint_every"] = json!(25);
    let rfile = dir.join("recipe.json");
    std::fs::write(&rfile, serde_json::to_string(&recipe).unwrap()).unwrap();
    let train = |out: &Path, ckpt: &Path, resume: bool| -> Vec<String> {
        let mut a = s(&["--recipe", rfile.to_str().unwrap(), "--out", out.to_str().unwrap(), "--checkpoint", ckpt.to_str().unwrap()]);
        if resume {
            a.extend(s(&["--resume", ckpt.to_str().unwrap()]));
        }
        a
    };
    // The same paths for every run: the network file records its recipe, paths included.
    let (out, ckpt) = (dir.join("net.safetensors"), dir.join("net.ckpt.safetensors"));
    let t0 = std::time::Instant::now();
    assert!(run_killed(TRAIN, &train(&out, &ckpt, false), 600_000));
    let full_ms = t0.elapsed().as_millis() as u64;
    let reference = std::fs::read(&out).unwrap();
    let mut kills = 0;
    for trial in 0..4 {
        std::fs::remove_file(&out).unwrap();
        let _ = std::fs::remove_file(&ckpt);
        let mut resume = false;
        for _ in 0..20 {
            let ms = 5 + (rng::uniform(&mut r) * full_ms as f64 * 0.6) as u64;
            let done = run_killed(TRAIN, &train(&out, &ckpt, resume), ms);
            for f in [&out, &ckpt] {
                if f.exists() {
                    wfrmix::load_model(f).unwrap_or_else(|e| panic!("{} left unloadable after SIGKILL: {e}", f.display()));
                }
            }
            if done {
                break;
            }
            kills += 1;
            resume = ckpt.exists();
        }
        if !std::fs::read(&out).is_ok_and(|b| b == reference) {
            // Finish the run (it may have been killed on every try).
            assert!(run_killed(TRAIN, &train(&out, &ckpt, ckpt.exists()), 600_000));
        }
        assert!(std::fs::read(&out).unwrap() == reference, "trial {trial}: resumed network differs from the uninterrupted one");
    }
    // Sampling: the outputs are either absent or whole.
    let (png, samples, report) = (dir.join("o.png"), dir.join("s.safetensors"), dir.join("r.json"));
    let mut args = s(&["--models", "weights/gmm2d_up.safetensors", "weights/gmm2d_down.safetensors", "--particles", "20000", "--steps", "200"]);
    args.extend(["--out".into(), p(&png), "--save-samples".into(), p(&samples), "--report".into(), p(&report)]);
    for _ in 0..6 {
        for f in [&png, &samples, &report] {
            let _ = std::fs::remove_file(f);
        }
        run_killed(MIX, &args, 20 + (rng::uniform(&mut r) * 1500.0) as u64);
        if report.exists() {
            serde_json::from_slice::<Value>(&std::fs::read(&report).unwrap()).expect("whole JSON report");
        }
        if samples.exists() {
            wfrmix::io::tensors::TensorFile::open(&samples).expect("whole samples file");
        }
        if png.exists() {
            image::open(&png).expect("whole PNG");
        }
    }
    eprintln!("{kills} training runs killed mid-way; every one resumed to the reference bytes");
}

/// A random JSON-ish value for a header key: numbers of every size and sign, NaN/inf text, arrays,
/// strings, nesting.
fn random_value(r: &mut Rng, depth: usize) -> String {
    let u = rng::uniform(r);
    let int = |r: &mut Rng| -> String {
        match (rng::uniform(r) * 6.0) as usize {
            0 => "0".into(),
            1 => ((rng::uniform(r) * 40.0) as u64).to_string(),
            2 => (1u64 << (rng::uniform(r) * 64.0) as u32).to_string(),
            3 => "-1".into(),
            4 => "18446744073709551616".into(),
            _ => ((rng::uniform(r) * 1000.0) as u64).to_string(),
        }
    };
    match (u * 8.0) as usize {
        0 => "NaN".into(),
        1 => "1e400".into(),
        2 => format!("{}", (rng::uniform(r) - 0.5) * 10f64.powi((rng::uniform(r) * 20.0) as i32 - 10)),
        3 if depth < 2 => format!("[{}]", (0..(rng::uniform(r) * 5.0) as usize).map(|_| int(r)).collect::<Vec<_>>().join(",")),
        4 if depth < 2 => format!("{{\"width\":{},\"depth\":{},\"time_freqs\":{},\"max_freq\":{}}}", int(r), int(r), int(r), random_value(r, depth + 1)),
        5 if depth < 2 => format!(
            "{{\"channels\":[{}],\"groups\":{},\"time_dim\":{},\"time_freqs\":{},\"max_freq\":{}}}",
            (0..(rng::uniform(r) * 4.0) as usize).map(|_| int(r)).collect::<Vec<_>>().join(","),
            int(r),
            int(r),
            int(r),
            random_value(r, depth + 1)
        ),
        6 => "\"x\"".into(),
        _ => int(r),
    }
}

#[test]
fn property_random_headers_and_settings_give_errors_or_finite_runs_never_panics() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use wfrmix::io::{write_safetensors, F32Tensor};
    use wfrmix::{Composition, ResamplePolicy, Resampler, Sampler, SamplerConfig, TimeGrid};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.safetensors");
    let mut r = rng::seeded(3);
    let (mut loaded, mut refused) = (0usize, 0usize);
    const HEADERS: usize = 1500;
    for case in 0..HEADERS {
        // A score_mlp or score_unet header with random values, and small random tensors (often of
        // the wrong shapes) under the names the loaders look for.
        let kind = ["score_mlp", "score_unet", "gaussian_mixture", "fmnist_classifier"][case % 4];
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("kind".into(), kind.into());
        for key in ["arch", "data_shape", "beta_min", "beta_max", "parameterization", "trained_on"] {
            if rng::uniform(&mut r) < 0.9 {
                meta.insert(key.into(), random_value(&mut r, 0));
            }
        }
        if rng::uniform(&mut r) < 0.5 {
            meta.insert("data_shape".into(), "[2]".into());
            meta.insert("beta_min".into(), "0.1".into());
            meta.insert("beta_max".into(), "20".into());
            meta.insert("parameterization".into(), "epsilon".into());
        }
        if kind == "gaussian_mixture" && rng::uniform(&mut r) < 0.6 {
            // Consistent shapes (K components in D dimensions), values sometimes NaN, negative or huge.
            let (k, d) = (1 + (rng::uniform(&mut r) * 3.0) as usize, 1 + (rng::uniform(&mut r) * 3.0) as usize);
            let val = |r: &mut Rng| -> f32 {
                match (rng::uniform(r) * 20.0) as usize {
                    0 => f32::NAN,
                    1 => -1.0,
                    2 => 1e38,
                    _ => 0.1 + rng::uniform(r) as f32,
                }
            };
            let w: Vec<f32> = (0..k).map(|_| val(&mut r)).collect();
            let m: Vec<f32> = (0..k * d).map(|_| val(&mut r)).collect();
            let sd: Vec<f32> = (0..k * d).map(|_| val(&mut r)).collect();
            let t = [F32Tensor { name: "weights", shape: vec![k], data: &w }, F32Tensor { name: "means", shape: vec![k, d], data: &m }, F32Tensor { name: "stds", shape: vec![k, d], data: &sd }];
            write_safetensors(&path, &t, &meta).unwrap();
        } else {
        let names = ["net.0.weight", "net.0.bias", "net.1.weight", "means", "stds", "weights", "conv_in.weight"];
        let keep: Vec<&&str> = names.iter().filter(|_| rng::uniform(&mut r) < 0.7).collect();
        let vals: Vec<(String, Vec<usize>, Vec<f32>)> = keep
            .into_iter()
            .map(|n| {
                let shape: Vec<usize> = (0..1 + (rng::uniform(&mut r) * 2.0) as usize).map(|_| 1 + (rng::uniform(&mut r) * 4.0) as usize).collect();
                let len = shape.iter().product();
                let data = (0..len).map(|_| if rng::uniform(&mut r) < 0.05 { f32::NAN } else { rng::uniform(&mut r) as f32 }).collect();
                (n.to_string(), shape, data)
            })
            .collect();
        let tensors: Vec<F32Tensor<'_>> = vals.iter().map(|(n, s, d)| F32Tensor { name: n, shape: s.clone(), data: d }).collect();
        write_safetensors(&path, &tensors, &meta).unwrap();
        }
        let res = catch_unwind(AssertUnwindSafe(|| wfrmix::load_model(&path).map(|m| {
            let d = m.dim();
            let mut out = vec![0.0; 2 * d];
            let _ = m.score(&vec![0.1; 2 * d], 0.5, &mut out);
        })));
        match res {
            Err(_) => panic!("load_model panicked on header {meta:?}"),
            Ok(Ok(())) => loaded += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().contains('\n'), "{e}");
                refused += 1
            }
        }
    }
    // Random sampler settings on a small exact mixture: Sampler::new refuses or the run is finite.
    let (up, down) = (shipped("gmm2d_up.safetensors"), shipped("gmm2d_down.safetensors"));
    let models = vec![wfrmix::load_model(&up).unwrap(), wfrmix::load_model(&down).unwrap()];
    // Mostly sensible values (so that some runs go through), else one of the odd ones.
    let pick = |r: &mut Rng, v: &[f64]| if rng::uniform(r) < 0.8 { v[5] } else { v[(rng::uniform(r) * v.len() as f64) as usize % v.len()] };
    let odd = [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e-300, 0.5, 1.0, 2.0, 1e300];
    let (mut ran, mut rejected) = (0usize, 0usize);
    const SETTINGS: usize = 400;
    for _ in 0..SETTINGS {
        let comp = match (rng::uniform(&mut r) * 5.0) as usize {
            0 => Composition::mixture(&[pick(&mut r, &odd), pick(&mut r, &odd)], wfrmix::MixtureMethod::State),
            1 => Composition::mixture(&[pick(&mut r, &odd), 1.0], wfrmix::MixtureMethod::Fr),
            2 => Composition::geometric(&[pick(&mut r, &odd), pick(&mut r, &odd)]),
            3 => Composition::power(&[pick(&mut r, &odd), 1.0], pick(&mut r, &odd)),
            _ => Composition::product(2),
        };
        let Ok(comp) = comp else {
            rejected += 1;
            continue;
        };
        let policy = ResamplePolicy::new(Resampler::Systematic, pick(&mut r, &odd), None);
        let Ok(resample) = policy else {
            rejected += 1;
            continue;
        };
        let config = SamplerConfig {
            particles: [0usize, 1, 7, 64, 64, 64, 64, usize::MAX, 1 << 40][(rng::uniform(&mut r) * 9.0) as usize % 9],
            steps: [0usize, 1, 3, 20, 20, 20, usize::MAX][(rng::uniform(&mut r) * 7.0) as usize % 7],
            t_min: pick(&mut r, &[f64::NAN, -1.0, 0.0, 1e-300, 1.0, 1e-3, 0.5]),
            noise_scale: pick(&mut r, &odd),
            corrector_steps: (rng::uniform(&mut r) * 2.0) as usize,
            corrector_snr: pick(&mut r, &odd),
            grid: [TimeGrid::uniform(), TimeGrid::log_snr(), TimeGrid::DEFAULT][(rng::uniform(&mut r) * 3.0) as usize % 3],
            resample,
            ..SamplerConfig::DEFAULT
        };
        let res = catch_unwind(AssertUnwindSafe(|| match Sampler::new(&models, comp.clone(), config.clone()) {
            Err(_) => None,
            Ok(s) if s.memory_bytes() > 1 << 28 => Some(Ok(None)),
            Ok(s) => Some(s.run(|_| {}).map(Some)),
        }));
        match res {
            Err(_) => panic!("panic for {comp:?} {config:?}"),
            Ok(None) => rejected += 1,
            Ok(Some(Ok(Some(run)))) => {
                assert!(run.samples.iter().all(|v| v.is_finite()) && run.log_weights.iter().all(|v| v.is_finite()), "{comp:?} {config:?}");
                ran += 1
            }
            Ok(Some(Ok(None))) => rejected += 1,
            Ok(Some(Err(e))) => {
                assert!(matches!(e, wfrmix::Error::NonFinite { .. }), "{e}");
                rejected += 1
            }
        }
    }
    eprintln!("{HEADERS} random headers: {loaded} loaded, {refused} refused; {SETTINGS} random settings: {ran} ran, {rejected} refused");
    assert!(loaded > 0 && refused > 0 && ran > 0 && rejected > 0, "the generators should reach both outcomes");
}

#[test]
fn a_diverging_training_run_stops_with_its_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut recipe: Value = serde_json::from_str(&std::fs::read_to_string(root().join("models/mlp2d_up.json")).unwrap()).unwrap();
    recipe["data"] = json!(format!("gmm:{}", p(&shipped("gmm2d_up.safetensors"))));
    recipe["steps"] = json!(50);
    recipe["warmup"] = json!(0);
    recipe["lr"] = json!(1e30);
    recipe["checkpoint_every"] = json!(1);
    let rfile = dir.join("recipe.json");
    std::fs::write(&rfile, serde_json::to_string(&recipe).unwrap()).unwrap();
    let (out, ckpt) = (dir.join("net.safetensors"), dir.join("net.ckpt.safetensors"));
    let o = Command::new(TRAIN)
        .args(["--recipe", rfile.to_str().unwrap(), "--out", out.to_str().unwrap(), "--checkpoint", ckpt.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("mix-train: error: training diverged: non-finite") && err.contains("at step") && err.lines().count() == 1, "{err}");
    assert!(!out.exists(), "no network written by a diverged run");
    // Whatever checkpoint was written before the divergence loads (it is finite by construction).
    if ckpt.exists() {
        wfrmix::load_model(&ckpt).unwrap();
    }
}
