//! `mix-eval`'s job: evaluate one model on given inputs at given times, to check a port against its
//! original (e.g. a diffusers checkpoint against diffusers) or to feed a benchmark. Reads the tensor `x`
//! ([N, ...data shape] or [N, D]) from a safetensors file and writes `output` (the raw network output; the
//! ε̂ of models without a network), `epsilon` (ε̂ = −σ_t s) and `score` (s), each [T, N, ...] in F32.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::io::tensors::TensorFile;
use crate::io::{F32Tensor, OutputKind};
use crate::registry::Loader;

/// Everything `mix-eval` is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalJob {
    /// The model reference ([`Loader::load`]).
    pub model: PathBuf,
    /// How it is opened (hub cache, class label).
    pub loader: Loader,
    /// The safetensors file holding `x`.
    pub input: PathBuf,
    /// Forward times t ∈ (0, 1].
    pub times: Vec<f64>,
    /// The output file.
    pub out: PathBuf,
}

/// What a finished evaluation did.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOutcome {
    /// Inputs evaluated (per time).
    pub n: usize,
    /// Times evaluated.
    pub times: usize,
    /// Wall time of the model evaluations, in seconds.
    pub seconds: f64,
    /// The file written.
    pub out: PathBuf,
}

impl EvalOutcome {
    /// The one-line summary the binary prints.
    pub fn summary(&self) -> String {
        format!(
            "{} inputs x {} times in {:.3} s ({:.1} ms per input and time); wrote output, epsilon, score to {}",
            self.n,
            self.times,
            self.seconds,
            1e3 * self.seconds / (self.n * self.times).max(1) as f64,
            self.out.display()
        )
    }
}

/// Run the job.
pub fn run(job: &EvalJob) -> Result<EvalOutcome> {
    crate::io::check_outputs(&[job.model.as_path(), job.input.as_path()], &[("--out", Some(job.out.as_path()), OutputKind::Samples)])?;
    if job.times.is_empty() || job.times.len() > 1024 {
        return Err(Error::param("--t", job.times.len(), "give 1 to 1024 times"));
    }
    if let Some(t) = job.times.iter().find(|t| !(t.is_finite() && **t > 0.0 && **t <= 1.0)) {
        return Err(Error::param("--t", t, "every time must lie in (0, 1]"));
    }
    let model = job.loader.load(&job.model)?;
    let f = TensorFile::open(&job.input)?;
    let (shape, x) = f.tensor_f64("x")?;
    let d = model.dim();
    let per: usize = shape.iter().skip(1).product();
    if shape.len() < 2 || per != d || (shape.len() > 2 && shape[1..] != *model.data_shape()) {
        return Err(Error::TensorShape {
            path: job.input.clone(),
            tensor: "x".into(),
            found: shape,
            expected: format!("[N, {}] or [N, {d}] for `{}`", model.data_shape().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "), model.name()),
        });
    }
    let n = shape[0];
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::BadValue { path: job.input.clone(), tensor: "x".into(), index: i, value: x[i], reason: "inputs must be finite".into() });
    }
    let schedule = model.schedule();
    let (mut output, mut epsilon, mut score) = (Vec::new(), Vec::new(), Vec::new());
    let start = std::time::Instant::now();
    let (mut buf, mut raw) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for &t in &job.times {
        let sigma = schedule.sigma2(t).sqrt();
        let has_raw = model.score_and_raw(&x, t, &mut buf, &mut raw)?;
        score.extend(buf.iter().map(|&v| v as f32));
        let eps: Vec<f32> = buf.iter().map(|&s| (-sigma * s) as f32).collect();
        if has_raw {
            output.extend(raw.iter().map(|&v| v as f32));
        } else {
            output.extend_from_slice(&eps);
        }
        epsilon.extend(eps);
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut out_shape = vec![job.times.len()];
    out_shape.extend_from_slice(&shape);
    let meta = std::collections::HashMap::from([
        ("model".to_string(), model.name().to_string()),
        ("t".to_string(), serde_json::to_string(&job.times).expect("numbers")),
        ("schedule".to_string(), schedule.to_string()),
    ]);
    let tensors = [
        F32Tensor { name: "output", shape: out_shape.clone(), data: &output },
        F32Tensor { name: "epsilon", shape: out_shape.clone(), data: &epsilon },
        F32Tensor { name: "score", shape: out_shape, data: &score },
    ];
    crate::io::write_safetensors(&job.out, &tensors, &meta)?;
    Ok(EvalOutcome { n, times: job.times.len(), seconds, out: job.out.clone() })
}
