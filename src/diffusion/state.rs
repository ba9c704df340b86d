//! The per-particle buffers of a sampler run ([`State`]) and the reused scratch of its Metropolis moves
//! ([`Proposal`]); a resampling gathers every buffer from the ancestors without allocating.

use crate::particles::gather_rows;

/// The per-particle buffers of a run (row-major: positions n × d, ℓ n × K, one score buffer per model).
pub(super) struct State {
    pub(super) x: Vec<f64>,
    pub(super) ell: Vec<f64>,
    pub(super) scores: Vec<Vec<f64>>,
    pub(super) divs: Vec<Vec<f64>>,
    pub(super) drift: Vec<f64>,
    pub(super) rate: Vec<f64>,
    pub(super) z: Vec<f64>,
    pub(super) inc: Vec<f64>,
    /// Index of the initial particle each current particle descends from.
    pub(super) origin: Vec<usize>,
    pub(super) evals: u64,
    /// Reused buffers (a resampling's gather, a Metropolis move's proposal): allocated once, so that a
    /// step allocates nothing of size n·d (freeing and re-faulting megabytes per step cost more than the
    /// arithmetic, mostly in the kernel).
    pub(super) spare: Vec<f64>,
    pub(super) prop: Proposal,
}

/// A Metropolis move's proposal: positions, every model's scores, the tracked ℓ (power means), the drift
/// and weight rate there, the uniforms and the verdicts.
#[derive(Default)]
pub(super) struct Proposal {
    pub(super) x: Vec<f64>,
    pub(super) scores: Vec<Vec<f64>>,
    pub(super) ell: Vec<f64>,
    pub(super) drift: Vec<f64>,
    pub(super) rate: Vec<f64>,
    pub(super) us: Vec<f64>,
    pub(super) accept: Vec<bool>,
}

impl State {
    /// Copy every per-particle buffer from the ancestors `idx` of a resampling.
    pub(super) fn gather(&mut self, d: usize, k: usize, with_divs: bool, idx: &[usize]) {
        self.origin = gather_rows(&self.origin, 1, idx);
        let spare = &mut self.spare;
        gather_into(&mut self.x, spare, d, idx);
        gather_into(&mut self.ell, spare, k, idx);
        gather_into(&mut self.drift, spare, d, idx);
        gather_into(&mut self.rate, spare, 1, idx);
        for sc in self.scores.iter_mut() {
            gather_into(sc, spare, d, idx);
        }
        if with_divs {
            for dv in self.divs.iter_mut() {
                gather_into(dv, spare, 1, idx);
            }
        }
    }
}

/// Replace `data`'s rows by the rows `idx` of it, through `spare` (whose capacity is kept for the next).
fn gather_into(data: &mut Vec<f64>, spare: &mut Vec<f64>, row: usize, idx: &[usize]) {
    spare.clear();
    for &i in idx {
        spare.extend_from_slice(&data[i * row..(i + 1) * row]);
    }
    std::mem::swap(data, spare);
}
