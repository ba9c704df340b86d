//! A score model with an error of controlled kind and size, for measuring how score errors propagate into
//! each composition (a trained network's error is what the wrapper imitates). Errors are stated in ε
//! units, as a network's: the wrapped model's ε̂ = −σ_t s is changed by δ·e(x), so s′ = s − δ e(x)/σ_t.

use crate::error::Result;
use crate::model::ScoreModel;
use crate::schedule::VpSchedule;

/// The shape e(x) of the error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScoreError {
    /// A constant unit vector along the first coordinate: a biased network.
    Bias,
    /// A smooth field that varies with x, e_j(x) = sin(ω x_j + φ_j) (ω = 3, φ_j = j): a network whose
    /// error is not a gradient and changes across the data.
    Wiggle,
}

/// `inner` with the error δ·e(x) in ε units.
pub struct Perturbed<M> {
    inner: M,
    kind: ScoreError,
    delta: f64,
    name: String,
}

impl<M: ScoreModel> Perturbed<M> {
    /// Wrap `inner` with error `kind` of size `delta` (in ε units; a well-trained network's RMS ε error is
    /// a few percent).
    pub fn new(inner: M, kind: ScoreError, delta: f64) -> Self {
        let name = format!("{} ({kind:?} {delta})", inner.name());
        Perturbed { inner, kind, delta, name }
    }
}

impl<M: ScoreModel> ScoreModel for Perturbed<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_shape(&self) -> &[usize] {
        self.inner.data_shape()
    }

    fn schedule(&self) -> VpSchedule {
        self.inner.schedule()
    }

    fn score(&self, x: &[f64], t: f64, out: &mut [f64]) -> Result<()> {
        self.inner.score(x, t, out)?;
        let d = self.inner.dim();
        let k = self.delta / self.inner.schedule().sigma2(t).sqrt();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            for j in 0..d {
                let e = match self.kind {
                    ScoreError::Bias => {
                        if j == 0 {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    ScoreError::Wiggle => (3.0 * xr[j] + j as f64).sin(),
                };
                or[j] -= k * e;
            }
        }
        Ok(())
    }

    fn parallel_chunks(&self) -> bool {
        self.inner.parallel_chunks()
    }
}
