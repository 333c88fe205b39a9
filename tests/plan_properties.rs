//! Property tests of the planner's invariants over random policies, forecasts and states,
//! run as sequences of cycles (the plan applied fully, partly or not at all between cycles) so
//! that memory, stabilization and the scale-down rate are exercised too.

use proptest::prelude::*;
use tideshift::forecast::{Forecast, ForecastMethod, RecentAccuracy};
use tideshift::plan::{
    ACTUATION_ALLOWANCE_SECS, OfflineState, OnlineState, Plan, PlanInput, PlanMemory, Resources,
    WorkloadClass, plan, scale_down_allowance,
};
use tideshift::policy::{MissingMetrics, PolicyDuration, ShiftPolicySpec};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

const TEMPLATE: &str = r#"
capacity: {cpu: "1"}
online:
  - name: template
    target: {kind: Deployment, name: template}
    demand: {query: template}
    perReplica: 1
    replicas: {min: 0, max: 1}
offline:
  - name: template
    target: {kind: Deployment, name: template}
    replicas: {min: 0, max: 1}
"#;

#[derive(Clone, Debug)]
struct OnlineGen {
    per_replica: f64,
    headroom: f64,
    min: u32,
    span: u32,
    startup: u64,
    priority: i32,
    pod: Resources,
    /// Demand scale, so that some workloads hit max and others stay small.
    scale: f64,
}

#[derive(Clone, Debug)]
struct OfflineGen {
    min: u32,
    span: u32,
    weight: f64,
    pod: Resources,
    current: u32,
}

#[derive(Clone, Debug)]
struct PolicyGen {
    interval: u64,
    max_percent: f64,
    stabilization: u64,
    reactive: bool,
    cores: f64,
    online: Vec<OnlineGen>,
    offline: Vec<OfflineGen>,
}

/// What one online workload sees in one cycle.
#[derive(Clone, Debug)]
struct Seen {
    /// Upper band in units of the workload's scale; `None` = missing forecast.
    upper: Option<Vec<f64>>,
    observed: Option<f64>,
    trust: Trust,
}

/// What the forecaster and the daemon's record say about a forecast.
#[derive(Clone, Debug)]
enum Trust {
    /// A checked method, not judged on demand yet.
    Checked,
    /// An unchecked fallback: never planned on.
    Fallback,
    /// Judged on `points` observed demands, `missed` of them above the band.
    Judged { points: usize, missed: usize },
}

/// The quantile of every forecast here (`forecast`): 5% of misses expected.
const QUANTILE: f64 = 0.95;

/// The planner's trust gate, restated: a fallback, or, over at least 8 judged points, a share
/// of misses above the band's `1 - quantile` plus 20 points, and so many misses that a band
/// holding its quantile has less than 1 chance in 10,000 to show as many (summed here term by
/// term, not with the planner's statrs).
fn distrusted(trust: &Trust) -> bool {
    match *trust {
        Trust::Checked => false,
        Trust::Fallback => true,
        Trust::Judged { points, missed } => {
            let expected = 1.0 - QUANTILE;
            let chance: f64 = (missed..=points)
                .map(|k| {
                    let ways = (0..k).fold(1.0, |c, i| c * (points - i) as f64 / (i + 1) as f64);
                    ways * expected.powi(k as i32) * (1.0 - expected).powi((points - k) as i32)
                })
                .sum();
            points >= 8 && missed as f64 > (expected + 0.2) * points as f64 && chance < 1e-4
        }
    }
}

#[derive(Clone, Debug)]
struct Cycle {
    /// Seconds since the previous cycle, as a multiple of the interval, plus jitter.
    extra: i64,
    /// Forecast start relative to now (forecasts are a little late or early).
    offset: i64,
    seen: Vec<Seen>,
    /// 0: not applied, 1: applied, 2: only shrinks applied (grows still pending).
    apply: u8,
}

fn pod() -> impl Strategy<Value = Resources> {
    (0.1f64..4.0, 0.0f64..8.0).prop_map(|(cpu, gib)| Resources {
        cpu,
        memory: gib * GIB,
    })
}

fn online_gen() -> impl Strategy<Value = OnlineGen> {
    (
        1.0f64..500.0,
        0.0f64..0.5,
        0u32..5,
        0u32..60,
        0u64..180,
        -2i32..3,
        pod(),
        prop_oneof![Just(0.1), Just(1.0), Just(10.0)],
    )
        .prop_map(
            |(per_replica, headroom, min, span, startup, priority, pod, scale)| OnlineGen {
                per_replica,
                headroom,
                min,
                span,
                startup,
                priority,
                pod,
                scale,
            },
        )
}

fn offline_gen() -> impl Strategy<Value = OfflineGen> {
    (0u32..5, 0u32..80, 0.0f64..5.0, pod(), 0u32..80).prop_map(
        |(min, span, weight, pod, current)| OfflineGen {
            min,
            span,
            weight,
            pod,
            current,
        },
    )
}

fn policy_gen() -> impl Strategy<Value = PolicyGen> {
    (
        5u64..60,
        0.0f64..100.0,
        0u64..600,
        any::<bool>(),
        1.0f64..300.0,
        prop::collection::vec(online_gen(), 1..4),
        prop::collection::vec(offline_gen(), 0..4),
    )
        .prop_map(
            |(interval, max_percent, stabilization, reactive, cores, online, offline)| PolicyGen {
                interval,
                max_percent,
                stabilization,
                reactive,
                cores,
                online,
                offline,
            },
        )
}

fn seen() -> impl Strategy<Value = Seen> {
    let band = prop::collection::vec(
        prop_oneof![
            8 => 0.0f64..20_000.0,
            1 => Just(f64::NAN),
        ],
        0..12,
    );
    let trust = prop_oneof![
        6 => Just(Trust::Checked),
        1 => Just(Trust::Fallback),
        3 => (0usize..20, 0usize..20).prop_map(|(points, missed)| Trust::Judged {
            points,
            missed: missed.min(points),
        }),
    ];
    (
        prop::option::weighted(0.8, band),
        prop::option::weighted(0.7, 0.0f64..20_000.0),
        trust,
    )
        .prop_map(|(upper, observed, trust)| Seen {
            upper,
            observed,
            trust,
        })
}

fn cycle() -> impl Strategy<Value = Cycle> {
    (
        0i64..3,
        // Mostly a little late or early; sometimes stale (made from demand long past).
        prop_oneof![9 => -90i64..30, 1 => -1_000i64..-200],
        prop::collection::vec(seen(), 3),
        0u8..3,
    )
        .prop_map(|(extra, offset, seen, apply)| Cycle {
            extra,
            offset,
            seen,
            apply,
        })
}

fn spec_of(g: &PolicyGen) -> ShiftPolicySpec {
    let mut spec: ShiftPolicySpec = serde_yaml::from_str(TEMPLATE).expect("template parses");
    spec.interval = PolicyDuration::from_secs(g.interval);
    spec.guardrails.scale_down.max_percent_per_minute = g.max_percent;
    spec.guardrails.scale_down.stabilization = PolicyDuration::from_secs(g.stabilization);
    spec.guardrails.on_missing_metrics = if g.reactive {
        MissingMetrics::Reactive
    } else {
        MissingMetrics::Hold
    };
    let online_template = spec.online[0].clone();
    spec.online = g
        .online
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut w = online_template.clone();
            w.name = format!("online-{i}");
            w.per_replica = o.per_replica;
            w.headroom = o.headroom;
            w.replicas.min = o.min;
            w.replicas.max = o.min + o.span;
            w.startup = PolicyDuration::from_secs(o.startup);
            w.priority = o.priority;
            w
        })
        .collect();
    let offline_template = spec.offline[0].clone();
    spec.offline = g
        .offline
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut w = offline_template.clone();
            w.name = format!("offline-{i}");
            w.replicas.min = o.min;
            w.replicas.max = o.min + o.span;
            w.weight = o.weight;
            w
        })
        .collect();
    spec
}

fn capacity_of(g: &PolicyGen) -> Resources {
    Resources {
        cpu: g.cores,
        memory: g.cores * 4.0 * GIB,
    }
}

fn forecast(start: i64, upper: &[f64]) -> Forecast {
    Forecast {
        start,
        step: 60,
        point: upper.to_vec(),
        lower: upper.to_vec(),
        upper: upper.to_vec(),
        quantile: QUANTILE,
        method: ForecastMethod::Regression,
    }
}

/// The need computed from the rules, independently of the planner's code.
fn reference_need(
    g: &OnlineGen,
    interval: u64,
    now: i64,
    seen: &OnlineState,
    trust: &Trust,
) -> Option<u32> {
    let f = seen.forecast.as_ref()?;
    let stale = now - f.start > 2 * 60i64.max(interval as i64);
    if stale {
        return None;
    }
    let replicas = |demand: f64| {
        let raw = (demand * (1.0 + g.headroom) / g.per_replica - 1e-9)
            .ceil()
            .max(0.0) as u32;
        raw.clamp(g.min, g.min + g.span)
    };
    if distrusted(trust) {
        // Sized on observed demand alone.
        return seen.observed_demand.map(replicas);
    }
    let lead = g.startup as i64 + interval as i64 + ACTUATION_ALLOWANCE_SECS;
    let mut peak: Option<f64> = None;
    for (i, v) in f.upper.iter().enumerate() {
        let at = f.start + 60 * i as i64;
        if at + 60 > now && at <= now + lead && v.is_finite() {
            peak = Some(peak.map_or(*v, |p: f64| p.max(*v)));
        }
    }
    let peak = peak?;
    Some(replicas(peak.max(seen.observed_demand.unwrap_or(0.0))))
}

fn used(plan: &Plan, input: &PlanInput, hold_online: bool) -> Resources {
    let mut total = Resources::default();
    for (w, s) in plan.online.iter().zip(&input.online) {
        let n = if hold_online {
            w.current.max(w.desired)
        } else {
            w.desired
        };
        total.cpu += s.pod.cpu * f64::from(n);
        total.memory += s.pod.memory * f64::from(n);
    }
    total
}

fn add(a: Resources, pod: Resources, n: u32) -> Resources {
    Resources {
        cpu: a.cpu + pod.cpu * f64::from(n),
        memory: a.memory + pod.memory * f64::from(n),
    }
}

fn within(a: Resources, cap: Resources) -> bool {
    a.cpu <= cap.cpu * (1.0 + 1e-6) + 1e-6 && a.memory <= cap.memory * (1.0 + 1e-6) + 1e-6
}

fn run(g: &PolicyGen, cycles: &[Cycle], start_online: &[u32]) -> Result<(), TestCaseError> {
    let spec = spec_of(g);
    let capacity = capacity_of(g);
    let mut memory = PlanMemory::default();
    let mut now = 1_800_000_000i64;
    let mut online_current: Vec<u32> = start_online.to_vec();
    let mut offline_current: Vec<u32> = g.offline.iter().map(|o| o.current).collect();
    let mut last_desired: Vec<Option<u32>> = vec![None; g.online.len()];

    let mins = g
        .online
        .iter()
        .fold(Resources::default(), |acc, o| add(acc, o.pod, o.min));
    let online_min_fits = within(mins, capacity);
    let maxes = g.online.iter().fold(Resources::default(), |acc, o| {
        add(acc, o.pod, o.min + o.span)
    });
    let ample = within(maxes, capacity);

    for (k, c) in cycles.iter().enumerate() {
        let elapsed = g.interval as i64 * (1 + c.extra);
        if k > 0 {
            now += elapsed;
        }
        let input = PlanInput {
            now,
            capacity,
            online: g
                .online
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let s = &c.seen[i];
                    OnlineState {
                        name: format!("online-{i}"),
                        forecast: s.upper.as_ref().map(|u| {
                            let scaled: Vec<f64> = u.iter().map(|v| v * o.scale).collect();
                            let mut f = forecast(now + c.offset, &scaled);
                            if let Trust::Fallback = s.trust {
                                f.method = ForecastMethod::Fallback {
                                    reason: "too short".into(),
                                };
                            }
                            f
                        }),
                        observed_demand: s.observed.map(|v| v * o.scale),
                        accuracy: match s.trust {
                            Trust::Judged { points, missed } => Some(RecentAccuracy {
                                points,
                                missed,
                                error: None,
                            }),
                            _ => None,
                        },
                        current: online_current[i],
                        pod: o.pod,
                    }
                })
                .collect(),
            offline: g
                .offline
                .iter()
                .enumerate()
                .map(|(i, o)| OfflineState {
                    name: format!("offline-{i}"),
                    current: offline_current[i],
                    pod: o.pod,
                })
                .collect(),
        };
        let (p, next) = plan(&spec, &input, &memory);

        // Determinism.
        let again = plan(&spec, &input, &memory);
        prop_assert_eq!(&again.0, &p);
        prop_assert_eq!(&again.1, &next);

        prop_assert_eq!(p.online.len(), g.online.len());
        prop_assert_eq!(p.offline.len(), g.offline.len());

        // Min/max held.
        for (w, o) in p.online.iter().zip(&g.online) {
            prop_assert!(w.desired >= o.min && w.desired <= o.min + o.span, "{:?}", w);
        }
        for (w, o) in p.offline.iter().zip(&g.offline) {
            prop_assert!(w.desired <= o.min + o.span, "{:?}", w);
            prop_assert!(
                w.desired >= o.min
                    || w.reason.contains("yields")
                    || (w.reason.starts_with("holding: online demand unreadable")
                        && w.desired == w.current),
                "offline below min without saying why: {:?}",
                w
            );
        }

        // Never more than capacity, when the online minimums fit at all. A workload whose
        // demand is unreadable keeps what it runs (the planner never evicts a running online
        // pod for lack of data), so what it runs counts as its minimum here.
        let mut total = used(&p, &input, false);
        for (w, s) in p.offline.iter().zip(&input.offline) {
            total = add(total, s.pod, w.desired);
        }
        let floor: Vec<u32> = g
            .online
            .iter()
            .zip(&input.online)
            .zip(&p.online)
            .map(|((o, s), w)| {
                let unplanned = w.reason.contains("missing")
                    || s.observed_demand
                        .is_none_or(|d| !(d.is_finite() && d >= 0.0));
                if unplanned {
                    o.min.max(s.current.min(o.min + o.span))
                } else {
                    o.min
                }
            })
            .collect();
        let floors = g
            .online
            .iter()
            .zip(&floor)
            .fold(Resources::default(), |acc, (o, &n)| add(acc, o.pod, n));
        if online_min_fits && within(floors, capacity) {
            prop_assert!(
                within(total, capacity),
                "{:?} > {:?}: {:#?}",
                total,
                capacity,
                p
            );
        }

        // Offline never grows into capacity online still holds.
        let online_holds = used(&p, &input, true);
        let mut with_offline = online_holds;
        for (w, s) in p.offline.iter().zip(&input.offline) {
            with_offline = add(with_offline, s.pod, w.desired);
        }
        if within(online_holds, capacity) {
            prop_assert!(within(with_offline, capacity), "{:#?}", p);
        } else {
            prop_assert!(p.offline.iter().all(|w| w.desired == 0), "{:#?}", p);
        }

        // Online never below need when capacity allows: the top-priority workload gets its
        // need whenever it fits next to everyone else's minimum; with ample capacity, all do.
        let top = (0..g.online.len())
            .max_by_key(|&i| (g.online[i].priority, std::cmp::Reverse(i)))
            .expect("at least one online");
        for (i, o) in g.online.iter().enumerate() {
            let trust = &c.seen[i].trust;
            let Some(need) = reference_need(o, g.interval, now, &input.online[i], trust) else {
                continue;
            };
            let others = g
                .online
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .fold(Resources::default(), |acc, (j, w)| {
                    add(acc, w.pod, floor[j])
                });
            let fits = within(add(others, o.pod, need), capacity);
            if ample || (i == top && fits) {
                prop_assert!(
                    p.online[i].desired >= need,
                    "{} desired {} < need {}: {:#?}",
                    i,
                    p.online[i].desired,
                    need,
                    p
                );
            }
        }

        // Scale-down rate and missing data, on the planner's own previous decision. Only a
        // capacity cut (a higher priority taking replicas) may go further, so check with ample
        // capacity.
        if ample {
            for (i, o) in g.online.iter().enumerate() {
                let Some(last) = last_desired[i] else {
                    continue;
                };
                let desired = p.online[i].desired;
                let max = o.min + o.span;
                let allowance = scale_down_allowance(last, g.max_percent, elapsed);
                prop_assert!(
                    desired + allowance >= last.min(max),
                    "{}: {} -> {} beyond {} allowed in {}s: {:#?}",
                    i,
                    last,
                    desired,
                    allowance,
                    elapsed,
                    p
                );
                let trust = &c.seen[i].trust;
                // An untrusted forecast with a readable demand is sized on that demand, through
                // the same guardrails: usable too.
                let window_usable =
                    reference_need(o, g.interval, now, &input.online[i], trust).is_some();
                if !window_usable {
                    prop_assert!(desired >= last.min(max), "missing data lowered {}", i);
                    if !g.reactive {
                        prop_assert!(desired >= online_current[i].min(max));
                    }
                }
                // No usable demand now: the forecast may grow the workload, never shrink it.
                if input.online[i].observed_demand.is_none() {
                    prop_assert!(
                        desired >= online_current[i].min(max),
                        "{} shrunk {} -> {} with demand unreadable now: {:#?}",
                        i,
                        online_current[i],
                        desired,
                        p
                    );
                }
            }
        }

        // Ordered actions: every shrink before every grow; batch shrinks first, batch grows
        // last.
        let shrinks: Vec<_> = p.shrinks().collect();
        let grows: Vec<_> = p.grows().collect();
        prop_assert!(shrinks.iter().all(|a| a.to < a.from));
        prop_assert!(grows.iter().all(|a| a.to > a.from));
        let first_online = shrinks
            .iter()
            .position(|a| a.class == WorkloadClass::Online)
            .unwrap_or(shrinks.len());
        prop_assert!(
            shrinks[first_online..]
                .iter()
                .all(|a| a.class == WorkloadClass::Online)
        );
        let first_offline = grows
            .iter()
            .position(|a| a.class == WorkloadClass::Offline)
            .unwrap_or(grows.len());
        prop_assert!(
            grows[first_offline..]
                .iter()
                .all(|a| a.class == WorkloadClass::Offline)
        );

        for (i, w) in p.online.iter().enumerate() {
            last_desired[i] = Some(w.desired);
            online_current[i] = match c.apply {
                0 => online_current[i],
                1 => w.desired,
                _ => online_current[i].min(w.desired),
            };
        }
        for (i, w) in p.offline.iter().enumerate() {
            offline_current[i] = match c.apply {
                0 => offline_current[i],
                1 => w.desired,
                _ => offline_current[i].min(w.desired),
            };
        }
        memory = next;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn planner_invariants_hold_over_cycles(
        g in policy_gen(),
        cycles in prop::collection::vec(cycle(), 1..25),
        start in prop::collection::vec(0u32..80, 3),
    ) {
        let start_online: Vec<u32> = g
            .online
            .iter()
            .zip(&start)
            .map(|(o, s)| (*s).clamp(o.min, o.min + o.span))
            .collect();
        run(&g, &cycles, &start_online)?;
    }
}
