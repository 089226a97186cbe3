//! Allocations per request of the whole `PerfStack`, beyond those of the same axum router
//! without it: a regression on the hot path (a map, a box, a string per request) fails here,
//! while its speed stays in the benchmarks (`scripts/wrk-stack.sh`).
//!
//! The requests go through the router as axum's server hands them over (`oneshot` on a clone
//! of the router, with a browser's `Accept-Encoding`), on one thread; the body is read to its
//! end. One test in this file: the allocator counts every thread, and nothing else runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::{ACCEPT_ENCODING, CACHE_CONTROL};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_perf::stack::PerfStack;

/// Counts every allocation and reallocation of the process.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded as is to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded as is to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The allocations the stack may add to a request on its hit path, beyond the bare router's.
const MAX_HIT_ALLOCATIONS: u64 = 6;
/// The same on the miss path (a response that is not cacheable).
const MAX_MISS_ALLOCATIONS: u64 = 14;

const BODY: &str = "Hello, World!";

fn cacheable() -> Response<Body> {
    let mut res = Response::new(Body::from(BODY));
    res.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

fn app(stack: Option<PerfStack>) -> Router {
    let hit = get(|| async { cacheable() });
    let miss = get(|| async { BODY });
    match stack {
        Some(stack) => Router::new()
            .route("/hit", hit.layer(stack.clone()))
            .route("/miss", miss.layer(stack)),
        None => Router::new().route("/hit", hit).route("/miss", miss),
    }
}

/// The allocations of one request to `path`, its body read to the end.
async fn allocations_of(app: &Router, path: &str) -> u64 {
    let req = Request::get(path)
        .header(ACCEPT_ENCODING, "gzip, deflate, br, zstd")
        .body(Body::empty())
        .unwrap();
    let app = app.clone();
    let before = ALLOCATIONS.load(Relaxed);
    let res = app.oneshot(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let n = ALLOCATIONS.load(Relaxed) - before;
    assert_eq!(body, BODY);
    n
}

/// The fewest allocations of `path` over a few requests (after some to warm every cache: the
/// first hit stores the entry, the first request of a route makes its statistics).
async fn steady(app: &Router, path: &str) -> u64 {
    for _ in 0..5 {
        allocations_of(app, path).await;
    }
    let mut least = u64::MAX;
    for _ in 0..20 {
        least = least.min(allocations_of(app, path).await);
    }
    least
}

#[tokio::test(flavor = "current_thread")]
async fn the_stack_adds_few_allocations_per_request() {
    let bare = app(None);
    let stack = app(Some(PerfStack::builder().build().unwrap()));
    let bare_hit = steady(&bare, "/hit").await;
    let bare_miss = steady(&bare, "/miss").await;
    let hit = steady(&stack, "/hit").await - bare_hit;
    let miss = steady(&stack, "/miss").await - bare_miss;
    println!(
        "allocations per request: bare {bare_hit}/{bare_miss}, stack adds hit {hit}, miss {miss}"
    );
    assert!(
        hit <= MAX_HIT_ALLOCATIONS,
        "the hit path allocates {hit} times per request, beyond the bare router's {bare_hit}; \
         at most {MAX_HIT_ALLOCATIONS}"
    );
    assert!(
        miss <= MAX_MISS_ALLOCATIONS,
        "the miss path allocates {miss} times per request, beyond the bare router's \
         {bare_miss}; at most {MAX_MISS_ALLOCATIONS}"
    );
}
