//! What every e2e test target shares: the test bed's variables and an API client.
// Each target uses a subset of these helpers.
#![allow(dead_code)]

pub mod audit;

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// True when the caller opted out of the e2e tests explicitly (`TIDESHIFT_SKIP_E2E=1`). Unset
/// test bed variables without the opt-out fail instead: CI always sets them, so a silent skip
/// would hide a broken harness.
pub fn skip_e2e(what: &str) -> bool {
    let skip = std::env::var("TIDESHIFT_SKIP_E2E").as_deref() == Ok("1");
    if skip {
        eprintln!("skipping {what}: TIDESHIFT_SKIP_E2E=1");
    }
    skip
}

/// A test bed variable (from `tests/e2e/testbed env`); panics, saying how to set it, when unset.
pub fn testbed_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is unset: run the e2e tests through tests/run (it starts the test bed), \
             or by hand after `tests/e2e/testbed up && eval \"$(tests/e2e/testbed env)\"`; \
             set TIDESHIFT_SKIP_E2E=1 to skip them explicitly"
        )
    })
}

/// A client for the kubeconfig at `path`. Reads and writes time out after 10 s, so a stalled
/// etcd or a restarting API server never hangs a test's own reads.
pub async fn client_from(path: &str) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("reading kubeconfig {path}: {e}"));
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {path}: {e}"));
    config.read_timeout = Some(Duration::from_secs(10));
    config.write_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).expect("building a kube client")
}
