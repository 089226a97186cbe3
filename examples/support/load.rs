//! The open-loop load generator shared by `examples/loadgen.rs` and
//! `examples/queue_experiment.rs`.
//!
//! Open loop: requests leave on a fixed schedule (`rate` per second), whatever the server does,
//! so a slow server does not slow the offered load down (no coordinated omission). Latency is
//! measured from each request's *scheduled* departure to the end of its response body.

#![allow(dead_code)]

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::time::Instant;

/// The classes, in the order of the mix and the report.
pub const CLASSES: [&str; 4] = ["critical", "high", "normal", "low"];

/// What to send.
#[derive(Debug, Clone)]
pub struct Config {
    /// The target: a URL on a loopback address.
    pub url: Uri,
    /// Requests per second.
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// Weight of each class in [`CLASSES`] order (sent as `x-priority`).
    pub mix: [u32; 4],
    /// A request not finished after this long counts as timed out (and is abandoned).
    pub timeout: Duration,
    /// At most this many requests in flight; beyond, requests are counted as `dropped`
    /// (the generator, not the server, could not keep up).
    pub max_in_flight: usize,
    /// Show a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
}

/// The figures of one class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassReport {
    pub class: &'static str,
    pub sent: u64,
    pub ok: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub errors: u64,
    pub dropped: u64,
    /// Latency percentiles of successful requests, in milliseconds.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl ClassReport {
    /// Share of sent requests that succeeded.
    pub fn success(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            self.ok as f64 / self.sent as f64
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub rate: f64,
    pub duration_secs: f64,
    /// Successful responses per second over the run.
    pub goodput: f64,
    pub classes: Vec<ClassReport>,
}

#[derive(Default)]
struct Counts {
    sent: u64,
    ok: u64,
    rejected: u64,
    timed_out: u64,
    errors: u64,
    dropped: u64,
    in_flight: usize,
}

struct Stats {
    counts: [Counts; 4],
    hist: [Histogram<u64>; 4],
}

/// Refuses any target that is not on a loopback address: this tool overloads what it points at.
pub fn check_loopback(url: &Uri) -> Result<(), String> {
    if url.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// targets are supported"));
    }
    let host = url.host().ok_or_else(|| format!("{url}: no host"))?;
    let port = url.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if host.eq_ignore_ascii_case("localhost") => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
        Err(_) => {
            return Err(format!(
                "{host}: only loopback targets (127.0.0.0/8, ::1, localhost)"
            ))
        }
    };
    if addrs.is_empty() || !addrs.iter().all(|a| a.is_loopback()) {
        return Err(format!(
            "{host}: only loopback targets (127.0.0.0/8, ::1, localhost)"
        ));
    }
    Ok(())
}

/// Picks classes in the mix's proportions, spread evenly (a deterministic weighted
/// round-robin: the same run sends the same sequence).
struct Mixer {
    weights: [u32; 4],
    credit: [i64; 4],
    total: i64,
}

impl Mixer {
    fn new(weights: [u32; 4]) -> Self {
        Self {
            weights,
            credit: [0; 4],
            total: weights.iter().map(|&w| i64::from(w)).sum(),
        }
    }

    /// Smooth weighted round-robin (as nginx does it).
    fn next(&mut self) -> usize {
        let mut best = 0;
        for c in 0..4 {
            self.credit[c] += i64::from(self.weights[c]);
            if self.credit[c] > self.credit[best] {
                best = c;
            }
        }
        self.credit[best] -= self.total;
        best
    }
}

/// Runs the load and returns the report.
pub async fn run(cfg: &Config) -> Result<Report, String> {
    check_loopback(&cfg.url)?;
    if !(cfg.rate > 0.0 && cfg.rate <= 1_000_000.0) {
        return Err("rate must be in (0, 1000000]".into());
    }
    if cfg.mix.iter().all(|&w| w == 0) {
        return Err("the mix needs at least one class with a weight".into());
    }
    if cfg.duration.is_zero() || cfg.duration > Duration::from_secs(3600) {
        return Err("duration must be between 0 and one hour".into());
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.max_in_flight)
        .build(connector);
    let hist = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let stats = Arc::new(Mutex::new(Stats {
        counts: Default::default(),
        hist: [hist(), hist(), hist(), hist()],
    }));
    let mut mixer = Mixer::new(cfg.mix);
    let start = Instant::now();
    let end = start + cfg.duration;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut sent_total: u64 = 0;
    let show = cfg.progress && std::io::stderr().is_terminal();
    let mut next_progress = start;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Every request whose departure time has come leaves now.
        let due = ((now - start).as_secs_f64() * cfg.rate) as u64 + 1;
        while sent_total < due {
            let scheduled = start + interval.mul_f64(sent_total as f64);
            sent_total += 1;
            let class = mixer.next();
            {
                let mut s = stats.lock().unwrap();
                let in_flight: usize = s.counts.iter().map(|c| c.in_flight).sum();
                let c = &mut s.counts[class];
                c.sent += 1;
                if in_flight >= cfg.max_in_flight {
                    c.dropped += 1;
                    continue;
                }
                c.in_flight += 1;
            }
            let req = Request::get(cfg.url.clone())
                .header("x-priority", CLASSES[class])
                .body(Empty::new())
                .expect("request");
            let client = client.clone();
            let stats = stats.clone();
            let timeout = cfg.timeout;
            tasks.spawn(async move {
                let outcome = tokio::time::timeout_at(scheduled + timeout, async {
                    let res = client.request(req).await?;
                    let status = res.status();
                    res.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                })
                .await;
                let latency = Instant::now().saturating_duration_since(scheduled);
                let mut s = stats.lock().unwrap();
                s.counts[class].in_flight -= 1;
                match outcome {
                    Ok(Ok(StatusCode::OK)) => {
                        s.counts[class].ok += 1;
                        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                        s.hist[class].saturating_record(micros.max(1));
                    }
                    Ok(Ok(StatusCode::SERVICE_UNAVAILABLE)) => s.counts[class].rejected += 1,
                    Ok(Ok(_)) | Ok(Err(_)) => s.counts[class].errors += 1,
                    Err(_) => s.counts[class].timed_out += 1,
                }
            });
        }
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        if show && now >= next_progress {
            next_progress = now + Duration::from_millis(200);
            progress(&stats, now - start, cfg.duration);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    // Let the last requests finish (or time out).
    while tasks.join_next().await.is_some() {}
    if show {
        progress(&stats, cfg.duration, cfg.duration);
        eprintln!();
    }
    let elapsed = cfg.duration.as_secs_f64();
    let s = stats.lock().unwrap();
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e3
        }
    };
    let classes: Vec<ClassReport> = (0..4)
        .map(|c| {
            let n = &s.counts[c];
            let h = &s.hist[c];
            ClassReport {
                class: CLASSES[c],
                sent: n.sent,
                ok: n.ok,
                rejected: n.rejected,
                timed_out: n.timed_out,
                errors: n.errors,
                dropped: n.dropped,
                p50_ms: ms(h, 0.5),
                p90_ms: ms(h, 0.9),
                p99_ms: ms(h, 0.99),
                max_ms: h.max() as f64 / 1e3,
            }
        })
        .collect();
    let ok: u64 = classes.iter().map(|c| c.ok).sum();
    Ok(Report {
        url: cfg.url.to_string(),
        rate: cfg.rate,
        duration_secs: elapsed,
        goodput: ok as f64 / elapsed,
        classes,
    })
}

fn progress(stats: &Mutex<Stats>, done: Duration, total: Duration) {
    let s = stats.lock().unwrap();
    let sum = |f: fn(&Counts) -> u64| s.counts.iter().map(f).sum::<u64>();
    let frac = (done.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0);
    let width = 30;
    let filled = (frac * width as f64) as usize;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r[{}{}] {:>5.1}s/{:.0}s sent {} ok {} rejected {} timed out {} errors {}   ",
        "#".repeat(filled),
        " ".repeat(width - filled),
        done.as_secs_f64(),
        total.as_secs_f64(),
        sum(|c| c.sent),
        sum(|c| c.ok),
        sum(|c| c.rejected),
        sum(|c| c.timed_out),
        sum(|c| c.errors + c.dropped),
    );
    let _ = err.flush();
}

/// The report as a text table.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "{} at {:.0}/s for {:.0}s: goodput {:.0}/s\n{:<9} {:>7} {:>7} {:>8} {:>9} {:>6} {:>7} {:>8} {:>8} {:>8}\n",
        r.url, r.rate, r.duration_secs, r.goodput,
        "class", "sent", "ok", "rejected", "timed out", "errors", "dropped", "p50 ms", "p90 ms", "p99 ms"
    );
    for c in r.classes.iter().filter(|c| c.sent > 0) {
        out += &format!(
            "{:<9} {:>7} {:>7} {:>8} {:>9} {:>6} {:>7} {:>8.1} {:>8.1} {:>8.1}\n",
            c.class,
            c.sent,
            c.ok,
            c.rejected,
            c.timed_out,
            c.errors,
            c.dropped,
            c.p50_ms,
            c.p90_ms,
            c.p99_ms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixer_follows_the_weights() {
        let mut m = Mixer::new([10, 30, 0, 60]);
        let mut n = [0; 4];
        for _ in 0..1000 {
            n[m.next()] += 1;
        }
        assert_eq!(n, [100, 300, 0, 600]);
    }

    #[test]
    fn only_loopback() {
        assert!(check_loopback(&"http://127.0.0.1:3000/".parse().unwrap()).is_ok());
        assert!(check_loopback(&"http://[::1]:3000/".parse().unwrap()).is_ok());
        assert!(check_loopback(&"http://10.0.0.1/".parse().unwrap()).is_err());
        assert!(check_loopback(&"http://example.com/".parse().unwrap()).is_err());
        assert!(check_loopback(&"https://127.0.0.1/".parse().unwrap()).is_err());
    }
}
