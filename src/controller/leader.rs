//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas never both write.
//!
//! The algorithm is client-go's: the holder renews `renewTime` every `retry_period`; a
//! candidate takes over only after it has seen the same `(holder, renewTime)` unchanged for a
//! full `leaseDurationSeconds` on its own monotonic clock (so clocks of different machines never
//! get compared), and every write is a `replace` carrying the `resourceVersion` read, so two
//! candidates cannot both win (the loser gets 409). The holder considers itself leader only
//! until `renew_deadline` after the moment it *sent* its last successful renewal, which is
//! shorter than the lease: it stops writing before anyone else may start. On shutdown the
//! holder empties `holderIdentity`, so a standby takes over at its next try, not a lease later.
//!
//! No maintained crate for kube 5 was available to the project, hence this small one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("Lease {namespace}/{name}: {verb} failed: {cause}")]
    Api {
        namespace: String,
        name: String,
        verb: &'static str,
        cause: String,
    },
}

/// Shared view of leadership: cheap to clone, checked before every write.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<State>,
}

struct State {
    /// `None` when leader election is off: this replica always leads.
    leading_until: std::sync::Mutex<Option<Option<Instant>>>,
    healthy: AtomicBool,
}

impl Leadership {
    /// Leader election off: always the leader.
    pub fn always() -> Self {
        Self {
            inner: Arc::new(State {
                leading_until: std::sync::Mutex::new(None),
                healthy: AtomicBool::new(true),
            }),
        }
    }

    fn elected() -> Self {
        Self {
            inner: Arc::new(State {
                leading_until: std::sync::Mutex::new(Some(None)),
                healthy: AtomicBool::new(false),
            }),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Option<Instant>>> {
        self.inner
            .leading_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_leader(&self) -> bool {
        match *self.slot() {
            None => true,
            Some(until) => until.is_some_and(|until| Instant::now() < until),
        }
    }

    /// The Lease could be read or written at the last try.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    fn lead_until(&self, until: Option<Instant>) {
        let mut slot = self.slot();
        if slot.is_some() {
            *slot = Some(until);
        }
    }
}

/// A Lease's holder and renew time, and when this replica first saw that pair.
type ObservedRecord = (Option<String>, Option<MicroTime>, Instant);

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Leadership,
    /// The holder and renew time last seen, and when (on our clock) they were first seen.
    observed: Mutex<Option<ObservedRecord>>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leadership: Leadership::elected(),
            observed: Mutex::new(None),
        }
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    fn error(&self, verb: &'static str, e: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            verb,
            cause: e.to_string(),
        }
    }

    fn lease_seconds(&self) -> i32 {
        self.config
            .lease_duration
            .as_secs()
            .clamp(1, i32::MAX as u64) as i32
    }

    fn is_conflict(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Api(status) if status.is_conflict() || status.is_already_exists())
    }

    /// One round: create, renew or take over the Lease. `Ok(true)` when we hold it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let me = &self.config.identity;
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error("get", e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if Self::is_conflict(&e) => Ok(false),
                Err(e) => Err(self.error("create", e)),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(me.as_str()) {
            let record = (holder.clone(), spec.renew_time.clone());
            let mut observed = self.observed.lock().await;
            let first_seen = match &*observed {
                Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
                _ => {
                    *observed = Some((record.0, record.1, Instant::now()));
                    Instant::now()
                }
            };
            let duration = Duration::from_secs(
                spec.lease_duration_seconds
                    .unwrap_or(self.lease_seconds())
                    .max(1) as u64,
            );
            if holder.is_some() && first_seen.elapsed() < duration {
                return Ok(false);
            }
            tracing::info!(previous = ?holder, identity = %me, "taking over the lease");
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me.clone());
        spec.lease_duration_seconds = Some(self.lease_seconds());
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        // `replace` carries the resourceVersion read above: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if Self::is_conflict(&e) => Ok(false),
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// Give the lease up if we hold it, so a standby takes over at once.
    pub async fn release(&self) -> Result<(), LeaseError> {
        self.leadership.lead_until(None);
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error("get", e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %self.config.identity, "released the lease");
                Ok(())
            }
            Err(e) if Self::is_conflict(&e) => Ok(()),
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// Keep trying until `shutdown` resolves, then release. `on_change` sees every change of
    /// leadership (for the `tideshift_leader` metric and logs).
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
        on_change: impl Fn(bool),
    ) {
        tokio::pin!(shutdown);
        let mut was_leader = false;
        loop {
            let sent = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.leadership
                        .lead_until(Some(sent + self.config.renew_deadline));
                    self.leadership.inner.healthy.store(true, Ordering::SeqCst);
                }
                Ok(false) => {
                    self.leadership.lead_until(None);
                    self.leadership.inner.healthy.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    // Leadership, if any, runs out by itself at the renew deadline.
                    tracing::warn!(error = %e, "lease not reachable");
                    self.leadership.inner.healthy.store(false, Ordering::SeqCst);
                }
            }
            let leading = self.leadership.is_leader();
            if leading != was_leader {
                tracing::info!(identity = %self.config.identity, leading, "leadership changed");
                on_change(leading);
                was_leader = leading;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the lease");
        }
        on_change(false);
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    fn elector() -> (
        LeaderElector,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let config = LeaseConfig {
            name: "tideshift".into(),
            namespace: "tideshift-system".into(),
            identity: "replica-a".into(),
            lease_duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
        };
        (LeaderElector::new(client, config), handle)
    }

    fn lease(holder: &str, renew: &str) -> serde_json::Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "tideshift", "namespace": "tideshift-system", "resourceVersion": "7"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1,
                        "renewTime": renew, "leaseTransitions": 3}})
    }

    fn ok(send: tower_test::mock::SendResponse<Response<Body>>, body: serde_json::Value) {
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn waits_a_full_lease_before_taking_over_and_never_on_409() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            // Round 1: held by b; first sighting, so no takeover.
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), "GET");
            ok(send, lease("replica-b", "2026-11-26T08:00:00.000000Z"));
            // Round 2 (after the lease): unchanged, so take over with a PUT carrying rv 7.
            let (_, send) = handle.next_request().await.unwrap();
            ok(send, lease("replica-b", "2026-11-26T08:00:00.000000Z"));
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), "PUT");
            let body = request.into_body().collect_bytes().await.unwrap();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["metadata"]["resourceVersion"], "7");
            assert_eq!(sent["spec"]["holderIdentity"], "replica-a");
            assert_eq!(sent["spec"]["leaseTransitions"], 4);
            // Someone else won the race: 409.
            send.send_response(
                Response::builder()
                    .status(409)
                    .body(Body::from(
                        serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "Conflict", "code": 409,
                            "message": "the object has been modified"}))
                        .unwrap(),
                    ))
                    .unwrap(),
            );
        });
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            !elector.try_acquire_or_renew().await.unwrap(),
            "409 means we lost"
        );
        server.await.unwrap();
        assert!(!elector.leadership().is_leader());
    }

    #[tokio::test]
    async fn leadership_expires_at_the_renew_deadline() {
        let leadership = Leadership::elected();
        assert!(!leadership.is_leader());
        leadership.lead_until(Some(Instant::now() + Duration::from_millis(50)));
        assert!(leadership.is_leader());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!leadership.is_leader(), "no renewal, no leadership");
        assert!(Leadership::always().is_leader());
    }
}
