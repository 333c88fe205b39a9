//! A fault-injecting HTTP proxy in front of Prometheus.

use super::*;

pub(crate) const PASS: u8 = 0;
pub(crate) const ERROR_5XX: u8 = 1;
pub(crate) const HANG: u8 = 2;

pub(crate) struct ProxyState {
    pub(crate) upstream: String,
    pub(crate) mode: AtomicU8,
    pub(crate) requests: AtomicU64,
    /// When (Unix seconds) each successful answer from Prometheus was passed to the daemon: a
    /// decision is only fresh if its cycle received one.
    pub(crate) answered: Mutex<Vec<f64>>,
    /// Every distinct Authorization header value seen.
    pub(crate) authorizations: Mutex<Vec<String>>,
    pub(crate) client: reqwest::Client,
}

/// Passes requests to Prometheus, answers 503, or hangs (past the daemon's timeout); `refuse`
/// closes the port (connection refused) until `restore`. Every response says
/// `Connection: close`, so no pooled connection outlives a refusal.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<ProxyState>,
    pub(crate) server: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) async fn proxy_handler(
    axum::extract::State(state): axum::extract::State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let headers = request.headers().clone();
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let mut seen = state
            .authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !seen.iter().any(|s| s == auth) {
            seen.push(auth.to_string());
        }
    }
    let close = [("connection", "close")];
    match state.mode.load(Ordering::SeqCst) {
        ERROR_5XX => {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                close,
                "injected fault: 503",
            )
                .into_response();
        }
        HANG => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            return (axum::http::StatusCode::GATEWAY_TIMEOUT, close).into_response();
        }
        _ => {}
    }
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let Ok(body) = axum::body::to_bytes(request.into_body(), 16 << 20).await else {
        return (axum::http::StatusCode::BAD_REQUEST, close).into_response();
    };
    let mut upstream = state
        .client
        .request(method, format!("{}{path}", state.upstream))
        .body(body);
    if let Some(ct) = headers.get("content-type").and_then(|v| v.to_str().ok()) {
        upstream = upstream.header("content-type", ct);
    }
    match upstream.send().await {
        Ok(response) => {
            let status = axum::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let ct = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let bytes = response.bytes().await.unwrap_or_default();
            if status.is_success() {
                state
                    .answered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(unix_now());
            }
            (
                status,
                [("connection", "close"), ("content-type", ct.as_str())],
                bytes,
            )
                .into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, close, e.to_string()).into_response(),
    }
}

impl Proxy {
    pub(crate) async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            mode: AtomicU8::new(PASS),
            requests: AtomicU64::new(0),
            answered: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
            client: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = Proxy {
            addr,
            state,
            server: None,
        };
        proxy.serve(listener);
        proxy
    }

    pub(crate) fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .fallback(proxy_handler)
            .with_state(self.state.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    /// Whether a successful Prometheus answer was passed through between `from` and `to`.
    pub(crate) fn answered_between(&self, from: f64, to: f64) -> bool {
        self.state
            .answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&at| at >= from && at <= to)
    }

    /// Close the port: connections are refused.
    pub(crate) async fn refuse(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    pub(crate) async fn restore(&mut self) {
        self.set(PASS);
        if self.server.is_none() {
            let listener = wait_until(
                "the proxy's port to be free again",
                Duration::from_secs(30),
                async || tokio::net::TcpListener::bind(self.addr).await.ok(),
            )
            .await;
            self.serve(listener);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
