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
//! Writes are fenced by time, not only by a flag: a write that may take up to `t` is sent only
//! while `now + t` is before the end of the lease this replica last renewed (`sent + lease
//! duration`), the earliest moment another replica can take over. A request still in flight
//! then has timed out on our side before a successor may write. Every Lease request has its own
//! timeout too, so a hung API server never keeps a renewal (or a takeover) waiting past it.
//!
//! The holder renews by writing the Lease it last wrote (its `resourceVersion` is the
//! precondition), without reading it first: one request per `retry_period` instead of two. A
//! standby that has seen the same record for almost a lease wakes up at the moment it expires
//! rather than at its next `retry_period`, so a takeover costs the lease plus one request.
//!
//! No maintained crate for kube 5 was available to the project, hence this small one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Longest wait for one Lease request.
    pub request_timeout: Duration,
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

/// One successful renewal's consequences, on this replica's monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Term {
    /// Reconcile and write until then: the renew deadline after the renewal was sent.
    until: Instant,
    /// No other replica can take the Lease before then: a full lease after it was sent.
    lease_end: Instant,
}

struct State {
    /// `None` when leader election is off: this replica always leads.
    term: std::sync::Mutex<Option<Option<Term>>>,
    healthy: AtomicBool,
    /// Counts the times leadership began; what a predecessor left behind is read again then.
    epoch: AtomicU64,
}

impl Leadership {
    /// Leader election off: always the leader.
    pub fn always() -> Self {
        Self {
            inner: Arc::new(State {
                term: std::sync::Mutex::new(None),
                healthy: AtomicBool::new(true),
                epoch: AtomicU64::new(0),
            }),
        }
    }

    fn elected() -> Self {
        Self {
            inner: Arc::new(State {
                term: std::sync::Mutex::new(Some(None)),
                healthy: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
            }),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Option<Term>>> {
        self.inner
            .term
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_leader(&self) -> bool {
        match *self.slot() {
            None => true,
            Some(term) => term.is_some_and(|term| Instant::now() < term.until),
        }
    }

    /// Whether a request that may take up to `within` may be sent now: this replica leads, and
    /// no other replica can take the Lease before that request has finished or timed out.
    pub fn may_write(&self, within: Duration) -> bool {
        match *self.slot() {
            None => true,
            Some(term) => term.is_some_and(|term| {
                let now = Instant::now();
                now < term.until && now + within < term.lease_end
            }),
        }
    }

    /// Changes each time this replica starts leading (never with leader election off).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::SeqCst)
    }

    /// The Lease could be read or written at the last try.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    fn lead(&self, term: Option<Term>) {
        let mut slot = self.slot();
        let Some(current) = slot.as_mut() else {
            return;
        };
        let was_leading = current.is_some_and(|t| Instant::now() < t.until);
        let leading = term.is_some_and(|t| Instant::now() < t.until);
        if leading && !was_leading {
            self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        }
        *current = term;
    }
}

/// A Lease's holder and renew time, when this replica first saw that pair, and the lease the
/// holder announced.
struct ObservedRecord {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    first_seen: Instant,
    duration: Duration,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Leadership,
    /// The holder and renew time last seen, and when (on our clock) they were first seen.
    observed: Mutex<Option<ObservedRecord>>,
    /// The Lease as this replica last wrote it while holding it: renewed without a read.
    held: Mutex<Option<Lease>>,
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
            held: Mutex::new(None),
        }
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    fn error(&self, verb: &'static str, cause: String) -> LeaseError {
        LeaseError::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            verb,
            cause,
        }
    }

    /// One Lease request, given up after `request_timeout`.
    async fn call<T>(
        &self,
        verb: &'static str,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, LeaseError> {
        tokio::time::timeout(self.config.request_timeout, request)
            .await
            .map_err(|_| {
                self.error(
                    verb,
                    format!("no answer within {:?}", self.config.request_timeout),
                )
            })
    }

    fn lease_seconds(&self) -> i32 {
        // Rounded up: a holder must never announce a shorter lease than it counts on.
        let millis = self.config.lease_duration.as_millis().max(1);
        millis.div_ceil(1000).min(i32::MAX as u128) as i32
    }

    fn is_conflict(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Api(status) if status.is_conflict() || status.is_already_exists())
    }

    /// Renew the Lease we hold by writing back what we last wrote: `Some(true)` renewed,
    /// `Some(false)` someone else changed it (409: read it again), `None` nothing held.
    async fn renew_held(&self) -> Result<Option<bool>, LeaseError> {
        let mut held = self.held.lock().await;
        let Some(mut lease) = held.clone() else {
            return Ok(None);
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        let written = self
            .call(
                "update",
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease),
            )
            .await?;
        match written {
            Ok(lease) => {
                *held = Some(lease);
                Ok(Some(true))
            }
            Err(e)
                if Self::is_conflict(&e)
                    || matches!(&e, kube::Error::Api(s) if s.is_not_found()) =>
            {
                *held = None;
                Ok(Some(false))
            }
            Err(e) => Err(self.error("update", e.to_string())),
        }
    }

    /// One round: create, renew or take over the Lease. `Ok(true)` when we hold it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        if self.renew_held().await? == Some(true) {
            return Ok(true);
        }
        let me = &self.config.identity;
        let Some(mut lease) = self
            .call("get", self.api.get_opt(&self.config.name))
            .await?
            .map_err(|e| self.error("get", e.to_string()))?
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
            return match self
                .call("create", self.api.create(&PostParams::default(), &lease))
                .await?
            {
                Ok(created) => {
                    *self.held.lock().await = Some(created);
                    Ok(true)
                }
                Err(e) if Self::is_conflict(&e) => Ok(false),
                Err(e) => Err(self.error("create", e.to_string())),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(me.as_str()) {
            let duration = Duration::from_secs(
                spec.lease_duration_seconds
                    .unwrap_or(self.lease_seconds())
                    .max(1) as u64,
            );
            let mut observed = self.observed.lock().await;
            let first_seen = match &*observed {
                Some(seen) if seen.holder == holder && seen.renew_time == spec.renew_time => {
                    seen.first_seen
                }
                _ => {
                    *observed = Some(ObservedRecord {
                        holder: holder.clone(),
                        renew_time: spec.renew_time.clone(),
                        first_seen: Instant::now(),
                        duration,
                    });
                    Instant::now()
                }
            };
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
            .call(
                "update",
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease),
            )
            .await?
        {
            Ok(written) => {
                *self.held.lock().await = Some(written);
                Ok(true)
            }
            Err(e) if Self::is_conflict(&e) => Ok(false),
            Err(e) => Err(self.error("update", e.to_string())),
        }
    }

    /// How long to wait before the next try: the retry period, or less when the record seen
    /// expires sooner (a standby then tries at the moment it may take over).
    async fn next_try(&self) -> Duration {
        let retry = self.config.retry_period;
        if self.held.lock().await.is_some() {
            return retry;
        }
        let observed = self.observed.lock().await;
        let Some(seen) = observed.as_ref().filter(|seen| seen.holder.is_some()) else {
            return retry;
        };
        let expires = seen.first_seen + seen.duration;
        let left = expires.saturating_duration_since(Instant::now());
        // A few milliseconds late rather than early: an early try only finds it held.
        (left + Duration::from_millis(5)).min(retry)
    }

    /// Give the lease up if we hold it, so a standby takes over at once.
    pub async fn release(&self) -> Result<(), LeaseError> {
        self.leadership.lead(None);
        *self.held.lock().await = None;
        let Some(mut lease) = self
            .call("get", self.api.get_opt(&self.config.name))
            .await?
            .map_err(|e| self.error("get", e.to_string()))?
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
            .call(
                "update",
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease),
            )
            .await?
        {
            Ok(_) => {
                tracing::info!(identity = %self.config.identity, "released the lease");
                Ok(())
            }
            Err(e) if Self::is_conflict(&e) => Ok(()),
            Err(e) => Err(self.error("update", e.to_string())),
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
                    self.leadership.lead(Some(Term {
                        until: sent + self.config.renew_deadline,
                        lease_end: sent + self.config.lease_duration,
                    }));
                    self.leadership.inner.healthy.store(true, Ordering::SeqCst);
                }
                Ok(false) => {
                    self.leadership.lead(None);
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
            let wait = self.next_try().await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
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
            request_timeout: Duration::from_millis(300),
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

    fn failure(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, reason: &str) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(
                    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": reason, "code": code}))
                    .unwrap(),
                ))
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
            failure(send, 409, "Conflict");
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
    async fn the_holder_renews_without_reading_and_rereads_after_a_409() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            // Round 1: nobody holds it: create.
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), "GET");
            failure(send, 404, "NotFound");
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), "POST");
            ok(send, lease("replica-a", "2026-11-26T08:00:00.000000Z"));
            // Round 2: a renewal is one PUT of what was written, its resourceVersion the
            // precondition.
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), "PUT");
            let body = request.into_body().collect_bytes().await.unwrap();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["metadata"]["resourceVersion"], "7");
            assert_eq!(sent["spec"]["holderIdentity"], "replica-a");
            failure(send, 409, "Conflict");
            // ... which failed: read again, and find b holding it.
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), "GET");
            ok(send, lease("replica-b", "2026-11-26T08:00:01.000000Z"));
        });
        assert!(elector.try_acquire_or_renew().await.unwrap());
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_request_without_an_answer_fails_within_its_timeout() {
        let (elector, mut handle) = elector();
        let started = Instant::now();
        let (result, _pending) =
            tokio::join!(elector.try_acquire_or_renew(), handle.next_request());
        let error = result.expect_err("no answer is an error");
        assert!(error.to_string().contains("no answer within"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_standby_tries_again_when_the_record_it_saw_expires() {
        let (elector, mut handle) = elector();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            ok(send, lease("replica-b", "2026-11-26T08:00:00.000000Z"));
        });
        assert!(!elector.try_acquire_or_renew().await.unwrap());
        server.await.unwrap();
        // Seen just now, 1 s lease, 200 ms retry: the retry period comes first.
        assert_eq!(elector.next_try().await, Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(900)).await;
        let wait = elector.next_try().await;
        assert!(wait < Duration::from_millis(150), "{wait:?}");
    }

    fn term(until_ms: u64, lease_ms: u64) -> Term {
        let now = Instant::now();
        Term {
            until: now + Duration::from_millis(until_ms),
            lease_end: now + Duration::from_millis(lease_ms),
        }
    }

    #[tokio::test]
    async fn leadership_expires_at_the_renew_deadline() {
        let leadership = Leadership::elected();
        assert!(!leadership.is_leader());
        leadership.lead(Some(term(50, 80)));
        assert!(leadership.is_leader());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!leadership.is_leader(), "no renewal, no leadership");
        assert!(Leadership::always().is_leader());
        assert!(Leadership::always().may_write(Duration::from_secs(3600)));
    }

    #[test]
    fn a_write_is_sent_only_if_it_ends_before_anyone_else_may_take_over() {
        let leadership = Leadership::elected();
        assert!(!leadership.may_write(Duration::ZERO));
        leadership.lead(Some(term(3000, 4000)));
        assert!(leadership.may_write(Duration::from_secs(2)));
        assert!(
            !leadership.may_write(Duration::from_secs(5)),
            "a 5 s write could outlive the lease"
        );
        // Still leading, but the lease ends in 1.5 s: a 2 s write waits for a renewal.
        leadership.lead(Some(term(1000, 1500)));
        assert!(leadership.is_leader());
        assert!(!leadership.may_write(Duration::from_secs(2)));
    }

    #[test]
    fn the_epoch_moves_when_leading_begins_not_on_renewals() {
        let leadership = Leadership::elected();
        assert_eq!(leadership.epoch(), 0);
        leadership.lead(Some(term(1000, 2000)));
        leadership.lead(Some(term(1000, 2000)));
        assert_eq!(leadership.epoch(), 1, "a renewal is the same term");
        leadership.lead(None);
        leadership.lead(Some(term(1000, 2000)));
        assert_eq!(leadership.epoch(), 2);
    }
}
