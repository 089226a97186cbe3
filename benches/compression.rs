//! `AdaptiveCompressionLayer` against tower-http's `CompressionLayer` on the same service, the
//! same bodies and the same requests, in one run:
//!
//! - a 10 KB JSON document and a 1 MB HTML page (generated), rustdoc's 91 KB search script and
//!   70 KB stylesheet (real, minified; `benches/data/`),
//! - per algorithm (zstd, br, gzip, deflate),
//! - at each side's default level, and at matched levels (tower-http set to ours, and ours set
//!   to tower-http's),
//! - ours also without encoder reuse, to show what reuse saves.
//!
//! Criterion measures every case; then a summary interleaves the two sides (A, B, A, B...) so
//! that noise from other processes hits both alike, and prints throughput, bytes out and the
//! ratios as a markdown table. Also measured: the level sweep that chose the defaults, the
//! minimum size, and what one 64 KiB slice costs against a `spawn_blocking` round trip.
//!
//! Backends: Cargo unifies features, so tower-http's gzip and deflate run on the same flate2
//! backend (zlib-rs) as our streams; with `compression-native` (default) our whole bodies of up to
//! 256 KiB go to libdeflate and our `br` to Google's C brotli, while tower-http's `br` is the
//! Rust port (async-compression). `-- profile <case> <ours|theirs>` loops one side of one
//! case for 5 s, for `perf record`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_perf::compression::{AdaptiveCompressionLayer, Algorithm};

#[path = "../examples/support/json.rs"]
mod json;

fn json_10k() -> Bytes {
    Bytes::from(json::properties(10_000))
}

fn html_1m() -> Bytes {
    let mut s = String::from("<!doctype html><html><head><title>Properties</title><link rel=stylesheet href=/s.css></head><body><table>\n");
    let mut i = 0usize;
    while s.len() < 1_000_000 {
        s.push_str(&format!(
            "<tr class=\"{}\"><td>{i}</td><td><a href=\"/properties/{i}\">Property {i}</a></td><td>{}</td><td>{}</td><td>{}.{:02} EUR</td></tr>\n",
            ["odd", "even"][i % 2],
            ["Lisbon", "Porto", "Braga", "Faro", "Coimbra", "Aveiro", "Evora"][(i * 7) % 7],
            ["active", "vacant", "maintenance"][(i * 13) % 3],
            700 + (i * 7919) % 2300,
            (i * 31) % 100
        ));
        i += 1;
    }
    s.push_str("</table></body></html>");
    Bytes::from(s)
}

/// The bodies of every table: two generated (a JSON document of the kind the demo serves and a
/// large, repetitive HTML table) and two real, minified web assets (`benches/data/`).
fn bodies() -> [(&'static str, Bytes, &'static str); 4] {
    [
        ("json-10k", json_10k(), "application/json"),
        ("html-1m", html_1m(), "text/html; charset=utf-8"),
        (
            "js-91k",
            Bytes::from_static(include_bytes!("data/rustdoc-search.js")),
            "text/javascript",
        ),
        (
            "css-70k",
            Bytes::from_static(include_bytes!("data/rustdoc.css")),
            "text/css",
        ),
    ]
}

type Req = Request<Full<Bytes>>;
type BoxSvc = tower::util::BoxCloneSyncService<Req, Response<BoxBody>, Infallible>;
type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, tower_perf::BoxError>;

fn origin(
    body: Bytes,
    content_type: &'static str,
) -> impl Service<Req, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
       + Clone
       + Send
       + Sync {
    service_fn(move |_req: Req| {
        let body = body.clone();
        async move {
            let mut res = Response::new(Full::new(body));
            res.headers_mut()
                .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            Ok::<_, Infallible>(res)
        }
    })
}

fn ours(body: &Bytes, ct: &'static str, alg: Algorithm, level: Option<i32>, reuse: bool) -> BoxSvc {
    let mut b = AdaptiveCompressionLayer::builder()
        .adaptive(false)
        .reuse_encoders(reuse);
    if let Some(l) = level {
        b = b.level(alg, l);
    }
    let svc = b.build().unwrap().layer(origin(body.clone(), ct));
    tower::util::BoxCloneSyncService::new(
        svc.map_response(|r| r.map(|b| b.map_err(Into::into).boxed_unsync())),
    )
}

fn theirs(body: &Bytes, ct: &'static str, level: Option<i32>) -> BoxSvc {
    let layer = match level {
        Some(l) => CompressionLayer::new().quality(CompressionLevel::Precise(l)),
        None => CompressionLayer::new(),
    };
    let svc = layer.layer(origin(body.clone(), ct));
    tower::util::BoxCloneSyncService::new(
        svc.map_response(|r| r.map(|b| b.map_err(Into::into).boxed_unsync())),
    )
}

fn request(alg: Algorithm) -> Req {
    Request::get("/")
        .header(ACCEPT_ENCODING, alg.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// One request through `svc`; the body's length.
async fn once(svc: &BoxSvc, alg: Algorithm) -> usize {
    let res = svc.clone().oneshot(request(alg)).await.unwrap();
    assert_eq!(res.headers()["content-encoding"], alg.as_str());
    res.into_body().collect().await.unwrap().to_bytes().len()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// tower-http's defaults (async-compression's `Level::Default`; tower-http sets br to 4).
fn their_default(alg: Algorithm) -> i32 {
    match alg {
        Algorithm::Zstd => 3,
        Algorithm::Br => 4,
        Algorithm::Gzip | Algorithm::Deflate => 6,
    }
}

fn our_default(alg: Algorithm) -> i32 {
    match alg {
        Algorithm::Zstd => 1,
        Algorithm::Br => 4,
        Algorithm::Gzip | Algorithm::Deflate => 5,
    }
}

struct Case {
    name: String,
    input: usize,
    ours: BoxSvc,
    theirs: BoxSvc,
    alg: Algorithm,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (bname, body, ct) in bodies() {
        for alg in Algorithm::ALL {
            v.push(Case {
                name: format!(
                    "{bname}/{alg}/defaults ({} vs {})",
                    our_default(alg),
                    their_default(alg)
                ),
                input: body.len(),
                ours: ours(&body, ct, alg, None, true),
                theirs: theirs(&body, ct, None),
                alg,
            });
            v.push(Case {
                name: format!("{bname}/{alg}/matched {}", our_default(alg)),
                input: body.len(),
                ours: ours(&body, ct, alg, None, true),
                theirs: theirs(&body, ct, Some(our_default(alg))),
                alg,
            });
            // And at theirs, where the defaults differ.
            if their_default(alg) != our_default(alg) {
                v.push(Case {
                    name: format!("{bname}/{alg}/matched {}", their_default(alg)),
                    input: body.len(),
                    ours: ours(&body, ct, alg, Some(their_default(alg)), true),
                    theirs: theirs(&body, ct, None),
                    alg,
                });
            }
            if alg != Algorithm::Br {
                v.push(Case {
                    name: format!("{bname}/{alg}/no-reuse vs reuse {}", our_default(alg)),
                    input: body.len(),
                    ours: ours(&body, ct, alg, None, true),
                    theirs: ours(&body, ct, alg, None, false),
                    alg,
                });
            }
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let rt = rt();
    for case in cases() {
        if case.name.contains("no-reuse") {
            continue;
        }
        let mut g = c.benchmark_group(case.name.replace(' ', "_"));
        g.throughput(Throughput::Bytes(case.input as u64));
        g.bench_function("tower-perf", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(once(&case.ours, case.alg).await) })
        });
        g.bench_function("tower-http", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(once(&case.theirs, case.alg).await) })
        });
        g.finish();
    }
}

/// Interleaved timing: `rounds` rounds, each running A then B for about `slice`; the median
/// per-request time of each side.
fn interleaved(
    rt: &tokio::runtime::Runtime,
    case: &Case,
    rounds: usize,
    slice: Duration,
) -> (f64, f64) {
    let time = |svc: &BoxSvc| -> f64 {
        rt.block_on(async {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < slice {
                black_box(once(svc, case.alg).await);
                n += 1;
            }
            start.elapsed().as_secs_f64() / f64::from(n)
        })
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(time(&case.ours));
        b.push(time(&case.theirs));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    (a[rounds / 2], b[rounds / 2])
}

fn summary() {
    let rt = rt();
    println!(
        "\n## tower-perf vs tower-http compression (interleaved, median of 7 rounds, same run)\n"
    );
    println!(
        "| case | ours MB/s | theirs MB/s | speed ratio | ours bytes | theirs bytes | size ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for case in cases() {
        let out_a = rt.block_on(once(&case.ours, case.alg));
        let out_b = rt.block_on(once(&case.theirs, case.alg));
        let slice = if case.input > 100_000 {
            Duration::from_millis(300)
        } else {
            Duration::from_millis(120)
        };
        let (ta, tb) = interleaved(&rt, &case, 7, slice);
        let mbs = |t: f64| case.input as f64 / t / 1e6;
        let label = if case.name.contains("no-reuse") {
            "reuse / fresh"
        } else {
            ""
        };
        println!(
            "| {} {label} | {:.1} | {:.1} | **{:.2}x** | {} | {} | {:.3} |",
            case.name,
            mbs(ta),
            mbs(tb),
            tb / ta,
            out_a,
            out_b,
            out_a as f64 / out_b as f64
        );
    }
}

/// Ours alone, each level: the figures behind the default levels.
fn level_sweep() {
    let rt = rt();
    println!("\n## level sweep (ours, no adaptation)\n");
    println!("| body | algorithm | level | MB/s | bytes out | ratio |");
    println!("|---|---|---:|---:|---:|---:|");
    for (bname, body, ct) in bodies() {
        for alg in Algorithm::ALL {
            let levels: &[i32] = match alg {
                Algorithm::Zstd => &[-5, -1, 1, 2, 3, 4, 6, 9, 12],
                Algorithm::Br => &[0, 1, 2, 3, 4, 5, 6, 7, 9],
                _ => &[1, 2, 3, 4, 5, 6, 9],
            };
            for &level in levels {
                let svc = ours(&body, ct, alg, Some(level), true);
                let out = rt.block_on(once(&svc, alg));
                let t = rt.block_on(async {
                    let start = Instant::now();
                    let mut n = 0u32;
                    let slice = if body.len() > 100_000 {
                        Duration::from_millis(400)
                    } else {
                        Duration::from_millis(150)
                    };
                    while start.elapsed() < slice {
                        black_box(once(&svc, alg).await);
                        n += 1;
                    }
                    start.elapsed().as_secs_f64() / f64::from(n)
                });
                println!(
                    "| {bname} | {alg} | {level} | {:.1} | {out} | {:.2} |",
                    body.len() as f64 / t / 1e6,
                    body.len() as f64 / out as f64
                );
            }
        }
    }
}

/// Small bodies: what compression saves against the bytes of `Content-Encoding` and `Vary`
/// (about 40) and what it costs, to place the minimum size.
fn small_sizes() {
    let rt = rt();
    println!("\n## small bodies (ours, gzip and zstd at the normal level)\n");
    println!("| size | algorithm | bytes out | saved | us per response |");
    println!("|---:|---|---:|---:|---:|");
    let full = json_10k();
    for size in [128usize, 256, 512, 1024, 2048] {
        let body = full.slice(..size);
        for alg in [Algorithm::Gzip, Algorithm::Zstd] {
            let svc = AdaptiveCompressionLayer::builder()
                .adaptive(false)
                .min_size(0)
                .build()
                .unwrap()
                .layer(origin(body.clone(), "application/json"));
            let svc = tower::util::BoxCloneSyncService::new(
                svc.map_response(|r| r.map(|b| b.map_err(Into::into).boxed_unsync())),
            );
            let out = rt.block_on(once(&svc, alg));
            let t = rt.block_on(async {
                let start = Instant::now();
                let mut n = 0u32;
                while start.elapsed() < Duration::from_millis(100) {
                    black_box(once(&svc, alg).await);
                    n += 1;
                }
                start.elapsed().as_secs_f64() / f64::from(n)
            });
            println!(
                "| {size} | {alg} | {out} | {} | {:.1} |",
                size as i64 - out as i64 - 40,
                t * 1e6
            );
        }
    }
}

/// One 64 KiB slice at the normal level against a `spawn_blocking` round trip.
fn offload() {
    println!("\n## async workers or blocking pool\n");
    let html = html_1m();
    let rt = rt();
    for alg in Algorithm::ALL {
        let body = html.slice(..64 * 1024);
        let svc = ours(&body, "text/html", alg, None, true);
        let t = rt.block_on(async {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < Duration::from_millis(200) {
                black_box(once(&svc, alg).await);
                n += 1;
            }
            start.elapsed().as_secs_f64() / f64::from(n)
        });
        println!(
            "- one 64 KiB slice, {alg} level {}: {:.0} us",
            our_default(alg),
            t * 1e6
        );
    }
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let t = mt.block_on(async {
        let start = Instant::now();
        let n = 2000;
        for _ in 0..n {
            tokio::task::spawn_blocking(|| black_box(1)).await.unwrap();
        }
        start.elapsed().as_secs_f64() / f64::from(n)
    });
    println!(
        "- spawn_blocking round trip (empty closure): {:.1} us",
        t * 1e6
    );
}

/// Brotli's window: the default (22) against one sized to the body, per quality.
fn brotli_window() {
    use async_compression::codecs::brotli::params::EncoderParams;
    use async_compression::codecs::{BrotliEncoder, Encode};
    use async_compression::core::util::PartialBuffer;
    println!("\n## brotli window (lgwin) by quality\n");
    println!("| body | quality | lgwin | us per body | bytes out |");
    println!("|---|---:|---:|---:|---:|");
    for (bname, body) in [("json-10k", json_10k()), ("html-1m", html_1m())] {
        let sized = (64 - (body.len() as u64).leading_zeros()).clamp(10, 22) as i32;
        for q in [1, 4, 5, 6, 7] {
            for w in [22, sized, 18] {
                let run = || {
                    let p = EncoderParams::default()
                        .quality(async_compression::Level::Precise(q))
                        .window_size(w);
                    let mut e = BrotliEncoder::new(p);
                    let mut out = vec![0u8; body.len() + 1024];
                    let mut o = PartialBuffer::new(&mut out[..]);
                    let mut i = PartialBuffer::new(&body[..]);
                    while !i.unwritten().is_empty() {
                        e.encode(&mut i, &mut o).unwrap();
                    }
                    while !e.finish(&mut o).unwrap() {}
                    o.written_len()
                };
                let out = run();
                let start = Instant::now();
                let mut n = 0u32;
                while start.elapsed() < Duration::from_millis(150) || n < 3 {
                    black_box(run());
                    n += 1;
                }
                println!(
                    "| {bname} | {q} | {w} | {:.0} | {out} |",
                    start.elapsed().as_secs_f64() / f64::from(n) * 1e6
                );
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench
}

/// `cargo bench --bench compression -- profile <case> <ours|theirs>`: one side of the first case
/// whose name contains `<case>`, in a loop for 5 s, for `perf record`.
fn profile(case: &str, side: &str) {
    let rt = rt();
    let Some(case) = cases().into_iter().find(|c| c.name.contains(case)) else {
        eprintln!("no case matches {case:?}");
        return;
    };
    let svc = if side == "theirs" {
        &case.theirs
    } else {
        &case.ours
    };
    let start = Instant::now();
    let mut n = 0u64;
    rt.block_on(async {
        while start.elapsed() < Duration::from_secs(5) {
            black_box(once(svc, case.alg).await);
            n += 1;
        }
    });
    println!(
        "{} ({side}): {:.1} us per request",
        case.name,
        start.elapsed().as_secs_f64() / n as f64 * 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "profile") {
        let arg = |k: usize| args.get(i + k).map_or("", String::as_str);
        profile(arg(1), arg(2));
        return;
    }
    // `cargo bench --bench compression -- summary`: only the tables.
    if !args.iter().any(|a| a == "summary") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if args.iter().any(|a| a == "brotli") {
        brotli_window();
        return;
    }
    // `cargo bench -- --test` (criterion's smoke mode) skips the tables.
    if args.iter().any(|a| a == "--test") {
        return;
    }
    if args.iter().any(|a| a == "--bench" || a == "summary") {
        summary();
        level_sweep();
        small_sizes();
        offload();
    }
}
