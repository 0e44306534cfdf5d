//! docs/benchmarks.md from a results directory: the JSON results of one
//! `scripts/bench` run (`<scenario>.<system>.<round>.json`), the machine it ran
//! on, and the commands it ran. Rendering is pure; reading files is at the edge.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::BenchError;

/// The p99 a sweep step may not exceed, in milliseconds.
pub const SWEEP_P99_LIMIT_MS: f64 = 50.0;

/// The two systems compared.
pub const SYSTEMS: [&str; 2] = ["roomcast", "baseline"];

/// One result file.
#[derive(Debug, Clone)]
pub struct Run {
    /// `standard`, `sweep-<offered>`, `idle`, `storm` or `drain`.
    pub scenario: String,
    /// `roomcast` or `baseline`.
    pub system: String,
    /// 1, 2, … in the order run.
    pub round: u32,
    /// The scenario's JSON result.
    pub result: Value,
}

/// Everything one report is made of.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// All results.
    pub runs: Vec<Run>,
    /// Machine description lines.
    pub machine: Vec<String>,
    /// Commands that produced the results, one a line.
    pub commands: String,
    /// Free-form notes from the driver (mode, load averages).
    pub notes: String,
    /// The commands of the soak (servers and load generator), one a line.
    pub soak_commands: String,
}

/// Splits `standard.roomcast.2.json` into its parts.
pub fn parse_name(file: &str) -> Option<(String, String, u32)> {
    let stem = file.strip_suffix(".json")?;
    let mut parts = stem.rsplitn(3, '.');
    let round = parts.next()?.parse().ok()?;
    let system = parts.next()?.to_owned();
    let scenario = parts.next()?.to_owned();
    Some((scenario, system, round))
}

/// Reads a results directory.
pub fn load(dir: &Path) -> Result<Inputs, BenchError> {
    let mut runs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((scenario, system, round)) = parse_name(name) else {
            continue;
        };
        let text = fs::read_to_string(&path)?;
        // The driver stores the load generator's stdout; its last line is the result.
        let Some(line) = text.lines().rev().find(|l| l.starts_with('{')) else {
            continue;
        };
        let result = serde_json::from_str(line)
            .map_err(|e| BenchError::new(format!("{}: {e}", path.display())))?;
        runs.push(Run {
            scenario,
            system,
            round,
            result,
        });
    }
    runs.sort_by(|a, b| (&a.scenario, a.round, &a.system).cmp(&(&b.scenario, b.round, &b.system)));
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    Ok(Inputs {
        runs,
        machine: machine(),
        commands: read("commands.txt"),
        notes: read("notes.txt"),
        soak_commands: read("soak-commands.txt"),
    })
}

/// CPU model, cores, memory and kernel of this machine, from /proc.
pub fn machine() -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    machine_lines(&cpuinfo, &meminfo, kernel.trim(), cores)
}

/// The machine description from the texts of /proc (pure).
pub fn machine_lines(cpuinfo: &str, meminfo: &str, kernel: &str, cores: usize) -> Vec<String> {
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let model = field(cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
    let mem_kib: f64 = field(meminfo, "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0.0);
    vec![
        format!("CPU: {model}, {cores} cores available (`nproc`)"),
        format!("Memory: {:.1} GiB", mem_kib / 1024.0 / 1024.0),
        format!("Kernel: Linux {kernel}"),
    ]
}

fn num(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn runs_of<'a>(
    inputs: &'a Inputs,
    scenario: &'a str,
    system: &'a str,
) -> impl Iterator<Item = &'a Run> {
    inputs
        .runs
        .iter()
        .filter(move |r| r.scenario == scenario && r.system == system)
}

fn mean_of(inputs: &Inputs, scenario: &str, system: &str, path: &str) -> Option<f64> {
    let values: Vec<f64> = runs_of(inputs, scenario, system)
        .filter_map(|r| num(&r.result, path))
        .collect();
    (!values.is_empty()).then(|| values.iter().fold(0.0, |a, b| a + b) / values.len() as f64)
}

/// The sum of an object's numeric values (counts by code or reason).
fn count_sum(counts: &Value) -> f64 {
    counts.as_object().map_or(0.0, |m| {
        m.values().filter_map(Value::as_f64).fold(0.0, |a, b| a + b)
    })
}

/// Lost + duplicated + out-of-order of a fanout result, plus subscribers the
/// server closed.
pub fn fanout_problems(result: &Value) -> f64 {
    let closes: f64 = result.get("subscriber_closes").map_or(0.0, count_sum);
    ["lost", "duplicated", "out_of_order"]
        .iter()
        .filter_map(|k| num(result, k))
        .fold(0.0, |a, b| a + b)
        + closes
}

/// Whether a sweep step kept p99 within the limit with nothing lost.
pub fn sweep_passed(result: &Value) -> bool {
    num(result, "latency.p99_ms").is_some_and(|p99| p99 <= SWEEP_P99_LIMIT_MS)
        // Publishers held back past the limit hide the server's latency
        // from it (older results have no lag figure: nothing to hold against them).
        && num(result, "publisher_lag.p99_ms").is_none_or(|lag| lag <= SWEEP_P99_LIMIT_MS)
        && fanout_problems(result) == 0.0
        && num(result, "latency.count").is_some_and(|c| c > 0.0)
}

/// Sweep steps: offered deliveries/s → (passed, result).
pub type Steps = BTreeMap<u64, (bool, Value)>;

/// Offered deliveries/s of each sweep step of `system` → passed.
pub fn sweep(inputs: &Inputs, system: &str) -> Steps {
    climb(inputs, "sweep-", system)
}

/// Offered deliveries/s of each step of a climb (scenarios named
/// `<prefix><step>`) of `system` → passed.
pub fn climb(inputs: &Inputs, prefix: &str, system: &str) -> Steps {
    inputs
        .runs
        .iter()
        .filter(|r| r.system == system && r.scenario.starts_with(prefix))
        .filter_map(|r| {
            let offered = num(&r.result, "offered_deliveries_per_s")?.round() as u64;
            Some((offered, (sweep_passed(&r.result), r.result.clone())))
        })
        .collect()
}

/// The highest offered rate at which a system passed (every lower step
/// passing too).
pub fn max_passing(steps: &Steps) -> Option<u64> {
    steps
        .iter()
        .take_while(|(_, (passed, _))| *passed)
        .map(|(rate, _)| *rate)
        .last()
}

fn fmt(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}{unit}"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// Renders docs/benchmarks.md.
pub fn render(inputs: &Inputs) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "<!-- Generated by `make bench` (scripts/bench → `roomcast-bench report`); rerun it rather than editing. -->\n"
    );
    let _ = writeln!(
        w,
        "Roomcast (2 gateways + 1 nats-server) against the baseline (2 Node.js processes of \
         `bench/baseline`: `ws` + `nats`, one subject per room, local fan-out; + 1 nats-server), \
         driven by the same load generator (`roomcast-bench`) on the same machine, runs \
         alternating Roomcast, baseline, Roomcast, baseline. Everything shares the machine's \
         cores, so the systems are compared on server CPU per delivered message and on \
         latency, not on raw rate alone. Server CPU = utime + stime of the gateways (or Node \
         processes) and nats-server, from /proc/PID/stat, during the run.\n"
    );
    if !inputs.notes.trim().is_empty() {
        let _ = writeln!(w, "{}\n", inputs.notes.trim());
    }
    let _ = writeln!(w, "## Machine\n");
    for line in &inputs.machine {
        let _ = writeln!(w, "- {line}");
    }
    let _ = writeln!(w);

    targets_section(w, inputs);
    standard_section(w, inputs);
    sweep_section(w, inputs);
    idle_section(w, inputs);
    storm_section(w, inputs);
    drain_section(w, inputs);
    hot_room_section(w, inputs);
    floor_section(w, inputs);
    pairs_section(w, inputs);
    formats_section(w, inputs);
    fallback_section(w, inputs);
    history_section(w, inputs);
    soak_section(w, inputs);
    presence_section(w, inputs);

    let _ = writeln!(w, "## Commands\n");
    let _ = writeln!(
        w,
        "`make bench` (or `scripts/bench`, `scripts/bench --quick` for a smoke run) ran:\n"
    );
    let _ = writeln!(w, "```sh\n{}\n```", inputs.commands.trim());
    md
}

fn targets_section(w: &mut String, inputs: &Inputs) {
    let cpu = |s| mean_of(inputs, "standard", s, "server_cpu_us_per_delivery");
    let p99 = |s| mean_of(inputs, "standard", s, "latency.p99_ms");
    let mem = |s| mean_of(inputs, "idle", s, "bytes_per_connection");
    let (rc_cpu, bl_cpu) = (cpu("roomcast"), cpu("baseline"));
    let cpu_ratio = rc_cpu
        .zip(bl_cpu)
        .filter(|(r, _)| *r > 0.0)
        .map(|(r, b)| b / r);
    let rc_max = max_passing(&sweep(inputs, "roomcast"));
    let bl_max = max_passing(&sweep(inputs, "baseline"));
    let problems: f64 = inputs
        .runs
        .iter()
        .filter(|r| r.system == "roomcast" && r.scenario == "standard")
        .map(|r| fanout_problems(&r.result))
        .fold(0.0, |a, b| a + b)
        + inputs
            .runs
            .iter()
            .filter(|r| r.system == "roomcast" && r.scenario == "drain")
            .filter_map(|r| {
                Some(
                    num(&r.result, "stayer_problems.lost")?
                        + num(&r.result, "stayer_problems.duplicated")?
                        + num(&r.result, "stayer_problems.out_of_order")?,
                )
            })
            .fold(0.0, |a, b| a + b);
    let _ = writeln!(w, "## Against the targets\n");
    let _ = writeln!(w, "| target | Roomcast | baseline | ratio | goal | met |");
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    let _ = writeln!(
        w,
        "| server CPU per delivered message (standard scenario) | {} | {} | {} less | ≥ 5× less | {} |",
        fmt(rc_cpu, 2, " µs"),
        fmt(bl_cpu, 2, " µs"),
        fmt(cpu_ratio, 1, "×"),
        verdict(cpu_ratio.map(|r| r >= 5.0))
    );
    let _ = writeln!(
        w,
        "| p99 publish → deliver across two gateways (standard) | {} | {} | | ≤ 5 ms | {} |",
        fmt(p99("roomcast"), 2, " ms"),
        fmt(p99("baseline"), 2, " ms"),
        verdict(p99("roomcast").map(|p| p <= 5.0))
    );
    highest_rate_row(
        w,
        "highest offered deliveries/s with p99 ≤ 50 ms and nothing lost",
        rc_max,
        bl_max,
        3.0,
    );
    let _ = writeln!(
        w,
        "| idle memory per connection (RSS growth / N) | {} | {} | | ≤ 4 KiB | {} |",
        fmt(mem("roomcast").map(|b| b / 1024.0), 2, " KiB"),
        fmt(mem("baseline").map(|b| b / 1024.0), 2, " KiB"),
        verdict(mem("roomcast").map(|b| b <= 4096.0))
    );
    let _ = writeln!(
        w,
        "| lost + duplicated + out of order (standard and drain, Roomcast) | {problems} | | | 0 | {} |",
        verdict(Some(problems == 0.0))
    );
    wire_targets(w, inputs);
    let _ = writeln!(w);
}

/// The wire-efficiency targets (issue 17): the standard shape at 50,000 and
/// 100,000 deliveries/s (sweep steps) against the floor, and the hot room.
fn wire_targets(w: &mut String, inputs: &Inputs) {
    let floor = floor_us(inputs);
    let times_floor = |scenario: &str, system: &str| floor_multiple(inputs, scenario, system);
    let p99 = |scenario: &str, system: &str| mean_of(inputs, scenario, system, "latency.p99_ms");
    let (at50, at100) = (sweep_step(50_000), sweep_step(100_000));
    // The paired median where the run has pairs; else the sweep's step
    // over the floor run (results from before pairs existed).
    let pairs_at50 = |system: &str| {
        let mut pairs = paired_ratios(inputs, system);
        pairs.retain(|p| p.offered == 50_000);
        pairs
    };
    let (rc_pairs, bl_pairs) = (pairs_at50("roomcast"), pairs_at50("baseline"));
    let cpu50 =
        |pairs: &[Pair], system: &str| paired_median(pairs).or_else(|| times_floor(&at50, system));
    let (rc_cpu50, bl_cpu50) = (cpu50(&rc_pairs, "roomcast"), cpu50(&bl_pairs, "baseline"));
    let how = if rc_pairs.is_empty() {
        String::new()
    } else {
        format!(
            " (median of {} floor/step pairs, [CPU against the floor](#cpu-against-the-floor))",
            rc_pairs.len()
        )
    };
    let _ = writeln!(
        w,
        "| node CPU per delivery at 50,000/s (standard shape) as a multiple of the floor{how} | {} | {} | | ≤ 1.2× | {} |",
        fmt(rc_cpu50, 2, "×"),
        fmt(bl_cpu50, 2, "×"),
        verdict(rc_cpu50.map(|x| x <= 1.2))
    );
    for (step, limit) in [(&at50, 2.0), (&at100, 20.0)] {
        let _ = writeln!(
            w,
            "| p99 at {} deliveries/s (standard shape) | {} | {} | | ≤ {limit} ms | {} |",
            step.trim_start_matches("sweep-").trim_start_matches('0'),
            fmt(p99(step, "roomcast"), 2, " ms"),
            fmt(p99(step, "baseline"), 2, " ms"),
            verdict(p99(step, "roomcast").map(|p| p <= limit))
        );
    }
    // The hot room's step at 200,000 deliveries/s offered, by rate (the
    // quick run's steps are smaller: then there is none).
    let hot_at = |system: &str| {
        let step = climb(inputs, "hot-", system).remove(&200_000)?.1;
        let cpu = node_cpu_us_per_delivery(&step)
            .zip(floor)
            .map(|(n, f)| n / f);
        Some((cpu, num(&step, "latency.p99_ms")))
    };
    let (delay_cpu, delay_p99) = hot_at("roomcast-delay").unwrap_or_default();
    let (bl_cpu, bl_p99) = hot_at("baseline").unwrap_or_default();
    let _ = writeln!(
        w,
        "| hot room at 200,000/s, `--write-delay-ms 20`: node CPU × floor, p99 | {}, {} | {}, {} | | ≤ 0.33×, ≤ 50 ms | {} |",
        fmt(delay_cpu, 2, "×"),
        fmt(delay_p99, 1, " ms"),
        fmt(bl_cpu, 2, "×"),
        fmt(bl_p99, 1, " ms"),
        verdict(
            delay_cpu
                .zip(delay_p99)
                .map(|(c, p)| c <= 1.0 / 3.0 && p <= 50.0)
        )
    );
    let best = |system: &str| max_passing(&climb(inputs, "hot-", system));
    let rc_best = best("roomcast").max(best("roomcast-delay"));
    let bl_best = best("baseline");
    highest_rate_row(
        w,
        "hot room: highest offered deliveries/s with p99 ≤ 50 ms and nothing lost (Roomcast: best of with and without the delay)",
        rc_best,
        bl_best,
        5.0,
    );
}

/// A row comparing the highest passing rates of Roomcast and the baseline
/// against a goal of `goal`× (Roomcast passing where the baseline passed
/// no step meets it).
fn highest_rate_row(w: &mut String, what: &str, rc: Option<u64>, bl: Option<u64>, goal: f64) {
    let ratio = match (rc, bl) {
        (Some(r), Some(b)) if b > 0 => Some(r as f64 / b as f64),
        _ => None,
    };
    let rate = |v: Option<u64>| v.map_or("below the lowest step".into(), |v| format!("{v}/s"));
    let _ = writeln!(
        w,
        "| {what} | {} | {} | {} | ≥ {goal}× | {} |",
        rate(rc),
        rate(bl),
        fmt(ratio, 1, "×"),
        verdict(match (rc, bl) {
            (Some(_), None) => Some(true),
            _ => ratio.map(|r| r >= goal),
        })
    );
}

/// The scenario name of the rate sweep's step at `offered` deliveries/s.
fn sweep_step(offered: u64) -> String {
    format!("sweep-{offered:07}")
}

/// The scenario name of the hot room's step at `publishes` per second.
fn hot_step(publishes: u64) -> String {
    format!("hot-{publishes:04}")
}

fn standard_section(w: &mut String, inputs: &Inputs) {
    let runs: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.scenario == "standard")
        .collect();
    let Some(first) = runs.first() else { return };
    let r = &first.result;
    let _ = writeln!(w, "## Standard fanout\n");
    let _ = writeln!(
        w,
        "{} subscribers over {} rooms across 2 nodes, {} publishers × {} msg/s, {}-byte payloads, \
         {} s: {} deliveries/s offered. Latency is from each message's send time (carried in \
         `data`) to its receipt, after a warm-up; a step also fails when its publishers went \
         out more than 50 ms late at p99 (held back, they would hide a slow server).\n",
        num(r, "subscribers").unwrap_or(0.0),
        num(r, "rooms").unwrap_or(0.0),
        num(r, "publishers").unwrap_or(0.0),
        num(r, "rate_per_publisher").unwrap_or(0.0),
        num(r, "payload_bytes").unwrap_or(0.0),
        num(r, "duration_s").unwrap_or(0.0),
        num(r, "offered_deliveries_per_s").unwrap_or(0.0),
    );
    fanout_table(w, &runs);
    path_table(w, &runs);
}

/// Latency by path: deliveries by the publisher's own gateway, and those
/// that crossed the bus (runs that recorded it).
fn path_table(w: &mut String, runs: &[&Run]) {
    let with_paths: Vec<&&Run> = runs
        .iter()
        .filter(|r| num(&r.result, "latency_by_path.across_gateways.count").is_some())
        .collect();
    if with_paths.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "Latency by path: delivered by the publisher's own gateway, or across gateways (through \
         NATS).\n"
    );
    let _ = writeln!(
        w,
        "| system | run | same gateway p50 ms | same gateway p99 ms | across gateways p50 ms | across gateways p99 ms |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for run in with_paths {
        let f = |p: &str| fmt(num(&run.result, &format!("latency_by_path.{p}")), 2, "");
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            run.system,
            run.round,
            f("same_gateway.p50_ms"),
            f("same_gateway.p99_ms"),
            f("across_gateways.p50_ms"),
            f("across_gateways.p99_ms"),
        );
    }
    let _ = writeln!(w);
}

fn fanout_table(w: &mut String, runs: &[&Run]) {
    let _ = writeln!(
        w,
        "| system | run | offered/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | dup | reordered | server CPU s | CPU µs/msg | load-gen CPU s |"
    );
    let _ = writeln!(
        w,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for run in runs {
        let r = &run.result;
        let g = |p: &str| fmt(num(r, p), 0, "");
        let f = |p: &str, d| fmt(num(r, p), d, "");
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.system,
            run.round,
            g("offered_deliveries_per_s"),
            g("delivered_per_s"),
            f("latency.p50_ms", 2),
            f("latency.p99_ms", 2),
            f("latency.p999_ms", 2),
            f("latency.max_ms", 2),
            g("lost"),
            g("duplicated"),
            g("out_of_order"),
            f("server_cpu_s", 2),
            f("server_cpu_us_per_delivery", 2),
            f("loadgen_cpu_s", 2),
        );
    }
    let _ = writeln!(w);
}

fn sweep_section(w: &mut String, inputs: &Inputs) {
    let steps: Vec<(&str, Steps)> = SYSTEMS.iter().map(|s| (*s, sweep(inputs, s))).collect();
    if steps.iter().all(|(_, s)| s.is_empty()) {
        return;
    }
    let _ = writeln!(w, "## Rate sweep\n");
    let _ = writeln!(
        w,
        "The standard room layout at rising offered rates (more messages per publisher). A step \
         passes when p99 ≤ {SWEEP_P99_LIMIT_MS} ms and nothing is lost, duplicated, reordered or \
         closed; a system's sweep stops at its first failed step. The load generator shares the \
         same cores, so at the top steps it competes with the system it measures.\n"
    );
    let _ = writeln!(
        w,
        "| offered deliveries/s | system | delivered/s | p99 ms | lost | CPU µs/msg | passed |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for (rate, system, passed, r) in climb_rows(&steps) {
        let _ = writeln!(
            w,
            "| {rate} | {system} | {} | {} | {} | {} | {} |",
            fmt(num(r, "delivered_per_s"), 0, ""),
            fmt(num(r, "latency.p99_ms"), 2, ""),
            fmt(num(r, "lost"), 0, ""),
            fmt(num(r, "server_cpu_us_per_delivery"), 2, ""),
            if passed { "yes" } else { "no" }
        );
    }
    let _ = writeln!(w);
}

/// The steps of several systems' climbs, by offered rate then system:
/// (rate, system, passed, result).
fn climb_rows<'a>(steps: &'a [(&'a str, Steps)]) -> Vec<(u64, &'a str, bool, &'a Value)> {
    let mut rows: Vec<(u64, usize, &str, bool, &Value)> = steps
        .iter()
        .enumerate()
        .flat_map(|(i, (system, s))| {
            s.iter()
                .map(move |(rate, (passed, r))| (*rate, i, *system, *passed, r))
        })
        .collect();
    rows.sort_by_key(|(rate, i, ..)| (*rate, *i));
    rows.into_iter()
        .map(|(rate, _, system, passed, r)| (rate, system, passed, r))
        .collect()
}

fn idle_section(w: &mut String, inputs: &Inputs) {
    let runs: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.scenario == "idle")
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Idle connections\n");
    let _ = writeln!(
        w,
        "N connections, each joined to one room, opened from 127.0.0.2, 127.0.0.3, …; memory per \
         connection = (sum of server RSS with N − with none) / N. nats-server is not counted.\n"
    );
    let _ = writeln!(
        w,
        "| system | run | connections | connected | RSS before KiB | RSS after KiB | bytes/connection | closed while idle |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for run in runs {
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            run.system,
            run.round,
            idle_cells(&run.result)
        );
    }
    let _ = writeln!(w);
}

/// The cells an idle run shares in every table: connections, connected, the
/// servers' summed RSS before and after, bytes per connection, closed while idle.
fn idle_cells(r: &Value) -> String {
    let sum = |key: &str| {
        r.get("servers")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(|x| num(x, key)).fold(0.0, |a, b| a + b))
    };
    [
        fmt(num(r, "connections"), 0, ""),
        fmt(num(r, "connected"), 0, ""),
        fmt(sum("rss_before_kib"), 0, ""),
        fmt(sum("rss_after_kib"), 0, ""),
        fmt(num(r, "bytes_per_connection"), 0, ""),
        fmt(num(r, "closed_while_idle"), 0, ""),
    ]
    .join(" | ")
}

fn storm_section(w: &mut String, inputs: &Inputs) {
    let runs: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.scenario == "storm")
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Connect storm\n");
    let _ = writeln!(w, "N clients connect at once, spread over both nodes.\n");
    let _ = writeln!(
        w,
        "| system | run | clients | welcomed | failures | all welcomed after s | p50 ms | p99 ms |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for run in runs {
        let r = &run.result;
        let failures: f64 = r.get("failures").map_or(0.0, count_sum);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {failures} | {} | {} | {} |",
            run.system,
            run.round,
            fmt(num(r, "clients"), 0, ""),
            fmt(num(r, "welcomed"), 0, ""),
            fmt(num(r, "time_to_all_welcomed_s"), 3, ""),
            fmt(num(r, "welcome_latency.p50_ms"), 2, ""),
            fmt(num(r, "welcome_latency.p99_ms"), 2, ""),
        );
    }
    let _ = writeln!(w);
}

fn drain_section(w: &mut String, inputs: &Inputs) {
    let runs: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.scenario == "drain")
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Drain (Roomcast only: the baseline has no drain)\n");
    let _ = writeln!(
        w,
        "N clients on gateway A, `POST /drain` on A (closes spread over 90% of `drain_seconds`); \
         clients reconnect with backoff and jitter to the other gateway and rejoin their room, \
         while publishers on the other gateway keep publishing to subscribers that stay.\n"
    );
    let _ = writeln!(
        w,
        "| run | clients | closes | reconnected | all rejoined after s | close → rejoin p99 ms | stayers' messages | lost | dup | reordered |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let r = &run.result;
        let closes = r
            .get("closes")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "| {} | {} | {closes} | {} | {} | {} | {} | {} | {} | {} |",
            run.round,
            fmt(num(r, "clients"), 0, ""),
            fmt(num(r, "reconnected"), 0, ""),
            fmt(num(r, "time_to_all_reconnected_s"), 3, ""),
            fmt(num(r, "reconnect_latency.p99_ms"), 2, ""),
            fmt(num(r, "stayer_delivered"), 0, ""),
            fmt(num(r, "stayer_problems.lost"), 0, ""),
            fmt(num(r, "stayer_problems.duplicated"), 0, ""),
            fmt(num(r, "stayer_problems.out_of_order"), 0, ""),
        );
    }
    let _ = writeln!(w);
}

/// The heading of the history section (what [`splice_section`] replaces).
pub const HISTORY_HEADING: &str = "## History";

/// History on against off in the standard fanout (`history.off|on.N`: rooms
/// without history, rooms in the `hist:` namespace), and the drain with
/// history (`history-drain.roomcast.N`), where drained clients recover with
/// `since`.
fn history_section(w: &mut String, inputs: &Inputs) {
    let fanouts: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.scenario == "history")
        .collect();
    let drains: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.scenario == "history-drain")
        .collect();
    if fanouts.is_empty() && drains.is_empty() {
        return;
    }
    let _ = writeln!(w, "{HISTORY_HEADING} (Roomcast only)\n");
    let _ = writeln!(
        w,
        "The gateways run with `--namespace 'hist:history_size=100'` on a nats-server with \
         JetStream (`-js`, file storage). `off`: the standard fanout in rooms without history \
         (core NATS); `on`: the same in `hist:` rooms (every publish stored in JetStream first, \
         delivered by the stream's RePublish with `offset`/`epoch`). Server CPU includes \
         nats-server, so JetStream's own cost is in it.\n"
    );
    if !fanouts.is_empty() {
        fanout_table(w, &fanouts);
        let mean = |system: &str, path: &str| mean_of(inputs, "history", system, path);
        let ratio = |path: &str| match (mean("on", path), mean("off", path)) {
            (Some(on), Some(off)) if off > 0.0 => Some(on / off),
            _ => None,
        };
        let p99 = ratio("latency.p99_ms");
        let cpu = ratio("server_cpu_us_per_delivery");
        let _ = writeln!(
            w,
            "| history on ÷ off | ratio | target | met |\n|---|---|---|---|\n\
             | p50 latency | {} | | |\n\
             | p99 latency | {} | ≤ 2 | {} |\n\
             | server CPU per delivery | {} | ≤ 1.3 | {} |\n",
            fmt(ratio("latency.p50_ms"), 2, ""),
            fmt(p99, 2, ""),
            verdict(p99.map(|r| r <= 2.0)),
            fmt(cpu, 2, ""),
            verdict(cpu.map(|r| r <= 1.3)),
        );
    }
    if !drains.is_empty() {
        let _ = writeln!(
            w,
            "Drain with history: like the drain above, in `hist:` rooms; drained clients rejoin \
             on the other gateway with `since` (the last offset they got) and are checked for \
             loss across the move, like the stayers.\n"
        );
        let _ = writeln!(
            w,
            "| run | clients | reconnected | recovered | all rejoined after s | drained clients' messages | lost | dup | reordered | stayers' messages | lost |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|");
        for run in drains {
            let r = &run.result;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.round,
                fmt(num(r, "clients"), 0, ""),
                fmt(num(r, "reconnected"), 0, ""),
                fmt(num(r, "movers.recovered"), 0, ""),
                fmt(num(r, "time_to_all_reconnected_s"), 3, ""),
                fmt(num(r, "movers.delivered"), 0, ""),
                fmt(num(r, "movers.problems.lost"), 0, ""),
                fmt(num(r, "movers.problems.duplicated"), 0, ""),
                fmt(num(r, "movers.problems.out_of_order"), 0, ""),
                fmt(num(r, "stayer_delivered"), 0, ""),
                fmt(num(r, "stayer_problems.lost"), 0, ""),
            );
        }
        let _ = writeln!(w);
    }
}

/// The heading of the presence events section (what [`splice_section`] replaces).
pub const PRESENCE_HEADING: &str = "## Presence events";

/// Just the presence events section, for `report --only presence`.
pub fn render_presence(inputs: &Inputs) -> String {
    let mut md = String::new();
    presence_section(&mut md, inputs);
    md
}

fn presence_section(w: &mut String, inputs: &Inputs) {
    let Some(run) = inputs.runs.iter().find(|r| r.scenario == "presence") else {
        return;
    };
    let r = &run.result;
    let n = |path: &str| num(r, path);
    let _ = writeln!(w, "{PRESENCE_HEADING} (Roomcast only)\n");
    let _ = writeln!(
        w,
        "{} members in {} rooms on two gateways; new users visit a room at {} visits/s \
         (join, stay {} s, leave), first with nobody watching, then with {} watchers \
         (`presence: true`, spread over both gateways) while the visitors watch too. \
         Bus messages are the gateways' `roomcast_presence_bus_messages_out_total`; a \
         visit's join and its leave count as one join.\n",
        plain_number(&r["members"]),
        plain_number(&r["rooms"]),
        plain_number(&r["rate"]),
        plain_number(&r["hold_s"]),
        plain_number(&r["watchers"]),
    );
    let _ = writeln!(
        w,
        "| phase | visits | joins | presence bus messages | per join | events | events/s | server CPU s |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for (label, phase) in [("nobody watching", "unwatched"), ("watched", "watched")] {
        let p = |field: &str| plain_number(&r[phase][field]);
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            p("visits"),
            p("joins"),
            p("presence_bus_messages"),
            p("presence_bus_messages_per_join"),
            p("events"),
            p("events_per_s"),
            p("server_cpu_s"),
        );
    }
    let _ = writeln!(
        w,
        "\nServer CPU per delivered event (watched): {} µs. Watchers' views (the `presence` \
         answer at the start plus every event, against the answer at the end): {} consistent, \
         {} wrong, {} impossible events (a `joined` for a user already there or a `left` for \
         one not there).\n",
        fmt(n("server_cpu_us_per_event"), 1, ""),
        plain_number(&r["views_consistent"]),
        plain_number(&r["views_wrong"]),
        plain_number(&r["impossible_events"]),
    );
}

/// The heading of the hot-room section.
pub const HOT_HEADING: &str = "## Hot room";

/// The heading of the floor section.
pub const FLOOR_HEADING: &str = "## Floor";

/// The systems of the hot room: Roomcast, the baseline, and Roomcast with
/// its writes coalesced over a delay.
pub const HOT_SYSTEMS: [&str; 3] = ["roomcast", "baseline", "roomcast-delay"];

/// The sections of `report --only <name>`, each as its heading and its
/// text: the hot room comes with the floor its multiples are taken of.
pub fn render_only(inputs: &Inputs, name: &str) -> Option<Vec<(&'static str, String)>> {
    let section = |heading, render: fn(&mut String, &Inputs)| {
        let mut md = String::new();
        render(&mut md, inputs);
        (heading, md)
    };
    let floor = section(FLOOR_HEADING, floor_section);
    Some(match name {
        "soak" => vec![section(SOAK_HEADING, soak_section)],
        "hot-room" => vec![floor, section(HOT_HEADING, hot_room_section)],
        "floor" => vec![floor],
        "formats" => vec![section(FORMATS_HEADING, formats_section)],
        "fallback" => vec![section(FALLBACK_HEADING, fallback_section)],
        "presence" => vec![section(PRESENCE_HEADING, presence_section)],
        "history" => vec![section(HISTORY_HEADING, history_section)],
        _ => return None,
    })
}

/// CPU microseconds per delivered message of the servers but the last
/// (scripts/bench lists the nats-server last): the gateways' (or Node
/// processes') own cost, what the floor is compared with.
pub fn node_cpu_us_per_delivery(result: &Value) -> Option<f64> {
    let servers = result.get("server_cpu")?.as_array()?;
    let delivered = num(result, "delivered")?;
    let nodes = servers.split_last()?.1;
    let cpu: f64 = nodes
        .iter()
        .filter_map(|p| num(p, "cpu_seconds"))
        .fold(0.0, |a, b| a + b);
    (delivered > 0.0).then(|| cpu * 1e6 / delivered)
}

/// The mean node CPU per delivery of `system`'s `scenario` runs as a
/// multiple of the floor.
fn floor_multiple(inputs: &Inputs, scenario: &str, system: &str) -> Option<f64> {
    let values: Vec<f64> = runs_of(inputs, scenario, system)
        .filter_map(|r| node_cpu_us_per_delivery(&r.result))
        .collect();
    let mean = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    mean.zip(floor_us(inputs)).map(|(n, f)| n / f)
}

/// The floor: writer CPU µs per delivery at one frame per write.
fn floor_us(inputs: &Inputs) -> Option<f64> {
    mean_of(inputs, "floor", "machine", "cpu_us_per_delivery")
}

/// The scenario of the paired floor runs (system `machine`).
pub const PAIR_FLOOR: &str = "pair-floor";

/// The scenario of the paired steps: the standard shape at 50,000/s (a
/// smaller rate in a quick run).
pub const PAIR_STEP: &str = "pair-step";

/// One floor/step pair of one system: the floor run and the step right
/// after it, so both see the machine in the same state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// The pair's number (the rounds of its runs).
    pub round: u32,
    /// Writer CPU µs per delivery of the pair's floor run.
    pub floor_us: f64,
    /// Node CPU µs per delivery of the pair's step.
    pub node_us: f64,
    /// Offered deliveries/s of the pair's step.
    pub offered: u64,
}

impl Pair {
    /// The step's node CPU as a multiple of its own floor.
    pub fn ratio(&self) -> f64 {
        self.node_us / self.floor_us
    }
}

/// The pairs of `system`: each `pair-step` step with the `pair-floor`
/// run of the same round. One slow floor run (or step) moves one pair, not
/// the figure: a single 10-second floor run against a single 8-second step
/// taken minutes apart moved by 8 % between two runs of one build.
pub fn paired_ratios(inputs: &Inputs, system: &str) -> Vec<Pair> {
    runs_of(inputs, PAIR_STEP, system)
        .filter_map(|step| {
            let floor = runs_of(inputs, PAIR_FLOOR, "machine")
                .find(|f| f.round == step.round)
                .and_then(|f| num(&f.result, "cpu_us_per_delivery"))
                .filter(|f| *f > 0.0)?;
            Some(Pair {
                round: step.round,
                floor_us: floor,
                node_us: node_cpu_us_per_delivery(&step.result)?,
                offered: num(&step.result, "offered_deliveries_per_s")?.round() as u64,
            })
        })
        .collect()
}

/// The median ratio of some pairs (the mean of the middle two for an even
/// number).
pub fn paired_median(pairs: &[Pair]) -> Option<f64> {
    let mut ratios: Vec<f64> = pairs.iter().map(Pair::ratio).collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(ratios[n / 2]),
        _ => Some((ratios[n / 2 - 1] + ratios[n / 2]) / 2.0),
    }
}

/// The heading of the paired CPU section.
pub const PAIRS_HEADING: &str = "## CPU against the floor";

fn pairs_section(w: &mut String, inputs: &Inputs) {
    let (rc, bl) = (
        paired_ratios(inputs, "roomcast"),
        paired_ratios(inputs, "baseline"),
    );
    if rc.is_empty() && bl.is_empty() {
        return;
    }
    let _ = writeln!(w, "{PAIRS_HEADING}\n");
    let _ = writeln!(
        w,
        "The target's figure, node CPU per delivery as a multiple of the floor, \
         taken in pairs: a floor run (`roomcast-bench floor`, as in [Floor](#floor)), then at \
         once the standard shape at {} deliveries/s on each system (Roomcast first in odd \
         pairs, the baseline first in even ones), on servers kept running through all the \
         pairs. Each step is divided by the floor \
         of its own pair, and the figure is the median of the pairs: the machine's cost of a \
         write drifts by several percent over minutes, and one run against a floor taken \
         minutes apart carries that drift whole.\n",
        rc.iter().chain(&bl).next().map_or(0, |p| p.offered)
    );
    let _ = writeln!(
        w,
        "| pair | floor µs/delivery | Roomcast node µs/delivery | Roomcast × floor | baseline node µs/delivery | baseline × floor |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    let rounds: std::collections::BTreeSet<u32> = rc.iter().chain(&bl).map(|p| p.round).collect();
    for round in rounds {
        let of = |pairs: &[Pair]| pairs.iter().find(|p| p.round == round).copied();
        let (r, b) = (of(&rc), of(&bl));
        let floor = r.or(b).map(|p| p.floor_us);
        let _ = writeln!(
            w,
            "| {round} | {} | {} | {} | {} | {} |",
            fmt(floor, 2, ""),
            fmt(r.map(|p| p.node_us), 2, ""),
            fmt(r.map(|p| p.ratio()), 2, "×"),
            fmt(b.map(|p| p.node_us), 2, ""),
            fmt(b.map(|p| p.ratio()), 2, "×"),
        );
    }
    let _ = writeln!(
        w,
        "\nMedian: Roomcast {}, baseline {}.\n",
        fmt(paired_median(&rc), 2, "×"),
        fmt(paired_median(&bl), 2, "×"),
    );
    // The single-measurement figure beside it, so the two can be compared.
    let at50 = sweep_step(50_000);
    let single = |system: &str| floor_multiple(inputs, &at50, system);
    if single("roomcast").or(single("baseline")).is_some() {
        let _ = writeln!(
            w,
            "For comparison, one of each: the rate sweep's step at 50,000/s over the \
             [Floor](#floor) run is Roomcast {}, baseline {}.\n",
            fmt(single("roomcast"), 2, "×"),
            fmt(single("baseline"), 2, "×"),
        );
    }
}

fn hot_room_section(w: &mut String, inputs: &Inputs) {
    let steps: Vec<(&str, Steps)> = HOT_SYSTEMS
        .iter()
        .map(|s| (*s, climb(inputs, "hot-", s)))
        .collect();
    let Some((_, r)) = steps.iter().flat_map(|(_, s)| s.values()).next() else {
        return;
    };
    let _ = writeln!(w, "{HOT_HEADING}\n");
    let _ = writeln!(
        w,
        "One room, {} subscribers across 2 nodes, {} publishers, {}-byte payloads, {} s per \
         step: every publish is one delivery per subscriber. Each system climbs the publish \
         rate until its first step with p99 over {SWEEP_P99_LIMIT_MS} ms or anything lost. \
         `roomcast-delay` is Roomcast with `--write-delay-ms 20` (writes coalesced over up to \
         20 ms). Node CPU is the gateways' (or Node processes') alone, without nats-server; \
         × floor divides it by the floor (section [Floor](#floor)). The load generator (subscribers reading every \
         frame) shares the same 2 cores.\n",
        num(r, "subscribers").unwrap_or(0.0),
        num(r, "publishers").unwrap_or(0.0),
        num(r, "payload_bytes").unwrap_or(0.0),
        num(r, "duration_s").unwrap_or(0.0),
    );
    let floor = floor_us(inputs);
    let _ = writeln!(
        w,
        "| offered deliveries/s | system | delivered/s | p99 ms | lost | server CPU µs/msg | node CPU µs/msg | × floor | load-gen CPU s | passed |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for (rate, system, passed, r) in climb_rows(&steps) {
        let node = node_cpu_us_per_delivery(r);
        let _ = writeln!(
            w,
            "| {rate} | {system} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(num(r, "delivered_per_s"), 0, ""),
            fmt(num(r, "latency.p99_ms"), 2, ""),
            fmt(num(r, "lost"), 0, ""),
            fmt(num(r, "server_cpu_us_per_delivery"), 2, ""),
            fmt(node, 2, ""),
            fmt(node.zip(floor).map(|(n, f)| n / f), 2, "×"),
            fmt(num(r, "loadgen_cpu_s"), 2, ""),
            if passed { "yes" } else { "no" }
        );
    }
    let _ = writeln!(w);
    let best = |system: &str| {
        steps
            .iter()
            .find(|(s, _)| *s == system)
            .and_then(|(_, s)| max_passing(s))
    };
    let rate = |v: Option<u64>| v.map_or("none".into(), |v| format!("{v}/s"));
    let _ = writeln!(
        w,
        "Highest offered rate passed: Roomcast {}, with `--write-delay-ms 20` {}, baseline {}.\n",
        rate(best("roomcast")),
        rate(best("roomcast-delay")),
        rate(best("baseline")),
    );
}

fn floor_section(w: &mut String, inputs: &Inputs) {
    let runs: Vec<&Run> = inputs
        .runs
        .iter()
        .filter(|r| r.system == "machine" && r.scenario.starts_with("floor"))
        .collect();
    let Some(first) = runs.first() else { return };
    let r = &first.result;
    let _ = writeln!(w, "{FLOOR_HEADING}\n");
    let _ = writeln!(
        w,
        "`roomcast-bench floor`: {} loopback connections, a pre-encoded {}-byte WebSocket frame \
         written to each in turn at {} deliveries/s for {} s by one thread, read by one tokio \
         thread. Nothing else is done, so the writer's CPU per delivery is what one delivery by \
         one `write(2)` costs this machine (the kernel's loopback delivery included, as for a \
         gateway); with several frames per write it is what coalescing can reach. Profiles \
         and what limits each figure: [performance.md](performance.md).\n",
        num(r, "sockets").unwrap_or(0.0),
        num(r, "frame_bytes").unwrap_or(0.0),
        num(r, "offered_deliveries_per_s").unwrap_or(0.0),
        num(r, "duration_s").map_or(0.0, f64::round),
    );
    let _ = writeln!(
        w,
        "| frames per write | delivered/s | writer CPU µs/delivery | reader CPU µs/delivery | writes refused (full) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for run in &runs {
        let r = &run.result;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            fmt(num(r, "frames_per_write"), 0, ""),
            fmt(num(r, "delivered_per_s"), 0, ""),
            fmt(num(r, "cpu_us_per_delivery"), 2, ""),
            fmt(num(r, "reader_cpu_us_per_delivery"), 2, ""),
            fmt(num(r, "would_block"), 0, ""),
        );
    }
    let _ = writeln!(w);
    let Some(floor) = floor_us(inputs) else {
        return;
    };
    let multiple = |scenario: &str, system: &str| floor_multiple(inputs, scenario, system);
    let hot = hot_step(200);
    let _ = writeln!(
        w,
        "Node CPU per delivery as a multiple of the floor ({floor:.2} µs): standard scenario \
         Roomcast {}, baseline {}; hot room at 200 publishes/s Roomcast {}, with \
         `--write-delay-ms 20` {}, baseline {}.\n",
        fmt(multiple("standard", "roomcast"), 2, "×"),
        fmt(multiple("standard", "baseline"), 2, "×"),
        fmt(multiple(&hot, "roomcast"), 2, "×"),
        fmt(multiple(&hot, "roomcast-delay"), 2, "×"),
        fmt(multiple(&hot, "baseline"), 2, "×"),
    );
}

/// The heading of the soak section (what [`splice_section`] replaces).
pub const SOAK_HEADING: &str = "## Soak";

/// Just the soak section, for `report --only soak`.
pub fn render_soak(inputs: &Inputs) -> String {
    let mut md = String::new();
    soak_section(&mut md, inputs);
    md
}

/// `doc` with the section that starts at a line beginning with `heading`
/// (up to the next `## ` heading) replaced by `section`; without one, the
/// section goes before `## Commands`, or at the end.
pub fn splice_section(doc: &str, heading: &str, section: &str) -> String {
    let lines: Vec<&str> = doc.split_inclusive('\n').collect();
    let start = lines.iter().position(|l| l.starts_with(heading));
    let (from, to) = match start {
        Some(from) => {
            let to = lines[from + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| from + 1 + i);
            (from, to)
        }
        None => {
            let at = lines
                .iter()
                .position(|l| l.starts_with("## Commands"))
                .unwrap_or(lines.len());
            (at, at)
        }
    };
    let mut out: String = lines[..from].concat();
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(section.trim_end());
    out.push_str("\n\n");
    out.push_str(&lines[to..].concat());
    out.trim_end().to_owned() + "\n"
}

/// The heading of the HTTP fallbacks section (`report --only fallback` replaces it).
pub const FALLBACK_HEADING: &str = "## HTTP fallbacks";

/// Just the HTTP fallbacks section, for `report --only fallback`.
pub fn render_fallback(inputs: &Inputs) -> String {
    let mut md = String::new();
    fallback_section(&mut md, inputs);
    md
}

/// The standard fanout with a quarter of the subscribers on SSE and a
/// quarter on long polling (`fallback.*`), latency per transport; server
/// memory per idle SSE session (`idle-sse.*`).
fn fallback_section(w: &mut String, inputs: &Inputs) {
    let of = |scenario: &str| -> Vec<&Run> {
        inputs
            .runs
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect()
    };
    let (fanouts, idles) = (of("fallback"), of("idle-sse"));
    if fanouts.is_empty() && idles.is_empty() {
        return;
    }
    let _ = writeln!(w, "{FALLBACK_HEADING} (Roomcast only)\n");
    let _ = writeln!(
        w,
        "The standard fanout's shape with a quarter of the subscribers on Server-Sent Events \
         (`GET /sse`) and a quarter on long polling (`POST /poll`, then `GET /poll/{{session}}` in \
         a loop), spread over both gateways and every room; publishers and the other half of the \
         subscribers on WebSocket. Latency is send time to receipt, per transport. Then \
         N idle SSE sessions, each joined to one room: server memory per session, like the idle \
         WebSocket figure above.\n"
    );
    for run in fanouts {
        let r = &run.result;
        let _ = writeln!(
            w,
            "Run {}: {} subscribers, {} publishers × {} msg/s, {} rooms; delivered {}/s; lost {}, \
             duplicated {}, out of order {}; server CPU {} µs per delivery.\n",
            run.round,
            fmt(num(r, "subscribers"), 0, ""),
            fmt(num(r, "publishers"), 0, ""),
            fmt(num(r, "rate_per_publisher"), 0, ""),
            fmt(num(r, "rooms"), 0, ""),
            fmt(num(r, "delivered_per_s"), 0, ""),
            fmt(num(r, "lost"), 0, ""),
            fmt(num(r, "duplicated"), 0, ""),
            fmt(num(r, "out_of_order"), 0, ""),
            fmt(num(r, "server_cpu_us_per_delivery"), 1, ""),
        );
        let _ = writeln!(
            w,
            "| transport | subscribers | deliveries timed | p50 ms | p99 ms | p99.9 ms | max ms |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|");
        for transport in ["websocket", "sse", "poll"] {
            let latency = |k: &str| num(r, &format!("latency_by_transport.{transport}.{k}"));
            let _ = writeln!(
                w,
                "| {transport} | {} | {} | {} | {} | {} | {} |",
                fmt(num(r, &format!("transports.{transport}")), 0, ""),
                fmt(latency("count"), 0, ""),
                fmt(latency("p50_ms"), 2, ""),
                fmt(latency("p99_ms"), 2, ""),
                fmt(latency("p999_ms"), 2, ""),
                fmt(latency("max_ms"), 2, ""),
            );
        }
        let _ = writeln!(w);
    }
    if !idles.is_empty() {
        let _ = writeln!(
            w,
            "| run | SSE sessions | connected | RSS before KiB | RSS after KiB | bytes/session | closed while idle |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|");
        for run in idles {
            let _ = writeln!(w, "| {} | {} |", run.round, idle_cells(&run.result));
        }
        let _ = writeln!(w);
    }
}

/// The heading of the wire-formats section (what [`splice_section`] replaces).
pub const FORMATS_HEADING: &str = "## Wire formats";

/// The variants of the `formats` scenario, in table order, with what they are.
const FORMAT_VARIANTS: [(&str, &str); 4] = [
    ("json-text", "1 KiB JSON text, uncompressed"),
    ("json-text-deflate", "1 KiB JSON text, permessage-deflate"),
    ("json-binary", "1 KiB binary as a base64 JSON string"),
    ("msgpack-binary", "1 KiB binary, `roomcast.v1.msgpack`"),
];

fn formats_section(w: &mut String, inputs: &Inputs) {
    let runs: Vec<(&str, &Value)> = FORMAT_VARIANTS
        .iter()
        .filter_map(|(variant, what)| {
            let scenario = format!("formats-{variant}");
            inputs
                .runs
                .iter()
                .find(|r| r.scenario == scenario && r.system == "roomcast")
                .map(|r| (*what, &r.result))
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(w, "{FORMATS_HEADING} (Roomcast only)\n");
    let _ = writeln!(
        w,
        "One room, subscribers spread over both gateways (started with \
         `--websocket-compression`), one publisher; `roomcast-bench formats` reads raw \
         sockets and counts every byte. Server CPU is both gateways and nats-server.\n"
    );
    let _ = writeln!(
        w,
        "| payload | subscribers | delivered/s | delivered / expected | compressed | wire bytes per delivery | server CPU per delivery |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for (what, r) in &runs {
        let expected = num(r, "published").unwrap_or(0.0) * num(r, "subscribers").unwrap_or(0.0);
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} / {} | {} | {} | {} |",
            fmt(num(r, "subscribers"), 0, ""),
            fmt(num(r, "delivered_per_s"), 0, ""),
            fmt(num(r, "delivered"), 0, ""),
            fmt(Some(expected), 0, ""),
            fmt(num(r, "compressed"), 0, ""),
            fmt(num(r, "wire_bytes_per_delivery"), 0, " B"),
            fmt(num(r, "server_cpu_us_per_delivery"), 2, " µs"),
        );
    }
    let _ = writeln!(w);
}

fn soak_section(w: &mut String, inputs: &Inputs) {
    let Some(run) = inputs.runs.iter().find(|r| r.scenario == "soak") else {
        return;
    };
    let r = &run.result;
    let n = |p: &str| fmt(num(r, p), 0, "");
    let _ = writeln!(w, "{SOAK_HEADING} (Roomcast only)\n");
    let _ = writeln!(
        w,
        "{} s of churn against 2 gateways on one nats-server: about {} clients open at once \
         connect to a random gateway, join 1–3 of {} rooms, publish, leave one room half way and \
         disconnect after their lifetime (ways to end, in percent: {}), then start over; slow \
         readers join a hot room ({} msg/s of {}-byte payloads) and stop reading for {} s. \
         {} steady subscribers stay connected and keep reading, checked for loss against {} \
         publishers at {} msg/s each plus the hot publisher; every publish carries an `id`. \
         nats-server is stopped (SIGTERM) half way and started again on the same port. Every \
         {} s the load generator samples VmRSS (/proc/PID/status) and open file descriptors \
         (/proc/PID/fd) of each gateway, of nats-server and of itself, and `roomcast_connections`, \
         `roomcast_rooms` and `roomcast_bus_up` from each gateway's `/metrics`.\n",
        n("duration_s"),
        n("churners"),
        n("rooms"),
        r.get("mix").map(Value::to_string).unwrap_or_default(),
        n("hot_rate"),
        n("hot_payload"),
        n("stall_s"),
        n("steady"),
        n("publishers"),
        fmt(num(r, "rate"), 1, ""),
        fmt(num(r, "sample_every_s"), 0, ""),
    );
    let load = |k: &str| {
        r.get(k).and_then(Value::as_array).map_or("–".into(), |v| {
            v.iter().map(plain_number).collect::<Vec<_>>().join(" ")
        })
    };
    let _ = writeln!(
        w,
        "Load average before: {}; after: {} (2 cores; anything above 2 means other work \
         competed for them). Gateway CPU {} s, load generator CPU {} s over the run.\n",
        load("loadavg_before"),
        load("loadavg_after"),
        fmt(num(r, "gateway_cpu_s"), 1, ""),
        fmt(num(r, "loadgen_cpu_s"), 1, ""),
    );

    // Verdicts.
    let ok = |k: &str| {
        r.get("verdicts")
            .and_then(|v| v.get(k))
            .and_then(Value::as_bool)
    };
    let _ = writeln!(w, "| criterion | figures | verdict |");
    let _ = writeln!(w, "|---|---|---|");
    let flat_rows: Vec<String> = r
        .get("flat")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|v| {
                    let process = v.get("process").map(plain_number).unwrap_or_default();
                    let metric = v.get("metric").map(plain_number).unwrap_or_default();
                    match v.get("flatness").filter(|f| !f.is_null()) {
                        Some(f) => format!(
                            "{process} {metric} {} → {} (limit {})",
                            fmt(num(f, "early_mean"), 0, ""),
                            fmt(num(f, "late_mean"), 0, ""),
                            fmt(num(f, "limit"), 0, "")
                        ),
                        None => format!("{process} {metric}: too few samples"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let warmup = num(r, "warmup_s").unwrap_or(0.0);
    let _ = writeln!(
        w,
        "| flat after warm-up: {} | {} | {} |",
        crate::scenario::soak::flat_criterion(warmup),
        flat_rows.join("; "),
        verdict(ok("flat"))
    );
    let show = |k: &str| {
        r.get("settle")
            .and_then(|s| s.get(k))
            .and_then(Value::as_array)
            .map_or("–".into(), |v| {
                v.iter().map(plain_number).collect::<Vec<_>>().join(", ")
            })
    };
    let _ = writeln!(
        w,
        "| back to 0: {} | connections [{}], rooms [{}]{} | {} |",
        crate::scenario::soak::ZERO_CRITERION,
        show("connections"),
        show("rooms"),
        num(r, "settle.zero_after_s").map_or(String::new(), |s| format!(
            ", {s} s after the last client left"
        )),
        verdict(ok("back_to_zero"))
    );
    let _ = writeln!(
        w,
        "| no loss: {} | owed {}, received {}, lost outside the restart window {}, inside it {}, duplicated {}, reordered {}; steady subscribers dropped {} of {} | {} |\n",
        crate::scenario::soak::LOSS_CRITERION,
        n("delivery.owed"),
        n("delivery.received"),
        n("delivery.lost_outside_restart"),
        n("delivery.lost_around_restart"),
        n("delivery.problems.duplicated"),
        n("delivery.problems.out_of_order"),
        n("delivery.steady_dropped"),
        n("delivery.steady"),
        verdict(ok("no_loss"))
    );
    let _ = writeln!(
        w,
        "**Accepted** means answered `ok`: a publish refused with `error` (`unavailable` while the \
         gateway's bus is down) is not owed to anyone, and one still unanswered when its \
         publisher closed is counted apart. Across the restart the gateways get their bus back \
         one after the other: a publish one gateway accepts while a peer's bus is still down \
         cannot reach that peer's subscribers (NATS has no interest from it yet; delivery is at \
         most once), so the verdict counts publishes accepted outside the restart window and \
         the losses inside it are shown beside it. Lost messages (first ten): {}. Messages a \
         subscriber received although their publish was refused or unanswered: {}. Publish → \
         receipt latency of the steady subscribers: p50 {} ms, p99 {} ms, max {} ms.\n",
        r.get("delivery")
            .and_then(|d| d.get("lost_examples"))
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .map_or("none".into(), |v| {
                v.iter().map(plain_number).collect::<Vec<_>>().join("; ")
            }),
        n("delivery.received_not_accepted"),
        fmt(num(r, "delivery.latency.p50_ms"), 2, ""),
        fmt(num(r, "delivery.latency.p99_ms"), 2, ""),
        fmt(num(r, "delivery.latency.max_ms"), 2, ""),
    );
    if r.get("restart").is_some_and(|v| !v.is_null()) {
        let refused = r
            .get("publishing")
            .and_then(|p| p.get("refused"))
            .map(Value::to_string)
            .unwrap_or_default();
        let span = r
            .get("publishing")
            .and_then(|p| p.get("refused_span_s"))
            .and_then(Value::as_array)
            .map_or("–".into(), |v| {
                v.iter()
                    .map(plain_number)
                    .collect::<Vec<_>>()
                    .join(" s to ")
            });
        let _ = writeln!(
            w,
            "NATS restart: SIGTERM at {} s, old server gone at {} s, new one listening at {} s, \
             every gateway's bus up again at {} s. Publishes: {} sent, {} accepted, refused {} \
             (from {} s), {} unanswered.\n",
            fmt(num(r, "restart.stop_s"), 1, ""),
            fmt(num(r, "restart.stopped_s"), 1, ""),
            fmt(num(r, "restart.started_s"), 1, ""),
            fmt(num(r, "restart.bus_back_s"), 1, ""),
            n("publishing.sent"),
            n("publishing.accepted"),
            refused,
            span,
            n("publishing.unanswered"),
        );
    }
    // A counter of every gateway at the last sample.
    let last_gateways = |k: &str| {
        r.get("samples")
            .and_then(Value::as_array)
            .and_then(|s| s.last())
            .and_then(|s| s.get("gateways"))
            .and_then(Value::as_array)
            .map_or("–".into(), |g| {
                g.iter()
                    .map(|x| fmt(num(x, k), 0, ""))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
    };
    let churn = |k: &str| {
        r.get("churn")
            .and_then(|c| c.get(k))
            .map(|v| match v {
                Value::Object(_) | Value::Array(_) => v.to_string(),
                other => plain_number(other),
            })
            .unwrap_or_default()
    };
    let _ = writeln!(
        w,
        "Churn: {} connections opened (at most {} open at once), {} failed before their welcome \
         {}; joins ok {}, refused {}; publishes ok {}, refused {}; leaves ok {}; ended by fate {}; \
         ended by the gateway before their time {}; slow readers, once reading again: {}; \
         4008 closes counted by the gateways (`roomcast_slow_consumer_closes_total`): {}.\n",
        churn("opened"),
        churn("peak_open"),
        churn("connect_failures"),
        churn("connect_failure_examples"),
        churn("joins_ok"),
        churn("join_errors"),
        churn("publishes_ok"),
        churn("publish_errors"),
        churn("leaves_ok"),
        churn("endings"),
        churn("ended_by_gateway"),
        churn("slow_outcomes"),
        last_gateways("slow_closes"),
    );

    // Samples.
    let samples: Vec<&Value> = r
        .get("samples")
        .and_then(Value::as_array)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    let names: Vec<String> = samples
        .first()
        .and_then(|s| s.get("processes"))
        .and_then(Value::as_array)
        .map(|p| {
            p.iter()
                .filter_map(|x| x.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let gateways = samples
        .first()
        .and_then(|s| s.get("gateways"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut head = String::from("| t s | phase | churn open |");
    let mut rule = String::from("|---|---|---|");
    for name in &names {
        let _ = write!(head, " {name} RSS MiB | {name} fds |");
        rule.push_str("---|---|");
    }
    for g in 0..gateways {
        let name = crate::scenario::soak::gateway_name(g);
        let _ = write!(head, " {name} conns | {name} rooms | {name} bus |");
        rule.push_str("---|---|---|");
    }
    let _ = writeln!(w, "{head}\n{rule}");
    for s in samples {
        let mut row = format!(
            "| {} | {} | {} |",
            fmt(num(s, "t_s"), 0, ""),
            s.get("phase").and_then(Value::as_str).unwrap_or(""),
            fmt(num(s, "churn_open"), 0, "")
        );
        let procs = s.get("processes").and_then(Value::as_array);
        for name in &names {
            let p = procs.and_then(|ps| {
                ps.iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            });
            let rss = p.and_then(|p| num(p, "rss_kib")).map(|k| k / 1024.0);
            let fds = p.and_then(|p| num(p, "fds"));
            let _ = write!(row, " {} | {} |", fmt(rss, 1, ""), fmt(fds, 0, ""));
        }
        let gws = s.get("gateways").and_then(Value::as_array);
        for g in 0..gateways {
            let gw = gws.and_then(|v| v.get(g));
            let v = |k: &str| fmt(gw.and_then(|x| num(x, k)), 0, "");
            let _ = write!(
                row,
                " {} | {} | {} |",
                v("connections"),
                v("rooms"),
                v("bus_up")
            );
        }
        let _ = writeln!(w, "{row}");
    }
    let _ = writeln!(w);
    let command = r.get("command").and_then(Value::as_str).unwrap_or_default();
    let servers = inputs.soak_commands.trim();
    let _ = writeln!(
        w,
        "The soak ran:\n\n```sh\n{}{command}\n```\n",
        if servers.is_empty() {
            String::new()
        } else {
            format!("{servers}\n")
        }
    );
}

fn plain_number(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fanout(offered: f64, p99: f64, cpu: f64, lost: u64) -> Value {
        json!({"scenario":"fanout","subscribers":2000,"rooms":20,"publishers":20,
            "rate_per_publisher":50.0,"payload_bytes":200,"duration_s":20.0,
            "offered_deliveries_per_s":offered,"delivered_per_s":offered,
            "latency":{"count":1000,"p50_ms":1.0,"p99_ms":p99,"p999_ms":p99,"max_ms":p99,"mean_ms":1.0},
            "lost":lost,"duplicated":0,"out_of_order":0,"subscriber_closes":{},
            "server_cpu_s":1.0,"server_cpu_us_per_delivery":cpu,"loadgen_cpu_s":1.0})
    }

    fn run(scenario: &str, system: &str, round: u32, result: Value) -> Run {
        Run {
            scenario: scenario.into(),
            system: system.into(),
            round,
            result,
        }
    }

    #[test]
    fn standard_section_shows_latency_by_path_when_recorded() {
        let mut with = fanout(100_000.0, 5.0, 7.0, 0);
        with["latency_by_path"] = json!({
            "same_gateway": {"count": 10, "p50_ms": 0.61, "p99_ms": 1.52},
            "across_gateways": {"count": 10, "p50_ms": 0.83, "p99_ms": 2.04}
        });
        let without = fanout(100_000.0, 5.0, 7.0, 0);
        let inputs = Inputs {
            runs: vec![
                run("standard", "roomcast", 1, with),
                run("standard", "baseline", 1, without.clone()),
            ],
            ..Inputs::default()
        };
        let md = render(&inputs);
        assert!(
            md.contains("| roomcast | 1 | 0.61 | 1.52 | 0.83 | 2.04 |"),
            "{md}"
        );
        assert!(!md.contains("| baseline | 1 | – |"), "{md}");
        let old = Inputs {
            runs: vec![run("standard", "roomcast", 1, without)],
            ..Inputs::default()
        };
        assert!(!render(&old).contains("Latency by path"));
    }

    #[test]
    fn fallback_section_shows_latency_per_transport_and_sse_memory() {
        let fanout = serde_json::json!({
            "subscribers": 8, "publishers": 2, "rate_per_publisher": 10.0, "rooms": 2,
            "delivered_per_s": 160.0, "lost": 0, "duplicated": 0, "out_of_order": 0,
            "server_cpu_us_per_delivery": 12.5,
            "transports": {"websocket": 4, "sse": 2, "poll": 2},
            "latency_by_transport": {
                "websocket": {"count": 40, "p50_ms": 0.5, "p99_ms": 1.0, "p999_ms": 1.5, "max_ms": 2.0},
                "sse": {"count": 20, "p50_ms": 0.7, "p99_ms": 1.2, "p999_ms": 1.6, "max_ms": 2.5},
                "poll": {"count": 20, "p50_ms": 1.7, "p99_ms": 3.2, "p999_ms": 3.6, "max_ms": 4.5}
            }
        });
        let idle = serde_json::json!({
            "connections": 100, "connected": 100, "bytes_per_connection": 9000.0,
            "closed_while_idle": 0,
            "servers": [{"rss_before_kib": 1000, "rss_after_kib": 1900}]
        });
        let run = |scenario: &str, result: Value| Run {
            scenario: scenario.into(),
            system: "roomcast".into(),
            round: 1,
            result,
        };
        let inputs = Inputs {
            runs: vec![run("fallback", fanout), run("idle-sse", idle)],
            ..Inputs::default()
        };
        let md = render_fallback(&inputs);
        assert!(md.starts_with(FALLBACK_HEADING), "{md}");
        assert!(
            md.contains("| poll | 2 | 20 | 1.70 | 3.20 | 3.60 | 4.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 | 100 | 100 | 1000 | 1900 | 9000 | 0 |"),
            "{md}"
        );
        assert!(render(&inputs).contains(FALLBACK_HEADING));
        assert_eq!(render_fallback(&Inputs::default()), "");
    }

    #[test]
    fn soak_section_shows_verdicts_samples_and_command() {
        let soak = json!({"scenario":"soak","command":"roomcast-bench soak --duration 30",
            "duration_s":30.0,"warmup_s":6.0,"sample_every_s":2.0,"churners":200,
            "mix":{"clean":60,"reset":15,"drop":20,"slow":5},"steady":50,"rooms":20,
            "publishers":4,"rate":10.0,"hot_rate":50.0,"hot_payload":4096,"stall_s":8.0,
            "loadavg_before":[1.5,1.0,0.5],"loadavg_after":[2.0,1.2,0.6],
            "restart":{"stop_s":15.0,"stopped_s":15.1,"started_s":17.2,"bus_back_s":18.0,"new_pid":9},
            "samples":[{"t_s":2.0,"phase":"load","churn_open":150,
                "processes":[{"name":"gw-a","pid":1,"rss_kib":20480,"fds":180}],
                "gateways":[{"connections":170,"rooms":21,"bus_up":1,"slow_closes":12}]}],
            "flat":[{"process":"gw-a","metric":"rss_kib","samples":9,
                "flatness":{"early_mean":20000.0,"late_mean":20100.0,"limit":26096.0,"max":20500,"pass":true}},
                {"process":"gw-a","metric":"fds","samples":2,"flatness":null}],
            "settle":{"zero_after_s":0.4,"connections":[0,0],"rooms":[0,0]},
            "delivery":{"steady":50,"steady_dropped":0,"owed":1000,"received":1000,"lost":0,
                "lost_around_restart":0,"lost_outside_restart":0,"lost_examples":[],"problems":{"lost":0,"duplicated":0,"out_of_order":0},
                "received_not_accepted":3,"latency":{"p50_ms":1.0,"p99_ms":5.0,"max_ms":9.0}},
            "publishing":{"sent":1200,"accepted":1150,"refused":{"unavailable":50},
                "refused_span_s":[15.0,18.0],"unanswered":0},
            "churn":{"opened":900,"peak_open":190,"connect_failures":0,"slow_outcomes":{"close 4008":12}},
            "gateway_cpu_s":12.5,"loadgen_cpu_s":4.0,
            "verdicts":{"flat":true,"back_to_zero":true,"no_loss":false,"passed":false}});
        let inputs = Inputs {
            runs: vec![run("soak", "roomcast", 1, soak)],
            soak_commands: "nats-server -a 127.0.0.1 -p 23022 &".into(),
            ..Inputs::default()
        };
        let section = render_soak(&inputs);
        assert!(section.starts_with("## Soak"), "{section}");
        assert!(
            section.contains("gw-a rss_kib 20000 → 20100 (limit 26096)"),
            "{section}"
        );
        assert!(section.contains("gw-a fds: too few samples"), "{section}");
        assert!(section.contains("| yes |"), "{section}");
        assert!(section.contains("| **no** |"), "{section}");
        assert!(
            section.contains("| 2 | load | 150 | 20.0 | 180 | 170 | 21 | 1 |"),
            "{section}"
        );
        assert!(
            section.contains("refused {\"unavailable\":50} (from 15.0 s to 18.0 s)"),
            "{section}"
        );
        assert!(section.contains("\"close 4008\":12"), "{section}");
        assert!(
            section.contains("(`roomcast_slow_consumer_closes_total`): 12."),
            "{section}"
        );
        assert!(
            section.contains(
                "```sh\nnats-server -a 127.0.0.1 -p 23022 &\nroomcast-bench soak --duration 30\n```"
            ),
            "{section}"
        );
        // The full report has it before the commands.
        let md = render(&inputs);
        assert!(md.find("## Soak").unwrap() < md.find("## Commands").unwrap());
    }

    #[test]
    fn presence_section_shows_both_phases_and_the_views() {
        let phase = |msgs: f64, per: f64, events: u64| {
            json!({"seconds": 20.0, "visits": 2000, "failed_visits": 0, "skipped_visits": 0,
                   "joins": 2000.0, "presence_bus_messages": msgs,
                   "presence_bus_messages_per_join": per, "events": events,
                   "events_per_s": events as f64 / 20.0, "server_cpu_s": 3.5})
        };
        let inputs = Inputs {
            runs: vec![run(
                "presence",
                "roomcast",
                1,
                json!({"scenario": "presence", "members": 10000, "rooms": 100, "watchers": 200,
                       "rate": 100.0, "hold_s": 2.0, "unwatched": phase(0.0, 0.0, 0),
                       "watched": phase(4000.0, 2.0, 9000), "server_cpu_us_per_event": 388.9,
                       "views_consistent": 200, "views_wrong": 0, "impossible_events": 0}),
            )],
            ..Inputs::default()
        };
        let section = render_presence(&inputs);
        assert!(section.starts_with(PRESENCE_HEADING), "{section}");
        assert!(
            section.contains("| nobody watching | 2000 | 2000.0 | 0.0 | 0.0 | 0 |"),
            "{section}"
        );
        assert!(section.contains("| watched | 2000 | 2000.0 | 4000.0 | 2.0 | 9000 | 450.0 |"));
        assert!(section.contains("200 consistent, 0 wrong"), "{section}");
        assert!(render(&inputs).contains(PRESENCE_HEADING));
        assert!(render_presence(&Inputs::default()).is_empty());
    }

    #[test]
    fn splicing_replaces_or_inserts_one_section() {
        let doc = "# B\n\n## Drain\n\nd\n\n## Soak (old)\n\nold\n\n## Commands\n\nc\n";
        let out = splice_section(doc, SOAK_HEADING, "## Soak (new)\n\nnew\n");
        assert_eq!(
            out,
            "# B\n\n## Drain\n\nd\n\n## Soak (new)\n\nnew\n\n## Commands\n\nc\n"
        );
        let without = "# B\n\n## Drain\n\nd\n\n## Commands\n\nc\n";
        assert_eq!(
            splice_section(without, SOAK_HEADING, "## Soak\n\nnew"),
            "# B\n\n## Drain\n\nd\n\n## Soak\n\nnew\n\n## Commands\n\nc\n"
        );
        let last = "# B\n\n## Soak\n\nold\n";
        assert_eq!(
            splice_section(last, SOAK_HEADING, "## Soak\n\nnew\n"),
            "# B\n\n## Soak\n\nnew\n"
        );
        assert_eq!(
            splice_section("", SOAK_HEADING, "## Soak\n\nx\n"),
            "## Soak\n\nx\n"
        );
    }

    #[test]
    fn names_parse_into_scenario_system_round() {
        assert_eq!(
            parse_name("sweep-100000.baseline.1.json"),
            Some(("sweep-100000".into(), "baseline".into(), 1))
        );
        assert_eq!(parse_name("commands.txt"), None);
        assert_eq!(parse_name("x.json"), None);
    }

    #[test]
    fn a_step_whose_publishers_were_held_back_fails() {
        let with_lag = |lag: f64| {
            let mut r = fanout(50_000.0, 2.0, 1.0, 0);
            r["publisher_lag"] = json!({"count":100,"p50_ms":1.0,"p99_ms":lag});
            r
        };
        assert!(sweep_passed(&with_lag(1.5)));
        assert!(
            !sweep_passed(&with_lag(80.0)),
            "a held-back publisher hides latency"
        );
        assert!(
            sweep_passed(&fanout(50_000.0, 2.0, 1.0, 0)),
            "results before the lag figure"
        );
    }

    #[test]
    fn sweep_maximum_stops_at_the_first_failure() {
        let inputs = Inputs {
            runs: vec![
                run("sweep-1", "roomcast", 1, fanout(25_000.0, 2.0, 1.0, 0)),
                run("sweep-2", "roomcast", 1, fanout(50_000.0, 60.0, 1.0, 0)),
                run("sweep-3", "roomcast", 1, fanout(100_000.0, 2.0, 1.0, 0)),
                run("sweep-1", "baseline", 1, fanout(25_000.0, 20.0, 1.0, 3)),
            ],
            ..Inputs::default()
        };
        assert_eq!(max_passing(&sweep(&inputs, "roomcast")), Some(25_000));
        assert_eq!(max_passing(&sweep(&inputs, "baseline")), None);
    }

    /// A hot-room step: 10^6 deliveries, `node_cpu` seconds over two nodes
    /// plus one second of nats-server.
    fn hot(offered: f64, node_cpu: f64, p99: f64) -> Value {
        json!({"subscribers":1000,"publishers":4,"payload_bytes":200,"duration_s":8.0,
            "offered_deliveries_per_s":offered,"delivered_per_s":200000.0,"delivered":1000000,
            "latency":{"p99_ms":p99,"count":100},"lost":0,"duplicated":0,"out_of_order":0,
            "subscriber_closes":{},"server_cpu_us_per_delivery":3.0,"loadgen_cpu_s":5.0,
            "server_cpu":[{"pid":1,"cpu_seconds":node_cpu / 2.0},
                {"pid":2,"cpu_seconds":node_cpu / 2.0},{"pid":3,"cpu_seconds":1.0}]})
    }

    #[test]
    fn hot_room_and_floor_sections_give_multiples_of_the_floor() {
        let floor = json!({"scenario":"floor","sockets":2000,"frame_bytes":200,"frames_per_write":1,
            "offered_deliveries_per_s":50000.0,"duration_s":10.0,"delivered_per_s":50000.0,
            "cpu_us_per_delivery":4.0,"reader_cpu_us_per_delivery":3.0,"would_block":0});
        let inputs = Inputs {
            runs: vec![
                run("hot-0200", "roomcast", 1, hot(2e5, 2.0, 20.0)),
                run("hot-0200", "baseline", 1, hot(2e5, 8.0, 900.0)),
                run("hot-0200", "roomcast-delay", 1, hot(2e5, 1.0, 30.0)),
                run("hot-0300", "roomcast", 1, hot(3e5, 2.0, 80.0)),
                run("floor", "machine", 1, floor),
            ],
            ..Inputs::default()
        };
        assert_eq!(node_cpu_us_per_delivery(&hot(1.0, 2.0, 1.0)), Some(2.0));
        let md = render(&inputs);
        assert!(
            md.contains(
                "| 200000 | roomcast | 200000 | 20.00 | 0 | 3.00 | 2.00 | 0.50× | 5.00 | yes |"
            ),
            "{md}"
        );
        assert!(md.contains("| 200000 | roomcast-delay |"), "{md}");
        assert!(
            md.contains("Roomcast 200000/s, with `--write-delay-ms 20` 200000/s, baseline none."),
            "{md}"
        );
        assert!(md.contains("| 1 | 50000 | 4.00 | 3.00 | 0 |"), "{md}");
        assert!(
            md.contains("hot room at 200 publishes/s Roomcast 0.50×, with `--write-delay-ms 20` 0.25×, baseline 2.00×"),
            "{md}"
        );
        let sections = render_only(&inputs, "hot-room").unwrap();
        assert_eq!(sections[1].0, HOT_HEADING);
        let (heading, section) = sections[0].clone();
        assert_eq!(heading, FLOOR_HEADING);
        assert!(section.starts_with("## Floor\n"));
        let doc = splice_section("# B\n\n## Commands\n\nx\n", heading, &section);
        assert!(doc.find("## Floor") < doc.find("## Commands"), "{doc}");
    }

    #[test]
    fn wire_targets_compare_with_the_floor_and_the_baseline_hot_room_climb() {
        let floor = json!({"scenario":"floor","frames_per_write":1,"cpu_us_per_delivery":4.0});
        let inputs = Inputs {
            runs: vec![
                run("floor", "machine", 1, floor),
                // 10^6 deliveries: node CPU 5 s is 5 µs, 1.25× the floor.
                run("sweep-0050000", "roomcast", 1, hot(5e4, 5.0, 1.5)),
                run("sweep-0100000", "roomcast", 1, hot(1e5, 4.0, 25.0)),
                run("hot-0025", "baseline", 1, hot(2.5e4, 1.0, 10.0)),
                run("hot-0050", "baseline", 1, hot(5e4, 1.0, 60.0)),
                run("hot-0200", "roomcast-delay", 1, hot(2e5, 1.2, 30.0)),
                run("hot-0300", "roomcast-delay", 1, hot(3e5, 1.2, 40.0)),
                run("hot-0400", "roomcast-delay", 1, hot(4e5, 1.2, 70.0)),
            ],
            ..Inputs::default()
        };
        let mut md = String::new();
        wire_targets(&mut md, &inputs);
        for row in [
            "at 50,000/s (standard shape) as a multiple of the floor | 1.25× | – | | ≤ 1.2× | **no** |",
            "| p99 at 50000 deliveries/s (standard shape) | 1.50 ms | – | | ≤ 2 ms | yes |",
            "| p99 at 100000 deliveries/s (standard shape) | 25.00 ms | – | | ≤ 20 ms | **no** |",
            "p99 | 0.30×, 30.0 ms | –, – | | ≤ 0.33×, ≤ 50 ms | yes |",
            "| 300000/s | 25000/s | 12.0× | ≥ 5× | yes |",
        ] {
            assert!(md.contains(row), "{row} in\n{md}");
        }
    }

    #[test]
    fn the_cpu_target_is_the_median_of_pairs_each_over_its_own_floor() {
        let floor =
            |us: f64| json!({"scenario":"floor","frames_per_write":1,"cpu_us_per_delivery":us});
        let inputs = Inputs {
            runs: vec![
                // Alone, the sweep's step over the floor run reads 1.50×.
                run("floor", "machine", 1, floor(4.0)),
                run("sweep-0050000", "roomcast", 1, hot(5e4, 6.0, 1.5)),
                // Pairs: 5.5/5 = 1.10, 7/5 = 1.40, 4/4 = 1.00 → median 1.10.
                run(PAIR_FLOOR, "machine", 1, floor(5.0)),
                run(PAIR_STEP, "roomcast", 1, hot(5e4, 5.5, 1.5)),
                run(PAIR_STEP, "baseline", 1, hot(5e4, 12.0, 4.0)),
                run(PAIR_FLOOR, "machine", 2, floor(5.0)),
                run(PAIR_STEP, "roomcast", 2, hot(5e4, 7.0, 1.5)),
                run(PAIR_STEP, "baseline", 2, hot(5e4, 11.0, 4.0)),
                run(PAIR_FLOOR, "machine", 3, floor(4.0)),
                run(PAIR_STEP, "roomcast", 3, hot(5e4, 4.0, 1.5)),
                // A step without its floor run is no pair.
                run(PAIR_STEP, "roomcast", 4, hot(5e4, 40.0, 1.5)),
            ],
            ..Inputs::default()
        };
        let rc = paired_ratios(&inputs, "roomcast");
        assert_eq!(rc.iter().map(|p| p.round).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(paired_median(&rc), Some(1.1));
        // An even number of pairs: the mean of the middle two.
        let bl = paired_ratios(&inputs, "baseline");
        assert_eq!(paired_median(&bl), Some((2.2 + 2.4) / 2.0));
        assert_eq!(paired_median(&[]), None);

        let mut md = String::new();
        wire_targets(&mut md, &inputs);
        assert!(
            md.contains("multiple of the floor (median of 3 floor/step pairs, [CPU against the floor](#cpu-against-the-floor)) | 1.10× | 2.30× | | ≤ 1.2× | yes |"),
            "{md}"
        );
        let md = render(&inputs);
        for row in [
            "| 1 | 5.00 | 5.50 | 1.10× | 12.00 | 2.40× |",
            "| 3 | 4.00 | 4.00 | 1.00× | – | – |",
            "Median: Roomcast 1.10×, baseline 2.30×.",
            "the rate sweep's step at 50,000/s over the [Floor](#floor) run is Roomcast 1.50×, baseline –.",
        ] {
            assert!(md.contains(row), "{row} in\n{md}");
        }
        assert!(md.find(FLOOR_HEADING) < md.find(PAIRS_HEADING));
        assert!(
            md.contains("standard shape at 50000 deliveries/s on each system"),
            "{md}"
        );
        // Without pairs the section is absent and the row is the sweep's.
        let without = Inputs {
            runs: inputs.runs[..2].to_vec(),
            ..Inputs::default()
        };
        let mut md = String::new();
        wire_targets(&mut md, &without);
        let sweeps = "as a multiple of the floor | 1.50× | – | | ≤ 1.2× | **no** |";
        assert!(md.contains(sweeps), "{md}");
        assert!(!render(&without).contains(PAIRS_HEADING));
        // Pairs at another rate (a quick run's) are shown, not held to the target.
        let mut quick = without.clone();
        quick.runs.push(run(PAIR_FLOOR, "machine", 1, floor(5.0)));
        quick
            .runs
            .push(run(PAIR_STEP, "roomcast", 1, hot(4e3, 5.0, 1.0)));
        let md = render(&quick);
        assert!(md.contains(sweeps), "{md}");
        assert!(md.contains("standard shape at 4000 deliveries/s"), "{md}");
    }

    #[test]
    fn formats_section_has_one_row_per_variant_run() {
        let result = |bytes: f64, cpu: f64| {
            json!({"scenario":"formats","subscribers":10,"published":5,"delivered":50,
                "compressed":0,"delivered_per_s":100.0,"wire_bytes_per_delivery":bytes,
                "server_cpu_us_per_delivery":cpu})
        };
        let inputs = Inputs {
            runs: vec![
                run("formats-json-text", "roomcast", 1, result(1100.0, 3.0)),
                run("formats-msgpack-binary", "roomcast", 1, result(1040.0, 2.5)),
            ],
            ..Inputs::default()
        };
        let (heading, section) = render_only(&inputs, "formats").unwrap().remove(0);
        assert_eq!(heading, FORMATS_HEADING);
        assert!(
            section.contains(
                "| 1 KiB JSON text, uncompressed | 10 | 100 | 50 / 50 | 0 | 1100 B | 3.00 µs |"
            ),
            "{section}"
        );
        assert!(section.contains("`roomcast.v1.msgpack` | 10"), "{section}");
        assert!(
            !section.contains("permessage-deflate |"),
            "no row for a variant not run"
        );
        assert!(
            render_only(&Inputs::default(), "formats").unwrap()[0]
                .1
                .is_empty()
        );
    }

    #[test]
    fn report_has_targets_ratios_and_commands() {
        let inputs = Inputs {
            runs: vec![
                run("standard", "roomcast", 1, fanout(100_000.0, 2.0, 2.0, 0)),
                run("standard", "baseline", 1, fanout(100_000.0, 100.0, 12.0, 0)),
                run(
                    "sweep-100000",
                    "roomcast",
                    1,
                    fanout(100_000.0, 2.0, 2.0, 0),
                ),
                run(
                    "sweep-25000",
                    "baseline",
                    1,
                    fanout(25_000.0, 20.0, 12.0, 0),
                ),
                run(
                    "idle",
                    "roomcast",
                    1,
                    json!({"connections":10,"connected":10,
                    "servers":[{"rss_before_kib":1,"rss_after_kib":30}],"bytes_per_connection":3000.0,"closed_while_idle":0}),
                ),
            ],
            machine: machine_lines(
                "model name\t: Test CPU\n",
                "MemTotal: 25165824 kB\n",
                "6.1",
                2,
            ),
            commands: "scripts/bench".into(),
            notes: "Quick mode.".into(),
            soak_commands: String::new(),
        };
        let md = render(&inputs);
        assert!(md.contains("CPU: Test CPU, 2 cores"), "{md}");
        assert!(md.contains("Memory: 24.0 GiB"), "{md}");
        assert!(
            md.contains("| 2.00 µs | 12.00 µs | 6.0× less | ≥ 5× less | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| 100000/s | 25000/s | 4.0× | ≥ 3× | yes |"),
            "{md}"
        );
        assert!(md.contains("| 2.93 KiB |"), "{md}");
        assert!(md.contains("```sh\nscripts/bench\n```"), "{md}");
        assert!(md.contains("Quick mode."), "{md}");
    }
}
