//! The API server's audit log, which the test bed writes (`TESTBED_AUDIT_LOG`, policy in
//! tests/e2e/testbed): the record of every write to workloads, the daemon's Lease and the
//! ShiftPolicy status, independent of what the writer says. A write whose answer was lost on
//! the way back is in it; a write refused (409, 403) is in it with its code; who wrote is the
//! user, and for the daemon the replica its User-Agent names (`tideshift/<version> (<id>)`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The daemon's identity on the test bed: the chart's ServiceAccount.
pub const DAEMON_USER: &str = "system:serviceaccount:tideshift-system:tideshift";

/// A replica write to a workload, as the API server recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    /// When the API server completed it (Unix seconds).
    pub at: f64,
    /// `Deployment ns/name`, `Job ns/name`: how the daemon names targets.
    pub target: String,
    /// Replicas before and after (a Job's parallelism, 0 while suspended).
    pub from: u64,
    pub to: u64,
    /// The daemon replica (from its User-Agent), else the user.
    pub by: String,
    /// Made with the daemon's ServiceAccount.
    pub daemon: bool,
}

/// Any recorded request of the kinds the policy logs.
#[derive(Clone, Debug)]
pub struct Request {
    pub at: f64,
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    pub by: String,
    pub daemon: bool,
}

impl Request {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A request that changes something; the log also records the daemon's reads.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

pub struct Audit {
    path: PathBuf,
}

fn text<'v>(value: &'v Value, path: &[&str]) -> &'v str {
    let mut v = value;
    for key in path {
        v = &v[*key];
    }
    v.as_str().unwrap_or("")
}

fn timestamp(value: &str) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(value).ok()?;
    Some(at.timestamp_micros() as f64 / 1e6)
}

/// The replica named in the daemon's User-Agent, `tideshift/0.1.0 (replica-a)`.
fn replica(agent: &str) -> Option<&str> {
    let rest = agent.strip_prefix("tideshift/")?;
    let start = rest.find('(')? + 1;
    let end = rest.rfind(')')?;
    (start <= end).then(|| &rest[start..end])
}

fn kind_of(resource: &str) -> Option<&'static str> {
    match resource {
        "deployments" => Some("Deployment"),
        "statefulsets" => Some("StatefulSet"),
        "jobs" => Some("Job"),
        _ => None,
    }
}

impl Audit {
    pub fn new(path: impl Into<PathBuf>) -> Audit {
        Audit { path: path.into() }
    }

    /// The current file and its rotated backups (`audit-<time>.log`), oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let stem = self
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("audit")
            .to_string();
        let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.starts_with(&format!("{stem}-")) && n.ends_with(".log")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        backups.sort();
        backups.push(self.path.clone());
        backups
    }

    /// Every event (ResponseComplete), in the order the API server completed them.
    fn events(&self) -> Vec<Value> {
        let mut events: Vec<(f64, Value)> = self
            .files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter_map(|e| Some((timestamp(text(&e, &["stageTimestamp"]))?, e)))
            .collect();
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        events.into_iter().map(|(_, e)| e).collect()
    }

    fn request(event: &Value) -> Request {
        let user = text(event, &["user", "username"]);
        let agent = text(event, &["userAgent"]);
        let daemon = user == DAEMON_USER;
        let by = match replica(agent) {
            Some(id) if daemon => id.to_string(),
            _ => user.to_string(),
        };
        let name = match text(event, &["objectRef", "name"]) {
            "" => text(event, &["requestObject", "metadata", "name"]),
            name => name,
        };
        Request {
            at: timestamp(text(event, &["stageTimestamp"])).unwrap_or(0.0),
            verb: text(event, &["verb"]).to_string(),
            resource: text(event, &["objectRef", "resource"]).to_string(),
            subresource: text(event, &["objectRef", "subresource"]).to_string(),
            namespace: text(event, &["objectRef", "namespace"]).to_string(),
            name: name.to_string(),
            code: event["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            by,
            daemon,
        }
    }

    /// Every recorded request in `namespace` (all namespaces when empty).
    pub fn requests(&self, namespace: &str) -> Vec<Request> {
        self.events()
            .iter()
            .map(Self::request)
            .filter(|r| namespace.is_empty() || r.namespace == namespace)
            .collect()
    }

    /// Every successful replica write to a workload in `namespace`, by anyone, in order, with
    /// the value before it (from the creation and the writes before).
    pub fn writes(&self, namespace: &str) -> Vec<Write> {
        // Per object: replicas (Deployments), or parallelism and suspend (Jobs).
        let mut state: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        let mut writes = Vec::new();
        for event in self.events() {
            let request = Self::request(&event);
            let Some(kind) = kind_of(&request.resource) else {
                continue;
            };
            if request.namespace != namespace
                || !request.succeeded()
                || !matches!(request.verb.as_str(), "create" | "update" | "patch")
                || !(request.subresource.is_empty() || request.subresource == "scale")
            {
                continue;
            }
            let target = format!("{kind} {namespace}/{}", request.name);
            let spec = &event["requestObject"]["spec"];
            let before = state.get(&target).copied();
            let create = request.verb == "create";
            let (count, suspended) = before.unwrap_or((1, false));
            let (count, suspended) = if kind == "Job" {
                (
                    spec["parallelism"]
                        .as_u64()
                        .unwrap_or(if create { 1 } else { count }),
                    spec["suspend"]
                        .as_bool()
                        .unwrap_or(if create { false } else { suspended }),
                )
            } else {
                match spec["replicas"].as_u64() {
                    Some(replicas) => (replicas, false),
                    None if create => (1, false),
                    // A write that does not set replicas (an edit of the template).
                    None => continue,
                }
            };
            state.insert(target.clone(), (count, suspended));
            if create {
                continue;
            }
            let value = |(count, suspended): (u64, bool)| if suspended { 0 } else { count };
            let to = value((count, suspended));
            writes.push(Write {
                at: request.at,
                from: before.map_or(to, value),
                to,
                target,
                by: request.by,
                daemon: request.daemon,
            });
        }
        writes
    }

    /// The replica writes the daemon made in `namespace`.
    pub fn daemon_writes(&self, namespace: &str) -> Vec<Write> {
        self.writes(namespace)
            .into_iter()
            .filter(|w| w.daemon)
            .collect()
    }

    /// Writes to the Lease `namespace/name`: when, by whom, whether they succeeded.
    pub fn lease_writes(&self, namespace: &str, name: &str) -> Vec<Request> {
        self.requests(namespace)
            .into_iter()
            .filter(|r| r.resource == "leases" && r.name == name)
            .filter(Request::is_write)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replica_is_read_from_the_user_agent() {
        assert_eq!(replica("tideshift/0.1.0 (replica-a)"), Some("replica-a"));
        assert_eq!(replica("kubectl/v1.37.2"), None);
    }
}
