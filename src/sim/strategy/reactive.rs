//! `reactive`: the Kubernetes HorizontalPodAutoscaler on each online workload as a competent
//! user configures it for the same policy: a target utilization of `1 / (1 + headroom)`, i.e. a
//! target of `perReplica / (1 + headroom)` per pod (the same headroom tideshift plans with), and
//! batch given whatever the online replicas leave (as with a higher PriorityClass for online
//! pods).
//!
//! The HPA algorithm (kube-controller-manager, `autoscaling/v2` defaults): every 15 s,
//! `ratio = (demand / ready pods) / target`; no change within 10% tolerance; on a scale-up,
//! pods not yet ready count as serving nothing and the ratio is checked again; then
//! `desired = ceil(ratio × pods)`, at most `max(2 × current, current + 4)` per sync; a
//! scale-down takes the highest recommendation of the last 5 minutes (stabilization).
//! Unknown demand (a gap) leaves the workload as it is.

use std::collections::VecDeque;

use super::{Action, Strategy, shrinks_then_grows, with_batch_fill};
use crate::sim::cluster::Cluster;
use crate::sim::scenario::{HPA_SYNC_SECONDS, Scenario};

pub const TOLERANCE: f64 = 0.1;
pub const SCALE_DOWN_STABILIZATION: i64 = 300;

pub struct Reactive {
    scenario: std::sync::Arc<Scenario>,
    /// Per online workload: (time, recommendation) over the stabilization window.
    recommendations: Vec<VecDeque<(i64, u32)>>,
    next_sync: i64,
}

impl Reactive {
    pub fn new(scenario: std::sync::Arc<Scenario>) -> Self {
        let recommendations = vec![VecDeque::new(); scenario.online.len()];
        let next_sync = scenario.start;
        Self {
            scenario,
            recommendations,
            next_sync,
        }
    }
}

/// The HPA's target per pod for a workload: `perReplica` at a target utilization of
/// `1 / (1 + headroom)`. A target at `perReplica` itself (100% utilization) would leave no room
/// for the tolerance and the sync delay, and every rising ramp would be a violation.
pub fn target_per_pod(per_replica: f64, headroom: f64) -> f64 {
    let headroom = if headroom.is_finite() && headroom > 0.0 {
        headroom
    } else {
        0.0
    };
    per_replica / (1.0 + headroom)
}

/// One HPA sync for one workload: the raw recommendation before stabilization.
pub fn recommend(demand: f64, target: f64, current: u32, ready: u32, min: u32, max: u32) -> u32 {
    let needed = (demand / target - 1e-9).ceil().max(0.0) as u32;
    let raw = if ready == 0 {
        // No pod reports a metric yet: only scale up if the pods asked for cannot cover it.
        if needed > current { needed } else { current }
    } else {
        let ratio = demand / (f64::from(ready) * target);
        if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else if ratio > 1.0 {
            // Pods still starting count as serving nothing, over all the pods asked for.
            let ratio_all = demand / (f64::from(current.max(ready)) * target);
            if ratio_all <= 1.0 + TOLERANCE {
                current
            } else {
                needed
            }
        } else {
            needed
        }
    };
    let scale_up_limit = (current.saturating_mul(2)).max(current + 4);
    raw.min(scale_up_limit).clamp(min, max)
}

impl Strategy for Reactive {
    fn name(&self) -> &'static str {
        "reactive"
    }

    fn decide(&mut self, now: i64, cluster: &Cluster, observed: &[Option<f64>]) -> Vec<Action> {
        if now < self.next_sync {
            return Vec::new();
        }
        self.next_sync = now + HPA_SYNC_SECONDS;
        let scenario = &self.scenario;
        let mut online = Vec::with_capacity(scenario.online.len());
        for (w, spec) in scenario.online.iter().enumerate() {
            let current = cluster.spec(w);
            let Some(demand) = observed[w] else {
                // First sync without a metric: start at min, as a new HPA target would.
                online.push(if current == 0 { spec.min } else { current });
                continue;
            };
            let rec = recommend(
                demand,
                target_per_pod(spec.per_replica, spec.headroom),
                current,
                cluster.ready(w),
                spec.min,
                spec.max,
            );
            let window = &mut self.recommendations[w];
            window.push_back((now, rec));
            while window
                .front()
                .is_some_and(|&(t, _)| t <= now - SCALE_DOWN_STABILIZATION)
            {
                window.pop_front();
            }
            let highest_recent = window.iter().map(|&(_, r)| r).max().unwrap_or(rec);
            let desired = if rec > current {
                rec
            } else {
                current.min(highest_recent)
            };
            online.push(desired);
        }
        let targets = with_batch_fill(scenario, &online);
        shrinks_then_grows(cluster, &targets, scenario.online.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_leaves_the_policys_headroom() {
        assert!((target_per_pod(500.0, 0.25) - 400.0).abs() < 1e-9);
        assert_eq!(target_per_pod(500.0, 0.0), 500.0);
        assert_eq!(target_per_pod(500.0, f64::NAN), 500.0);
    }

    #[test]
    fn hpa_ignores_changes_within_tolerance() {
        assert_eq!(recommend(1_080.0, 100.0, 10, 10, 1, 100), 10);
        assert_eq!(recommend(920.0, 100.0, 10, 10, 1, 100), 10);
        assert_eq!(recommend(1_200.0, 100.0, 10, 10, 1, 100), 12);
        assert_eq!(recommend(500.0, 100.0, 10, 10, 1, 100), 5);
    }

    #[test]
    fn hpa_counts_starting_pods_as_serving_nothing_before_scaling_up_again() {
        // 10 asked, 6 ready: per ready pod the load is high, but over all 10 it is fine.
        assert_eq!(recommend(1_000.0, 100.0, 10, 6, 1, 100), 10);
        assert_eq!(recommend(1_500.0, 100.0, 10, 6, 1, 100), 15);
    }

    #[test]
    fn hpa_scale_up_rate_and_bounds_hold() {
        assert_eq!(recommend(10_000.0, 100.0, 3, 3, 1, 1_000), 7);
        assert_eq!(recommend(10_000.0, 100.0, 10, 10, 1, 1_000), 20);
        assert_eq!(recommend(10_000.0, 100.0, 10, 10, 1, 15), 15);
        assert_eq!(recommend(0.0, 100.0, 10, 10, 2, 15), 2);
    }
}
