use std::sync::Mutex;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::demand::{ERROR_WINDOW_SECONDS, REFIT_SLOT_WAIT};
use super::*;
use crate::actuate::{ActuateError, Observed, ScaleOutcome};
use crate::forecast::Series;
use crate::source::{Sample, SourceError};

const NOW: i64 = 1_790_000_040;

/// Constant demand per query, or an error for queries listed as down.
struct FakeSource {
    demand: HashMap<String, f64>,
    down: Vec<String>,
    /// Queries whose latest value is unusable (NaN, absent) while their history reads.
    no_latest: Vec<String>,
    /// Seconds before the asked end at which every history ends (a range that lags behind the
    /// latest value).
    history_lag: i64,
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
            let end = crate::source::align_down(end - self.history_lag, step);
            let len = crate::source::grid_len(start, end, step);
            Ok(Series::new(start, step, vec![self.demand[query]; len]))
        }
        .boxed()
    }

    fn latest<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Option<Sample>, SourceError>> {
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

/// Into the same log as the writes.
impl WriteAhead for FakeCluster {
    fn record_zeros(&self, zeros: Vec<PendingZero>) -> BoxFuture<'_, Result<(), WriteRefused>> {
        let zeros: Vec<String> = zeros
            .iter()
            .map(|z| format!("{}@{}:{}", z.workload, z.index, z.object))
            .collect();
        self.log
            .lock()
            .unwrap()
            .push(format!("record zeros {}", zeros.join(",")));
        async { Ok(()) }.boxed()
    }
}

fn name(target: &Target) -> String {
    target.name.clone().unwrap()
}

impl Actuator for FakeCluster {
    fn observe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Observed, ActuateError>> {
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
            if let Err(refused) = fence(Duration::from_secs(2)) {
                return Ok(ScaleOutcome::Fenced(refused));
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

    fn adopt(&self, target: &Target) {
        self.log
            .lock()
            .unwrap()
            .push(format!("adopt {}", name(target)));
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
    cycle_at(
        spec,
        source,
        cluster,
        memory,
        may_write,
        NOW,
        &FitSlots::new(2),
    )
    .await
}

async fn cycle_at(
    spec: &ShiftPolicySpec,
    source: &FakeSource,
    cluster: &FakeCluster,
    memory: &mut PolicyMemory,
    may_write: bool,
    now: i64,
    fit_slots: &FitSlots,
) -> CycleReport {
    let allow = move |_: Duration| match may_write {
        true => Ok(()),
        false => Err(WriteRefused::LeadershipLost),
    };
    cycle_fenced(spec, source, cluster, memory, &allow, now, fit_slots).await
}

async fn cycle_fenced(
    spec: &ShiftPolicySpec,
    source: &FakeSource,
    cluster: &FakeCluster,
    memory: &mut PolicyMemory,
    fence: Fence<'_>,
    now: i64,
    fit_slots: &FitSlots,
) -> CycleReport {
    let metrics = Metrics::new();
    let env = Environment {
        source,
        actuator: cluster,
        forecaster: Arc::from(crate::forecast::default_forecaster()),
        fit_slots,
        may_write: fence,
        write_ahead: cluster,
        shrink_wait: Duration::from_secs(5),
        metrics: &metrics,
        policy: "checkout",
        namespace: "shop",
    };
    run_cycle(&env, spec, memory, now).await
}

/// One cycle of `spec(mode)` at `demand` on `cluster`, with no memory of earlier cycles.
async fn first_cycle(
    cluster: &FakeCluster,
    mode: &str,
    demand: f64,
    may_write: bool,
) -> CycleReport {
    let mut memory = PolicyMemory::default();
    cycle(
        &spec(mode),
        &source(demand),
        cluster,
        &mut memory,
        may_write,
    )
    .await
}

fn source(payment: f64) -> FakeSource {
    FakeSource {
        demand: [("payment_demand".to_string(), payment)].into(),
        down: vec![],
        no_latest: vec![],
        history_lag: 0,
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
    let slots = FitSlots::new(2);
    for minutes in [0, 5, 10, 11] {
        let now = NOW + minutes * 60;
        let report = cycle_at(&spec, &source, &cluster, &mut memory, true, now, &slots).await;
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
async fn a_scale_to_zero_is_recorded_in_the_status_before_it_is_sent() {
    // Payment needs all 10 cores: batch goes 8 -> 0.
    let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
    let report = first_cycle(&cluster, "enforce", 1000.0, true).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let log = cluster.log();
    // batch is the second workload (online first), its object the Deployment batch.
    let recorded = log.iter().position(|l| l == "record zeros batch@1:batch");
    let scaled = log.iter().position(|l| l == "scale batch 8->0");
    assert!(
        recorded.is_some() && scaled.is_some() && recorded < scaled,
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("record")).count(),
        1,
        "only the zero, once: {log:?}"
    );
    // A shrink above zero, a dry run and a fenced cycle record nothing.
    for (mode, demand, may_write) in [
        ("enforce", 750.0, true),
        ("dry-run", 1000.0, true),
        ("enforce", 1000.0, false),
    ] {
        let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
        first_cycle(&cluster, mode, demand, may_write).await;
        let log = cluster.log();
        assert!(
            !log.iter().any(|l| l.starts_with("record")),
            "{mode} {demand} {may_write}: {log:?}"
        );
    }
}

#[tokio::test]
async fn batch_shrinks_and_its_pods_are_gone_before_online_grows() {
    let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
    let report = first_cycle(&cluster, "enforce", 750.0, true).await;
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

/// Batch at 2 replicas with 8 pods still running (a shrink by a predecessor that died before its
/// pods were gone): the cycle grows payment only after counting batch's pods down to 2, and
/// does not write batch.
async fn grow_after_the_pods_of_an_earlier_shrink(cluster: FakeCluster) -> CycleReport {
    cluster
        .workloads
        .lock()
        .unwrap()
        .get_mut("batch")
        .unwrap()
        .1 = 8;
    let report = first_cycle(&cluster, "enforce", 750.0, true).await;
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
    report
}

#[tokio::test]
async fn a_grow_waits_for_batch_pods_shrunk_by_an_earlier_cycle() {
    let cluster = FakeCluster::with(&[("payment", 2), ("batch", 2)]);
    let report = grow_after_the_pods_of_an_earlier_shrink(cluster).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[tokio::test]
async fn a_grow_waits_for_the_pods_of_batch_in_conflict_too() {
    // The predecessor's shrink was to zero through `/scale`, which leaves the replicas without
    // an owner: here batch is in conflict.
    let mut cluster = FakeCluster::with(&[("payment", 2), ("batch", 2)]);
    cluster.conflicts.push("batch".into());
    let report = grow_after_the_pods_of_an_earlier_shrink(cluster).await;
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
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
        let (spec, slots) = (spec("enforce"), FitSlots::new(2));
        for minutes in [0, 1, 2] {
            // At the start of a step: the forecast's first step begins a minute on, beyond
            // the window (startup + interval + 15 s = 30 s), and still sizes payment.
            let now = NOW + minutes * 60;
            let report = cycle_at(&spec, &source, &cluster, &mut memory, true, now, &slots).await;
            assert!(report.plan.is_some());
            // Within the grace (5 min for a 1m step): the forecast still runs.
            assert!(report.missing_metrics.is_empty(), "{report:?}");
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
async fn a_hold_on_a_stale_forecast_is_reported_as_missing_demand() {
    // The history ends 10 minutes before now while the latest value still reads: the forecast
    // made on it is stale, so the plan holds payment (9 replicas for a need of 1) and batch as
    // for missing demand, and the report lists payment, which makes the policy Degraded.
    let cluster = FakeCluster::with(&[("payment", 9), ("batch", 1)]);
    let mut memory = PolicyMemory::default();
    let mut source = source(100.0);
    source.history_lag = 600;
    let report = cycle(&spec("enforce"), &source, &cluster, &mut memory, true).await;
    let held = &report.missing_metrics;
    assert_eq!(held.len(), 1, "{report:?}");
    assert_eq!(held[0].0, "payment");
    assert!(held[0].1.contains("stale"), "{held:?}");
    assert!(
        !cluster.log().iter().any(|l| l.starts_with("scale")),
        "{:?}",
        cluster.log()
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
        cluster
            .log()
            .iter()
            .all(|l| !l.starts_with("scale") && !l.starts_with("adopt")),
        "in dry-run nothing is written and nothing is tideshift's: {:?}",
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
    assert_eq!(report.fenced, Some(WriteRefused::LeadershipLost));
    // Adopting is memory, not a write.
    assert!(
        cluster.log().iter().all(|l| l.starts_with("adopt")),
        "{:?}",
        cluster.log()
    );
}

#[tokio::test]
async fn a_policy_changed_mid_cycle_stops_its_writes() {
    let cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
    let mut memory = PolicyMemory::default();
    // The batch shrink is asked twice (by the cycle, then by the actuator right before it
    // sends); the user's edit lands after it.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let edited_after_the_shrink =
        |_: Duration| match asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            true => Ok(()),
            false => Err(WriteRefused::PolicyChanged),
        };
    let report = cycle_fenced(
        &spec("enforce"),
        &source(750.0),
        &cluster,
        &mut memory,
        &edited_after_the_shrink,
        NOW,
        &FitSlots::new(2),
    )
    .await;
    let writes: Vec<String> = cluster
        .log()
        .into_iter()
        .filter(|l| l.starts_with("scale"))
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(writes[0].starts_with("scale batch"), "{writes:?}");
    assert_eq!(report.fenced, Some(WriteRefused::PolicyChanged));
    assert_eq!(report.applied.len(), 1, "the shrink made is reported");
}

#[tokio::test]
async fn a_target_in_conflict_is_not_written() {
    let mut cluster = FakeCluster::with(&[("payment", 2), ("batch", 8)]);
    cluster.conflicts.push("batch".into());
    let report = first_cycle(&cluster, "enforce", 750.0, true).await;
    assert_eq!(report.conflicts.len(), 1);
    assert!(!cluster.log().iter().any(|l| l.starts_with("scale batch")));
    // A policy that writes takes what it reads as its baseline (`Actuator::adopt`).
    for workload in ["payment", "batch"] {
        assert!(
            cluster.log().contains(&format!("adopt {workload}")),
            "{:?}",
            cluster.log()
        );
    }
    // The shrink it needed did not happen, so its capacity is not free to grow onto.
    assert!(
        report.plan.as_ref().is_some_and(|p| p.grows().count() > 0),
        "the scenario needs a grow: {report:?}"
    );
    assert!(
        !cluster.log().iter().any(|l| l.starts_with("scale payment")),
        "{:?}",
        cluster.log()
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.starts_with("not growing payment")),
        "{:?}",
        report.errors
    );
}

#[tokio::test(start_paused = true)]
async fn a_due_refit_takes_only_a_free_slot_while_a_first_fit_queues_for_one() {
    let spec = spec("enforce");
    let source = source(300.0);
    let cluster = FakeCluster::with(&[("payment", 3), ("batch", 4)]);
    let slots = FitSlots::new(1);
    let mut memory = PolicyMemory::default();
    let report = cycle_at(&spec, &source, &cluster, &mut memory, true, NOW, &slots).await;
    assert!(report.warming_up.is_empty(), "{report:?}");
    assert_eq!(memory.models["payment"].fitted_at, NOW);

    // Every refit slot busy (other policies' fits) when the refit is due: the cycle does not
    // wait for one, and plans on the model it has.
    let _busy = slots.refits.acquire_many(2).await.expect("slots");
    let later = NOW + 10 * 60;
    let started = tokio::time::Instant::now();
    let report = cycle_at(&spec, &source, &cluster, &mut memory, true, later, &slots).await;
    assert!(
        started.elapsed() < REFIT_SLOT_WAIT,
        "{:?}",
        started.elapsed()
    );
    assert!(report.warming_up.is_empty(), "{report:?}");
    assert!(report.missing_metrics.is_empty(), "{report:?}");
    assert_eq!(memory.models["payment"].fitted_at, NOW, "not refitted yet");

    // A workload without a model queues for a slot, then goes on warming up.
    let mut fresh = PolicyMemory::default();
    let started = tokio::time::Instant::now();
    let report = cycle_at(&spec, &source, &cluster, &mut fresh, true, later, &slots).await;
    assert!(
        started.elapsed() >= REFIT_SLOT_WAIT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.warming_up.len(), 1, "{report:?}");
}

#[test]
fn a_process_fits_on_half_its_cores_at_least_one_at_most_four() {
    use super::demand::{MAX_FITS, fits_for};
    let slots: Vec<usize> = [1, 2, 3, 4, 8, 16, 64].map(fits_for).to_vec();
    assert_eq!(slots, vec![1, 1, 1, 2, 4, MAX_FITS, MAX_FITS]);
    assert_eq!(MAX_FITS, 4);
}
