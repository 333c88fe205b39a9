//! The bundled demand trace of `tideshift simulate`: synthetic, generated at run time from a
//! seed, so the binary carries no data file and every run sees the same numbers.
//!
//! Three weeks (2026-11-01 to 2026-11-22 UTC, 1-minute steps) of requests per second for the
//! three online services of `policies/festival.yaml`. Each series is
//!
//! ```text
//! demand(t) = level · trend(t) · day_level(day) · (shape(hour, weekday) + drop(t) + festival(t))
//!             · exp(slow_noise(t) + fast_noise(t))
//! ```
//!
//! - `shape`: a floor plus Gaussian bumps over the hour of day (morning, lunch, afternoon,
//!   evening); on weekends the morning is later and smaller and the evening larger;
//! - `trend`: +1% a week; `day_level`: each day's level drawn from N(1, 0.04);
//! - `drop`: the nightly 20:00 live-stream drop, a jump that decays over ~5 minutes
//!   (`nightly-drop` in the policy's events);
//! - `festival`: the Double-11 night (`double-11`, 2026-11-10 20:00 UTC for 7 h): balance
//!   payment opens at 20:00, the payment rush comes at midnight, refunds build up to about
//!   01:00. Peaks close but not equal, each 3-4x a normal day's peak;
//! - `slow_noise`: AR(1) in log space (φ = 0.98 per minute, stationary s.d. 5%);
//!   `fast_noise`: white, s.d. 3%.
//!
//! The random numbers come from `rand`'s `StdRng` seeded with the seed (default
//! [`DEFAULT_SEED`]); with the versions pinned in Cargo.lock the trace is identical on every
//! machine.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};

use crate::series::Series;

pub const DEFAULT_SEED: u64 = 11;
/// 2026-11-01T00:00:00Z, a Sunday.
pub const START: i64 = 1_793_491_200;
pub const DAYS: i64 = 21;
pub const STEP: i64 = 60;
/// 2026-11-10T20:00:00Z: the festival night starts (the policy's `double-11` event).
pub const FESTIVAL_START: i64 = START + 9 * 86_400 + 20 * 3_600;

struct Bump {
    hour: f64,
    height: f64,
    width: f64,
}

/// One surge of the festival night: rises linearly for `rise` seconds from `at`, then decays
/// exponentially with time constant `decay`; `height` is in units of the service's level.
struct Surge {
    at: i64,
    rise: f64,
    height: f64,
    decay: f64,
}

struct Profile {
    name: &'static str,
    level: f64,
    floor: f64,
    bumps: [Bump; 4],
    drop_height: f64,
    surges: Vec<Surge>,
}

fn profiles() -> Vec<Profile> {
    let bumps = |evening: f64| {
        [
            Bump {
                hour: 10.0,
                height: 0.55,
                width: 1.5,
            },
            Bump {
                hour: 12.5,
                height: 0.7,
                width: 1.0,
            },
            Bump {
                hour: 15.5,
                height: 0.45,
                width: 1.5,
            },
            Bump {
                hour: 21.0,
                height: evening,
                width: 1.8,
            },
        ]
    };
    vec![
        Profile {
            name: "payment",
            level: 8_000.0,
            floor: 0.1,
            bumps: bumps(0.9),
            drop_height: 0.6,
            surges: vec![
                // Shoppers warm up the carts before midnight.
                Surge {
                    at: FESTIVAL_START,
                    rise: 4.0 * 3_600.0,
                    height: 0.5,
                    decay: 1_800.0,
                },
                Surge {
                    at: FESTIVAL_START + 4 * 3_600,
                    rise: 120.0,
                    height: 2.6,
                    decay: 2_400.0,
                },
            ],
        },
        Profile {
            name: "balance-payment",
            level: 2_500.0,
            floor: 0.08,
            bumps: bumps(1.0),
            drop_height: 0.3,
            surges: vec![Surge {
                at: FESTIVAL_START,
                rise: 180.0,
                height: 3.0,
                decay: 3_600.0,
            }],
        },
        Profile {
            name: "refund",
            level: 800.0,
            floor: 0.15,
            bumps: bumps(0.6),
            drop_height: 0.1,
            surges: vec![Surge {
                at: FESTIVAL_START + 4 * 3_600 + 1_800,
                rise: 1_800.0,
                height: 4.0,
                decay: 3_600.0,
            }],
        },
    ]
}

/// The names of the bundled series, in the order of `policies/festival.yaml`.
pub fn names() -> Vec<&'static str> {
    profiles().iter().map(|p| p.name).collect()
}

/// Generate the bundled trace: one series per online service of the festival policy.
pub fn festival(seed: u64) -> Vec<(String, Series)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let points = (DAYS * 86_400 / STEP) as usize;
    let unit = Normal::new(0.0, 1.0).expect("a unit normal is valid");
    profiles()
        .into_iter()
        .map(|profile| {
            let day_levels: Vec<f64> = (0..DAYS)
                .map(|_| 1.0 + 0.04 * unit.sample(&mut rng))
                .collect();
            // Festival surges vary from the plan by ±10%.
            let surge_scale: Vec<f64> = profile
                .surges
                .iter()
                .map(|_| 1.0 + 0.1 * (rng.random::<f64>() * 2.0 - 1.0))
                .collect();
            let phi: f64 = 0.98;
            let slow_sd = 0.05 * (1.0 - phi * phi).sqrt();
            let mut slow = 0.0;
            let values = (0..points)
                .map(|i| {
                    let t = START + i as i64 * STEP;
                    let since_start = t - START;
                    let day = (since_start / 86_400) as usize;
                    let hour = (since_start % 86_400) as f64 / 3_600.0;
                    // START is a Sunday: day 0 and 6 of each week are the weekend.
                    let weekend = matches!(day % 7, 0 | 6);
                    let mut shape = profile.floor;
                    for (k, bump) in profile.bumps.iter().enumerate() {
                        let (hour_shift, scale) = match (weekend, k) {
                            (true, 0) => (1.5, 0.7),
                            (true, 3) => (0.0, 1.15),
                            _ => (0.0, 1.0),
                        };
                        let mut distance = (hour - bump.hour - hour_shift).abs();
                        distance = distance.min(24.0 - distance);
                        shape += scale
                            * bump.height
                            * (-(distance * distance) / (2.0 * bump.width * bump.width)).exp();
                    }
                    let minutes_after_drop = (hour - 20.0) * 60.0;
                    if (0.0..15.0).contains(&minutes_after_drop) {
                        shape += profile.drop_height * (-minutes_after_drop / 5.0).exp();
                    }
                    for (surge, scale) in profile.surges.iter().zip(&surge_scale) {
                        let dt = (t - surge.at) as f64;
                        if dt >= 0.0 {
                            let rise = (dt / surge.rise).min(1.0);
                            let decay = if dt > surge.rise {
                                (-(dt - surge.rise) / surge.decay).exp()
                            } else {
                                1.0
                            };
                            shape += scale * surge.height * rise * decay;
                        }
                    }
                    let trend = 1.0 + 0.01 * since_start as f64 / (7.0 * 86_400.0);
                    slow = phi * slow + slow_sd * unit.sample(&mut rng);
                    let fast = 0.03 * unit.sample(&mut rng);
                    let value =
                        profile.level * trend * day_levels[day] * shape * (slow + fast).exp();
                    (value * 10.0).round() / 10.0
                })
                .collect();
            (profile.name.to_string(), Series::new(START, STEP, values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak_time(series: &Series) -> i64 {
        let (i, _) = series
            .values
            .iter()
            .enumerate()
            .fold(
                (0, f64::MIN),
                |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                },
            );
        series.timestamp(i)
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        assert_eq!(festival(3), festival(3));
        assert_ne!(festival(3)[0].1.values, festival(4)[0].1.values);
    }

    #[test]
    fn festival_peaks_are_close_but_not_equal_and_dominate_the_month() {
        let traces = festival(DEFAULT_SEED);
        assert_eq!(
            traces.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            names()
        );
        let mut peaks = Vec::new();
        for (name, series) in &traces {
            assert_eq!(series.values.len(), (DAYS * 1440) as usize);
            assert!(series.values.iter().all(|v| v.is_finite() && *v >= 0.0));
            let at = peak_time(series);
            assert!(
                (FESTIVAL_START..FESTIVAL_START + 7 * 3_600).contains(&at),
                "{name} peaks at {at}, outside the festival night"
            );
            peaks.push(at);
        }
        peaks.sort();
        peaks.dedup();
        assert_eq!(peaks.len(), 3, "the three peaks must not coincide");
        assert!(peaks[2] - peaks[0] <= 6 * 3_600);
    }

    #[test]
    fn days_repeat_but_weekends_differ() {
        let payment = &festival(DEFAULT_SEED)[0].1;
        let daily_mean = |day: usize| {
            payment.values[day * 1440..(day + 1) * 1440]
                .iter()
                .sum::<f64>()
                / 1440.0
        };
        // Two Tuesdays a week apart are alike; a Sunday is different from a Tuesday.
        let tuesday = daily_mean(2);
        assert!((daily_mean(16) / tuesday - 1.0).abs() < 0.15);
        let morning = |day: usize| payment.values[day * 1440 + 600];
        assert!(
            morning(0) < 0.85 * morning(2),
            "weekend mornings are quieter"
        );
    }
}
