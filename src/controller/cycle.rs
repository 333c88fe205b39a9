//! One pass of a policy's loop: read demand and workloads, forecast (refitting only every
//! `retrain`), plan, and apply the plan's shrinks, wait until their pods are gone, then its
//! grows. Works on the `DemandSource` and `Actuator` traits, so it is tested without a cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actuate::{Actuator, DryRun, Fence, Observed, ScaleOutcome, Target, WriterMemory};
use crate::forecast::{
    FittedModel, Forecast, ForecastRecord, ForecastSpec, Forecaster, RecentAccuracy, Series,
};
use crate::plan::{OfflineState, OnlineState, Plan, PlanInput, PlanMemory, Resources};
use crate::policy::{Mode, ShiftPolicySpec};
use crate::source::{DemandSource, last_finite_age};
use crate::telemetry::Metrics;

/// Stand-in for a resource the policy does not limit: large, but still finite arithmetic.
const UNLIMITED: f64 = 1e18;

/// Forecast error is measured over this window.
const ERROR_WINDOW_SECONDS: i64 = 6 * 3600;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Forecaster fits running at once, in the whole process: one per core.
static FIT_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(cores()));

/// Refits (fetching a whole history, then fitting on it) in progress at once: two per core, so
/// one fetches while another fits. Without a bound, a daemon starting with a thousand online
/// workloads fetched every history at once and held them all while they queued for a core.
static REFIT_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(2 * cores()));

/// What stays between cycles of one policy.
#[derive(Default)]
pub struct PolicyMemory {
    pub plan_memory: PlanMemory,
    pub models: HashMap<String, FittedEntry>,
    /// Per online workload: the forecast made `startup` ahead for each grid time, to overlay on
    /// observed demand, to measure the error, and to judge whether to plan on it.
    pub predictions: HashMap<String, ForecastRecord>,
    pub last_plan: Option<Plan>,
}

pub struct FittedEntry {
    pub model: Arc<dyn FittedModel>,
    pub fitted_at: i64,
    /// What the fit depended on; a change refits at once.
    pub fingerprint: String,
}

/// What a cycle needs from the daemon.
pub struct Environment<'a> {
    pub source: &'a dyn DemandSource,
    pub actuator: &'a dyn Actuator,
    pub forecaster: Arc<dyn Forecaster>,
    /// Checked before every write (by the actuator right before sending it, with the time
    /// the write may take): false once leadership is lost or about to run out.
    pub may_write: Fence<'a>,
    /// Longest wait for shrunk pods to be gone before growing anyway.
    pub shrink_wait: Duration,
    pub metrics: &'a Metrics,
    /// Labels `policy`, `namespace` for metrics.
    pub policy: &'a str,
    pub namespace: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadReport {
    pub name: String,
    pub class: &'static str,
    pub target: Target,
    pub current: u32,
    pub ready: u32,
    pub desired: u32,
    pub reason: String,
    /// Online with a forecast: its method (`ForecastMethod::name`).
    pub forecast_method: Option<&'static str>,
    /// Online with a forecast: whether the plan used it.
    pub forecast_trusted: Option<bool>,
    /// What the actuator knows of the target's writers after the cycle, for the status.
    pub writers: Option<WriterMemory>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub name: String,
    pub class: &'static str,
    pub from: u32,
    pub to: u32,
}

/// Everything a cycle learnt and did, for status, Events, metrics and tests.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub now: i64,
    pub dry_run: bool,
    pub plan: Option<Plan>,
    pub workloads: Vec<WorkloadReport>,
    /// (workload, why): demand unreadable, the plan held it.
    pub missing_metrics: Vec<(String, String)>,
    /// (workload, why): the forecaster fell back or could not fit.
    pub forecast_notes: Vec<(String, String)>,
    /// (workload, why): its forecast was not planned on; sized on observed demand instead.
    pub untrusted: Vec<(String, String)>,
    /// (workload, why): another writer owns it; not written.
    pub conflicts: Vec<(String, String)>,
    /// Reads or writes that failed.
    pub errors: Vec<String>,
    /// Writes made (or, in dry-run, that would be made), in order.
    pub applied: Vec<Applied>,
    /// Shrunk pods still held capacity when the wait ran out.
    pub shrink_wait_timed_out: bool,
    /// Leadership was lost during the cycle; the rest was not written.
    pub lost_leadership: bool,
}

impl CycleReport {
    /// One line for status and Events: what moved.
    pub fn summary(&self) -> String {
        if self.applied.is_empty() {
            return "no change".into();
        }
        let moves: Vec<String> = self
            .applied
            .iter()
            .map(|a| format!("{} {}→{}", a.name, a.from, a.to))
            .collect();
        format!(
            "{}{}",
            if self.dry_run {
                "would scale "
            } else {
                "scaled "
            },
            moves.join(", ")
        )
    }

    /// `up` when an online workload grew (capacity moved to online), else `down`.
    pub fn direction(&self) -> Option<&'static str> {
        if self.applied.is_empty() {
            None
        } else if self
            .applied
            .iter()
            .any(|a| a.class == "online" && a.to > a.from)
        {
            Some("up")
        } else {
            Some("down")
        }
    }
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

fn fingerprint(spec: &ShiftPolicySpec, query: &str) -> String {
    format!(
        "{query}|{}|{}|{}|{:?}|{:?}",
        spec.forecast.step,
        spec.forecast.history,
        spec.forecast.horizon,
        spec.forecast.seasonality,
        spec.events
    )
}

fn labels<'l>(env: &'l Environment<'l>, workload: &'l str, class: &'l str) -> [&'l str; 4] {
    [env.policy, env.namespace, workload, class]
}

struct OnlineRead {
    forecast: Option<Forecast>,
    observed_demand: Option<f64>,
    missing: Option<String>,
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
    let print = fingerprint(spec, query);
    let retrain = spec.forecast.retrain.as_secs() as i64;
    let fitted = memory
        .models
        .get(&workload.name)
        .filter(|entry| entry.fingerprint == print && now - entry.fitted_at < retrain.max(step));
    let needs_fit = fitted.is_none();
    // A refit reads the whole history; between refits only what the model predicts from (and
    // the forecast error's window) is read and cached, so the daemon's memory grows with that,
    // not with `forecast.history` (14 days at 1m are 20,160 points per online workload).
    let window_start = fitted
        .map(|entry| recent_start(entry.model.as_ref(), horizon, now, step).max(history_start));
    let _refit_slot = match window_start {
        Some(_) => None,
        None => REFIT_SLOTS.acquire().await.ok(),
    };
    let history = env
        .source
        .range(query, window_start.unwrap_or(history_start), now, step)
        .await;
    let latest = env.source.latest(query).await;
    let mut missing = None;
    let history = match history {
        Ok(series) => Some(series),
        Err(e) => {
            env.metrics
                .prometheus_errors_total
                .with_label_values(&[e.reason()])
                .inc();
            missing = Some(e.to_string());
            None
        }
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
            accuracy: None,
        };
    }
    let Some(history) = history else {
        return OnlineRead {
            forecast: None,
            observed_demand,
            missing,
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
        };
        let forecaster = env.forecaster.clone();
        let training = history.clone();
        // Fits are CPU-bound: more at once than cores only adds their working memory (and a
        // thread each), which is what a daemon starting with hundreds of policies would do.
        let _slot = FIT_SLOTS.acquire().await;
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

fn pod_resources(
    given: Option<&crate::policy::PodResources>,
    observed: Option<&Observed>,
) -> Option<Resources> {
    given
        .map(|r| Resources {
            cpu: r.cpu.value,
            memory: r.memory.value,
        })
        .or_else(|| observed.and_then(|o| o.pod))
}

/// Run one cycle for `spec` (already validated) of the policy in `namespace`.
pub async fn run_cycle(
    env: &Environment<'_>,
    spec: &ShiftPolicySpec,
    memory: &mut PolicyMemory,
    now: i64,
) -> CycleReport {
    let mut report = CycleReport {
        now,
        dry_run: spec.mode == Mode::DryRun,
        ..Default::default()
    };

    // Observe every workload.
    let online_targets: Vec<Target> = spec
        .online
        .iter()
        .map(|w| Target::from_ref(&w.target, env.namespace))
        .collect();
    let offline_targets: Vec<Target> = spec
        .offline
        .iter()
        .map(|w| Target::from_ref(&w.target, env.namespace))
        .collect();
    let mut observed: HashMap<String, Observed> = HashMap::new();
    let names = spec
        .online
        .iter()
        .map(|w| (&w.name, "online"))
        .chain(spec.offline.iter().map(|w| (&w.name, "offline")));
    for ((name, class), target) in names.zip(online_targets.iter().chain(&offline_targets)) {
        match env.actuator.observe(target).await {
            Ok(o) => {
                let metric_labels = labels(env, name, class);
                env.metrics
                    .current_replicas
                    .with_label_values(&metric_labels)
                    .set(f64::from(o.replicas));
                env.metrics
                    .ready_replicas
                    .with_label_values(&metric_labels)
                    .set(f64::from(o.ready));
                if let Some(conflict) = &o.conflict {
                    report.conflicts.push((name.clone(), conflict.clone()));
                }
                observed.insert(name.clone(), o);
            }
            Err(e) => {
                env.metrics
                    .kube_api_errors_total
                    .with_label_values(&[e.verb()])
                    .inc();
                report.errors.push(e.to_string());
            }
        }
    }

    // Demand and forecasts.
    let mut online_states = Vec::with_capacity(spec.online.len());
    for (index, workload) in spec.online.iter().enumerate() {
        let read = read_online(env, spec, memory, &mut report, index, now).await;
        if let Some(why) = &read.missing {
            report
                .missing_metrics
                .push((workload.name.clone(), why.clone()));
        }
        let seen = observed.get(&workload.name);
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
    let offline_states: Vec<OfflineState> = spec
        .offline
        .iter()
        .map(|workload| {
            let seen = observed.get(&workload.name);
            OfflineState {
                name: workload.name.clone(),
                current: seen.map_or(0, |o| o.replicas),
                pod: pod_resources(workload.resources.as_ref(), seen).unwrap_or_default(),
            }
        })
        .collect();

    // Capacity.
    let mut capacity = Resources {
        cpu: spec.capacity.cpu.as_ref().map_or(UNLIMITED, |c| c.value),
        memory: spec.capacity.memory.as_ref().map_or(UNLIMITED, |m| m.value),
    };
    if let Some(selector) = &spec.capacity.node_selector {
        match env.actuator.node_capacity(selector).await {
            Ok(nodes) => {
                if spec.capacity.cpu.is_none() {
                    capacity.cpu = nodes.cpu;
                }
                if spec.capacity.memory.is_none() {
                    capacity.memory = nodes.memory;
                }
            }
            Err(e) => {
                env.metrics
                    .kube_api_errors_total
                    .with_label_values(&[e.verb()])
                    .inc();
                report.errors.push(e.to_string());
            }
        }
    }
    for (resource, value) in [("cpu", capacity.cpu), ("memory", capacity.memory)] {
        if value < UNLIMITED {
            env.metrics
                .capacity
                .with_label_values(&[env.policy, env.namespace, resource])
                .set(value);
        }
    }

    // Without every workload's current replicas the plan would move capacity it cannot see.
    let blind = spec
        .online
        .iter()
        .map(|w| &w.name)
        .chain(spec.offline.iter().map(|w| &w.name))
        .any(|name| !observed.contains_key(name));
    if blind {
        report
            .errors
            .push("not every workload could be read; holding".into());
        return report;
    }

    let input = PlanInput {
        now,
        capacity,
        online: online_states,
        offline: offline_states,
    };
    let (plan, plan_memory) = crate::plan::plan(spec, &input, &memory.plan_memory);
    memory.plan_memory = plan_memory;
    for decision in &plan.online {
        env.metrics
            .forecast_trusted
            .with_label_values(&labels(env, &decision.name, "online"))
            // 1 only when the plan was made on the forecast: an untrusted forecast, a stale one
            // and no forecast at all are all 0 (a workload's peak comes from a planned-on
            // forecast only).
            .set(if decision.peak.is_some() { 1.0 } else { 0.0 });
        if let Some(why) = &decision.untrusted {
            report.untrusted.push((decision.name.clone(), why.clone()));
        }
    }
    for (workloads, class, targets) in [
        (&plan.online, "online", &online_targets),
        (&plan.offline, "offline", &offline_targets),
    ] {
        for (decision, target) in workloads.iter().zip(targets.iter()) {
            let seen = observed.get(&decision.name);
            env.metrics
                .desired_replicas
                .with_label_values(&labels(env, &decision.name, class))
                .set(f64::from(decision.desired));
            let forecast = input
                .online
                .iter()
                .find(|state| class == "online" && state.name == decision.name)
                .and_then(|state| state.forecast.as_ref());
            report.workloads.push(WorkloadReport {
                name: decision.name.clone(),
                class,
                target: target.clone(),
                current: decision.current,
                ready: seen.map_or(0, |o| o.ready),
                desired: decision.desired,
                reason: decision.reason.clone(),
                forecast_method: forecast.map(|f| f.method.name()),
                forecast_trusted: forecast.map(|_| decision.peak.is_some()),
                writers: None,
            });
        }
    }
    for workload in &spec.online {
        let missing = plan
            .shortfalls
            .iter()
            .filter(|s| s.workload == workload.name)
            .map(|s| s.missing_replicas)
            .max()
            .unwrap_or(0);
        env.metrics
            .shortfall_replicas
            .with_label_values(&labels(env, &workload.name, "online"))
            .set(f64::from(missing));
    }

    apply(env, &plan, &mut report).await;
    for workload in &mut report.workloads {
        workload.writers = env.actuator.writers(&workload.target);
    }
    memory.last_plan = Some(plan.clone());
    report.plan = Some(plan);
    report
}

/// Every shrink, then wait for the shrunk pods to be gone, then every grow.
async fn apply(env: &Environment<'_>, plan: &Plan, report: &mut CycleReport) {
    let dry_run = DryRun(env.actuator);
    let writer: &dyn Actuator = if report.dry_run {
        &dry_run
    } else {
        env.actuator
    };
    let by_name: HashMap<&str, (&'static str, Target)> = report
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), (w.class, w.target.clone())))
        .collect();
    let in_conflict: Vec<String> = report.conflicts.iter().map(|(n, _)| n.clone()).collect();

    let mut shrunk: Vec<(Target, u32)> = Vec::new();
    // A shrink that failed or met another writer may still land later (a write whose answer
    // was lost) or never: the capacity it was to free is not free, so nothing grows on it in
    // this cycle; the next cycle decides on what it reads then.
    let mut shrink_not_applied = false;
    let shrinks: Vec<(String, u32)> = plan.shrinks().map(|a| (a.name.to_string(), a.to)).collect();
    let grows: Vec<(String, u32)> = plan.grows().map(|a| (a.name.to_string(), a.to)).collect();
    for (phase, actions) in [("shrink", shrinks), ("grow", grows)] {
        if phase == "grow" && !actions.is_empty() && shrink_not_applied {
            report.errors.push(format!(
                "not growing {}: a shrink before it was not applied",
                actions
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return;
        }
        if phase == "grow" && !actions.is_empty() && !report.dry_run {
            // Batch shrunk by an earlier cycle may still hold the capacity too: a cycle cut
            // short (restart, lost leadership) whose successor finds nothing left to shrink.
            let mut settle = shrunk.clone();
            for w in report.workloads.iter().filter(|w| w.class == "offline") {
                let growing = actions.iter().any(|(name, _)| *name == w.name);
                let known = settle.iter().any(|(target, _)| *target == w.target);
                if !growing && !known && !in_conflict.contains(&w.name) {
                    settle.push((w.target.clone(), w.current));
                }
            }
            if !settle.is_empty() {
                report.shrink_wait_timed_out = !wait_for_pods(env, &settle).await;
            }
        }
        for (name, desired) in actions {
            let Some((class, target)) = by_name.get(name.as_str()) else {
                continue;
            };
            if in_conflict.contains(&name) {
                continue;
            }
            if !report.dry_run && !(env.may_write)(Duration::ZERO) {
                report.lost_leadership = true;
                return;
            }
            match writer.scale(target, desired, env.may_write).await {
                Ok(ScaleOutcome::Scaled { from, to }) | Ok(ScaleOutcome::DryRun { from, to }) => {
                    report.applied.push(Applied {
                        name: name.clone(),
                        class,
                        from,
                        to,
                    });
                    if phase == "shrink" {
                        shrunk.push((target.clone(), to));
                    }
                }
                Ok(ScaleOutcome::Unchanged) => {}
                Ok(ScaleOutcome::Conflict(why)) => {
                    shrink_not_applied |= phase == "shrink";
                    report.conflicts.push((name.clone(), why));
                }
                Ok(ScaleOutcome::Fenced) => {
                    report.lost_leadership = true;
                    return;
                }
                Err(e) => {
                    shrink_not_applied |= phase == "shrink";
                    env.metrics
                        .kube_api_errors_total
                        .with_label_values(&[e.verb()])
                        .inc();
                    report.errors.push(e.to_string());
                }
            }
        }
    }
}

/// True when every shrunk target's pods are down to its new count within the wait.
async fn wait_for_pods(env: &Environment<'_>, shrunk: &[(Target, u32)]) -> bool {
    let deadline = Instant::now() + env.shrink_wait;
    loop {
        let mut all_gone = true;
        for (target, replicas) in shrunk {
            match env.actuator.pods_holding_capacity(target).await {
                Ok(pods) if pods <= *replicas => {}
                Ok(_) => all_gone = false,
                Err(e) => {
                    tracing::warn!(%target, error = %e, "cannot count pods after a shrink");
                    all_gone = false;
                }
            }
        }
        if all_gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;
    use futures::future::BoxFuture;

    use super::*;
    use crate::actuate::ActuateError;
    use crate::source::{Sample, SourceError};

    const NOW: i64 = 1_790_000_040;

    /// Constant demand per query, or an error for queries listed as down.
    struct FakeSource {
        demand: HashMap<String, f64>,
        down: Vec<String>,
        /// Queries whose latest value is unusable (NaN, absent) while their history reads.
        no_latest: Vec<String>,
        /// (start, end) of every range asked.
        asked: Mutex<Vec<(i64, i64)>>,
        /// `forget_before` calls: (query, before).
        forgotten: Mutex<Vec<(String, i64)>>,
    }

    impl DemandSource for FakeSource {
        fn range<'a>(
            &'a self,
            query: &'a str,
            start: i64,
            end: i64,
            step: i64,
        ) -> BoxFuture<'a, Result<Series, SourceError>> {
            async move {
                self.asked.lock().unwrap().push((start, end));
                if self.down.iter().any(|q| q == query) {
                    return Err(SourceError::Timeout {
                        query: query.into(),
                        seconds: 10,
                    });
                }
                let start = crate::source::align_down(start, step);
                let len =
                    crate::source::grid_len(start, crate::source::align_down(end, step), step);
                Ok(Series::new(start, step, vec![self.demand[query]; len]))
            }
            .boxed()
        }

        fn latest<'a>(
            &'a self,
            query: &'a str,
        ) -> BoxFuture<'a, Result<Option<Sample>, SourceError>> {
            async move {
                if self.down.iter().any(|q| q == query) {
                    return Err(SourceError::Timeout {
                        query: query.into(),
                        seconds: 10,
                    });
                }
                if self.no_latest.iter().any(|q| q == query) {
                    return Ok(None);
                }
                Ok(Some(Sample {
                    at: NOW,
                    value: self.demand[query],
                }))
            }
            .boxed()
        }

        fn forget_before(&self, query: &str, _step: i64, before: i64) {
            self.forgotten
                .lock()
                .unwrap()
                .push((query.to_string(), before));
        }
    }

    /// Workloads by name with replicas and pods; pods lag a shrink by two polls.
    #[derive(Default)]
    struct FakeCluster {
        workloads: Mutex<HashMap<String, (u32, u32)>>,
        conflicts: Vec<String>,
        /// Targets whose writes fail (an API server that does not answer).
        failing: Vec<String>,
        log: Mutex<Vec<String>>,
    }

    impl FakeCluster {
        fn with(workloads: &[(&str, u32)]) -> Self {
            Self {
                workloads: Mutex::new(
                    workloads
                        .iter()
                        .map(|(n, r)| (n.to_string(), (*r, *r)))
                        .collect(),
                ),
                ..Default::default()
            }
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    fn name(target: &Target) -> String {
        target.name.clone().unwrap()
    }

    impl Actuator for FakeCluster {
        fn observe<'a>(
            &'a self,
            target: &'a Target,
        ) -> BoxFuture<'a, Result<Observed, ActuateError>> {
            async move {
                let (replicas, _) = self.workloads.lock().unwrap()[&name(target)];
                Ok(Observed {
                    replicas,
                    ready: replicas,
                    pod: None,
                    conflict: self
                        .conflicts
                        .contains(&name(target))
                        .then(|| "HorizontalPodAutoscaler x".to_string()),
                })
            }
            .boxed()
        }

        fn scale<'a>(
            &'a self,
            target: &'a Target,
            replicas: u32,
            fence: Fence<'a>,
        ) -> BoxFuture<'a, Result<ScaleOutcome, ActuateError>> {
            async move {
                if !fence(Duration::from_secs(2)) {
                    return Ok(ScaleOutcome::Fenced);
                }
                if self.failing.contains(&name(target)) {
                    return Err(ActuateError::Api {
                        target: name(target),
                        verb: "patch",
                        cause: "no answer within 2s".into(),
                    });
                }
                let mut workloads = self.workloads.lock().unwrap();
                let entry = workloads.get_mut(&name(target)).unwrap();
                let from = entry.0;
                entry.0 = replicas;
                if replicas > entry.1 {
                    entry.1 = replicas;
                }
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("scale {} {from}->{replicas}", name(target)));
                Ok(ScaleOutcome::Scaled { from, to: replicas })
            }
            .boxed()
        }

        fn pods_holding_capacity<'a>(
            &'a self,
            target: &'a Target,
        ) -> BoxFuture<'a, Result<u32, ActuateError>> {
            async move {
                let mut workloads = self.workloads.lock().unwrap();
                let entry = workloads.get_mut(&name(target)).unwrap();
                let pods = entry.1;
                entry.1 = entry.1.saturating_sub(3).max(entry.0);
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("pods {} {pods}", name(target)));
                Ok(pods)
            }
            .boxed()
        }
    }

    fn spec(mode: &str) -> ShiftPolicySpec {
        let yaml = format!(
            r#"
mode: {mode}
interval: 5s
capacity: {{cpu: "10", memory: 100Gi}}
online:
  - name: payment
    target: {{kind: Deployment, name: payment}}
    demand: {{query: payment_demand}}
    perReplica: 100
    headroom: 0
    replicas: {{min: 1, max: 10}}
    startup: 10s
    resources: {{cpu: "1", memory: 1Gi}}
offline:
  - name: batch
    target: {{kind: Deployment, name: batch}}
    replicas: {{min: 0, max: 10}}
    resources: {{cpu: "1", memory: 1Gi}}
forecast: {{step: 1m, history: 1d, horizon: 30m, seasonality: [1h], retrain: 10m}}
guardrails: {{scaleDown: {{maxPercentPerMinute: 100, stabilization: 20s}}}}
"#
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    async fn cycle(
        spec: &ShiftPolicySpec,
        source: &FakeSource,
        cluster: &FakeCluster,
        memory: &mut PolicyMemory,
        may_write: bool,
    ) -> CycleReport {
        cycle_at(spec, source, cluster, memory, may_write, NOW).await
    }

    async fn cycle_at(
        spec: &ShiftPolicySpec,
        source: &FakeSource,
        cluster: &FakeCluster,
        memory: &mut PolicyMemory,
        may_write: bool,
        now: i64,
    ) -> CycleReport {
        let metrics = Metrics::new();
        let allow = move |_: Duration| may_write;
        let env = Environment {
            source,
            actuator: cluster,
            forecaster: Arc::from(crate::forecast::default_forecaster()),
            may_write: &allow,
            shrink_wait: Duration::from_secs(5),
            metrics: &metrics,
            policy: "checkout",
            namespace: "shop",
        };
        run_cycle(&env, spec, memory, now).await
    }

    fn source(payment: f64) -> FakeSource {
        FakeSource {
            demand: [("payment_demand".to_string(), payment)].into(),
            down: vec![],
            no_latest: vec![],
            asked: Mutex::default(),
            forgotten: Mutex::default(),
        }
    }

    #[tokio::test]
    async fn the_whole_history_is_read_to_refit_and_only_the_recent_part_between() {
        let spec = spec("enforce");
        let source = source(300.0);
        let cluster = FakeCluster::with(&[("payment", 3), ("batch", 4)]);
        let mut memory = PolicyMemory::default();
        let day = 86_400;
        // The spec: 1m step, 1d history, 1h season, 10m retrain; minutes 0, 5, 10 and 11.
        for minutes in [0, 5, 10, 11] {
            let now = NOW + minutes * 60;
            let report = cycle_at(&spec, &source, &cluster, &mut memory, true, now).await;
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            assert!(report.missing_metrics.is_empty(), "{report:?}");
        }
        let asked: Vec<i64> = source.asked.lock().unwrap().iter().map(|a| a.0).collect();
        let model = memory.models["payment"].model.clone();
        let points = model
            .recent_len(30)
            .max((ERROR_WINDOW_SECONDS / 60) as usize + 1);
        let recent = points as i64 * 60;
        assert!(recent < day / 2, "{recent}");
        assert_eq!(
            asked,
            [
                NOW - day,
                NOW + 5 * 60 - recent,
                NOW + 10 * 60 - day,
                NOW + 11 * 60 - recent
            ],
            "refit, recent, refit (retrain is due), recent"
        );
        // After each refit the source may drop what only the fit needed.
        assert_eq!(
            *source.forgotten.lock().unwrap(),
            [
                ("payment_demand".to_string(), NOW - recent),
                ("payment_demand".to_string(), NOW + 10 * 60 - recent)
            ]
        );
    }

    #[tokio::test]
    async fn batch_shrinks_and_its_pods_are_gone_before_online_grows() {
        let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
        let mut memory = PolicyMemory::default();
        let report = cycle(
            &spec("enforce"),
            &source(750.0),
            &cluster,
            &mut memory,
            true,
        )
        .await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let log = cluster.log();
        let shrink = log
            .iter()
            .position(|l| l.starts_with("scale batch"))
            .unwrap();
        let grow = log
            .iter()
            .position(|l| l.starts_with("scale payment"))
            .unwrap();
        let batch_gone = log.iter().position(|l| l == "pods batch 2").unwrap();
        assert!(shrink < batch_gone && batch_gone < grow, "{log:?}");
        let payment = cluster.workloads.lock().unwrap()["payment"].0;
        let batch = cluster.workloads.lock().unwrap()["batch"].0;
        assert!(
            payment >= 8,
            "payment serves 750 at 100 per replica: {payment}"
        );
        assert!(
            payment + batch <= 10,
            "never over capacity: {payment} + {batch}"
        );
        assert_eq!(report.direction(), Some("up"));
        assert!(!report.shrink_wait_timed_out);
    }

    #[tokio::test]
    async fn a_grow_waits_for_batch_pods_shrunk_by_an_earlier_cycle() {
        // Another replica shrank batch to 2 and died before its pods were gone.
        let cluster = FakeCluster::with(&[("payment", 2), ("batch", 2)]);
        cluster
            .workloads
            .lock()
            .unwrap()
            .get_mut("batch")
            .unwrap()
            .1 = 8;
        let mut memory = PolicyMemory::default();
        let report = cycle(
            &spec("enforce"),
            &source(750.0),
            &cluster,
            &mut memory,
            true,
        )
        .await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let log = cluster.log();
        assert!(!log.iter().any(|l| l.starts_with("scale batch")), "{log:?}");
        let grow = log
            .iter()
            .position(|l| l.starts_with("scale payment"))
            .expect("payment grows");
        let batch_gone = log
            .iter()
            .position(|l| l == "pods batch 2")
            .expect("batch pods counted down to 2");
        assert!(batch_gone < grow, "{log:?}");
    }

    #[tokio::test]
    async fn online_does_not_grow_when_the_batch_shrink_before_it_failed() {
        // The etcd stall of the fault tests: the shrink of batch got no answer.
        let mut cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
        cluster.failing.push("batch".into());
        let mut memory = PolicyMemory::default();
        let report = cycle(
            &spec("enforce"),
            &source(750.0),
            &cluster,
            &mut memory,
            true,
        )
        .await;
        let log = cluster.log();
        assert!(
            !log.iter().any(|l| l.starts_with("scale payment")),
            "{log:?}"
        );
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("not growing payment")),
            "{:?}",
            report.errors
        );
        // Once the shrink goes through, payment grows after it.
        cluster.failing.clear();
        cycle(
            &spec("enforce"),
            &source(750.0),
            &cluster,
            &mut memory,
            true,
        )
        .await;
        let log = cluster.log();
        let shrink = log.iter().position(|l| l.starts_with("scale batch"));
        let grow = log.iter().position(|l| l.starts_with("scale payment"));
        assert!(shrink.is_some() && shrink < grow, "{log:?}");
    }

    #[tokio::test]
    async fn missing_metrics_hold_online_and_never_scale_it_down() {
        let cluster = FakeCluster::with(&[("payment", 9), ("batch", 1)]);
        let mut memory = PolicyMemory::default();
        let mut down = source(100.0);
        down.down.push("payment_demand".into());
        let report = cycle(&spec("enforce"), &down, &cluster, &mut memory, true).await;
        assert_eq!(report.missing_metrics.len(), 1);
        assert!(report.missing_metrics[0].1.contains("payment_demand"));
        assert_eq!(cluster.workloads.lock().unwrap()["payment"].0, 9);
        assert!(
            !cluster.log().iter().any(|l| l.starts_with("scale payment")),
            "{:?}",
            cluster.log()
        );
    }

    #[tokio::test]
    async fn an_unusable_latest_value_holds_online_and_batch_while_the_forecast_runs() {
        // payment has 9 replicas for a demand that needs 1 or 2: with readable demand it comes
        // down once the 20 s stabilization has passed, and batch takes the capacity.
        let run = |latest_usable: bool| async move {
            let cluster = FakeCluster::with(&[("payment", 9), ("batch", 1)]);
            let mut memory = PolicyMemory::default();
            let mut source = source(100.0);
            if !latest_usable {
                source.no_latest.push("payment_demand".into());
            }
            for minutes in [0, 1, 2] {
                // Half a minute into the step: the window (startup + interval + 15 s) reaches
                // the forecast's first step.
                let now = NOW + 30 + minutes * 60;
                let report =
                    cycle_at(&spec("enforce"), &source, &cluster, &mut memory, true, now).await;
                // Within the grace (5 min for a 1m step): the forecast still runs.
                assert!(report.missing_metrics.is_empty(), "{report:?}");
                assert!(report.plan.is_some());
            }
            let workloads = cluster.workloads.lock().unwrap().clone();
            (workloads["payment"].0, workloads["batch"].0)
        };
        let (payment, batch) = run(true).await;
        assert!(payment < 9 && batch > 1, "readable: {payment}, {batch}");
        let (payment, batch) = run(false).await;
        assert_eq!(
            (payment, batch),
            (9, 1),
            "the latest value unusable: nothing moves"
        );
    }

    #[tokio::test]
    async fn missing_metrics_do_not_give_batch_the_capacity_either() {
        // Prometheus down since the daemon started: no plan to hold, online at 2 of 10 slots.
        let cluster = FakeCluster::with(&[("payment", 2), ("batch", 4)]);
        let mut memory = PolicyMemory::default();
        let mut down = source(100.0);
        down.down.push("payment_demand".into());
        let report = cycle(&spec("enforce"), &down, &cluster, &mut memory, true).await;
        assert_eq!(report.missing_metrics.len(), 1);
        assert!(
            !cluster.log().iter().any(|l| l.starts_with("scale")),
            "{:?}",
            cluster.log()
        );
        assert_eq!(cluster.workloads.lock().unwrap()["batch"].0, 4);
    }

    #[tokio::test]
    async fn dry_run_and_lost_leadership_write_nothing() {
        let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
        let mut memory = PolicyMemory::default();
        let report = cycle(
            &spec("dry-run"),
            &source(750.0),
            &cluster,
            &mut memory,
            true,
        )
        .await;
        assert!(
            cluster.log().iter().all(|l| !l.starts_with("scale")),
            "{:?}",
            cluster.log()
        );
        assert!(report.dry_run);
        assert!(
            report.summary().starts_with("would scale"),
            "{}",
            report.summary()
        );

        let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
        let mut memory = PolicyMemory::default();
        let report = cycle(
            &spec("enforce"),
            &source(750.0),
            &cluster,
            &mut memory,
            false,
        )
        .await;
        assert!(report.lost_leadership);
        assert!(cluster.log().is_empty(), "{:?}", cluster.log());
    }

    #[tokio::test]
    async fn a_target_in_conflict_is_not_written() {
        let mut cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
        cluster.conflicts.push("batch".into());
        let mut memory = PolicyMemory::default();
        let report = cycle(
            &spec("enforce"),
            &source(750.0),
            &cluster,
            &mut memory,
            true,
        )
        .await;
        assert_eq!(report.conflicts.len(), 1);
        assert!(!cluster.log().iter().any(|l| l.starts_with("scale batch")));
    }
}
