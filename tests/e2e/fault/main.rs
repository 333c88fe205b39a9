//! Fault classes on the real test bed (issues 7 and 12): Prometheus down, slow or erroring; bad
//! metric data; an API server restart mid-shift; an etcd stall; leader loss; a leader paused
//! past its lease; a competing writer, remembered across failover and restart; Job selector
//! targets; bad policies; security; a watch that lags behind the API server. Each test runs `tideshift run` as a child process with the
//! least-privilege ServiceAccount, injects its fault with the real components (fault proxies in
//! front of the real Prometheus and API server, `tests/e2e/testbed restart|pause|resume`,
//! SIGSTOP), and judges what was written from the API server's audit log (an independent
//! record: a write whose answer was lost is in it, and it names the replica that wrote) and
//! what the daemon reported (status, Events, metrics, its log).
//!
//! Every test writes `{"passed", "wrong_scale_actions", "lost_actions", "recovery_seconds"}` to
//! `$TIDESHIFT_FAULTS_OUT/<class>.json` when that is set (`tests/e2e/faults --json` collects
//! them), then asserts. The tests share one cluster, so they run one at a time (a lock), each
//! in its own namespace with its own series, removed at the end.
//!
//! One file per class (named after the class in `tests/e2e/faults`' report); what the classes
//! share: `harness.rs` (the test bed's variables, figures, cluster objects, the daemon under
//! test), `proxy.rs` (the fault-injecting proxy in front of Prometheus), `api_proxy.rs` (the one
//! in front of the API server), `shift.rs` (a flash sale interrupted by a
//! fault) and `leader.rs` (two replicas and who led when).
//!
//! Run through `tests/e2e/faults`, `tests/run`, or after `eval "$(tests/e2e/testbed env)"`:
//! `cargo test --test e2e_faults -- --test-threads=1 --nocapture` (a class alone: add its file's
//! name, e.g. `bad_data::`).

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tideshift::policy::{ShiftPolicy, ShiftPolicyStatus};

use common::audit::{Audit, Write};

mod api_proxy;
mod apiserver_restart;
mod bad_data;
mod bad_policies;
mod competing_writer;
mod conflict_memory;
mod etcd_stall;
mod harness;
mod job_selector;
mod leader;
mod leader_loss;
mod leader_pause;
mod prometheus_down;
mod proxy;
mod security;
mod shift;
mod watch_lag;

// Every class sees what every file declares (`use super::*` in each).
#[allow(unused_imports)]
use {
    api_proxy::*, apiserver_restart::*, bad_data::*, bad_policies::*, competing_writer::*,
    conflict_memory::*, etcd_stall::*, harness::*, job_selector::*, leader::*, leader_loss::*,
    leader_pause::*, prometheus_down::*, proxy::*, security::*, shift::*, watch_lag::*,
};
