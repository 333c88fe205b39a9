//! Entry point of `tideshift run`: flags, wiring, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use kube::runtime::events::Reporter;

use super::{CliResult, PrometheusClientArgs};
use crate::actuate::kubernetes::{KubeActuator, WorkloadCache};
use crate::controller::leader::{LeaderElector, Leadership, LeaseConfig};
use crate::controller::{Context, run_controllers};
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
    /// A standby takes over this long after the leader's last renewal (see docs/daemon.md,
    /// High availability, for the timings and what they cost in API requests).
    #[arg(long, default_value = "4s")]
    pub lease_duration: PolicyDuration,
    /// The leader stops reconciling this long after its last successful renewal (< lease
    /// duration).
    #[arg(long, default_value = "3s")]
    pub renew_deadline: PolicyDuration,
    /// How often the Lease is renewed or tried.
    #[arg(long, default_value = "500ms")]
    pub retry_period: PolicyDuration,
    /// Longest wait for one Kubernetes API request on the write path: reading workloads and
    /// pods, writing replicas and status, the Lease. With leader election, a write is sent only
    /// if it would time out before another replica could take the Lease over; it must leave
    /// room for a renewal (api-timeout + retry-period < lease-duration).
    #[arg(long, env = "TIDESHIFT_API_TIMEOUT", default_value = "2s")]
    pub api_timeout: PolicyDuration,
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

/// The API clients: one for watches (long polls, kube's retries), and one for the write path,
/// whose every request gives up after `--api-timeout` and is never retried behind the daemon's
/// back (a retried write could land after leadership ended). Both name the replica in their
/// User-Agent, so the API server's audit log tells replicas apart.
async fn kube_clients(
    args: &RunArgs,
    identity: &str,
) -> Result<(kube::Client, kube::Client), Box<dyn std::error::Error + Send + Sync>> {
    let mut config = match &args.kubeconfig {
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
    let agent = format!("tideshift/{} ({identity})", env!("CARGO_PKG_VERSION"));
    let agent = http::HeaderValue::from_str(&agent)
        .map_err(|e| format!("identity {identity:?} cannot be sent as a User-Agent: {e}"))?;
    config.headers.push((http::header::USER_AGENT, agent));
    let mut bounded = config.clone();
    let timeout = args.api_timeout.0;
    bounded.connect_timeout = Some(timeout);
    bounded.read_timeout = Some(timeout);
    bounded.write_timeout = Some(timeout);
    bounded.reset_reader_on_write = true;
    bounded.default_retry = false;
    let client = kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    let writer = kube::Client::try_from(bounded).map_err(|e| format!("Kubernetes client: {e}"))?;
    Ok((client, writer))
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

/// The lease timings must fence writes: see `controller::leader`.
fn check_timings(args: &RunArgs) -> Result<(), String> {
    if args.api_timeout.0.is_zero() {
        return Err("--api-timeout must be positive".into());
    }
    if !args.leader_election {
        return Ok(());
    }
    if args.renew_deadline.0 >= args.lease_duration.0 {
        return Err("--renew-deadline must be shorter than --lease-duration".into());
    }
    if args.retry_period.0.is_zero() || args.retry_period.0 >= args.renew_deadline.0 {
        return Err("--retry-period must be positive and shorter than --renew-deadline".into());
    }
    if args.api_timeout.0 + args.retry_period.0 >= args.lease_duration.0 {
        return Err(format!(
            "--api-timeout ({}) plus --retry-period ({}) must be shorter than --lease-duration \
             ({}): a write is sent only if it times out before the lease could pass to another \
             replica, which must be possible between renewals",
            args.api_timeout, args.retry_period, args.lease_duration
        ));
    }
    Ok(())
}

async fn run_daemon(args: RunArgs) -> CliResult {
    crate::controller::trim::mmap_large_blocks();
    check_timings(&args)?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let (client, writer) = kube_clients(&args, &identity).await?;
    let prometheus = args.prometheus.config(&args.prometheus_url);
    let source = Arc::new(PrometheusSource::new(prometheus)?);
    // Cycles read workloads and HPAs from watched views (the client without the short read
    // timeout: a watch is a long request); writes go through `writer`.
    let actuator = Arc::new(
        KubeActuator::new(writer.clone(), args.conflict_hold.0, args.api_timeout.0)
            .with_cache(WorkloadCache::start(&client, &args.namespaces)),
    );
    let metrics = Metrics::new();
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
            writer.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace,
                identity: identity.clone(),
                lease_duration: args.lease_duration.0,
                renew_deadline: args.renew_deadline.0,
                retry_period: args.retry_period.0,
                // A try longer than the renew deadline cannot keep leadership anyway.
                request_timeout: args.api_timeout.0.min(args.renew_deadline.0),
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
        .with_cross_namespace(args.allow_cross_namespace)
        .with_api_timeout(args.api_timeout.0),
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
    tokio::spawn(crate::controller::trim::trim_freed_memory(
        crate::controller::trim::TRIM_PERIOD,
    ));
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
