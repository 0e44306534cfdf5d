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
        && fanout_problems(result) == 0.0
        && num(result, "latency.count").is_some_and(|c| c > 0.0)
}

/// Sweep steps: offered deliveries/s → (passed, result).
pub type Steps = BTreeMap<u64, (bool, Value)>;

/// Offered deliveries/s of each sweep step of `system` → passed.
pub fn sweep(inputs: &Inputs, system: &str) -> Steps {
    inputs
        .runs
        .iter()
        .filter(|r| r.system == system && r.scenario.starts_with("sweep-"))
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
    let rate_ratio = match (rc_max, bl_max) {
        (Some(r), Some(b)) if b > 0 => Some(r as f64 / b as f64),
        _ => None,
    };
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
    let rate = |v: Option<u64>| v.map_or("below the lowest step".into(), |v| format!("{v}/s"));
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
    let _ = writeln!(
        w,
        "| highest offered deliveries/s with p99 ≤ 50 ms and nothing lost | {} | {} | {} | ≥ 3× | {} |",
        rate(rc_max),
        rate(bl_max),
        fmt(rate_ratio, 1, "×"),
        verdict(match (rc_max, bl_max) {
            (Some(_), None) => Some(true),
            _ => rate_ratio.map(|r| r >= 3.0),
        })
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
        "| lost + duplicated + out of order (standard and drain, Roomcast) | {problems} | | | 0 | {} |\n",
        verdict(Some(problems == 0.0))
    );
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
         {} s: {} deliveries/s offered. Latency is from each message's intended send time \
         (carried in `data`) to its receipt, after a warm-up.\n",
        num(r, "subscribers").unwrap_or(0.0),
        num(r, "rooms").unwrap_or(0.0),
        num(r, "publishers").unwrap_or(0.0),
        num(r, "rate_per_publisher").unwrap_or(0.0),
        num(r, "payload_bytes").unwrap_or(0.0),
        num(r, "duration_s").unwrap_or(0.0),
        num(r, "offered_deliveries_per_s").unwrap_or(0.0),
    );
    fanout_table(w, &runs);
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
    let mut rates: Vec<u64> = steps.iter().flat_map(|(_, s)| s.keys().copied()).collect();
    rates.sort_unstable();
    rates.dedup();
    for rate in rates {
        for (system, s) in &steps {
            if let Some((passed, r)) = s.get(&rate) {
                let _ = writeln!(
                    w,
                    "| {rate} | {system} | {} | {} | {} | {} | {} |",
                    fmt(num(r, "delivered_per_s"), 0, ""),
                    fmt(num(r, "latency.p99_ms"), 2, ""),
                    fmt(num(r, "lost"), 0, ""),
                    fmt(num(r, "server_cpu_us_per_delivery"), 2, ""),
                    if *passed { "yes" } else { "no" }
                );
            }
        }
    }
    let _ = writeln!(w);
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
        let r = &run.result;
        let sum = |key: &str| {
            r.get("servers")
                .and_then(Value::as_array)
                .map(|s| s.iter().filter_map(|x| num(x, key)).fold(0.0, |a, b| a + b))
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            run.system,
            run.round,
            fmt(num(r, "connections"), 0, ""),
            fmt(num(r, "connected"), 0, ""),
            fmt(sum("rss_before_kib"), 0, ""),
            fmt(sum("rss_after_kib"), 0, ""),
            fmt(num(r, "bytes_per_connection"), 0, ""),
            fmt(num(r, "closed_while_idle"), 0, ""),
        );
    }
    let _ = writeln!(w);
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
    fn names_parse_into_scenario_system_round() {
        assert_eq!(
            parse_name("sweep-100000.baseline.1.json"),
            Some(("sweep-100000".into(), "baseline".into(), 1))
        );
        assert_eq!(parse_name("commands.txt"), None);
        assert_eq!(parse_name("x.json"), None);
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
