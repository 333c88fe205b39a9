//! What a simulation reads: the policy (a file, or the bundled festival example) and each
//! online workload's demand (CSV traces, or the bundled synthetic trace).
//!
//! Which demand drives which workload:
//! - no `--trace`: the bundled synthetic series, by position (payment, balance-payment,
//!   refund shapes for the first three online workloads; any further ones get no demand);
//! - `--trace FILE`: the first online workload; the others get no demand (they stay at
//!   `replicas.min`);
//! - `--trace NAME=FILE` (repeatable): that workload; workloads without one get no demand;
//! - `--prometheus URL`: every online workload, its `demand.query` read from Prometheus
//!   (`history.rs`), as if each had a trace.
//!
//! Trace values are in the workload's demand unit (what `perReplica` is written in). The
//! forecaster's step is the policy's `forecast.step`, or the coarsest trace's step when that
//! is coarser (a 30-minute trace cannot be forecast minute by minute).

use std::path::{Path, PathBuf};

use crate::policy::{self, PolicyError, ShiftPolicy};
use crate::trace::{self, Trace, TraceError};

use super::demand::Demand;
use super::synth;

pub const BUNDLED_POLICY: &str = include_str!("../../policies/festival.yaml");
pub const BUNDLED_POLICY_ORIGIN: &str = "policies/festival.yaml, bundled";

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("policy {0}")]
    Policy(#[from] PolicyError),
    #[error("trace {0}")]
    Trace(#[from] TraceError),
    #[error("--trace {0}")]
    Usage(String),
}

pub struct Inputs {
    pub policy: ShiftPolicy,
    pub policy_origin: String,
    /// Per online workload, in policy order.
    pub demand: Vec<Option<Demand>>,
    pub forecast_step: i64,
    /// What the demand came from, in words.
    pub source: String,
}

pub fn load_policy(path: Option<&Path>) -> Result<(ShiftPolicy, String), InputError> {
    match path {
        Some(path) => Ok((policy::load_file(path)?, path.display().to_string())),
        None => Ok((
            policy::load_str(BUNDLED_POLICY, BUNDLED_POLICY_ORIGIN)?,
            BUNDLED_POLICY_ORIGIN.to_string(),
        )),
    }
}

pub fn resolve(
    policy_path: Option<&Path>,
    trace_args: &[String],
    seed: u64,
) -> Result<Inputs, InputError> {
    let (policy, policy_origin) = load_policy(policy_path)?;
    let names: Vec<&str> = policy.spec.online.iter().map(|w| w.name.as_str()).collect();
    let policy_step = (policy.spec.forecast.step.as_secs() as i64).max(1);

    if trace_args.is_empty() {
        let series = synth::festival(seed);
        let forecast_step = policy_step.max(synth::STEP);
        let demand = (0..names.len())
            .map(|i| {
                series
                    .get(i)
                    .map(|(_, s)| Demand::from_series(s.clone(), forecast_step))
            })
            .collect();
        return Ok(Inputs {
            policy,
            policy_origin,
            demand,
            forecast_step,
            source: format!(
                "bundled festival trace (synthetic, seed {seed}; {} days at 1-minute steps)",
                synth::DAYS
            ),
        });
    }

    let mut files: Vec<Option<PathBuf>> = vec![None; names.len()];
    let mut bare = 0;
    for arg in trace_args {
        let (index, file) = match arg.split_once('=') {
            Some((name, file)) if !name.is_empty() && !name.contains('/') => {
                let index = names.iter().position(|n| *n == name).ok_or_else(|| {
                    InputError::Usage(format!(
                        "{arg}: no online workload named {name:?} in the policy (online workloads: {})",
                        names.join(", ")
                    ))
                })?;
                (index, file)
            }
            _ => {
                bare += 1;
                (0, arg.as_str())
            }
        };
        if file.is_empty() {
            return Err(InputError::Usage(format!("{arg}: no file given")));
        }
        if files[index].is_some() {
            return Err(InputError::Usage(format!(
                "{arg}: {} already has a trace; give one trace per workload \
                 (a bare FILE is for the first online workload, {})",
                names[index], names[0]
            )));
        }
        files[index] = Some(PathBuf::from(file));
    }
    if bare > 1 {
        return Err(InputError::Usage(
            "more than one bare FILE; write NAME=FILE for each workload".into(),
        ));
    }

    let mut traces = Vec::with_capacity(files.len());
    for file in &files {
        traces.push(match file {
            Some(path) => Some(trace::load_file(path)?),
            None => None,
        });
    }
    let source = files
        .iter()
        .zip(&names)
        .filter_map(|(f, n)| f.as_ref().map(|f| format!("{n}={}", f.display())))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(from_traces(policy, policy_origin, &traces, source))
}

/// Inputs from one trace (or none) per online workload, in policy order: CSV files, or the
/// history read from Prometheus, alike.
pub fn from_traces(
    policy: ShiftPolicy,
    policy_origin: String,
    traces: &[Option<Trace>],
    source: String,
) -> Inputs {
    let policy_step = (policy.spec.forecast.step.as_secs() as i64).max(1);
    let coarsest = traces
        .iter()
        .flatten()
        .map(|t| t.typical_step())
        .max()
        .unwrap_or(policy_step);
    let forecast_step = policy_step.max(coarsest);
    let demand = traces
        .iter()
        .map(|t| t.as_ref().map(|t| Demand::from_trace(t, forecast_step)))
        .collect();
    Inputs {
        policy,
        policy_origin,
        demand,
        forecast_step,
        source,
    }
}
