//! `static`: what many teams do today. A fixed split sized once for a typical day: each online
//! workload gets the replicas for the 95th percentile of its demand over the warm-up (the
//! first week) plus its headroom, within min/max; batch gets the rest. Nothing moves after.

use super::{Action, Strategy, shrinks_then_grows, with_batch_fill};
use crate::sim::cluster::Cluster;
use crate::sim::scenario::Scenario;

/// The percentile of the sizing window the fixed online replicas are sized for.
pub const SIZING_PERCENTILE: f64 = 0.95;

pub struct StaticSplit {
    targets: Vec<u32>,
    online_count: usize,
    applied: bool,
}

impl StaticSplit {
    pub fn new(scenario: &Scenario) -> Self {
        // A warm-up of zero still sizes on the first day: a split needs some past to size on.
        let sizing_end = scenario.scored_from.max(scenario.start + 86_400);
        let online: Vec<u32> = scenario
            .online
            .iter()
            .zip(&scenario.demand)
            .map(|(w, demand)| {
                let typical = demand.as_ref().map_or(0.0, |d| {
                    let s = d.truth();
                    let mut values: Vec<f64> = s
                        .values
                        .iter()
                        .enumerate()
                        .filter(|(i, v)| {
                            let t = s.timestamp(*i);
                            v.is_finite() && t >= scenario.start && t < sizing_end
                        })
                        .map(|(_, v)| *v)
                        .collect();
                    percentile(&mut values, SIZING_PERCENTILE)
                });
                let replicas = (typical * (1.0 + w.headroom) / w.per_replica).ceil();
                (replicas as u32).clamp(w.min, w.max)
            })
            .collect();
        Self {
            targets: with_batch_fill(scenario, &online),
            online_count: scenario.online.len(),
            applied: false,
        }
    }
}

pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() - 1) as f64 * q).round() as usize;
    values[rank.min(values.len() - 1)]
}

impl Strategy for StaticSplit {
    fn name(&self) -> &'static str {
        "static"
    }
    fn decide(&mut self, _now: i64, cluster: &Cluster, _observed: &[Option<f64>]) -> Vec<Action> {
        if self.applied {
            return Vec::new();
        }
        self.applied = true;
        shrinks_then_grows(cluster, &self.targets, self.online_count)
    }
}
