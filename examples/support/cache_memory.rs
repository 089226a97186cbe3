//! The cache-memory experiment shared by `examples/cache_memory.rs` (the system allocator,
//! glibc's malloc on Linux), `examples/cache_memory_mimalloc.rs` and
//! `examples/cache_memory_jemalloc.rs`: each of those only declares its `#[global_allocator]`,
//! a [`Counting`] around the allocator it measures, and calls [`main`]. What it does and the
//! environment it reads are in `examples/cache_memory.rs`'s header.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::header::CACHE_CONTROL;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_perf::stack::{PerfConfig, PerfStack};

/// An allocator counting the bytes live around the one it wraps (`A`): what the program
/// really holds, beside the RSS that `A` keeps from the system for it. The example's
/// `#[global_allocator]` is a `Counting` around `System`, mimalloc or jemalloc.
pub struct Counting<A>(pub A);

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded as is to `A`, which upholds `GlobalAlloc`'s contract; the
// counting touches only an atomic and never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is to the inner allocator.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is to the inner allocator.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is to the inner allocator.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is to the inner allocator.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One listed item: about 230 bytes of JSON.
#[derive(Serialize)]
struct Item {
    id: u64,
    name: String,
    city: &'static str,
    status: &'static str,
    monthly_rent: u32,
    description: &'static str,
}

/// A page of items for `/items/{n}`, about `BODY_KB` KiB once serialized.
#[derive(Serialize)]
struct Page {
    n: u64,
    items: Vec<Item>,
}

fn page(n: u64, items: usize) -> Page {
    let items = (0..items as u64)
        .map(|i| Item {
            id: n * 1000 + i,
            name: format!("Property {n}-{i}"),
            city: "Lisbon",
            status: "available",
            monthly_rent: 1000 + (i as u32 * 37) % 2000,
            description: "Two bedrooms, a balcony over the river, close to the tram line; \
                          furnished, pets allowed, available from next month on.",
        })
        .collect();
    Page { n, items }
}

/// The server: every `/items/{n}` cacheable for an hour, in a `PerfStack` with a `max_mb` cache.
fn app(
    max_mb: u64,
    items: usize,
    pages: bool,
) -> Result<(Router, PerfStack), Box<dyn std::error::Error>> {
    let mut config = PerfConfig::default();
    config.cache.max_mb = max_mb;
    config.cache.large_bodies_in_pages = pages;
    let stack = PerfStack::from_config(&config)?;
    let router = Router::new()
        .route(
            "/items/{n}",
            get(move |Path(n): Path<u64>| async move {
                (
                    [(CACHE_CONTROL, "public, max-age=3600")],
                    Json(page(n, items)),
                )
            }),
        )
        // The same load, never stored: the warm-up, whose memory is the load's own.
        .route(
            "/warmup/{n}",
            get(move |Path(n): Path<u64>| async move {
                ([(CACHE_CONTROL, "no-store")], Json(page(n, items)))
            }),
        )
        .layer(stack.clone());
    Ok((router, stack))
}

/// `conns` clients asking for a new URL each time until `stop`: under `/warmup` until
/// `cacheable` turns true, under `/items` after; counts the responses after.
fn churn(
    base: String,
    conns: u64,
    cacheable: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    stop: Instant,
) {
    let next = Arc::new(AtomicU64::new(1));
    let client = reqwest::Client::new();
    for _ in 0..conns {
        let (client, base, next) = (client.clone(), base.clone(), next.clone());
        let (cacheable, done) = (cacheable.clone(), done.clone());
        tokio::spawn(async move {
            while Instant::now() < stop {
                let n = next.fetch_add(1, Relaxed);
                let counted = cacheable.load(Relaxed);
                let under = if counted { "items" } else { "warmup" };
                let Ok(res) = client.get(format!("{base}/{under}/{n}")).send().await else {
                    continue;
                };
                if res.bytes().await.is_ok() && counted {
                    done.fetch_add(1, Relaxed);
                }
            }
        });
    }
}

/// Runs the experiment under the environment's settings and prints its table; `allocator`
/// names the global allocator in the first line.
pub fn main(allocator: &str) -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(allocator))
}

async fn run(allocator: &str) -> Result<(), Box<dyn std::error::Error>> {
    let max_mb = env_or("MAX_MB", 16);
    let secs = env_or("SECS", 120);
    let interval = Duration::from_secs(env_or("INTERVAL", 10).max(1));
    let conns = env_or("CONNS", 32).max(1);
    let items = (env_or("BODY_KB", 23) * 1024 / 230).max(1) as usize;

    let pages = env_or("PAGES", 1) != 0;
    let (router, stack) = app(max_mb, items, pages)?;
    let cache = stack.handles().cache;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The same load on URLs that are never stored first, so that what the load itself holds
    // (connections, buffers in flight, the allocator's arenas) is in the figures at the start,
    // taken under that load; the growth after that is the cache's.
    let warmup = Duration::from_secs(env_or("WARMUP", 10));
    let body = reqwest::get(format!("{base}/items/0"))
        .await?
        .bytes()
        .await?;
    let cacheable = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + warmup + Duration::from_secs(secs);
    churn(base, conns, cacheable.clone(), done.clone(), stop);
    tokio::time::sleep(warmup).await;
    let budget = max_mb as f64 * MIB;
    let start_rss = rss();
    let start_heap = LIVE.load(Relaxed);
    println!(
        "cache_memory: allocator={allocator} max_mb={max_mb} pages={pages} body={} B conns={conns} secs={secs}; \
         at start RSS {:.1} MiB, heap {:.1} MiB",
        body.len(),
        start_rss as f64 / MIB,
        start_heap as f64 / MIB
    );
    // growth/budget: RSS growth since the start over `max_mb`; held/cache: the heap's growth
    // plus the bodies in pages of their own (outside the heap) over the bytes the cache
    // reports (1.0 when the weigher counts what entries hold).
    println!(
        "    t  req/s   RSS MiB  growth/budget  heap MiB  pages MiB  cache MiB  held/cache  entries"
    );

    let begin = Instant::now();
    cacheable.store(true, Relaxed);
    let mut last = 0;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    while begin.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let n = done.load(Relaxed);
        let snap = cache.snapshot();
        let rss = rss();
        let heap = LIVE.load(Relaxed);
        println!(
            "{:>5.0} {:>6.0} {:>9.1} {:>14.2} {:>9.1} {:>10.1} {:>10.1} {:>11.2} {:>8}",
            begin.elapsed().as_secs_f64(),
            (n - last) as f64 / interval.as_secs_f64(),
            rss as f64 / MIB,
            rss.saturating_sub(start_rss) as f64 / budget,
            heap as f64 / MIB,
            snap.bytes_in_pages as f64 / MIB,
            snap.bytes as f64 / MIB,
            (heap - start_heap + snap.bytes_in_pages as i64) as f64 / snap.bytes.max(1) as f64,
            snap.entries,
        );
        last = n;
    }
    Ok(())
}
