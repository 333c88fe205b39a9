//! Looking ahead over the whole forecast horizon: each online workload's peak, and the
//! forecast shortfalls (demand the capacity cannot serve), reported as early as the forecast
//! sees them so that someone can act before they happen.

use super::capacity::{Claim, allocate_online};
use super::online::{Decision, replicas_for};
use super::{ForecastShortfall, PeakForecast, Resources};
use crate::forecast::Forecast;

pub(crate) struct Scan {
    pub shortfalls: Vec<ForecastShortfall>,
    /// Per decision, in the same order.
    pub peaks: Vec<Option<PeakForecast>>,
    pub next_peak: Option<PeakForecast>,
}

/// The upper band at time `at`, if the forecast covers it with a usable value.
fn upper_at(forecast: &Forecast, at: i64) -> Option<f64> {
    if forecast.step <= 0 || at < forecast.start {
        return None;
    }
    let i = usize::try_from((at - forecast.start) / forecast.step).ok()?;
    forecast
        .upper
        .get(i)
        .copied()
        .filter(|v| v.is_finite())
        .map(|v| v.max(0.0))
}

#[derive(Clone, Copy)]
struct Worst {
    missing: u32,
    at: i64,
    unserved: f64,
}

pub(crate) fn scan(
    capacity: Resources,
    decisions: &[Decision<'_>],
    grants: &[u32],
    order: &[usize],
    now: i64,
) -> Scan {
    let peaks: Vec<Option<PeakForecast>> = decisions.iter().map(|d| peak(d, now)).collect();
    let next_peak = peaks
        .iter()
        .flatten()
        .fold(None::<&PeakForecast>, |best, p| match best {
            Some(b) if (b.replicas, -b.at) >= (p.replicas, -p.at) => Some(b),
            _ => Some(p),
        })
        .cloned();

    let mut worst: Vec<Option<Worst>> = vec![None; decisions.len()];
    let mut consider = |i: usize, need: u32, grant: u32, demand: f64, at: i64| {
        let missing = need.saturating_sub(grant);
        if missing == 0 || worst[i].is_some_and(|w| w.missing >= missing) {
            return;
        }
        let served = f64::from(grant) * decisions[i].per_replica;
        worst[i] = Some(Worst {
            missing,
            at: at.max(now),
            unserved: (demand - served).max(0.0),
        });
    };

    // This cycle's own decision first: a shortfall now is the earliest there can be.
    for (i, (d, &grant)) in decisions.iter().zip(grants).enumerate() {
        consider(i, d.need, grant, d.demand.unwrap_or(0.0), now);
    }

    // Then every step ahead, on the grid of the first usable forecast (all online workloads
    // of a policy share the forecast settings). A workload without a value at a step keeps
    // what it needs now.
    if let Some(grid) = decisions.iter().find_map(|d| d.forecast) {
        let mut claims: Vec<Claim> = decisions
            .iter()
            .map(|d| Claim {
                pod: d.pod,
                min: d.min,
                need: d.need,
                want: d.need,
            })
            .collect();
        let mut demands = vec![0.0; decisions.len()];
        let mut step_grants = vec![0u32; decisions.len()];
        for k in 0..grid.upper.len() {
            let at = grid
                .start
                .saturating_add(grid.step.saturating_mul(k as i64));
            if at.saturating_add(grid.step) <= now {
                continue;
            }
            for ((claim, demand), d) in claims.iter_mut().zip(&mut demands).zip(decisions) {
                match d.forecast.and_then(|f| upper_at(f, at)) {
                    Some(v) => {
                        let need = replicas_for(v, d.per_replica, d.headroom).clamp(d.min, d.max);
                        claim.need = need;
                        claim.want = need;
                        *demand = v;
                    }
                    None => {
                        claim.need = d.need;
                        claim.want = d.need;
                        *demand = d.demand.unwrap_or(0.0);
                    }
                }
            }
            allocate_online(capacity, &claims, order, &mut step_grants);
            for (i, (claim, &grant)) in claims.iter().zip(&step_grants).enumerate() {
                consider(i, claim.need, grant, demands[i], at);
            }
        }
    }

    let mut shortfalls: Vec<ForecastShortfall> = worst
        .iter()
        .zip(decisions)
        .filter_map(|(w, d)| {
            w.map(|w| ForecastShortfall {
                workload: d.name.clone(),
                at: w.at,
                missing_replicas: w.missing,
                unserved_demand: w.unserved,
            })
        })
        .collect();
    // Stable: same time stays in policy order.
    shortfalls.sort_by_key(|s| s.at);

    Scan {
        shortfalls,
        peaks,
        next_peak,
    }
}

/// The highest upper-band demand from now to the end of the forecast (earliest on ties).
fn peak(d: &Decision<'_>, now: i64) -> Option<PeakForecast> {
    let f = d.forecast?;
    let mut best: Option<(f64, i64)> = None;
    for (k, &v) in f.upper.iter().enumerate() {
        let at = f.start.saturating_add(f.step.saturating_mul(k as i64));
        if at.saturating_add(f.step) <= now || !v.is_finite() {
            continue;
        }
        let v = v.max(0.0);
        if best.is_none_or(|(b, _)| v > b) {
            best = Some((v, at));
        }
    }
    best.map(|(demand, at)| PeakForecast {
        workload: d.name.clone(),
        at: at.max(now),
        demand,
        replicas: replicas_for(demand, d.per_replica, d.headroom).clamp(d.min, d.max),
    })
}
