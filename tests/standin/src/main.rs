//! `kube-standin`: runs the Kubernetes API stand-in until interrupted.
//!
//! `kube-standin --listen 127.0.0.1:0 --kubeconfig-out PATH [--bookmark-interval-ms N] [--history N]`
//! prints `kube-standin listening http://ADDR` once bound and the kubeconfig is written.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: kube-standin [--listen ADDR] [--kubeconfig-out PATH] [--bookmark-interval-ms N] [--history N]";

fn parse_args(args: &[String]) -> Result<kube_standin::Config, String> {
    let mut config = kube_standin::Config::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_string());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => {
                config.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value:?}: {e}"))?
            }
            "--kubeconfig-out" => config.kubeconfig_path = Some(PathBuf::from(value)),
            "--bookmark-interval-ms" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|e| format!("--bookmark-interval-ms {value:?}: {e}"))?;
                config.bookmark_interval = Duration::from_millis(ms.max(1));
            }
            "--history" => {
                config.history_limit = value
                    .parse()
                    .map_err(|e| format!("--history {value:?}: {e}"))?
            }
            other => return Err(format!("unknown flag {other:?}\n{USAGE}")),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let stop = match Stop::register() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-standin: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match kube_standin::start_with(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-standin: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A harness may stop reading after the first line: a closed stdout is not an error.
    let announcement = format!(
        "kube-standin listening {}\nkube-standin kubeconfig {}\n",
        running.url(),
        running.kubeconfig_path.display()
    );
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(announcement.as_bytes())
        .and_then(|()| stdout.flush());
    stop.wait().await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// Waits for SIGINT or SIGTERM (how test harnesses stop child processes). The handlers are
/// registered before the address is announced, so a signal sent right after it is not lost.
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
