//! The export flood of issue 14, before and after, in one run: the demo server (built with
//! `cargo build --release --example demo_server`) started twice on loopback, once with the
//! stack of before (`examples/demo.toml` with a fixed limit of 64, no class share, no pacing,
//! no saturation signal, no low-priority step-down) and once with `examples/demo.toml` as it
//! is; against each, `wrk` downloads `GET /api/v1/reports/export` (`x-priority: low`,
//! `Accept-Encoding: br`) over 48 connections while this program asks
//! `GET /api/v1/payments/{id}/status` (`x-priority: critical`) every 50 ms.
//!
//! ```text
//! cargo build --release --example demo_server --example overload_flood
//! nice -n -10 target/release/examples/overload_flood --secs 15
//! ```
//!
//! Three phases per setup, `--secs` each: the critical probe alone (unloaded), the exports
//! alone (what the machine serves of them), the exports with the probe (the flood). Prints a
//! Markdown table: critical p50/p90/p99 and failures, low-priority answers served and shed
//! (`503`), their goodput (MB/s of compressed body), per setup and phase. `--demo PATH` names
//! the server binary, `--connections N` the wrk connections (48).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One phase's figures.
#[derive(Debug, Default)]
struct Phase {
    /// Critical latencies in ms, sorted; failures (non-2xx, timeouts).
    critical: Vec<f64>,
    critical_failed: usize,
    /// wrk: answers, non-2xx answers, socket errors, bytes per second.
    low: Option<Wrk>,
}

#[derive(Debug, Default)]
struct Wrk {
    requests: u64,
    non_2xx: u64,
    errors: u64,
    bytes_per_sec: f64,
}

struct Args {
    secs: u64,
    demo: PathBuf,
    connections: u32,
}

fn args() -> Args {
    let mut a = Args {
        secs: 15,
        demo: PathBuf::from("target/release/examples/demo_server"),
        connections: 48,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => a.secs = value.parse().expect("--secs: a number"),
            "--demo" => a.demo = value.into(),
            "--connections" => a.connections = value.parse().expect("--connections: a number"),
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
        "[queue.class_share]\nlow = 0.25",
        "[queue.class_share]\nlow = 1.0",
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

/// The demo on `port` with the configuration at `config`; returns once it answers.
async fn start(demo: &PathBuf, config: &PathBuf, port: u16) -> Child {
    let child = Command::new(demo)
        .env("DEMO_CONFIG", config)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", demo.display()));
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/alive");
    for _ in 0..100 {
        if client.get(&url).send().await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the demo did not answer on port {port}");
}

/// The critical client: one request every 50 ms for `secs`.
async fn probe(port: u16, secs: u64) -> (Vec<f64>, usize) {
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
async fn flood(port: u16, secs: u64, connections: u32) -> Wrk {
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

async fn run_setup(a: &Args, config: &PathBuf) -> [Phase; 3] {
    let port = free_port();
    let mut server = start(&a.demo, config, port).await;
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

fn pct(v: &[f64], q: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    format!("{:.1} ms", v[i])
}

fn row(setup: &str, phase: &str, p: &Phase) -> String {
    let mut cells = vec![setup.to_owned(), phase.to_owned()];
    if p.critical.is_empty() && p.critical_failed == 0 {
        cells.extend(["".into(), "".into(), "".into(), "".into()]);
    } else {
        for q in [0.5, 0.9, 0.99] {
            cells.push(pct(&p.critical, q));
        }
        let all = p.critical.len() + p.critical_failed;
        cells.push(format!("{} of {all}", p.critical_failed));
    }
    match &p.low {
        Some(w) => cells.extend([
            w.requests.saturating_sub(w.non_2xx).to_string(),
            (w.non_2xx + w.errors).to_string(),
            format!("{:.1}", w.bytes_per_sec / 1e6),
        ]),
        None => cells.extend(["".into(), "".into(), "".into()]),
    }
    format!("| {} |", cells.join(" | "))
}

#[tokio::main]
async fn main() {
    let a = args();
    let after_path = PathBuf::from("examples/demo.toml");
    let after = std::fs::read_to_string(&after_path).expect("run from the crate's root");
    let before_path =
        std::env::temp_dir().join(format!("overload-before-{}.toml", std::process::id()));
    std::fs::write(&before_path, before_config(&after)).expect("temp file");
    let setups = [
        ("before (fixed limit 64)", before_path.clone()),
        ("after (examples/demo.toml)", after_path),
    ];
    let mut rows = Vec::new();
    for (name, config) in &setups {
        eprintln!("{name}: {}s per phase", a.secs);
        let phases = run_setup(&a, config).await;
        for (phase, p) in ["unloaded", "exports alone", "under the export flood"]
            .iter()
            .zip(&phases)
        {
            rows.push(row(name, phase, p));
        }
    }
    let _ = std::fs::remove_file(&before_path);
    println!("| setup | phase | critical p50 | p90 | p99 | critical failed | low served | low shed (503 + errors) | low MB/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
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
