//! `crdgen`: renders the RealtimeCluster CRD from the Rust types.
//!
//! `crdgen` prints it; `crdgen --write [PATH]` writes it (default `crds/realtimecluster.yaml`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match roomcast_operator::crd::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        [flag, rest @ ..] if flag == "--write" && rest.len() <= 1 => {
            let path = rest
                .first()
                .map_or("crds/realtimecluster.yaml", String::as_str);
            match std::fs::write(path, yaml) {
                Ok(()) => {
                    eprintln!("crdgen: wrote {path}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crdgen: cannot write {path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: crdgen [--write [PATH]]");
            ExitCode::from(2)
        }
    }
}
