//! The DDIM scheduler: timesteps and cumulative alphas from a diffusers
//! `scheduler_config.json`, in f64.
//!
//! Ports the parts of diffusers' [`schedulers/scheduling_ddim.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/schedulers/scheduling_ddim.py)
//! that Ditail uses (eta 0, epsilon prediction, no clipping). Timesteps are integers, so
//! they equal diffusers' exactly; alphas are computed in f64 (diffusers uses f32).

use std::path::Path;

use ditail_models::json::JsonConfig;
use serde_json::Value;

use crate::error::{PipelineError, Result};

/// How the inference timesteps are spread over the training timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// `(N-1)·r, ..., r, 0` plus `steps_offset`, with `r = T div N` (SD1.x).
    Leading,
    /// `round(T - k·T/N) - 1` for `k = 0..N`.
    Trailing,
    /// `round(linspace(0, T-1, N))`, reversed.
    Linspace,
}

/// How the betas grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// `linspace(beta_start, beta_end, T)`.
    Linear,
    /// `linspace(sqrt(beta_start), sqrt(beta_end), T)^2` (SD1.x).
    ScaledLinear,
    /// The cosine schedule, betas capped at 0.999.
    SquaredCosCapV2,
}

/// The most training timesteps a scheduler config may have (SD's have 1000).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// A scheduler configuration; names follow diffusers' `scheduler_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Training timesteps `T`.
    pub num_train_timesteps: usize,
    /// First beta.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// Beta schedule.
    pub beta_schedule: BetaSchedule,
    /// Whether the alpha after the last step is 1 (else `alphas_cumprod[0]`).
    pub set_alpha_to_one: bool,
    /// Added to every leading-spaced timestep.
    pub steps_offset: usize,
    /// Timestep spacing.
    pub timestep_spacing: Spacing,
}

impl Default for SchedulerConfig {
    /// Stable Diffusion 1.5's ([`scheduler/scheduler_config.json`](https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/scheduler/scheduler_config.json)).
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            set_alpha_to_one: false,
            steps_offset: 1,
            timestep_spacing: Spacing::Leading,
        }
    }
}

impl SchedulerConfig {
    /// Reads a diffusers `scheduler_config.json` (any scheduler class: only the noise
    /// schedule is taken; Ditail always samples with DDIM).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::from_json(&JsonConfig::read(path)?)
    }

    /// See [`SchedulerConfig::from_json_file`].
    pub fn from_json(j: &JsonConfig) -> Result<Self> {
        let d = Self::default();
        j.expect("prediction_type", Value::from("epsilon"))?;
        if j.raw("trained_betas").is_some_and(|v| !v.is_null()) {
            return Err(j
                .error("`trained_betas` is not supported (use beta_start/beta_end/beta_schedule)")
                .into());
        }
        let schedule: String = j.get("beta_schedule", "scaled_linear".to_string())?;
        let beta_schedule = match schedule.as_str() {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            other => return Err(j
                .error(format!(
                    "unsupported beta_schedule `{other}` (linear, scaled_linear, squaredcos_cap_v2)"
                ))
                .into()),
        };
        let spacing: String = j.get("timestep_spacing", "leading".to_string())?;
        let timestep_spacing = match spacing.as_str() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            "linspace" => Spacing::Linspace,
            other => {
                return Err(j
                    .error(format!(
                        "unsupported timestep_spacing `{other}` (leading, trailing, linspace)"
                    ))
                    .into());
            }
        };
        let c = Self {
            num_train_timesteps: j.get("num_train_timesteps", d.num_train_timesteps)?,
            beta_start: j.get("beta_start", d.beta_start)?,
            beta_end: j.get("beta_end", d.beta_end)?,
            beta_schedule,
            set_alpha_to_one: j.get("set_alpha_to_one", d.set_alpha_to_one)?,
            steps_offset: j.get("steps_offset", d.steps_offset)?,
            timestep_spacing,
        };
        // The schedule holds two f64 per training timestep (SD's have 1000).
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&c.num_train_timesteps) {
            return Err(j
                .error(format!(
                    "num_train_timesteps {} must be between 2 and {MAX_TRAIN_TIMESTEPS}",
                    c.num_train_timesteps
                ))
                .into());
        }
        // Betas outside [0, 1) make the cumulative alphas negative, zero or infinite.
        for (key, beta) in [("beta_start", c.beta_start), ("beta_end", c.beta_end)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(j
                    .error(format!("{key} {beta} must be at least 0 and below 1"))
                    .into());
            }
        }
        if c.steps_offset >= c.num_train_timesteps {
            return Err(j
                .error(format!(
                    "steps_offset {} must be below num_train_timesteps {}",
                    c.steps_offset, c.num_train_timesteps
                ))
                .into());
        }
        Ok(c)
    }
}

/// The DDIM noise schedule of one model.
#[derive(Clone, Debug)]
pub struct Ddim {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
}

fn linspace(start: f64, end: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(move |i| {
        if i == n - 1 {
            end
        } else {
            start + i as f64 * step
        }
    })
}

impl Ddim {
    /// Builds the schedule.
    pub fn new(config: SchedulerConfig) -> Self {
        let n = config.num_train_timesteps;
        let betas: Vec<f64> = match config.beta_schedule {
            BetaSchedule::Linear => linspace(config.beta_start, config.beta_end, n).collect(),
            BetaSchedule::ScaledLinear => {
                linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredCosCapV2 => {
                let alpha_bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        let alphas_cumprod: Vec<f64> = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// `ā` for every training timestep.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `ā` used after the last step (prev timestep < 0).
    pub fn final_alpha_cumprod(&self) -> f64 {
        self.final_alpha_cumprod
    }

    /// `ā[t]`, or the final value for `t < 0`.
    pub fn alpha(&self, t: i64) -> f64 {
        if t < 0 {
            self.final_alpha_cumprod
        } else {
            self.alphas_cumprod[t as usize]
        }
    }

    /// The `n` inference timesteps, decreasing, as diffusers' `set_timesteps(n)`; fails
    /// where one would be beyond the training timesteps (diffusers then fails indexing).
    pub fn timesteps(&self, n: usize) -> Result<Vec<i64>> {
        let t = self.config.num_train_timesteps;
        if n == 0 || n > t {
            return Err(PipelineError::Settings(format!(
                "{n} steps: the number of steps must be between 1 and the {t} training timesteps"
            )));
        }
        let steps: Vec<i64> = match self.config.timestep_spacing {
            Spacing::Leading => {
                let ratio = t / n;
                // The first (noisiest) timestep must be one the model was trained on.
                let first = (n - 1) * ratio + self.config.steps_offset;
                if first >= t {
                    return Err(PipelineError::Settings(format!(
                        "{n} steps: the first timestep would be {first} (steps_offset {}), \
                         beyond the {t} training timesteps; use fewer steps",
                        self.config.steps_offset
                    )));
                }
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.config.steps_offset) as i64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / n as f64;
                let mut v = Vec::new();
                let mut k = 0;
                loop {
                    let x = t as f64 - k as f64 * ratio;
                    if x <= 0.0 {
                        break;
                    }
                    v.push(x.round_ties_even() as i64 - 1);
                    k += 1;
                }
                v
            }
            Spacing::Linspace => {
                let mut v: Vec<i64> = linspace(0.0, (t - 1) as f64, n)
                    .map(|x| x.round_ties_even() as i64)
                    .collect();
                v.reverse();
                v
            }
        };
        Ok(steps)
    }

    /// The distance DDIM steps back from a timestep: `T div n`.
    pub fn step_ratio(&self, n: usize) -> i64 {
        (self.config.num_train_timesteps / n.max(1)) as i64
    }
}
