//! The simulated clock: one strategy over the scenario's demand on the cluster model, with
//! the scores (SLO, batch throughput, actions) and a timeline for plots.

use serde::Serialize;

use super::cluster::{Cluster, PodTemplate};
use super::scenario::Scenario;
use super::strategy::Strategy;

/// The figures a strategy is judged by, over the scored window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Workload-minutes in which an online workload's demand exceeded its ready replicas ×
    /// `perReplica` at some instant of the minute (summed over online workloads).
    pub slo_violation_minutes: u64,
    /// Demand not served (above ready capacity) over all demand, 0..1.
    pub unserved_fraction: f64,
    /// CPU core-hours of running (ready) offline pods.
    pub batch_core_hours: f64,
    /// Replica-count changes written to workloads.
    pub scale_actions: u64,
    /// Most online pods holding capacity at once.
    pub peak_online_replicas: u32,
}

/// Accumulates [`Scores`] tick by tick.
#[derive(Debug)]
pub struct Ledger {
    scores: Scores,
    unserved: f64,
    total: f64,
    batch_core_seconds: f64,
    minute: i64,
    violated_this_minute: Vec<bool>,
}

impl Ledger {
    pub fn new(online_count: usize) -> Self {
        Self {
            scores: Scores::default(),
            unserved: 0.0,
            total: 0.0,
            batch_core_seconds: 0.0,
            minute: i64::MIN,
            violated_this_minute: vec![false; online_count],
        }
    }

    /// Score the interval `[now, now + dt)` with the cluster as it is after this tick's
    /// actions. `served_per_replica[w]` is the online workload's `perReplica`.
    pub fn record(
        &mut self,
        now: i64,
        dt: i64,
        demand: &[Option<f64>],
        per_replica: &[f64],
        cluster: &Cluster,
        offline_cpu: &[(usize, f64)],
    ) {
        let minute = now.div_euclid(60);
        if minute != self.minute {
            self.flush_minute();
            self.minute = minute;
        }
        let seconds = dt as f64;
        let mut online_pods = 0;
        for (w, (d, per)) in demand.iter().zip(per_replica).enumerate() {
            online_pods += cluster.scheduled(w);
            let Some(d) = *d else { continue };
            let capacity = f64::from(cluster.ready(w)) * per;
            self.total += d * seconds;
            if d > capacity * (1.0 + 1e-9) {
                self.unserved += (d - capacity) * seconds;
                self.violated_this_minute[w] = true;
            }
        }
        self.scores.peak_online_replicas = self.scores.peak_online_replicas.max(online_pods);
        for &(w, cpu) in offline_cpu {
            self.batch_core_seconds += f64::from(cluster.ready(w)) * cpu * seconds;
        }
    }

    fn flush_minute(&mut self) {
        for violated in &mut self.violated_this_minute {
            if *violated {
                self.scores.slo_violation_minutes += 1;
                *violated = false;
            }
        }
    }

    pub fn count_action(&mut self) {
        self.scores.scale_actions += 1;
    }

    pub fn finish(mut self) -> Scores {
        self.flush_minute();
        self.scores.unserved_fraction = if self.total > 0.0 {
            self.unserved / self.total
        } else {
            0.0
        };
        self.scores.batch_core_hours = self.batch_core_seconds / 3_600.0;
        self.scores
    }
}

/// What a strategy did over time, averaged into buckets of `step` seconds, for plots.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub start: i64,
    pub step: i64,
    /// Online demand in replicas (demand / perReplica, summed over online workloads).
    pub need: Vec<f32>,
    /// Ready online replicas, summed.
    pub online_ready: Vec<f32>,
    /// Ready offline replicas, summed.
    pub batch_ready: Vec<f32>,
    /// Forecast band in replicas (NaN where the strategy has none).
    pub band_lower: Vec<f32>,
    pub band_upper: Vec<f32>,
}

#[derive(Default)]
struct Bucket {
    count: u32,
    need: f64,
    need_count: u32,
    online: f64,
    batch: f64,
    lower: f64,
    upper: f64,
    band_count: u32,
}

impl Timeline {
    fn push(&mut self, b: &Bucket) {
        let mean = |sum: f64, n: u32| {
            if n == 0 {
                f32::NAN
            } else {
                (sum / f64::from(n)) as f32
            }
        };
        self.need.push(mean(b.need, b.need_count));
        self.online_ready.push(mean(b.online, b.count));
        self.batch_ready.push(mean(b.batch, b.count));
        self.band_lower.push(mean(b.lower, b.band_count));
        self.band_upper.push(mean(b.upper, b.band_count));
    }
}

/// Which timelines to keep: the whole scored window coarsely, and a zoom window finely.
#[derive(Clone, Copy, Debug)]
pub struct TimelinePlan {
    pub step: i64,
    pub zoom_from: i64,
    pub zoom_to: i64,
    pub zoom_step: i64,
}

/// Averages tick samples into a timeline's buckets.
struct Recorder {
    timeline: Timeline,
    end: i64,
    bucket: Bucket,
    bucket_end: i64,
}

struct Sample {
    need: Option<f64>,
    online: f64,
    batch: f64,
    band: Option<(f64, f64)>,
}

impl Recorder {
    fn new(from: i64, to: i64, step: i64) -> Self {
        Self {
            timeline: Timeline {
                start: from,
                step,
                ..Timeline::default()
            },
            end: to,
            bucket: Bucket::default(),
            bucket_end: from + step,
        }
    }

    fn wants(&self, now: i64) -> bool {
        now >= self.timeline.start && now < self.end
    }

    fn add(&mut self, now: i64, sample: &Sample) {
        while now >= self.bucket_end {
            self.timeline.push(&self.bucket);
            self.bucket = Bucket::default();
            self.bucket_end += self.timeline.step;
        }
        let b = &mut self.bucket;
        b.count += 1;
        if let Some(need) = sample.need {
            b.need += need;
            b.need_count += 1;
        }
        b.online += sample.online;
        b.batch += sample.batch;
        if let Some((lower, upper)) = sample.band {
            b.lower += lower;
            b.upper += upper;
            b.band_count += 1;
        }
    }

    fn finish(mut self) -> Timeline {
        if self.bucket.count > 0 {
            self.timeline.push(&self.bucket);
        }
        self.timeline
    }
}

pub struct Outcome {
    pub name: &'static str,
    pub scores: Scores,
    /// The whole scored window.
    pub timeline: Timeline,
    /// The zoom window of the [`TimelinePlan`], finer.
    pub zoom: Timeline,
}

/// Run one strategy over the whole scenario. `progress` is called with the number of ticks
/// done since the last call, every few thousand ticks.
pub fn run(
    scenario: &Scenario,
    strategy: &mut dyn Strategy,
    plan: &TimelinePlan,
    progress: &(dyn Fn(u64) + Sync),
) -> Outcome {
    let online_count = scenario.online.len();
    let mut templates: Vec<PodTemplate> = scenario
        .online
        .iter()
        .map(|w| PodTemplate {
            requests: w.pod,
            startup: w.startup,
            priority: 1_000_000 + i64::from(w.priority),
        })
        .collect();
    templates.extend(scenario.offline.iter().map(|w| PodTemplate {
        requests: w.pod,
        startup: 0,
        priority: 0,
    }));
    let mut cluster = Cluster::new(scenario.capacity, templates);
    let per_replica: Vec<f64> = scenario.online.iter().map(|w| w.per_replica).collect();
    let offline_cpu: Vec<(usize, f64)> = scenario
        .offline
        .iter()
        .enumerate()
        .map(|(k, w)| (scenario.offline_index(k), w.pod.cpu))
        .collect();
    let mut ledger = Ledger::new(online_count);
    let mut full = Recorder::new(
        scenario.scored_from,
        scenario.end,
        plan.step.max(scenario.tick),
    );
    let mut zoom = Recorder::new(
        plan.zoom_from,
        plan.zoom_to,
        plan.zoom_step.max(scenario.tick),
    );
    let mut observed = vec![None; online_count];
    let mut since_report = 0u64;

    let mut now = scenario.start;
    while now < scenario.end {
        cluster.advance(now);
        for (w, d) in scenario.demand.iter().enumerate() {
            observed[w] = match d {
                Some(d) => d.at(now),
                None => Some(0.0),
            };
        }
        let scored = now >= scenario.scored_from;
        for (w, replicas) in strategy.decide(now, &cluster, &observed) {
            if cluster.set_replicas(w, replicas, now) && scored {
                ledger.count_action();
            }
        }
        let dt = scenario.tick.min(scenario.end - now);
        if scored {
            ledger.record(now, dt, &observed, &per_replica, &cluster, &offline_cpu);
            let in_zoom = zoom.wants(now);
            if full.wants(now) || in_zoom {
                let sample = Sample {
                    need: observed
                        .iter()
                        .zip(&per_replica)
                        .map(|(d, p)| d.map(|d| d / p))
                        .sum(),
                    online: (0..online_count).map(|w| f64::from(cluster.ready(w))).sum(),
                    batch: offline_cpu
                        .iter()
                        .map(|&(w, _)| f64::from(cluster.ready(w)))
                        .sum(),
                    band: strategy.band_at(now),
                };
                full.add(now, &sample);
                if in_zoom {
                    zoom.add(now, &sample);
                }
            }
        }
        since_report += 1;
        if since_report == 4_096 {
            progress(since_report);
            since_report = 0;
        }
        now += scenario.tick;
    }
    progress(since_report);
    Outcome {
        name: strategy.name(),
        scores: ledger.finish(),
        timeline: full.finish(),
        zoom: zoom.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Resources;

    fn one_workload_cluster() -> Cluster {
        Cluster::new(
            Resources {
                cpu: 10.0,
                memory: 10.0,
            },
            vec![
                PodTemplate {
                    requests: Resources {
                        cpu: 1.0,
                        memory: 1.0,
                    },
                    startup: 30,
                    priority: 1,
                },
                PodTemplate {
                    requests: Resources {
                        cpu: 2.0,
                        memory: 1.0,
                    },
                    startup: 0,
                    priority: 0,
                },
            ],
        )
    }

    #[test]
    fn a_minute_with_any_shortfall_counts_once_and_unserved_is_a_fraction() {
        let mut cluster = one_workload_cluster();
        cluster.set_replicas(0, 2, 0);
        cluster.advance(30);
        let mut ledger = Ledger::new(1);
        let per = [100.0];
        // Minute 0: 4 ticks, one above the 200 the 2 ready replicas serve.
        for (i, d) in [150.0, 250.0, 150.0, 150.0].into_iter().enumerate() {
            ledger.record(60 + i as i64 * 15, 15, &[Some(d)], &per, &cluster, &[]);
        }
        // Minute 1: all served; minute 2: two shortfalls, still one minute.
        for i in 0..4 {
            ledger.record(120 + i * 15, 15, &[Some(200.0)], &per, &cluster, &[]);
        }
        for i in 0..4 {
            ledger.record(180 + i * 15, 15, &[Some(300.0)], &per, &cluster, &[]);
        }
        // Unknown demand is neither served nor unserved.
        ledger.record(240, 15, &[None], &per, &cluster, &[]);
        let scores = ledger.finish();
        assert_eq!(scores.slo_violation_minutes, 2);
        let total = (150.0 * 3.0 + 250.0 + 800.0 + 1200.0) * 15.0;
        let unserved = (50.0 + 4.0 * 100.0) * 15.0;
        assert!((scores.unserved_fraction - unserved / total).abs() < 1e-12);
        assert_eq!(scores.peak_online_replicas, 2);
    }

    #[test]
    fn starting_pods_do_not_serve_and_batch_counts_core_hours_of_ready_pods() {
        let mut cluster = one_workload_cluster();
        cluster.set_replicas(0, 1, 0);
        cluster.set_replicas(1, 3, 0);
        let mut ledger = Ledger::new(1);
        ledger.record(0, 15, &[Some(50.0)], &[100.0], &cluster, &[(1, 2.0)]);
        let scores = ledger.finish();
        assert_eq!(scores.slo_violation_minutes, 1, "the pod is still starting");
        assert!((scores.batch_core_hours - 3.0 * 2.0 * 15.0 / 3_600.0).abs() < 1e-12);
    }
}
