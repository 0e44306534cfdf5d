//! The `roomcast-operator` binary: flags, the metrics/health endpoint, leader election,
//! and the controller, which runs only while this replica leads.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser};
use k8s_openapi::jiff::SignedDuration;
use kube::{Api, Client};
use roomcast_operator::controller::{self, Context, Scope, Settings};
use roomcast_operator::desired::Defaults;
use roomcast_operator::leader::{Elector, LeaseSettings};
use roomcast_operator::operator_metrics::{self, OperatorMetrics};
use tokio::sync::watch;

/// Kubernetes operator for Roomcast RealtimeCluster resources.
#[derive(Parser, Debug)]
#[command(name = "roomcast-operator", version)]
struct Args {
    /// Seconds between syncs of each RealtimeCluster (resync and autoscaling period).
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_SYNC_PERIOD_SECONDS",
        default_value_t = 15
    )]
    sync_period_seconds: u64,
    /// Address the operator's /metrics and /healthz listen on.
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_METRICS_HOST",
        default_value = "0.0.0.0"
    )]
    metrics_host: IpAddr,
    /// Port of the operator's /metrics and /healthz (0 picks a free one).
    #[arg(long, env = "ROOMCAST_OPERATOR_METRICS_PORT", default_value_t = 8080)]
    metrics_port: u16,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ROOMCAST_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Elect a leader with a Lease so several replicas are safe.
    #[arg(long, env = "ROOMCAST_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_LEASE_NAME",
        default_value = "roomcast-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (default: --namespace, else the client's namespace).
    #[arg(long, env = "ROOMCAST_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    lease_duration_seconds: u64,
    /// Seconds between Lease renewals or acquisition attempts.
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_LEASE_RETRY_SECONDS",
        default_value_t = 2
    )]
    lease_retry_seconds: u64,
    /// Identity in the Lease (default: $POD_NAME, else hostname and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Admin port of gateway pods (a pod annotation `roomcast.dev/admin-port` overrides it).
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_GATEWAY_ADMIN_PORT",
        default_value_t = 9090
    )]
    gateway_admin_port: u16,
    /// Image for RealtimeClusters that name none.
    #[arg(long, env = "ROOMCAST_GATEWAY_IMAGE", default_value = roomcast_operator::crd::DEFAULT_IMAGE)]
    default_image: String,
    /// Seconds victims may fail to accept POST /drain before replicas drop anyway.
    #[arg(
        long,
        env = "ROOMCAST_OPERATOR_DRAIN_DEADLINE_SECONDS",
        default_value_t = 60
    )]
    drain_deadline_seconds: u64,
    /// Log filter (`info`, `roomcast_operator=debug`, …); default: $RUST_LOG, else info.
    #[arg(long, env = "ROOMCAST_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log line format: text, or json (one object per line).
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", default_value = "text")]
    log_format: roomcast_telemetry::LogFormat,
}

fn identity(args: &Args) -> String {
    args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "roomcast-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: Args, meter: Option<opentelemetry::metrics::Meter>) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let metrics = Arc::new(OperatorMetrics::default());
    if let Some(meter) = meter {
        metrics.export_otlp(&meter);
    }
    let addr = SocketAddr::new(args.metrics_host, args.metrics_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    tracing::info!(addr = %bound, "metrics and health endpoint listening");
    let router = operator_metrics::router(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutting down");
        stop_tx.send_replace(true);
    });

    let scope = args.namespace.clone().map_or(Scope::All, Scope::Namespace);
    let settings = Settings {
        defaults: Defaults {
            image: args.default_image.clone(),
        },
        sync_period: Duration::from_secs(args.sync_period_seconds.max(1)),
        admin_port: args.gateway_admin_port,
        drain_deadline: SignedDuration::from_secs(
            i64::try_from(args.drain_deadline_seconds).unwrap_or(i64::MAX),
        ),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics.clone(),
        Some(identity(&args)),
    ));

    if !args.leader_election {
        metrics.set_leader(true);
        let mut stop = stop_rx.clone();
        controller::run(ctx, &scope, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        return Ok(());
    }

    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let lease = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: lease_namespace.clone(),
        identity: identity(&args),
        duration: Duration::from_secs(args.lease_duration_seconds.max(2)),
        retry_period: Duration::from_secs(args.lease_retry_seconds.max(1)),
    };
    tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "leader election on");
    let (leader_tx, leader_rx) = watch::channel(false);
    let elector = Elector::new(Api::namespaced(client, &lease_namespace), lease);
    let election = tokio::spawn(elector.run(leader_tx, stop_rx.clone()));

    loop {
        let mut leading = leader_rx.clone();
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if *stop_rx.borrow() {
            break;
        }
        tracing::info!("leading: starting the controller");
        metrics.set_leader(true);
        let mut leading = leader_rx.clone();
        let mut stop = stop_rx.clone();
        controller::run(ctx.clone(), &scope, async move {
            tokio::select! {
                _ = leading.wait_for(|l| !*l) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        })
        .await;
        metrics.set_leader(false);
        tracing::info!("controller stopped");
        if *stop_rx.borrow() {
            break;
        }
    }
    // Let the elector release the Lease so a successor takes over at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // RUST_LOG still works, as before the flag existed.
    let log_level = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let telemetry = match roomcast_telemetry::init(&roomcast_telemetry::Options {
        service: "roomcast-operator",
        log_level: &log_level,
        log_format: args.log_format,
        sampling: roomcast_telemetry::Sampling::Sdk,
    }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("roomcast-operator: {e}");
            return ExitCode::from(2);
        }
    };
    let result = run(args, telemetry.meter()).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("roomcast-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
