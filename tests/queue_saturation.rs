//! `PriorityQueueLayer` under CPU-bound low-priority work (issue 14): per-class shares of the
//! limit (accounting under a paused clock, then over a real server), the saturation signal's
//! cuts of the adaptive limit (paused clock), and pacing of admitted low-priority bodies while
//! a critical request runs, asserted as an order of events.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, serve, settle};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_perf::queue::{AdaptiveLimit, PriorityQueueHandle, PriorityQueueLayer, SaturationSignal};
use tower_perf::Priority;

fn request(p: Priority) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(p);
    req
}

/// Sends a request of class `p` through `svc` and reads its body to the end (the permit is held
/// until then); returns the status.
async fn call<S>(svc: S, p: Priority) -> http::StatusCode
where
    S: Service<Request<()>, Response = Response<tower_perf::queue::QueueBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    let res = svc.oneshot(request(p)).await.unwrap();
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

/// Limit 4, low at most half of it: two lows run, the others wait, and a critical request still
/// finds a permit at once; a low that finishes lets the next low in (the class progresses).
#[tokio::test(start_paused = true)]
async fn a_class_holds_at_most_its_share_and_still_progresses() {
    let layer = PriorityQueueLayer::builder()
        .limit(4)
        .class_share(Priority::Low, 0.5)
        .max_wait(Priority::Low, Duration::from_secs(60))
        .build()
        .unwrap();
    let stats = layer.handle();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let svc = layer.layer(service_fn(move |req: Request<()>| {
        let g = g.clone();
        async move {
            if req.extensions().get::<Priority>() == Some(&Priority::Low) {
                g.acquire().await.unwrap().forget();
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    }));
    let lows: Vec<_> = (0..5)
        .map(|_| tokio::spawn(call(svc.clone(), Priority::Low)))
        .collect();
    settle().await;
    let s = stats.snapshot();
    assert_eq!(s.class(Priority::Low).in_flight, 2);
    assert_eq!(s.class(Priority::Low).max_in_flight, 2);
    assert_eq!(s.class(Priority::Low).queued, 3);
    // Two permits are free for the other classes, whatever the lows queue.
    let res = svc
        .clone()
        .oneshot(request(Priority::Critical))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        stats.snapshot().class(Priority::Critical).wait_max,
        Duration::ZERO
    );
    // One low ends: the next low takes its place, no more.
    gate.add_permits(1);
    settle().await;
    let s = stats.snapshot();
    assert_eq!(s.class(Priority::Low).admitted, 3);
    assert_eq!(s.class(Priority::Low).in_flight, 2);
    gate.add_permits(10);
    for l in lows {
        assert_eq!(l.await.unwrap(), 200, "{:?}", stats.snapshot());
    }
    assert_eq!(stats.snapshot().class(Priority::Low).admitted, 5);
}

/// A share too small for one permit still gives the class one: the starvation guarantee.
#[tokio::test(start_paused = true)]
async fn a_tiny_share_still_runs_one() {
    let layer = PriorityQueueLayer::builder()
        .limit(4)
        .class_share(Priority::Low, 0.01)
        .build()
        .unwrap();
    let stats = layer.handle();
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let lows: Vec<_> = (0..3)
        .map(|_| tokio::spawn(call(svc.clone(), Priority::Low)))
        .collect();
    settle().await;
    assert_eq!(stats.snapshot().class(Priority::Low).in_flight, 1);
    for l in lows {
        assert_eq!(l.await.unwrap(), 200);
    }
}

/// The saturation signal over the layer, with the paused clock: the tick runs late (the clock
/// jumps past it), the runtime counts as saturated, and the adaptive limit is cut once per
/// drain: once while the permits admitted before the cut are held, again after they drain
/// below it. Ticks on time end the saturation.
#[tokio::test(start_paused = true)]
async fn a_late_tick_cuts_the_adaptive_limit_once_per_drain() {
    let layer = PriorityQueueLayer::builder()
        .adaptive_limit(AdaptiveLimit::gradient().initial(20).min(8))
        .saturation(SaturationSignal::runtime_lag())
        .build()
        .unwrap();
    let stats = layer.handle();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let svc = layer.layer(service_fn(move |_req: Request<()>| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    }));
    let held: Vec<_> = (0..20)
        .map(|_| tokio::spawn(call(svc.clone(), Priority::Normal)))
        .collect();
    settle().await;
    assert_eq!(stats.snapshot().in_flight, 20);
    // Ticks on time: not saturated, the limit stays.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stats.snapshot().saturated);
    assert_eq!(stats.snapshot().limit, 20);
    // The runtime falls 40 ms behind on every tick.
    let late = |n: usize| async move {
        for _ in 0..n {
            tokio::time::advance(Duration::from_millis(40)).await;
            tokio::task::yield_now().await;
        }
    };
    late(20).await;
    let s = stats.snapshot();
    assert!(s.saturated, "lag {:?}", s.runtime_lag);
    assert_eq!(
        s.limit, 16,
        "one cut while the 20 admitted before it are held"
    );
    // Four finish: 16 in flight, at the limit: the next cut comes.
    gate.add_permits(4);
    settle().await;
    late(10).await;
    assert_eq!(stats.snapshot().limit, 12);
    // On time again: the saturation ends.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = stats.snapshot();
    assert!(!s.saturated, "lag {:?}", s.runtime_lag);
    gate.add_permits(100);
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
}

#[test]
fn a_share_outside_0_1_is_refused() {
    for bad in [0.0, -1.0, 1.5, f64::NAN] {
        let err = PriorityQueueLayer::builder()
            .class_share(Priority::Low, bad)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "class_share");
    }
}

/// Bounds a wait for the server to reach a state (a hang fails the test instead).
async fn within(f: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the server reached the state");
}

/// What the server of the race saw, in order.
type Events = Arc<Mutex<Vec<&'static str>>>;

/// A CPU-heavy stream: every chunk costs a busy loop, and is logged when produced.
fn heavy_stream(events: Events, stop: Arc<AtomicBool>) -> Body {
    let chunks = futures_util::stream::unfold(0u64, move |seed| {
        let events = events.clone();
        let stop = stop.clone();
        async move {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let mut x = seed;
            let chunk: Vec<u8> = (0..16 * 1024)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            events.lock().unwrap().push("chunk");
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), x))
        }
    });
    Body::from_stream(chunks)
}

/// The race over a real server: a low-priority stream runs flat out, then a critical request
/// arrives whose handler gives the CPU back three times before its head. Each time, the
/// handler waits for the runtime's next look at its I/O and deferred tasks (tokio: every 61
/// scheduler ticks); a paced body yields up to 32 times before each chunk, so it produces at
/// most about two chunks per such wait. The critical head therefore comes before the stream's
/// next 8 chunks (without pacing, the stream writes over a hundred in that time).
#[tokio::test]
async fn the_critical_head_comes_before_the_streams_next_chunks() {
    let (events, chunks_between) = race(true).await;
    assert!(
        chunks_between <= 8,
        "{chunks_between} chunks between the critical start and its head: {events:?}"
    );
}

async fn race(pacing: bool) -> (Vec<&'static str>, usize) {
    let events: Events = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let queue = PriorityQueueLayer::builder()
        .limit(8)
        .pacing(pacing)
        .trust_priority_header(true)
        .build()
        .unwrap();
    let (e1, e2, s1) = (events.clone(), events.clone(), stop.clone());
    let app = Router::new()
        .route(
            "/export",
            get(move || {
                let (e, s) = (e1.clone(), s1.clone());
                async move { heavy_stream(e, s) }
            }),
        )
        .route(
            "/pay",
            get(move || {
                let e = e2.clone();
                async move {
                    e.lock().unwrap().push("critical start");
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    e.lock().unwrap().push("critical head");
                    "paid"
                }
            }),
        )
        .layer(queue);
    let addr = serve(app).await;
    let c = client();
    let res = c
        .get(format!("http://{addr}/export"))
        .header("x-priority", "low")
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut body = res.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
    });
    // The stream is running once it has produced a few chunks.
    within(async {
        while events.lock().unwrap().len() < 8 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let paid = c
        .get(format!("http://{addr}/pay"))
        .header("x-priority", "critical")
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let log = events.lock().unwrap().clone();
    let start = log.iter().position(|e| *e == "critical start").unwrap();
    let head = log.iter().position(|e| *e == "critical head").unwrap();
    let between = log[start..head].iter().filter(|e| **e == "chunk").count();
    (log, between)
}

/// Over a real server: eight low-priority streams against limit 8 with a quarter for low: two
/// stream, six wait, and a critical request is answered while they do.
#[tokio::test]
async fn a_low_flood_does_not_take_the_whole_limit() {
    let events: Events = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let queue = PriorityQueueLayer::builder()
        .limit(8)
        .class_share(Priority::Low, 0.25)
        .max_wait(Priority::Low, Duration::from_secs(30))
        .pacing(true)
        .trust_priority_header(true)
        .build()
        .unwrap();
    let stats: PriorityQueueHandle = queue.handle();
    let (e1, s1) = (events.clone(), stop.clone());
    let app = Router::new()
        .route(
            "/export",
            get(move || {
                let (e, s) = (e1.clone(), s1.clone());
                async move { heavy_stream(e, s) }
            }),
        )
        .route("/pay", get(|| async { "paid" }))
        .layer(queue);
    let addr = serve(app).await;
    let c = client();
    let lows: Vec<_> = (0..8)
        .map(|_| {
            let req = c
                .get(format!("http://{addr}/export"))
                .header("x-priority", "low");
            tokio::spawn(async move {
                let res = req.send().await.unwrap();
                let status = res.status();
                let mut body = res.bytes_stream();
                while let Some(Ok(_)) = body.next().await {}
                status
            })
        })
        .collect();
    within(async {
        while stats.snapshot().class(Priority::Low).queued < 6 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let s = stats.snapshot();
    assert_eq!(s.class(Priority::Low).in_flight, 2);
    let paid = c
        .get(format!("http://{addr}/pay"))
        .header("x-priority", "critical")
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    // The streams end; the waiting lows get their turn, two at a time.
    stop.store(true, Ordering::Relaxed);
    for l in lows {
        assert_eq!(l.await.unwrap(), 200);
    }
    assert_eq!(stats.snapshot().class(Priority::Low).admitted, 8);
}
