//! A discrete-time cluster: a fixed capacity, and per workload a replica count (spec) and the
//! pods that carry it. A pod is pending until it fits, then starting for the workload's
//! `startup`, then ready. Removing pods frees their requests at once. Nothing is overcommitted:
//! a pod that does not fit stays pending until room is made.

use std::collections::VecDeque;

use crate::plan::Resources;

/// Requests may be written as decimals (`0.1` cores) whose sums drift by a few ulps.
const FIT_EPSILON: f64 = 1e-9;

/// What the cluster needs to know about one workload's pods.
#[derive(Clone, Debug)]
pub struct PodTemplate {
    pub requests: Resources,
    /// Seconds from being scheduled to being ready.
    pub startup: i64,
    /// Larger goes first when pending pods compete for room (online above offline).
    pub priority: i64,
}

#[derive(Clone, Debug, Default)]
struct Pods {
    spec: u32,
    ready: u32,
    /// When each starting pod becomes ready, oldest first.
    starting: VecDeque<i64>,
    pending: u32,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    capacity: Resources,
    used: Resources,
    templates: Vec<PodTemplate>,
    pods: Vec<Pods>,
    /// Workload indices by descending priority, then declaration order (stable).
    schedule_order: Vec<usize>,
}

impl Cluster {
    pub fn new(capacity: Resources, templates: Vec<PodTemplate>) -> Self {
        let mut schedule_order: Vec<usize> = (0..templates.len()).collect();
        schedule_order.sort_by_key(|&i| std::cmp::Reverse(templates[i].priority));
        Self {
            capacity,
            used: Resources::default(),
            pods: vec![Pods::default(); templates.len()],
            templates,
            schedule_order,
        }
    }

    pub fn capacity(&self) -> Resources {
        self.capacity
    }
    pub fn used(&self) -> Resources {
        self.used
    }
    /// Replicas asked for (the workload's `spec.replicas`).
    pub fn spec(&self, workload: usize) -> u32 {
        self.pods[workload].spec
    }
    pub fn ready(&self, workload: usize) -> u32 {
        self.pods[workload].ready
    }
    /// Pods holding capacity: ready or starting.
    pub fn scheduled(&self, workload: usize) -> u32 {
        self.pods[workload].ready + self.pods[workload].starting.len() as u32
    }
    pub fn pending(&self, workload: usize) -> u32 {
        self.pods[workload].pending
    }

    /// Set a workload's replica count. A shrink removes pending pods first, then the
    /// youngest starting ones, then ready ones, and frees their requests at once. A grow
    /// schedules what fits now; the rest waits pending. Returns whether the spec changed.
    pub fn set_replicas(&mut self, workload: usize, replicas: u32, now: i64) -> bool {
        let changed = self.pods[workload].spec != replicas;
        self.pods[workload].spec = replicas;
        let requests = self.templates[workload].requests;
        let pods = &mut self.pods[workload];
        let mut total = pods.ready + pods.starting.len() as u32 + pods.pending;
        let mut freed = 0u32;
        while total > replicas {
            if pods.pending > 0 {
                pods.pending -= 1;
            } else if pods.starting.pop_back().is_some() {
                freed += 1;
            } else {
                pods.ready -= 1;
                freed += 1;
            }
            total -= 1;
        }
        if total < replicas {
            pods.pending += replicas - total;
        }
        self.used.cpu -= requests.cpu * f64::from(freed);
        self.used.memory -= requests.memory * f64::from(freed);
        if freed > 0 {
            // The scheduler places waiting pods as soon as room appears, by priority.
            self.schedule_all(now);
        } else {
            self.schedule_workload(workload, now);
        }
        changed
    }

    /// Move time forward to `now`: starting pods whose startup has passed become ready, and
    /// pending pods are placed where room has appeared, highest priority first.
    pub fn advance(&mut self, now: i64) {
        for pods in &mut self.pods {
            while pods.starting.front().is_some_and(|&at| at <= now) {
                pods.starting.pop_front();
                pods.ready += 1;
            }
        }
        self.schedule_all(now);
    }

    fn schedule_all(&mut self, now: i64) {
        for k in 0..self.schedule_order.len() {
            let workload = self.schedule_order[k];
            self.schedule_workload(workload, now);
        }
    }

    fn schedule_workload(&mut self, workload: usize, now: i64) {
        let template = &self.templates[workload];
        let pods = &mut self.pods[workload];
        while pods.pending > 0 {
            let cpu = self.used.cpu + template.requests.cpu;
            let memory = self.used.memory + template.requests.memory;
            if cpu > self.capacity.cpu + FIT_EPSILON || memory > self.capacity.memory + FIT_EPSILON
            {
                break;
            }
            self.used = Resources { cpu, memory };
            pods.pending -= 1;
            if template.startup <= 0 {
                pods.ready += 1;
            } else {
                pods.starting.push_back(now + template.startup);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(cpu: f64, startup: i64, priority: i64) -> PodTemplate {
        PodTemplate {
            requests: Resources {
                cpu,
                memory: cpu * 4.0,
            },
            startup,
            priority,
        }
    }

    fn cluster(cpu: f64) -> Cluster {
        Cluster::new(
            Resources {
                cpu,
                memory: cpu * 4.0,
            },
            vec![template(1.0, 45, 10), template(1.0, 0, 0)],
        )
    }

    #[test]
    fn new_pods_are_ready_only_after_startup() {
        let mut c = cluster(10.0);
        c.set_replicas(0, 3, 0);
        assert_eq!((c.ready(0), c.scheduled(0)), (0, 3));
        c.advance(30);
        assert_eq!(c.ready(0), 0);
        c.advance(45);
        assert_eq!(c.ready(0), 3);
        // A workload without startup is ready at once.
        c.set_replicas(1, 2, 45);
        assert_eq!(c.ready(1), 2);
    }

    #[test]
    fn nothing_is_overcommitted_and_pending_pods_wait_for_room() {
        let mut c = cluster(4.0);
        c.set_replicas(1, 3, 0);
        c.set_replicas(0, 3, 0);
        assert_eq!(c.scheduled(0), 1);
        assert_eq!(c.pending(0), 2);
        assert!(c.used().cpu <= 4.0);
        c.advance(100);
        assert_eq!(
            c.scheduled(0),
            1,
            "no room appeared, so nothing new is placed"
        );
        // Room appears: the pending online pods take it before anything else.
        c.set_replicas(1, 0, 100);
        assert_eq!(c.scheduled(0), 3);
        assert_eq!(c.ready(0), 1);
        c.advance(145);
        assert_eq!(c.ready(0), 3);
    }

    #[test]
    fn shrink_before_grow_lets_the_grow_fit_in_the_same_step() {
        let mut grow_first = cluster(4.0);
        grow_first.set_replicas(1, 4, 0);
        grow_first.set_replicas(0, 2, 10);
        assert_eq!(
            (grow_first.scheduled(0), grow_first.pending(0)),
            (0, 2),
            "a grow applied before the shrink waits pending"
        );
        grow_first.set_replicas(1, 2, 10);
        assert_eq!(
            grow_first.scheduled(0),
            2,
            "placed once the shrink frees room"
        );

        let mut shrink_first = cluster(4.0);
        shrink_first.set_replicas(1, 4, 0);
        shrink_first.set_replicas(1, 2, 10);
        shrink_first.set_replicas(0, 2, 10);
        assert_eq!(shrink_first.scheduled(0), 2);
        shrink_first.advance(55);
        assert_eq!(shrink_first.ready(0), 2);
    }

    #[test]
    fn removal_takes_pending_then_starting_then_ready_pods_at_once() {
        let mut c = cluster(3.0);
        c.set_replicas(0, 2, 0);
        c.advance(45);
        c.set_replicas(0, 5, 50);
        assert_eq!((c.ready(0), c.scheduled(0), c.pending(0)), (2, 3, 2));
        c.set_replicas(0, 3, 60);
        assert_eq!((c.ready(0), c.scheduled(0), c.pending(0)), (2, 3, 0));
        c.set_replicas(0, 1, 61);
        assert_eq!((c.ready(0), c.scheduled(0), c.pending(0)), (1, 1, 0));
        assert!((c.used().cpu - 1.0).abs() < 1e-12);
        assert!(!c.set_replicas(0, 1, 62), "same count is not a change");
    }

    #[test]
    fn memory_limits_placement_too() {
        let mut c = Cluster::new(
            Resources {
                cpu: 100.0,
                memory: 8.0,
            },
            vec![template(1.0, 0, 0)],
        );
        c.set_replicas(0, 5, 0);
        assert_eq!(c.scheduled(0), 2);
        assert_eq!(c.pending(0), 3);
    }
}
