//! Logging set-up and the daemon's Prometheus metrics.

use tracing_subscriber::EnvFilter;

/// Logs go to stderr so that `--json` output on stdout stays clean. `RUST_LOG` overrides the
/// default level; `TIDESHIFT_LOG_FORMAT=json` switches to JSON lines for log collectors.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("TIDESHIFT_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
