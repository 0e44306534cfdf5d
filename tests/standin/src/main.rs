//! `kube-standin`: runs the Kubernetes API stand-in until interrupted.
//!
//! `kube-standin --listen 127.0.0.1:0 --kubeconfig-out PATH [--bookmark-interval-ms N] [--history N]`
//! prints `kube-standin listening http://ADDR` once bound and the kubeconfig is written.

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
    let running = match kube_standin::start_with(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-standin: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("kube-standin listening {}", running.url());
    println!(
        "kube-standin kubeconfig {}",
        running.kubeconfig_path.display()
    );
    let _ = tokio::signal::ctrl_c().await;
    running.shutdown().await;
    ExitCode::SUCCESS
}
