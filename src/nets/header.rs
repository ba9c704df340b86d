//! What every noise-prediction network file shares, whatever its architecture: the header metadata
//! (data shape, forward schedule, parameterisation, provenance) read and written with errors that name the
//! file and the key, the batch check, σ_t, the sinusoidal time embedding and candle's error mapping.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::tensors::TensorFile;
use crate::io::{write_safetensors, F32Tensor};
use crate::schedule::VpSchedule;

/// The only parameterisation implemented: the network predicts the noise ε.
pub const PARAMETERIZATION: &str = "epsilon";

/// The embedding frequencies ω_k = max_freq^{k/(K−1)} (K = `k`; ω = 1 when K = 1).
pub fn geometric_freqs(k: usize, max_freq: f64) -> Vec<f64> {
    (0..k).map(|i| if k == 1 { 1.0 } else { max_freq.powf(i as f64 / (k - 1) as f64) }).collect()
}

/// The sinusoidal time features e(t) for frequencies `freqs` into `out` (sines then cosines); the MLP's
/// and the U-Net's.
pub(crate) fn time_embedding(freqs: &[f64], t: f64, out: &mut [f64]) {
    let k = freqs.len();
    for (i, w) in freqs.iter().enumerate() {
        out[i] = (w * t).sin();
        out[k + i] = (w * t).cos();
    }
}

/// Everything in a network file besides the architecture and the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct NetInfo {
    /// Shape of one data item.
    pub data_shape: Vec<usize>,
    /// The forward schedule the network was trained under.
    pub schedule: VpSchedule,
    /// What it was trained on, e.g. `gmm:weights/gmm2d_up.safetensors`.
    pub trained_on: String,
    /// The training recipe (JSON), if known.
    pub recipe: Option<String>,
    /// Name used in messages.
    pub name: String,
}

impl NetInfo {
    /// Header metadata of a network file of `kind` with architecture JSON `arch`: the keys every
    /// noise-prediction network shares (data shape, schedule, parameterisation, provenance).
    pub fn metadata(&self, kind: &str, arch: String) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("kind".into(), kind.into());
        m.insert("arch".into(), arch);
        m.insert("data_shape".into(), serde_json::to_string(&self.data_shape).expect("plain vec"));
        m.insert("beta_min".into(), self.schedule.beta_min().to_string());
        m.insert("beta_max".into(), self.schedule.beta_max().to_string());
        m.insert("parameterization".into(), PARAMETERIZATION.into());
        m.insert("trained_on".into(), self.trained_on.clone());
        m.insert("name".into(), self.name.clone());
        if let Some(r) = &self.recipe {
            m.insert("recipe".into(), r.clone());
        }
        m
    }

    /// σ_t of the network's schedule, the divisor of its score −ε̂/σ_t (an error for t ≤ 0).
    pub fn sigma(&self, t: f64) -> Result<f64> {
        let s = self.schedule.sigma2(t).sqrt();
        if !(t.is_finite() && s > 0.0) {
            return Err(Error::param("t", t, "a noise-prediction network's score −ε̂/σ_t needs t > 0"));
        }
        Ok(s)
    }

    /// The number of items n in a batch of `x.len()` inputs and `out` outputs for this network (an error
    /// unless `x` holds whole items and `out` as many values).
    pub(crate) fn check_batch(&self, x: &[f64], out: usize) -> Result<usize> {
        let d: usize = self.data_shape.iter().product();
        if !x.len().is_multiple_of(d) || out != x.len() {
            return Err(Error::param(
                format!("batch for `{}`", self.name),
                format!("{} inputs / {} outputs", x.len(), out),
                format!("expected n × {d} inputs and as many outputs"),
            ));
        }
        Ok(x.len() / d)
    }
}

/// The header of a network file being opened: the metadata every noise-prediction network's file holds
/// ([`NetInfo::metadata`]), read with errors that name the file and the key.
pub(crate) struct Header<'a> {
    f: &'a TensorFile,
}

impl<'a> Header<'a> {
    /// The header of `f`, whose `kind` must be `kind`.
    pub fn open(f: &'a TensorFile, kind: &str) -> Result<Self> {
        let h = Header { f };
        match f.metadata("kind") {
            Some(k) if k == kind => Ok(h),
            other => Err(h.err("kind", format!("expected \"{kind}\", found {other:?}"))),
        }
    }

    /// An error about metadata key `key`.
    pub fn err(&self, key: &str, reason: String) -> Error {
        Error::Metadata { path: self.f.path().into(), key: key.into(), reason }
    }

    /// A required key's value (`what`: what it holds, for the error).
    pub fn req(&self, key: &str, what: &str) -> Result<&'a str> {
        self.f.metadata(key).ok_or_else(|| self.err(key, format!("missing from the header metadata ({what})")))
    }

    /// The architecture `arch` (JSON, like `C::default()`'s) and its text.
    pub fn arch<C: Default + Serialize + DeserializeOwned>(&self) -> Result<(C, &'a str)> {
        let example = serde_json::to_string(&C::default()).unwrap_or_default();
        let arch_s = self.req("arch", &format!("the architecture as JSON, e.g. {example}"))?;
        let cfg = serde_json::from_str(arch_s).map_err(|e| self.err("arch", format!("`{arch_s}`: {e}; expected JSON like {example}")))?;
        Ok((cfg, arch_s))
    }

    /// The data shape `data_shape` (a JSON array such as `example`) and its text.
    pub fn data_shape(&self, example: &str) -> Result<(Vec<usize>, &'a str)> {
        let shape_s = self.req("data_shape", &format!("a JSON array such as {example}"))?;
        let shape: Vec<usize> = serde_json::from_str(shape_s).map_err(|e| self.err("data_shape", format!("`{shape_s}`: {e}; expected a JSON array such as {example}")))?;
        crate::limits::data_shape("data_shape", &shape).map_err(|e| self.err("data_shape", e.to_string()))?;
        Ok((shape, shape_s))
    }

    /// The network's [`NetInfo`] for data of shape `data_shape`: its schedule, parameterisation (which
    /// must be [`PARAMETERIZATION`]), data source, recipe and name (default: the file's path).
    pub fn info(&self, data_shape: Vec<usize>) -> Result<NetInfo> {
        let num = |key: &str| -> Result<f64> {
            let s = self.req(key, "the forward schedule")?;
            s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| self.err(key, format!("`{s}` is not a finite number")))
        };
        let schedule = VpSchedule::new(num("beta_min")?, num("beta_max")?).map_err(|e| self.err("beta_min/beta_max", e.to_string()))?;
        let par = self.req("parameterization", "what the network predicts")?;
        if par != PARAMETERIZATION {
            return Err(self.err("parameterization", format!("`{par}` is not supported (only `{PARAMETERIZATION}`: the network predicts the noise)")));
        }
        let trained_on = self.req("trained_on", "the data source the network was trained on")?.to_string();
        let name = self.f.metadata("name").map(String::from).unwrap_or_else(|| self.f.path().display().to_string());
        Ok(NetInfo { data_shape, schedule, trained_on, recipe: self.f.metadata("recipe").map(String::from), name })
    }
}

/// Write a network file (F32), atomically: its parameter tensors `params` followed by `extra_tensors`,
/// its header metadata `meta` extended by `extra_meta` (checkpoint state).
pub(crate) fn save_net<'a>(
    path: &Path,
    mut params: Vec<F32Tensor<'a>>,
    mut meta: HashMap<String, String>,
    extra_meta: &HashMap<String, String>,
    extra_tensors: &[F32Tensor<'a>],
) -> Result<()> {
    params.extend(extra_tensors.iter().map(|t| F32Tensor { name: t.name, shape: t.shape.clone(), data: t.data }));
    meta.extend(extra_meta.iter().map(|(k, v)| (k.clone(), v.clone())));
    crate::io::check_finite_tensors(path, &params)?;
    write_safetensors(path, &params, &meta)
}

/// candle errors, named by what was being done.
pub(crate) fn backend(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Backend { what: what.to_string(), reason: candle_message(&e) }
}

/// A candle error's message without the backtrace candle appends when `RUST_BACKTRACE` is set, so that
/// every error stays one line.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().trim_end().to_string()
}

