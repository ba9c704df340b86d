//! Seeded randomness. candle's CPU RNG cannot be seeded, so every normal, Rademacher sign and uniform in
//! wfrmix is drawn here, from one ChaCha8 stream per run, on one thread, in a fixed order: the same seed
//! gives the same numbers whatever the thread count.

use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;

/// The generator every sampler uses.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator from a 64-bit seed.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Fill `out` with independent N(0, 1) draws.
pub fn fill_normal(rng: &mut Rng, out: &mut [f64]) {
    for v in out.iter_mut() {
        *v = rng.sample(StandardNormal);
    }
}

/// Fill `out` with independent ±1 (Rademacher) draws.
pub fn fill_rademacher(rng: &mut Rng, out: &mut [f64]) {
    // 64 signs per draw of the generator.
    let mut chunks = out.chunks_mut(64);
    for chunk in &mut chunks {
        let bits: u64 = rng.random();
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = if (bits >> j) & 1 == 1 { 1.0 } else { -1.0 };
        }
    }
}

/// One uniform draw in [0, 1).
pub fn uniform(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}
