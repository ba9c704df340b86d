//! The weighted reverse-SDE sampler: moves N particles from the composed prior at t = 1 to t_min with
//! the composition's drift score, tracks per-particle log-densities and Feynman–Kac log-weights, and
//! resamples adaptively (maths §2–§6).
//!
//! One step t → s = t − h uses the exact VP quantities a = α_t/α_s and v = 1 − a²:
//!
//! x' = (x + κ v ŝ(x, t)) / a + η √v / a · z,   κ = (1 + η²)/2,
//!
//! the ancestral ("Tweedie-mean") step: for η = 1 its mean (x + v∇log q_t(x))/a is exactly
//! E[x_s | x_t] for any data distribution, where plain Euler–Maruyama has an O(h) error that is large
//! near t = 0. Tracked log-densities use the kernel-ratio form of maths §4d with this kernel and the
//! exact forward kernel, which reduces to
//!
//! Δℓ_i = d ln a + s_i·(a x' − x) − (v/2)|s_i|² + ((η² − 1)/2) v ∇·s_i.
//!
//! Steps are spaced on Karras et al.'s grid in σ/α by default (many small steps near the data).

use std::time::Instant;

use rayon::prelude::*;

use crate::compose::Composition;
use super::divergence::DivergenceEstimator;
use crate::error::{Error, Result};
use crate::model::{batch_score, check_compatible, AsScoreModel, ScoreModel};
use super::state::{Proposal, State};
use crate::particles::{gather_rows, ParticleWeights, ResamplePolicy, Resampler};
use super::moves::{gamma_star, mala_log_accept, mala_log_accept_given, trapezoid, DriftGamma, MoveConfig};
use crate::lanes;
use crate::rng::{self, Rng, BLOCK};
use crate::schedule::{TimeGrid, VpSchedule};

/// How one reverse step is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Integrator {
    /// x' = (x + κ v ŝ)/a + η √v/a z with a = α_t/α_s, v = 1 − a² (exact mean for η = 1).
    #[default]
    Ancestral,
    /// Plain Euler–Maruyama: x' = x + h(½β x + κ β ŝ) + η √(β h) z, weights and ℓ with β(t)h
    /// (an ablation: O(h) bias near t = 0).
    #[cfg_attr(feature = "cli", value(name = "euler", alias = "euler-maruyama", alias = "em"))]
    EulerMaruyama,
}

impl std::str::FromStr for Integrator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ancestral" => Ok(Integrator::Ancestral),
            "euler" | "euler-maruyama" | "em" => Ok(Integrator::EulerMaruyama),
            _ => Err(Error::param("integrator", s, "expected ancestral or euler")),
        }
    }
}

/// Settings of a run. Fill in what you need over `Default::default()`; [`Sampler::new`] checks them.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SamplerConfig {
    /// Number of particles N.
    pub particles: usize,
    /// Number of reverse steps.
    pub steps: usize,
    /// Last time of the grid (the sampler stops there; t = 0 itself is singular).
    pub t_min: f64,
    /// Spacing of the time grid.
    pub grid: TimeGrid,
    /// The step rule.
    pub integrator: Integrator,
    /// η: noise σ = η g with drift coefficient (g² + σ²)/2. 1 = reverse SDE, 0 = probability-flow ODE.
    pub noise_scale: f64,
    /// When and how to resample.
    pub resample: ResamplePolicy,
    /// How divergences are estimated, where the composition needs them.
    pub divergence: DivergenceEstimator,
    /// Seed of the one random stream of the run.
    pub seed: u64,
    /// Take a final noise-free Tweedie step x ← (x + σ² ŝ)/α at t_min.
    pub denoise: bool,
    /// Langevin corrector steps after each step (resample-move), for compositions whose drift score is
    /// the exact score of the target path (geometric family): x ← x + ε ŝ + √(2ε) z at fixed t. They
    /// leave the target invariant up to O(ε), so weights are unchanged, and pull the particle cloud
    /// toward the target, which keeps the weights from degenerating.
    pub corrector_steps: usize,
    /// Signal-to-noise ratio r that sets the corrector step: ε = 2 r² d / mean |ŝ|².
    pub corrector_snr: f64,
    /// The drift's γ for weighted geometric targets and power means with m > 1 (u = −γ f + g² ŝ, maths
    /// §4a′, §4c); ignored otherwise.
    pub drift_gamma: DriftGamma,
    /// Metropolis-adjusted score-only moves after each step, for weighted geometric targets and power
    /// means with m > 1 (maths §4a″, §4c); ignored otherwise.
    pub moves: MoveConfig,
}

impl SamplerConfig {
    /// The defaults, which are also `mix-sample`'s.
    pub const DEFAULT: SamplerConfig = SamplerConfig {
        particles: 1024,
        // 300: the shipped conv experts judge the same at 300 steps as at 500 (own classes, Fréchet
        // distance; docs/images.md, "Sampling steps"), and the high-dimensional product table holds.
        steps: 300,
        t_min: 1e-3,
        grid: TimeGrid::DEFAULT,
        integrator: Integrator::Ancestral,
        noise_scale: 1.0,
        resample: ResamplePolicy::DEFAULT,
        divergence: DivergenceEstimator::DEFAULT,
        seed: 0,
        denoise: true,
        corrector_steps: 0,
        corrector_snr: 0.05,
        drift_gamma: DriftGamma::DEFAULT,
        moves: MoveConfig::DEFAULT,
    };
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What happened at one step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepInfo {
    /// Step index, 1-based.
    pub step: usize,
    /// Total number of steps.
    pub steps: usize,
    /// Forward time reached by this step.
    pub t: f64,
    /// ESS after this step's weight increments, before resampling.
    pub ess: f64,
    /// Whether the particles were resampled.
    pub resampled: bool,
    /// Distinct ancestors after resampling (N when not resampled).
    pub unique_ancestors: usize,
    /// This step's contribution to log Ẑ.
    pub log_z_increment: f64,
    /// The drift's γ in this step (1 unless the target is a weighted geometric one or a power mean with m > 1).
    pub gamma: f64,
    /// Acceptance rate of this step's Metropolis moves, if any were made.
    pub move_accept: Option<f64>,
    /// The step ε of this step's (last) move, if any.
    pub move_step: Option<f64>,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct SampleRun {
    /// Shape of one sample.
    pub shape: Vec<usize>,
    /// Final particles, N × dim, row-major.
    pub samples: Vec<f64>,
    /// Normalised log-weights (log W_i, Σ W_i = 1).
    pub log_weights: Vec<f64>,
    /// Tracked log-densities ℓ_i of each particle under each model at t_min (N × K, before the final
    /// denoising step); empty when the composition tracks none.
    pub log_densities: Vec<f64>,
    /// Per-step diagnostics.
    pub steps: Vec<StepInfo>,
    /// Estimate of log Z_0, the log normaliser of the composed target at t = 0 (relative to normalised
    /// models; 0 for mixtures in exact arithmetic).
    pub log_z: f64,
    /// ESS of the final weights.
    pub final_ess: f64,
    /// Number of resampling events.
    pub resamples: usize,
    /// Surviving lineages: how many of the N initial particles have a descendant among the final
    /// particles (N when never resampled; 1 means every particle descends from one ancestor).
    pub lineages: usize,
    /// Per-particle score evaluations (a VJP counts as one; finite differences as two per probe).
    pub score_evals: u64,
    /// Wall time of the run in seconds.
    pub wall_seconds: f64,
}

impl SampleRun {
    /// Number of particles.
    pub fn len(&self) -> usize {
        self.log_weights.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.log_weights.is_empty()
    }

    /// Scalars per sample.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// Normalised weights.
    pub fn weights(&self) -> Vec<f64> {
        self.log_weights.iter().map(|&l| lanes::exp(l)).collect()
    }

    /// `m` samples drawn from the weighted particles by systematic resampling (for pictures and for
    /// statistics that want equal weights).
    pub fn resampled(&self, m: usize, rng: &mut Rng) -> Vec<f64> {
        let idx = Resampler::Systematic.ancestors(&self.weights(), m, rng);
        gather_rows(&self.samples, self.dim(), &idx)
    }

    /// Weighted mean of `f` over particles.
    pub fn weighted_mean(&self, f: impl Fn(&[f64]) -> f64) -> f64 {
        self.samples.chunks_exact(self.dim()).zip(self.weights()).map(|(x, w)| w * f(x)).sum()
    }

    /// Particle-steps per second.
    pub fn particle_steps_per_second(&self) -> f64 {
        (self.len() * self.steps.len()) as f64 / self.wall_seconds.max(1e-12)
    }
}

/// A checked sampler over borrowed models.
pub struct Sampler<'a> {
    models: Vec<&'a dyn ScoreModel>,
    composition: Composition,
    config: SamplerConfig,
    schedule: VpSchedule,
    times: Vec<f64>,
}

impl<'a> Sampler<'a> {
    /// Check models, composition and settings together, once.
    ///
    /// `models` may be references to models (`&[&a, &b]`), the `Box<dyn ScoreModel>`s the loader
    /// returns, or `&dyn ScoreModel`s.
    pub fn new<M: AsScoreModel>(models: &'a [M], composition: Composition, config: SamplerConfig) -> Result<Self> {
        let models: Vec<&'a dyn ScoreModel> = models.iter().map(|m| m.as_score_model()).collect();
        check_compatible(&models)?;
        if models.len() != composition.n_models() {
            return Err(Error::param(
                "number of models",
                models.len(),
                format!("this composition takes {} (one weight or exponent per model)", composition.n_models()),
            ));
        }
        let c = &config;
        if c.particles == 0 {
            return Err(Error::param("particles", 0, "need at least one particle"));
        }
        if c.steps == 0 {
            return Err(Error::param("steps", 0, "need at least one step"));
        }
        crate::limits::at_most("particles", c.particles, crate::limits::MAX_PARTICLES)?;
        crate::limits::at_most("steps", c.steps, crate::limits::MAX_STEPS)?;
        crate::limits::memory("particles", c.particles, memory_estimate(c.particles, models[0].dim(), models.len()), crate::limits::MAX_RUN_BYTES, "the number of particles")?;
        if !(c.t_min.is_finite() && c.t_min > 0.0 && c.t_min < 1.0) {
            return Err(Error::param("t_min", c.t_min, "must lie in (0, 1)"));
        }
        if !(c.noise_scale.is_finite() && c.noise_scale >= 0.0) {
            return Err(Error::param("noise scale", c.noise_scale, "must be finite and >= 0"));
        }
        if c.noise_scale == 0.0 && composition.is_weighted() {
            return Err(Error::param(
                "noise scale",
                0,
                "Feynman-Kac weights along the probability-flow ODE are unstable (maths §9.3); use a noise scale > 0 (1 recommended)",
            ));
        }
        if c.corrector_steps > 0 && !composition.is_geometric() {
            return Err(Error::param(
                "corrector steps",
                c.corrector_steps,
                "Langevin correctors need the drift to be the target's own score: use them with geometric, product or anneal",
            ));
        }
        if !(c.corrector_snr.is_finite() && c.corrector_snr > 0.0) {
            return Err(Error::param("corrector SNR", c.corrector_snr, "must be finite and > 0"));
        }
        c.drift_gamma.check()?;
        if composition.needs_divergence(c.noise_scale) {
            for m in &models {
                c.divergence.check(*m)?;
            }
        }
        let schedule = models[0].schedule();
        if c.t_min >= schedule.t_max() {
            return Err(Error::param("t_min", c.t_min, format!("must lie below where the schedule starts, t = {}", schedule.t_max())));
        }
        let times = c.grid.times(&schedule, c.steps, schedule.t_max(), c.t_min);
        Ok(Sampler { models, composition, config, schedule, times })
    }

    /// The memory the run's particle buffers need, in bytes (positions, drifts, noise, one score buffer
    /// per model, ℓ, divergences, and one buffer's worth for resampling and the models' own work). A
    /// caller compares it with the machine's memory before [`Self::run`].
    pub fn memory_bytes(&self) -> u64 {
        memory_estimate(self.config.particles, self.models[0].dim(), self.models.len()).expect("checked in new")
    }

    /// The checked settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The composition.
    pub fn composition(&self) -> &Composition {
        &self.composition
    }

    /// The time grid, from 1 down to t_min.
    pub fn times(&self) -> &[f64] {
        &self.times
    }

    /// Run, calling `observer` after every step (for progress bars and live diagnostics).
    pub fn run(&self, mut observer: impl FnMut(&StepInfo)) -> Result<SampleRun> {
        let start = Instant::now();
        let cfg = &self.config;
        let c = self.consts();
        let mut rng = rng::seeded(cfg.seed);
        let mut st = self.initial_state(&c, &mut rng);
        let mut weights = ParticleWeights::new(c.n);
        let mut infos = Vec::with_capacity(cfg.steps);
        self.refresh(&c, &mut st, 0, self.times[0], &mut rng)?;
        let mut move_scale = MoveConfig::R_START;
        for step in 0..cfg.steps {
            let (t, s) = (self.times[step], self.times[step + 1]);
            let gamma = self.drift_gamma(&c, &st, &weights);
            let k = self.coefficients(&c, t, s, gamma);
            if c.eta > 0.0 {
                rng::par_fill_normal(&mut rng, &mut st.z);
            }
            advance(&c, &mut st, &k);
            // Scores at the new points: the right end of this step's weight, and the next step's drift.
            self.refresh(&c, &mut st, step + 1, s, &mut rng)?;
            if c.weighted {
                let (d, gx) = (c.d, k.gx);
                for (b, i) in st.inc.iter_mut().enumerate() {
                    let shift = if gx == 0.0 { 0.0 } else { gx * f_dot_s(&st.x[b * d..(b + 1) * d], &st.drift[b * d..(b + 1) * d]) };
                    *i += k.wr * (st.rate[b] + shift);
                }
            }
            check_finite(&c, &st, step + 1, s)?;
            let ws = weights.step(&st.inc, &cfg.resample, s, &mut rng);
            if let Some(idx) = &ws.ancestors {
                st.gather(c.d, c.k, c.needs_div, idx);
            }
            let (move_accept, move_step) = self.moves(&c, &mut st, step + 1, s, &mut move_scale, &mut rng)?;
            for _ in 0..cfg.corrector_steps {
                self.langevin_correct(&mut st.x, &st.drift, &mut st.z, c.chunk, &mut rng);
                self.refresh(&c, &mut st, step + 1, s, &mut rng)?;
            }
            let info = StepInfo {
                step: step + 1,
                steps: cfg.steps,
                t: s,
                ess: ws.ess,
                resampled: ws.resampled,
                unique_ancestors: ws.unique_ancestors,
                log_z_increment: ws.log_z_increment,
                gamma,
                move_accept,
                move_step,
            };
            observer(&info);
            infos.push(info);
        }
        if cfg.denoise {
            self.denoise(&c, &mut st);
            if let Some(b) = first_bad_row(&st.x, c.d) {
                return Err(non_finite(format!("denoised sample (particle {b})"), cfg.steps, cfg.t_min));
            }
        }
        let lse = crate::particles::log_sum_exp(weights.log_weights());
        Ok(SampleRun {
            shape: self.models[0].data_shape().to_vec(),
            samples: st.x,
            log_weights: weights.log_weights().iter().map(|a| a - lse).collect(),
            resamples: infos.iter().filter(|i| i.resampled).count(),
            lineages: crate::particles::unique_count(&st.origin),
            log_densities: if c.tracks { st.ell } else { Vec::new() },
            steps: infos,
            log_z: self.composition.log_z_prior(c.d) + weights.log_z(),
            final_ess: weights.ess(),
            score_evals: st.evals,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The run's constants.
    fn consts(&self) -> Consts {
        let (n, k) = (self.config.particles, self.models.len());
        let eta = self.config.noise_scale;
        let needs_div = self.composition.needs_divergence(eta);
        Consts {
            n,
            k,
            d: self.models[0].dim(),
            eta,
            kappa: 0.5 * (1.0 + eta * eta),
            tracks: self.composition.tracks_log_density(),
            needs_div,
            weighted: self.composition.is_weighted(),
            div_f: self.composition.div_f_coefficient(),
            div_cost: if needs_div { self.models.iter().map(|m| self.config.divergence.cost(*m)).sum() } else { 0 },
            tuned: self.composition.moves_apply(),
            c_sum: self.composition.prior_precision(),
            chunk: n.div_ceil(4 * rayon::current_num_threads()).max(16),
        }
    }

    /// Particles drawn from the composed prior N(0, I / prec), with ℓ_i at the shared prior's
    /// log-density log N(x; 0, I).
    fn initial_state(&self, c: &Consts, rng: &mut Rng) -> State {
        let (n, k, d) = (c.n, c.k, c.d);
        let mut x = vec![0.0; n * d];
        rng::par_fill_normal(rng, &mut x);
        let sd = self.composition.prior_precision().sqrt().recip();
        x.iter_mut().for_each(|v| *v *= sd);
        let mut ell = vec![0.0; n * k];
        if c.tracks {
            let c0 = -0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
            for b in 0..n {
                let lp = c0 - 0.5 * x[b * d..(b + 1) * d].iter().map(|v| v * v).sum::<f64>();
                ell[b * k..(b + 1) * k].iter_mut().for_each(|e| *e = lp);
            }
        }
        State {
            x,
            ell,
            scores: vec![vec![0.0; n * d]; k],
            divs: vec![vec![0.0; n]; k],
            drift: vec![0.0; n * d],
            rate: vec![0.0; n],
            z: vec![0.0; n * d],
            inc: vec![0.0; n],
            origin: (0..n).collect(),
            evals: 0,
            spare: Vec::new(),
            prop: Proposal::default(),
        }
    }

    /// Scores (and divergences, where needed) of every model at the particles and time t, then every
    /// particle's drift score ŝ and weight-rate part R from them and ℓ.
    /// Every value is checked: a non-finite score or divergence is an error that names the model, the
    /// particle, the step and t.
    fn refresh(&self, c: &Consts, st: &mut State, step: usize, t: f64, rng: &mut Rng) -> Result<()> {
        for (m, sc) in self.models.iter().zip(st.scores.iter_mut()) {
            batch_score(*m, &st.x, t, sc)?;
            if let Some(b) = first_bad_row(sc, c.d) {
                return Err(non_finite(format!("score of model `{}` (particle {b})", m.name()), step, t));
            }
        }
        self.divergences(c, st, step, t, rng)?;
        st.evals += (c.n * c.k) as u64;
        let (comp, d, k, chunk) = (&self.composition, c.d, c.k, c.chunk);
        let (scores, divs, ell) = (&st.scores, &st.divs, &st.ell);
        st.drift.par_chunks_mut(chunk * d).zip(st.rate.par_chunks_mut(chunk)).enumerate().for_each(|(ci, (dc, rc))| {
            let mut w = vec![0.0; k];
            let mut dv = vec![0.0; k];
            let mut sc: Vec<&[f64]> = Vec::with_capacity(k);
            for (r, rb) in rc.iter_mut().enumerate() {
                let b = ci * chunk + r;
                sc.clear();
                sc.extend(scores.iter().map(|s| &s[b * d..(b + 1) * d]));
                if c.needs_div {
                    for i in 0..k {
                        dv[i] = divs[i][b];
                    }
                }
                *rb = comp.drift_and_rate(&sc, &ell[b * k..(b + 1) * k], c.needs_div.then_some(&dv[..]), c.kappa, &mut w, &mut dc[r * d..(r + 1) * d]);
            }
        });
        if let Some(b) = first_bad_row(&st.drift, d).or_else(|| first_bad_row(&st.rate, 1)) {
            return Err(non_finite(format!("composed drift or weight rate (particle {b})"), step, t));
        }
        Ok(())
    }

    /// Every model's divergence ∇·s_i at the particles, where the run needs them.
    fn divergences(&self, c: &Consts, st: &mut State, step: usize, t: f64, rng: &mut Rng) -> Result<()> {
        if !c.needs_div {
            return Ok(());
        }
        for (m, dv) in self.models.iter().zip(st.divs.iter_mut()) {
            self.config.divergence.estimate(*m, &st.x, t, rng, dv)?;
            if let Some(b) = first_bad_row(dv, 1) {
                return Err(non_finite(format!("divergence of model `{}` (particle {b})", m.name()), step, t));
            }
        }
        st.evals += (c.n * c.div_cost) as u64;
        Ok(())
    }

    /// The coefficients of the step t → s: `lna` is ∫∇·f/d over the step, `v` stands for g² h; the move
    /// is x' = mx·x + ms·ŝ + noise·z, ℓ uses cl·s_i·(x' − mx·x), and the weight rate is integrated with
    /// weights `wl`, `wr` at the two ends (Euler–Maruyama: the left point; ancestral: the trapezoidal
    /// rule, its ends weighted by β so that they add up to v).
    ///
    /// With the drift's γ ≠ 1 (maths §4a′) the linear part of the move is a^{−γ} x (ancestral) or
    /// (1 + ½γβh) x (Euler–Maruyama), and the weight rate gains (1 − γ)(∇·f + f·ŝ), whose constant part
    /// (1 − γ) d ln a is integrated exactly. The tracked ℓ_i still measure the increment from the γ = 1
    /// linear part `ml` (their f·s_i term cancels exactly that part), so they stay right at any γ.
    fn coefficients(&self, c: &Consts, t: f64, s: f64, gamma: f64) -> StepCoefficients {
        let sch = &self.schedule;
        let gx = 1.0 - gamma;
        match self.config.integrator {
            Integrator::Ancestral => {
                let lna = sch.log_alpha(t) - sch.log_alpha(s);
                let a = lna.exp();
                let v = -(2.0 * lna).exp_m1();
                let (bt, bs) = (sch.beta(t), sch.beta(s));
                let mx = if gx == 0.0 { 1.0 / a } else { (-gamma * lna).exp() };
                StepCoefficients { lna, v, mx, ml: 1.0 / a, ms: c.kappa * v / a, noise: c.eta * v.sqrt() / a, cl: a, wl: v * bt / (bt + bs), wr: v * bs / (bt + bs), gx }
            }
            Integrator::EulerMaruyama => {
                let bh = sch.beta(t) * (t - s);
                StepCoefficients { lna: -0.5 * bh, v: bh, mx: 1.0 + 0.5 * gamma * bh, ml: 1.0 + 0.5 * bh, ms: c.kappa * bh, noise: c.eta * bh.sqrt(), cl: 1.0, wl: bh, wr: 0.0, gx }
            }
        }
    }

    /// This step's γ: 1 unless the target is weighted geometric or a power mean with m > 1; then the
    /// configured one, or γ* from the particles before the step.
    fn drift_gamma(&self, c: &Consts, st: &State, weights: &ParticleWeights) -> f64 {
        if !c.tuned {
            return 1.0;
        }
        match self.config.drift_gamma {
            DriftGamma::Fixed(g) => g,
            DriftGamma::Adaptive => {
                let d = c.d;
                let k: Vec<f64> = (0..c.n).map(|b| f_dot_s(&st.x[b * d..(b + 1) * d], &st.drift[b * d..(b + 1) * d])).collect();
                gamma_star(&st.rate, &k, &weights.normalized(), 1.0, 2.0 * c.c_sum.max(1.0))
            }
        }
    }

    /// This step's Metropolis moves (weighted geometric targets and power means with m > 1), adapting the step scale `r` after
    /// each: their mean acceptance and the last step ε, or `None`s when there are none.
    fn moves(&self, c: &Consts, st: &mut State, step: usize, t: f64, r: &mut f64, rng: &mut Rng) -> Result<(Option<f64>, Option<f64>)> {
        let per = self.config.moves.per_step();
        if !c.tuned || per == 0 {
            return Ok((None, None));
        }
        let (mut acc, mut last) = (0.0, 0.0);
        for _ in 0..per {
            let (a, eps) = self.mala_move(c, st, step, t, *r, rng)?;
            acc += a;
            last = eps;
            // Robbins–Monro on log r toward the target acceptance, capped at R_MAX.
            *r = (*r * (a - self.config.moves.target_accept()).exp()).min(MoveConfig::R_MAX);
        }
        // Moved particles need their divergences (for ℓ tracking at η ≠ 1) at their new places.
        self.divergences(c, st, step, t, rng)?;
        Ok((Some(acc / per as f64), Some(last)))
    }

    /// One Metropolis-adjusted Langevin move of every particle at fixed t on the target, whose score is
    /// the drift score ŝ (maths §4a″), with step ε = 2 r² d / mean|ŝ|² for scale `r`. The log-density
    /// change is the trapezoidal line integral of ŝ for geometric targets; for power means each ℓ_i is
    /// carried along the segment by the line integral of s_i and Δ log ρ follows from the ℓ_i (maths
    /// §4c). Accepted particles take the proposal's scores, ℓ, drift and weight rate, so the move costs
    /// one score per model. Returns the acceptance rate and ε.
    fn mala_move(&self, c: &Consts, st: &mut State, step: usize, t: f64, r: f64, rng: &mut Rng) -> Result<(f64, f64)> {
        let (n, d, k) = (c.n, c.d, c.k);
        let mean_sq = lanes::norm2(&st.drift) / n as f64;
        let eps = 2.0 * r * r * d as f64 / mean_sq.max(1e-12);
        rng::par_fill_normal(rng, &mut st.z);
        let amp = (2.0 * eps).sqrt();
        let mut p = std::mem::take(&mut st.prop);
        p.x.resize(n * d, 0.0);
        p.scores.resize_with(k, Vec::new);
        p.scores.iter_mut().for_each(|s| s.resize(n * d, 0.0));
        p.drift.resize(n * d, 0.0);
        p.rate.resize(n, 0.0);
        p.accept.resize(n, false);
        p.ell.resize(n * k, 0.0);
        p.x.par_iter_mut().zip(st.x.par_iter().zip(st.drift.par_iter()).zip(st.z.par_iter())).for_each(|(p, ((x, s), z))| *p = x + eps * s + amp * z);
        for (m, sc) in self.models.iter().zip(p.scores.iter_mut()) {
            batch_score(*m, &p.x, t, sc)?;
            if let Some(b) = first_bad_row(sc, d) {
                return Err(non_finite(format!("score of model `{}` at a move's proposal (particle {b})", m.name()), step, t));
            }
        }
        st.evals += (n * k) as u64;
        // The uniforms in particle order from the main stream, then every particle's test on the pool.
        p.us.clear();
        p.us.extend((0..n).map(|_| rng::uniform(rng)));
        let (comp, chunk) = (&self.composition, c.chunk);
        let (x, drift, xp, sp, us, scores, ell) = (&st.x, &st.drift, &p.x, &p.scores, &p.us, &st.scores, &st.ell);
        // Power means carry ℓ along the move; other targets leave the proposal's ℓ unused.
        p.drift.par_chunks_mut(chunk * d).zip(p.rate.par_chunks_mut(chunk)).zip(p.accept.par_chunks_mut(chunk)).zip(p.ell.par_chunks_mut(chunk * k)).enumerate().for_each(|(ci, (((dc, rc), ac), ec))| {
            let mut w = vec![0.0; k];
            let mut rows: Vec<&[f64]> = Vec::with_capacity(k);
            for r in 0..rc.len() {
                let b = ci * chunk + r;
                let row = b * d..(b + 1) * d;
                rows.clear();
                rows.extend(sp.iter().map(|s| &s[row.clone()]));
                let dp = &mut dc[r * d..(r + 1) * d];
                let log_a = if c.tracks {
                    let (lo, lp) = (&ell[b * k..(b + 1) * k], &mut ec[r * k..(r + 1) * k]);
                    for i in 0..k {
                        lp[i] = lo[i] + trapezoid(&scores[i][row.clone()], &sp[i][row.clone()], &x[row.clone()], &xp[row.clone()]);
                    }
                    rc[r] = comp.drift_and_rate(&rows, lp, None, c.kappa, &mut w, dp);
                    let dlog = comp.power_log_density(lp).unwrap_or(f64::NAN) - comp.power_log_density(lo).unwrap_or(f64::NAN);
                    mala_log_accept_given(dlog, &x[row.clone()], &xp[row.clone()], &drift[row], dp, eps)
                } else {
                    rc[r] = comp.drift_and_rate(&rows, &[], None, c.kappa, &mut w, dp);
                    mala_log_accept(&x[row.clone()], &xp[row.clone()], &drift[row], dp, eps)
                };
                ac[r] = log_a.is_finite() && rc[r].is_finite() && lanes::ln(us[b]) < log_a;
            }
        });
        let accept = &p.accept;
        let take = |dst: &mut [f64], src: &[f64], width: usize| {
            dst.par_chunks_mut(width).zip(src.par_chunks(width)).zip(accept.par_iter()).for_each(|((a, b), &ok)| {
                if ok {
                    a.copy_from_slice(b);
                }
            })
        };
        take(&mut st.x, &p.x, d);
        take(&mut st.drift, &p.drift, d);
        take(&mut st.rate, &p.rate, 1);
        if c.tracks {
            take(&mut st.ell, &p.ell, k);
        }
        for (s, q) in st.scores.iter_mut().zip(&p.scores) {
            take(s, q, d);
        }
        let accepted = p.accept.iter().filter(|&&a| a).count();
        st.prop = p;
        Ok((accepted as f64 / n as f64, eps))
    }

    /// Tweedie's denoising step x ← (x + σ² ŝ)/α with the target's score at t_min (for naive, its drift).
    fn denoise(&self, c: &Consts, st: &mut State) {
        let (d, k, chunk, comp) = (c.d, c.k, c.chunk, &self.composition);
        let t = self.config.t_min;
        let (alpha, s2) = (self.schedule.alpha(t), self.schedule.sigma2(t));
        let naive = comp.mixture_method() == Some(crate::compose::MixtureMethod::Naive);
        let scores_r = &st.scores;
        st.x.par_chunks_mut(chunk * d).zip(st.ell.par_chunks(chunk * k)).zip(st.drift.par_chunks(chunk * d)).enumerate().for_each(|(ci, ((xc, ec), dc))| {
            let mut w = vec![0.0; k];
            let mut sh = vec![0.0; d];
            for r in 0..xc.len() / d {
                let b = ci * chunk + r;
                if naive {
                    sh.copy_from_slice(&dc[r * d..(r + 1) * d]);
                } else {
                    comp.state_weights(&ec[r * k..(r + 1) * k], &mut w);
                    sh.iter_mut().for_each(|v| *v = 0.0);
                    for i in 0..k {
                        for j in 0..d {
                            sh[j] += w[i] * scores_r[i][b * d + j];
                        }
                    }
                }
                for j in 0..d {
                    xc[r * d + j] = (xc[r * d + j] + s2 * sh[j]) / alpha;
                }
            }
        });
    }

    /// One unadjusted Langevin step at fixed t on the geometric target, whose score is the drift score
    /// ŝ = Σ c_i s_i: x ← x + ε ŝ + √(2ε) z with ε = 2 r² d / mean |ŝ|².
    fn langevin_correct(&self, x: &mut [f64], drift: &[f64], z: &mut [f64], chunk: usize, rng: &mut Rng) {
        let d = self.models[0].dim();
        let n = x.len() / d;
        let mean_sq = lanes::norm2(drift) / n as f64;
        let eps = 2.0 * self.config.corrector_snr.powi(2) * d as f64 / mean_sq.max(1e-12);
        rng::par_fill_normal(rng, z);
        let amp = (2.0 * eps).sqrt();
        x.par_chunks_mut(chunk * d).zip(drift.par_chunks(chunk * d)).zip(z.par_chunks(chunk * d)).for_each(|((xc, dc), zc)| {
            for i in 0..xc.len() {
                xc[i] += eps * dc[i] + amp * zc[i];
            }
        });
    }
}

/// [`Sampler::memory_bytes`] for n particles of d values and k models (None on overflow): n·d values in
/// 2k + 7 buffers, n·k in 2 (ℓ, divergences) and a few per particle.
fn memory_estimate(n: usize, d: usize, k: usize) -> Option<u64> {
    // k + 5 buffers of the state, k + 2 for a Metropolis move's proposal.
    let big = crate::limits::f64_bytes(n, d, k.checked_mul(2)?.checked_add(7)?)?;
    let small = crate::limits::f64_bytes(n, k.checked_mul(2)?.checked_add(4)?, 1)?;
    big.checked_add(small)
}

/// What a run fixes once: sizes, the noise scale and what the composition needs.
struct Consts {
    n: usize,
    k: usize,
    d: usize,
    eta: f64,
    kappa: f64,
    tracks: bool,
    needs_div: bool,
    weighted: bool,
    div_f: f64,
    div_cost: usize,
    chunk: usize,
    /// A weighted geometric target or a power mean with m > 1: the drift's γ and the Metropolis moves apply.
    tuned: bool,
    /// Σ c_i of a geometric target (1 otherwise).
    c_sum: f64,
}

/// The coefficients of one step ([`Sampler::coefficients`]).
struct StepCoefficients {
    lna: f64,
    v: f64,
    mx: f64,
    /// The linear factor at γ = 1, from which ℓ measures a particle's increment.
    ml: f64,
    ms: f64,
    noise: f64,
    cl: f64,
    wl: f64,
    wr: f64,
    /// 1 − γ of the drift (0 but where [`Composition::moves_apply`]).
    gx: f64,
}

/// Move every particle, update its ℓ, and put the left part of its weight increment in `inc`.
fn advance(c: &Consts, st: &mut State, k: &StepCoefficients) {
    let (d, kk, chunk) = (c.d, c.k, c.chunk);
    let (scores_r, divs_r, drift_r, rate_r, z_r) = (&st.scores, &st.divs, &st.drift, &st.rate, &st.z);
    st.x.par_chunks_mut(chunk * d).zip(st.ell.par_chunks_mut(chunk * kk)).zip(st.inc.par_chunks_mut(chunk)).enumerate().for_each(|(ci, ((xc, ec), ic))| {
        let (mut xn, mut dx) = (vec![0.0; d], vec![0.0; d]);
        for (r, inc_b) in ic.iter_mut().enumerate() {
            let b = ci * chunk + r;
            let xb = &mut xc[r * d..(r + 1) * d];
            let (db, zb) = (&drift_r[b * d..(b + 1) * d], &z_r[b * d..(b + 1) * d]);
            // The (1 − γ) f·ŝ term exists only where the drift's γ applies and γ ≠ 1.
            let shift = if k.gx == 0.0 { 0.0 } else { k.gx * f_dot_s(xb, db) };
            *inc_b = (c.div_f + k.gx) * d as f64 * k.lna + k.wl * (rate_r[b] + shift);
            for j in 0..d {
                xn[j] = k.mx * xb[j] + k.ms * db[j] + k.noise * zb[j];
            }
            if c.tracks {
                for j in 0..d {
                    dx[j] = xn[j] - k.ml * xb[j];
                }
                let eb = &mut ec[r * kk..(r + 1) * kk];
                for (i, e) in eb.iter_mut().enumerate() {
                    let si = &scores_r[i][b * d..(b + 1) * d];
                    let mut dl = d as f64 * k.lna + k.cl * lanes::dot(si, &dx) - 0.5 * k.v * lanes::norm2(si);
                    if c.needs_div {
                        dl += 0.5 * (c.eta * c.eta - 1.0) * k.v * divs_r[i][b];
                    }
                    *e += dl;
                }
            }
            xb.copy_from_slice(&xn);
        }
    });
}

/// f·S / g² = −½ x·S at one particle (the state-dependent part of ∇·f + f·S in units of g², maths §4a′).
fn f_dot_s(x: &[f64], s: &[f64]) -> f64 {
    -0.5 * lanes::dot(x, s)
}

/// The first particle whose position, tracked log-densities ℓ or log-weight increment is not finite,
/// as an error.
fn check_finite(c: &Consts, st: &State, step: usize, t: f64) -> Result<()> {
    let bad = [("particle position", first_bad_row(&st.x, c.d)), ("log-weight increment", first_bad_row(&st.inc, 1)), ("tracked log-density", first_bad_row(&st.ell, c.k))];
    match bad.iter().find_map(|(what, b)| b.map(|b| (what, b))) {
        Some((what, b)) => Err(non_finite(format!("{what} (particle {b})"), step, t)),
        None => Ok(()),
    }
}

/// The first row (of `width` values) of `v` that holds a NaN or an infinity.
fn first_bad_row(v: &[f64], width: usize) -> Option<usize> {
    let finite = if v.len() > 16 * BLOCK { v.par_chunks(BLOCK).all(lanes::all_finite) } else { lanes::all_finite(v) };
    if finite {
        return None;
    }
    v.iter().position(|x| !x.is_finite()).map(|i| i / width.max(1))
}

fn non_finite(what: String, step: usize, t: f64) -> Error {
    Error::NonFinite { what, step, t, hint: "a model returned NaN/inf or the step is too coarse; try more --steps".into() }
}
