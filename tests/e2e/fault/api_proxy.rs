//! A fault-injecting proxy in front of the API server.

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
    /// How long every chunk of a watch's answer is held before it is passed on (ms).
    pub(crate) watch_delay_ms: AtomicU64,
}

/// Plain HTTP on loopback in front of the real API server (HTTPS): what one replica sees of the
/// cluster. It passes everything through (watches streamed), except one request it can be told
/// to hold: the answer is fetched at once, then kept until the test releases it. That places a
/// pause of the replica exactly between a read and the write decided on it. It can also pass
/// every watch event on late (`delay_watches`): a watch that lags behind the API server while
/// reads and writes do not.
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
    let delay = Duration::from_millis(state.watch_delay_ms.load(Ordering::SeqCst));
    if path_and_query.contains("watch=true") && !delay.is_zero() {
        // Each chunk as it arrives, then passed on `delay` later, in order.
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut response = response;
            while let Ok(Some(chunk)) = response.chunk().await {
                let due = tokio::time::Instant::now() + delay;
                if sender.send((due, chunk)).is_err() {
                    break;
                }
            }
        });
        let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
            let (due, chunk) = receiver.recv().await?;
            tokio::time::sleep_until(due).await;
            Some((Ok::<_, std::io::Error>(chunk), receiver))
        });
        return (
            status,
            [("content-type", content_type)],
            axum::body::Body::from_stream(chunks),
        )
            .into_response();
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
            watch_delay_ms: AtomicU64::new(0),
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

    /// Pass every watch event on `delay` after the API server sent it (watches started
    /// from now on).
    pub(crate) fn delay_watches(&self, delay: Duration) {
        self.state
            .watch_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
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
