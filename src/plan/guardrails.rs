//! Online scale-down guardrails: the stabilization window and the scale-down rate.
//! Scale-up is never held back here; only capacity can limit it.

/// Add `replicas` recommended at `now` to a stabilization window of `window_secs` and return
/// the highest recommendation still in it (the HPA's scale-down stabilization).
///
/// The window is kept as a queue of strictly decreasing replicas, oldest first: a
/// recommendation that is not above a later one can never be the maximum again, so it is
/// dropped. The window therefore stays a few entries long whatever the cycle length.
pub(crate) fn stabilize(
    window: &mut Vec<(i64, u32)>,
    now: i64,
    replicas: u32,
    window_secs: i64,
) -> u32 {
    let oldest_kept = now.saturating_sub(window_secs);
    let expired = window
        .iter()
        .take_while(|(at, _)| *at <= oldest_kept)
        .count();
    window.drain(..expired);
    while window.last().is_some_and(|&(_, r)| r <= replicas) {
        window.pop();
    }
    window.push((now, replicas));
    window.first().map_or(replicas, |&(_, r)| r)
}

/// How many replicas an online workload of `from` replicas may shed after `elapsed_secs`
/// at `max_percent_per_minute`: the percentage of `from` pro rata of the elapsed time, rounded
/// down, and at least 1 whenever any reduction is allowed (a positive rate and some time
/// elapsed), so small workloads can still come down.
pub fn scale_down_allowance(from: u32, max_percent_per_minute: f64, elapsed_secs: i64) -> u32 {
    if max_percent_per_minute.is_nan() || max_percent_per_minute <= 0.0 || elapsed_secs <= 0 {
        return 0;
    }
    let allowed =
        (f64::from(from) * max_percent_per_minute / 100.0 * elapsed_secs as f64 / 60.0).floor();
    let allowed = if allowed >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        allowed as u32
    };
    allowed.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_returns_highest_recent_recommendation() {
        let mut w = Vec::new();
        assert_eq!(stabilize(&mut w, 0, 10, 300), 10);
        assert_eq!(stabilize(&mut w, 15, 4, 300), 10);
        assert_eq!(stabilize(&mut w, 30, 6, 300), 10);
        // 10 was recommended at 0; at 300 it is exactly one window old and leaves.
        assert_eq!(stabilize(&mut w, 300, 3, 300), 6);
        assert_eq!(stabilize(&mut w, 331, 2, 300), 3);
    }

    #[test]
    fn window_stays_short() {
        let mut w = Vec::new();
        for t in 0..1000 {
            stabilize(&mut w, t * 15, 5 + (t % 3) as u32, 300);
        }
        assert!(w.len() <= 3, "{w:?}");
    }

    #[test]
    fn zero_window_follows_the_recommendation() {
        let mut w = Vec::new();
        assert_eq!(stabilize(&mut w, 0, 10, 0), 10);
        assert_eq!(stabilize(&mut w, 15, 4, 0), 4);
    }

    #[test]
    fn allowance_is_pro_rata_and_at_least_one() {
        assert_eq!(scale_down_allowance(100, 10.0, 60), 10);
        assert_eq!(scale_down_allowance(100, 10.0, 15), 2);
        assert_eq!(scale_down_allowance(5, 10.0, 15), 1);
        assert_eq!(scale_down_allowance(100, 0.0, 60), 0);
        assert_eq!(scale_down_allowance(100, 10.0, 0), 0);
        assert_eq!(scale_down_allowance(100, 100.0, 600), 1000);
    }
}
