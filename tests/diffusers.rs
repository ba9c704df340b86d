//! diffusers' `UNet2DModel` in candle against diffusers itself: tiny random checkpoints written by
//! `tests/fixtures/diffusers/make_fixtures.py` (diffusers + torch, run once; nothing here needs Python),
//! each with diffusers' outputs on fixed inputs. Covered: positional and Fourier time embeddings,
//! flip_sin_to_cos / freq_shift, default and scale_shift resnets, attention with several heads and with
//! one (attention_head_dim null), center_input_sample, downsample_padding 0, a mid-block scale factor, no
//! mid block, and a class-conditional model.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use wfrmix::io::tensors::TensorFile;
use wfrmix::nets::diffusers::{Unet2d, Unet2dConfig};
use wfrmix::nets::unet2d_cpu::Unet2dCpu;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusers").join(name)
}

/// A fixture's network (candle, from its files) and diffusers' inputs and outputs on it.
struct Fixture {
    net: Unet2d,
    xs: Vec<usize>,
    x: Vec<f64>,
    t: Vec<f64>,
    labels: Option<Vec<u32>>,
    want: Vec<f64>,
}

fn load_fixture(name: &str) -> Fixture {
    let dir = fixture(name);
    let cfg_path = dir.join("config.json");
    let cfg = Unet2dConfig::from_json(&cfg_path, &std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let net = Unet2d::load(cfg, &dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
    let r = TensorFile::open(&dir.join("reference.safetensors")).unwrap();
    let (xs, x) = r.tensor_f64("x").unwrap();
    let (_, t) = r.tensor_f64("timesteps").unwrap();
    let (_, want) = r.tensor_f64("out").unwrap();
    let labels: Option<Vec<u32>> = r.names().iter().any(|n| n == "class_labels").then(|| r.tensor_f64("class_labels").unwrap().1.iter().map(|&v| v as u32).collect());
    Fixture { net, xs, x, t, labels, want }
}

/// The worst error against diffusers' outputs, relative to the largest output (at least 1), of the
/// candle network and of its CPU-kernel copy, and the largest difference between the two paths.
fn check(name: &str) -> f64 {
    let Fixture { net, xs, x, t, labels, want } = load_fixture(name);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let xt = Tensor::from_vec(xf.clone(), xs.as_slice(), &Device::Cpu).unwrap();
    let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
    let got: Vec<f32> = net.forward(&xt, &tf, labels.as_deref()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let cpu = Unet2dCpu::new(&net, xs[2], xs[3]).unwrap();
    let mut fast = vec![0.0f32; want.len()];
    cpu.forward(&xf, &tf, labels.as_deref(), &mut fast).unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = |a: &[f32]| a.iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    let (err, err_cpu) = (worst(&got), worst(&fast));
    let between = got.iter().zip(&fast).fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64));
    eprintln!("{name}: max |candle − diffusers| = {err:.2e}, |cpu − diffusers| = {err_cpu:.2e}, |candle − cpu| = {between:.2e} (max |out| {scale:.3})");
    err.max(err_cpu).max(between) / scale.max(1.0)
}

// Both sides compute in f32 with different summation orders (convolutions, group norms, softmax):
// their difference is a few ulp of the largest intermediate values, ≈ 1e-6 relative; 1e-4 leaves room
// for the deeper fixtures while any wrong wiring (a missing term, a swapped sin/cos, a wrong group
// count) changes the output by O(0.1).
const TOL: f64 = 1e-4;

#[test]
fn ddpm_layout_with_attention_matches_diffusers() {
    assert!(check("ddpm_tiny") < TOL);
}

#[test]
fn scale_shift_centred_unpadded_single_head_matches_diffusers() {
    assert!(check("scale_shift") < TOL);
}

#[test]
fn class_conditional_model_matches_diffusers() {
    assert!(check("class_cond") < TOL);
}

#[test]
fn fourier_embedding_without_mid_block_matches_diffusers() {
    assert!(check("no_mid_fourier") < TOL);
}

#[test]
fn bad_configs_name_the_key() {
    let p = Path::new("config.json");
    for (text, key) in [
        (r#"{"down_block_types": ["CrossAttnDownBlock2D"], "up_block_types": ["UpBlock2D"], "block_out_channels": [32]}"#, "down_block_types"),
        (r#"{"block_out_channels": [30, 60, 90, 120]}"#, "norm_num_groups"),
        (r#"{"time_embedding_type": "learned"}"#, "time_embedding_type"),
        (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
        (r#"{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D"]}"#, "block_out_channels"),
        (r#"{"layers_per_block": 0}"#, "layers_per_block"),
        (r#"[1, 2]"#, "config"),
    ] {
        let e = Unet2dConfig::from_json(p, text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

/// The score a checkpoint gives the sampler: at t = (i + 1)/N its label is i, and s = −ε̂/σ_t with ε̂
/// from the network's output (ε directly; for v-prediction ε̂ = α v̂ + σ x), σ_t² = 1 − ᾱ_i of the
/// checkpoint's own scheduler table, compared with diffusers' `alphas_cumprod`.
#[test]
fn checkpoint_scores_follow_the_scheduler_table_and_the_prediction_type() {
    use wfrmix::ScoreModel;
    for (name, v_pred) in [("ddpm_tiny", false), ("scale_shift", true)] {
        let dir = fixture(name);
        let m = wfrmix::nets::diffusers::DiffusersModel::open(&dir, None).unwrap();
        let s = m.schedule();
        let (_, abar) = TensorFile::open(&dir.join("scheduler_reference.safetensors")).unwrap().tensor_f64("alphas_cumprod").unwrap();
        let n = abar.len();
        assert_eq!(s.train_steps(), Some(n));
        for i in [0, 1, 417, n / 2, n - 1] {
            let t = (i + 1) as f64 / n as f64;
            // diffusers builds its table in f32: relative differences up to ≈ 1e-5 after 1000 products.
            assert!((s.alpha(t).powi(2) / abar[i] - 1.0).abs() < 1e-4, "{name} ᾱ_{i}: {} vs {}", s.alpha(t).powi(2), abar[i]);
            assert!((s.label(t) - i as f64).abs() < 1e-9);
        }
        let r = TensorFile::open(&dir.join("reference.safetensors")).unwrap();
        let (xs, x) = r.tensor_f64("x").unwrap();
        let (_, ts) = r.tensor_f64("timesteps").unwrap();
        let (_, out) = r.tensor_f64("out").unwrap();
        let d: usize = xs[1..].iter().product();
        for (b, &ti) in ts.iter().enumerate() {
            let t = (ti + 1.0) / n as f64;
            let (a, sig) = (abar[ti as usize].sqrt(), (1.0 - abar[ti as usize]).sqrt());
            let xb = &x[b * d..(b + 1) * d];
            let mut got = vec![0.0; d];
            m.score(xb, t, &mut got).unwrap();
            let worst = (0..d)
                .map(|j| {
                    let eps = if v_pred { a * out[b * d + j] + sig * xb[j] } else { out[b * d + j] };
                    (got[j] + eps / sig).abs() * sig
                })
                .fold(0.0, f64::max);
            // Compared in units of ε (×σ): the network agrees to ≈ 1e-6 (above), the table to 1e-4.
            assert!(worst < 1e-3, "{name} at label {ti}: max |σ·Δs| = {worst}");
        }
        assert!(m.notes()[0].contains("scheduler_config.json"), "{:?}", m.notes());
    }
    // No scheduler config: DDPM's defaults, and the summary says so.
    let m = wfrmix::nets::diffusers::DiffusersModel::open(&fixture("class_cond"), Some(1)).unwrap();
    assert!(m.notes()[0].contains("DDPM's defaults"), "{:?}", m.notes());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// `hf:ORG/NAME[@REV]` resolves to the snapshot directory in a local hub cache, and `mix-sample` composes
/// it; a checkpoint saved by a pipeline (`unet/` and `scheduler/`) opens the same way.
#[test]
fn hub_snapshots_and_pipeline_layouts_open_as_checkpoints() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--wfrmix--ddpm-tiny");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    copy_dir(&fixture("ddpm_tiny"), &repo.join("snapshots").join(commit));
    let loader = wfrmix::registry::Loader::default().hf_cache(cache.path());
    let m = loader.load("hf:wfrmix/ddpm-tiny").unwrap();
    assert_eq!(m.data_shape(), [1, 8, 8]);
    loader.load(format!("hf:wfrmix/ddpm-tiny@{commit}")).unwrap();
    let e = loader.load("hf:wfrmix/ddpm-tiny@v2").err().unwrap().to_string();
    assert!(e.contains("hf download wfrmix/ddpm-tiny --revision v2"), "{e}");
    // A pipeline's layout: unet/{config.json, weights} and scheduler/scheduler_config.json at the top.
    let pipe = cache.path().join("pipe");
    std::fs::create_dir_all(pipe.join("unet")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("ddpm_tiny").join(f), pipe.join("unet").join(f)).unwrap();
    }
    copy_dir(&fixture("ddpm_tiny").join("scheduler"), &pipe.join("scheduler"));
    let m = wfrmix::load_model(&pipe).unwrap();
    assert!(m.notes()[0].contains("scheduler_config.json"), "{:?}", m.notes());
    let out = cache.path().join("s.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mix-sample"))
        .args(["--models", "hf:wfrmix/ddpm-tiny", pipe.to_str().unwrap(), "--particles", "8", "--steps", "5", "--quiet", "--save-samples", out.to_str().unwrap()])
        .env("HF_HUB_CACHE", cache.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.exists());
}

/// Broken checkpoints: each is one error naming the file and the key, never a panic.
#[test]
fn broken_checkpoints_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture("ddpm_tiny");
    let case = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let d = tmp.path().join(name);
        copy_dir(&base, &d);
        edit(&d);
        match wfrmix::load_model(&d) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e.to_string(),
        }
    };
    let set = |key: &'static str, v: serde_json::Value| {
        move |d: &Path| {
            let p = d.join("config.json");
            let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            c[key] = v.clone();
            std::fs::write(&p, c.to_string()).unwrap();
        }
    };
    let weights = |d: &Path| d.join("diffusion_pytorch_model.safetensors");
    for (name, edit, needles) in [
        ("no config", Box::new(|d: &Path| std::fs::remove_file(d.join("config.json")).unwrap()) as Box<dyn Fn(&Path)>, vec!["config.json"]),
        ("config not JSON", Box::new(|d: &Path| std::fs::write(d.join("config.json"), "{").unwrap()), vec!["config.json", "not JSON"]),
        ("no weights", Box::new(move |d: &Path| std::fs::remove_file(weights(d)).unwrap()), vec!["diffusion_pytorch_model.safetensors"]),
        ("truncated weights", Box::new(move |d: &Path| { let b = std::fs::read(weights(d)).unwrap(); std::fs::write(weights(d), &b[..b.len() / 2]).unwrap() }), vec!["diffusion_pytorch_model.safetensors"]),
        ("wider than its weights", Box::new(set("block_out_channels", serde_json::json!([16, 32]))), vec!["diffusion_pytorch_model.safetensors", "tensors"]),
        ("no sample_size", Box::new(set("sample_size", serde_json::Value::Null)), vec!["sample_size"]),
        ("odd sample_size", Box::new(set("sample_size", serde_json::json!(7))), vec!["sample_size"]),
        ("conditional class", Box::new(set("_class_name", serde_json::json!("UNet2DConditionModel"))), vec!["_class_name"]),
        ("bad prediction", Box::new(|d: &Path| { let p = d.join("scheduler/scheduler_config.json"); let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(); c["prediction_type"] = serde_json::json!("flow"); std::fs::write(&p, c.to_string()).unwrap() }), vec!["prediction_type", "scheduler_config.json"]),
        ("bad beta schedule", Box::new(|d: &Path| { let p = d.join("scheduler/scheduler_config.json"); let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(); c["beta_schedule"] = serde_json::json!("sigmoid"); std::fs::write(&p, c.to_string()).unwrap() }), vec!["beta_schedule"]),
        ("betas out of range", Box::new(|d: &Path| { let p = d.join("scheduler/scheduler_config.json"); let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(); c["trained_betas"] = serde_json::json!([0.1, 1.5]); std::fs::write(&p, c.to_string()).unwrap() }), vec!["beta_1"]),
    ] {
        let e = case(name, &*edit);
        assert!(!e.contains('\n'), "{name}: {e}");
        for n in needles {
            assert!(e.contains(n), "{name}: `{n}` missing from: {e}");
        }
    }
}

/// Same seed, same samples on 1 and 3 threads with a checkpoint (the CPU kernels cut the batch into
/// teams of images by index and never split a sum across threads).
#[test]
fn checkpoint_runs_do_not_depend_on_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("ddpm_tiny");
    let run = |threads: &str| {
        let out = tmp.path().join(format!("s{threads}.safetensors"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mix-sample"))
            .args(["--models", dir.to_str().unwrap(), dir.to_str().unwrap(), "--particles", "100", "--steps", "10", "--seed", "3", "--quiet", "--threads", threads])
            .arg("--save-samples")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    assert!(run("1") == run("3"));
}

/// `mix-eval` on a fixture: its raw output at t = (i + 1)/N is diffusers' output at label i, also after
/// the attention tensors are renamed to the older `query/key/value/proj_attn` naming.
#[test]
fn mix_eval_reproduces_diffusers_in_both_attention_namings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("ddpm_tiny");
    let old = tmp.path().join("old_naming");
    copy_dir(&dir, &old);
    // Rename the attention tensors the way pre-0.14 diffusers checkpoints name them.
    let w = old.join("diffusion_pytorch_model.safetensors");
    let f = TensorFile::open(&w).unwrap();
    let mut named: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for n in f.names() {
        let (s, v) = f.tensor_f64(&n).unwrap();
        let m = n.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.").replace(".to_out.0.", ".proj_attn.");
        named.push((m, s, v.iter().map(|&x| x as f32).collect()));
    }
    assert!(named.iter().any(|(n, _, _)| n.contains(".proj_attn.")));
    let tensors: Vec<wfrmix::io::F32Tensor<'_>> = named.iter().map(|(n, s, v)| wfrmix::io::F32Tensor { name: n, shape: s.clone(), data: v }).collect();
    std::fs::remove_file(&w).unwrap();
    wfrmix::io::write_safetensors(&w, &tensors, &Default::default()).unwrap();
    let r = TensorFile::open(&dir.join("reference.safetensors")).unwrap();
    let (xs, _) = r.tensor_f64("x").unwrap();
    let (_, want) = r.tensor_f64("out").unwrap();
    let d: usize = xs[1..].iter().product();
    for model in [&dir, &old] {
        let out = tmp.path().join(format!("{}.safetensors", model.file_name().unwrap().to_string_lossy()));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mix-eval"))
            .args(["--model", model.to_str().unwrap(), "--input", dir.join("reference.safetensors").to_str().unwrap(), "--t", "0.001,0.418,1", "--quiet", "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let e = TensorFile::open(&out).unwrap();
        let (shape, got) = e.tensor_f64("output").unwrap();
        assert_eq!(shape, vec![3, 3, 1, 8, 8]);
        for b in 0..3 {
            // Row b of the reference was evaluated at the b-th time.
            let worst = (0..d).map(|j| (got[(b * 3 + b) * d + j] - want[b * d + j]).abs()).fold(0.0, f64::max);
            assert!(worst < TOL, "{}: input {b}: {worst}", model.display());
        }
        assert_eq!(e.tensor_f64("score").unwrap().0, vec![3, 3, 1, 8, 8]);
    }
    // Bad input: the shape is named.
    let bad = tmp.path().join("bad.safetensors");
    wfrmix::io::write_safetensors(&bad, &[wfrmix::io::F32Tensor { name: "x", shape: vec![2, 3], data: &[0.0; 6] }], &Default::default()).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mix-eval"))
        .args(["--model", dir.to_str().unwrap(), "--input", bad.to_str().unwrap(), "--t", "0.5", "--out", tmp.path().join("o.safetensors").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.contains("tensor `x`") && err.lines().count() == 1, "{err}");
    assert!(!tmp.path().join("o.safetensors").exists());
}

/// The three prediction types give the same score on a case built for it: for x = α x₀ + σ ε, a network
/// predicting ε, v = α ε − σ x₀ or x₀ exactly yields ε̂ = ε each way.
#[test]
fn v_and_sample_predictions_give_the_epsilon_score() {
    use wfrmix::nets::diffusers::Prediction;
    let s = wfrmix::VpSchedule::discrete("cos", &wfrmix::VpSchedule::diffusers_betas("squaredcos_cap_v2", 1000, 0.0, 0.0).unwrap()).unwrap();
    for &t in &[0.01, 0.3, 0.9] {
        let (a, sig) = (s.alpha(t), s.sigma2(t).sqrt());
        for (x0, eps) in [(0.7, -1.3), (-0.2, 0.4)] {
            let x = a * x0 + sig * eps;
            let v = a * eps - sig * x0;
            for (kind, p) in [(Prediction::Epsilon, eps), (Prediction::VPrediction, v), (Prediction::Sample, x0)] {
                let e = kind.to_epsilon(p, x, a, sig);
                assert!((e - eps).abs() < 1e-12 / sig.min(1.0).max(1e-3), "{kind:?} at t = {t}: {e} vs {eps}");
            }
        }
    }
}

/// Exact Gaussian-mixture experts under a cosine schedule's discrete table: the state mixture still
/// hits its fraction (the sampler starts where the log-SNR is −10 and steps on the table's α).
#[test]
fn a_mixture_under_a_cosine_schedule_hits_its_fraction() {
    use wfrmix::{Composition, GaussianMixture, MixtureMethod, Sampler, SamplerConfig};
    let s = wfrmix::VpSchedule::discrete("cos", &wfrmix::VpSchedule::diffusers_betas("squaredcos_cap_v2", 1000, 0.0, 0.0).unwrap()).unwrap();
    let up = GaussianMixture::new(vec![-2.0, 2.0, 2.0, 2.0], vec![0.5; 4], vec![1.0, 1.0], 2, s.clone()).unwrap();
    let down = GaussianMixture::new(vec![-3.0, -2.0, 0.0, -2.0, 3.0, -2.0], vec![0.4; 6], vec![1.0; 3], 2, s).unwrap();
    let n = 4000;
    let r = Sampler::new(&[&up, &down], Composition::mixture(&[0.7, 0.3], MixtureMethod::State).unwrap(), SamplerConfig { particles: n, steps: 500, ..Default::default() })
        .unwrap()
        .run(|_| {})
        .unwrap();
    let f = r.weighted_mean(|x| if x[1] < 0.0 { 1.0 } else { 0.0 });
    // Binomial sd at N = 4000, p = 0.3: 0.0072; 0.03 is > 4 sd.
    eprintln!("cosine schedule: fraction in down's half-plane {f:.4} (truth 0.3)");
    assert!((f - 0.3).abs() < 0.03, "{f}");
}

/// The CPU kernels' reverse mode against central differences of their own forward pass, on every
/// fixture (attention with several heads and one, scale_shift, centred input, unpadded downsampling,
/// class conditioning, the Fourier embedding without a mid block): for random directions u and
/// cotangents v, u · Jᵀv must equal (v · f(x + εu) − v · f(x − εu)) / 2ε.
///
/// Tolerance: the network computes in f32, its outputs carry rounding noise of ≈ 1e-6 relative (the
/// size of its disagreement with diffusers above), so the difference quotient carries ≈
/// 1e-6·Σ|v_i f_i|/ε; 1e-5·Σ|v_i f_i|/ε bounds it with a factor 10. Truncation is O(ε² f''') ≈ 1e-4
/// relative at ε = 0.01 for inputs of unit size, covered by 2e-3·|FD|. A wrong adjoint (a missing
/// term, a transposed weight) is off by O(1) relative.
#[test]
fn cpu_kernel_vjp_matches_central_differences_on_every_fixture() {
    for name in ["ddpm_tiny", "scale_shift", "class_cond", "no_mid_fourier"] {
        let Fixture { net, xs, x, t, labels, .. } = load_fixture(name);
        let cpu = Unet2dCpu::new(&net, xs[2], xs[3]).unwrap();
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        // Fourier models take noise levels, not labels: keep them positive.
        let tf: Vec<f32> = t.iter().map(|&v| if name == "no_mid_fourier" { 0.5 + v as f32 / 1000.0 } else { v as f32 }).collect();
        let mut rng = wfrmix::rng::seeded(7);
        let mut noise = |n: usize| {
            let mut a = vec![0.0; n];
            wfrmix::rng::fill_normal(&mut rng, &mut a);
            a.iter().map(|&v| v as f32).collect::<Vec<f32>>()
        };
        let (v, u) = (noise(xf.len()), noise(xf.len()));
        let mut g = vec![0.0f32; xf.len()];
        cpu.vjp(&xf, &tf, labels.as_deref(), &v, &mut g).unwrap();
        let d = xf.len() / tf.len();
        let eps = 0.01f32;
        let eval = |s: f32| {
            let xp: Vec<f32> = xf.iter().zip(&u).map(|(a, b)| a + s * b).collect();
            let mut y = vec![0.0f32; xf.len()];
            cpu.forward(&xp, &tf, labels.as_deref(), &mut y).unwrap();
            y
        };
        let (yp, ym) = (eval(eps), eval(-eps));
        for b in 0..tf.len() {
            let rg = b * d..(b + 1) * d;
            let ad: f64 = u[rg.clone()].iter().zip(&g[rg.clone()]).map(|(a, b)| *a as f64 * *b as f64).sum();
            let fd: f64 = v[rg.clone()].iter().zip(yp[rg.clone()].iter().zip(&ym[rg.clone()])).map(|(v, (p, m))| *v as f64 * (*p as f64 - *m as f64)).sum::<f64>() / (2.0 * eps as f64);
            let mag: f64 = v[rg.clone()].iter().zip(&yp[rg.clone()]).map(|(v, y)| (*v as f64 * *y as f64).abs()).sum();
            let tol = 1e-5 * mag / eps as f64 + 2e-3 * fd.abs();
            eprintln!("{name} image {b}: u·Jᵀv = {ad:.5}, central difference {fd:.5}, |Δ| {:.2e} (tolerance {tol:.2e})", (ad - fd).abs());
            assert!((ad - fd).abs() < tol, "{name} image {b}: {ad} vs {fd}");
        }
    }
}

/// A checkpoint's score VJP (the prediction type's transform on top of the network's) against central
/// differences of its score, for ε- and v-prediction; Hutchinson divergences can use it.
#[test]
fn checkpoint_score_vjp_matches_central_differences() {
    use wfrmix::ScoreModel;
    for name in ["ddpm_tiny", "scale_shift"] {
        let m = wfrmix::nets::diffusers::DiffusersModel::open(&fixture(name), None).unwrap();
        assert!(m.has_vjp());
        let d = m.dim();
        let mut rng = wfrmix::rng::seeded(11);
        let mut noise = |n: usize| {
            let mut a = vec![0.0; n];
            wfrmix::rng::fill_normal(&mut rng, &mut a);
            a
        };
        let (x, v, u) = (noise(2 * d), noise(2 * d), noise(2 * d));
        for t in [0.3, 0.8] {
            let mut g = vec![0.0; 2 * d];
            m.vjp(&x, t, &v, &mut g).unwrap();
            let eps = 0.01;
            let sc = |s: f64| {
                let xp: Vec<f64> = x.iter().zip(&u).map(|(a, b)| a + s * b).collect();
                let mut y = vec![0.0; 2 * d];
                m.score(&xp, t, &mut y).unwrap();
                y
            };
            let (yp, ym) = (sc(eps), sc(-eps));
            for b in 0..2 {
                let rg = b * d..(b + 1) * d;
                let ad: f64 = u[rg.clone()].iter().zip(&g[rg.clone()]).map(|(a, b)| a * b).sum();
                let fd: f64 = v[rg.clone()].iter().zip(yp[rg.clone()].iter().zip(&ym[rg.clone()])).map(|(v, (p, q))| v * (p - q)).sum::<f64>() / (2.0 * eps);
                let mag: f64 = v[rg.clone()].iter().zip(&yp[rg.clone()]).map(|(v, y)| (v * y).abs()).sum();
                // As above: f32 rounding in the network ≈ 1e-6 relative of the score, over 2ε; truncation.
                let tol = 1e-5 * mag / eps + 2e-3 * fd.abs();
                assert!((ad - fd).abs() < tol, "{name} t = {t} image {b}: {ad} vs {fd} (tolerance {tol})");
            }
        }
    }
}

/// The DSM loss's parameter gradients against central differences of the loss, tensor by tensor, on
/// the fixtures with attention (several heads), scale_shift with a centred input and an unpadded
/// downsampler, and class conditioning: for each tensor a random direction u (scaled to the tensor's
/// size), u · ∇L must equal (L(θ + εu) − L(θ − εu)) / 2ε.
///
/// Tolerance: L is a mean of squares of f32 outputs; the two evaluations run the same operations on
/// inputs 2ε apart, so most rounding is shared and the quotient's noise is of the order of one f32
/// rounding of L, ≈ 1e-7·L/ε; 2e-6·L/ε bounds it twentyfold. Truncation O(ε²) is below 1e-4 relative
/// at ε = 1e-3 (covered by 2e-3·|u·∇L|). A missing or transposed gradient term is off by O(1).
#[test]
fn training_gradients_match_central_differences_tensor_by_tensor() {
    for name in ["ddpm_tiny", "scale_shift", "class_cond"] {
        let Fixture { net, xs, x, t, labels, .. } = load_fixture(name);
        let mut cpu = Unet2dCpu::new(&net, xs[2], xs[3]).unwrap();
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let mut rng = wfrmix::rng::seeded(5);
        let mut noise = |n: usize| {
            let mut a = vec![0.0; n];
            wfrmix::rng::fill_normal(&mut rng, &mut a);
            a.iter().map(|&v| v as f32).collect::<Vec<f32>>()
        };
        let target = noise(xf.len());
        let (loss, g) = cpu.loss_and_grads(&xf, &tf, labels.as_deref(), &target, None).unwrap();
        let values: Vec<Vec<f32>> = cpu.parameters().iter().map(|(_, _, v)| v.to_vec()).collect();
        let names: Vec<String> = cpu.parameters().iter().map(|(n, _, _)| n.clone()).collect();
        let loss_at = |cpu: &Unet2dCpu| {
            let mut y = vec![0.0f32; xf.len()];
            cpu.forward(&xf, &tf, labels.as_deref(), &mut y).unwrap();
            y.iter().zip(&target).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / y.len() as f64
        };
        assert!((loss_at(&cpu) / loss - 1.0).abs() < 1e-5, "{name}: the loss of loss_and_grads is the forward's");
        // Per-image weights (min-SNR-γ training): the weighted loss is Σ w_i·(image i's squared error) / n
        // (the same f32 outputs summed in another order: 1e-5 relative), and the gradients with one-hot
        // weights add up to the unweighted ones (f32 sums of the same terms: ≈ 1e-6 of the largest).
        let b = tf.len();
        let mut y = vec![0.0f32; xf.len()];
        cpu.forward(&xf, &tf, labels.as_deref(), &mut y).unwrap();
        let per_image: Vec<f64> = y.chunks(xf.len() / b).zip(target.chunks(xf.len() / b)).map(|(a, e)| a.iter().zip(e).map(|(a, e)| ((a - e) as f64).powi(2)).sum::<f64>() / y.len() as f64).collect();
        let w: Vec<f32> = (0..b).map(|i| 0.25 + 1.5 * i as f32).collect();
        let (wl, _) = cpu.loss_and_grads(&xf, &tf, labels.as_deref(), &target, Some(&w)).unwrap();
        let expect: f64 = per_image.iter().zip(&w).map(|(l, &w)| l * w as f64).sum();
        assert!((wl / expect - 1.0).abs() < 1e-5, "{name}: weighted loss {wl} against {expect}");
        let mut sum: Vec<Vec<f32>> = g.0.iter().map(|v| vec![0.0; v.len()]).collect();
        for i in 0..b {
            let onehot: Vec<f32> = (0..b).map(|j| (i == j) as u8 as f32).collect();
            let (_, gi) = cpu.loss_and_grads(&xf, &tf, labels.as_deref(), &target, Some(&onehot)).unwrap();
            sum.iter_mut().zip(&gi.0).for_each(|(s, v)| s.iter_mut().zip(v).for_each(|(s, v)| *s += v));
        }
        let big = g.0.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        let off = sum.iter().flatten().zip(g.0.iter().flatten()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(off <= 1e-5 * big, "{name}: one-hot weighted gradients sum to the unweighted ones within {off} (largest {big})");
        let eps = 1e-3f32;
        let mut worst = 0.0f64;
        for (k, tensor) in values.iter().enumerate() {
            let rms = (tensor.iter().map(|v| (v * v) as f64).sum::<f64>() / tensor.len() as f64).sqrt() as f32;
            let u: Vec<f32> = noise(tensor.len()).iter().map(|v| v * (rms + 0.05)).collect();
            let ad: f64 = u.iter().zip(&g.0[k]).map(|(a, b)| *a as f64 * *b as f64).sum();
            let mut shifted = |s: f32| {
                let mut vals = values.clone();
                vals[k].iter_mut().zip(&u).for_each(|(v, d)| *v += s * d);
                cpu.set_parameters(&vals);
                loss_at(&cpu)
            };
            let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
            let tol = 2e-6 * loss / eps as f64 + 2e-3 * ad.abs();
            worst = worst.max((ad - fd).abs() / tol);
            assert!((ad - fd).abs() < tol, "{name} {}: u·∇L = {ad}, central difference {fd} (tolerance {tol})", names[k]);
        }
        cpu.set_parameters(&values);
        eprintln!("{name}: {} tensors, worst |Δ| / tolerance = {worst:.3}", values.len());
    }
}

/// Write a `diffusers_unet2d` recipe for a tiny network ([8, 16] channels, one resnet a level,
/// GroupNorm(4)) on Fashion-MNIST's Trouser and Bag, batch 6, into `recipe`, with `arch` added to its
/// architecture and `run` to its top level.
fn write_tiny_recipe(recipe: &Path, out: &Path, arch: serde_json::Value, run: serde_json::Value) {
    let mut r = serde_json::json!({
        "kind": "diffusers_unet2d", "data": "fashion-mnist:1,8", "out": out,
        "arch": {"in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
        "batch": 6, "weight_decay": 0.0, "t_min": 0.001
    });
    for (k, v) in arch.as_object().unwrap() {
        r["arch"][k] = v.clone();
    }
    for (k, v) in run.as_object().unwrap() {
        r[k] = v.clone();
    }
    std::fs::write(recipe, r.to_string()).unwrap();
}

/// `mix-train` on a `diffusers_unet2d` recipe: the directory it writes opens as a checkpoint
/// (diffusers' root layout, DDPM scheduler), the candle network and the CPU kernels agree on it, an
/// interrupted run resumed from its checkpoint writes the same weights as an uninterrupted one, so do
/// runs on one and on three threads (with `hflip`, whose draws come from the same stream, and `snr_gamma`), and a file
/// where the directory should go is refused untouched.
#[test]
fn mix_train_writes_diffusers_checkpoints_and_resumes_exactly() {
    if !common::require_fashion_mnist() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("r.json");
    let full = tmp.path().join("full");
    write_tiny_recipe(
        &recipe,
        &full,
        serde_json::json!({"attention_head_dim": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}),
        serde_json::json!({"steps": 12, "lr": 1e-3, "warmup": 3, "seed": 3, "ema_decay": 0.9, "hflip": true, "snr_gamma": 5.0, "checkpoint_every": 5}),
    );
    let train = |extra: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mix-train")).arg("--recipe").arg(&recipe).arg("--quiet").args(extra).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok, err) = train(&[]);
    assert!(ok, "{err}");
    let part = tmp.path().join("part");
    let ckpt = tmp.path().join("part.ckpt.safetensors");
    let (ok, err) = train(&["--out".as_ref(), part.as_os_str(), "--stop-at".as_ref(), "7".as_ref()]);
    assert!(ok && ckpt.exists(), "{err}");
    let resumed = tmp.path().join("resumed");
    let (ok, err) = train(&["--out".as_ref(), resumed.as_os_str(), "--resume".as_ref(), ckpt.as_os_str(), "--checkpoint-every".as_ref(), "0".as_ref()]);
    assert!(ok, "{err}");
    let w = "diffusion_pytorch_model.safetensors";
    let tensors = |d: &Path| {
        let f = TensorFile::open(&d.join(w)).unwrap();
        let mut names = f.names();
        names.sort();
        names.iter().map(|n| (n.clone(), f.tensor_f64(n).unwrap())).collect::<Vec<_>>()
    };
    assert!(tensors(&full) == tensors(&resumed), "resumed training differs from the uninterrupted run");
    // The same run on one thread and on three: the same network (teams by index, sums in order).
    // A whole run of recipe file `r` into `out` on `threads` threads, without checkpoints.
    let train_into = |r: &Path, out: &Path, threads: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mix-train"))
            .env("RAYON_NUM_THREADS", threads)
            .args(["--recipe".as_ref(), r.as_os_str(), "--quiet".as_ref(), "--out".as_ref(), out.as_os_str(), "--checkpoint-every".as_ref(), "0".as_ref()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    for threads in ["1", "3"] {
        let other = tmp.path().join(format!("threads{threads}"));
        train_into(&recipe, &other, threads);
        assert!(tensors(&full) == tensors(&other), "training on {threads} thread(s) differs");
    }
    // The flips and the loss weights are applied: without `hflip`, or without `snr_gamma`, the same
    // recipe trains another network.
    for key in ["hflip", "snr_gamma"] {
        let mut plain: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&recipe).unwrap()).unwrap();
        plain.as_object_mut().unwrap().remove(key);
        let plain_recipe = tmp.path().join(format!("no_{key}.json"));
        std::fs::write(&plain_recipe, plain.to_string()).unwrap();
        let other = tmp.path().join(format!("no_{key}"));
        train_into(&plain_recipe, &other, "1");
        assert!(tensors(&full) != tensors(&other), "{key} changed nothing");
    }
    // The directory is a checkpoint: it opens with its scheduler, and both evaluation paths agree.
    let m = wfrmix::nets::diffusers::DiffusersModel::open(&full, None).unwrap();
    use wfrmix::ScoreModel;
    assert!(m.notes()[0].contains("scheduler_config.json"), "{:?}", m.notes());
    assert_eq!(m.schedule().train_steps(), Some(1000));
    let net = m.network();
    let cpu = Unet2dCpu::new(net, 28, 28).unwrap();
    let mut x = vec![0.0; 2 * 784];
    wfrmix::rng::fill_normal(&mut wfrmix::rng::seeded(1), &mut x);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut fast = vec![0.0f32; xf.len()];
    cpu.forward(&xf, &[10.0, 900.0], None, &mut fast).unwrap();
    let xt = Tensor::from_vec(xf.clone(), (2, 1, 28, 28), &Device::Cpu).unwrap();
    let slow: Vec<f32> = net.forward(&xt, &[10.0, 900.0], None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let diff = slow.iter().zip(&fast).fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
    // Same network, two f32 summation orders (see TOL above).
    assert!(diff < 1e-4, "candle and the CPU kernels differ by {diff} on a trained checkpoint");
    // A file where the directory would go is refused and left alone.
    let file = tmp.path().join("a_file");
    std::fs::write(&file, b"mine").unwrap();
    let (ok, err) = train(&["--out".as_ref(), file.as_os_str()]);
    assert!(!ok && err.contains("--out") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

/// A class-conditional `diffusers_unet2d` recipe (`num_class_embeds`) trains on the images' own labels:
/// the embedding rows of classes absent from the data get no gradient (zero moments, no weight decay,
/// so AdamW leaves them at their initial values, and so does the average), those of the data's classes
/// move; the checkpoint needs a class label, and `mix-sample` composes it with itself class against
/// class (`--class-label 1 8`), refusing a label count that is neither one nor one per model.
#[test]
fn mix_train_trains_class_conditional_checkpoints_on_the_labels() {
    if !common::require_fashion_mnist() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("r.json");
    let full = tmp.path().join("cond");
    write_tiny_recipe(
        &recipe,
        &full,
        serde_json::json!({"num_class_embeds": 10, "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}),
        serde_json::json!({"steps": 6, "lr": 1e-2, "warmup": 1, "seed": 4, "ema_decay": 0.5, "checkpoint_every": 0}),
    );
    let run = |bin: &str, args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let train = env!("CARGO_BIN_EXE_mix-train");
    let (ok, err) = run(train, &["--recipe".as_ref(), recipe.as_os_str(), "--quiet".as_ref()]);
    assert!(ok, "{err}");
    let early = tmp.path().join("early");
    let (ok, err) = run(train, &["--recipe".as_ref(), recipe.as_os_str(), "--quiet".as_ref(), "--out".as_ref(), early.as_os_str(), "--stop-at".as_ref(), "2".as_ref()]);
    assert!(ok, "{err}");
    let emb = |d: &Path| {
        let (s, v) = TensorFile::open(&d.join("diffusion_pytorch_model.safetensors")).unwrap().tensor_f64("class_embedding.weight").unwrap();
        assert_eq!(s[0], 10);
        v.chunks(s[1]).map(|r| r.to_vec()).collect::<Vec<_>>()
    };
    let (a, b) = (emb(&full), emb(&early));
    for c in 0..10 {
        if c == 1 || c == 8 {
            assert!(a[c] != b[c], "class {c}'s embedding did not move between steps 2 and 6");
        } else {
            assert!(a[c] == b[c], "class {c} is not in the data, yet its embedding moved");
        }
    }
    let sample = env!("CARGO_BIN_EXE_mix-sample");
    let out = tmp.path().join("s.safetensors");
    let base = |labels: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = ["--models", full.to_str().unwrap(), full.to_str().unwrap(), "--particles", "4", "--steps", "3", "--quiet", "--save-samples", out.to_str().unwrap()].iter().map(Into::into).collect();
        if !labels.is_empty() {
            v.push("--class-label".into());
            v.extend(labels.iter().map(Into::into));
        }
        v
    };
    let call = |labels: &[&str]| {
        let a = base(labels);
        run(sample, &a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>())
    };
    let (ok, err) = call(&[]);
    assert!(!ok && err.contains("class") && err.lines().count() == 1 && !out.exists(), "{err}");
    let (ok, err) = call(&["1", "8", "3"]);
    assert!(!ok && err.contains("one per model") && err.lines().count() == 1 && !out.exists(), "{err}");
    let (ok, err) = call(&["1", "8"]);
    assert!(ok && out.exists(), "{err}");
}
