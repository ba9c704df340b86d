//! `mix-sample`'s job: open the models, build the checked composition and sampler, run it, and write the
//! samples, the JSON report and the picture (each atomically); optionally judge image samples with the
//! Fashion-MNIST classifier.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::compose::{ComposeKind, Composition, CompositionSpec};
use crate::diffusion::{SampleRun, Sampler, SamplerConfig, StepInfo};
use crate::error::{Error, Result};
use crate::io::idx::FASHION_CLASSES;
use crate::io::OutputKind;
#[cfg(feature = "nets")]
use crate::nets::classifier::{class_fractions, Classifier};
use crate::registry::Loader;
use crate::{io, report, rng};

/// Everything `mix-sample` is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct MixJob {
    /// Model references, in order ([`Loader::load`]).
    pub models: Vec<PathBuf>,
    /// How the models are opened (the hub cache for `hf:` references).
    pub loader: Loader,
    /// The composition as the user states it (the number of models is filled in from `models`).
    pub spec: CompositionSpec,
    /// Sampler settings.
    pub config: SamplerConfig,
    /// Picture of a weighted resample (PNG).
    pub out: Option<PathBuf>,
    /// Rows × columns of the image grid, for image data.
    pub grid: (usize, usize),
    /// Samples and log-weights (safetensors).
    pub save_samples: Option<PathBuf>,
    /// JSON report.
    pub report: Option<PathBuf>,
    /// Fashion-MNIST classifier that judges image samples.
    pub classifier: Option<PathBuf>,
    /// Where Fashion-MNIST's IDX files are (real test images for the classifier's Fréchet distance;
    /// when they cannot be read the distance is left out, saying so).
    pub fashion_mnist_dir: PathBuf,
    /// Bytes the run may use (the binary passes the machine's available memory); a run that needs more
    /// is refused before it starts.
    pub memory_limit: u64,
}

/// Class fractions of the samples by the classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassFractions {
    /// By the final normalised weights (10 values, Σ = 1).
    pub weighted: Vec<f64>,
    /// With equal weights.
    pub unweighted: Vec<f64>,
    /// The classifier's recorded test accuracy.
    pub test_accuracy: Option<f64>,
    /// Fréchet distance to real test images in the classifier's feature space, with its floor; or why
    /// it is missing.
    pub frechet: std::result::Result<Frechet, String>,
}

/// [`crate::report::classes::Frechet`], or its stand-in in a build without networks.
#[cfg(feature = "nets")]
pub use crate::report::classes::Frechet;

/// Without the `nets` feature there is no classifier and no distance.
#[cfg(not(feature = "nets"))]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frechet {
    pub distance: f64,
    pub floor: f64,
    pub n: usize,
}

/// What a finished job produced.
#[derive(Clone, Debug)]
pub struct MixOutcome {
    /// The run.
    pub run: SampleRun,
    /// What the models say about themselves (e.g. where a checkpoint's schedule came from).
    pub notes: Vec<String>,
    /// Class fractions, when a classifier was given.
    pub classes: Option<ClassFractions>,
}

impl MixOutcome {
    /// The summary lines the binary prints.
    pub fn summary(&self) -> String {
        let run = &self.run;
        let n = run.len() as f64;
        let mut s = format!(
            "{} particles x {} steps in {:.2} s ({:.3e} particle-steps/s); log Z = {:.4}; final ESS = {:.0} ({:.0}%); {} resamplings; {} surviving lineages",
            run.len(),
            run.steps.len(),
            run.wall_seconds,
            run.particle_steps_per_second(),
            run.log_z,
            run.final_ess,
            100.0 * run.final_ess / n,
            run.resamples,
            run.lineages
        );
        let acc: Vec<f64> = run.steps.iter().filter_map(|i| i.move_accept).collect();
        if run.steps.iter().any(|i| i.gamma != 1.0) || !acc.is_empty() {
            let g: Vec<f64> = run.steps.iter().map(|i| i.gamma).collect();
            let (lo, hi) = g.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            s.push_str(&format!("; drift gamma {lo:.2}..{hi:.2}"));
            if !acc.is_empty() {
                s.push_str(&format!("; move acceptance {:.2}", acc.iter().sum::<f64>() / acc.len() as f64));
            }
        }
        for n in &self.notes {
            s.push_str(&format!("\n{n}"));
        }
        if let Some(c) = &self.classes {
            let f: Vec<String> =
                c.weighted.iter().enumerate().filter(|(_, &v)| v > 0.0).map(|(i, v)| format!("{i} {} {v:.3}", FASHION_CLASSES[i])).collect();
            s.push_str(&format!("\nclass fractions (weighted): {}", f.join(", ")));
            match &c.frechet {
                Ok(fd) => s.push_str(&format!(
                    "\nFréchet distance to real test images of the same classes (classifier features, {} images): {:.2}; real-vs-real floor {:.2} ({:.1}x)",
                    fd.n,
                    fd.distance,
                    fd.floor,
                    fd.distance / fd.floor.max(f64::MIN_POSITIVE)
                )),
                Err(why) => s.push_str(&format!("\nFréchet distance: not computed ({why})")),
            }
        }
        s
    }
}

/// Run the job, calling `observer` after every step.
pub fn run(job: &MixJob, observer: impl FnMut(&StepInfo)) -> Result<MixOutcome> {
    let inputs: Vec<&Path> = job.models.iter().map(PathBuf::as_path).chain(job.classifier.as_deref()).collect();
    let outputs = [
        ("--out", job.out.as_deref(), OutputKind::Picture),
        ("--save-samples", job.save_samples.as_deref(), OutputKind::Samples),
        ("--report", job.report.as_deref(), OutputKind::Report),
    ];
    io::check_outputs(&inputs, &outputs)?;
    let models = job.loader.load_all(&job.models)?;
    let spec = CompositionSpec { n_models: models.len(), ..job.spec.clone() };
    let composition = spec.build()?;
    let classifier = job.classifier.as_deref().map(Classifier::load).transpose()?;
    if classifier.is_some() && models[0].data_shape() != [1, 28, 28] {
        return Err(Error::param(
            "--classifier",
            job.classifier.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
            format!("needs 1x28x28 image models, not data shape {:?}", models[0].data_shape()),
        ));
    }
    let sampler = Sampler::new(&models, composition.clone(), job.config.clone())?;
    crate::limits::memory("--particles", job.config.particles, Some(sampler.memory_bytes()), job.memory_limit, "--particles")?;
    if job.out.is_some() && models[0].data_shape().len() == 3 {
        report::check_grid(models[0].data_shape(), job.grid, 3).map_err(|e| rename_param(e, "--grid-size"))?;
    }
    let run = sampler.run(observer)?;
    let classes = classifier.as_ref().map(|c| judge(c, &run, &job.fashion_mnist_dir, job.config.seed)).transpose()?;
    write_outputs(job, &composition, &run, classes.as_ref(), classifier.as_ref())?;
    let notes = models.iter().flat_map(|m| m.notes()).collect();
    Ok(MixOutcome { run, classes, notes })
}

/// Without the `nets` feature there is no classifier: asking for one is an error, and this type has no
/// values, so the code that would use one is unreachable.
#[cfg(not(feature = "nets"))]
enum Classifier {}

#[cfg(not(feature = "nets"))]
impl Classifier {
    fn load(path: &Path) -> Result<Classifier> {
        Err(Error::Unsupported {
            model: path.display().to_string(),
            what: "a classifier in this build".into(),
            hint: "wfrmix was built without its `nets` feature; rebuild with default features".into(),
        })
    }

    fn predict(&self, _: &[f64]) -> Result<Vec<u8>> {
        match *self {}
    }
}

#[cfg(not(feature = "nets"))]
fn judge(c: &Classifier, _: &SampleRun, _: &Path, _: u64) -> Result<ClassFractions> {
    match *c {}
}

#[cfg(feature = "nets")]
fn judge(c: &Classifier, run: &SampleRun, fashion_mnist_dir: &Path, seed: u64) -> Result<ClassFractions> {
    let labels = c.predict(&run.samples)?;
    let frechet = crate::io::idx::load_fashion_mnist(fashion_mnist_dir, crate::io::idx::Split::Test, None)
        .map_err(|e| format!("real test images: {e}"))
        .and_then(|test| crate::report::classes::frechet_to_real(c, run, &test, seed).map_err(|e| e.to_string()));
    Ok(ClassFractions {
        weighted: class_fractions(&labels, Some(&run.weights())),
        unweighted: class_fractions(&labels, None),
        test_accuracy: c.test_accuracy,
        frechet,
    })
}

/// The report's `classes` entry.
fn classes_json(job: &MixJob, c: &ClassFractions) -> Value {
    let named = |f: &[f64]| -> serde_json::Map<String, Value> {
        f.iter().enumerate().map(|(i, v)| (format!("{i}:{}", FASHION_CLASSES[i]), json!(v))).collect()
    };
    json!({
        "classifier": job.classifier.as_ref().map(|p| p.display().to_string()),
        "classifier_test_accuracy": c.test_accuracy,
        "weighted_fractions": named(&c.weighted),
        "unweighted_fractions": named(&c.unweighted),
        "weighted": c.weighted,
        "frechet": match &c.frechet {
            Ok(f) => json!({"distance": f.distance, "real_vs_real_floor": f.floor, "real_images": f.n, "feature_space": "the classifier's last hidden layer"}),
            Err(why) => json!({"missing": why}),
        },
    })
}

fn write_outputs(job: &MixJob, composition: &Composition, run: &SampleRun, classes: Option<&ClassFractions>, classifier: Option<&Classifier>) -> Result<()> {
    let seed = job.config.seed;
    if let Some(p) = &job.save_samples {
        let mut meta = HashMap::new();
        meta.insert("composition".to_string(), serde_json::to_string(composition).unwrap_or_default());
        meta.insert("seed".to_string(), seed.to_string());
        report::save_samples(p, run, &meta)?;
    }
    if let Some(p) = &job.report {
        let settings = json!({
            "models": job.models.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "composition": composition,
            "sampler": job.config,
        });
        let mut rep = report::report(settings, run);
        if let Some(c) = classes {
            rep["classes"] = classes_json(job, c);
        }
        io::write_json(p, &rep)?;
    }
    if let Some(p) = &job.out {
        let names: Vec<String> =
            job.models.iter().map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()).collect();
        let title = format!("{} of {} ({} particles, seed {})", kind_name(job.spec.kind), names.join(" + "), job.config.particles, seed);
        let mut prng = rng::seeded(seed ^ 0x5eed);
        match classifier {
            Some(c) if run.shape.len() == 3 => {
                let m = (job.grid.0 * job.grid.1).min(run.len());
                let imgs = run.resampled(m, &mut prng);
                let labels: Vec<String> = c.predict(&imgs)?.iter().map(|&l| FASHION_CLASSES[l as usize].to_string()).collect();
                report::save_image_grid(p, &imgs, &run.shape, job.grid.0, job.grid.1, 3, &title, Some(&labels))?;
            }
            _ => report::save_picture(p, run, &title, job.grid, None, &mut prng)?,
        }
    }
    Ok(())
}

/// `e` with its parameter called `flag` (the CLI's name for it).
fn rename_param(e: Error, flag: &str) -> Error {
    match e {
        Error::InvalidParameter { value, reason, .. } => Error::InvalidParameter { name: flag.into(), value, reason },
        e => e,
    }
}

fn kind_name(k: ComposeKind) -> String {
    format!("{k:?}").to_lowercase()
}
