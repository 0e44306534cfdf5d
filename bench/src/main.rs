//! `roomcast-bench`: the load generator's command line. Each scenario prints
//! its result as one JSON object on stdout and as a table on stderr; `report`
//! turns a results directory into docs/benchmarks.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use roomcast_bench::fallback;
use roomcast_bench::scenario::soak::restart::NatsControl;
use roomcast_bench::scenario::soak::verdict::Mix;
use roomcast_bench::scenario::{
    connect_storm, drain, fanout, floor, formats, idle, presence, soak,
};
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
    /// The machine's CPU cost of one delivery: a pre-encoded frame written to
    /// N loopback sockets, nothing else.
    Floor(FloorArgs),
    /// N idle connections, one room each: server memory per connection.
    Idle(IdleArgs),
    /// N clients connect at once: time until all are welcomed, failures.
    ConnectStorm(StormArgs),
    /// N clients on gateway A, POST /drain on A: time until all moved, losses.
    Drain(DrainArgs),
    /// Minutes of random churn on two gateways, NATS restarted half way:
    /// RSS and fds flat, connections and rooms back to 0, nothing accepted lost.
    Soak(SoakArgs),
    /// Members in rooms on two gateways, visitors joining and leaving at a
    /// steady rate, without then with watchers: presence events per second,
    /// CPU, presence bus messages per join, watchers' views checked.
    Presence(PresenceArgs),
    /// One room, N subscribers, a 1 KiB payload in one wire format (JSON,
    /// JSON with permessage-deflate, binary as base64 JSON or as MessagePack):
    /// bytes on the wire and server CPU per delivery.
    Formats(FormatsArgs),
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
struct FormatsArgs {
    #[command(flatten)]
    targets: Targets,
    /// The payload and its encoding.
    #[arg(long, value_enum)]
    variant: formats::Variant,
    /// Subscribing connections (one room).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Server processes to measure CPU time of (repeat or comma-separate).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
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
    /// Share of the subscribers on Server-Sent Events (`GET /sse`), 0..=1.
    #[arg(long, default_value_t = 0.0)]
    sse_share: f64,
    /// Share of the subscribers on long polling (`POST /poll`), 0..=1.
    #[arg(long, default_value_t = 0.0)]
    poll_share: f64,
}

#[derive(Args)]
struct FloorArgs {
    /// Loopback connections written to.
    #[arg(long, default_value_t = 2000)]
    sockets: usize,
    /// Deliveries per second offered, over all connections.
    #[arg(long, default_value_t = 50_000.0)]
    rate: f64,
    /// Bytes of the pre-encoded frame, header included.
    #[arg(long, default_value_t = 200)]
    frame_bytes: usize,
    /// Frames per write call (1: one write per delivery).
    #[arg(long, default_value_t = 1)]
    frames_per_write: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
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
    /// `websocket`, or an HTTP fallback: `sse` or `poll`.
    #[arg(long, default_value = "websocket", value_parser = ["websocket", "sse", "poll"])]
    transport: String,
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
    /// Rooms in the `hist:` namespace, whose history the gateways keep:
    /// drained clients rejoin with `since` and their losses are counted.
    #[arg(long)]
    history: bool,
}

#[derive(Args)]
struct PresenceArgs {
    #[command(flatten)]
    targets: Targets,
    /// Admin listeners of the gateways, in the order of --url (comma-separated).
    #[arg(long = "admin", value_delimiter = ',', required = true)]
    admins: Vec<String>,
    /// Members that stay joined.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Persistent watchers per room, spread over the gateways.
    #[arg(long, default_value_t = 2)]
    watchers_per_room: usize,
    /// Visits (a new user joins a room, stays, leaves) started per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds a visitor stays.
    #[arg(long, default_value_t = 1.0)]
    hold: f64,
    /// Seconds of visits with nobody watching.
    #[arg(long, default_value_t = 5.0)]
    unwatched: f64,
    /// Seconds of visits with watchers.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds to wait for events in flight before the final check.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Handshakes in flight at once while connecting members.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Member connections per source address 127.0.0.2, 127.0.0.3, … (0: no binding).
    #[arg(long, default_value_t = 10_000)]
    per_source_address: usize,
    /// Server processes to measure CPU time of (repeat or comma-separate).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
}

#[derive(Args)]
struct SoakArgs {
    #[command(flatten)]
    targets: Targets,
    /// Admin addresses (host:port) of the gateways, in the order of --url.
    #[arg(long = "admin", value_delimiter = ',', required = true)]
    admins: Vec<String>,
    /// Gateway pids, in the order of --url.
    #[arg(long = "gateway-pid", value_delimiter = ',', required = true)]
    gateway_pids: Vec<u32>,
    /// Pid of the nats-server to restart half way (none: no restart).
    #[arg(long, requires = "nats_server")]
    nats_pid: Option<u32>,
    /// nats-server binary to start again.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// The nats-server's port on 127.0.0.1.
    #[arg(long, default_value_t = 4222)]
    nats_port: u16,
    /// Log file of the restarted nats-server.
    #[arg(long)]
    nats_log: Option<PathBuf>,
    /// Seconds nats-server stays down.
    #[arg(long, default_value_t = 2.0)]
    nats_down: f64,
    /// Seconds of load (600 in `make bench`).
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Seconds at the start not judged for flatness.
    #[arg(long, default_value_t = 60.0)]
    warmup: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Churning clients open at once (about).
    #[arg(long, default_value_t = 1000)]
    churners: usize,
    /// Shortest life of a churning connection, seconds.
    #[arg(long, default_value_t = 2.0)]
    min_life: f64,
    /// Longest life of a churning connection, seconds.
    #[arg(long, default_value_t = 20.0)]
    max_life: f64,
    /// Percent of connections closed cleanly.
    #[arg(long, default_value_t = 60)]
    clean: u32,
    /// Percent ended by a TCP reset.
    #[arg(long, default_value_t = 15)]
    reset: u32,
    /// Percent dropped without a close frame.
    #[arg(long, default_value_t = 22)]
    drop: u32,
    /// Percent slow readers (stop reading in the hot room).
    #[arg(long, default_value_t = 3)]
    slow: u32,
    /// Seconds a slow reader stops reading.
    #[arg(long, default_value_t = 15.0)]
    stall: f64,
    /// Steady subscribers (checked for loss).
    #[arg(long, default_value_t = 200)]
    steady: usize,
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Publishers.
    #[arg(long, default_value_t = 20)]
    publishers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Messages per second to the hot room.
    #[arg(long, default_value_t = 100.0)]
    hot_rate: f64,
    /// Payload bytes of hot-room messages.
    #[arg(long, default_value_t = 8192)]
    hot_payload: usize,
    /// Steady subscribers of the hot room.
    #[arg(long, default_value_t = 10)]
    hot_readers: usize,
    /// Churning connections per source address 127.0.0.2, 127.0.0.3, … (0: no binding).
    #[arg(long, default_value_t = 125)]
    per_source_address: usize,
    /// Seconds to wait for connections and rooms to reach 0 at the end.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct ReportArgs {
    /// Directory of `<scenario>.<system>.<round>.json` results (plus commands.txt, notes.txt).
    #[arg(long)]
    results: PathBuf,
    /// Markdown file to write.
    #[arg(long, default_value = "docs/benchmarks.md")]
    output: PathBuf,
    /// Only this section, spliced into the existing output file.
    #[arg(long, value_parser = ["soak", "hot-room", "floor", "formats", "fallback", "presence", "history"])]
    only: Option<String>,
}

fn seconds(value: f64, what: &str) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(value).map_err(|_| BenchError::new(format!("bad {what}: {value}")))
}

/// A gateway's admin address given with `--admin` (loopback host:port).
fn admin_addr(text: &str) -> Result<SocketAddr, BenchError> {
    parse_loopback_authority(text, 80)
        .map_err(|why| BenchError::new(format!("--admin {text}: {why}")))
}

/// Every `--admin` address of a list.
fn admin_addrs(texts: &[String]) -> Result<Vec<SocketAddr>, BenchError> {
    texts.iter().map(|t| admin_addr(t)).collect()
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
                sse_share: a.sse_share,
                poll_share: a.poll_share,
            };
            emit(&fanout::run(&cfg).await?)
        }
        Command::Floor(a) => {
            let cfg = floor::Config {
                sockets: a.sockets,
                rate: a.rate,
                frame_bytes: a.frame_bytes,
                frames_per_write: a.frames_per_write,
                duration: seconds(a.duration, "--duration")?,
            };
            let report = tokio::task::spawn_blocking(move || floor::run(&cfg))
                .await
                .map_err(|e| BenchError::new(e.to_string()))??;
            emit(&report)
        }
        Command::Formats(a) => {
            let cfg = formats::Config {
                targets: a.targets.parse()?,
                variant: a.variant,
                subscribers: a.subscribers,
                rate: a.rate,
                duration: seconds(a.duration, "--duration")?,
                server_pids: a.server_pids,
            };
            emit(&formats::run(&cfg).await?)
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
                fallback: match a.transport.as_str() {
                    "sse" => Some(fallback::Kind::Sse),
                    "poll" => Some(fallback::Kind::Poll),
                    _ => None,
                },
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
            let admin = admin_addr(&a.admin)?;
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
                history: a.history,
            };
            emit(&drain::run(&cfg).await?)
        }
        Command::Presence(a) => {
            let admins = admin_addrs(&a.admins)?;
            let cfg = presence::Config {
                targets: a.targets.parse()?,
                admins,
                members: a.members,
                rooms: a.rooms,
                watchers_per_room: a.watchers_per_room,
                rate: a.rate,
                hold: seconds(a.hold, "--hold")?,
                unwatched: seconds(a.unwatched, "--unwatched")?,
                duration: seconds(a.duration, "--duration")?,
                settle: seconds(a.settle, "--settle")?,
                connect_concurrency: a.connect_concurrency,
                per_source_address: a.per_source_address,
                server_pids: a.server_pids,
            };
            emit(&presence::run(&cfg).await?)
        }
        Command::Soak(a) => {
            let admins = admin_addrs(&a.admins)?;
            let nats = match (a.nats_pid, a.nats_server) {
                (Some(pid), Some(binary)) => Some(NatsControl {
                    pid,
                    binary,
                    port: a.nats_port,
                    log: a.nats_log,
                }),
                _ => None,
            };
            let cfg = soak::Config {
                targets: a.targets.parse()?,
                admins,
                gateway_pids: a.gateway_pids,
                nats,
                nats_down: seconds(a.nats_down, "--nats-down")?,
                duration: seconds(a.duration, "--duration")?,
                warmup: seconds(a.warmup, "--warmup")?,
                sample_every: seconds(a.sample_every, "--sample-every")?,
                churners: a.churners,
                lifetime: (
                    seconds(a.min_life, "--min-life")?,
                    seconds(a.max_life.max(a.min_life), "--max-life")?,
                ),
                mix: Mix {
                    clean: a.clean,
                    reset: a.reset,
                    drop: a.drop,
                    slow: a.slow,
                },
                stall: seconds(a.stall, "--stall")?,
                steady: a.steady,
                rooms: a.rooms,
                publishers: a.publishers,
                rate: a.rate,
                payload: a.payload,
                hot_rate: a.hot_rate,
                hot_payload: a.hot_payload,
                hot_readers: a.hot_readers,
                per_source_address: a.per_source_address,
                settle: seconds(a.settle, "--settle")?,
                seed: a.seed,
                command: command_line(),
            };
            let report = soak::run(&cfg).await?;
            emit(&report)?;
            eprint!("{}", soak::verdict_lines(&report));
            Ok(())
        }
        Command::Report(a) => {
            let inputs = report::load(&a.results)?;
            let only = a.only.as_deref().map(|name| {
                report::render_only(&inputs, name)
                    .ok_or_else(|| BenchError::new(format!("--only {name}: no such section")))
            });
            let text = if let Some(sections) = only {
                let existing = std::fs::read_to_string(&a.output).unwrap_or_default();
                sections?.iter().fold(existing, |doc, (heading, section)| {
                    report::splice_section(&doc, heading, section)
                })
            } else {
                report::render(&inputs)
            };
            std::fs::write(&a.output, text)?;
            eprintln!("wrote {}", a.output.display());
            Ok(())
        }
    }
}

/// This process's command line, program name shortened, for reports.
fn command_line() -> String {
    let mut args = std::env::args();
    let _ = args.next();
    std::iter::once("roomcast-bench".to_owned())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
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
