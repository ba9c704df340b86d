//! Score models: the [`ScoreModel`] trait every expert implements, the check that models can be composed,
//! the batch helpers that split a batch across threads, the exact Gaussian-mixture expert ([`gmm`]) and a
//! wrapper that gives any model a score error of controlled kind and size ([`perturbed`]).
//! Neural networks implement the trait in [`crate::nets`]; [`crate::registry`] opens any model file.

pub mod gmm;
pub mod perturbed;

use crate::error::{Error, Result};
use crate::schedule::VpSchedule;

pub use gmm::GaussianMixture;

/// A diffusion model's score ∇ log q_t on batches of particles.
///
/// Batches are row-major `&[f64]` of `n × dim()` values; outputs are written into caller-provided
/// buffers of the same layout. Implementations must treat particles independently (no cross-batch
/// coupling), which lets the engine split a batch across threads and keeps results identical for any
/// thread count.
pub trait ScoreModel: Send + Sync {
    /// A short name for messages (usually the file it came from).
    fn name(&self) -> &str;

    /// Shape of one data item, e.g. `[2]` or `[1, 28, 28]`.
    fn data_shape(&self) -> &[usize];

    /// Number of scalars in one data item.
    fn dim(&self) -> usize {
        self.data_shape().iter().product()
    }

    /// The forward process the model was trained under.
    fn schedule(&self) -> VpSchedule;

    /// Scores s(x, t) = ∇ log q_t(x) for the batch `x` (n × dim) at forward time t.
    fn score(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()>;

    /// Whether [`Self::log_density`] is available.
    fn has_log_density(&self) -> bool {
        false
    }

    /// Exact log q_t(x), one value per particle.
    fn log_density(&self, _x: &[f64], _t: f64, _out: &mut [f64]) -> Result<()> {
        Err(self.unsupported("an exact log-density", "track it along the path instead (mixture/power compositions do)"))
    }

    /// Whether [`Self::divergence`] is available.
    fn has_divergence(&self) -> bool {
        false
    }

    /// Exact divergence ∇·s(x, t) (trace of the score's Jacobian), one value per particle.
    fn divergence(&self, _x: &[f64], _t: f64, _out: &mut [f64]) -> Result<()> {
        Err(self.unsupported("an exact divergence", "use a Hutchinson estimator (--divergence vjp or fd)"))
    }

    /// Whether [`Self::vjp`] is available.
    fn has_vjp(&self) -> bool {
        false
    }

    /// Vector–Jacobian products `J_b(x_b)ᵀ v_b` for every particle b (reverse mode).
    fn vjp(&self, _x: &[f64], _t: f64, _v: &[f64], _out: &mut [f64]) -> Result<()> {
        Err(self.unsupported("reverse-mode vector-Jacobian products", "use --divergence fd (central differences)"))
    }

    /// Whether the engine may evaluate chunks of a batch on several threads at once. Models that
    /// parallelise internally (neural networks) return false and get the whole batch in one call.
    fn parallel_chunks(&self) -> bool {
        true
    }

    /// The score into `score` and, for models with a network, its raw output at x and t (what it was
    /// trained to predict: ε, v or x₀) into `raw`, from one evaluation; returns whether `raw` was written
    /// (the default writes the score only: exact experts have no network).
    fn score_and_raw(&self, x: &[f64], t: f64, score: &mut [f64], _raw: &mut [f64]) -> Result<bool> {
        self.score(x, t, score)?;
        Ok(false)
    }

    /// Facts a user should see in the run's summary (e.g. where a checkpoint's schedule came from).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The error for a missing capability.
    fn unsupported(&self, what: &str, hint: &str) -> Error {
        Error::Unsupported { model: self.name().to_string(), what: what.to_string(), hint: hint.to_string() }
    }
}

/// Anything that lends a `&dyn ScoreModel`: a reference to a model, the `Box<dyn ScoreModel>` that
/// [`crate::registry::load_model`] returns, or a `&dyn ScoreModel`; so that [`crate::Sampler::new`]
/// takes a slice of any of them.
pub trait AsScoreModel {
    /// The model as a trait object.
    fn as_score_model(&self) -> &dyn ScoreModel;
}

impl AsScoreModel for Box<dyn ScoreModel> {
    fn as_score_model(&self) -> &dyn ScoreModel {
        self.as_ref()
    }
}

impl<T: ScoreModel> AsScoreModel for &T {
    fn as_score_model(&self) -> &dyn ScoreModel {
        *self
    }
}

impl AsScoreModel for &dyn ScoreModel {
    fn as_score_model(&self) -> &dyn ScoreModel {
        *self
    }
}

/// Check that models can be composed: same data shape and same forward schedule.
pub fn check_compatible(models: &[&dyn ScoreModel]) -> Result<()> {
    let Some(first) = models.first() else {
        return Err(Error::param("models", "none", "at least one model is needed"));
    };
    for m in &models[1..] {
        if m.data_shape() != first.data_shape() {
            return Err(Error::Incompatible {
                a: first.name().into(),
                b: m.name().into(),
                reason: format!("data shapes differ: {:?} vs {:?}", first.data_shape(), m.data_shape()),
            });
        }
        let (sa, sb) = (first.schedule(), m.schedule());
        if sa != sb {
            return Err(Error::Incompatible {
                a: first.name().into(),
                b: m.name().into(),
                reason: format!("forward schedules differ: {sa} vs {sb}; compose models trained under the same schedule"),
            });
        }
    }
    Ok(())
}

/// Run `f(first_row, x_chunk, out_chunk)` over row chunks of a batch, on several threads when the model
/// allows it. `out_row` is the number of output values per particle. Each particle's result depends only
/// on its own row, so the output is the same for any thread count.
pub(crate) fn for_chunks(
    model: &dyn ScoreModel,
    x: &[f64],
    out: &mut [f64],
    out_row: usize,
    f: impl Fn(usize, &[f64], &mut [f64]) -> Result<()> + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    let d = model.dim();
    let n = x.len() / d;
    let threads = rayon::current_num_threads();
    if !model.parallel_chunks() || threads == 1 || n < 128 {
        return f(0, x, out);
    }
    let rows = n.div_ceil(4 * threads).max(32);
    x.par_chunks(rows * d)
        .zip(out.par_chunks_mut(rows * out_row))
        .enumerate()
        .try_for_each(|(c, (xc, oc))| f(c * rows, xc, oc))
}

/// Scores for a whole batch, chunked across threads where allowed.
pub fn batch_score(model: &dyn ScoreModel, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
    for_chunks(model, x, out, model.dim(), |_, xc, oc| model.score(xc, t, oc))
}
