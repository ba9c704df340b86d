//! The reverse-time grids the sampler steps on (maths §2): uniform in t, uniform in log(σ/α), or Karras et
//! al.'s grid.

use std::fmt;
use std::str::FromStr;

use super::VpSchedule;
use crate::error::{Error, Result};

/// How the reverse-time grid 1 = t_0 > t_1 > … > t_n = t_min is spaced.
///
/// A value is always valid: build it with [`TimeGrid::uniform`], [`TimeGrid::log_snr`], [`TimeGrid::edm`]
/// (checked) or by parsing `uniform`, `logsnr`, `edm`, `edm:RHO`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct TimeGrid(Spacing);

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
enum Spacing {
    /// Equal steps in t: plain, and inaccurate near t = 0 where the score is stiff.
    Uniform,
    /// Equal steps in log(σ/α), the log noise-to-signal ratio.
    LogSnr,
    /// Karras et al.'s grid: equal steps in (σ/α)^(1/ρ); ρ = 7 puts many steps near the data.
    Edm { rho: f64 },
}

impl Default for TimeGrid {
    /// Karras et al.'s grid with ρ = 7.
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TimeGrid {
    /// Karras et al.'s grid with ρ = 7.
    pub const DEFAULT: TimeGrid = TimeGrid(Spacing::Edm { rho: 7.0 });

    /// Equal steps in t.
    pub fn uniform() -> Self {
        TimeGrid(Spacing::Uniform)
    }

    /// Equal steps in log(σ/α).
    pub fn log_snr() -> Self {
        TimeGrid(Spacing::LogSnr)
    }

    /// Equal steps in (σ/α)^(1/ρ), ρ finite and > 0.
    pub fn edm(rho: f64) -> Result<Self> {
        if !(rho.is_finite() && rho > 0.0) {
            return Err(Error::param("time grid rho", rho, "must be finite and > 0, e.g. 7"));
        }
        Ok(TimeGrid(Spacing::Edm { rho }))
    }

    /// `steps + 1` decreasing times from `t_max` to `t_min`.
    pub fn times(&self, schedule: &VpSchedule, steps: usize, t_max: f64, t_min: f64) -> Vec<f64> {
        let n = steps as f64;
        let mut ts: Vec<f64> = (0..=steps)
            .map(|i| {
                let f = i as f64 / n;
                match self.0 {
                    Spacing::Uniform => t_max + f * (t_min - t_max),
                    Spacing::LogSnr => {
                        let (a, b) = (schedule.nsr(t_max).ln(), schedule.nsr(t_min).ln());
                        schedule.t_of_nsr((a + f * (b - a)).exp())
                    }
                    Spacing::Edm { rho } => {
                        let (a, b) = (schedule.nsr(t_max).powf(1.0 / rho), schedule.nsr(t_min).powf(1.0 / rho));
                        schedule.t_of_nsr((a + f * (b - a)).powf(rho))
                    }
                }
            })
            .collect();
        ts[0] = t_max;
        ts[steps] = t_min;
        ts
    }
}

impl FromStr for TimeGrid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "uniform" => Ok(TimeGrid::uniform()),
            "logsnr" | "log-snr" => Ok(TimeGrid::log_snr()),
            "edm" => Ok(TimeGrid::default()),
            _ => {
                if let Some(r) = s.strip_prefix("edm:") {
                    let rho: f64 = r.parse().map_err(|_| Error::param("time grid", &s, "edm:RHO needs a number, e.g. edm:7"))?;
                    if !(rho.is_finite() && rho > 0.0) {
                        return Err(Error::param("time grid", &s, "rho must be > 0"));
                    }
                    TimeGrid::edm(rho)
                } else {
                    Err(Error::param("time grid", &s, "expected uniform, logsnr, edm or edm:RHO"))
                }
            }
        }
    }
}

impl fmt::Display for TimeGrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Spacing::Uniform => f.write_str("uniform"),
            Spacing::LogSnr => f.write_str("logsnr"),
            Spacing::Edm { rho } => write!(f, "edm:{rho}"),
        }
    }
}

