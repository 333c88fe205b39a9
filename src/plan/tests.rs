//! Rule-by-rule tests of `plan()`.

use super::testutil::*;
use super::*;
use crate::forecast::{ForecastMethod, RecentAccuracy};

fn desired(plan: &Plan, name: &str) -> u32 {
    plan.workload(name).expect("workload in plan").desired
}

#[test]
fn online_need_is_the_upper_band_over_the_lead_window() {
    let spec = spec();
    let mut input = input(0, 100.0, (2, 0.0), (1, 0.0), (0, 0));
    // Lead = startup 30 + interval 15 + allowance 15 = 60 s: steps at 0 and 60 count,
    // the spike at 120 is beyond the lead.
    input.online[0].forecast = Some(forecast(0, &[500.0, 1000.0, 9000.0]));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "pay"), 10);
    assert_eq!(plan.online[0].need, Some(10));
}

#[test]
fn headroom_and_per_replica_set_the_need() {
    let mut spec = spec();
    spec.online[0].headroom = 0.25;
    let input = input(0, 100.0, (2, 1000.0), (1, 0.0), (0, 0));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "pay"), 13);
}

#[test]
fn min_and_max_bound_the_need() {
    let spec = spec();
    let input = input(0, 200.0, (2, 100_000.0), (1, 0.0), (0, 0));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "pay"), 80);
    assert!(
        plan.online[0].reason.contains("max 80"),
        "{}",
        plan.online[0].reason
    );
    assert_eq!(desired(&plan, "refund"), 1);
}

#[test]
fn observed_demand_is_a_floor() {
    let spec = spec();
    let mut input = input(0, 100.0, (2, 300.0), (1, 0.0), (0, 0));
    input.online[0].observed_demand = Some(1200.0);
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "pay"), 12);
    assert!(plan.online[0].reason.contains("observed"));
}

#[test]
fn scale_up_is_immediate() {
    let spec = spec();
    let (_, memory) = super::plan(
        &spec,
        &input(0, 100.0, (5, 500.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    let (plan, _) = super::plan(
        &spec,
        &input(15, 100.0, (5, 3000.0), (1, 0.0), (0, 0)),
        &memory,
    );
    assert_eq!(desired(&plan, "pay"), 30);
}

#[test]
fn scale_down_waits_for_the_stabilization_window_then_follows_the_rate() {
    let spec = spec();
    let mut memory = PlanMemory::default();
    let mut current = 40;
    let mut history = Vec::new();
    // 40 replicas needed at t=0, then only 10.
    for cycle in 0..60 {
        let now = cycle * 15;
        let demand = if cycle == 0 { 4000.0 } else { 1000.0 };
        let (plan, next) = super::plan(
            &spec,
            &input(now, 100.0, (current, demand), (1, 0.0), (0, 0)),
            &memory,
        );
        current = desired(&plan, "pay");
        history.push((now, current));
        memory = next;
    }
    // Held at 40 until the 40-recommendation is a full window (300 s) old.
    for &(now, replicas) in &history {
        if now < 300 {
            assert_eq!(replicas, 40, "at {now}: {history:?}");
        }
    }
    // Then down by 10%/min of the previous plan, at least 1 per cycle: 15 s -> floor(40 *
    // 0.025) = 1 per cycle.
    for pair in history.windows(2) {
        let ((_, before), (_, after)) = (pair[0], pair[1]);
        assert!(
            after + scale_down_allowance(before, 10.0, 15) >= before,
            "{history:?}"
        );
    }
    assert_eq!(history.last().map(|h| h.1), Some(10));
}

#[test]
fn first_plan_after_restart_does_not_scale_online_down() {
    let spec = spec();
    let (plan, _) = super::plan(
        &spec,
        &input(1000, 100.0, (30, 500.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    assert_eq!(desired(&plan, "pay"), 30);
}

#[test]
fn missing_forecast_holds_and_never_scales_down() {
    let spec = spec();
    let (_, memory) = super::plan(
        &spec,
        &input(0, 100.0, (20, 2000.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    let mut input = input(15, 100.0, (18, 0.0), (1, 0.0), (0, 0));
    input.online[0].forecast = None;
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 20);
    assert!(plan.online[0].reason.contains("hold"));
    // Current above the last plan (someone scaled it up): hold keeps current.
    input.online[0].current = 25;
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 25);
}

#[test]
fn missing_forecast_reactive_scales_up_on_observed_but_not_below_last_plan() {
    let mut spec = spec();
    spec.guardrails.on_missing_metrics = crate::policy::MissingMetrics::Reactive;
    let (_, memory) = super::plan(
        &spec,
        &input(0, 100.0, (20, 2000.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    let mut input = input(15, 100.0, (20, 0.0), (1, 0.0), (0, 0));
    input.online[0].forecast = None;
    input.online[0].observed_demand = Some(500.0);
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 20);
    input.online[0].observed_demand = Some(3000.0);
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 30);
    // Scaled up since (by hand, or by a cycle cut short): without a forecast its need is
    // unknown, so it keeps its current replicas even when the observed demand needs fewer. The
    // daemon did this after the planner (a post-plan override); the planner owns it now, so the
    // simulator and the fuzzers see it too.
    input.online[0].current = 25;
    input.online[0].observed_demand = Some(500.0);
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 25, "{}", plan.online[0].reason);
}

/// Found by `fuzz/run` (fuzz/corpus/policy_plan/crash-reactive-without-demand-scales-down):
/// with neither forecast nor observed demand, `reactive` held the last plan and scaled a
/// workload that had been scaled up since down to it.
#[test]
fn missing_forecast_and_demand_reactive_never_scales_down() {
    let mut spec = spec();
    spec.guardrails.on_missing_metrics = crate::policy::MissingMetrics::Reactive;
    let (_, memory) = super::plan(
        &spec,
        &input(0, 100.0, (20, 2000.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    let mut input = input(15, 100.0, (25, 0.0), (1, 0.0), (0, 0));
    input.online[0].forecast = None;
    input.online[0].observed_demand = None;
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 25, "{}", plan.online[0].reason);
    assert!(plan.online[0].reason.contains("reactive"));
}

#[test]
fn stale_or_all_nan_forecast_counts_as_missing() {
    let spec = spec();
    let (_, memory) = super::plan(
        &spec,
        &input(0, 100.0, (20, 2000.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    let mut input = input(4000, 100.0, (20, 0.0), (1, 0.0), (0, 0));
    input.online[0].forecast = Some(forecast(0, &[100.0; 10]));
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 20);
    input.online[0].forecast = Some(forecast(4000, &[f64::NAN; 10]));
    let (plan, _) = super::plan(&spec, &input, &memory);
    assert_eq!(desired(&plan, "pay"), 20);
}

#[test]
fn offline_gets_what_online_leaves_by_weight() {
    let spec = spec();
    // 100 cores, pay needs 40, refund 10: 50 left, split 2:1.
    let input = input(0, 100.0, (40, 4000.0), (10, 1000.0), (0, 0));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "train") + desired(&plan, "report"), 50);
    assert_eq!(desired(&plan, "train"), 33);
    assert_eq!(desired(&plan, "report"), 17);
}

#[test]
fn offline_shrinks_at_once_when_online_grows() {
    let spec = spec();
    let (plan, _) = super::plan(
        &spec,
        &input(0, 100.0, (10, 6000.0), (10, 1000.0), (53, 27)),
        &PlanMemory::default(),
    );
    assert_eq!(desired(&plan, "pay"), 60);
    assert_eq!(desired(&plan, "train") + desired(&plan, "report"), 30);
}

#[test]
fn offline_does_not_grow_into_capacity_online_still_holds() {
    let spec = spec();
    let mut memory = PlanMemory::default();
    // Online at 60 + 10 after a peak; need drops to 10 + 10.
    let mut pay = 60;
    for cycle in 0..80 {
        let now = cycle * 15;
        let demand = if cycle == 0 { 6000.0 } else { 1000.0 };
        let (plan, next) = super::plan(
            &spec,
            &input(now, 100.0, (pay, demand), (10, 1000.0), (20, 10)),
            &memory,
        );
        let batch = desired(&plan, "train") + desired(&plan, "report");
        // Online holds max(current, desired) of pay.
        let held = pay.max(desired(&plan, "pay")) + 10;
        assert!(batch + held <= 100, "cycle {cycle}: {plan:#?}");
        pay = desired(&plan, "pay");
        memory = next;
    }
    assert_eq!(pay, 10);
}

#[test]
fn priority_decides_who_is_short_and_the_plan_says_when() {
    let spec = spec();
    let mut input = input(0, 100.0, (2, 0.0), (1, 0.0), (10, 10));
    // pay needs 70 from 5 minutes on; refund needs 50 throughout: 120 > 100.
    let mut pay = vec![1000.0; 5];
    pay.extend([7000.0; 20]);
    input.online[0].forecast = Some(forecast(0, &pay));
    input.online[1].forecast = Some(forecast(0, &[5000.0; 25]));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    // Now: pay 10, refund 50, batch 40.
    assert_eq!(desired(&plan, "pay"), 10);
    assert_eq!(desired(&plan, "refund"), 50);
    assert_eq!(desired(&plan, "train") + desired(&plan, "report"), 40);
    // Ahead: refund (lower priority) gets 30 at 300 s.
    assert_eq!(
        plan.shortfalls,
        vec![ForecastShortfall {
            workload: "refund".into(),
            at: 300,
            missing_replicas: 20,
            unserved_demand: 2000.0,
        }]
    );
    let peak = plan.next_peak.expect("peak");
    assert_eq!(
        (peak.workload.as_str(), peak.at, peak.replicas),
        ("pay", 300, 70)
    );
}

#[test]
fn highest_priority_is_never_cut_and_lower_gets_the_rest_now() {
    let spec = spec();
    let input = input(0, 100.0, (2, 9000.0), (1, 5000.0), (30, 30));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "pay"), 80);
    assert_eq!(desired(&plan, "refund"), 20);
    assert_eq!(desired(&plan, "train") + desired(&plan, "report"), 0);
    assert!(plan.online[1].reason.contains("capacity"));
    assert_eq!(plan.shortfalls[0].workload, "refund");
    assert_eq!(plan.shortfalls[0].at, 0);
}

#[test]
fn offline_min_yields_to_online_need() {
    let mut spec = spec();
    spec.offline[0].replicas.min = 20;
    let input = input(0, 100.0, (2, 8000.0), (1, 1000.0), (20, 0));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "train"), 10);
    assert!(
        plan.offline[0].reason.contains("yields"),
        "{}",
        plan.offline[0].reason
    );
}

#[test]
fn actions_shrink_batch_then_online_then_grow_online_then_batch() {
    let plan = Plan {
        now: 0,
        online: vec![wp("a", 5, 10), wp("b", 10, 4)],
        offline: vec![wp("x", 3, 7), wp("y", 9, 2)],
        shortfalls: vec![],
        next_peak: None,
    };
    let order: Vec<(&str, u32, u32)> = plan
        .shrinks()
        .chain(plan.grows())
        .map(|a| (a.name, a.from, a.to))
        .collect();
    assert_eq!(
        order,
        vec![("y", 9, 2), ("b", 10, 4), ("a", 5, 10), ("x", 3, 7)]
    );
    assert!(!plan.is_steady());
}

fn wp(name: &str, current: u32, desired: u32) -> WorkloadPlan {
    WorkloadPlan {
        name: name.into(),
        current,
        desired,
        reason: String::new(),
        need: None,
        peak: None,
        untrusted: None,
        forecast_unusable: None,
    }
}

#[test]
fn same_input_same_plan() {
    let spec = spec();
    let input = input(0, 100.0, (10, 3333.0), (10, 1234.0), (5, 5));
    let memory = PlanMemory::default();
    assert_eq!(
        super::plan(&spec, &input, &memory),
        super::plan(&spec, &input, &memory)
    );
}

/// `pay` with an observed demand of 1,000 (10 replicas) at 30 replicas and a flat forecast of
/// 500 (5 replicas): trusted, the plan comes down toward 5; untrusted, it must not.
fn trust_case(method: ForecastMethod, accuracy: Option<RecentAccuracy>) -> (Plan, PlanInput) {
    let spec = spec();
    let mut input = input(0, 100.0, (30, 500.0), (1, 0.0), (0, 0));
    input.online[0].forecast.as_mut().expect("forecast").method = method;
    input.online[0].observed_demand = Some(1_000.0);
    input.online[0].accuracy = accuracy;
    let memory = PlanMemory::default();
    let (plan, _) = super::plan(&spec, &input, &memory);
    (plan, input)
}

fn judged(points: usize, missed: usize) -> Option<RecentAccuracy> {
    Some(RecentAccuracy {
        points,
        missed,
        error: None,
    })
}

#[test]
fn an_unchecked_fallback_is_not_planned_on_and_sizes_online_on_observed_demand() {
    let (plan, _) = trust_case(
        ForecastMethod::Fallback {
            reason: "too short".into(),
        },
        None,
    );
    let pay = plan.workload("pay").expect("pay");
    // Held by the stabilization window on the first cycle, like any scale-down; the need is
    // the observed demand's.
    assert_eq!(pay.desired, 30, "{pay:?}");
    assert_eq!(pay.need, Some(10), "{pay:?}");
    assert!(
        pay.untrusted
            .as_deref()
            .is_some_and(|u| u.contains("fallback")),
        "{pay:?}"
    );
    assert!(
        pay.peak.is_none(),
        "an untrusted forecast has no peak: {pay:?}"
    );
}

#[test]
fn a_checked_simple_method_is_trusted_and_planned_on() {
    for method in [
        ForecastMethod::SeasonalNaive {
            reason: "held-out error".into(),
        },
        ForecastMethod::Naive {
            reason: "held-out error".into(),
        },
        ForecastMethod::Regression,
    ] {
        let (plan, _) = trust_case(method.clone(), judged(20, 1));
        let pay = plan.workload("pay").expect("pay");
        assert!(pay.untrusted.is_none(), "{method:?}: {pay:?}");
        // Planned on the forecast and the observed floor: a need of 10, held at 30 only by the
        // stabilization window; the forecast's peak is reported.
        assert_eq!(pay.need, Some(10), "{method:?}: {pay:?}");
        assert!(pay.peak.is_some(), "{method:?}: {pay:?}");
    }
}

#[test]
fn a_band_the_demand_keeps_breaking_is_not_planned_on() {
    // 5 of 8 judged points above the band: more than a quarter.
    let (plan, _) = trust_case(ForecastMethod::Regression, judged(8, 5));
    let pay = plan.workload("pay").expect("pay");
    assert!(pay.peak.is_none(), "{pay:?}");
    assert!(
        pay.untrusted
            .as_deref()
            .is_some_and(|u| u.contains("5 of its last 8")),
        "{pay:?}"
    );
    // A quarter exactly is still trusted, and so is any share over fewer than 8 points, and 3
    // of 8 at quantile 0.95 (a healthy band breaks that often once in 170 judgements).
    for accuracy in [judged(8, 2), judged(7, 7), judged(8, 3)] {
        let (plan, _) = trust_case(ForecastMethod::Regression, accuracy);
        let pay = plan.workload("pay").expect("pay");
        assert!(pay.untrusted.is_none(), "{accuracy:?}: {pay:?}");
    }
}

/// Fresh starts (judged times from none up to a full 2-hour window at 1m) of a band broken at
/// `miss_rate` of the times, at random: the share of starts in which `distrust` ever fired.
fn starts_distrusted(quantile: f64, miss_rate: f64, judgements: usize) -> f64 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let forecast = Forecast {
        quantile,
        ..forecast(0, &[100.0])
    };
    let starts = 2_000;
    let window = (TRUST_WINDOW_SECS / 60) as usize;
    let mut distrusted = 0;
    for _ in 0..starts {
        let mut missed = std::collections::VecDeque::new();
        for _ in 0..judgements {
            missed.push_back(rng.random_bool(miss_rate));
            if missed.len() > window {
                missed.pop_front();
            }
            let accuracy = RecentAccuracy {
                points: missed.len(),
                missed: missed.iter().filter(|&&m| m).count(),
                error: None,
            };
            if super::online::distrust(&forecast, Some(&accuracy)).is_some() {
                distrusted += 1;
                break;
            }
        }
    }
    distrusted as f64 / starts as f64
}

#[test]
fn a_band_that_holds_its_quantile_is_rarely_distrusted_by_chance_and_a_broken_one_soon() {
    // Every valid quantile: its band broken at the rate it allows, over 4 hours of judgements.
    // (A fixed 25% threshold distrusted 12% of healthy starts at 0.9, all of them at 0.6.)
    for quantile in [0.99, 0.95, 0.9, 0.75, 0.6] {
        let share = starts_distrusted(quantile, 1.0 - quantile, 240);
        assert!(
            share <= 0.01,
            "quantile {quantile}: {share} of healthy starts distrusted"
        );
    }
    // A band the demand breaks at half the times or more than it should (a forecast running
    // low) is caught within its first half hour of judgements nearly always.
    for (quantile, miss_rate) in [(0.95, 0.5), (0.9, 0.6), (0.75, 0.75), (0.6, 0.9)] {
        let share = starts_distrusted(quantile, miss_rate, 30);
        assert!(
            share >= 0.95,
            "quantile {quantile}, misses {miss_rate}: caught in {share}"
        );
    }
}

#[test]
fn untrusted_sizing_follows_observed_demand_up() {
    let spec = spec();
    let mut input = input(0, 100.0, (5, 500.0), (1, 0.0), (0, 0));
    input.online[0].forecast.as_mut().expect("forecast").method = ForecastMethod::Fallback {
        reason: "too short".into(),
    };
    input.online[0].observed_demand = Some(2_000.0);
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(desired(&plan, "pay"), 20);
}

#[test]
fn batch_grows_beside_an_untrusted_forecast_but_not_beside_missing_demand() {
    let spec = spec();
    // pay 10 replicas serving 1,000 (fallback forecast), refund 1: 89 cores free for batch.
    let mut input = input(0, 100.0, (10, 1_000.0), (1, 0.0), (0, 0));
    input.online[0].forecast.as_mut().expect("forecast").method = ForecastMethod::Fallback {
        reason: "too short".into(),
    };
    input.online[0].observed_demand = Some(1_000.0);
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    let batch = desired(&plan, "train") + desired(&plan, "report");
    assert!(
        batch > 0,
        "untrusted online must not starve batch: {plan:?}"
    );

    input.online[0].forecast = None;
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    assert_eq!(
        desired(&plan, "train") + desired(&plan, "report"),
        0,
        "{plan:?}"
    );
    assert!(
        plan.workload("train")
            .expect("train")
            .reason
            .starts_with("holding: online demand unreadable"),
        "{plan:?}"
    );
}

#[test]
fn a_stale_forecast_is_missing_data_not_an_untrusted_one() {
    let spec = spec();
    let mut input = input(4_000, 100.0, (20, 0.0), (1, 0.0), (0, 0));
    input.online[0].forecast = Some(forecast(0, &[100.0; 100]));
    let (plan, _) = super::plan(&spec, &input, &PlanMemory::default());
    let pay = plan.workload("pay").expect("pay");
    assert!(pay.untrusted.is_none(), "{pay:?}");
    assert!(pay.reason.contains("missing"), "{pay:?}");
    assert_eq!(pay.desired, 20);
    // And batch waits, as for any missing demand.
    assert_eq!(
        desired(&plan, "train") + desired(&plan, "report"),
        0,
        "{plan:?}"
    );
}

#[test]
fn demand_unreadable_now_holds_online_and_batch_while_the_forecast_runs() {
    let spec = spec();
    // pay runs 30 and the forecast says 5 are enough; past the stabilization window, a readable
    // demand lets it come down at the allowed rate.
    let (_, memory) = super::plan(
        &spec,
        &input(0, 100.0, (30, 500.0), (1, 0.0), (0, 0)),
        &PlanMemory::default(),
    );
    let later = input(1_000, 100.0, (30, 500.0), (1, 0.0), (0, 0));
    let (plan, _) = super::plan(&spec, &later, &memory);
    assert!(desired(&plan, "pay") < 30, "{plan:?}");
    // With the latest demand unreadable, it holds, and batch does not grow.
    let mut unread = later.clone();
    unread.online[0].observed_demand = None;
    let (plan, _) = super::plan(&spec, &unread, &memory);
    let pay = plan.workload("pay").expect("pay");
    assert_eq!(pay.desired, 30, "{pay:?}");
    assert!(pay.reason.contains("demand unreadable now"), "{pay:?}");
    assert_eq!(
        desired(&plan, "train") + desired(&plan, "report"),
        0,
        "{plan:?}"
    );
    // The forecast may still grow it.
    unread.online[0].forecast = Some(forecast(1_000, &[4_000.0; 60]));
    let (plan, _) = super::plan(&spec, &unread, &memory);
    assert_eq!(desired(&plan, "pay"), 40);
}

#[test]
fn an_untrusted_workload_comes_down_with_its_demand_through_the_guardrails() {
    let spec = spec();
    let at = |now: i64| {
        let mut input = input(now, 100.0, (30, 500.0), (1, 0.0), (0, 0));
        input.online[0].forecast.as_mut().expect("forecast").method = ForecastMethod::Fallback {
            reason: "too short".into(),
        };
        input.online[0].observed_demand = Some(1_000.0);
        input
    };
    let (first, memory) = super::plan(&spec, &at(0), &PlanMemory::default());
    assert_eq!(desired(&first, "pay"), 30, "{first:?}");
    // Past the 5-minute window it comes down at 10%/min, toward the 10 the demand needs.
    let (later, _) = super::plan(&spec, &at(400), &memory);
    let pay = later.workload("pay").expect("pay");
    assert!(pay.desired < 30 && pay.desired >= 10, "{pay:?}");
    assert!(pay.untrusted.is_some(), "{pay:?}");
    // With nothing observed it holds instead.
    let mut blind = at(400);
    blind.online[0].observed_demand = None;
    let (held, _) = super::plan(&spec, &blind, &memory);
    assert_eq!(desired(&held, "pay"), 30, "{held:?}");
}
