//! `roomcast-bench`: the load generator's command line. Each scenario prints
//! its result as one JSON object on stdout and as a table on stderr; `report`
//! turns a results directory into docs/benchmarks.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use roomcast_bench::scenario::{connect_storm, drain, fanout, idle};
use roomcast_bench::summary::emit;
use roomcast_bench::target::{Target, parse_loopback_authority, parse_target};
use roomcast_bench::{BenchError, report};

/// Load generator for Roomcast (and the Node.js baseline): loopback targets only.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N subscribers over K rooms, P publishers at R msg/s: rate, latency, loss.
    Fanout(FanoutArgs),
    /// N idle connections, one room each: server memory per connection.
    Idle(IdleArgs),
    /// N clients connect at once: time until all are welcomed, failures.
    ConnectStorm(StormArgs),
    /// N clients on gateway A, POST /drain on A: time until all moved, losses.
    Drain(DrainArgs),
    /// Writes docs/benchmarks.md from a results directory of scripts/bench.
    Report(ReportArgs),
}

#[derive(Args)]
struct Targets {
    /// WebSocket URLs of the gateways (comma-separated or repeated); loopback only.
    #[arg(long = "url", value_delimiter = ',', required = true)]
    urls: Vec<String>,
}

impl Targets {
    fn parse(&self) -> Result<Vec<Target>, BenchError> {
        self.urls.iter().map(|u| parse_target(u)).collect()
    }
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    targets: Targets,
    /// Subscribing connections.
    #[arg(long, default_value_t = 2000)]
    subscribers: usize,
    /// Rooms.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Publishing connections.
    #[arg(long, default_value_t = 20)]
    publishers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Payload (`data`) bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds at the start whose messages are not timed.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for deliveries in flight after the last publish.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Server processes to measure CPU time of (repeat or comma-separate).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Connections per source address 127.0.0.2, 127.0.0.3, … (0: no binding).
    #[arg(long, default_value_t = 0)]
    per_source_address: usize,
    /// Room name prefix.
    #[arg(long, default_value = "bench-")]
    room_prefix: String,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    targets: Targets,
    /// Connections (keep below ~18,000 per process: 20,000 open files max).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Rooms (connection i joins room i % rooms).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Connections per source address 127.0.0.2, 127.0.0.3, ….
    #[arg(long, default_value_t = 10_000)]
    per_source_address: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds to wait before reading memory.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Seconds to keep the connections open after reading memory.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Server processes to measure RSS of (repeat or comma-separate).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
}

#[derive(Args)]
struct StormArgs {
    #[command(flatten)]
    targets: Targets,
    /// Clients connecting at once (keep below ~18,000 per process).
    #[arg(long, default_value_t = 5000)]
    clients: usize,
    /// Connections per source address 127.0.0.2, 127.0.0.3, ….
    #[arg(long, default_value_t = 10_000)]
    per_source_address: usize,
    /// Seconds after which a client without welcome counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[derive(Args)]
struct DrainArgs {
    /// WebSocket URL of the gateway to drain.
    #[arg(long)]
    url: String,
    /// Its admin address (host:port) for POST /drain.
    #[arg(long)]
    admin: String,
    /// WebSocket URLs of the other gateways (comma-separated or repeated).
    #[arg(long = "other-url", value_delimiter = ',', required = true)]
    others: Vec<String>,
    /// Clients on the drained gateway.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Subscribers on the other gateways, checked for loss.
    #[arg(long, default_value_t = 200)]
    stayers: usize,
    /// Rooms.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Publishers on the other gateways.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Seconds after POST /drain to give up on clients not yet moved.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Connections per source address 127.0.0.2, 127.0.0.3, … (0: no binding).
    #[arg(long, default_value_t = 0)]
    per_source_address: usize,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Args)]
struct ReportArgs {
    /// Directory of `<scenario>.<system>.<round>.json` results (plus commands.txt, notes.txt).
    #[arg(long)]
    results: PathBuf,
    /// Markdown file to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    output: PathBuf,
}

fn seconds(value: f64, what: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value).map_err(|_| BenchError::new(format!("bad {what}: {value}")))
}

async fn run(command: Command) -> Result<(), BenchError> {
    match command {
        Command::Fanout(a) => {
            let cfg = fanout::Config {
                targets: a.targets.parse()?,
                subscribers: a.subscribers,
                rooms: a.rooms,
                publishers: a.publishers,
                rate: a.rate,
                payload: a.payload,
                duration: seconds(a.duration, "--duration")?,
                warmup: seconds(a.warmup, "--warmup")?,
                grace: seconds(a.grace, "--grace")?,
                server_pids: a.server_pids,
                connect_concurrency: a.connect_concurrency,
                per_source_address: a.per_source_address,
                room_prefix: a.room_prefix,
            };
            emit(&fanout::run(&cfg).await?)
        }
        Command::Idle(a) => {
            let cfg = idle::Config {
                targets: a.targets.parse()?,
                connections: a.connections,
                rooms: a.rooms,
                per_source_address: a.per_source_address,
                connect_concurrency: a.connect_concurrency,
                settle: seconds(a.settle, "--settle")?,
                hold: seconds(a.hold, "--hold")?,
                server_pids: a.server_pids,
            };
            emit(&idle::run(&cfg).await?)
        }
        Command::ConnectStorm(a) => {
            let cfg = connect_storm::Config {
                targets: a.targets.parse()?,
                clients: a.clients,
                per_source_address: a.per_source_address,
                timeout: seconds(a.timeout, "--timeout")?,
            };
            emit(&connect_storm::run(&cfg).await?)
        }
        Command::Drain(a) => {
            let admin: SocketAddr = parse_loopback_authority(&a.admin, 80)
                .map_err(|why| BenchError::new(format!("--admin {}: {why}", a.admin)))?;
            let cfg = drain::Config {
                drained: parse_target(&a.url)?,
                admin,
                others: a
                    .others
                    .iter()
                    .map(|u| parse_target(u))
                    .collect::<Result<_, _>>()?,
                clients: a.clients,
                stayers: a.stayers,
                rooms: a.rooms,
                publishers: a.publishers,
                rate: a.rate,
                payload: a.payload,
                timeout: seconds(a.timeout, "--timeout")?,
                per_source_address: a.per_source_address,
                connect_concurrency: a.connect_concurrency,
            };
            emit(&drain::run(&cfg).await?)
        }
        Command::Report(a) => {
            let inputs = report::load(&a.results)?;
            std::fs::write(&a.output, report::render(&inputs))?;
            eprintln!("wrote {}", a.output.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roomcast-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
