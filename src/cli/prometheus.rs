//! The Prometheus client flags `tideshift run` and `tideshift simulate --prometheus` share.

use std::path::PathBuf;

use crate::policy::PolicyDuration;
use crate::source::prometheus::PrometheusConfig;

/// How to reach Prometheus besides its URL: the flags `tideshift run` and `tideshift simulate
/// --prometheus` share, so a rehearsal reads history exactly as the daemon would.
#[derive(Clone, Debug, clap::Args)]
pub struct PrometheusClientArgs {
    /// File holding a bearer token for Prometheus (read on every request; never logged).
    #[arg(long, env = "TIDESHIFT_PROMETHEUS_TOKEN_FILE", value_name = "FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed Prometheus's certificate.
    #[arg(long, env = "TIDESHIFT_PROMETHEUS_CA_FILE", value_name = "FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Timeout of one Prometheus request.
    #[arg(
        long,
        env = "TIDESHIFT_PROMETHEUS_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub prometheus_timeout: PolicyDuration,
}

impl PrometheusClientArgs {
    pub fn config(&self, url: &str) -> PrometheusConfig {
        let mut config = PrometheusConfig::new(url);
        config.token_file = self.prometheus_token_file.clone();
        config.ca_file = self.prometheus_ca_file.clone();
        config.timeout = self.prometheus_timeout.0;
        config
    }
}
