//! Scripted demand: a baseline with a daily wave, a weekend factor and one flash peak.

use super::{ExporterError, parse_seconds, parse_time};

/// A scripted workload: a baseline with a daily wave, a weekend factor and one flash peak.
///
/// demand(t) = baseline · (1 + daily·cos(2π(t − daily_peak)/1 day)) · weekend(t)
///             · (1 + (peak − 1)·shape(t)) · (1 + noise·u(t))
/// where shape ramps linearly from 0 at `peak_at − ramp` to 1 at `peak_at`, holds 1 for `hold`,
/// and ramps back to 0 over `ramp`; u(t) is a fixed pseudo-random value in [−1, 1] per minute.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub workload: String,
    pub baseline: f64,
    pub daily: f64,
    /// Seconds after midnight UTC at which the daily wave tops.
    pub daily_peak: f64,
    pub weekend: f64,
    pub peak_at: Option<i64>,
    pub peak: f64,
    pub ramp: f64,
    pub hold: f64,
    pub noise: f64,
}

impl Scenario {
    /// Parses `NAME:key=value,...`; `now` resolves relative times such as `peak_at=now+20m`.
    pub fn parse(spec: &str, now: i64) -> Result<Self, ExporterError> {
        let err = |reason: String| ExporterError::Scenario {
            spec: spec.to_string(),
            reason,
        };
        let (name, body) = spec
            .split_once(':')
            .ok_or_else(|| err("expected NAME:key=value,...".into()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(err("workload name is empty".into()));
        }
        let mut scenario = Scenario {
            workload: name.to_string(),
            baseline: f64::NAN,
            daily: 0.0,
            daily_peak: 14.0 * 3600.0,
            weekend: 1.0,
            peak_at: None,
            peak: f64::NAN,
            ramp: 15.0 * 60.0,
            hold: 30.0 * 60.0,
            noise: 0.0,
        };
        for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| err(format!("`{pair}` is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            let number = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(format!("{key}: `{value}` is not a number")))
            };
            let duration = || {
                parse_seconds(value)
                    .ok_or_else(|| err(format!("{key}: `{value}` is not a duration like 15m")))
            };
            match key {
                "baseline" => scenario.baseline = number()?,
                "daily" => scenario.daily = number()?,
                "daily_peak" => {
                    let (h, m) = value
                        .split_once(':')
                        .and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
                        .filter(|&(h, m)| h < 24 && m < 60)
                        .ok_or_else(|| err(format!("daily_peak: `{value}` is not HH:MM")))?;
                    scenario.daily_peak = f64::from(h * 3600 + m * 60);
                }
                "weekend" => scenario.weekend = number()?,
                "peak_at" => {
                    scenario.peak_at = Some(parse_time(value, now).map_err(|e| err(e.to_string()))?)
                }
                "peak" => scenario.peak = number()?,
                "ramp" => scenario.ramp = duration()?,
                "hold" => scenario.hold = duration()?,
                "noise" => scenario.noise = number()?,
                other => {
                    return Err(err(format!(
                        "unknown key `{other}` (known: baseline, daily, daily_peak, weekend, peak_at, peak, ramp, hold, noise)"
                    )));
                }
            }
        }
        if scenario.baseline.is_nan() {
            return Err(err("baseline is required".into()));
        }
        if scenario.baseline < 0.0 {
            return Err(err("baseline must not be negative".into()));
        }
        if !(0.0..1.0).contains(&scenario.daily) {
            return Err(err("daily must be in [0, 1)".into()));
        }
        if scenario.weekend < 0.0 || !(0.0..1.0).contains(&scenario.noise) {
            return Err(err("weekend must be >= 0 and noise in [0, 1)".into()));
        }
        if scenario.peak.is_nan() {
            scenario.peak = if scenario.peak_at.is_some() { 3.0 } else { 1.0 };
        }
        if scenario.peak <= 0.0 {
            return Err(err("peak must be a positive multiplier".into()));
        }
        if scenario.peak != 1.0 && scenario.peak_at.is_none() {
            return Err(err("peak needs peak_at".into()));
        }
        Ok(scenario)
    }

    /// Where in the peak `t` lies: 0 outside it, 1 on its plateau.
    fn peak_shape(&self, t: f64) -> f64 {
        let Some(at) = self.peak_at else { return 0.0 };
        let at = at as f64;
        let end = at + self.hold;
        if t >= at && t <= end {
            1.0
        } else if t < at && t > at - self.ramp {
            1.0 - (at - t) / self.ramp
        } else if t > end && t < end + self.ramp {
            1.0 - (t - end) / self.ramp
        } else {
            0.0
        }
    }

    pub fn demand_at(&self, t: f64) -> f64 {
        let seconds_of_day = t.rem_euclid(86_400.0);
        let wave = 1.0
            + self.daily
                * (std::f64::consts::TAU * (seconds_of_day - self.daily_peak) / 86_400.0).cos();
        // 1970-01-01 was a Thursday: day 2 and 3 of each week (from Thursday) are Sat/Sun.
        let weekday_from_thursday = (t / 86_400.0).floor().rem_euclid(7.0) as i64;
        let weekend = if matches!(weekday_from_thursday, 2 | 3) {
            self.weekend
        } else {
            1.0
        };
        let peak = 1.0 + (self.peak - 1.0) * self.peak_shape(t);
        let noise = 1.0 + self.noise * unit_noise(&self.workload, (t / 60.0).floor() as i64);
        (self.baseline * wave * weekend * peak * noise).max(0.0)
    }
}

/// A fixed pseudo-random value in [-1, 1] for (workload, minute): live and backfill agree.
fn unit_noise(workload: &str, minute: i64) -> f64 {
    // FNV-1a then a splitmix64 finaliser: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in workload.bytes().chain(minute.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z, a Monday

    #[test]
    fn scenario_parses_every_key() {
        let s = Scenario::parse(
            "checkout:baseline=100,daily=0.3,daily_peak=13:30,weekend=0.8,peak_at=now+20m,peak=4,ramp=10m,hold=1h,noise=0.05",
            NOW,
        )
        .unwrap();
        assert_eq!(s.workload, "checkout");
        assert_eq!(s.baseline, 100.0);
        assert_eq!(s.daily, 0.3);
        assert_eq!(s.daily_peak, 13.5 * 3600.0);
        assert_eq!(s.weekend, 0.8);
        assert_eq!(s.peak_at, Some(NOW + 1200));
        assert_eq!(s.peak, 4.0);
        assert_eq!(s.ramp, 600.0);
        assert_eq!(s.hold, 3600.0);
        assert_eq!(s.noise, 0.05);
    }

    #[test]
    fn scenario_defaults_peak_when_peak_at_is_given() {
        let s = Scenario::parse("web:baseline=10,peak_at=2025-11-24T18:00:00Z", NOW).unwrap();
        assert_eq!(s.peak, 3.0);
        let flat = Scenario::parse("web:baseline=10", NOW).unwrap();
        assert_eq!(flat.peak, 1.0);
        assert_eq!(flat.peak_at, None);
    }

    #[test]
    fn scenario_errors_name_the_problem() {
        let cases = [
            ("web", "NAME:key=value"),
            (":baseline=1", "workload name is empty"),
            ("web:daily=0.2", "baseline is required"),
            ("web:baseline=-1", "must not be negative"),
            ("web:baseline=1,speed=2", "unknown key `speed`"),
            ("web:baseline=1,ramp=soon", "ramp"),
            ("web:baseline=abc", "baseline: `abc` is not a number"),
            ("web:baseline=1,daily=1.5", "daily must be in [0, 1)"),
            ("web:baseline=1,peak=3", "peak needs peak_at"),
            ("web:baseline=1,daily_peak=25:00", "daily_peak"),
            ("web:baseline=1,peak_at=later", "peak_at"),
            ("web:baseline", "not key=value"),
        ];
        for (spec, expected) in cases {
            let err = Scenario::parse(spec, NOW).unwrap_err().to_string();
            assert!(err.contains(expected), "{spec}: `{err}` lacks `{expected}`");
        }
    }

    #[test]
    fn scenario_peak_shape_ramps_holds_and_returns() {
        let s = Scenario::parse(
            "web:baseline=100,peak_at=1764003600,peak=5,ramp=10m,hold=30m",
            NOW,
        )
        .unwrap();
        let at = 1_764_003_600.0;
        assert_eq!(s.demand_at(at - 3600.0), 100.0);
        assert!(
            (s.demand_at(at - 300.0) - 300.0).abs() < 1e-9,
            "half way up the ramp"
        );
        assert_eq!(s.demand_at(at), 500.0);
        assert_eq!(s.demand_at(at + 1800.0), 500.0);
        assert!((s.demand_at(at + 1800.0 + 300.0) - 300.0).abs() < 1e-9);
        assert_eq!(s.demand_at(at + 1800.0 + 600.0), 100.0);
    }

    #[test]
    fn scenario_daily_wave_and_weekend() {
        let s = Scenario::parse(
            "web:baseline=100,daily=0.5,daily_peak=14:00,weekend=0.5",
            NOW,
        )
        .unwrap();
        let monday_midnight = 1_763_942_400.0; // 2025-11-24T00:00:00Z
        assert!((s.demand_at(monday_midnight + 14.0 * 3600.0) - 150.0).abs() < 1e-9);
        assert!((s.demand_at(monday_midnight + 2.0 * 3600.0) - 50.0).abs() < 1e-9);
        let saturday = monday_midnight + 5.0 * 86_400.0;
        assert!((s.demand_at(saturday + 14.0 * 3600.0) - 75.0).abs() < 1e-9);
    }

    #[test]
    fn scenario_noise_is_bounded_and_repeatable() {
        let s = Scenario::parse("web:baseline=100,noise=0.1", NOW).unwrap();
        let values: Vec<f64> = (0..500)
            .map(|i| s.demand_at((NOW + i * 60) as f64))
            .collect();
        assert!(values.iter().all(|v| (90.0..=110.0).contains(v)));
        assert!(
            values.iter().any(|v| (v - 100.0).abs() > 1.0),
            "noise is there"
        );
        assert_eq!(s.demand_at(NOW as f64), s.demand_at(NOW as f64 + 30.0));
    }
}
