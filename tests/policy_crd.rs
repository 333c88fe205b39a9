//! The generated CRD: structurally valid, every CEL rule has a message, and the rules reject at
//! `kubectl apply` what they claim to (evaluated client-side with kube's CEL engine), in
//! agreement with the daemon's own validation.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;
use tideshift::policy::crd_yaml;
use tideshift::policy::{ShiftPolicy, parse_str, validate};

fn schema() -> Value {
    let crd = ShiftPolicy::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("openAPIV3Schema"),
    )
    .unwrap()
}

/// Every sub-schema with its JSON path.
fn walk<'a>(path: String, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    out.push((path.clone(), node));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(format!("{path}.{name}"), child, out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(format!("{path}[]"), items, out);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(format!("{path}{{}}"), extra, out);
    }
}

#[test]
fn crd_yaml_is_a_custom_resource_definition() {
    let text = crd_yaml().unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("shiftpolicies.tideshift.io")
    );
    assert_eq!(crd.spec.group, "tideshift.io");
    assert_eq!(crd.spec.names.kind, "ShiftPolicy");
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
}

#[test]
fn schema_is_structural() {
    let schema = schema();
    let mut nodes = Vec::new();
    walk("".into(), &schema, &mut nodes);
    for (path, node) in &nodes {
        let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !int_or_string && !preserve {
            assert!(node.get("type").is_some(), "{path} has no type: {node}");
        }
        if node.get("properties").is_some() {
            assert_eq!(node.get("type"), Some(&Value::from("object")), "{path}");
            assert!(
                node.get("additionalProperties").is_none(),
                "{path}: properties and additionalProperties are exclusive"
            );
        }
        for forbidden in ["$ref", "oneOf", "definitions", "$defs"] {
            assert!(node.get(forbidden).is_none(), "{path} has {forbidden}");
        }
        if let Some(any_of) = node.get("anyOf").and_then(Value::as_array) {
            for branch in any_of {
                assert!(branch.get("type").is_none(), "{path}: typed anyOf branch");
            }
        }
    }
}

#[test]
fn every_cel_rule_has_a_message_and_bounded_cost() {
    let schema = schema();
    let mut nodes = Vec::new();
    walk("".into(), &schema, &mut nodes);
    let mut rules = 0;
    for (path, node) in &nodes {
        let Some(list) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for rule in list {
            rules += 1;
            let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
            let message = rule.get("message").and_then(Value::as_str).unwrap_or("");
            assert!(!text.is_empty(), "{path}: empty rule");
            assert!(!message.is_empty(), "{path}: rule {text:?} has no message");
            // The apiserver estimates CEL cost from maxItems/maxLength; unbounded lists and
            // strings under a list rule make it refuse the CRD.
            if (text.contains(".all(") || text.contains(".exists"))
                && node.get("type") == Some(&Value::from("array"))
            {
                assert!(
                    node.get("maxItems").is_some(),
                    "{path}: list rule without maxItems"
                );
            }
        }
    }
    assert!(rules >= 14, "expected the documented rules, found {rules}");
    for (path, node) in &nodes {
        if path.starts_with(".spec")
            && path.ends_with(".name")
            && node.get("type") == Some(&Value::from("string"))
        {
            assert!(
                node.get("maxLength").is_some(),
                "{path} needs maxLength for CEL cost"
            );
        }
        // Status is written by the daemon and carries no rules; the spec is user input.
        if path.starts_with(".spec") && node.get("type") == Some(&Value::from("array")) {
            assert!(node.get("maxItems").is_some(), "{path} needs maxItems");
        }
    }
}

#[test]
fn openapi_bounds_are_present() {
    let text = serde_json::to_string(&schema()).unwrap();
    for needle in [
        r#""maximum":10000"#,
        r#""maximum":10.0"#,
        r#""minItems":1"#,
        r#""format":"date-time""#,
        r#""enum":["enforce","dry-run"]"#,
        r#""enum":["Deployment","StatefulSet","Job"]"#,
    ] {
        let compact = needle.replace(".0", "");
        assert!(
            text.contains(needle) || text.contains(&compact),
            "missing {needle} in schema"
        );
    }
}

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

fn cel_errors(policy: &ShiftPolicy) -> Vec<String> {
    match ShiftPolicy::validate_cel(policy) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

#[test]
fn good_policies_pass_the_cel_rules() {
    let policy = parse_str(GOOD, "good").unwrap();
    assert_eq!(cel_errors(&policy), Vec::<String>::new());
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let policy = tideshift::policy::load_file(&path).unwrap();
            assert_eq!(
                cel_errors(&policy),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
        }
    }
}

/// Each edit breaks one rule that `kubectl apply` enforces: the CEL rules reject it with the
/// expected message, and the daemon's `validate` rejects it too.
#[test]
fn cel_rules_reject_what_they_claim_and_agree_with_validate() {
    type Edit = fn(&mut ShiftPolicy);
    let cases: &[(&str, Edit)] = &[
        ("replicas.min must not exceed", |p| {
            p.spec.online[0].replicas.min = 50
        }),
        ("perReplica must be greater than 0", |p| {
            p.spec.online[0].per_replica = 0.0
        }),
        ("quantile must be greater than 0.5", |p| {
            p.spec.online[0].quantile = 0.4
        }),
        ("quantile must be greater than 0.5", |p| {
            p.spec.online[0].quantile = 1.0
        }),
        ("exactly one of start", |p| {
            p.spec.events[0].cron = Some("0 0 * * *".into())
        }),
        ("exactly one of start", |p| p.spec.events[1].cron = None),
        ("timezone applies only to cron", |p| {
            p.spec.events[0].timezone = Some("UTC".into())
        }),
        ("a Job target needs a name or a selector", |p| {
            p.spec.offline[0].target.selector = None
        }),
        ("a Deployment or StatefulSet target needs a name", |p| {
            p.spec.online[0].target.name = None
        }),
        ("only Job targets take a selector", |p| {
            p.spec.online[0].target.selector = Some([("a".into(), "b".into())].into())
        }),
        ("online workload must be a Deployment or StatefulSet", |p| {
            p.spec.online[0].target = p.spec.offline[0].target.clone()
        }),
        ("capacity needs cpu", |p| p.spec.capacity.cpu = None),
        ("unique across online and offline", |p| {
            p.spec.offline[0].name = "web".into()
        }),
        ("online workload names must be unique", |p| {
            let copy = p.spec.online[0].clone();
            p.spec.online.push(copy)
        }),
        ("event names must be unique", |p| {
            p.spec.events[1].name = "launch".into()
        }),
        ("weight must be greater than 0", |p| {
            p.spec.offline[0].weight = 0.0
        }),
        ("maxPercentPerMinute must be greater than 0", |p| {
            p.spec.guardrails.scale_down.max_percent_per_minute = 0.0
        }),
        ("replicas.max >= 1", |p| {
            p.spec.online[0].replicas = tideshift::policy::ReplicaRange { min: 0, max: 0 }
        }),
    ];
    for (expected, edit) in cases {
        let mut policy = parse_str(GOOD, "good").unwrap();
        edit(&mut policy);
        let errors = cel_errors(&policy);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "CEL should reject with {expected:?}; got {errors:?}"
        );
        assert!(
            validate(&policy).is_err(),
            "validate() accepts what the CRD rejects ({expected})"
        );
    }
}
