//! Stage 2: demand and forecasts of the online workloads. Reads each one's demand from the
//! `DemandSource`, refits its model when the refit schedule says so (reading the whole history
//! then, only the recent window otherwise), predicts, and records the forecast against what
//! came to pass.

use std::sync::Arc;
use std::time::Duration;

use super::observe::{Observations, pod_resources};
use super::{CycleReport, Environment, FittedEntry, PolicyMemory, labels};
use crate::forecast::{FittedModel, Forecast, ForecastSpec, RecentAccuracy, RefitSchedule, Series};
use crate::plan::OnlineState;
use crate::policy::ShiftPolicySpec;
use crate::source::last_finite_age;

/// Forecast error is measured over this window.
pub(super) const ERROR_WINDOW_SECONDS: i64 = 6 * 3600;

/// The forecaster's slots, shared by every policy of a process.
pub struct FitSlots {
    /// Fits running at once (`FitSlots::for_this_machine`). Fits are CPU-bound: more at once
    /// than cores only adds their working memory (and a thread each).
    fits: tokio::sync::Semaphore,
    /// Refits (fetching a whole history, then fitting on it) in progress at once: two per fit
    /// slot, so one fetches while another fits. Without a bound, a daemon starting with a
    /// thousand online workloads fetched every history at once and held them all while they
    /// queued for a core.
    pub(super) refits: tokio::sync::Semaphore,
    refit_slots: usize,
}

/// The most fits a process runs at once, whatever the machine.
pub const MAX_FITS: usize = 4;

impl FitSlots {
    pub fn new(fits: usize) -> Self {
        let fits = fits.max(1);
        Self {
            fits: tokio::sync::Semaphore::new(fits),
            refits: tokio::sync::Semaphore::new(2 * fits),
            refit_slots: 2 * fits,
        }
    }

    /// A fit slot per two cores of this machine, at least one and at most `MAX_FITS`.
    ///
    /// Half the cores: a cycle (reading demand, deciding, writing) always finds a core while
    /// fits run, and each fit's working set (the design matrix and the held-out forecasts of 14
    /// days at 1m, 5 to 8 MB) is what the daemon's memory peaks on while first fits queue. At
    /// most `MAX_FITS`: the chart requests 100m of CPU and sets no CPU limit, so the cores seen
    /// are the node's, 64 on a large one, and 64 fits at once would hold 400 MB.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(fits_for(cores))
    }

    /// A slot for the first fit of a workload (or a fit after its spec changed): it has no
    /// forecast without one, so it queues, at most `REFIT_SLOT_WAIT`.
    async fn first(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(REFIT_SLOT_WAIT, self.refits.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// A slot for a scheduled refit, only if one is free now: the model it replaces keeps
    /// forecasting meanwhile, so a refit never queues ahead of a workload with no forecast at
    /// all. (A 10-minute retrain of 4,000 online workloads is about 7 fits a second: at 2,000
    /// policies first fits had waited behind refits.)
    fn refit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.refits.try_acquire().ok()
    }
}

/// Fit slots for a machine with `cores` cores.
pub(super) fn fits_for(cores: usize) -> usize {
    (cores / 2).clamp(1, MAX_FITS)
}

/// How long a cycle waits for a refit slot before it goes on without the fit: with the model it
/// has, or, before the first, holding the workload as for missing demand. A daemon that starts
/// with thousands of online workloads queues their first fits (CPU-bound, minutes in all on two
/// cores); meanwhile every policy still gets its cycles and its status, and tries again at its
/// next cycle.
pub(super) const REFIT_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Every online workload as the planner sees it: demand, forecast, replicas, pod size.
pub(super) async fn online_states(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    memory: &mut PolicyMemory,
    seen: &Observations,
    report: &mut CycleReport,
    now: i64,
) -> Vec<OnlineState> {
    let mut online_states = Vec::with_capacity(spec.online.len());
    for (index, workload) in spec.online.iter().enumerate() {
        let read = read_online(env, spec, memory, report, index, now).await;
        if let Some(why) = &read.missing {
            report
                .missing_metrics
                .push((workload.name.clone(), why.clone()));
        }
        if let Some(why) = &read.warming_up {
            report.warming_up.push((workload.name.clone(), why.clone()));
        }
        let seen = seen.get(&workload.name);
        let pod = pod_resources(workload.resources.as_ref(), seen);
        if pod.is_none() && seen.is_some() {
            report.errors.push(format!(
                "{}: no pod requests in the policy or the pod template; counted as zero",
                workload.name
            ));
        }
        online_states.push(OnlineState {
            name: workload.name.clone(),
            forecast: read.forecast,
            observed_demand: read.observed_demand,
            accuracy: read.accuracy,
            current: seen.map_or(0, |o| o.replicas),
            pod: pod.unwrap_or_default(),
        });
    }
    online_states
}

fn steps(duration: Duration, step: i64) -> usize {
    (duration.as_secs() as i64).div_euclid(step.max(1)).max(0) as usize
}

/// Where the history read between refits starts: what the model predicts from, and the
/// window of forecast errors `record_forecast` measures.
fn recent_start(model: &dyn FittedModel, horizon: usize, now: i64, step: i64) -> i64 {
    let points = model
        .recent_len(horizon)
        .max((ERROR_WINDOW_SECONDS / step) as usize + 1);
    now - points as i64 * step
}

/// What a workload's fit depended on: a change refits at once. The quantile too, because the
/// model keeps its band at that quantile only (`ForecastSpec::band_quantile`).
fn fingerprint(spec: &ShiftPolicySpec, query: &str, quantile: f64) -> String {
    format!(
        "{query}|{}|{}|{}|{:?}|{:?}|{quantile}",
        spec.forecast.step,
        spec.forecast.history,
        spec.forecast.horizon,
        spec.forecast.seasonality,
        spec.events
    )
}

struct OnlineRead {
    forecast: Option<Forecast>,
    observed_demand: Option<f64>,
    missing: Option<String>,
    /// Why there is no forecast yet, when only the first fit is missing (it is queued).
    warming_up: Option<String>,
    accuracy: Option<RecentAccuracy>,
}

async fn read_online(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    memory: &mut PolicyMemory,
    report: &mut CycleReport,
    index: usize,
    now: i64,
) -> OnlineRead {
    let workload = &spec.online[index];
    let step = spec.forecast.step.as_secs().max(1) as i64;
    let history_start = now - spec.forecast.history.as_secs() as i64;
    let query = workload.demand.query.as_str();
    let metric_labels = labels(env, &workload.name, "online");

    let horizon = steps(spec.forecast.horizon.0, step).max(1);
    let print = fingerprint(spec, query, workload.quantile);
    let schedule = RefitSchedule::new(spec.forecast.retrain.0, step);
    let current = memory
        .models
        .get(&workload.name)
        .filter(|entry| entry.fingerprint == print);
    let due = current.is_none_or(|entry| schedule.due(Some(entry.fitted_at), now));
    let refit_slot = match (due, current.is_some()) {
        (false, _) => None,
        (true, true) => env.fit_slots.refit(),
        (true, false) => env.fit_slots.first().await,
    };
    let needs_fit = refit_slot.is_some();
    // A refit reads the whole history; between refits only what the model predicts from (and
    // the forecast error's window) is read and cached, so the daemon's memory grows with that,
    // not with `forecast.history` (14 days at 1m are 20,160 points per online workload).
    let window_start = current
        .filter(|_| !needs_fit)
        .map(|entry| recent_start(entry.model.as_ref(), horizon, now, step).max(history_start));
    let warming_up = !needs_fit && window_start.is_none();
    // The latest value first: the window is used as soon as it is read, and not held while
    // another request waits for a slot.
    let latest = env.source.latest(query).await;
    let history = match warming_up {
        // No model yet and no slot to fit one: nothing to read a history for.
        true => None,
        false => Some(
            env.source
                .range(query, window_start.unwrap_or(history_start), now, step)
                .await,
        ),
    };
    let mut missing = None;
    let history = match history {
        Some(Ok(series)) => Some(series),
        Some(Err(e)) => {
            env.metrics
                .prometheus_errors_total
                .with_label_values(&[e.reason()])
                .inc();
            missing = Some(e.to_string());
            None
        }
        None => None,
    };
    let observed_demand = match latest {
        Ok(sample) => sample.map(|s| s.value),
        Err(e) => {
            env.metrics
                .prometheus_errors_total
                .with_label_values(&[e.reason()])
                .inc();
            missing.get_or_insert(e.to_string());
            None
        }
    };
    if let Some(demand) = observed_demand {
        env.metrics
            .demand
            .with_label_values(&metric_labels)
            .set(demand);
    }
    // A series that stopped (the target is gone, the exporter died) is missing, not zero.
    let stale_after = spec.guardrails.missing_after_secs(step);
    if let Some(series) = &history {
        let age = last_finite_age(series, now);
        if observed_demand.is_none() && age.is_none_or(|age| age > stale_after) {
            missing.get_or_insert(format!(
                "query {query:?}: no value in the last {stale_after}s (stale or absent series)"
            ));
        }
    }
    if missing.is_some() {
        return OnlineRead {
            forecast: None,
            observed_demand,
            missing,
            warming_up: None,
            accuracy: None,
        };
    }
    if warming_up {
        return OnlineRead {
            forecast: None,
            observed_demand,
            missing: None,
            warming_up: Some(format!(
                "no forecast yet: its first fit waits for one of the {} fit slots",
                env.fit_slots.refit_slots
            )),
            accuracy: None,
        };
    }
    let Some(history) = history else {
        return OnlineRead {
            forecast: None,
            observed_demand,
            missing,
            warming_up: None,
            accuracy: None,
        };
    };

    if needs_fit {
        let events = match crate::policy::events::expand(
            &spec.events,
            history_start,
            now + spec.forecast.horizon.as_secs() as i64,
        ) {
            Ok(events) => events,
            Err(e) => {
                report
                    .forecast_notes
                    .push((workload.name.clone(), format!("events ignored: {e}")));
                Vec::new()
            }
        };
        let fit_spec = ForecastSpec {
            seasons: spec
                .forecast
                .seasonality
                .iter()
                .map(|season| steps(season.0, step))
                .filter(|&s| s >= 2)
                .collect(),
            events,
            horizon,
            band_quantile: Some(workload.quantile),
        };
        let forecaster = env.forecaster.clone();
        let training = history.clone();
        let _slot = env.fit_slots.fits.acquire().await;
        let fitted =
            tokio::task::spawn_blocking(move || forecaster.fit(&training, &fit_spec)).await;
        match fitted {
            Ok(Ok(model)) => {
                env.source.forget_before(
                    query,
                    step,
                    recent_start(model.as_ref(), horizon, now, step),
                );
                memory.models.insert(
                    workload.name.clone(),
                    FittedEntry {
                        model: Arc::from(model),
                        fitted_at: now,
                        fingerprint: print,
                    },
                );
            }
            Ok(Err(e)) => {
                report
                    .forecast_notes
                    .push((workload.name.clone(), format!("fit failed: {e}")));
            }
            Err(e) => {
                report
                    .forecast_notes
                    .push((workload.name.clone(), format!("fit panicked: {e}")));
            }
        }
    }
    let Some(entry) = memory.models.get(&workload.name) else {
        return OnlineRead {
            forecast: None,
            observed_demand,
            missing: Some(format!(
                "no forecast model for {query:?} (too little or unusable history)"
            )),
            warming_up: None,
            accuracy: None,
        };
    };
    let forecast = match entry.model.predict(&history, horizon, workload.quantile) {
        Ok(forecast) => forecast,
        Err(e) => {
            return OnlineRead {
                forecast: None,
                observed_demand,
                missing: Some(format!("forecast failed: {e}")),
                warming_up: None,
                accuracy: None,
            };
        }
    };
    env.metrics
        .set_forecast_method(&metric_labels, forecast.method.name());
    if !forecast.method.is_checked() {
        report.forecast_notes.push((
            workload.name.clone(),
            format!("fallback forecast: {}", forecast.method.reason()),
        ));
    }
    let accuracy = record_forecast(
        env,
        memory,
        &workload.name,
        &forecast,
        &history,
        now,
        workload.startup.as_secs() as i64,
    );
    OnlineRead {
        forecast: Some(forecast),
        observed_demand,
        missing: None,
        warming_up: None,
        accuracy: Some(accuracy),
    }
}

/// Keep, for each grid time, the forecast made `lead` seconds before it; export the one for
/// now next to the observed demand and the error of the last hours; say how the forecasts of
/// the planner's judged window did.
fn record_forecast(
    env: &Environment<'_>,
    memory: &mut PolicyMemory,
    workload: &str,
    forecast: &Forecast,
    history: &Series,
    now: i64,
    lead: i64,
) -> RecentAccuracy {
    let record = memory.predictions.entry(workload.to_string()).or_default();
    let judged = crate::plan::trust_window(forecast.step);
    record.record(forecast, now, lead, ERROR_WINDOW_SECONDS.max(judged));
    let metric_labels = labels(env, workload, "online");
    if let Some((point, lower, upper)) = record.expected_now(now) {
        for (band, value) in [("point", point), ("lower", lower), ("upper", upper)] {
            env.metrics
                .forecast_demand
                .with_label_values(&[env.policy, env.namespace, workload, "online", band])
                .set(f64::from(value));
        }
    }
    let peak = forecast
        .upper
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::max);
    if peak.is_finite() {
        env.metrics
            .forecast_peak_demand
            .with_label_values(&metric_labels)
            .set(peak);
    }
    if let Some(error) = record.accuracy(history, now, ERROR_WINDOW_SECONDS).error {
        env.metrics
            .forecast_error_ratio
            .with_label_values(&metric_labels)
            .set(error);
    }
    let accuracy = record.accuracy(history, now, judged);
    env.metrics
        .forecast_missed_ratio
        .with_label_values(&metric_labels)
        .set(accuracy.missed_share());
    accuracy
}
