//! Entry point of `tideshift run`: flags, wiring, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use kube::runtime::events::Reporter;

use super::leader::{LeaderElector, Leadership, LeaseConfig};
use super::{Context, run_controllers};
use crate::actuate::kubernetes::KubeActuator;
use crate::cli::CliResult;
use crate::cli::PrometheusClientArgs;
use crate::policy::PolicyDuration;
use crate::source::prometheus::PrometheusSource;
use crate::telemetry::{Health, Metrics};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Prometheus base URL, e.g. http://prometheus:9090.
    #[arg(long, env = "TIDESHIFT_PROMETHEUS_URL")]
    pub prometheus_url: String,
    #[command(flatten)]
    pub prometheus: PrometheusClientArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TIDESHIFT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Watch ShiftPolicies only in these namespaces (repeat, or comma-separated); all if unset.
    #[arg(
        long = "namespace",
        env = "TIDESHIFT_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Kubeconfig to use instead of KUBECONFIG / in-cluster configuration.
    #[arg(long, env = "TIDESHIFT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Elect a leader on a coordination.k8s.io Lease; only the leader writes.
    #[arg(long, env = "TIDESHIFT_LEADER_ELECTION")]
    pub leader_election: bool,
    #[arg(long, env = "TIDESHIFT_LEASE_NAME", default_value = "tideshift")]
    pub lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the kubeconfig's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's holder identity (default: POD_NAME, else hostname and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// A standby takes over this long after the leader's last renewal.
    #[arg(long, default_value = "10s")]
    pub lease_duration: PolicyDuration,
    /// The leader stops writing this long after its last successful renewal (< lease duration).
    #[arg(long, default_value = "7s")]
    pub renew_deadline: PolicyDuration,
    /// How often the Lease is renewed or tried.
    #[arg(long, default_value = "2s")]
    pub retry_period: PolicyDuration,
    /// Longest wait for shrunk batch pods to be gone before growing online anyway.
    #[arg(long, default_value = "30s")]
    pub shrink_wait: PolicyDuration,
    /// How long a target whose replicas another writer changed is left alone.
    #[arg(long, default_value = "5m")]
    pub conflict_hold: PolicyDuration,
    /// Let a policy name workloads in namespaces other than its own (refused by default).
    #[arg(long, env = "TIDESHIFT_ALLOW_CROSS_NAMESPACE")]
    pub allow_cross_namespace: bool,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "tideshift".into());
    format!("{host}-{}", std::process::id())
}

async fn kube_client(
    args: &RunArgs,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration (KUBECONFIG or in-cluster): {e}"))?,
    };
    Ok(kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?)
}

/// Resolves on SIGTERM or ctrl-c.
async fn termination() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; ctrl-c only");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(args: RunArgs) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_daemon(args))
}

async fn run_daemon(args: RunArgs) -> CliResult {
    if args.leader_election && args.renew_deadline.0 >= args.lease_duration.0 {
        return Err("--renew-deadline must be shorter than --lease-duration".into());
    }
    let client = kube_client(&args).await?;
    let prometheus = args.prometheus.config(&args.prometheus_url);
    let source = Arc::new(PrometheusSource::new(prometheus)?);
    let actuator = Arc::new(KubeActuator::new(client.clone(), args.conflict_hold.0));
    let metrics = Metrics::new();
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let health = Health {
        leader_election: args.leader_election,
        ..Default::default()
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|stop| *stop).await;
        }
        .boxed()
        .shared()
    };

    let elector = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        Some(Arc::new(LeaderElector::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace,
                identity: identity.clone(),
                lease_duration: args.lease_duration.0,
                renew_deadline: args.renew_deadline.0,
                retry_period: args.retry_period.0,
            },
        )))
    } else {
        metrics.leader.set(1);
        None
    };
    let leadership = elector
        .as_ref()
        .map_or_else(Leadership::always, |e| e.leadership());

    let ctx = Arc::new(
        Context::new(
            client.clone(),
            source,
            actuator,
            Arc::from(crate::forecast::default_forecaster()),
            metrics.clone(),
            leadership.clone(),
            Reporter {
                controller: "tideshift".into(),
                instance: Some(identity.clone()),
            },
            args.shrink_wait.0,
        )
        .with_cross_namespace(args.allow_cross_namespace),
    );

    let server = tokio::spawn(crate::telemetry::serve(
        args.listen,
        metrics.clone(),
        health.clone(),
        stopped.clone(),
    ));
    let lease_task = elector.clone().map(|elector| {
        let metrics = metrics.clone();
        let lease_healthy = health.lease_healthy.clone();
        let leadership = leadership.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let watch_health = async {
                loop {
                    lease_healthy.store(leadership.healthy(), Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            };
            tokio::select! {
                _ = elector.run(stopped, |leading| metrics.leader.set(i64::from(leading))) => {}
                _ = watch_health => {}
            }
        })
    });
    tokio::spawn(super::trim::trim_freed_memory(super::trim::TRIM_PERIOD));
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    tracing::info!(
        %identity,
        namespaces = ?args.namespaces,
        leader_election = args.leader_election,
        "tideshift run"
    );
    let synced = health.caches_synced.clone();
    run_controllers(ctx, &args.namespaces, stopped.clone(), move || {
        synced.store(true, Ordering::SeqCst);
        tracing::info!("policy caches synced");
    })
    .await;
    if let Some(task) = lease_task {
        // The elector releases the lease when `stopped` resolves.
        let _ = task.await;
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("serving {}: {e}", args.listen).into()),
        Err(e) => return Err(format!("HTTP server task: {e}").into()),
    }
    Ok(ExitCode::SUCCESS)
}
