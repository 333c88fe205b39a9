//! The what-if simulator behind `tideshift simulate`: the daemon's own forecaster and planner
//! against a discrete-time cluster, next to static, reactive (HPA) and oracle baselines, over
//! the same demand.

pub mod cluster;
pub mod demand;
pub mod engine;
pub mod history;
pub mod inputs;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod strategy;
pub mod synth;

use std::sync::Arc;

use engine::Outcome;
use scenario::Scenario;
use strategy::Strategy;

/// The strategies of one run, in the order they are reported.
pub fn strategies(scenario: &Arc<Scenario>) -> Vec<Box<dyn Strategy>> {
    vec![
        Box::new(strategy::static_split::StaticSplit::new(scenario)),
        Box::new(strategy::reactive::Reactive::new(scenario.clone())),
        Box::new(strategy::tideshift::Planned::tideshift(scenario.clone())),
        Box::new(strategy::tideshift::Planned::oracle(scenario.clone())),
    ]
}

/// Run every strategy over the scenario, each on its own thread (they share nothing but the
/// read-only scenario). `progress` gets the number of clock ticks done, summed over strategies.
pub fn run_all(
    scenario: &Arc<Scenario>,
    timeline: &engine::TimelinePlan,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Outcome> {
    let mut runs = strategies(scenario);
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter_mut()
            .map(|strategy| {
                scope.spawn(move || engine::run(scenario, strategy.as_mut(), timeline, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(outcome) => outcome,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Where the online demand (in replicas, summed over workloads) is highest in the scored
/// window: the plot zooms on the day around it.
pub fn busiest_time(scenario: &Scenario) -> i64 {
    let mut best = (scenario.scored_from, f64::MIN);
    let step = scenario.forecast_step.max(scenario.tick);
    let mut t = scenario.scored_from;
    while t < scenario.end {
        let need: f64 = scenario
            .demand
            .iter()
            .zip(&scenario.online)
            .filter_map(|(d, w)| d.as_ref().and_then(|d| d.at(t)).map(|v| v / w.per_replica))
            .sum();
        if need > best.1 {
            best = (t, need);
        }
        t += step;
    }
    best.0
}

/// Timelines for a plot: about 2,000 points across the scored window, and the day around
/// the busiest moment at the clock's resolution (at most one point a minute).
pub fn timeline_plan(scenario: &Scenario) -> engine::TimelinePlan {
    let peak = busiest_time(scenario);
    let zoom_from = (peak - 12 * 3_600).max(scenario.scored_from);
    let zoom_to = (zoom_from + 86_400).min(scenario.end);
    engine::TimelinePlan {
        step: ((scenario.end - scenario.scored_from) / 2_000).max(60),
        zoom_from,
        zoom_to,
        zoom_step: 60,
    }
}
