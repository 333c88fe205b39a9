//! The four ways of splitting the capacity that one simulation compares, over the same demand
//! on the same cluster model.

pub mod reactive;
pub mod static_split;

use crate::plan::Resources;

use super::cluster::Cluster;
use super::scenario::{OfflineSpec, Scenario};

/// A replica count to set on a workload (index into the simulated cluster).
pub type Action = (usize, u32);

pub trait Strategy: Send {
    fn name(&self) -> &'static str;
    /// Called on every tick of the simulated clock; returns replica counts to set, in the
    /// order they are applied (every shrink before any grow). `observed`: each online
    /// workload's demand now, `None` when unknown.
    fn decide(&mut self, now: i64, cluster: &Cluster, observed: &[Option<f64>]) -> Vec<Action>;
    /// The forecast band (lower, upper) of the online demand at `t`, in replicas summed over
    /// the online workloads, from the latest forecast made before `t`. For plots.
    fn band_at(&self, _t: i64) -> Option<(f64, f64)> {
        None
    }
}

/// Order target replica counts as actions: shrinks (offline first), then grows.
pub fn shrinks_then_grows(cluster: &Cluster, targets: &[u32], online_count: usize) -> Vec<Action> {
    let mut shrinks: Vec<Action> = Vec::new();
    let mut grows: Vec<Action> = Vec::new();
    let order = (online_count..targets.len()).chain(0..online_count);
    for w in order {
        let current = cluster.spec(w);
        if targets[w] < current {
            shrinks.push((w, targets[w]));
        } else if targets[w] > current {
            grows.push((w, targets[w]));
        }
    }
    // Online grows first among grows, so freed room goes to online before batch takes it.
    grows.sort_by_key(|&(w, _)| usize::from(w >= online_count));
    shrinks.extend(grows);
    shrinks
}

/// The baselines' batch split: what the online pods leave of the capacity goes to offline
/// workloads by weight (water-filling one whole replica at a time to the workload with the
/// fewest cores per unit of weight), within min/max. Minimums come first while they fit.
pub fn fill_offline(free: Resources, offline: &[OfflineSpec]) -> Vec<u32> {
    let mut left = free;
    let mut replicas = vec![0u32; offline.len()];
    let fits = |left: Resources, pod: Resources| {
        pod.cpu <= left.cpu + 1e-9 && pod.memory <= left.memory + 1e-9
    };
    let take = |left: &mut Resources, pod: Resources| {
        left.cpu -= pod.cpu;
        left.memory -= pod.memory;
    };
    for (k, w) in offline.iter().enumerate() {
        while replicas[k] < w.min && fits(left, w.pod) {
            take(&mut left, w.pod);
            replicas[k] += 1;
        }
    }
    loop {
        let next = offline
            .iter()
            .enumerate()
            .filter(|(k, w)| replicas[*k] < w.max && w.weight > 0.0 && fits(left, w.pod))
            .min_by(|(a, wa), (b, wb)| {
                let share =
                    |k: usize, w: &OfflineSpec| f64::from(replicas[k] + 1) * w.pod.cpu / w.weight;
                share(*a, wa).total_cmp(&share(*b, wb))
            })
            .map(|(k, _)| k);
        match next {
            Some(k) => {
                take(&mut left, offline[k].pod);
                replicas[k] += 1;
            }
            None => break,
        }
    }
    replicas
}

/// Replica targets for every workload: the given online counts, and the offline split of
/// what they leave.
pub fn with_batch_fill(scenario: &Scenario, online: &[u32]) -> Vec<u32> {
    let mut free = scenario.capacity;
    for (w, &n) in scenario.online.iter().zip(online) {
        free.cpu -= w.pod.cpu * f64::from(n);
        free.memory -= w.pod.memory * f64::from(n);
    }
    free.cpu = free.cpu.max(0.0);
    free.memory = free.memory.max(0.0);
    let mut targets = online.to_vec();
    targets.extend(fill_offline(free, &scenario.offline));
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(name: &str, cpu: f64, min: u32, max: u32, weight: f64) -> OfflineSpec {
        OfflineSpec {
            name: name.into(),
            pod: Resources {
                cpu,
                memory: cpu * 4.0,
            },
            min,
            max,
            weight,
        }
    }

    #[test]
    fn batch_fill_splits_by_weight_within_limits() {
        let free = Resources {
            cpu: 30.0,
            memory: 120.0,
        };
        let split = fill_offline(
            free,
            &[offline("a", 2.0, 0, 40, 2.0), offline("b", 1.0, 0, 40, 1.0)],
        );
        assert_eq!(
            split,
            vec![10, 10],
            "20 cores by weight 2 and 10 by weight 1"
        );
        let capped = fill_offline(
            free,
            &[offline("a", 2.0, 0, 3, 2.0), offline("b", 1.0, 2, 40, 1.0)],
        );
        assert_eq!(capped, vec![3, 24]);
        let none = fill_offline(Resources::default(), &[offline("a", 2.0, 1, 3, 1.0)]);
        assert_eq!(none, vec![0], "minimums only while they fit");
    }
}
