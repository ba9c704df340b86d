//! `mix-train`'s job: train the network a recipe describes (its `kind` picks the trainer), with periodic
//! checkpoints, `stop_at` and exact resume where the trainer supports them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::io::{check_outputs, OutputKind};
use crate::train::classifier::{train_classifier, ClassifierRecipe};
use crate::train::common::load_recipe;
use crate::train::diffusers::{DiffusersRecipe, DiffusersTrainer};
use crate::train::recipe::DIFFUSERS_KIND;
use crate::train::unet::UnetTrainer;
use crate::train::{Recipe, Trainer, UnetRecipe};

/// What to train and how; the overrides replace the recipe's values.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainJob {
    /// The recipe file (JSON).
    pub recipe: PathBuf,
    /// Output network file (overrides the recipe's `out`).
    pub out: Option<PathBuf>,
    /// Total optimisation steps (overrides `steps`).
    pub steps: Option<usize>,
    /// Checkpoint every N steps (overrides `checkpoint_every`; 0 = never).
    pub checkpoint_every: Option<usize>,
    /// Checkpoint file (default: the output with extension `.ckpt.safetensors`).
    pub checkpoint: Option<PathBuf>,
    /// Stop after this many steps, writing the network and a checkpoint (the learning-rate schedule
    /// still spans all `steps`).
    pub stop_at: Option<usize>,
    /// Continue from this checkpoint (same recipe; exact continuation).
    pub resume: Option<PathBuf>,
    /// Where Fashion-MNIST's IDX files are.
    pub data_dir: PathBuf,
    /// Replace existing output files even when they were not written from this recipe.
    pub force: bool,
}

/// Where a run stands, after each optimisation step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainProgress {
    /// Steps done.
    pub step: usize,
    /// Steps the run goes to.
    pub total: usize,
    /// Exponential moving average (0.99) of the training loss.
    pub loss_ema: f64,
    /// Learning rate of the step just taken.
    pub lr: f64,
}

/// What a finished run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// Steps taken in this run (not counting resumed ones).
    pub steps_run: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Final EMA of the loss (score networks).
    pub loss_ema: Option<f64>,
    /// Test accuracy (the classifier).
    pub test_accuracy: Option<f64>,
    /// The network file written.
    pub out: PathBuf,
}

impl TrainOutcome {
    /// The one-line summary the binary prints.
    pub fn summary(&self) -> String {
        match self.test_accuracy {
            Some(acc) => format!("trained in {:.1} s; test accuracy {:.4}; wrote {}", self.seconds, acc, self.out.display()),
            None => format!(
                "{} steps in {:.1} s ({:.1} steps/s); final loss (EMA) {:.4}; wrote {}",
                self.steps_run,
                self.seconds,
                self.steps_run as f64 / self.seconds.max(1e-9),
                self.loss_ema.unwrap_or(f64::NAN),
                self.out.display()
            ),
        }
    }
}

/// A score-network trainer as the job's loop drives it.
trait Steps {
    fn steps_done(&self) -> usize;
    fn step(&mut self) -> Result<f64>;
    fn lr_at(&self, k: usize) -> f64;
    fn save_network(&self, path: &Path) -> Result<()>;
    fn save_checkpoint(&self, path: &Path) -> Result<()>;
}

impl Steps for Trainer {
    fn steps_done(&self) -> usize {
        Trainer::steps_done(self)
    }
    fn step(&mut self) -> Result<f64> {
        Trainer::step(self)
    }
    fn lr_at(&self, k: usize) -> f64 {
        self.recipe().lr_at(k)
    }
    fn save_network(&self, path: &Path) -> Result<()> {
        Trainer::save_network(self, path)
    }
    fn save_checkpoint(&self, path: &Path) -> Result<()> {
        Trainer::save_checkpoint(self, path)
    }
}

impl Steps for DiffusersTrainer {
    fn steps_done(&self) -> usize {
        DiffusersTrainer::steps_done(self)
    }
    fn step(&mut self) -> Result<f64> {
        DiffusersTrainer::step(self)
    }
    fn lr_at(&self, k: usize) -> f64 {
        self.recipe().lr_at(k)
    }
    fn save_network(&self, path: &Path) -> Result<()> {
        DiffusersTrainer::save_network(self, path)
    }
    fn save_checkpoint(&self, path: &Path) -> Result<()> {
        DiffusersTrainer::save_checkpoint(self, path)
    }
}

impl Steps for UnetTrainer {
    fn steps_done(&self) -> usize {
        UnetTrainer::steps_done(self)
    }
    fn step(&mut self) -> Result<f64> {
        UnetTrainer::step(self)
    }
    fn lr_at(&self, k: usize) -> f64 {
        self.recipe.lr_at(k)
    }
    fn save_network(&self, path: &Path) -> Result<()> {
        self.save(path)
    }
    fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.save(path)
    }
}

/// The recipe's `kind` (default `score_mlp`).
fn recipe_kind(path: &Path) -> Result<String> {
    let v: serde_json::Value = load_recipe(path)?;
    Ok(v.get("kind").and_then(|k| k.as_str()).unwrap_or(crate::nets::mlp::KIND).to_string())
}

/// Refuse the job's flags that a recipe kind has no use for.
fn refuse(kind: &str, flags: &[(&str, bool)]) -> Result<()> {
    match flags.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(Error::param(*flag, "given", format!("recipes of kind `{kind}` do not support it; leave it out"))),
        None => Ok(()),
    }
}

/// Train what the recipe describes, calling `progress` after every step.
pub fn run(job: &TrainJob, mut progress: impl FnMut(&TrainProgress)) -> Result<TrainOutcome> {
    let kind = recipe_kind(&job.recipe)?;
    let start = Instant::now();
    match kind.as_str() {
        crate::nets::classifier::KIND => {
            refuse(&kind, &[
                ("--steps", job.steps.is_some()),
                ("--checkpoint-every", job.checkpoint_every.is_some()),
                ("--checkpoint", job.checkpoint.is_some()),
                ("--stop-at", job.stop_at.is_some()),
                ("--resume", job.resume.is_some()),
            ])?;
            let mut recipe: ClassifierRecipe = load_recipe(&job.recipe)?;
            if let Some(o) = &job.out {
                recipe.out = o.clone();
            }
            let outputs = [("--out", Some(recipe.out.as_path()), net_kind(job))];
            check_outputs(&[&job.recipe], &outputs)?;
            check_replace(job, &to_json(&recipe), &outputs)?;
            let acc = train_classifier(&recipe, &job.data_dir, |k, loss| progress(&TrainProgress { step: k, total: 0, loss_ema: loss, lr: recipe.lr }))?;
            Ok(TrainOutcome { steps_run: 0, seconds: start.elapsed().as_secs_f64(), loss_ema: None, test_accuracy: Some(acc), out: recipe.out })
        }
        DIFFUSERS_KIND => run_diffusers(job, start, &mut progress),
        crate::nets::unet::KIND => {
            refuse(&kind, &[("--stop-at", job.stop_at.is_some()), ("--resume", job.resume.is_some())])?;
            let mut recipe: UnetRecipe = load_recipe(&job.recipe)?;
            recipe.data_dir = job.data_dir.clone();
            override_common(job, &mut recipe.out, &mut recipe.steps, &mut recipe.checkpoint_every)?;
            if let Some(c) = &job.checkpoint {
                recipe.checkpoint = Some(c.clone());
            }
            let ckpt = recipe.checkpoint_path();
            let (steps, every, out) = (recipe.steps, recipe.checkpoint_every, recipe.out.clone());
            let outputs = [("--out", Some(out.as_path()), net_kind(job)), ("--checkpoint", (every > 0).then_some(ckpt.as_path()), net_kind(job))];
            check_outputs(&[&job.recipe], &outputs)?;
            check_replace(job, &to_json(&recipe), &outputs)?;
            let mut trainer = UnetTrainer::new(recipe)?;
            drive(&mut trainer, steps, steps, every, &out, &ckpt, start, &mut progress)
        }
        _ => {
            let mut recipe = Recipe::load(&job.recipe)?;
            recipe.data_dir = job.data_dir.clone();
            override_common(job, &mut recipe.out, &mut recipe.steps, &mut recipe.checkpoint_every)?;
            if let Some(c) = &job.checkpoint {
                recipe.checkpoint = Some(c.clone());
            }
            let ckpt = recipe.checkpoint_path();
            let (steps, every, out) = (recipe.steps, recipe.checkpoint_every, recipe.out.clone());
            let stop = job.stop_at.unwrap_or(steps).min(steps);
            let outputs = [
                ("--out", Some(out.as_path()), net_kind(job)),
                ("--checkpoint", (every > 0 || stop < steps).then_some(ckpt.as_path()), net_kind(job)),
            ];
            check_outputs(&[&job.recipe], &outputs)?;
            check_replace(job, &to_json(&recipe), &outputs)?;
            let mut trainer = match &job.resume {
                Some(p) => Trainer::resume(recipe, p)?,
                None => Trainer::new(recipe)?,
            };
            drive(&mut trainer, steps, stop, every, &out, &ckpt, start, &mut progress)
        }
    }
}

/// [`run`] for a `diffusers_unet2d` recipe (its output is a checkpoint directory).
fn run_diffusers(job: &TrainJob, start: Instant, mut progress: impl FnMut(&TrainProgress)) -> Result<TrainOutcome> {
    let mut recipe: DiffusersRecipe = load_recipe(&job.recipe)?;
    recipe.data_dir = job.data_dir.clone();
    override_common(job, &mut recipe.out, &mut recipe.steps, &mut recipe.checkpoint_every)?;
    if let Some(c) = &job.checkpoint {
        recipe.checkpoint = Some(c.clone());
    }
    let ckpt = recipe.checkpoint_path();
    let (steps, every, out) = (recipe.steps, recipe.checkpoint_every, recipe.out.clone());
    let stop = job.stop_at.unwrap_or(steps).min(steps);
    let weights = check_checkpoint_dir(job, &out)?;
    let outputs = [("--out", Some(weights.as_path()), net_kind(job)), ("--checkpoint", (every > 0 || stop < steps).then_some(ckpt.as_path()), net_kind(job))];
    check_outputs(&[&job.recipe], &outputs[1..])?;
    check_replace(job, &to_json(&recipe), &outputs)?;
    let mut trainer = match &job.resume {
        Some(p) => DiffusersTrainer::resume(recipe, p)?,
        None => DiffusersTrainer::new(recipe)?,
    };
    drive(&mut trainer, steps, stop, every, &out, &ckpt, start, &mut progress)
}

/// Check a diffusers checkpoint directory output before the run: a new directory (its parent writable)
/// or one a previous run wrote (its weights file is then checked like any network output); a file, or
/// a directory without the weights file that is not empty, is refused. Returns the weights file's path.
fn check_checkpoint_dir(job: &TrainJob, out: &Path) -> Result<PathBuf> {
    let weights = out.join("diffusion_pytorch_model.safetensors");
    let refuse = |why: &str| Error::param("--out", out.display(), format!("{why}; a diffusers checkpoint is written as a directory: choose another path"));
    if out.as_os_str().is_empty() {
        return Err(Error::param("--out", "\"\"", "an empty path; give a directory name"));
    }
    if out.is_file() {
        return Err(refuse("is a file"));
    }
    if out.is_dir() {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !weights.is_file() && !job.force {
            return Err(refuse("is a directory that holds no diffusion_pytorch_model.safetensors"));
        }
        check_outputs(&[&job.recipe], &[("--out", Some(weights.as_path()), net_kind(job))])?;
    } else {
        crate::io::check_writable(out)?;
    }
    Ok(weights)
}

/// What an existing `--out` or `--checkpoint` must be to be replaced: a network file, or anything with
/// `--force`.
fn net_kind(job: &TrainJob) -> OutputKind {
    if job.force {
        OutputKind::Any
    } else {
        OutputKind::Network
    }
}

fn to_json(recipe: &impl serde::Serialize) -> String {
    serde_json::to_string(recipe).expect("plain struct")
}

/// Refuse to replace an existing output file unless it records `recipe` (the JSON this run records: it
/// is a network or checkpoint written from the same recipe, so a rerun reproduces or continues it) or the
/// job says `force`. A shipped expert cannot be overwritten by a changed recipe (`--steps 10`) by accident.
fn check_replace(job: &TrainJob, recipe: &str, outputs: &[(&str, Option<&Path>, OutputKind)]) -> Result<()> {
    if job.force {
        return Ok(());
    }
    for (flag, path) in outputs.iter().filter_map(|&(f, p, _)| p.map(|p| (f, p))) {
        if !path.exists() {
            continue;
        }
        let recorded = crate::io::tensors::TensorFile::peek_header(path).and_then(|(_, mut meta)| meta.remove("recipe"));
        if recorded.as_deref() != Some(recipe) {
            let why = if recorded.is_some() { "was written from a different recipe (or different overrides)" } else { "was not written by mix-train" };
            return Err(Error::param(
                flag,
                path.display(),
                format!("the file exists and {why}; write to another path (--out, --checkpoint) or pass --force to replace it"),
            ));
        }
    }
    Ok(())
}

/// Apply the overrides every score-network recipe shares, and check the sizes they set: 1 to
/// [`crate::limits::MAX_STEPS`] steps, `--stop-at` ≥ 1.
fn override_common(job: &TrainJob, out: &mut PathBuf, steps: &mut usize, checkpoint_every: &mut usize) -> Result<()> {
    if let Some(o) = &job.out {
        *out = o.clone();
    }
    if let Some(s) = job.steps {
        *steps = s;
    }
    if let Some(c) = job.checkpoint_every {
        *checkpoint_every = c;
    }
    let flag = if job.steps.is_some() { "--steps" } else { "steps" };
    if *steps == 0 {
        return Err(Error::param(flag, 0, "need at least one optimisation step"));
    }
    crate::limits::at_most(flag, *steps, crate::limits::MAX_STEPS)?;
    if job.stop_at == Some(0) {
        return Err(Error::param("--stop-at", 0, "must be at least 1 (the steps to take before stopping)"));
    }
    Ok(())
}

/// The training loop: step to `stop` (of `steps`), checkpoint every `every` steps, then write the network
/// and, when checkpointing or stopping early, a last checkpoint. The caller has checked both paths
/// ([`check_outputs`]).
#[allow(clippy::too_many_arguments)]
fn drive(
    trainer: &mut impl Steps,
    steps: usize,
    stop: usize,
    every: usize,
    out: &Path,
    ckpt: &Path,
    start: Instant,
    progress: &mut impl FnMut(&TrainProgress),
) -> Result<TrainOutcome> {
    let first = trainer.steps_done();
    let mut ema: Option<f64> = None;
    while trainer.steps_done() < stop {
        let loss = trainer.step()?;
        if !loss.is_finite() {
            let step = trainer.steps_done();
            return Err(Error::Diverged {
                what: format!("loss ({loss})"),
                step,
                hint: "lower the recipe's lr or raise its t_min; the last checkpoint, if any, is kept and can be resumed".into(),
            });
        }
        let e = ema.map_or(loss, |e| 0.99 * e + 0.01 * loss);
        ema = Some(e);
        let k = trainer.steps_done();
        progress(&TrainProgress { step: k, total: steps, loss_ema: e, lr: trainer.lr_at(k) });
        if every > 0 && k.is_multiple_of(every) && k < stop {
            trainer.save_checkpoint(ckpt)?;
        }
    }
    trainer.save_network(out)?;
    if every > 0 || stop < steps {
        trainer.save_checkpoint(ckpt)?;
    }
    Ok(TrainOutcome {
        steps_run: trainer.steps_done() - first,
        seconds: start.elapsed().as_secs_f64(),
        loss_ema: ema,
        test_accuracy: None,
        out: out.to_path_buf(),
    })
}
