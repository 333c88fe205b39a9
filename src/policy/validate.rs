//! Semantic checks the types cannot express (min <= max, unique names, sane durations, ...).
//!
//! [`validate`] reports every problem it finds, not just the first, so one `tideshift check`
//! run shows everything to fix. The rules are listed in `docs/policy.md`; the CRD's OpenAPI
//! schema and CEL rules enforce a subset of them at `kubectl apply`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::spec::*;

/// Largest replica count for one workload; more is a typo, not a plan.
pub const MAX_REPLICAS: u32 = 10_000;
/// Largest number of online (and of offline) workloads in one policy.
pub const MAX_WORKLOADS: usize = 100;
pub const MAX_EVENTS: usize = 100;
pub const MAX_SEASONALITIES: usize = 4;
pub const MAX_HEADROOM: f64 = 10.0;
pub const MAX_QUERY_LEN: usize = 4_096;
/// Points of history the forecaster may be asked to hold per workload (history / step).
pub const MAX_HISTORY_POINTS: u64 = 200_000;
/// Points of forecast per workload (horizon / step).
pub const MAX_HORIZON_POINTS: u64 = 10_000;

/// One problem, at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Like `spec.online[1].replicas.max`.
    pub path: String,
    pub message: String,
    /// 1-based line in the source file, when loaded from one.
    pub line: Option<usize>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {line}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
            line: None,
        });
    }
}

/// Check everything about a parsed policy that its types cannot. Returns every error found.
pub fn validate(policy: &ShiftPolicy) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    validate_metadata(policy, &mut errors);
    validate_spec(&policy.spec, &mut errors);
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(errors.0)
    }
}

/// The spec alone (what the daemon re-checks on every change).
pub fn validate_spec_only(spec: &ShiftPolicySpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    validate_spec(spec, &mut errors);
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(errors.0)
    }
}

fn validate_metadata(policy: &ShiftPolicy, errors: &mut Errors) {
    match policy.metadata.name.as_deref() {
        None | Some("") => errors.add("metadata.name", "required"),
        Some(name) => {
            if let Err(why) = dns1123_subdomain(name) {
                errors.add("metadata.name", why);
            }
        }
    }
    if let Some(namespace) = policy.metadata.namespace.as_deref()
        && let Err(why) = dns1123_label(namespace)
    {
        errors.add("metadata.namespace", why);
    }
}

fn validate_spec(spec: &ShiftPolicySpec, errors: &mut Errors) {
    let interval = spec.interval.as_secs_f64();
    if !(1.0..=3_600.0).contains(&interval) {
        errors.add(
            "spec.interval",
            format!("is {}; must be between 1s and 1h", spec.interval),
        );
    }
    validate_capacity(&spec.capacity, errors);

    if spec.online.is_empty() {
        errors.add("spec.online", "needs at least one online workload");
    }
    if spec.online.len() > MAX_WORKLOADS {
        errors.add(
            "spec.online",
            format!(
                "has {} workloads; at most {MAX_WORKLOADS}",
                spec.online.len()
            ),
        );
    }
    if spec.offline.len() > MAX_WORKLOADS {
        errors.add(
            "spec.offline",
            format!(
                "has {} workloads; at most {MAX_WORKLOADS}",
                spec.offline.len()
            ),
        );
    }

    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (i, workload) in spec.online.iter().enumerate() {
        let path = format!("spec.online[{i}]");
        validate_online(workload, &path, errors);
        unique_name(&workload.name, &path, &mut seen, errors);
    }
    for (i, workload) in spec.offline.iter().enumerate() {
        let path = format!("spec.offline[{i}]");
        validate_offline(workload, &path, errors);
        unique_name(&workload.name, &path, &mut seen, errors);
    }

    let largest_startup = spec
        .online
        .iter()
        .map(|w| w.startup.as_secs_f64())
        .fold(0.0, f64::max);
    validate_forecast(&spec.forecast, interval, largest_startup, errors);

    if spec.events.len() > MAX_EVENTS {
        errors.add(
            "spec.events",
            format!("has {} events; at most {MAX_EVENTS}", spec.events.len()),
        );
    }
    let mut event_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, event) in spec.events.iter().enumerate() {
        let path = format!("spec.events[{i}]");
        validate_event(event, &path, errors);
        if let Some(first) = event_names.insert(event.name.as_str(), i) {
            errors.add(
                format!("{path}.name"),
                format!(
                    "duplicate event name {:?} (also spec.events[{first}])",
                    event.name
                ),
            );
        }
    }
    validate_guardrails(&spec.guardrails, errors);
}

fn unique_name<'a>(
    name: &'a str,
    path: &str,
    seen: &mut BTreeMap<&'a str, String>,
    errors: &mut Errors,
) {
    if name.is_empty() {
        return; // reported by validate_name
    }
    if let Some(first) = seen.get(name) {
        errors.add(
            format!("{path}.name"),
            format!("duplicate workload name {name:?} (also {first}); names are unique across online and offline"),
        );
    } else {
        seen.insert(name, path.to_string());
    }
}

fn validate_capacity(capacity: &CapacitySpec, errors: &mut Errors) {
    if capacity.cpu.is_none() && capacity.node_selector.is_none() {
        errors.add(
            "spec.capacity",
            "needs cpu (a fixed amount) or nodeSelector (read from Nodes)",
        );
    }
    if let Some(cpu) = &capacity.cpu
        && !is_positive(cpu.value)
    {
        errors.add("spec.capacity.cpu", "must be greater than 0");
    }
    if let Some(memory) = &capacity.memory
        && !is_positive(memory.value)
    {
        errors.add("spec.capacity.memory", "must be greater than 0");
    }
    if let Some(selector) = &capacity.node_selector {
        validate_labels(selector, "spec.capacity.nodeSelector", errors);
    }
}

fn validate_online(workload: &OnlineWorkload, path: &str, errors: &mut Errors) {
    validate_name(&workload.name, &format!("{path}.name"), errors);
    validate_target(&workload.target, &format!("{path}.target"), errors);
    if workload.target.kind == WorkloadKind::Job {
        errors.add(
            format!("{path}.target.kind"),
            "an online workload must be a Deployment or StatefulSet (Jobs are offline work)",
        );
    }
    let query = workload.demand.query.trim();
    if query.is_empty() {
        errors.add(format!("{path}.demand.query"), "must not be empty");
    } else if query.len() > MAX_QUERY_LEN {
        errors.add(
            format!("{path}.demand.query"),
            format!("is longer than {MAX_QUERY_LEN} characters"),
        );
    }
    positive(workload.per_replica, &format!("{path}.perReplica"), errors);
    let headroom = workload.headroom;
    if !headroom.is_finite() || !(0.0..=MAX_HEADROOM).contains(&headroom) {
        errors.add(
            format!("{path}.headroom"),
            format!("is {headroom}; must be between 0 and {MAX_HEADROOM} (0.15 = 15% extra)"),
        );
    }
    let quantile = workload.quantile;
    if !(quantile > 0.5 && quantile < 1.0) {
        errors.add(
            format!("{path}.quantile"),
            format!("is {quantile}; must be greater than 0.5 and less than 1 (e.g. 0.95)"),
        );
    }
    validate_replicas(&workload.replicas, &format!("{path}.replicas"), errors);
    if workload.replicas.max == 0 {
        errors.add(
            format!("{path}.replicas.max"),
            "an online workload needs max >= 1",
        );
    }
    if workload.startup.as_secs_f64() > 3_600.0 {
        errors.add(
            format!("{path}.startup"),
            format!("is {}; at most 1h", workload.startup),
        );
    }
    if let Some(resources) = &workload.resources {
        validate_resources(resources, &format!("{path}.resources"), errors);
    }
}

fn validate_offline(workload: &OfflineWorkload, path: &str, errors: &mut Errors) {
    validate_name(&workload.name, &format!("{path}.name"), errors);
    validate_target(&workload.target, &format!("{path}.target"), errors);
    validate_replicas(&workload.replicas, &format!("{path}.replicas"), errors);
    let weight = workload.weight;
    if !(weight > 0.0 && weight <= 1_000_000.0) {
        errors.add(
            format!("{path}.weight"),
            format!("is {weight}; must be greater than 0 and at most 1000000"),
        );
    }
    if let Some(resources) = &workload.resources {
        validate_resources(resources, &format!("{path}.resources"), errors);
    }
}

fn validate_target(target: &TargetRef, path: &str, errors: &mut Errors) {
    match target.kind {
        WorkloadKind::Deployment | WorkloadKind::StatefulSet => {
            if target.name.is_none() {
                errors.add(
                    format!("{path}.name"),
                    format!("required for a {:?}", target.kind),
                );
            }
            if target.selector.is_some() {
                errors.add(
                    format!("{path}.selector"),
                    "only Job targets take a selector; name the Deployment or StatefulSet",
                );
            }
        }
        WorkloadKind::Job => match (&target.name, &target.selector) {
            (None, None) => errors.add(path, "a Job target needs a name or a selector"),
            (Some(_), Some(_)) => {
                errors.add(path, "a Job target takes a name or a selector, not both")
            }
            _ => {}
        },
    }
    if let Some(name) = &target.name
        && let Err(why) = dns1123_subdomain(name)
    {
        errors.add(format!("{path}.name"), why);
    }
    if let Some(namespace) = &target.namespace
        && let Err(why) = dns1123_label(namespace)
    {
        errors.add(format!("{path}.namespace"), why);
    }
    if let Some(selector) = &target.selector {
        validate_labels(selector, &format!("{path}.selector"), errors);
    }
}

fn validate_labels(labels: &BTreeMap<String, String>, path: &str, errors: &mut Errors) {
    if labels.is_empty() {
        errors.add(
            path,
            "must not be empty (an empty selector matches everything)",
        );
    }
    for (key, value) in labels {
        if let Err(why) = label_key(key) {
            errors.add(format!("{path}.{key}"), why);
        }
        if let Err(why) = label_value(value) {
            errors.add(format!("{path}.{key}"), why);
        }
    }
}

fn validate_replicas(replicas: &ReplicaRange, path: &str, errors: &mut Errors) {
    if replicas.min > replicas.max {
        errors.add(
            path,
            format!("min {} is greater than max {}", replicas.min, replicas.max),
        );
    }
    if replicas.max > MAX_REPLICAS {
        errors.add(
            format!("{path}.max"),
            format!(
                "{} replicas is absurd; at most {MAX_REPLICAS}",
                replicas.max
            ),
        );
    }
}

fn validate_resources(resources: &PodResources, path: &str, errors: &mut Errors) {
    if !is_positive(resources.cpu.value) {
        errors.add(format!("{path}.cpu"), "must be greater than 0");
    }
    if !is_positive(resources.memory.value) {
        errors.add(format!("{path}.memory"), "must be greater than 0");
    }
}

fn is_positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

fn positive(value: f64, path: &str, errors: &mut Errors) {
    if !value.is_finite() || value <= 0.0 {
        errors.add(
            path,
            format!("is {value}; must be a finite number greater than 0"),
        );
    }
}

fn validate_forecast(
    forecast: &ForecastSettings,
    interval: f64,
    largest_startup: f64,
    errors: &mut Errors,
) {
    let step = forecast.step.as_secs_f64();
    let history = forecast.history.as_secs_f64();
    let horizon = forecast.horizon.as_secs_f64();
    let retrain = forecast.retrain.as_secs_f64();
    let step_ok = (1.0..=86_400.0).contains(&step);
    if !step_ok {
        errors.add(
            "spec.forecast.step",
            format!("is {}; must be between 1s and 1d", forecast.step),
        );
    }
    if step_ok && history / step > MAX_HISTORY_POINTS as f64 {
        errors.add(
            "spec.forecast.history",
            format!(
                "is {} points of {}; at most {MAX_HISTORY_POINTS} (use a longer step)",
                (history / step) as u64,
                forecast.step
            ),
        );
    }
    if step_ok && history < 10.0 * step {
        errors.add(
            "spec.forecast.history",
            format!("is {}; at least 10 steps", forecast.history),
        );
    }
    let needed_horizon = largest_startup + interval;
    if horizon < needed_horizon {
        errors.add(
            "spec.forecast.horizon",
            format!(
                "is {}; must cover the largest startup plus the interval ({}s) so scale-ups can start in time",
                forecast.horizon, needed_horizon
            ),
        );
    }
    if step_ok && horizon < step {
        errors.add("spec.forecast.horizon", "must be at least one step");
    }
    if step_ok && horizon / step > MAX_HORIZON_POINTS as f64 {
        errors.add(
            "spec.forecast.horizon",
            format!("is more than {MAX_HORIZON_POINTS} steps; use a longer step"),
        );
    }
    if retrain < interval || retrain > 7.0 * 86_400.0 {
        errors.add(
            "spec.forecast.retrain",
            format!(
                "is {}; must be at least the interval and at most 7d",
                forecast.retrain
            ),
        );
    }
    if forecast.seasonality.len() > MAX_SEASONALITIES {
        errors.add(
            "spec.forecast.seasonality",
            format!("at most {MAX_SEASONALITIES} periods"),
        );
    }
    let mut periods: Vec<u128> = Vec::new();
    for (i, period) in forecast.seasonality.iter().enumerate() {
        let path = format!("spec.forecast.seasonality[{i}]");
        let p = period.as_secs_f64();
        if step_ok {
            let step_ns = forecast.step.0.as_nanos();
            if p < 2.0 * step || period.0.as_nanos() % step_ns != 0 {
                errors.add(
                    &path,
                    format!(
                        "is {period}; must be a whole multiple (at least 2) of step {}",
                        forecast.step
                    ),
                );
            }
        }
        if history < 2.0 * p {
            errors.add(
                "spec.forecast.history",
                format!(
                    "is {}; must hold at least two seasons of {period} ({path})",
                    forecast.history
                ),
            );
        }
        if periods.contains(&period.0.as_nanos()) {
            errors.add(&path, format!("{period} is listed twice"));
        }
        periods.push(period.0.as_nanos());
    }
}

fn validate_event(event: &EventSpec, path: &str, errors: &mut Errors) {
    validate_name(&event.name, &format!("{path}.name"), errors);
    match (&event.start, &event.cron) {
        (None, None) => errors.add(path, "needs start (RFC 3339) or cron"),
        (Some(_), Some(_)) => errors.add(path, "takes start or cron, not both"),
        (Some(start), None) => {
            if let Err(e) = chrono::DateTime::parse_from_rfc3339(start.trim()) {
                errors.add(
                    format!("{path}.start"),
                    format!(
                        "{start:?} is not an RFC 3339 time ({e}); write it like 2026-11-10T20:00:00+08:00"
                    ),
                );
            }
            if event.timezone.is_some() {
                errors.add(
                    format!("{path}.timezone"),
                    "applies only to cron; start carries its own offset",
                );
            }
        }
        (None, Some(cron)) => {
            if let Err(why) = parse_cron(cron) {
                errors.add(format!("{path}.cron"), why);
            }
        }
    }
    if let Some(timezone) = &event.timezone
        && let Err(why) = parse_timezone(timezone)
    {
        errors.add(format!("{path}.timezone"), why);
    }
    let duration = event.duration.as_secs_f64();
    if !(1.0..=31.0 * 86_400.0).contains(&duration) {
        errors.add(
            format!("{path}.duration"),
            format!("is {}; must be between 1s and 31d", event.duration),
        );
    }
}

fn validate_guardrails(guardrails: &Guardrails, errors: &mut Errors) {
    let percent = guardrails.scale_down.max_percent_per_minute;
    if !(percent > 0.0 && percent <= 100.0) {
        errors.add(
            "spec.guardrails.scaleDown.maxPercentPerMinute",
            format!("is {percent}; must be greater than 0 and at most 100"),
        );
    }
    if guardrails.scale_down.stabilization.as_secs_f64() > 86_400.0 {
        errors.add(
            "spec.guardrails.scaleDown.stabilization",
            format!("is {}; at most 1d", guardrails.scale_down.stabilization),
        );
    }
    if let Some(after) = guardrails.missing_metrics_after {
        let seconds = after.as_secs_f64();
        if !(1.0..=86_400.0).contains(&seconds) {
            errors.add(
                "spec.guardrails.missingMetricsAfter",
                format!("is {after}; must be between 1s and 1d"),
            );
        }
    }
}

/// A standard five-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_cron(cron: &str) -> Result<croner::Cron, String> {
    let fields = cron.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "{cron:?} has {fields} fields; write five: minute hour day-of-month month day-of-week"
        ));
    }
    if cron.contains('@') {
        return Err(format!("{cron:?}: write the five fields, not a @nickname"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| format!("{cron:?} is not a valid cron expression ({e})"))
}

pub fn parse_timezone(timezone: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(timezone).map_err(|_| {
        format!("{timezone:?} is not an IANA time zone; write it like Asia/Shanghai or UTC")
    })
}

/// Workload and event names: DNS-1123 labels, as they become label values and metric labels.
fn validate_name(name: &str, path: &str, errors: &mut Errors) {
    if name.is_empty() {
        errors.add(path, "must not be empty");
    } else if let Err(why) = dns1123_label(name) {
        errors.add(path, why);
    }
}

fn dns1123_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
        ))
    }
}

fn dns1123_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| dns1123_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid object name: lowercase letters, digits, '-' and '.', at most 253 characters"
        ))
    }
}

fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| dns1123_subdomain(p).is_ok());
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

fn label_value(value: &str) -> Result<(), String> {
    let ok = value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::parse_str;
    use crate::policy::{Cpu, PolicyDuration};

    const GOOD: &str = r#"
apiVersion: tideshift.io/v1alpha1
kind: ShiftPolicy
metadata: {name: shop, namespace: payments}
spec:
  capacity: {cpu: "32", memory: 128Gi}
  online:
    - name: web
      target: {kind: Deployment, name: web}
      demand: {query: 'sum(rate(http_requests_total[1m]))'}
      perReplica: 100
      replicas: {min: 2, max: 40}
  offline:
    - name: batch
      target: {kind: Job, selector: {team: finance}}
      replicas: {min: 0, max: 20}
  events:
    - {name: launch, start: "2026-11-10T20:00:00+08:00", duration: 4h}
    - {name: nightly, cron: "0 20 * * *", timezone: Asia/Shanghai, duration: 15m}
"#;

    fn policy() -> ShiftPolicy {
        parse_str(GOOD, "t").unwrap()
    }

    /// Paths of the errors `validate` reports after `edit`.
    fn errors_after(edit: impl FnOnce(&mut ShiftPolicySpec)) -> Vec<String> {
        let mut p = policy();
        edit(&mut p.spec);
        match validate(&p) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.path.clone()).collect(),
        }
    }

    fn assert_error(edit: impl FnOnce(&mut ShiftPolicySpec), path: &str) {
        let errors = errors_after(edit);
        assert!(
            errors.iter().any(|p| p == path),
            "expected an error at {path}, got {errors:?}"
        );
    }

    #[test]
    fn good_policy_is_valid() {
        assert_eq!(validate(&policy()), Ok(()));
    }

    #[test]
    fn numbers() {
        assert_error(
            |s| s.online[0].per_replica = 0.0,
            "spec.online[0].perReplica",
        );
        assert_error(
            |s| s.online[0].per_replica = -5.0,
            "spec.online[0].perReplica",
        );
        assert_error(
            |s| s.online[0].per_replica = f64::NAN,
            "spec.online[0].perReplica",
        );
        assert_error(
            |s| s.online[0].per_replica = f64::INFINITY,
            "spec.online[0].perReplica",
        );
        assert_error(|s| s.online[0].headroom = -0.1, "spec.online[0].headroom");
        assert_error(|s| s.online[0].headroom = 11.0, "spec.online[0].headroom");
        assert_error(
            |s| s.online[0].headroom = f64::NAN,
            "spec.online[0].headroom",
        );
        assert_error(|s| s.online[0].quantile = 0.5, "spec.online[0].quantile");
        assert_error(|s| s.online[0].quantile = 1.0, "spec.online[0].quantile");
        assert_error(
            |s| s.online[0].quantile = f64::NAN,
            "spec.online[0].quantile",
        );
        assert_error(|s| s.offline[0].weight = 0.0, "spec.offline[0].weight");
        assert_error(|s| s.offline[0].weight = f64::NAN, "spec.offline[0].weight");
        assert_error(
            |s| s.guardrails.scale_down.max_percent_per_minute = 0.0,
            "spec.guardrails.scaleDown.maxPercentPerMinute",
        );
        assert_error(
            |s| s.guardrails.scale_down.max_percent_per_minute = 101.0,
            "spec.guardrails.scaleDown.maxPercentPerMinute",
        );
        assert_error(
            |s| s.guardrails.missing_metrics_after = Some("0s".parse().unwrap()),
            "spec.guardrails.missingMetricsAfter",
        );
        assert_error(
            |s| s.guardrails.missing_metrics_after = Some("2d".parse().unwrap()),
            "spec.guardrails.missingMetricsAfter",
        );
    }

    #[test]
    fn replicas() {
        assert_error(
            |s| s.online[0].replicas = ReplicaRange { min: 5, max: 3 },
            "spec.online[0].replicas",
        );
        assert_error(
            |s| s.offline[0].replicas.max = MAX_REPLICAS + 1,
            "spec.offline[0].replicas.max",
        );
        assert_error(
            |s| s.online[0].replicas = ReplicaRange { min: 0, max: 0 },
            "spec.online[0].replicas.max",
        );
        assert!(
            errors_after(|s| s.offline[0].replicas = ReplicaRange { min: 0, max: 0 }).is_empty()
        );
    }

    #[test]
    fn names() {
        assert_error(|s| s.offline[0].name = "web".into(), "spec.offline[0].name");
        assert_error(|s| s.online[0].name = String::new(), "spec.online[0].name");
        assert_error(
            |s| s.online[0].name = "Web_API".into(),
            "spec.online[0].name",
        );
        assert_error(|s| s.online[0].name = "a".repeat(64), "spec.online[0].name");
        assert_error(
            |s| s.events[1].name = "launch".into(),
            "spec.events[1].name",
        );
        assert_error(|s| s.online.clear(), "spec.online");
    }

    #[test]
    fn metadata() {
        let mut p = policy();
        p.metadata.name = None;
        assert!(validate(&p).unwrap_err()[0].path == "metadata.name");
        p.metadata.name = Some("Bad Name".into());
        assert!(validate(&p).unwrap_err()[0].path == "metadata.name");
    }

    #[test]
    fn targets() {
        assert_error(
            |s| s.online[0].target.name = None,
            "spec.online[0].target.name",
        );
        assert_error(
            |s| s.online[0].target.selector = Some([("a".into(), "b".into())].into()),
            "spec.online[0].target.selector",
        );
        assert_error(
            |s| s.offline[0].target.selector = None,
            "spec.offline[0].target",
        );
        assert_error(
            |s| s.offline[0].target.name = Some("both".into()),
            "spec.offline[0].target",
        );
        assert_error(
            |s| s.offline[0].target.selector = Some(BTreeMap::new()),
            "spec.offline[0].target.selector",
        );
        assert_error(
            |s| s.online[0].target.kind = WorkloadKind::Job,
            "spec.online[0].target.kind",
        );
        assert_error(
            |s| s.online[0].target.namespace = Some("Not Valid".into()),
            "spec.online[0].target.namespace",
        );
        assert_error(
            |s| s.online[0].demand.query = "  ".into(),
            "spec.online[0].demand.query",
        );
    }

    #[test]
    fn capacity() {
        assert_error(|s| s.capacity.cpu = None, "spec.capacity");
        assert!(
            errors_after(|s| {
                s.capacity.cpu = None;
                s.capacity.node_selector = Some([("pool".into(), "shared".into())].into());
            })
            .is_empty()
        );
        assert_error(
            |s| s.capacity.cpu = Some(Cpu::new(0.0)),
            "spec.capacity.cpu",
        );
    }

    #[test]
    fn durations() {
        let secs = PolicyDuration::from_secs;
        assert_error(|s| s.interval = secs(0), "spec.interval");
        assert_error(|s| s.interval = secs(7_200), "spec.interval");
        assert_error(|s| s.forecast.step = secs(0), "spec.forecast.step");
        assert_error(|s| s.forecast.horizon = secs(30), "spec.forecast.horizon");
        assert_error(
            |s| s.online[0].startup = secs(7_200),
            "spec.online[0].startup",
        );
        assert_error(
            |s| s.forecast.history = secs(86_400),
            "spec.forecast.history",
        );
        assert_error(
            |s| s.forecast.seasonality = vec![secs(86_400 + 30)],
            "spec.forecast.seasonality[0]",
        );
        assert_error(
            |s| s.forecast.seasonality = vec![secs(86_400), secs(86_400)],
            "spec.forecast.seasonality[1]",
        );
        assert_error(|s| s.forecast.retrain = secs(1), "spec.forecast.retrain");
        assert_error(
            |s| {
                s.forecast.step = secs(1);
                s.forecast.history = secs(30 * 86_400);
            },
            "spec.forecast.history",
        );
    }

    #[test]
    fn events() {
        assert_error(|s| s.events[0].start = None, "spec.events[0]");
        assert_error(
            |s| s.events[0].cron = Some("0 * * * *".into()),
            "spec.events[0]",
        );
        assert_error(
            |s| s.events[0].start = Some("tomorrow".into()),
            "spec.events[0].start",
        );
        assert_error(
            |s| s.events[0].timezone = Some("UTC".into()),
            "spec.events[0].timezone",
        );
        assert_error(
            |s| s.events[1].cron = Some("61 * * * *".into()),
            "spec.events[1].cron",
        );
        assert_error(
            |s| s.events[1].cron = Some("0 0 * * * *".into()),
            "spec.events[1].cron",
        );
        assert_error(
            |s| s.events[1].cron = Some("@daily".into()),
            "spec.events[1].cron",
        );
        assert_error(
            |s| s.events[1].timezone = Some("Mars/Olympus".into()),
            "spec.events[1].timezone",
        );
        assert_error(
            |s| s.events[1].duration = PolicyDuration::from_secs(0),
            "spec.events[1].duration",
        );
    }

    #[test]
    fn every_error_is_reported() {
        let errors = errors_after(|s| {
            s.online[0].per_replica = -1.0;
            s.online[0].quantile = 2.0;
            s.offline[0].replicas = ReplicaRange { min: 9, max: 1 };
            s.events[1].cron = Some("nope".into());
        });
        assert_eq!(errors.len(), 4, "{errors:?}");
    }
}
