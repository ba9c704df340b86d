//! Langevin moves on an energy: unadjusted (ULA) or Metropolis-adjusted (MALA) steps of every particle,
//! shared by the WFR sampler and the annealed SMC's moves.

#![allow(clippy::needless_range_loop)] // index loops over row-major [n, d] buffers read clearer here

use rayon::prelude::*;

use super::energy::Energy;
use crate::error::{Error, Result};
use crate::rng::{self, Rng};

/// The transport part of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// No transport: particles stay put (pure Fisher–Rao reweighting).
    None,
    /// Unadjusted Langevin: `x ← x − Δ∇U(x) + √(2Δ) ξ`.
    Ula,
    /// Metropolis-adjusted Langevin (the ULA proposal, accepted with the MH ratio).
    Mala,
}

pub(super) fn non_finite(what: &str, step: usize, t: f64) -> Error {
    Error::NonFinite {
        what: what.into(),
        step,
        t,
        hint: "the target returned NaN/inf or the Langevin step is unstable; reduce the time step or check the target".into(),
    }
}

pub(super) fn eval(target: &dyn Energy, x: &[f64], u: &mut [f64], g: &mut [f64], step: usize, t: f64) -> Result<()> {
    target.energy_grad_batch(x, u, g)?;
    if u.iter().any(|v| !v.is_finite()) {
        return Err(non_finite("energy U(x)", step, t));
    }
    if g.iter().any(|v| !v.is_finite()) {
        return Err(non_finite("energy gradient ∇U(x)", step, t));
    }
    Ok(())
}

/// One Langevin step of all particles for `target`, with `u`, `g` = U, ∇U at `x` on entry and at the new
/// `x` on exit. Returns the acceptance rate (1 for ULA). Noise and uniforms are drawn sequentially.
#[allow(clippy::too_many_arguments)]
pub(super) fn langevin_step(
    target: &dyn Energy,
    x: &mut Vec<f64>,
    u: &mut Vec<f64>,
    g: &mut Vec<f64>,
    dt: f64,
    mala: bool,
    rng: &mut Rng,
    step: usize,
    t: f64,
) -> Result<f64> {
    let d = target.dim();
    let n = u.len();
    let mut xi = vec![0.0; x.len()];
    rng::par_fill_normal(rng, &mut xi);
    let s = (2.0 * dt).sqrt();
    let mut y = vec![0.0; x.len()];
    y.par_iter_mut().zip(x.par_iter().zip(g.par_iter()).zip(xi.par_iter())).for_each(|(yv, ((xv, gv), z))| {
        *yv = xv - dt * gv + s * z;
    });
    let mut uy = vec![0.0; n];
    let mut gy = vec![0.0; x.len()];
    if !mala {
        eval(target, &y, &mut uy, &mut gy, step, t)?;
        *x = y;
        *u = uy;
        *g = gy;
        return Ok(1.0);
    }
    target.energy_grad_batch(&y, &mut uy, &mut gy)?;
    if uy.iter().any(|v| v.is_nan()) || gy.iter().any(|v| v.is_nan()) {
        return Err(non_finite("energy at a MALA proposal", step, t));
    }
    let unif: Vec<f64> = (0..n).map(|_| rng::uniform(rng)).collect();
    let inv4 = 1.0 / (4.0 * dt);
    let accept: Vec<bool> = (0..n)
        .into_par_iter()
        .map(|i| {
            if !uy[i].is_finite() || gy[i * d..(i + 1) * d].iter().any(|v| !v.is_finite()) {
                return false;
            }
            let (mut fwd, mut bwd) = (0.0, 0.0);
            for k in 0..d {
                let a = y[i * d + k] - x[i * d + k] + dt * g[i * d + k];
                let b = x[i * d + k] - y[i * d + k] + dt * gy[i * d + k];
                fwd += a * a;
                bwd += b * b;
            }
            let log_alpha = u[i] - uy[i] + (fwd - bwd) * inv4;
            crate::lanes::ln(unif[i]) < log_alpha
        })
        .collect();
    let mut acc = 0usize;
    for i in 0..n {
        if accept[i] {
            acc += 1;
            x[i * d..(i + 1) * d].copy_from_slice(&y[i * d..(i + 1) * d]);
            g[i * d..(i + 1) * d].copy_from_slice(&gy[i * d..(i + 1) * d]);
            u[i] = uy[i];
        }
    }
    Ok(acc as f64 / n.max(1) as f64)
}

