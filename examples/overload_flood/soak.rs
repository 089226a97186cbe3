//! The long run of issue 14 (`--soak SECS`): the new defaults at ten times the flood, bounded
//! and on loopback.
//!
//! `wrk` downloads the export over `--soak-connections` (480: ten times the flood's 48) for
//! `SECS`, while 16 checkers of this program loop over the export (low), a property list
//! (normal), the dashboard (normal) and a payment status (critical) and judge every answer:
//! only `2xx`, `429` and `503` are allowed, and every `429` / `503` carries `Retry-After`.
//! Every 5 s the server's resident memory (`/proc/PID/status`) and its queue
//! (`/admin/stats`) are sampled. Prints the samples and a verdict: RSS after the warm-up (the
//! first fifth of the run) within 10% of its value at the end of the warm-up, queue length
//! never above `queue_capacity`, no answer outside the allowed ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{flood, start, Args, Setup};

/// What the checkers saw: answers by status, answers refused for lacking `Retry-After`,
/// transport errors.
#[derive(Debug, Default)]
struct Seen {
    statuses: BTreeMap<u16, u64>,
    no_retry_after: u64,
    errors: u64,
}

/// One sample of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kb: u64,
    limit: u64,
    in_flight: u64,
    queued: u64,
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The configured bound on waiting requests, from `examples/demo.toml`.
fn queue_capacity(config: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(config).expect("the configuration");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("queue_capacity = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1024)
}

/// One checker: loops over the routes until `stop`.
async fn checker(port: u16, n: usize, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let routes = [
        ("/api/v1/reports/export", "low"),
        ("/api/v1/properties?page=3", "normal"),
        ("/api/v1/dashboard", "normal"),
        ("/api/v1/payments/7/status", "critical"),
    ];
    let mut i = n;
    while !stop.load(Ordering::Relaxed) {
        let (path, class) = routes[i % routes.len()];
        i += 1;
        let res = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("x-priority", class)
            .header("accept-encoding", "br")
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(_) => {
                seen.lock().unwrap().errors += 1;
                continue;
            }
        };
        let status = res.status().as_u16();
        let retry_after = res.headers().contains_key("retry-after");
        let body = res.bytes().await;
        let refused = matches!(status, 429 | 503);
        {
            let mut s = seen.lock().unwrap();
            if body.is_err() {
                s.errors += 1;
            }
            *s.statuses.entry(status).or_default() += 1;
            if refused && !retry_after {
                s.no_retry_after += 1;
            }
        }
        if refused {
            // A client that honours the answer backs off a little.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Samples the server every 5 s until `stop`.
async fn sampler(port: u16, pid: u32, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let stats: serde_json::Value = match client
            .get(format!("http://127.0.0.1:{port}/admin/stats"))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let q = &stats["queue"];
        let num = |k: &str| q[k].as_u64().unwrap_or(0);
        let s = Sample {
            at: t0.elapsed(),
            rss_kb: rss_kb(pid),
            limit: num("limit"),
            in_flight: num("in_flight"),
            queued: num("queued"),
        };
        eprintln!(
            "{:>5.0}s rss {:>7} kB limit {:>3} in flight {:>3} queued {:>3}",
            s.at.as_secs_f64(),
            s.rss_kb,
            s.limit,
            s.in_flight,
            s.queued
        );
        out.push(s);
    }
    out
}

/// The long run against `setup` for `secs`.
pub(crate) async fn run(a: &Args, setup: &Setup, secs: u64) {
    let (mut server, port) = start(&a.demo, setup).await;
    let pid = server.id();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    eprintln!(
        "soak: {secs}s, wrk -c{} on the export, 16 checkers",
        a.soak_connections
    );
    let checkers: Vec<_> = (0..16)
        .map(|n| tokio::spawn(checker(port, n, stop.clone(), seen.clone())))
        .collect();
    let samples = tokio::spawn(sampler(port, pid, stop.clone()));
    let wrk = flood(port, secs, a.soak_connections).await;
    stop.store(true, Ordering::Relaxed);
    for c in checkers {
        let _ = c.await;
    }
    let samples = samples.await.expect("sampler");
    let _ = server.kill();
    let _ = server.wait();
    report(
        &samples,
        &seen.lock().unwrap(),
        &wrk,
        queue_capacity(&setup.config),
    );
}

fn report(samples: &[Sample], seen: &Seen, wrk: &crate::Wrk, capacity: u64) {
    let warm = samples.len() / 5;
    let after = &samples[warm.min(samples.len().saturating_sub(1))..];
    let base = after.first().map_or(0, |s| s.rss_kb).max(1);
    let (lo, hi) = after.iter().fold((u64::MAX, 0), |(lo, hi), s| {
        (lo.min(s.rss_kb), hi.max(s.rss_kb))
    });
    let spread = (hi.saturating_sub(base)).max(base.saturating_sub(lo)) as f64 / base as f64;
    let max_queued = samples.iter().map(|s| s.queued).max().unwrap_or(0);
    let allowed = |code: u16| (200..300).contains(&code) || code == 429 || code == 503;
    let bad: u64 = seen
        .statuses
        .iter()
        .filter(|(c, _)| !allowed(**c))
        .map(|(_, n)| n)
        .sum();
    println!(
        "RSS after warm-up: {base} kB at its end, {lo}..{hi} kB after: {:.1}% off ({})",
        spread * 100.0,
        verdict(spread <= 0.10)
    );
    println!(
        "queue: at most {max_queued} waiting of {capacity} allowed ({})",
        verdict(max_queued <= capacity)
    );
    println!(
        "checkers: {:?} by status, {} 429/503 without Retry-After, {} transport errors ({})",
        seen.statuses,
        seen.no_retry_after,
        seen.errors,
        verdict(bad == 0 && seen.no_retry_after == 0)
    );
    println!(
        "wrk on the export: {} answers, {} non-2xx, {} socket errors, {:.1} MB/s",
        wrk.requests,
        wrk.non_2xx,
        wrk.errors,
        wrk.bytes_per_sec / 1e6
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}
