//! `roomcast-gateway`: loads the configuration, serves until SIGTERM or
//! SIGINT, then drains (1012 closes spread over `drain_seconds`) and exits 0.

use std::io::IsTerminal;
use std::process::ExitCode;

use roomcast_gateway::{Config, Gateway};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("roomcast-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&config.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "roomcast-gateway: invalid configuration: log_level {:?}: {e}",
                config.log_level
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

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
    ExitCode::SUCCESS
}
