//! The backfill: history as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.

use std::io::Write;

use super::{DEMAND_METRIC, REQUESTS_FAMILY, REQUESTS_METRIC, Workload};

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `[from, to]` every `step` seconds as OpenMetrics text, ending with `# EOF`.
/// Counters start at 0 at `from`.
pub fn write_openmetrics(
    out: &mut impl Write,
    workloads: &[Workload],
    labels: &[(String, String)],
    from: i64,
    to: i64,
    step: i64,
) -> std::io::Result<()> {
    let label_text = |w: &Workload| {
        let mut all: Vec<(String, String)> = labels.to_vec();
        all.push(("workload".to_string(), w.name().to_string()));
        all.sort();
        all.iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
            .collect::<Vec<_>>()
            .join(",")
    };
    writeln!(
        out,
        "# HELP {DEMAND_METRIC} Demand now, requests per second."
    )?;
    writeln!(out, "# TYPE {DEMAND_METRIC} gauge")?;
    for w in workloads {
        let l = label_text(w);
        let mut t = from;
        while t <= to {
            writeln!(out, "{DEMAND_METRIC}{{{l}}} {} {t}", w.demand_at(t as f64))?;
            t += step;
        }
    }
    writeln!(out, "# HELP {REQUESTS_FAMILY} Requests served.")?;
    writeln!(out, "# TYPE {REQUESTS_FAMILY} counter")?;
    for w in workloads {
        let l = label_text(w);
        let mut total = 0.0;
        let mut t = from;
        while t <= to {
            if t > from {
                total += w.requests_between((t - step) as f64, t as f64);
            }
            writeln!(out, "{REQUESTS_METRIC}{{{l}}} {total} {t}")?;
            t += step;
        }
    }
    writeln!(out, "# EOF")
}

#[cfg(test)]
mod tests {
    use super::super::Scenario;
    use super::*;

    const NOW: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z, a Monday

    fn openmetrics(workloads: &[Workload], labels: &[(String, String)]) -> String {
        let mut out = Vec::new();
        write_openmetrics(&mut out, workloads, labels, NOW, NOW + 180, 60).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn openmetrics_output_is_what_promtool_reads() {
        let w = Workload::Scenario(Scenario::parse("web:baseline=10", NOW).unwrap());
        let labels = vec![("job".to_string(), "demand \"x\"".to_string())];
        let text = openmetrics(&[w], &labels);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"));
        assert!(lines.contains(&"# TYPE tideshift_demo_demand gauge"));
        assert!(lines.contains(&"# TYPE tideshift_demo_requests counter"));
        let demand: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("tideshift_demo_demand{"))
            .collect();
        assert_eq!(demand.len(), 4);
        assert_eq!(
            demand[0],
            format!("tideshift_demo_demand{{job=\"demand \\\"x\\\"\",workload=\"web\"}} 10 {NOW}")
        );
        let totals: Vec<f64> = lines
            .iter()
            .filter(|l| l.starts_with("tideshift_demo_requests_total{"))
            // The value is the second field from the end: label values may hold spaces.
            .map(|l| l.rsplit(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(totals.len(), 4);
        for (i, total) in totals.iter().enumerate() {
            assert!((total - 600.0 * i as f64).abs() < 1e-6, "{totals:?}");
        }
        // Families must not interleave: every gauge sample precedes the counter's TYPE line.
        let counter_type = lines
            .iter()
            .position(|l| *l == "# TYPE tideshift_demo_requests counter")
            .unwrap();
        assert!(
            lines[counter_type..]
                .iter()
                .all(|l| !l.starts_with("tideshift_demo_demand"))
        );
    }
}
