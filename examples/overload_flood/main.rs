//! The export flood of issue 14, in one run against three stacks: the demo server (built with
//! `cargo build --release --example demo_server`) started on loopback with
//!
//! - *fixed limit*: `examples/demo.toml` turned back into the stack of before (a fixed limit
//!   of 64, no class share, no pacing, no saturation signal, no low-priority step-down);
//! - *tower*: the same stack with tower's `ConcurrencyLimit` (64) + `LoadShed` around it
//!   (`DEMO_TOWER_LIMIT=64`), as a user of tower alone would admit requests;
//! - *new defaults*: `examples/demo.toml` as it is.
//!
//! Against each, `wrk` downloads `GET /api/v1/reports/export` (`x-priority: low`,
//! `Accept-Encoding: br`) over 48 connections while this program asks
//! `GET /api/v1/payments/{id}/status` (`x-priority: critical`) every 50 ms.
//!
//! ```text
//! cargo build --release --example demo_server --example overload_flood
//! target/release/examples/overload_flood --secs 15 --runs 3
//! target/release/examples/overload_flood --soak 600      # the long run, see soak.rs
//! ```
//!
//! Three phases per stack, `--secs` each: the critical probe alone (unloaded), the exports
//! alone (what the machine serves of them), the exports with the probe (the flood). Prints a
//! Markdown table per run and, with `--runs N` (the stacks taken in turn, N times), the
//! median of each cell: critical p50/p90/p99 (of the answered ones), failures (non-2xx or
//! the probe's 2 s timeout) and requests sent (the probe waits for each answer, so a stalled
//! server gets few), low-priority answers served and shed (`503` and socket errors), their
//! goodput (MB/s of compressed body). `--demo PATH` names the server binary,
//! `--connections N` the wrk connections (48).
//!
//! The demo's per-client rate limit is lifted (`RATE_LIMIT_RPS`): the 48 downloads stand for 48
//! users, who share one address on loopback.

mod soak;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One phase's figures.
#[derive(Debug, Default, Clone)]
struct Phase {
    /// Critical latencies in ms, sorted.
    critical: Vec<f64>,
    /// Critical requests that failed (non-2xx, errors, the 2 s timeout).
    critical_failed: usize,
    /// What wrk saw of the exports, when they ran.
    low: Option<Wrk>,
}

/// What `wrk` reports.
#[derive(Debug, Default, Clone)]
pub(crate) struct Wrk {
    pub(crate) requests: u64,
    pub(crate) non_2xx: u64,
    pub(crate) errors: u64,
    pub(crate) bytes_per_sec: f64,
}

pub(crate) struct Args {
    secs: u64,
    runs: usize,
    pub(crate) demo: PathBuf,
    connections: u32,
    /// The long run's duration in seconds, when asked for.
    soak: Option<u64>,
    pub(crate) soak_connections: u32,
}

fn args() -> Args {
    let mut a = Args {
        secs: 15,
        runs: 1,
        demo: PathBuf::from("target/release/examples/demo_server"),
        connections: 48,
        soak: None,
        soak_connections: 480,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let num =
            |what: &str| -> u64 { value.parse().unwrap_or_else(|_| panic!("{what}: a number")) };
        match arg.as_str() {
            "--secs" => a.secs = num("--secs"),
            "--runs" => a.runs = num("--runs").max(1) as usize,
            "--demo" => a.demo = value.into(),
            "--connections" => a.connections = num("--connections") as u32,
            "--soak" => a.soak = Some(num("--soak")),
            "--soak-connections" => a.soak_connections = num("--soak-connections") as u32,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// `examples/demo.toml` turned back into the stack of before issue 14.
fn before_config(after: &str) -> String {
    let mut s = after.to_owned();
    let mut replace = |from: &str, to: &str| {
        assert!(
            s.contains(from),
            "examples/demo.toml no longer has {from:?}"
        );
        s = s.replacen(from, to, 1);
    };
    replace("# limit = 64", "limit = 64");
    replace("pacing = true", "pacing = false");
    replace(
        "[queue.class_share]\nlow = ",
        "[queue.class_share]\nlow = 1.0\n# was ",
    );
    replace("step_down_low = true", "step_down_low = false");
    let start = s.find("[queue.saturation]").expect("a saturation section");
    let end = start + s[start..].find("\n\n").expect("the section ends");
    s.replace_range(start..end, "");
    s
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// One stack to measure: the configuration file and the environment of the demo.
pub(crate) struct Setup {
    pub(crate) name: &'static str,
    pub(crate) config: PathBuf,
    pub(crate) env: Vec<(&'static str, String)>,
}

/// The demo with `setup` on a free port; returns it and the port once it answers.
pub(crate) async fn start(demo: &Path, setup: &Setup) -> (Child, u16) {
    let port = free_port();
    let mut child = Command::new(demo)
        .env("DEMO_CONFIG", &setup.config)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        // Lifted: the downloads stand for many users, who share one address on loopback.
        .env("RATE_LIMIT_RPS", "1000000")
        .env("RATE_LIMIT_BURST", "1000000")
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", demo.display()));
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/alive");
    for _ in 0..100 {
        if client.get(&url).send().await.is_ok() {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the demo did not answer on port {port}");
}

/// The critical client: one request every 50 ms for `secs`.
pub(crate) async fn probe(port: u16, secs: u64) -> (Vec<f64>, usize) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut ok, mut failed) = (Vec::new(), 0);
    let mut id = 1u64;
    while Instant::now() < end {
        tick.tick().await;
        id = id % 500 + 1;
        let url = format!("http://127.0.0.1:{port}/api/v1/payments/{id}/status");
        let t = Instant::now();
        let res = client
            .get(&url)
            .header("x-priority", "critical")
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                ok.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            _ => failed += 1,
        }
    }
    ok.sort_by(f64::total_cmp);
    (ok, failed)
}

/// `wrk` on the export for `secs`.
pub(crate) async fn flood(port: u16, secs: u64, connections: u32) -> Wrk {
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s")])
        .args([
            "--timeout",
            "10s",
            "-H",
            "x-priority: low",
            "-H",
            "Accept-Encoding: br",
        ])
        .arg(format!("http://127.0.0.1:{port}/api/v1/reports/export"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("wrk (apt-get install wrk)");
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn parse_wrk(text: &str) -> Wrk {
    let mut w = Wrk::default();
    let num = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
    for line in text.lines().map(str::trim) {
        if let Some((n, _)) = line.split_once(" requests in ") {
            w.requests = num(n) as u64;
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = num(n) as u64;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            w.errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last())
                .map(|n| num(n) as u64)
                .sum();
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            let v = v.trim();
            let (n, unit) =
                v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
            let scale = match unit {
                "GB" => 1e9,
                "MB" => 1e6,
                "KB" => 1e3,
                _ => 1.0,
            };
            w.bytes_per_sec = num(n) * scale;
        }
    }
    w
}

/// The three phases against one stack.
async fn run_setup(a: &Args, setup: &Setup) -> [Phase; 3] {
    let (mut server, port) = start(&a.demo, setup).await;
    // Warm-up: the first exports and payments (caches, encoders, the adaptive limit).
    let _ = tokio::join!(probe(port, 2), flood(port, 2, 4));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (critical, critical_failed) = probe(port, a.secs).await;
    let unloaded = Phase {
        critical,
        critical_failed,
        low: None,
    };
    let alone = Phase {
        low: Some(flood(port, a.secs, a.connections).await),
        ..Phase::default()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (low, (critical, critical_failed)) =
        tokio::join!(flood(port, a.secs + 1, a.connections), async {
            // wrk's connections first, then the probe inside its run.
            tokio::time::sleep(Duration::from_millis(500)).await;
            probe(port, a.secs).await
        });
    let loaded = Phase {
        critical,
        critical_failed,
        low: Some(low),
    };
    let _ = server.kill();
    let _ = server.wait();
    [unloaded, alone, loaded]
}

/// The `q` quantile of sorted `v`, in ms (`None` when empty).
fn pct(v: &[f64], q: f64) -> Option<f64> {
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).copied()
}

/// The cells of one phase, as numbers (`None`: not measured in this phase).
fn cells(p: &Phase) -> [Option<f64>; 8] {
    let probed = !p.critical.is_empty() || p.critical_failed > 0;
    let q = |x| if probed { pct(&p.critical, x) } else { None };
    let low = p.low.as_ref();
    [
        q(0.5),
        q(0.9),
        q(0.99),
        probed.then_some(p.critical_failed as f64),
        probed.then_some((p.critical.len() + p.critical_failed) as f64),
        low.map(|w| w.requests.saturating_sub(w.non_2xx) as f64),
        low.map(|w| (w.non_2xx + w.errors) as f64),
        low.map(|w| w.bytes_per_sec / 1e6),
    ]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn row(setup: &str, phase: &str, c: &[Option<f64>; 8]) -> String {
    let fmt = |i: usize, v: Option<f64>| match (i, v) {
        (_, None) => String::new(),
        (0..=2, Some(ms)) => format!("{ms:.1} ms"),
        (7, Some(mb)) => format!("{mb:.1}"),
        (_, Some(n)) => format!("{n:.0}"),
    };
    let mut out = vec![setup.to_owned(), phase.to_owned()];
    out.extend(c.iter().enumerate().map(|(i, v)| fmt(i, *v)));
    format!("| {} |", out.join(" | "))
}

const PHASES: [&str; 3] = ["unloaded", "exports alone", "under the export flood"];

fn print_table(title: &str, rows: &[(&str, usize, [Option<f64>; 8])]) {
    println!("\n{title}\n");
    println!("| stack | phase | critical p50 | p90 | p99 | critical failed | critical sent | low served | low shed (503 + errors) | low MB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (setup, phase, c) in rows {
        println!("{}", row(setup, PHASES[*phase], c));
    }
}

fn setups(before: &Path) -> Vec<Setup> {
    vec![
        Setup {
            name: "fixed limit 64 (before)",
            config: before.to_owned(),
            env: vec![],
        },
        Setup {
            name: "tower ConcurrencyLimit 64 + LoadShed",
            config: before.to_owned(),
            env: vec![("DEMO_TOWER_LIMIT", "64".into())],
        },
        Setup {
            name: "new defaults (examples/demo.toml)",
            config: PathBuf::from("examples/demo.toml"),
            env: vec![],
        },
    ]
}

#[tokio::main]
async fn main() {
    let a = args();
    let after = std::fs::read_to_string("examples/demo.toml").expect("run from the crate's root");
    let before_path =
        std::env::temp_dir().join(format!("overload-before-{}.toml", std::process::id()));
    std::fs::write(&before_path, before_config(&after)).expect("temp file");
    let setups = setups(&before_path);
    if let Some(secs) = a.soak {
        soak::run(&a, &setups[2], secs).await;
        let _ = std::fs::remove_file(&before_path);
        return;
    }
    // results[setup][phase] = one cell set per run.
    let mut results = vec![vec![Vec::new(); 3]; setups.len()];
    for run in 1..=a.runs {
        let mut rows = Vec::new();
        for (i, setup) in setups.iter().enumerate() {
            eprintln!(
                "run {run}/{}: {}, {}s per phase",
                a.runs, setup.name, a.secs
            );
            let phases = run_setup(&a, setup).await;
            for (phase, p) in phases.iter().enumerate() {
                let c = cells(p);
                results[i][phase].push(c);
                rows.push((setup.name, phase, c));
            }
        }
        print_table(&format!("Run {run}"), &rows);
    }
    let _ = std::fs::remove_file(&before_path);
    if a.runs > 1 {
        let mut rows = Vec::new();
        for (i, setup) in setups.iter().enumerate() {
            for (phase, runs) in results[i].iter().enumerate() {
                let c = std::array::from_fn(|k| median(runs.iter().filter_map(|r| r[k]).collect()));
                rows.push((setup.name, phase, c));
            }
        }
        print_table(&format!("Median of {} runs", a.runs), &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_before_config_parses_back() {
        let after = std::fs::read_to_string("examples/demo.toml").unwrap();
        let before = before_config(&after);
        assert!(before.contains("limit = 64") && !before.contains("[queue.saturation]"));
    }
}
