//! The planner on valid policies with fuzzed numbers. YAML mutations rarely stay valid
//! policies (about 1 in 200 inputs of policy_load does), so this target starts from the bundled
//! festival policy and lets the input choose its numbers (replicas, perReplica, headroom,
//! durations, capacity, guardrails) and the cluster's state (current replicas, pod sizes,
//! forecasts, observed demand, clock). Whatever `validate` accepts must plan without a panic,
//! deterministically, within the documented rules, and load back from its own YAML.
//!
//! Called by the fuzz target fuzz/fuzz_targets/policy_plan.rs (`fuzz/run`), and by
//! tests/fuzz_corpora.rs on every file of fuzz/corpus/policy_plan/ in every `tests/run`.

use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use tideshift::forecast::{Forecast, ForecastMethod, RecentAccuracy};
use tideshift::plan::{self, OfflineState, OnlineState, PlanInput, PlanMemory, Resources};
use tideshift::policy::{
    self, Cpu, Memory, MissingMetrics, PolicyDuration, ShiftPolicy, ShiftPolicySpec,
};

const NOW: i64 = 1_790_000_000;
const DAY: i64 = 86_400;

fn base() -> &'static ShiftPolicy {
    static BASE: OnceLock<ShiftPolicy> = OnceLock::new();
    BASE.get_or_init(|| {
        policy::load_str(
            include_str!("../../policies/festival.yaml"),
            "festival.yaml",
        )
        .expect("policies/festival.yaml is valid")
    })
}

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
}

fn run(u: &mut Unstructured) -> Result<()> {
    let mut policy = base().clone();
    mutate(&mut policy.spec, u)?;
    if policy::validate(&policy).is_err() {
        return Ok(());
    }
    // What validation accepts is what the loader accepts: the policy must survive YAML.
    let text = serde_yaml::to_string(&policy).expect("a valid policy serializes");
    let again = policy::load_str(&text, "roundtrip").expect("a valid policy loads back");
    assert_eq!(policy.spec, again.spec, "round trip changed the spec");

    let spec = &policy.spec;
    let first = input(spec, u, NOW)?;
    let (plan, memory) = plan::plan(spec, &first, &PlanMemory::default());
    assert_eq!(
        plan,
        plan::plan(spec, &first, &PlanMemory::default()).0,
        "not deterministic"
    );
    check_rules(spec, &first, &plan);

    // The next cycle, after any delay (the clock may even step back), from the same or a new
    // state of the cluster.
    let later = NOW + u.int_in_range(-60..=2 * DAY)?;
    let second = input(spec, u, later)?;
    let (later_plan, _) = plan::plan(spec, &second, &memory);
    check_rules(spec, &second, &later_plan);
    Ok(())
}

/// The rules docs/planner.md promises for every plan.
fn check_rules(spec: &ShiftPolicySpec, input: &PlanInput, plan: &plan::Plan) {
    for (w, state) in spec.online.iter().zip(&input.online) {
        let Some(p) = plan.workload(&w.name) else {
            continue;
        };
        // "the minimums are never cut"
        assert!(
            p.desired >= w.replicas.min,
            "{}: {} below min {}",
            w.name,
            p.desired,
            w.replicas.min
        );
        // "missing data never scales an online workload down": without a forecast, or without a
        // usable demand now, an online workload keeps at least its current replicas, whatever
        // the capacity and `onMissingMetrics`. (An untrusted forecast with a readable demand is
        // sized on that demand through the guardrails, like an HPA.)
        let unreadable_now = state
            .observed_demand
            .is_none_or(|d| !(d.is_finite() && d >= 0.0));
        if state.forecast.is_none() || unreadable_now {
            assert!(
                p.desired >= state.current,
                "{}: scaled down below its current {} without a forecast to plan on: {p:?}",
                w.name,
                state.current
            );
        }
    }
    for w in &spec.offline {
        if let Some(p) = plan.workload(&w.name) {
            assert!(
                p.desired <= w.replicas.max.max(p.current),
                "{}: {p:?}",
                w.name
            );
        }
    }
}

fn mutate(spec: &mut ShiftPolicySpec, u: &mut Unstructured) -> Result<()> {
    if u.arbitrary()? {
        spec.interval = duration(u)?;
    }
    if u.arbitrary()? {
        spec.capacity.cpu = if u.arbitrary()? {
            Some(quantity::<Cpu>(u)?)
        } else {
            None
        };
    }
    if u.arbitrary()? {
        spec.capacity.memory = if u.arbitrary()? {
            Some(quantity::<Memory>(u)?)
        } else {
            None
        };
    }
    let online = u.int_in_range(1..=spec.online.len())?;
    spec.online.truncate(online);
    for w in &mut spec.online {
        if !u.arbitrary()? {
            continue;
        }
        w.per_replica = number(u)?;
        w.headroom = number(u)?;
        w.quantile = number(u)?;
        w.replicas.min = replicas(u)?;
        w.replicas.max = replicas(u)?;
        w.startup = duration(u)?;
        w.priority = u.arbitrary()?;
        if let Some(r) = &mut w.resources {
            r.cpu = quantity(u)?;
            r.memory = quantity(u)?;
        }
    }
    let offline = u.int_in_range(0..=spec.offline.len())?;
    spec.offline.truncate(offline);
    for w in &mut spec.offline {
        if !u.arbitrary()? {
            continue;
        }
        w.replicas.min = replicas(u)?;
        w.replicas.max = replicas(u)?;
        w.weight = number(u)?;
        if let Some(r) = &mut w.resources {
            r.cpu = quantity(u)?;
            r.memory = quantity(u)?;
        }
    }
    if u.arbitrary()? {
        let f = &mut spec.forecast;
        f.step = duration(u)?;
        f.history = duration(u)?;
        f.horizon = duration(u)?;
        f.retrain = duration(u)?;
        let seasons = u.int_in_range(0..=5)?;
        f.seasonality = (0..seasons).map(|_| duration(u)).collect::<Result<_>>()?;
    }
    if u.arbitrary()? {
        let g = &mut spec.guardrails;
        g.scale_down.max_percent_per_minute = number(u)?;
        g.scale_down.stabilization = duration(u)?;
        g.on_missing_metrics = if u.arbitrary()? {
            MissingMetrics::Hold
        } else {
            MissingMetrics::Reactive
        };
    }
    Ok(())
}

/// Mostly plausible values, sometimes extreme ones: validation bounds are where bugs hide.
fn number(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0..=3)? {
        0 => f64::from(u.int_in_range(0..=1_000u32)?) / 100.0,
        1 => f64::from(u.arbitrary::<u32>()?),
        2 => u.arbitrary::<f64>()?,
        _ => *u.choose(&[0.0, 0.5, 0.99, 1.0, 10.0, 1e-300, 1e300, f64::MIN_POSITIVE])?,
    })
}

fn replicas(u: &mut Unstructured) -> Result<u32> {
    Ok(match u.int_in_range(0..=2)? {
        0 => u.int_in_range(0..=50)?,
        1 => *u.choose(&[0, 1, policy::validate::MAX_REPLICAS, u32::MAX])?,
        _ => u.arbitrary()?,
    })
}

fn duration(u: &mut Unstructured) -> Result<PolicyDuration> {
    let secs = match u.int_in_range(0..=2)? {
        0 => u.int_in_range(0..=3_600)?,
        1 => *u.choose(&[
            0,
            1,
            15,
            60,
            86_400,
            7 * 86_400,
            policy::units::MAX_DURATION_SECS,
        ])?,
        _ => u.int_in_range(0..=policy::units::MAX_DURATION_SECS)?,
    };
    Ok(PolicyDuration::from_secs(secs))
}

/// A Kubernetes quantity as a user would write it, through the real quantity parser.
fn quantity<T: std::str::FromStr>(u: &mut Unstructured) -> Result<T> {
    let number = match u.int_in_range(0..=2)? {
        0 => u.int_in_range(0..=4_096u32)?.to_string(),
        1 => u.arbitrary::<u64>()?.to_string(),
        _ => format!("{}", u.arbitrary::<f64>()?),
    };
    let suffix = u.choose(&[
        "", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "Ei", "e3", "E",
    ])?;
    format!("{number}{suffix}")
        .parse()
        .map_err(|_| arbitrary::Error::IncorrectFormat)
}

fn input(spec: &ShiftPolicySpec, u: &mut Unstructured, now: i64) -> Result<PlanInput> {
    let step = i64::try_from(spec.forecast.step.as_secs())
        .unwrap_or(60)
        .clamp(1, DAY);
    let resources = |u: &mut Unstructured, r: &Option<policy::PodResources>| -> Result<Resources> {
        Ok(match r {
            Some(r) => Resources {
                cpu: r.cpu.value,
                memory: r.memory.value,
            },
            // The daemon reads requests from the pod template: any amount, even zero.
            None => Resources {
                cpu: number(u)?,
                memory: number(u)? * 1e9,
            },
        })
    };
    let mut online = Vec::new();
    for w in &spec.online {
        let forecast = if u.arbitrary()? {
            let points = u.int_in_range(0..=300)?;
            let level = number(u)?;
            let mut point = Vec::with_capacity(points);
            for _ in 0..points {
                point.push(if u.arbitrary()? { level } else { number(u)? });
            }
            let upper: Vec<f64> = point.iter().map(|v| v * 1.2).collect();
            let lower: Vec<f64> = point.iter().map(|v| v * 0.8).collect();
            Some(Forecast {
                // The forecast may have been made a while ago, or (clock skew) slightly ahead.
                start: now - step * i64::from(u.int_in_range(0..=20u8)?)
                    + i64::from(u.int_in_range(0..=5u8)?),
                step,
                point,
                lower,
                upper,
                quantile: w.quantile,
                method: if u.arbitrary()? {
                    ForecastMethod::Regression
                } else {
                    ForecastMethod::Fallback {
                        reason: "fuzz".into(),
                    }
                },
            })
        } else {
            None
        };
        let accuracy = if u.arbitrary()? {
            let points = u.int_in_range(0..=500usize)?;
            Some(RecentAccuracy {
                points,
                missed: u.int_in_range(0..=points)?,
                error: None,
            })
        } else {
            None
        };
        online.push(OnlineState {
            name: w.name.clone(),
            forecast,
            observed_demand: if u.arbitrary()? {
                Some(number(u)?)
            } else {
                None
            },
            accuracy,
            current: replicas(u)?,
            pod: resources(u, &w.resources)?,
        });
    }
    let mut offline = Vec::new();
    for w in &spec.offline {
        offline.push(OfflineState {
            name: w.name.clone(),
            current: replicas(u)?,
            pod: resources(u, &w.resources)?,
        });
    }
    let capacity = Resources {
        cpu: spec
            .capacity
            .cpu
            .as_ref()
            .map_or(Ok(64.0), |c| Ok(c.value))
            .and_then(|c: f64| {
                // Node allocatable changes under the policy: sometimes less than written.
                Ok(if u.arbitrary()? {
                    c
                } else {
                    c * f64::from(u.int_in_range(0..=100u8)?) / 100.0
                })
            })?,
        memory: spec
            .capacity
            .memory
            .as_ref()
            .map_or(f64::INFINITY, |m| m.value),
    };
    Ok(PlanInput {
        now,
        capacity,
        online,
        offline,
    })
}
