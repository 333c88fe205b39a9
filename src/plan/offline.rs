//! Offline split: the capacity online leaves, shared by weight (water-filling on whole
//! replicas, each workload with its own pod requests and min/max).

use std::fmt::Write as _;

use super::{PlanInput, Resources, WorkloadPlan};
use crate::policy::ShiftPolicySpec;

/// Bisection steps for the water level: 2^-64 of the range is far below one replica.
const LEVEL_STEPS: usize = 64;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One offline workload's claim on what online leaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Claim {
    pub pod: Resources,
    pub min: u32,
    pub max: u32,
    pub weight: f64,
    /// Share of the total capacity one replica takes in its scarcer resource (dominant share):
    /// weights split this, so a memory-heavy job and a CPU-heavy one are compared fairly.
    pub share: f64,
}

/// How the split went for each workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub replicas: u32,
    /// Its `min` did not fit in what online leaves.
    pub min_yielded: bool,
}

/// Split `budget` among `claims` (policy order). Minimums first, in policy order, as far as
/// they fit (online need comes before any offline minimum); then water-filling by weight.
pub(crate) fn water_fill(budget: Resources, claims: &[Claim], out: &mut [Outcome]) {
    let mut free = budget;
    let mut any_yielded = false;
    for (o, c) in out.iter_mut().zip(claims) {
        let replicas = c.min.min(free.fits(c.pod));
        free = free.minus(c.pod.times(replicas));
        *o = Outcome {
            replicas,
            min_yielded: replicas < c.min,
        };
        any_yielded |= replicas < c.min;
    }
    if any_yielded {
        return;
    }
    // Every minimum fitted. Workloads that request nothing take nothing from anyone: they
    // get their max.
    let floor = |c: &Claim| -> u32 {
        if c.share <= 0.0 || c.share.is_nan() {
            c.max
        } else {
            c.min
        }
    };

    // Raise a common level (dominant share per unit of weight) as far as everything fits.
    let at_level = |level: f64, c: &Claim, floor: u32| -> u32 {
        if c.weight > 0.0 && c.share > 0.0 {
            let r = (level * c.weight / c.share).floor();
            let r = if r >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                r as u32
            };
            r.clamp(floor, c.max.max(floor))
        } else {
            floor
        }
    };
    let fits_at = |level: f64| -> bool {
        let mut used = Resources::default();
        for c in claims {
            used = used.plus(c.pod.times(at_level(level, c, floor(c))));
        }
        used.within(budget)
    };
    let top = claims
        .iter()
        .filter(|c| c.weight > 0.0 && c.share > 0.0)
        .map(|c| f64::from(c.max) * c.share / c.weight)
        .fold(0.0_f64, f64::max);
    let level = if fits_at(top) {
        top
    } else {
        let (mut lo, mut hi) = (0.0_f64, top);
        for _ in 0..LEVEL_STEPS {
            let mid = 0.5 * (lo + hi);
            if fits_at(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let mut free = budget;
    for (o, c) in out.iter_mut().zip(claims) {
        o.replicas = at_level(level, c, floor(c));
        free = free.minus(c.pod.times(o.replicas));
    }

    // Whole replicas leave crumbs under the level, and one resource may run out for one
    // workload while another still has room: hand out single replicas to whoever is furthest
    // below its share (Sainte-Laguë: the half replica keeps small workloads from always
    // losing the crumbs to large ones).
    loop {
        let mut best: Option<(usize, f64)> = None;
        for (i, (o, c)) in out.iter().zip(claims).enumerate() {
            if o.replicas >= c.max || free.fits(c.pod) == 0 {
                continue;
            }
            let key = if c.weight > 0.0 {
                (f64::from(o.replicas) + 0.5) * c.share / c.weight
            } else {
                f64::INFINITY
            };
            if best.is_none_or(|(_, k)| key < k) {
                best = Some((i, key));
            }
        }
        let Some((i, _)) = best else { break };
        out[i].replicas += 1;
        free = free.minus(claims[i].pod);
    }
}

/// Offline plans for the policy's offline workloads that have a state, in policy order.
pub(crate) fn plan_offline(
    spec: &ShiftPolicySpec,
    input: &PlanInput,
    budget: Resources,
) -> Vec<WorkloadPlan> {
    let capacity = input.capacity;
    let mut claims = Vec::with_capacity(spec.offline.len());
    let mut states = Vec::with_capacity(spec.offline.len());
    for w in &spec.offline {
        let Some(state) = input.offline.iter().find(|s| s.name == w.name) else {
            continue;
        };
        let min = w.replicas.min;
        claims.push(Claim {
            pod: state.pod,
            min,
            max: w.replicas.max.max(min),
            weight: if w.weight.is_finite() && w.weight > 0.0 {
                w.weight
            } else {
                0.0
            },
            share: dominant_share(state.pod, capacity),
        });
        states.push(state);
    }
    let mut outcomes = vec![
        Outcome {
            replicas: 0,
            min_yielded: false
        };
        claims.len()
    ];
    water_fill(budget, &claims, &mut outcomes);

    states
        .into_iter()
        .zip(&claims)
        .zip(&outcomes)
        .map(|((state, claim), outcome)| WorkloadPlan {
            name: state.name.clone(),
            current: state.current,
            desired: outcome.replicas,
            reason: reason(claim, outcome, state.current, budget),
            need: None,
            peak: None,
            untrusted: None,
            forecast_unusable: None,
        })
        .collect()
}

fn dominant_share(pod: Resources, capacity: Resources) -> f64 {
    let part = |request: f64, total: f64| {
        if request.is_nan() || request <= 0.0 {
            0.0
        } else if total > 0.0 {
            request / total
        } else {
            f64::INFINITY
        }
    };
    part(pod.cpu, capacity.cpu).max(part(pod.memory, capacity.memory))
}

fn reason(claim: &Claim, outcome: &Outcome, current: u32, budget: Resources) -> String {
    let mut s = String::with_capacity(96);
    let left = format!(
        "{:.1} cores / {:.1} GiB left by online",
        budget.cpu.max(0.0),
        budget.memory.max(0.0) / GIB
    );
    let _ = if outcome.min_yielded {
        write!(
            s,
            "min {} yields to online need: {} fit in {left}",
            claim.min, outcome.replicas
        )
    } else if outcome.replicas >= claim.max {
        write!(s, "at max {} ({left})", claim.max)
    } else if outcome.replicas < current {
        write!(
            s,
            "gives way to online: weight {} share of {left}",
            claim.weight
        )
    } else {
        write!(s, "weight {} share of {left}", claim.weight)
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(cpu: f64, min: u32, max: u32, weight: f64) -> Claim {
        let pod = Resources::new(cpu, cpu);
        Claim {
            pod,
            min,
            max,
            weight,
            share: dominant_share(pod, Resources::new(100.0, 100.0)),
        }
    }

    fn fill(budget: f64, claims: &[Claim]) -> Vec<Outcome> {
        let mut out = vec![
            Outcome {
                replicas: 0,
                min_yielded: false
            };
            claims.len()
        ];
        water_fill(Resources::new(budget, budget), claims, &mut out);
        out
    }

    fn replicas(out: &[Outcome]) -> Vec<u32> {
        out.iter().map(|o| o.replicas).collect()
    }

    #[test]
    fn splits_by_weight() {
        let out = fill(30.0, &[claim(1.0, 0, 100, 2.0), claim(1.0, 0, 100, 1.0)]);
        assert_eq!(replicas(&out), vec![20, 10]);
    }

    #[test]
    fn weights_split_capacity_not_replica_counts() {
        // Equal weights, one pod twice the size: about equal capacity, half the replicas
        // (the last core only fits the small pod).
        let out = fill(30.0, &[claim(2.0, 0, 100, 1.0), claim(1.0, 0, 100, 1.0)]);
        assert_eq!(replicas(&out), vec![7, 16]);
    }

    #[test]
    fn max_caps_and_the_rest_goes_to_others() {
        let out = fill(30.0, &[claim(1.0, 0, 5, 2.0), claim(1.0, 0, 100, 1.0)]);
        assert_eq!(replicas(&out), vec![5, 25]);
    }

    #[test]
    fn minimums_come_first_and_yield_when_they_do_not_fit() {
        let out = fill(30.0, &[claim(1.0, 10, 100, 1.0), claim(1.0, 0, 100, 10.0)]);
        assert_eq!(replicas(&out), vec![10, 20]);
        let out = fill(4.0, &[claim(1.0, 3, 100, 1.0), claim(1.0, 3, 100, 1.0)]);
        assert_eq!(replicas(&out), vec![3, 1]);
        assert!(!out[0].min_yielded);
        assert!(out[1].min_yielded);
        let out = fill(-5.0, &[claim(1.0, 3, 100, 1.0)]);
        assert_eq!(replicas(&out), vec![0]);
    }

    #[test]
    fn different_bottlenecks_still_fill_the_budget() {
        // One workload is CPU-heavy, the other memory-heavy: both resources get used.
        let cpu_heavy = Claim {
            pod: Resources::new(4.0, 1.0),
            min: 0,
            max: 100,
            weight: 1.0,
            share: 0.04,
        };
        let mem_heavy = Claim {
            pod: Resources::new(1.0, 4.0),
            min: 0,
            max: 100,
            weight: 1.0,
            share: 0.04,
        };
        let out = fill(100.0, &[cpu_heavy, mem_heavy]);
        assert_eq!(replicas(&out), vec![20, 20]);
    }

    #[test]
    fn zero_weight_gets_only_leftovers() {
        let out = fill(30.0, &[claim(1.0, 0, 100, 0.0), claim(1.0, 0, 20, 1.0)]);
        assert_eq!(replicas(&out), vec![10, 20]);
    }
}
