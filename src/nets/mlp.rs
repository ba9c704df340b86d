//! The time-conditioned MLP score network for vector data (file kind `score_mlp`).
//!
//! Architecture (one source of truth: [`MlpConfig`], used by both the f64 inference path below and the
//! candle training graph in [`CandleMlp`]):
//!
//! ```text
//! e(t)  = [sin(ω_1 t) … sin(ω_K t), cos(ω_1 t) … cos(ω_K t)],  ω_k geometric from 1 to max_freq
//! h_0   = [x, e(t)]                                   (x flattened to d values)
//! h_l   = silu(W_l h_{l−1} + b_l),  l = 1 … depth    (width units; W_1 is [width, d + 2K])
//! ε̂     = W_out h_depth + b_out  (+ σ_t·x with `skip`) (W_out is [d, width])
//! s     = −ε̂ / σ_t                                    (noise prediction, maths §1)
//! ```
//!
//! Tensors are named `net.{i}.weight` ([out, in], the candle/PyTorch `Linear` convention) and
//! `net.{i}.bias` for i = 0 … depth (i = depth is the output layer). Only matmul, add and SiLU are used,
//! whose input gradients candle computes correctly; the inference path does not use candle at all: it
//! is a hand-written f64 forward and reverse pass (gemm matrix products), because candle's backward also
//! computes every weight gradient and costs several forwards per vector–Jacobian product.
//!
//! File metadata (all required unless marked optional):
//! `kind` = `score_mlp`; `arch` = JSON `{"width":W,"depth":L,"time_freqs":K,"max_freq":F}`;
//! `data_shape` = JSON array, e.g. `[2]`; `beta_min`, `beta_max` (the forward schedule);
//! `parameterization` = `epsilon`; `trained_on` (the data source); optional `recipe` (the training
//! recipe as JSON), `name`, `train_step`. Checkpoints may also hold `optim.*` tensors (ignored here).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::header::{backend, geometric_freqs, save_net, time_embedding, Header, NetInfo};
use crate::error::{Error, Result};
use crate::io::F32Tensor;
use crate::model::ScoreModel;
use crate::rng::{self, Rng};
use crate::schedule::VpSchedule;
use crate::io::tensors::TensorFile;

/// Rows per matrix product in the inference path (see `ScoreMlp::in_blocks`).
pub const BLOCK: usize = 32;

/// The `kind` of MLP score-network files.
pub const KIND: &str = "score_mlp";
/// Hyper-parameters of the time-conditioned MLP (the `arch` metadata key).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Units per hidden layer.
    pub width: usize,
    /// Number of hidden layers (≥ 1).
    pub depth: usize,
    /// Number of sinusoidal frequencies K of the time embedding (2K features).
    pub time_freqs: usize,
    /// Highest embedding frequency (the lowest is 1); t ∈ [0, 1].
    pub max_freq: f64,
    /// Input skip: ε̂ = σ_t·x + MLP(x, t) (σ_t·x is the optimal noise prediction for N(0, I) data),
    /// so that the network need not reproduce x through its hidden layers at high noise, where score
    /// errors are amplified most. Optional in `arch` (default false; not written when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig { width: 64, depth: 3, time_freqs: 16, max_freq: 200.0, skip: false }
    }
}

impl MlpConfig {
    /// Ranges: width, depth, time_freqs ≥ 1; max_freq finite and ≥ 1.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.width == 0 || self.depth == 0 || self.time_freqs == 0 {
            return Err(format!("width ({}), depth ({}) and time_freqs ({}) must be ≥ 1", self.width, self.depth, self.time_freqs));
        }
        if !(self.max_freq.is_finite() && self.max_freq >= 1.0) {
            return Err(format!("max_freq = {} must be finite and ≥ 1", self.max_freq));
        }
        use crate::limits::{MAX_FREQ, MAX_LAYERS, MAX_TIME_FREQS, MAX_WIDTH};
        if self.width > MAX_WIDTH || self.depth > MAX_LAYERS || self.time_freqs > MAX_TIME_FREQS || self.max_freq > MAX_FREQ {
            return Err(format!(
                "width ({}), depth ({}), time_freqs ({}) and max_freq ({}) may be at most {MAX_WIDTH}, {MAX_LAYERS}, {MAX_TIME_FREQS} and {MAX_FREQ}",
                self.width, self.depth, self.time_freqs, self.max_freq
            ));
        }
        Ok(())
    }

    /// Number of time-embedding features (2K).
    pub fn time_features(&self) -> usize {
        2 * self.time_freqs
    }

    /// (out, in) of every layer for data dimension d, output layer last.
    pub fn layer_shapes(&self, d: usize) -> Vec<(usize, usize)> {
        let mut v = vec![(self.width, d + self.time_features())];
        v.extend((1..self.depth).map(|_| (self.width, self.width)));
        v.push((d, self.width));
        v
    }

    /// Number of trainable parameters for data dimension d.
    pub fn parameters(&self, d: usize) -> usize {
        self.layer_shapes(d).iter().map(|(o, i)| o * i + o).sum()
    }

    /// The embedding frequencies ω_k = max_freq^{k/(K−1)}.
    pub fn freqs(&self) -> Vec<f64> {
        geometric_freqs(self.time_freqs, self.max_freq)
    }

    /// e(t) into `out` (2K values: sines then cosines).
    pub fn embed(&self, freqs: &[f64], t: f64, out: &mut [f64]) {
        time_embedding(freqs, t, out)
    }
}

/// Name of layer i's weight tensor.
pub fn weight_name(i: usize) -> String {
    format!("net.{i}.weight")
}

/// Name of layer i's bias tensor.
pub fn bias_name(i: usize) -> String {
    format!("net.{i}.bias")
}

struct Dense {
    out: usize,
    inp: usize,
    w: Vec<f64>,
    b: Vec<f64>,
}

/// A loaded (or freshly initialised) MLP score network; a [`ScoreModel`].
pub struct ScoreMlp {
    info: NetInfo,
    cfg: MlpConfig,
    d: usize,
    layers: Vec<Dense>,
    freqs: Vec<f64>,
    /// Each layer's Wᵀ (layer 0: only its x columns), made on the first VJP: the reverse pass reads
    /// Wᵀ down gemm's columns as the forward reads W.
    wt: std::sync::OnceLock<Vec<Vec<f64>>>,
}

fn silu(z: f64) -> f64 {
    z / (1.0 + (-z).exp())
}

fn silu_grad(z: f64) -> f64 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 + z * (1.0 - s))
}

/// dst[m × n] = A · B with A[i, kk] = a[i·a.0 + kk·a.1], B[kk, j] = b[kk·b.0 + j·b.1] and dst[i, j] at
/// dst[i·c.0 + j·c.1] (each pair: row stride, column stride; single thread: the engine splits batches
/// across threads itself).
fn matmul(m: usize, n: usize, k: usize, a: &[f64], (a_rs, a_cs): (usize, usize), b: &[f64], (b_rs, b_cs): (usize, usize), dst: &mut [f64], (c_rs, c_cs): (usize, usize)) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs && dst.len() > (m - 1) * c_rs + (n - 1) * c_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every index the strides reach inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The n × c row-major `x` as c × n (feature-major: feature j of row i at j·n + i), times `scale`.
fn to_feature_major(x: &[f64], c: usize, scale: f64) -> Vec<f64> {
    let n = x.len() / c;
    let mut t = vec![0.0; x.len()];
    for (i, row) in x.chunks_exact(c).enumerate() {
        row.iter().enumerate().for_each(|(j, &v)| t[j * n + i] = scale * v);
    }
    t
}

impl ScoreMlp {
    /// A freshly initialised network: weights and biases U(−1/√in, 1/√in) (candle's `Linear` default),
    /// drawn from our seeded stream (candle's own RNG cannot be seeded).
    pub fn init(cfg: MlpConfig, info: NetInfo, rng: &mut Rng) -> Result<Self> {
        cfg.check().map_err(|r| Error::param("arch", serde_json::to_string(&cfg).unwrap_or_default(), r))?;
        let d: usize = info.data_shape.iter().product();
        let mut params = Vec::new();
        for (out, inp) in cfg.layer_shapes(d) {
            let bound = 1.0 / (inp as f64).sqrt();
            let mut draw = |len: usize| -> Vec<f32> { (0..len).map(|_| ((2.0 * rng::uniform(rng) - 1.0) * bound) as f32).collect() };
            let w = draw(out * inp);
            let b = draw(out);
            params.push(w);
            params.push(b);
        }
        Self::from_f32(cfg, info, &params)
    }

    /// Build from f32 parameters in the order w_0, b_0, w_1, b_1, … (shapes from `cfg`).
    pub fn from_f32(cfg: MlpConfig, info: NetInfo, params: &[Vec<f32>]) -> Result<Self> {
        cfg.check().map_err(|r| Error::param("arch", serde_json::to_string(&cfg).unwrap_or_default(), r))?;
        let d: usize = info.data_shape.iter().product();
        if d == 0 {
            return Err(Error::param("data_shape", format!("{:?}", info.data_shape), "must be non-empty with positive sizes"));
        }
        let shapes = cfg.layer_shapes(d);
        if params.len() != 2 * shapes.len() {
            return Err(Error::param("parameters", params.len(), format!("expected {} tensors", 2 * shapes.len())));
        }
        let mut layers = Vec::with_capacity(shapes.len());
        for (i, &(out, inp)) in shapes.iter().enumerate() {
            let (w, b) = (&params[2 * i], &params[2 * i + 1]);
            if w.len() != out * inp || b.len() != out {
                return Err(Error::param(format!("layer {i}"), format!("{} + {} values", w.len(), b.len()), format!("expected [{out}, {inp}] and [{out}]")));
            }
            layers.push(Dense { out, inp, w: w.iter().map(|&v| v as f64).collect(), b: b.iter().map(|&v| v as f64).collect() });
        }
        Ok(ScoreMlp { freqs: cfg.freqs(), info, cfg, d, layers, wt: std::sync::OnceLock::new() })
    }

    /// The parameters as f32, in the order of [`Self::from_f32`], with their names and shapes.
    pub fn to_f32(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut v = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            v.push((weight_name(i), vec![l.out, l.inp], l.w.iter().map(|&x| x as f32).collect()));
            v.push((bias_name(i), vec![l.out], l.b.iter().map(|&x| x as f32).collect()));
        }
        v
    }

    /// The architecture.
    pub fn config(&self) -> MlpConfig {
        self.cfg
    }

    /// Data source, schedule and recipe.
    pub fn info(&self) -> &NetInfo {
        &self.info
    }

    /// Open a `score_mlp` file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_file(&TensorFile::open(path)?)
    }

    /// Build from an opened file, checking every metadata key against the tensors.
    pub fn from_file(f: &TensorFile) -> Result<Self> {
        let path = f.path();
        let h = Header::open(f, KIND)?;
        let (cfg, arch_s) = h.arch::<MlpConfig>()?;
        cfg.check().map_err(|r| h.err("arch", r))?;
        let (data_shape, shape_s) = h.data_shape("[2]")?;
        if data_shape.is_empty() || data_shape.contains(&0) {
            return Err(h.err("data_shape", format!("{data_shape:?} must be non-empty with positive sizes")));
        }
        let info = h.info(data_shape)?;
        let d: usize = info.data_shape.iter().product();
        let shapes = cfg.layer_shapes(d);
        let mut expected = BTreeSet::new();
        let mut params = Vec::new();
        for (i, &(out, inp)) in shapes.iter().enumerate() {
            for (name, want) in [(weight_name(i), vec![out, inp]), (bias_name(i), vec![out])] {
                let (shape, vals) = f.tensor_f64(&name)?;
                if shape != want {
                    let role = if i == 0 {
                        format!("layer 0 takes d + 2·time_freqs = {d} + {} inputs", cfg.time_features())
                    } else if i == cfg.depth {
                        format!("the output layer maps width {} to d = {d}", cfg.width)
                    } else {
                        format!("hidden layers are width × width = {}", cfg.width)
                    };
                    return Err(Error::TensorShape {
                        path: path.into(),
                        tensor: name,
                        found: shape,
                        expected: format!("{want:?} from metadata arch = {arch_s} and data_shape = {shape_s} ({role})"),
                    });
                }
                params.push(vals.iter().map(|&v| v as f32).collect::<Vec<f32>>());
                expected.insert(name);
            }
        }
        if let Some(extra) = f.names().into_iter().find(|n| !expected.contains(n) && !n.starts_with("optim.")) {
            return Err(h.err(
                "arch",
                format!("depth = {} means tensors net.0 … net.{}, but the file also holds `{extra}`", cfg.depth, cfg.depth),
            ));
        }
        Self::from_f32(cfg, info, &params)
    }

    /// The header metadata this network is written with.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.info.metadata(KIND, serde_json::to_string(&self.cfg).expect("plain struct"))
    }

    /// Write the network (F32), atomically, with `extra` metadata and extra tensors (checkpoint state).
    pub fn save_with(&self, path: &Path, extra_meta: &HashMap<String, String>, extra_tensors: &[F32Tensor<'_>]) -> Result<()> {
        let params = self.to_f32();
        let tensors = params.iter().map(|(n, s, v)| F32Tensor { name: n, shape: s.clone(), data: v }).collect();
        save_net(path, tensors, self.metadata(), extra_meta, extra_tensors)
    }

    /// Write the network (F32) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, &HashMap::new(), &[])
    }

    /// ε̂(x, t) for a batch (n × d) into `out`; with `pre` given, also keeps every hidden layer's
    /// pre-activations (feature-major, for the reverse pass).
    ///
    /// The hidden layers are kept feature-major (unit j of row i at j·n + i): gemm's kernels read
    /// their left operand and write their result down columns, so in this layout neither is copied
    /// into a packed buffer (row-major activations were re-packed element by element for every block
    /// of output columns: 43% of the time, by perf, at batch 256 on the Fashion-MNIST experts).
    fn forward(&self, x: &[f64], t: f64, out: &mut [f64], mut pre: Option<&mut Vec<Vec<f64>>>) {
        let n = x.len() / self.d;
        let (d, w) = (self.d, self.cfg.width);
        let fm = (1, n);
        // Layer 0: the time embedding is the same for every row, so its product folds into the bias.
        let mut e = vec![0.0; self.cfg.time_features()];
        self.cfg.embed(&self.freqs, t, &mut e);
        let l0 = &self.layers[0];
        let bias0: Vec<f64> = (0..w).map(|j| l0.b[j] + (0..e.len()).map(|k| l0.w[j * l0.inp + d + k] * e[k]).sum::<f64>()).collect();
        let mut z = vec![0.0; n * w];
        matmul(n, w, d, &to_feature_major(x, d, 1.0), fm, &l0.w, (1, l0.inp), &mut z, fm);
        z.chunks_exact_mut(n).zip(&bias0).for_each(|(unit, b)| unit.iter_mut().for_each(|v| *v += b));
        let mut h = vec![0.0; n * w];
        for l in 1..=self.cfg.depth {
            h.iter_mut().zip(&z).for_each(|(h, &z)| *h = silu(z));
            if let Some(p) = pre.as_deref_mut() {
                p.push(std::mem::take(&mut z));
            }
            let layer = &self.layers[l];
            let mut nz = vec![0.0; n * layer.out];
            matmul(n, layer.out, layer.inp, &h, fm, &layer.w, (1, layer.inp), &mut nz, fm);
            nz.chunks_exact_mut(n).zip(&layer.b).for_each(|(unit, b)| unit.iter_mut().for_each(|v| *v += b));
            z = nz;
        }
        let sig = if self.cfg.skip { self.info.schedule.sigma2(t).sqrt() } else { 0.0 };
        for (i, row) in out.chunks_exact_mut(d).enumerate() {
            row.iter_mut().enumerate().for_each(|(j, o)| *o = z[j * n + i] + sig * x[i * d + j]);
        }
    }

    /// The network's noise prediction ε̂(x, t) for a batch.
    pub fn predict_noise(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.info.check_batch(x, out.len())?;
        self.in_blocks(x, None, out, |xb, _, ob| self.forward(xb, t, ob, None));
        Ok(())
    }

    /// Run `f(x_block, v_block, out_block)` on blocks of exactly [`BLOCK`] rows, zero-padding the last
    /// one. gemm picks its kernel by matrix size, so fixed-size products make every row's result
    /// independent of the batch it came in (and hence of the engine's thread count).
    fn in_blocks(&self, x: &[f64], v: Option<&[f64]>, out: &mut [f64], f: impl Fn(&[f64], Option<&[f64]>, &mut [f64])) {
        let d = self.d;
        let full = BLOCK * d;
        let n_full = x.len() / full * full;
        for (i, (xb, ob)) in x[..n_full].chunks_exact(full).zip(out[..n_full].chunks_exact_mut(full)).enumerate() {
            f(xb, v.map(|v| &v[i * full..(i + 1) * full]), ob);
        }
        let rest = x.len() - n_full;
        if rest > 0 {
            let mut xp = vec![0.0; full];
            xp[..rest].copy_from_slice(&x[n_full..]);
            let vp = v.map(|v| {
                let mut p = vec![0.0; full];
                p[..rest].copy_from_slice(&v[n_full..]);
                p
            });
            let mut op = vec![0.0; full];
            f(&xp, vp.as_deref(), &mut op);
            out[n_full..].copy_from_slice(&op[..rest]);
        }
    }

    /// −(1/σ) J_ε̂(x)ᵀ v for a block, `inv` = −1/σ (feature-major inside, as [`Self::forward`]).
    fn vjp_rows(&self, x: &[f64], t: f64, inv: f64, v: &[f64], out: &mut [f64]) {
        let (d, w) = (self.d, self.cfg.width);
        let n = x.len() / d;
        let fm = (1, n);
        let mut pre = Vec::with_capacity(self.cfg.depth);
        let mut eps = vec![0.0; n * d];
        self.forward(x, t, &mut eps, Some(&mut pre));
        // g = ∂(v·s)/∂ε̂ = v · (−1/σ), then back through the output layer.
        let wt = self.wt.get_or_init(|| {
            let t = |(l, layer): (usize, &Dense)| {
                let cols = if l == 0 { d } else { layer.inp };
                let mut t = vec![0.0; cols * layer.out];
                layer.w.chunks_exact(layer.inp).enumerate().for_each(|(o, row)| row[..cols].iter().enumerate().for_each(|(j, &v)| t[j * layer.out + o] = v));
                t
            };
            self.layers.iter().enumerate().map(t).collect()
        });
        let g = to_feature_major(v, d, inv);
        let lo = &self.layers[self.cfg.depth];
        let mut gh = vec![0.0; n * w];
        matmul(n, w, d, &g, fm, &wt[self.cfg.depth], (1, lo.out), &mut gh, fm);
        let mut gz = vec![0.0; n * w];
        let mut gx = vec![0.0; n * d];
        for l in (0..self.cfg.depth).rev() {
            gz.iter_mut().zip(gh.iter().zip(&pre[l])).for_each(|(o, (g, &z))| *o = g * silu_grad(z));
            let layer = &self.layers[l];
            if l > 0 {
                matmul(n, w, w, &gz, fm, &wt[l], (1, layer.out), &mut gh, fm);
            } else {
                // Only the x columns of layer 0 (the embedding columns do not depend on x).
                matmul(n, d, w, &gz, fm, &wt[0], (1, layer.out), &mut gx, fm);
            }
        }
        // With the skip, ∂(v·σx)/∂x = σv, times −1/σ.
        let skip = if self.cfg.skip { 1.0 } else { 0.0 };
        for (i, row) in out.chunks_exact_mut(d).enumerate() {
            row.iter_mut().enumerate().for_each(|(j, o)| *o = gx[j * n + i] - skip * v[i * d + j]);
        }
    }
}

impl ScoreModel for ScoreMlp {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn data_shape(&self) -> &[usize] {
        &self.info.data_shape
    }

    fn schedule(&self) -> VpSchedule {
        self.info.schedule.clone()
    }

    fn score(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.info.check_batch(x, out.len())?;
        let inv = -1.0 / self.info.sigma(t)?;
        self.in_blocks(x, None, out, |xb, _, ob| self.forward(xb, t, ob, None));
        out.iter_mut().for_each(|v| *v *= inv);
        Ok(())
    }

    fn has_vjp(&self) -> bool {
        true
    }

    /// J_s(x)ᵀ v = −(1/σ_t) J_ε̂(x)ᵀ v by a hand-written reverse pass (matmul + SiLU').
    fn vjp(&self, x: &[f64], t: f64, v: &[f64], out: &mut [f64]) -> Result<()> {
        self.info.check_batch(x, out.len())?;
        self.info.check_batch(v, out.len())?;
        let inv = -1.0 / self.info.sigma(t)?;
        self.in_blocks(x, Some(v), out, |xb, vb, ob| self.vjp_rows(xb, t, inv, vb.expect("v given"), ob));
        Ok(())
    }

    fn parallel_chunks(&self) -> bool {
        // The inference path is single-threaded per call; the engine's chunks give the parallelism.
        true
    }
}

/// The same architecture as a candle graph, for training: parameters are candle [`Var`]s (f32) in the
/// order of [`ScoreMlp::from_f32`].
pub struct CandleMlp {
    cfg: MlpConfig,
    vars: Vec<Var>,
}

impl CandleMlp {
    /// Variables holding `net`'s parameters.
    pub fn new(net: &ScoreMlp, device: &Device) -> Result<Self> {
        let vars = net
            .to_f32()
            .into_iter()
            .map(|(_, shape, v)| Var::from_tensor(&Tensor::from_vec(v, shape, device)?))
            .collect::<candle_core::Result<Vec<Var>>>()
            .map_err(backend("creating the network's variables"))?;
        Ok(CandleMlp { cfg: net.config(), vars })
    }

    /// The trainable variables.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// ε̂ for inputs [B, d + 2K] = [x, e(t)] (built on the host, see [`MlpConfig::embed`]), without the
    /// `skip` term σ_t·x (the trainer subtracts it from the target instead).
    pub fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = input.clone();
        for l in 0..=self.cfg.depth {
            let (w, b) = (self.vars[2 * l].as_tensor(), self.vars[2 * l + 1].as_tensor());
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if l < self.cfg.depth {
                h = h.silu()?;
            }
        }
        Ok(h)
    }

    /// Current parameters as f32 vectors, in order.
    pub fn to_f32(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
            .collect::<candle_core::Result<_>>()
            .map_err(backend("reading the network's variables"))
    }
}
