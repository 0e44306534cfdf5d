//! `roomcast-gateway`: loads the configuration, sets up logs and (when
//! `OTEL_*` variables ask for it) OTLP export, serves until SIGTERM or SIGINT,
//! then drains (1012 closes spread over `drain_seconds`), flushes the last
//! spans and metrics, and exits 0.

use std::process::ExitCode;

use roomcast_gateway::{Config, Gateway};
use tokio::signal::unix::{SignalKind, signal};

// jemalloc returns freed pages to the OS within `dirty_decay_ms` (1 s, set
// at build time in .cargo/config.toml) through its background threads, so
// RSS falls back after a burst of connections instead of staying at the peak.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("roomcast-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match roomcast_telemetry::init(&roomcast_telemetry::Options {
        service: "roomcast-gateway",
        log_level: &config.log_level,
        log_format: config.log_format,
        // trace.rs decides once per publish, before any span exists.
        sampling: roomcast_telemetry::Sampling::Caller,
    }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("roomcast-gateway: {e}");
            return ExitCode::from(2);
        }
    };

    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        _ => {
            eprintln!("roomcast-gateway: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let gateway = match Gateway::start(config).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("roomcast-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let (Some(tracer), Some(export)) = (telemetry.tracer(), telemetry.export()) {
        roomcast_gateway::trace::install(tracer.clone(), export.sampler, gateway.node());
    }
    if let Some(meter) = telemetry.meter() {
        gateway.metrics().export_otlp(&meter);
    }
    // Tests and scripts wait for this exact line to learn the bound addresses.
    eprintln!(
        "roomcast-gateway listening public={} admin={} node={}",
        gateway.public_addr(),
        gateway.admin_addr(),
        gateway.node()
    );
    tracing::info!(public = %gateway.public_addr(), admin = %gateway.admin_addr(), node = gateway.node(), "serving");

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining (press Ctrl-C again to stop at once)"),
    }
    gateway.start_drain();
    tokio::select! {
        _ = gateway.drained() => {}
        _ = int.recv() => tracing::warn!("second SIGINT: stopping without finishing the drain"),
    }
    gateway.shutdown().await;
    telemetry.shutdown().await;
    ExitCode::SUCCESS
}
