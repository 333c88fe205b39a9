use http::{Request, Response};
use kube::client::Body;

use std::sync::Arc;

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Any write may be sent.
fn allow(_: Duration) -> Result<(), WriteRefused> {
    Ok(())
}

fn deployment(replicas: i32) -> serde_json::Value {
    deployment_at(replicas, "5", None)
}

/// A Deployment at `resource_version` whose replicas `manager` wrote last, if given.
fn deployment_at(
    replicas: i32,
    resource_version: &str,
    manager: Option<&str>,
) -> serde_json::Value {
    let managed: Vec<serde_json::Value> = manager
        .into_iter()
        .map(|m| {
            json!({"manager": m, "operation": "Update", "subresource": "scale",
                       "time": "2026-11-26T08:00:00Z", "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:spec": {"f:replicas": {}}}})
        })
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "payment", "namespace": "shop",
                     "resourceVersion": resource_version, "managedFields": managed},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "payment"}},
            "template": {"metadata": {"labels": {"app": "payment"}}, "spec": {"containers": [
                {"name": "app", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}
            ]}}
        },
        "status": {"readyReplicas": replicas}
    })
}

fn hpa_list(target: Option<&str>) -> serde_json::Value {
    let items: Vec<serde_json::Value> = target
            .into_iter()
            .map(|name| {
                json!({
                    "metadata": {"name": "payment-hpa", "namespace": "shop"},
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                             "maxReplicas": 10}
                })
            })
            .collect();
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
               "metadata": {}, "items": items})
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, body: serde_json::Value) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn target() -> Target {
    Target {
        kind: WorkloadKind::Deployment,
        namespace: "shop".into(),
        name: Some("payment".into()),
        selector: None,
    }
}

async fn next(
    handle: &mut Handle,
) -> (
    Request<Body>,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("an API request")
        .expect("the client is alive")
}

fn spawn_observe(
    actuator: &Arc<KubeActuator>,
    target: Target,
) -> tokio::task::JoinHandle<Result<Observed, ActuateError>> {
    let actuator = actuator.clone();
    tokio::spawn(async move { actuator.observe(&target).await })
}

fn assert_path_contains(request: &Request<Body>, fragment: &str) {
    let path = request.uri().path();
    assert!(
        path.contains(fragment),
        "{path} does not contain {fragment}"
    );
}

#[tokio::test]
async fn at_most_max_in_flight_workload_operations_reach_the_api_server() {
    let (client, mut handle) = mock();
    let actuator = Arc::new(KubeActuator::new(
        client,
        Duration::from_secs(60),
        Duration::from_secs(5),
    ));
    let tasks: Vec<_> = (0..MAX_IN_FLIGHT + 8)
        .map(|_| spawn_observe(&actuator, target()))
        .collect();
    let mut pending = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        let (request, send) = next(&mut handle).await;
        assert_eq!(
            request.uri().path(),
            "/apis/apps/v1/namespaces/shop/deployments/payment"
        );
        pending.push(send);
    }
    // Every slot is taken: the next operation waits in the daemon, not on a new connection.
    let more = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
    assert!(
        more.is_err(),
        "more than {MAX_IN_FLIGHT} requests in flight"
    );
    // One operation finishes (its HPA list is its second request): one more starts.
    respond(pending.remove(0), deployment(2));
    let (request, send) = next(&mut handle).await;
    assert!(request.uri().path().ends_with("/horizontalpodautoscalers"));
    respond(send, hpa_list(None));
    let (request, send) = next(&mut handle).await;
    assert!(request.uri().path().ends_with("/deployments/payment"));
    pending.push(send);
    // The rest: HPA lists are cached for the namespace now, so one request each.
    for send in pending {
        respond(send, deployment(2));
    }
    for _ in 0..7 {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment(2));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().replicas, 2);
    }
}

#[tokio::test]
async fn a_slow_hpa_list_in_one_namespace_does_not_hold_up_another() {
    let (client, mut handle) = mock();
    let actuator = Arc::new(KubeActuator::new(
        client,
        Duration::from_secs(60),
        Duration::from_secs(5),
    ));
    let in_shop = spawn_observe(&actuator, target());
    let (_, send) = next(&mut handle).await;
    respond(send, deployment(2));
    let (request, shop_list) = next(&mut handle).await;
    assert_path_contains(&request, "/namespaces/shop/horizontalpodautoscalers");
    // The shop list is still unanswered: a target in another namespace goes on.
    let mut elsewhere = target();
    elsewhere.namespace = "ledger".into();
    let in_ledger = spawn_observe(&actuator, elsewhere);
    let (request, send) = next(&mut handle).await;
    assert_path_contains(&request, "/namespaces/ledger/deployments/");
    respond(send, deployment(3));
    let (request, send) = next(&mut handle).await;
    assert_path_contains(&request, "/namespaces/ledger/horizontalpodautoscalers");
    respond(send, hpa_list(None));
    assert_eq!(in_ledger.await.unwrap().unwrap().replicas, 3);
    respond(shop_list, hpa_list(None));
    assert_eq!(in_shop.await.unwrap().unwrap().replicas, 2);
}

#[tokio::test]
async fn scales_through_the_scale_subresource_with_the_field_manager() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        let (request, send) = next(&mut handle).await;
        assert_eq!(
            request.uri().path(),
            "/apis/apps/v1/namespaces/shop/deployments/payment"
        );
        respond(send, deployment(2));
        let (request, send) = next(&mut handle).await;
        assert_eq!(
            request.uri().path(),
            "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers"
        );
        respond(send, hpa_list(None));
        let (request, send) = next(&mut handle).await;
        assert_eq!(request.method(), "PATCH");
        assert_eq!(
            request.uri().path(),
            "/apis/apps/v1/namespaces/shop/deployments/payment/scale"
        );
        assert!(
            request
                .uri()
                .query()
                .unwrap_or("")
                .contains("fieldManager=tideshift")
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // Conditional on the object read: a change since makes the API server refuse it.
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "5"}, "spec": {"replicas": 6}})
        );
        respond(
            send,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "payment"}, "spec": {"replicas": 6}}),
        );
    });
    let outcome = actuator.scale(&target(), 6, &allow).await.unwrap();
    assert_eq!(outcome, ScaleOutcome::Scaled { from: 2, to: 6 });
    server.await.unwrap();
}

#[tokio::test]
async fn an_hpa_on_the_same_deployment_is_a_conflict_and_nothing_is_written() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment(2));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(Some("payment")));
        handle
    });
    let outcome = actuator.scale(&target(), 6, &allow).await.unwrap();
    match outcome {
        ScaleOutcome::Conflict(reason) => {
            assert!(
                reason.contains("HorizontalPodAutoscaler shop/payment-hpa"),
                "{reason}"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let mut handle = server.await.unwrap();
    drop(actuator);
    assert!(
        handle.next_request().await.is_none(),
        "no write after a conflict"
    );
}

#[tokio::test]
async fn another_writer_after_our_write_is_a_conflict_held_for_the_hold() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(3600), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        // First cycle: we scale 2 -> 6.
        let (_, send) = next(&mut handle).await;
        respond(send, deployment(2));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
        let (request, send) = next(&mut handle).await;
        assert_eq!(request.method(), "PATCH");
        respond(
            send,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": "payment"}, "spec": {"replicas": 6}}),
        );
        // Someone scaled it to 3 by hand; the next two observations are conflicts
        // (the HPA list is cached, so only the Deployment is read).
        for _ in 0..2 {
            let (request, send) = next(&mut handle).await;
            assert_eq!(request.method(), "GET");
            respond(send, deployment(3));
        }
        handle
    });
    assert_eq!(
        actuator.scale(&target(), 6, &allow).await.unwrap(),
        ScaleOutcome::Scaled { from: 2, to: 6 }
    );
    let first = actuator.scale(&target(), 6, &allow).await.unwrap();
    assert!(
        matches!(&first, ScaleOutcome::Conflict(r) if r.contains("from 6 (tideshift's baseline) to 3")),
        "{first:?}"
    );
    let second = actuator.observe(&target()).await.unwrap();
    assert!(second.conflict.is_some(), "still held");
    assert_eq!(
        second.pod,
        Some(crate::plan::Resources {
            cpu: 0.5,
            memory: 256.0 * 1024.0 * 1024.0
        })
    );
    let mut handle = server.await.unwrap();
    drop(actuator);
    assert!(
        handle.next_request().await.is_none(),
        "no write while in conflict"
    );
}

#[tokio::test]
async fn a_target_adopted_before_its_first_write_sees_a_later_hand_scale_as_a_conflict() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(3600), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(8, "5", Some("kubectl-create")));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(6, "6", Some("kubectl")));
        handle
    });
    let first = actuator.observe(&target()).await.unwrap();
    assert_eq!(first.conflict, None, "what was there first is the baseline");
    actuator.adopt(&target());
    // Adopted, not written: not handed to a successor through the status.
    assert!(actuator.writers(&target()).unwrap().written.is_empty());
    let second = actuator.observe(&target()).await.unwrap();
    assert!(
        second.conflict.as_deref().is_some_and(
            |r| r.contains("from 8 (tideshift's baseline) to 6 by another writer (kubectl)")
        ),
        "{second:?}"
    );
    server.await.unwrap();
}

fn conflict_status() -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
               "code": 409, "message": "the object has been modified"})
}

fn respond_status(
    send: tower_test::mock::SendResponse<Response<Body>>,
    code: u16,
    body: serde_json::Value,
) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn scale_answer(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "payment"}, "spec": {"replicas": replicas}})
}

#[tokio::test]
async fn a_write_the_fence_refuses_is_never_sent() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment(2));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
        handle
    });
    // Leadership ran out while the target was read (a stall, a pause).
    let deposed = |_: Duration| Err(WriteRefused::LeadershipLost);
    let outcome = actuator.scale(&target(), 6, &deposed).await.unwrap();
    assert_eq!(outcome, ScaleOutcome::Fenced(WriteRefused::LeadershipLost));
    let mut handle = server.await.unwrap();
    drop(actuator);
    assert!(handle.next_request().await.is_none(), "nothing sent");
}

#[tokio::test]
async fn the_fence_is_asked_with_the_time_the_write_may_take() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(2));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment(2));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
    });
    let asked = std::sync::Mutex::new(Vec::new());
    let fence = |within: Duration| {
        asked.lock().unwrap().push(within);
        Err(WriteRefused::LeadershipLost)
    };
    actuator.scale(&target(), 6, &fence).await.unwrap();
    server.await.unwrap();
    assert_eq!(*asked.lock().unwrap(), [Duration::from_secs(2)]);
}

/// Payment read at 2 (resourceVersion 5), no HPA, and its write refused: changed since.
async fn refuse_a_write(handle: &mut Handle) {
    let (_, send) = next(handle).await;
    respond(send, deployment_at(2, "5", None));
    let (_, send) = next(handle).await;
    respond(send, hpa_list(None));
    let (request, send) = next(handle).await;
    assert_eq!(request.method(), "PATCH");
    respond_status(send, 409, conflict_status());
}

#[tokio::test]
async fn a_write_refused_because_the_object_changed_is_read_again_and_retried() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        refuse_a_write(&mut handle).await;
        // Read again (the HPA list is cached), and write on the new version.
        let (request, send) = next(&mut handle).await;
        assert_eq!(request.method(), "GET");
        respond(send, deployment_at(2, "6", None));
        let (request, send) = next(&mut handle).await;
        assert_eq!(request.method(), "PATCH");
        let body = request.into_body().collect_bytes().await.unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "6");
        respond(send, scale_answer(6));
    });
    let outcome = actuator.scale(&target(), 6, &allow).await.unwrap();
    assert_eq!(outcome, ScaleOutcome::Scaled { from: 2, to: 6 });
    server.await.unwrap();
}

/// The write refused here is a scale to zero: a zero the API server refused did not land, so
/// it vouches for no later zero (`pending_zero` is dropped).
#[tokio::test]
async fn a_write_refused_because_the_replicas_changed_is_not_retried() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        refuse_a_write(&mut handle).await;
        // A successor (same field manager) scaled it meanwhile: what this write was
        // decided on is gone.
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(4, "6", Some(FIELD_MANAGER)));
        handle
    });
    let error = actuator
        .scale(&target(), 0, &allow)
        .await
        .expect_err("not written");
    assert!(
        error.to_string().contains("the next cycle decides again"),
        "{error}"
    );
    let mut handle = server.await.unwrap();
    let memory = actuator.writers(&target()).unwrap();
    assert!(memory.pending_zero.is_empty(), "{memory:?}");
    drop(actuator);
    assert!(handle.next_request().await.is_none(), "no second write");
}

#[tokio::test]
async fn a_request_without_an_answer_fails_within_the_timeout() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_millis(200));
    let started = Instant::now();
    let payment = target();
    let (result, _pending) = tokio::join!(actuator.observe(&payment), next(&mut handle));
    let error = result.expect_err("no answer is an error");
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// What a status says when tideshift last wrote `replicas` to payment.
fn wrote_payment(replicas: u32) -> WriterMemory {
    WriterMemory {
        written: [("payment".to_string(), replicas)].into(),
        pending_zero: BTreeMap::new(),
        other_writer: None,
    }
}

#[tokio::test]
async fn a_predecessors_write_is_tideshifts_and_a_remembered_other_writer_is_held() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(300), Duration::from_secs(5));
    // The status said tideshift wrote 8; the predecessor wrote 4 before it died.
    actuator.remember_writers(&target(), wrote_payment(8));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(4, "9", Some(FIELD_MANAGER)));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
        // Then someone scaled it by hand while no replica led.
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(7, "10", Some("kubectl")));
    });
    let observed = actuator.observe(&target()).await.unwrap();
    assert_eq!(observed.conflict, None, "tideshift's own write");
    assert_eq!(
        actuator.writers(&target()).unwrap().written,
        BTreeMap::from([("payment".to_string(), 4)])
    );
    let observed = actuator.observe(&target()).await.unwrap();
    let conflict = observed.conflict.expect("another writer");
    assert!(
        conflict.contains("from 4 (tideshift's baseline) to 7 by another writer (kubectl)"),
        "{conflict}"
    );
    let other = actuator.writers(&target()).unwrap().other_writer.unwrap();
    assert!(other.reason.contains("kubectl"));
    server.await.unwrap();

    // A successor told of that writer holds off until the hold has passed.
    let (client, mut handle) = mock();
    let successor = KubeActuator::new(client, Duration::from_secs(300), Duration::from_secs(5));
    let now = unix_seconds(SystemTime::now());
    let remembered = |since: i64| WriterMemory {
        written: BTreeMap::new(),
        pending_zero: BTreeMap::new(),
        other_writer: Some(OtherWriter {
            since,
            reason: other.reason.clone(),
        }),
    };
    successor.remember_writers(&target(), remembered(now - 60));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(7, "10", Some("kubectl")));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(7, "10", Some("kubectl")));
    });
    let held = successor.observe(&target()).await.unwrap();
    assert!(held.conflict.is_some(), "60 s into a 300 s hold");
    successor.remember_writers(&target(), remembered(now - 301));
    let free = successor.observe(&target()).await.unwrap();
    assert_eq!(free.conflict, None, "the hold is over");
    server.await.unwrap();
}

/// Answer `reads` reads of the Deployment with replicas 0 that no field manager owns, and any
/// list of HorizontalPodAutoscalers between them with none.
async fn serve_zero(handle: &mut Handle, reads: usize) {
    let mut served = 0;
    while served < reads {
        let (request, send) = next(handle).await;
        if request.uri().path().contains("horizontalpodautoscalers") {
            respond(send, hpa_list(None));
        } else {
            respond(send, deployment_at(0, "6", None));
            served += 1;
        }
    }
}

#[tokio::test]
async fn a_zero_sent_through_scale_is_tideshifts_though_no_field_manager_owns_it() {
    // A scale to zero whose answer is lost: the API server applied it (the Deployment reads
    // 0, and a zero through `/scale` leaves no owner), the actuator never heard back.
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(300), Duration::from_millis(300));
    actuator.remember_writers(&target(), wrote_payment(8));
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        respond(send, deployment_at(8, "5", Some(FIELD_MANAGER)));
        let (_, send) = next(&mut handle).await;
        respond(send, hpa_list(None));
        let (request, _lost) = next(&mut handle).await;
        assert_eq!(request.method(), "PATCH");
        // Unanswered (`_lost` is kept until the end); two observations read it at zero (the
        // HorizontalPodAutoscalers once, if at all).
        serve_zero(&mut handle, 2).await;
    });
    actuator
        .scale(&target(), 0, &allow)
        .await
        .expect_err("no answer");
    let pending = actuator.writers(&target()).unwrap();
    assert!(pending.pending_zero.contains_key("payment"), "{pending:?}");
    // What the status keeps: a successor reading it takes the zero for tideshift's too.
    let (client, mut successor_handle) = mock();
    let successor = KubeActuator::new(client, Duration::from_secs(300), Duration::from_secs(5));
    successor.remember_writers(&target(), pending.clone());
    let observed = actuator.observe(&target()).await.unwrap();
    assert_eq!(observed.conflict, None, "its own zero");
    assert_eq!(
        actuator.writers(&target()).unwrap().written,
        BTreeMap::from([("payment".to_string(), 0)])
    );
    assert!(actuator.writers(&target()).unwrap().pending_zero.is_empty());
    // A second read of zero is plainly the baseline.
    assert_eq!(actuator.observe(&target()).await.unwrap().conflict, None);
    server.await.unwrap();
    let read_zero = tokio::spawn(async move { serve_zero(&mut successor_handle, 3).await });
    assert_eq!(successor.observe(&target()).await.unwrap().conflict, None);
    // Without the pending zero, or with one sent longer ago than `PENDING_ZERO_TTL`, the same
    // read is another writer's: the unnamed one.
    let now = unix_seconds(SystemTime::now());
    let stale = now - PENDING_ZERO_TTL.as_secs() as i64 - 1;
    for pending_zero in [BTreeMap::new(), [("payment".to_string(), stale)].into()] {
        successor.remember_writers(
            &target(),
            WriterMemory {
                pending_zero,
                ..pending.clone()
            },
        );
        let conflict = successor.observe(&target()).await.unwrap().conflict;
        assert!(
            conflict.as_deref().is_some_and(|c| c.contains("unnamed")),
            "{conflict:?}"
        );
    }
    read_zero.await.unwrap();
}

fn job(name: &str, parallelism: i32, manager: &str) -> serde_json::Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "3",
                     "labels": {"team": "finance"},
                     "managedFields": [{"manager": manager, "operation": "Update",
                         "time": "2026-11-26T08:00:00Z", "fieldsType": "FieldsV1",
                         "fieldsV1": {"f:spec": {"f:parallelism": {}}}}]},
        "spec": {
            "parallelism": parallelism,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": format!("uid-{name}")}},
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "x", "resources": {"requests": {"cpu": if name == "b" { "300m" } else { "100m" }}}}
            ]}}
        },
        "status": {"ready": parallelism}
    })
}

fn job_list(jobs: &[serde_json::Value]) -> serde_json::Value {
    json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": jobs})
}

fn pod_list(job: &str, count: usize) -> serde_json::Value {
    let items: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            json!({"metadata": {"name": format!("{job}-{i}"), "uid": format!("{job}-uid-{i}")},
                       "status": {"phase": "Running"}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

fn reports() -> Target {
    Target {
        kind: WorkloadKind::Job,
        namespace: "shop".into(),
        name: None,
        selector: Some([("team".to_string(), "finance".to_string())].into()),
    }
}

#[tokio::test]
async fn a_job_selector_counts_the_pods_of_every_job_it_matches() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    let server = tokio::spawn(async move {
        let (request, send) = next(&mut handle).await;
        assert_path_contains(&request, "/apis/batch/v1/namespaces/shop/jobs");
        respond(
            send,
            job_list(&[
                job("a", 1, "kubectl"),
                job("b", 3, "kubectl"),
                job("c", 3, "kubectl"),
            ]),
        );
        let mut selectors = Vec::new();
        for (name, count) in [("a", 1), ("b", 3), ("c", 3)] {
            let (request, send) = next(&mut handle).await;
            assert_path_contains(&request, "/api/v1/namespaces/shop/pods");
            selectors.push(request.uri().query().unwrap_or("").to_string());
            respond(send, pod_list(name, count));
        }
        assert!(selectors[2].contains("uid-c"), "{selectors:?}");
    });
    let pods = actuator.pods_holding_capacity(&reports()).await.unwrap();
    assert_eq!(pods, 7, "the pods of a, b and c");
    server.await.unwrap();
}

#[tokio::test]
async fn a_job_selector_reads_the_largest_pod_and_sees_a_foreign_write_to_one_job() {
    let (client, mut handle) = mock();
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5));
    actuator.remember_writers(
        &reports(),
        WriterMemory {
            written: [
                ("a".to_string(), 1),
                ("b".to_string(), 3),
                ("c".to_string(), 3),
            ]
            .into(),
            pending_zero: BTreeMap::new(),
            other_writer: None,
        },
    );
    let server = tokio::spawn(async move {
        let (_, send) = next(&mut handle).await;
        // b was scaled to 5 by hand; a new Job d appeared (not a foreign write).
        respond(
            send,
            job_list(&[
                job("a", 1, FIELD_MANAGER),
                job("b", 5, "kubectl"),
                job("c", 3, FIELD_MANAGER),
                job("d", 2, "kubectl"),
            ]),
        );
    });
    let observed = actuator.observe(&reports()).await.unwrap();
    server.await.unwrap();
    assert_eq!(observed.replicas, 11);
    assert_eq!(
        observed.pod.map(|p| p.cpu),
        Some(0.3),
        "b's pods are the largest"
    );
    let conflict = observed.conflict.expect("b was written by someone else");
    assert!(
        conflict.contains("parallelism of Job shop/b changed from 3 (tideshift's baseline) to 5"),
        "{conflict}"
    );
}

#[test]
fn replicas_spread_over_jobs_in_order() {
    assert_eq!(spread(7, 3), vec![3, 2, 2]);
    assert_eq!(spread(0, 2), vec![0, 0]);
    assert!(spread(4, 0).is_empty());
}

/// An actuator whose cycles read `payment` from a watched view holding `replicas` (written
/// last by `manager`), and the writer that moves the view on.
fn with_view(
    replicas: i32,
    manager: Option<&str>,
) -> (
    Arc<KubeActuator>,
    Handle,
    kube::runtime::reflector::store::Writer<cache::Kept<Deployment>>,
) {
    let (client, handle) = mock();
    let seen: Deployment =
        serde_json::from_value(deployment_at(replicas, "5", manager)).expect("deployment");
    let (cache, writer) = WorkloadCache::fixed(client.clone(), "shop", &[seen]);
    let actuator = KubeActuator::new(client, Duration::from_secs(60), Duration::from_secs(5))
        .with_cache(cache);
    (Arc::new(actuator), handle, writer)
}

/// As if tideshift had written `replicas` to `payment`.
fn remember_written(actuator: &KubeActuator, replicas: u32) {
    actuator
        .lock_memory()
        .entry(target().to_string())
        .or_default()
        .written
        .insert("payment".into(), replicas);
}

#[tokio::test]
async fn a_cycle_reads_a_current_view_and_asks_the_api_server_nothing() {
    let (actuator, mut handle, _writer) = with_view(4, Some(FIELD_MANAGER));
    let observed = tokio::time::timeout(Duration::from_secs(5), actuator.observe(&target()))
        .await
        .expect("answered from the view, without a request")
        .expect("observed");
    assert_eq!((observed.replicas, observed.conflict), (4, None));
    drop(actuator);
    assert!(handle.next_request().await.is_none(), "no request sent");
}

#[tokio::test]
async fn a_view_behind_tideshifts_own_write_is_checked_against_the_api_server() {
    // tideshift wrote 2; the watch has not delivered it yet, so the view still shows the 4
    // tideshift wrote before. Taken at its word, the view would make 4 the baseline again and
    // count capacity that is already free.
    let (actuator, mut handle, _writer) = with_view(4, Some(FIELD_MANAGER));
    remember_written(&actuator, 2);
    let task = spawn_observe(&actuator, target());
    let (request, send) = next(&mut handle).await;
    assert_path_contains(&request, "/deployments/payment");
    respond(send, deployment_at(2, "6", Some(FIELD_MANAGER)));
    let observed = task.await.expect("task").expect("observed");
    assert_eq!((observed.replicas, observed.conflict), (2, None));
}

#[tokio::test]
async fn a_hand_scale_the_view_shows_is_confirmed_by_the_api_server_before_it_is_a_conflict() {
    let (actuator, mut handle, _writer) = with_view(7, Some("kubectl"));
    remember_written(&actuator, 2);
    let task = spawn_observe(&actuator, target());
    let (_, send) = next(&mut handle).await;
    respond(send, deployment_at(7, "6", Some("kubectl")));
    let observed = task.await.expect("task").expect("observed");
    assert_eq!(observed.replicas, 7);
    let conflict = observed.conflict.expect("a conflict");
    assert!(
        conflict.contains("by another writer (kubectl)"),
        "{conflict}"
    );
}
