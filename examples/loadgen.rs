//! An open-loop HTTP load generator with a mix of priorities, for loopback targets only.
//!
//! Requests leave at a fixed rate whatever the server does (a slow server does not slow the
//! offered load down), each with an `x-priority` header drawn from the mix. It prints, per
//! class: sent, ok, rejected (503), timed out, errors, and p50/p90/p99 latency of the
//! successful ones, measured from each request's scheduled departure.
//!
//! ```text
//! cargo run --release --example demo_server &
//! cargo run --release --example loadgen -- --url http://127.0.0.1:3000/api/v1/properties \
//!     --rate 500 --duration 10s --mix critical=10,high=30,low=60
//! cargo run --release --example loadgen -- --url http://127.0.0.1:3000/health --json
//! ```
//!
//! Options: `--url` (loopback only: 127.0.0.0/8, ::1, localhost), `--rate` per second
//! (default 100), `--duration` (`10s`, `500ms`; default 10 s, at most 1 h), `--mix`
//! (`class=weight,...`; default `critical=10,high=30,low=60`), `--timeout` (default 2 s),
//! `--max-in-flight` (default 4096), `--json`.

#[path = "support/load.rs"]
mod load;

use std::time::Duration;

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_mix(s: &str) -> Result<[u32; 4], String> {
    let mut mix = [0; 4];
    for part in s.split(',') {
        let (name, w) = part
            .split_once('=')
            .ok_or_else(|| format!("bad mix entry {part:?} (class=weight)"))?;
        let c = load::CLASSES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("unknown class {name:?}"))?;
        mix[c] = w.trim().parse().map_err(|_| format!("bad weight {w:?}"))?;
    }
    Ok(mix)
}

fn parse_args() -> Result<(load::Config, bool), String> {
    let mut cfg = load::Config {
        url: "http://127.0.0.1:3000/".parse().unwrap(),
        rate: 100.0,
        duration: Duration::from_secs(10),
        mix: [10, 30, 0, 60],
        timeout: Duration::from_secs(2),
        max_in_flight: 4096,
        progress: true,
    };
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => cfg.url = value()?.parse().map_err(|e| format!("bad url: {e}"))?,
            "--rate" => cfg.rate = value()?.parse().map_err(|_| "bad rate".to_string())?,
            "--duration" => cfg.duration = parse_duration(&value()?)?,
            "--timeout" => cfg.timeout = parse_duration(&value()?)?,
            "--mix" => cfg.mix = parse_mix(&value()?)?,
            "--max-in-flight" => {
                cfg.max_in_flight = value()?
                    .parse()
                    .map_err(|_| "bad max-in-flight".to_string())?
            }
            "--json" => json = true,
            "-h" | "--help" => {
                println!("usage: loadgen --url http://127.0.0.1:PORT/path [--rate N] [--duration 10s] [--mix critical=10,high=30,low=60] [--timeout 2s] [--max-in-flight N] [--json]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if json {
        cfg.progress = false;
    }
    Ok((cfg, json))
}

#[tokio::main]
async fn main() {
    let (cfg, json) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    match load::run(&cfg).await {
        Ok(report) if json => println!("{}", serde_json::to_string_pretty(&report).unwrap()),
        Ok(report) => print!("{}", load::table(&report)),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    }
}
