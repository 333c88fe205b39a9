//! Online need: the replicas the forecast band (or, failing that, the last plan and the
//! observed demand) calls for, and the scale-down guardrails applied to it.

use std::fmt::Write as _;

use statrs::distribution::{Binomial, DiscreteCDF};

use super::guardrails::{scale_down_allowance, stabilize};
use super::{OnlineMemory, OnlineState, Resources, secs};
use crate::forecast::{Forecast, ForecastMethod, RecentAccuracy};
use crate::policy::{MissingMetrics, OnlineWorkload};

/// A forecast is judged on the demand of the last `max(2 h, 8 steps)`: long enough that one
/// unforeseen burst does not condemn it, short enough that a broken one is caught within hours.
pub const TRUST_WINDOW_SECS: i64 = 2 * 3600;

/// The judged window of a forecast with steps of `step` seconds.
pub fn trust_window(step: i64) -> i64 {
    TRUST_WINDOW_SECS.max(8 * step.max(1))
}

/// A forecast is judged once this many of its times have an observed demand.
pub const MIN_JUDGED_POINTS: usize = 8;

/// A band at `quantile` is broken by the demand at `1 - quantile` of the times by design (5% at
/// 0.95, 40% at 0.6). A forecast is not planned on when the demand broke it at more than that
/// share plus this margin...
pub const MISSED_SHARE_MARGIN: f64 = 0.20;

/// ...and so often that a band that holds its quantile would break that often by chance less
/// than once in 10,000 judgements (a one-sided binomial test). A daemon judges every cycle, so
/// the chance per judgement must be small: without the test, a few unlucky misses among the
/// first judged times after a start (3 of 8 at quantile 0.9) took the forecast of a healthy
/// workload away, and pre-scaling with it, in 12% of starts. With it, about 0.05% of starts,
/// while a band the demand breaks at half the times is caught within 30 judged times
/// (`a_band_that_holds_its_quantile_is_rarely_distrusted_by_chance_and_a_broken_one_soon`).
pub const FALSE_DISTRUST_CHANCE: f64 = 1e-4;
/// A forecast made from demand that ends more than `2 x max(step, interval, 60 s)` before now
/// is stale: the demand since is unread, so it counts as missing data (`onMissingMetrics`),
/// not as a forecast to judge.
pub(crate) fn is_stale(forecast: &Forecast, now: i64, interval: i64) -> bool {
    let stale_after = 2 * forecast.step.max(interval).max(60);
    now.saturating_sub(forecast.start) > stale_after
}

/// Why no forecast sized an online workload this cycle (`Decision::forecast_unusable`), in
/// words for the status; `None` when one did, trusted or not.
fn forecast_unusable(
    state: &OnlineState,
    fresh: Option<&Forecast>,
    planned: bool,
    (now, lead): (i64, i64),
) -> Option<String> {
    if planned {
        return None;
    }
    Some(match (&state.forecast, fresh) {
        (None, _) => "no forecast".to_string(),
        (Some(f), None) => format!(
            "the forecast is stale: made on demand that ends {} s before now",
            now.saturating_sub(f.start.saturating_sub(f.step))
        ),
        (Some(_), Some(_)) => format!("the forecast has no usable value for the next {lead} s"),
    })
}

/// Why a fresh forecast should not be planned on, if it should not: the forecaster could not
/// check it (a fallback), or the demand keeps breaking its band. The workload is then sized on
/// observed demand through the scale-down guardrails, as an HPA would.
pub(crate) fn distrust(forecast: &Forecast, accuracy: Option<&RecentAccuracy>) -> Option<String> {
    if let ForecastMethod::Fallback { reason } = &forecast.method {
        return Some(format!("unchecked fallback forecast ({reason})"));
    }
    let judged = accuracy?;
    let expected = (1.0 - forecast.quantile).clamp(0.0, 1.0);
    let broken = judged.points >= MIN_JUDGED_POINTS
        && judged.missed_share() > expected + MISSED_SHARE_MARGIN
        && chance_of_as_many_misses(judged, expected) < FALSE_DISTRUST_CHANCE;
    broken.then(|| {
        format!(
            "demand was above the forecast band at {} of its last {} times ({:.0}% expected at \
             quantile {})",
            judged.missed,
            judged.points,
            100.0 * expected,
            forecast.quantile
        )
    })
}

/// The chance that a band broken at `expected` of the times is broken at `judged.missed` of
/// `judged.points` times or more.
fn chance_of_as_many_misses(judged: &RecentAccuracy, expected: f64) -> f64 {
    if judged.missed == 0 {
        return 1.0;
    }
    match Binomial::new(expected, judged.points as u64) {
        Ok(binomial) => binomial.sf(judged.missed as u64 - 1),
        // `expected` is clamped to [0, 1]: only a NaN quantile gets here, and `distrust` has
        // already refused it on the share (a comparison with NaN is false).
        Err(_) => 1.0,
    }
}

/// Seconds added to each workload's lead time on top of `startup` and `interval`: the write to
/// the API server, scheduling, and batch pods leaving before online pods can start. A
/// workload whose batch neighbours take longer to terminate should add that to `startup`.
pub const ACTUATION_ALLOWANCE_SECS: i64 = 15;

/// Float slack so that a demand of exactly `k * perReplica / (1 + headroom)` needs `k`
/// replicas, not `k + 1` because of rounding.
const NEED_SLACK: f64 = 1e-9;

/// Replicas that serve `demand` with `headroom` at `per_replica` each. Unusable demand (NaN,
/// negative) needs nothing; an unusable `per_replica` needs everything (`u32::MAX`, which the
/// caller clamps to the workload's max), the safe side for a latency-critical service.
pub fn replicas_for(demand: f64, per_replica: f64, headroom: f64) -> u32 {
    if demand.is_nan() || demand <= 0.0 {
        return 0;
    }
    if per_replica.is_nan() || per_replica <= 0.0 {
        return u32::MAX;
    }
    let headroom = if headroom.is_finite() && headroom > 0.0 {
        headroom
    } else {
        0.0
    };
    let replicas = (demand * (1.0 + headroom) / per_replica - NEED_SLACK).ceil();
    if replicas >= f64::from(u32::MAX) {
        u32::MAX
    } else if replicas <= 0.0 {
        0
    } else {
        replicas as u32
    }
}

/// The highest finite upper-band value among the forecast steps that overlap
/// `[now, now + lead]`, and the first step to come in any case, with the time of its step (the
/// earliest on ties). `None` when no such step has a usable value: a stale, empty or all-NaN
/// forecast is missing data, not zero demand.
///
/// The first step counts even when it starts after `now + lead`: a lead shorter than the step
/// (a 10 s startup on a 1-minute forecast) would otherwise fall between the last observed
/// step and the first forecast one for most of each step, and the forecast would go unused
/// then. Planning for the next step up to a step early is the side that never under-serves.
pub(crate) fn window_peak(forecast: &Forecast, now: i64, lead: i64) -> Option<(f64, i64)> {
    if forecast.step <= 0 {
        return None;
    }
    let end = now.saturating_add(lead).max(forecast.start);
    let mut best: Option<(f64, i64)> = None;
    for (i, &value) in forecast.upper.iter().enumerate() {
        let at = forecast
            .start
            .saturating_add(forecast.step.saturating_mul(i as i64));
        if at.saturating_add(forecast.step) <= now {
            continue;
        }
        if at > end {
            break;
        }
        if !value.is_finite() {
            continue;
        }
        let value = value.max(0.0);
        if best.is_none_or(|(b, _)| value > b) {
            best = Some((value, at));
        }
    }
    best
}

/// What the whole cycle shares.
pub(crate) struct Context {
    pub now: i64,
    pub interval: i64,
    pub elapsed: i64,
    pub stabilization: i64,
    pub max_percent_per_minute: f64,
    pub on_missing: MissingMetrics,
}

/// Why an online workload's `want` is what it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Why {
    Forecast {
        demand: f64,
        at: i64,
    },
    Observed {
        demand: f64,
    },
    Stabilization {
        held: u32,
    },
    ScaleDownRate {
        allowance: u32,
    },
    Hold {
        observed: Option<f64>,
    },
    Reactive {
        observed: Option<f64>,
    },
    Untrusted {
        observed: Option<f64>,
    },
    /// A usable forecast, but no usable demand now: held at the current replicas.
    Unobserved {
        held: u32,
    },
}

/// One online workload's need and guardrailed want, before the capacity split.
pub(crate) struct Decision<'a> {
    pub name: String,
    pub now: i64,
    pub current: u32,
    pub pod: Resources,
    pub priority: i32,
    pub min: u32,
    pub max: u32,
    pub per_replica: f64,
    pub headroom: f64,
    /// The forecast when it was usable (and trusted) this cycle.
    pub forecast: Option<&'a Forecast>,
    /// Why no forecast sized it, if none did (none, a stale one, no usable value in the
    /// window; an untrusted forecast sizes it on observed demand): its demand is missing, so
    /// it keeps its current replicas like a minimum, and batch does not grow.
    pub forecast_unusable: Option<String>,
    /// No usable demand now (observed value missing, NaN, negative) while the forecast runs
    /// (within `missingMetricsAfter`): held the same way.
    pub unobserved: bool,
    /// Why the forecast was not planned on, when there was one.
    pub untrusted: Option<String>,
    /// Demand needs this many (within min/max); with missing data, the held value.
    pub need: u32,
    /// The need before min/max, to say when max caps it.
    pub raw_need: u32,
    /// After the scale-down guardrails, within min/max.
    pub want: u32,
    /// The demand planned for (forecast window peak or observed), for shortfall reporting.
    pub demand: Option<f64>,
    pub why: Why,
    pub stabilization: i64,
    pub max_percent_per_minute: f64,
}

pub(crate) fn decide<'a>(
    workload: &OnlineWorkload,
    state: &'a OnlineState,
    memory: Option<&OnlineMemory>,
    ctx: &Context,
) -> (Decision<'a>, OnlineMemory) {
    let min = workload.replicas.min;
    let max = workload.replicas.max.max(min);
    let lead = secs(workload.startup)
        .saturating_add(ctx.interval)
        .saturating_add(ACTUATION_ALLOWANCE_SECS);
    let replicas = |demand: f64| replicas_for(demand, workload.per_replica, workload.headroom);
    let observed = state.observed_demand.filter(|d| d.is_finite() && *d >= 0.0);
    let observed_need = observed.map_or(0, replicas);
    let last = memory.map(|m| m.desired);
    let base = last.unwrap_or(state.current);
    // With no memory (first cycle, or after a restart) the current replicas count as a
    // recommendation made now, so a restart never scales online down before a full window.
    let mut window = match memory {
        Some(m) => m.window.clone(),
        None => vec![(ctx.now, state.current.clamp(min, max))],
    };

    let fresh = state
        .forecast
        .as_ref()
        .filter(|f| !is_stale(f, ctx.now, ctx.interval));
    let untrusted = fresh.and_then(|f| distrust(f, state.accuracy.as_ref()));
    let usable = fresh
        .filter(|_| untrusted.is_none())
        .and_then(|f| window_peak(f, ctx.now, lead).map(|peak| (f, peak)));

    // What the workload is sized on: the forecast's peak, with the observed demand as a floor;
    // or, when the forecast is not trusted, the observed demand alone, as an HPA would size it.
    let sized = match (usable, &untrusted, observed) {
        (Some((forecast, (peak, at))), _, _) => {
            let forecast_need = replicas(peak);
            Some(if observed_need > forecast_need {
                let demand = observed.unwrap_or(peak);
                (
                    Some(forecast),
                    observed_need,
                    demand,
                    Why::Observed { demand },
                )
            } else {
                (
                    Some(forecast),
                    forecast_need,
                    peak,
                    Why::Forecast { demand: peak, at },
                )
            })
        }
        (None, Some(_), Some(d)) => {
            Some((None, observed_need, d, Why::Untrusted { observed: Some(d) }))
        }
        _ => None,
    };

    let (forecast, raw_need, need, want, demand, why) = match sized {
        Some((forecast, raw_need, demand, source)) => {
            let need = raw_need.clamp(min, max);
            let stabilized = stabilize(&mut window, ctx.now, need, ctx.stabilization);
            // The HPA's rule: keep the base unless the need is above it (scale up at once)
            // or the whole window is below it (scale down, at the allowed rate).
            let (want, why) = if base <= need {
                (need, source)
            } else if base <= stabilized {
                (base, Why::Stabilization { held: stabilized })
            } else {
                let allowance = scale_down_allowance(base, ctx.max_percent_per_minute, ctx.elapsed);
                let rate_floor = base.saturating_sub(allowance);
                if rate_floor > stabilized {
                    (rate_floor, Why::ScaleDownRate { allowance })
                } else if stabilized > need {
                    (stabilized, Why::Stabilization { held: stabilized })
                } else {
                    (need, source)
                }
            };
            // The latest demand is unreadable (a gap, NaN, a doubled series) while the forecast
            // still runs on the history before it: the forecast may grow the workload, never
            // shrink it, until the demand is readable again or counts as missing.
            let held = state.current.clamp(min, max);
            let (want, why) = if observed.is_none() && want < held {
                (held, Why::Unobserved { held })
            } else {
                (want, why)
            };
            (
                forecast,
                raw_need,
                need,
                want.clamp(min, max),
                Some(demand),
                why,
            )
        }
        None if untrusted.is_some() => {
            // Not trusted, and nothing observed to size on: held like missing data.
            let held = last.unwrap_or(0).max(state.current);
            let want = held.max(observed_need).clamp(min, max);
            stabilize(&mut window, ctx.now, want, ctx.stabilization);
            (
                None,
                want,
                want,
                want,
                observed,
                Why::Untrusted { observed },
            )
        }
        None => {
            let (held, why) = match ctx.on_missing {
                MissingMetrics::Hold => {
                    (last.unwrap_or(0).max(state.current), Why::Hold { observed })
                }
                MissingMetrics::Reactive => match observed {
                    Some(_) => (base, Why::Reactive { observed }),
                    // Nothing observed either: nothing to react to, so hold as `hold` does;
                    // the last plan alone would undo a scale-up made since (found by fuzzing).
                    None => (
                        last.unwrap_or(0).max(state.current),
                        Why::Reactive { observed },
                    ),
                },
            };
            let want = held.max(observed_need).clamp(min, max);
            // Recorded so that, when the forecast is back, the held level is given up only
            // after a full stabilization window.
            stabilize(&mut window, ctx.now, want, ctx.stabilization);
            (None, want, want, want, observed, why)
        }
    };

    let decision = Decision {
        name: workload.name.clone(),
        now: ctx.now,
        current: state.current,
        pod: state.pod,
        priority: workload.priority,
        min,
        max,
        per_replica: workload.per_replica,
        headroom: workload.headroom,
        forecast,
        forecast_unusable: forecast_unusable(
            state,
            fresh,
            usable.is_some() || untrusted.is_some(),
            (ctx.now, lead),
        ),
        unobserved: observed.is_none(),
        untrusted,
        need,
        raw_need,
        want,
        demand,
        why,
        stabilization: ctx.stabilization,
        max_percent_per_minute: ctx.max_percent_per_minute,
    };
    let remembered = OnlineMemory {
        name: workload.name.clone(),
        desired: want,
        window,
    };
    (decision, remembered)
}

impl Decision<'_> {
    /// Its demand is missing (no forecast sized it) or unreadable now: its need is unknown, so
    /// it keeps at least its current replicas and batch does not grow.
    pub(crate) fn demand_unknown(&self) -> bool {
        self.forecast_unusable.is_some() || self.unobserved
    }

    /// One line for status, Events and logs.
    pub(crate) fn reason(&self, granted: u32) -> String {
        let mut s = String::with_capacity(96);
        let per = self.per_replica;
        let headroom = self.headroom * 100.0;
        // Writing to a String cannot fail.
        let _ = match self.why {
            Why::Forecast { demand, at } => write!(
                s,
                "forecast {demand:.1} ({}) needs {} at {per} per replica with {headroom:.0}% headroom",
                when(at, self.now),
                self.raw_need,
            ),
            Why::Observed { demand } => write!(
                s,
                "observed demand {demand:.1} (above the forecast) needs {}",
                self.raw_need
            ),
            Why::Stabilization { held } => write!(
                s,
                "kept at {}: the highest need of the last {}s is {held} (need now {})",
                self.want, self.stabilization, self.need
            ),
            Why::ScaleDownRate { allowance } => write!(
                s,
                "scaling down by at most {allowance} ({}%/min) toward need {}",
                self.max_percent_per_minute, self.need
            ),
            Why::Hold { observed } => {
                let r = write!(
                    s,
                    "demand forecast missing: holding {} (onMissingMetrics: hold)",
                    self.want
                );
                if let Some(d) = observed {
                    let _ = write!(s, ", observed {d:.1}");
                }
                r
            }
            Why::Unobserved { held } => write!(
                s,
                "holding: demand unreadable now, the forecast may grow {held} but not shrink it"
            ),
            Why::Untrusted { observed } => {
                let why = self.untrusted.as_deref().unwrap_or("untrusted");
                match observed {
                    Some(d) => write!(
                        s,
                        "forecast not planned on ({why}): observed demand {d:.1} needs {} at {per} per replica with {headroom:.0}% headroom, as an HPA would size it",
                        self.raw_need
                    ),
                    None => write!(
                        s,
                        "forecast not planned on ({why}) and demand unreadable: holding {}",
                        self.want
                    ),
                }
            }
            Why::Reactive { observed } => match observed {
                Some(d) => write!(
                    s,
                    "demand forecast missing: {} from observed demand {d:.1}, not below the last plan (onMissingMetrics: reactive)",
                    self.want
                ),
                None => write!(
                    s,
                    "demand and forecast missing: holding {} (onMissingMetrics: reactive)",
                    self.want
                ),
            },
        };
        if self.raw_need > self.max {
            let _ = write!(s, "; capped at max {}", self.max);
        } else if self.raw_need < self.min && matches!(self.why, Why::Forecast { .. }) {
            let _ = write!(s, "; raised to min {}", self.min);
        }
        if granted < self.want {
            let _ = write!(
                s,
                "; capacity: {granted} of {} fit after higher-priority online",
                self.want
            );
        }
        s
    }
}

/// `at` as an offset from now.
fn when(at: i64, now: i64) -> String {
    let ahead = at.saturating_sub(now);
    if ahead <= 0 {
        "now".to_string()
    } else if ahead < 120 {
        format!("in {ahead}s")
    } else {
        format!("in {}m", ahead / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::ForecastMethod;

    fn forecast(start: i64, step: i64, upper: &[f64]) -> Forecast {
        Forecast {
            start,
            step,
            point: upper.to_vec(),
            lower: upper.to_vec(),
            upper: upper.to_vec(),
            quantile: 0.95,
            method: ForecastMethod::Regression,
        }
    }

    #[test]
    fn need_is_ceil_of_demand_with_headroom() {
        assert_eq!(replicas_for(1000.0, 250.0, 0.0), 4);
        assert_eq!(replicas_for(1001.0, 250.0, 0.0), 5);
        assert_eq!(replicas_for(1000.0, 250.0, 0.1), 5);
        // 100 * 1.1 / 11 is 10.000000000000002 in floating point: still 10.
        assert_eq!(replicas_for(100.0, 11.0, 0.1), 10);
        assert_eq!(replicas_for(0.0, 250.0, 0.1), 0);
        assert_eq!(replicas_for(f64::NAN, 250.0, 0.1), 0);
        assert_eq!(replicas_for(10.0, 0.0, 0.1), u32::MAX);
    }

    #[test]
    fn window_covers_now_to_lead() {
        // Steps of 60 s from 0: [0,60) [60,120) [120,180) [180,240).
        let f = forecast(0, 60, &[1.0, 5.0, 9.0, 20.0]);
        // At 30 with a lead of 100 s: steps at 0, 60 and 120 overlap [30, 130].
        assert_eq!(window_peak(&f, 30, 100), Some((9.0, 120)));
        // At 61 with a lead of 50: steps 60 only ([61,111]).
        assert_eq!(window_peak(&f, 61, 50), Some((5.0, 60)));
        // Past the end of the forecast: missing.
        assert_eq!(window_peak(&f, 240, 100), None);
        // A lead shorter than the wait for the first step: that step still counts.
        let f = forecast(60, 60, &[7.0, 9.0]);
        assert_eq!(window_peak(&f, 2, 28), Some((7.0, 60)));
    }

    #[test]
    fn window_skips_nan_and_treats_all_nan_as_missing() {
        let f = forecast(0, 60, &[f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!(window_peak(&f, 0, 200), Some((3.0, 60)));
        let f = forecast(0, 60, &[f64::NAN, f64::NAN]);
        assert_eq!(window_peak(&f, 0, 200), None);
        let f = forecast(0, 0, &[1.0]);
        assert_eq!(window_peak(&f, 0, 200), None);
    }
}
