//! Seeded randomness. candle's CPU RNG cannot be seeded, so every normal, Rademacher sign and uniform in
//! wfrmix is drawn here from ChaCha8 streams: the same seed gives the same numbers whatever the thread
//! count.
//!
//! A run has one main stream, read on one thread in a fixed order (initial choices, resampling
//! uniforms, acceptance tests). Bulk noise (the particles' Gaussian increments, Hutchinson probes) is
//! drawn in parallel from a *keyed* stream: each fill takes one 64-bit key from the main stream, and
//! block b of [`BLOCK`] values is drawn from a SplitMix64 generator ([`Noise`]) started at a state
//! hashed from (key, b). A block's values depend only on (key, b), never on which thread draws it or
//! when. SplitMix64 (Steele, Lea & Flood 2014; the seeder of the xoshiro family) passes BigCrush and
//! costs a few instructions a draw, against ChaCha8's block function: noise is a quarter of an exact
//! expert run's time otherwise.

use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

/// Values per block of a keyed fill.
pub const BLOCK: usize = 4096;

/// The generator every sampler uses.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator from a 64-bit seed.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Fill `out` with independent N(0, 1) draws.
pub fn fill_normal(rng: &mut Rng, out: &mut [f64]) {
    fill_normal_with(rng, out)
}

/// Fill `out` with independent ±1 (Rademacher) draws.
pub fn fill_rademacher(rng: &mut Rng, out: &mut [f64]) {
    fill_signs_with(rng, out)
}

/// One uniform draw in [0, 1).
pub fn uniform(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}

/// SplitMix64: state += γ, output = a bijective mix of the state.
#[derive(Clone, Debug)]
pub struct Noise {
    state: u64,
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl rand::RngCore for Noise {
    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    #[inline(always)]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The generator of block `b` of the keyed stream `key` (its start hashed from both, so that blocks
/// and keys do not share runs of the sequence).
fn block_rng(key: u64, b: usize) -> Noise {
    Noise { state: mix64(key ^ mix64((b as u64).wrapping_add(1).wrapping_mul(GOLDEN))) }
}

/// Independent N(0, 1) draws into `out` from `rng` (any generator).
fn fill_normal_with(rng: &mut impl rand::Rng, out: &mut [f64]) {
    for v in out.iter_mut() {
        *v = rng.sample(StandardNormal);
    }
}

/// ±1 draws into `out`, 64 signs per draw of `rng`.
fn fill_signs_with(rng: &mut impl rand::Rng, out: &mut [f64]) {
    for chunk in out.chunks_mut(64) {
        let bits: u64 = rng.random();
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = if (bits >> j) & 1 == 1 { 1.0 } else { -1.0 };
        }
    }
}

/// Fill `out` with independent N(0, 1) draws from a fresh keyed stream (key from `rng`), on all
/// threads. The values depend only on `rng`'s state and `out.len()`.
pub fn par_fill_normal(rng: &mut Rng, out: &mut [f64]) {
    let key: u64 = rng.random();
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, c)| fill_normal_with(&mut block_rng(key, b), c));
}

/// Fill `out` with independent ±1 draws from a fresh keyed stream (key from `rng`), on all threads.
pub fn par_fill_rademacher(rng: &mut Rng, out: &mut [f64]) {
    let key: u64 = rng.random();
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, c)| fill_signs_with(&mut block_rng(key, b), c));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyed fill gives the same values on 1 and 3 threads, and its values are standard normal:
    /// mean within 5 standard errors (5/√n) and variance within 5·√(2/n) of 1.
    #[test]
    fn keyed_fill_is_thread_independent_and_standard() {
        let n = 3 * BLOCK + 17;
        let fill = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut v = vec![0.0; n];
            pool.install(|| par_fill_normal(&mut seeded(7), &mut v));
            v
        };
        let (a, b) = (fill(1), fill(3));
        assert_eq!(a, b);
        let mean = a.iter().sum::<f64>() / n as f64;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(), "variance {var}");
        // Blocks are distinct streams: no block repeats the first.
        assert_ne!(a[..64], a[BLOCK..BLOCK + 64]);
    }
}
