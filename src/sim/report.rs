//! The results of a simulation as a table for people and as JSON for scripts.

use serde_json::{Map, Value, json};

use super::engine::Outcome;
use super::scenario::{Scenario, rfc3339};

pub struct Report<'a> {
    pub scenario: &'a Scenario,
    /// What the demand came from, in words.
    pub source: String,
    /// Where the policy came from.
    pub policy_origin: String,
    pub outcomes: &'a [Outcome],
    pub wall_seconds: f64,
}

impl Report<'_> {
    pub fn to_json(&self) -> Value {
        let s = self.scenario;
        let mut strategies = Map::new();
        for o in self.outcomes {
            strategies.insert(
                o.name.to_string(),
                serde_json::to_value(&o.scores).unwrap_or(Value::Null),
            );
        }
        json!({
            "strategies": strategies,
            "policy": {"name": s.policy_name, "origin": self.policy_origin},
            "demand": self.source,
            "window": {
                "start": rfc3339(s.start),
                "scored_from": rfc3339(s.scored_from),
                "end": rfc3339(s.end),
                "scored_days": (s.end - s.scored_from) as f64 / 86_400.0,
            },
            "tick_seconds": s.tick,
            "forecast_step_seconds": s.forecast_step,
            "online": s.online.iter().map(|w| &w.name).collect::<Vec<_>>(),
            "offline": s.offline.iter().map(|w| &w.name).collect::<Vec<_>>(),
            "wall_seconds": self.wall_seconds,
        })
    }

    pub fn to_table(&self) -> String {
        let s = self.scenario;
        let mut out = String::new();
        out.push_str(&format!(
            "policy {} ({})\ndemand: {}\nscored {} → {} ({:.1} days, after a {:.1}-day warm-up), \
             clock step {}s, forecast step {}s\n\n",
            s.policy_name,
            self.policy_origin,
            self.source,
            rfc3339(s.scored_from),
            rfc3339(s.end),
            (s.end - s.scored_from) as f64 / 86_400.0,
            (s.scored_from - s.start) as f64 / 86_400.0,
            s.tick,
            s.forecast_step,
        ));
        out.push_str(&format!(
            "{:<10} {:>14} {:>10} {:>14} {:>14} {:>13} {:>8}\n",
            "strategy",
            "SLO-viol. min",
            "unserved",
            "batch core-h",
            "vs oracle",
            "scale actions",
            "peak on"
        ));
        let oracle = self
            .outcomes
            .iter()
            .find(|o| o.name == "oracle")
            .map(|o| o.scores.batch_core_hours);
        for o in self.outcomes {
            let c = &o.scores;
            let versus = match oracle {
                Some(best) if best > 0.0 => {
                    format!("{:.1}%", 100.0 * c.batch_core_hours / best)
                }
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{:<10} {:>14} {:>9.4}% {:>14.1} {:>14} {:>13} {:>8}\n",
                o.name,
                c.slo_violation_minutes,
                100.0 * c.unserved_fraction,
                c.batch_core_hours,
                versus,
                c.scale_actions,
                c.peak_online_replicas
            ));
        }
        out
    }
}
