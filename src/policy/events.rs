//! Known promotions (`spec.events`) expanded into concrete time windows for the forecaster's
//! event regressors and for the planner's guards.

use chrono::{DateTime, TimeZone, Utc};

use super::load::PolicyError;
use super::spec::EventSpec;
use super::validate::{parse_cron, parse_timezone};

/// Most occurrences of one cron event examined per call. `* * * * *` over a year is 525,600
/// occurrences; past this budget `expand` fails instead of spending seconds on it.
pub const MAX_OCCURRENCES_PER_EVENT: usize = 50_000;
/// Widest range `expand` accepts (10 years), so a caller bug cannot ask for the year 5000.
pub const MAX_RANGE_SECS: i64 = 10 * 366 * 86_400;

/// One occurrence of a known event, as unix seconds `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventWindow {
    pub name: String,
    pub start: i64,
    pub end: i64,
}

impl EventWindow {
    /// Whether unix second `t` falls inside the window.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// The windows `[start, end)` of every event that overlap `[from, to)`, sorted by start then
/// name. Overlapping occurrences of the same event merge into one window (an hourly cron with
/// a 2h duration is one long window, not two counted twice). Cron schedules run in the event's
/// `timezone` (UTC by default), so `0 20 * * *` in Asia/Shanghai is 12:00 UTC.
pub fn expand(events: &[EventSpec], from: i64, to: i64) -> Result<Vec<EventWindow>, PolicyError> {
    let fail = |name: &str, message: String| PolicyError::Event {
        name: name.to_string(),
        message,
    };
    if to <= from {
        return Ok(Vec::new());
    }
    if to.saturating_sub(from) > MAX_RANGE_SECS {
        return Err(fail(
            "*",
            format!("range {from}..{to} is longer than 10 years"),
        ));
    }
    let mut windows = Vec::new();
    for event in events {
        let duration = i64::try_from(event.duration.as_secs()).unwrap_or(i64::MAX);
        if duration <= 0 {
            return Err(fail(&event.name, "duration must be at least 1s".into()));
        }
        let mut push = |start: i64| {
            let end = start.saturating_add(duration);
            if end <= from || start >= to {
                return;
            }
            match windows.last_mut() {
                Some(EventWindow {
                    name,
                    end: last_end,
                    ..
                }) if *name == event.name && start <= *last_end => {
                    *last_end = (*last_end).max(end);
                }
                _ => windows.push(EventWindow {
                    name: event.name.clone(),
                    start,
                    end,
                }),
            }
        };
        match (&event.start, &event.cron) {
            (Some(start), None) => {
                let start = DateTime::parse_from_rfc3339(start.trim())
                    .map_err(|e| fail(&event.name, format!("start {start:?}: {e}")))?;
                push(start.timestamp());
            }
            (None, Some(cron)) => {
                let schedule = parse_cron(cron).map_err(|e| fail(&event.name, e))?;
                let timezone = match &event.timezone {
                    Some(tz) => parse_timezone(tz).map_err(|e| fail(&event.name, e))?,
                    None => chrono_tz::UTC,
                };
                // An occurrence at `from - duration` ends exactly at `from`: not overlapping.
                let search_from = from.saturating_sub(duration);
                let Some(after) = Utc.timestamp_opt(search_from, 0).single() else {
                    return Err(fail(
                        &event.name,
                        format!("time {search_from} out of range"),
                    ));
                };
                let after = after.with_timezone(&timezone);
                let mut examined = 0;
                // croner gives up (ends the iteration) after searching about a year without a
                // match, e.g. `0 0 30 2 *`, so a schedule that never fires costs bounded time.
                for occurrence in schedule.iter_after(after) {
                    let start = occurrence.timestamp();
                    if start >= to {
                        break;
                    }
                    examined += 1;
                    if examined > MAX_OCCURRENCES_PER_EVENT {
                        return Err(fail(
                            &event.name,
                            format!(
                                "cron {cron:?} fires more than {MAX_OCCURRENCES_PER_EVENT} times \
                                 between {from} and {to}; events are rare promotions, not a clock"
                            ),
                        ));
                    }
                    push(start);
                }
            }
            _ => {
                return Err(fail(
                    &event.name,
                    "needs exactly one of start or cron".into(),
                ));
            }
        }
    }
    windows.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.name.cmp(&b.name)));
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyDuration;

    fn event(
        name: &str,
        start: Option<&str>,
        cron: Option<&str>,
        tz: Option<&str>,
        secs: u64,
    ) -> EventSpec {
        EventSpec {
            name: name.into(),
            start: start.map(Into::into),
            cron: cron.map(Into::into),
            timezone: tz.map(Into::into),
            duration: PolicyDuration::from_secs(secs),
        }
    }

    fn ts(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp()
    }

    #[test]
    fn fixed_start_overlapping_range() {
        let e = event(
            "d11",
            Some("2026-11-10T20:00:00+08:00"),
            None,
            None,
            4 * 3600,
        );
        let start = ts("2026-11-10T12:00:00Z");
        let w = expand(std::slice::from_ref(&e), start - 100, start + 100).unwrap();
        assert_eq!(
            w,
            vec![EventWindow {
                name: "d11".into(),
                start,
                end: start + 4 * 3600
            }]
        );
        // Range entirely before or after: nothing. Range ending exactly at the start: nothing.
        assert!(
            expand(std::slice::from_ref(&e), start - 100, start)
                .unwrap()
                .is_empty()
        );
        assert!(
            expand(std::slice::from_ref(&e), start + 4 * 3600, start + 5 * 3600)
                .unwrap()
                .is_empty()
        );
        // Range starting inside the window still sees it.
        assert_eq!(expand(&[e], start + 3600, start + 3601).unwrap().len(), 1);
    }

    #[test]
    fn cron_runs_in_its_timezone() {
        let e = event("drop", None, Some("0 20 * * *"), Some("Asia/Shanghai"), 900);
        let from = ts("2026-03-01T00:00:00Z");
        let w = expand(&[e], from, from + 3 * 86_400).unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].start, ts("2026-03-01T12:00:00Z"));
        assert_eq!(w[0].end - w[0].start, 900);
        assert_eq!(w[2].start, ts("2026-03-03T12:00:00Z"));
    }

    #[test]
    fn cron_handles_dst() {
        // New York: 20:00 local is 01:00 UTC in winter, 00:00 UTC in summer (DST from 8 March 2026).
        let e = event("ny", None, Some("0 20 * * *"), Some("America/New_York"), 60);
        let from = ts("2026-03-07T00:00:00Z");
        let w = expand(&[e], from, from + 3 * 86_400).unwrap();
        assert_eq!(w[0].start, ts("2026-03-07T01:00:00Z"));
        assert_eq!(w[1].start, ts("2026-03-08T01:00:00Z"));
        assert_eq!(w[2].start, ts("2026-03-09T00:00:00Z"));
    }

    #[test]
    fn window_that_began_before_from_is_included() {
        let e = event("long", None, Some("0 0 * * *"), None, 6 * 3600);
        let from = ts("2026-03-01T03:00:00Z");
        let w = expand(&[e], from, from + 3600).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].start, ts("2026-03-01T00:00:00Z"));
    }

    #[test]
    fn overlapping_occurrences_merge() {
        let e = event("hourly", None, Some("0 * * * *"), None, 2 * 3600);
        let from = ts("2026-03-01T00:00:00Z");
        let w = expand(&[e], from, from + 10 * 3600).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].end, from + 11 * 3600);
    }

    #[test]
    fn sorted_across_events() {
        let a = event("a", None, Some("0 12 * * *"), None, 60);
        let b = event("b", None, Some("0 6 * * *"), None, 60);
        let from = ts("2026-03-01T00:00:00Z");
        let w = expand(&[a, b], from, from + 2 * 86_400).unwrap();
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "b", "a"]);
    }

    #[test]
    fn every_minute_for_a_year_is_bounded() {
        let e = event("clock", None, Some("* * * * *"), None, 30);
        let from = ts("2026-01-01T00:00:00Z");
        let started = std::time::Instant::now();
        let result = expand(&[e], from, from + 365 * 86_400);
        assert!(matches!(result, Err(PolicyError::Event { .. })));
        assert!(
            started.elapsed().as_secs_f64() < 2.0,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn schedule_that_never_fires_is_bounded() {
        let e = event("never", None, Some("0 0 30 2 *"), None, 60);
        let from = ts("2026-01-01T00:00:00Z");
        let started = std::time::Instant::now();
        let w = expand(&[e], from, from + 5 * 365 * 86_400).unwrap();
        assert!(w.is_empty());
        assert!(
            started.elapsed().as_secs_f64() < 2.0,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn bad_events_are_errors_not_panics() {
        let from = ts("2026-01-01T00:00:00Z");
        for e in [
            event("x", None, Some("not cron"), None, 60),
            event("x", None, Some("0 0 * * *"), Some("Nowhere/City"), 60),
            event("x", Some("yesterday"), None, None, 60),
            event("x", None, None, None, 60),
            event("x", None, Some("0 0 * * *"), None, 0),
        ] {
            assert!(expand(&[e], from, from + 86_400).is_err());
        }
        assert!(expand(&[], from, i64::MAX).is_err());
        assert!(expand(&[], from, from - 1).unwrap().is_empty());
    }
}
