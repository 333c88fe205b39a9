//! A leader paused past its lease.

use super::*;

/// A request the API proxy holds: it has the API server's answer, and gives it to the client
/// only when released.
pub(crate) struct HeldRequest {
    pub(crate) method: axum::http::Method,
    pub(crate) path: String,
    pub(crate) arrived: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) release: Option<tokio::sync::oneshot::Receiver<()>>,
}

pub(crate) struct ApiProxyState {
    pub(crate) upstream: String,
    pub(crate) client: reqwest::Client,
    pub(crate) hold: Mutex<Option<HeldRequest>>,
}

/// Plain HTTP on loopback in front of the real API server (HTTPS): what one replica sees of the
/// cluster. It passes everything through (watches streamed), except one request it can be told
/// to hold: the answer is fetched at once, then kept until the test releases it. That places a
/// pause of the replica exactly between a read and the write decided on it.
pub(crate) struct ApiProxy {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<ApiProxyState>,
    pub(crate) server: tokio::task::JoinHandle<()>,
}

pub(crate) async fn api_proxy_handler(
    axum::extract::State(state): axum::extract::State<Arc<ApiProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let held = {
        let mut hold = state.hold.lock().unwrap_or_else(|e| e.into_inner());
        let matches = hold.as_ref().is_some_and(|h| {
            h.method == method && h.path == path && !path_and_query.contains("watch")
        });
        if matches { hold.take() } else { None }
    };
    let headers = request.headers().clone();
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let mut upstream = state
        .client
        .request(method, format!("{}{path_and_query}", state.upstream))
        .body(body);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = axum::http::StatusCode::from_u16(response.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if let Some(mut held) = held {
        let bytes = response.bytes().await.unwrap_or_default();
        if let Some(arrived) = held.arrived.take() {
            let _ = arrived.send(());
        }
        if let Some(release) = held.release.take() {
            let _ = release.await;
        }
        return (status, [("content-type", content_type)], bytes).into_response();
    }
    let chunks = futures::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), response)),
            _ => None,
        }
    });
    (
        status,
        [("content-type", content_type)],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

impl ApiProxy {
    pub(crate) async fn start(env: &TestBed) -> ApiProxy {
        let ca = std::fs::read(format!("{}/pki/ca.crt", env.state_dir)).expect("the test bed's CA");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA certificate"))
            .build()
            .expect("HTTP client");
        let state = Arc::new(ApiProxyState {
            upstream: env.apiserver_url.trim_end_matches('/').to_string(),
            client,
            hold: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the API proxy");
        let addr = listener.local_addr().expect("API proxy address");
        let app = axum::Router::new()
            .fallback(api_proxy_handler)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ApiProxy {
            addr,
            state,
            server,
        }
    }

    /// A kubeconfig for the daemon's ServiceAccount through this proxy.
    pub(crate) fn kubeconfig(&self, env: &TestBed, dir: &std::path::Path) -> String {
        let text = std::fs::read_to_string(&env.daemon_kubeconfig).expect("daemon kubeconfig");
        let token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token in the daemon kubeconfig");
        let path = dir.join("proxied.kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster: {{server: 'http://{}'}}\nusers:\n- name: tideshift\n  user: {{token: '{token}'}}\ncontexts:\n- name: proxy\n  context: {{cluster: proxy, user: tideshift, namespace: {LEASE_NAMESPACE}}}\ncurrent-context: proxy\n",
                self.addr
            ),
        )
        .expect("writing the proxied kubeconfig");
        path.display().to_string()
    }

    /// Hold the next `method path` (not a watch). Returns (arrived, release).
    pub(crate) fn hold_next(
        &self,
        method: axum::http::Method,
        path: &str,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (arrived_tx, arrived_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        *self.state.hold.lock().unwrap_or_else(|e| e.into_inner()) = Some(HeldRequest {
            method,
            path: path.to_string(),
            arrived: Some(arrived_tx),
            release: Some(release_rx),
        });
        (arrived_rx, release_tx)
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// SIGSTOP / SIGCONT a process; SIGCONT again when dropped, however the test ends.
pub(crate) struct Paused(pub(crate) i32);

impl Paused {
    pub(crate) fn stop(pid: u32) -> Paused {
        let pid = pid as i32;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        // Stopped means state T in /proc/<pid>/stat (the third field).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if state == Some("T") {
                break;
            }
            assert!(Instant::now() < deadline, "{pid} did not stop: {stat}");
            std::thread::sleep(Duration::from_millis(10));
        }
        Paused(pid)
    }

    pub(crate) fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn leader_paused_past_its_lease_never_writes_after_the_takeover() {
    let Some(env) = testbed_env() else { return };
    let _serial = SERIAL.lock().await;
    let (admin, ns, _cleanup) = shift_scenario(&env, "pause").await;
    let lease = LeaseCleanup::new(&admin).await;
    let proxy = ApiProxy::start(&env).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let proxied = proxy.kubeconfig(&env, dir.path());
    // Replica a reaches the cluster through the proxy; b directly.
    let (mut a, b, before) =
        two_replicas(&env, &admin, &ns, &proxied, &["--shrink-wait", "90s"]).await;
    let mut problems = Vec::new();
    // Mid-shift: a shrinks training and waits for its pods (the controller-manager is frozen).
    let (resume_cm, shift_from) = shift_held_mid_way(&env, &admin, &ns).await;
    // Its next read of payment is the one its grow of payment is decided on: hold its answer,
    // let the pods go, and pause a as soon as that read reaches the API server.
    let (arrived, release) = proxy.hold_next(
        axum::http::Method::GET,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/payment"),
    );
    drop(resume_cm);
    tokio::time::timeout(Duration::from_secs(120), arrived)
        .await
        .expect("replica a to read payment before growing it")
        .expect("the proxy held the read");
    let paused = Paused::stop(a.pid());
    let stopped = unix_now();
    // The answer (payment as it was) waits in a's socket while it is stopped.
    let _ = release.send(());

    // b takes over and completes the shift.
    let took_over = taken_over(&env.audit, "replica-b", stopped).await;
    let takeover = took_over - stopped;
    let after = wait_until(
        "replica b to complete the shift",
        Duration::from_secs(180),
        async || {
            let desired = settled(&admin, &ns, "shop").await?;
            (desired["payment"] > before["payment"]).then_some(desired)
        },
    )
    .await;
    // a wakes up: it had the read it would have written on, a lease long gone, and b's writes
    // since. It must not write anything.
    paused.resume();
    let resumed = unix_now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    if !a.alive() {
        problems.push("replica a exited after it was resumed".into());
    }
    if a.metric("tideshift_leader", &[]).await != Some(0.0) {
        problems.push("replica a leads again after it was resumed".into());
    }
    let requests = env.audit.requests("");
    let mut wrong = 0;
    for r in requests
        .iter()
        .filter(|r| r.by == "replica-a" && r.at > stopped)
        .filter(|r| r.resource != "leases")
    {
        if r.succeeded() {
            wrong += 1;
            problems.push(format!("replica a wrote after it was deposed: {r:?}"));
        } else {
            eprintln!("replica a's write refused by the API server (precondition): {r:?}");
        }
    }
    let writes = env.audit.daemon_writes(&ns);
    wrong += judge_writers(
        &writes,
        ("replica-a", stopped),
        ("replica-b", took_over),
        &mut problems,
    );
    let (more_wrong, lost) = judge_shift(&writes, shift_from, &ns, &before, &after, &mut problems);
    wrong += more_wrong;
    let fenced = a
        .log_text()
        .lines()
        .filter(|l| l.contains("leadership lost or running out"))
        .count();
    // What a did once resumed, in its own words.
    for (at, fields) in a.logged_any() {
        if at >= resumed - 1.0 {
            eprintln!("replica a after the pause: {fields}");
        }
    }
    eprintln!(
        "leader pause: a stopped at {stopped:.1}, b took over after {takeover:.2}s, a resumed at {resumed:.1} ({fenced} writes fenced in a's log); {before:?} -> {after:?}; writes (audit) {writes:?}"
    );
    lease.expect_holder("replica-b", &mut problems).await;
    drop(a);
    drop(b);
    lease.delete().await;
    let figures = Figures {
        passed: problems.is_empty(),
        wrong_scale_actions: wrong,
        lost_actions: lost,
        recovery_seconds: Some((takeover * 100.0).round() / 100.0),
    };
    report("leader_pause", &figures, &problems);
}
