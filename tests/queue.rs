//! `PriorityQueueLayer`: ordering, starvation guard, displacement, deadlines, CoDel mode,
//! cancellation and shared state, driven through the service directly under a paused clock (so
//! every wait is exact), and end to end through a real axum server on loopback.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, serve, settle};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::advance;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_perf::cache::ResponseCacheLayer;
use tower_perf::queue::{
    AdaptiveLimit, PriorityQueueBuilder, PriorityQueueHandle, PriorityQueueLayer, QueueBody,
};
use tower_perf::{Priority, Rejected, Route};

/// The inner service of the direct tests: records the order in which requests are *called*
/// (that is, admitted), then holds each one until the test releases a gate permit.
#[derive(Clone)]
struct Backend {
    calls: Arc<Mutex<Vec<String>>>,
    gate: Arc<Semaphore>,
}

impl Backend {
    fn new() -> Self {
        Self {
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Lets `n` held requests finish.
    async fn release(&self, n: usize) {
        self.gate.add_permits(n);
        settle().await;
    }
}

impl Service<Request<()>> for Backend {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let id = req.headers()["x-id"].to_str().unwrap().to_owned();
        let p = *req.extensions().get::<Priority>().expect("priority set");
        self.calls.lock().unwrap().push(id.clone());
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            Ok(Response::new(Full::new(Bytes::from(format!("{id}:{p}")))))
        })
    }
}

type Svc = tower_perf::queue::PriorityQueue<Backend, tower_perf::queue::DefaultClassifier>;

fn service(layer: &PriorityQueueLayer, b: &Backend) -> Svc {
    layer.layer(b.clone())
}

/// Sends one request (`id`, class `p` in a trusted `x-priority` header) on its own task; the
/// task reads the whole body, so the permit comes back when it ends.
fn send(
    svc: &Svc,
    id: &str,
    p: &str,
) -> JoinHandle<(u16, String, Option<Rejected>, Option<String>)> {
    let req = Request::get("/")
        .header("x-id", id)
        .header("x-priority", p)
        .body(())
        .unwrap();
    let svc = svc.clone();
    tokio::spawn(async move {
        let res: Response<QueueBody<Full<Bytes>>> = svc.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let rejected = res.extensions().get::<Rejected>().copied();
        let retry = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            rejected,
            retry,
        )
    })
}

fn builder() -> PriorityQueueBuilder {
    PriorityQueueLayer::builder()
        .limit(1)
        .trust_priority_header(true)
        .max_wait(Priority::Critical, Duration::from_secs(3600))
        .max_wait(Priority::High, Duration::from_secs(3600))
        .max_wait(Priority::Normal, Duration::from_secs(3600))
        .max_wait(Priority::Low, Duration::from_secs(3600))
}

fn queued(h: &PriorityQueueHandle) -> usize {
    h.snapshot().queued
}

#[tokio::test(start_paused = true)]
async fn higher_classes_are_served_first_and_fifo_within_a_class() {
    let layer = builder().min_share(0.0).build().unwrap();
    let h = layer.handle();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let mut tasks = vec![send(&svc, "busy", "normal")];
    settle().await;
    for (id, p) in [
        ("low1", "low"),
        ("normal1", "normal"),
        ("high1", "high"),
        ("low2", "low"),
        ("critical1", "critical"),
        ("high2", "high"),
    ] {
        tasks.push(send(&svc, id, p));
        settle().await;
    }
    assert_eq!(queued(&h), 6);
    assert_eq!(h.snapshot().in_flight, 1);
    for _ in 0..7 {
        b.release(1).await;
    }
    assert_eq!(
        b.calls(),
        [
            "busy",
            "critical1",
            "high1",
            "high2",
            "normal1",
            "low1",
            "low2"
        ]
    );
    for t in tasks {
        let (status, body, rejected, _) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(rejected.is_none());
    }
    // The class reached the service in the request extensions.
    let snap = h.snapshot();
    assert_eq!(snap.class(Priority::Low).admitted, 2);
    assert_eq!(snap.class(Priority::Critical).admitted, 1);
    assert_eq!(snap.in_flight, 0);
}

/// Fills the queue with one low request behind ten critical ones and returns the position at
/// which the low one was served.
async fn low_position(min_share: f64) -> usize {
    let layer = builder().min_share(min_share).build().unwrap();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let mut tasks = vec![send(&svc, "busy", "critical")];
    settle().await;
    tasks.push(send(&svc, "low", "low"));
    for i in 0..10 {
        tasks.push(send(&svc, &format!("c{i}"), "critical"));
    }
    settle().await;
    b.release(12).await;
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    b.calls().iter().position(|c| c == "low").unwrap()
}

#[tokio::test(start_paused = true)]
async fn starvation_guard_gives_lower_classes_a_minimum_share() {
    // One dispatch in four: the low request waits for at most three critical ones
    // (position 0 is the request that was running), so it is the fourth dispatched.
    assert_eq!(low_position(0.25).await, 4);
    // Strict priority: it goes last.
    assert_eq!(low_position(0.0).await, 11);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_displaces_the_newest_waiter_of_the_lowest_class() {
    let layer = builder().queue_capacity(3).build().unwrap();
    let h = layer.handle();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    let low1 = send(&svc, "low1", "low");
    settle().await;
    let normal1 = send(&svc, "normal1", "normal");
    settle().await;
    let low2 = send(&svc, "low2", "low");
    settle().await;
    assert_eq!(queued(&h), 3);

    // Full: a high request takes the place of the newest low one.
    let high = send(&svc, "high", "high");
    settle().await;
    let (status, body, rejected, retry) = low2.await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(rejected, Some(Rejected::new("queue")));
    assert!(retry.is_some());
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "displaced by a request of higher priority");

    // Full again, and a low newcomer has nobody below it: it is the one turned away.
    let low3 = send(&svc, "low3", "low");
    settle().await;
    assert_eq!(low3.await.unwrap().0, 503);
    // A normal newcomer displaces low1 (the only low left).
    let normal2 = send(&svc, "normal2", "normal");
    settle().await;
    assert_eq!(low1.await.unwrap().0, 503);

    b.release(4).await;
    for t in [busy, normal1, high, normal2] {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert_eq!(b.calls(), ["busy", "high", "normal1", "normal2"]);
    let snap = h.snapshot();
    assert_eq!(snap.class(Priority::Low).rejected, 3);
    assert_eq!(snap.class(Priority::Low).admitted, 0);
}

#[tokio::test(start_paused = true)]
async fn per_class_queue_bound_turns_newcomers_of_that_class_away() {
    let layer = builder().max_queued(Priority::Low, 1).build().unwrap();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    let low1 = send(&svc, "low1", "low");
    let low2 = send(&svc, "low2", "low");
    settle().await;
    let (status, body, ..) = low2.await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("queue full"), "{body}");
    b.release(2).await;
    assert_eq!(busy.await.unwrap().0, 200);
    assert_eq!(low1.await.unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_answered_at_their_class_max_wait() {
    let layer = builder()
        .max_wait(Priority::Low, Duration::from_millis(100))
        .build()
        .unwrap();
    let h = layer.handle();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    let low = send(&svc, "low", "low");
    let high = send(&svc, "high", "high");
    settle().await;
    advance(Duration::from_millis(99)).await;
    settle().await;
    assert!(!low.is_finished());
    advance(Duration::from_millis(2)).await;
    settle().await;
    let (status, body, rejected, retry) = low.await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("queue wait too long"), "{body}");
    assert_eq!(rejected.unwrap().by(), "queue");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        !high.is_finished(),
        "the high class has its own (long) max wait"
    );
    b.release(2).await;
    assert_eq!(busy.await.unwrap().0, 200);
    assert_eq!(high.await.unwrap().0, 200);
    let snap = h.snapshot();
    assert_eq!(snap.class(Priority::Low).timed_out, 1);
    assert_eq!(snap.queued, 0);
    // The high request waited 101 ms in the queue; the first one none.
    let high = snap.class(Priority::High);
    assert_eq!(high.wait_samples, 1);
    assert!(high.wait_max >= Duration::from_millis(101), "{high:?}");
    assert!(high.wait_max < Duration::from_millis(103), "{high:?}");
    assert_eq!(snap.class(Priority::Normal).wait_max, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn codel_mode_serves_newest_first_and_drops_long_waiters() {
    let layer = builder()
        .codel(Duration::from_millis(2), Duration::from_millis(50))
        .build()
        .unwrap();
    let h = layer.handle();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    let a = send(&svc, "a", "normal");
    settle().await;
    advance(Duration::from_millis(30)).await;
    // `a` has waited 30 ms > 2 ms: above target since now.
    let bb = send(&svc, "b", "normal");
    settle().await;
    assert!(!h.snapshot().overloaded);
    advance(Duration::from_millis(60)).await;
    // Above target for 60 ms >= 50 ms: overloaded. `a` (90 ms) and `b` (60 ms) waited an
    // interval or more: dropped.
    let c = send(&svc, "c", "normal");
    settle().await;
    assert!(h.snapshot().overloaded);
    for t in [a, bb] {
        let (status, body, rejected, _) = t.await.unwrap();
        assert_eq!(status, 503);
        assert!(body.contains("overloaded"), "{body}");
        assert!(rejected.is_some());
    }
    advance(Duration::from_millis(5)).await;
    let d = send(&svc, "d", "normal");
    settle().await;
    // Newest first while overloaded.
    b.release(1).await;
    assert_eq!(b.calls(), ["busy", "d"]);
    b.release(2).await;
    assert_eq!(b.calls(), ["busy", "d", "c"]);
    for t in [busy, c, d] {
        assert_eq!(t.await.unwrap().0, 200);
    }
    // Empty queue: back to normal.
    let snap = h.snapshot();
    assert!(!snap.overloaded);
    assert_eq!(snap.class(Priority::Normal).timed_out, 2);
}

#[tokio::test(start_paused = true)]
async fn without_codel_waiters_are_served_oldest_first() {
    let layer = builder().build().unwrap();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    let a = send(&svc, "a", "normal");
    settle().await;
    advance(Duration::from_millis(500)).await;
    let c = send(&svc, "c", "normal");
    settle().await;
    b.release(3).await;
    assert_eq!(b.calls(), ["busy", "a", "c"]);
    for t in [busy, a, c] {
        assert_eq!(t.await.unwrap().0, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn a_canceled_waiter_leaves_the_queue_and_never_takes_a_permit() {
    let layer = builder().queue_capacity(1).build().unwrap();
    let h = layer.handle();
    let b = Backend::new();
    let svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    let gone = send(&svc, "gone", "critical");
    settle().await;
    assert_eq!(queued(&h), 1);
    gone.abort();
    settle().await;
    assert_eq!(queued(&h), 0, "the canceled request left the queue");
    assert_eq!(h.snapshot().class(Priority::Critical).canceled, 1);
    // Its place is free: a low request fits in a queue of one (it would be turned away, with
    // nobody below it to displace, if the canceled request still held the place).
    let low = send(&svc, "low", "low");
    settle().await;
    assert_eq!(queued(&h), 1);
    b.release(2).await;
    assert_eq!(busy.await.unwrap().0, 200);
    assert_eq!(low.await.unwrap().0, 200);
    assert_eq!(b.calls(), ["busy", "low"], "the canceled request never ran");
    assert_eq!(h.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_permit_granted_to_a_request_dropped_before_it_ran_goes_back() {
    let layer = builder().build().unwrap();
    let h = layer.handle();
    let b = Backend::new();
    let mut svc = service(&layer, &b);
    let busy = send(&svc, "busy", "normal");
    settle().await;
    // A queued future that is never polled again: it cannot notice its permit.
    let req = Request::get("/")
        .header("x-id", "idle")
        .header("x-priority", "normal")
        .body(())
        .unwrap();
    svc.ready().await.unwrap();
    let fut = svc.call(req);
    assert_eq!(queued(&h), 1);
    b.release(1).await;
    assert_eq!(busy.await.unwrap().0, 200);
    // The freed permit went to the idle future.
    let snap = h.snapshot();
    assert_eq!((snap.queued, snap.in_flight), (0, 1));
    drop(fut);
    assert_eq!(
        h.snapshot().in_flight,
        0,
        "dropping it gave the permit back"
    );
    let next = send(&svc, "next", "low");
    settle().await;
    assert_eq!(b.calls(), ["busy", "next"]);
    b.release(1).await;
    assert_eq!(next.await.unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn the_permit_is_held_until_the_response_body_ends() {
    let layer = builder().build().unwrap();
    let h = layer.handle();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let mut svc = layer.layer(service_fn(move |_req: Request<()>| {
        let rx = rx.lock().unwrap().take();
        async move {
            let body = match rx {
                Some(rx) => {
                    axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                }
                None => axum::body::Body::from("second"),
            };
            Ok::<_, Infallible>(Response::new(body))
        }
    }));
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(h.snapshot().in_flight, 1, "head sent, body still streaming");
    let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
    settle().await;
    assert_eq!(h.snapshot().queued, 1);
    tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
    drop(tx);
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"part");
    settle().await;
    let res = second.await.unwrap().unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"second");
    assert_eq!(h.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn services_and_clones_of_one_layer_share_one_limit() {
    let layer = builder().build().unwrap();
    let h = layer.handle();
    let b = Backend::new();
    // Two services from the layer (as axum makes per route) and a clone of the layer.
    let svc1 = service(&layer, &b);
    let svc2 = service(&layer.clone(), &b);
    let busy = send(&svc1, "busy", "normal");
    settle().await;
    let other = send(&svc2, "other", "normal");
    settle().await;
    assert_eq!(
        queued(&h),
        1,
        "the second service waits for the first one's permit"
    );
    b.release(2).await;
    assert_eq!(busy.await.unwrap().0, 200);
    assert_eq!(other.await.unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn header_is_only_trusted_when_configured_and_bad_values_count_as_absent() {
    let b = Backend::new();
    let untrusting = PriorityQueueLayer::builder()
        .route_priority(Route::prefix("/"), Priority::Low)
        .build()
        .unwrap();
    let svc = service(&untrusting, &b);
    b.release(10).await;
    assert_eq!(send(&svc, "x", "critical").await.unwrap().1, "x:low");
    let trusting = PriorityQueueLayer::builder()
        .default_priority(Priority::High)
        .trust_priority_header(true)
        .build()
        .unwrap();
    let svc = service(&trusting, &b);
    assert_eq!(send(&svc, "y", "critical").await.unwrap().1, "y:critical");
    assert_eq!(send(&svc, "z", "urgent!!").await.unwrap().1, "z:high");
    assert_eq!(send(&svc, "w", "").await.unwrap().1, "w:high");
}

#[tokio::test(start_paused = true)]
async fn a_closure_classifies_and_an_outer_priority_extension_wins() {
    let layer = PriorityQueueLayer::builder()
        .classify_with(|req: &Request<()>| {
            if req.uri().path().starts_with("/pay") {
                Priority::Critical
            } else {
                Priority::Low
            }
        })
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        let p = *req.extensions().get::<Priority>().unwrap();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(p.as_str()))))
    }));
    let text = |res: Response<QueueBody<Full<Bytes>>>| async move {
        res.into_body().collect().await.unwrap().to_bytes()
    };
    let res = svc
        .clone()
        .oneshot(Request::get("/pay/1").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(&text(res).await[..], b"critical");
    let res = svc
        .clone()
        .oneshot(Request::get("/list").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(&text(res).await[..], b"low");
    let mut req = Request::get("/list").body(()).unwrap();
    req.extensions_mut().insert(Priority::High);
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(&text(res).await[..], b"high");
}

#[test]
fn bad_configuration_names_its_field() {
    let field = |b: PriorityQueueBuilder| b.build().unwrap_err().field();
    assert_eq!(PriorityQueueLayer::new(0).unwrap_err().field(), "limit");
    assert_eq!(
        field(PriorityQueueLayer::builder().queue_capacity(0)),
        "queue_capacity"
    );
    assert_eq!(
        field(
            PriorityQueueLayer::builder()
                .queue_capacity(10)
                .max_queued(Priority::Low, 11)
        ),
        "max_queued"
    );
    assert_eq!(
        field(PriorityQueueLayer::builder().max_wait(Priority::High, Duration::ZERO)),
        "max_wait"
    );
    assert_eq!(
        field(
            PriorityQueueLayer::builder()
                .codel(Duration::from_millis(10), Duration::from_millis(5))
        ),
        "codel"
    );
    assert_eq!(
        field(PriorityQueueLayer::builder().min_share(0.5)),
        "min_share"
    );
    assert_eq!(
        field(PriorityQueueLayer::builder().min_share(f64::NAN)),
        "min_share"
    );
    assert_eq!(
        field(PriorityQueueLayer::builder().wait_window(Duration::from_millis(10))),
        "wait_window"
    );
    assert_eq!(
        field(PriorityQueueLayer::builder().adaptive_limit(AdaptiveLimit::gradient().min(0))),
        "adaptive_limit"
    );
    let err = PriorityQueueLayer::builder()
        .queue_capacity(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("queue_capacity"), "{err}");
}

/// A pool of `capacity` connections, each held 5 ms: above `capacity` requests in flight,
/// latency grows. The adaptive limit must settle near the pool size, not at its initial value.
#[tokio::test(start_paused = true)]
async fn adaptive_limit_finds_the_capacity_of_a_pool() {
    for (initial, capacity) in [(2usize, 8usize), (64, 8)] {
        let layer = PriorityQueueLayer::builder()
            .adaptive_limit(AdaptiveLimit::gradient().initial(initial).max(200))
            .queue_capacity(1000)
            .build()
            .unwrap();
        let h = layer.handle();
        let pool = Arc::new(Semaphore::new(capacity));
        let svc = layer.layer(service_fn(move |_req: Request<()>| {
            let pool = pool.clone();
            async move {
                let _conn = pool.acquire().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        }));
        // Light traffic first (one at a time), then 100 closed-loop clients for 5 s.
        for _ in 0..50 {
            let res = svc.clone().oneshot(Request::new(())).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
        let stop = tokio::time::Instant::now() + Duration::from_secs(5);
        let clients: Vec<_> = (0..100)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    while tokio::time::Instant::now() < stop {
                        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
                        res.into_body().collect().await.unwrap();
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen.push(h.snapshot().limit);
        }
        for c in clients {
            c.await.unwrap();
        }
        let settled = &seen[5..];
        assert!(
            settled
                .iter()
                .all(|&l| (capacity..=capacity * 2 + 4).contains(&l)),
            "from {initial}, pool {capacity}: limits over time {seen:?}"
        );
    }
}

/// The service answers at once; clients read the bodies slowly (500 ms each, over an AIMD
/// threshold of 50 ms). The adaptive limit learns from the time to the response head, so slow
/// readers must not push it down (measured to the end of the body, each would halve it).
#[tokio::test(start_paused = true)]
async fn slow_readers_do_not_shrink_the_adaptive_limit() {
    let layer = PriorityQueueLayer::builder()
        .adaptive_limit(
            AdaptiveLimit::aimd(Duration::from_millis(50))
                .initial(32)
                .min(1),
        )
        .queue_capacity(1000)
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }));
    let before = h.snapshot().limit;
    for _ in 0..20 {
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        res.into_body().collect().await.unwrap();
    }
    let after = h.snapshot().limit;
    assert!(after >= before, "limit {before} -> {after}");
}

// ---------------------------------------------------------------------------------------------
// End to end: a real axum server on loopback
// ---------------------------------------------------------------------------------------------

/// Copies the `Rejected` marker (a response extension, invisible on the wire) into a header.
async fn expose_rejected(mut res: axum::response::Response) -> axum::response::Response {
    if let Some(r) = res.extensions().get::<Rejected>().copied() {
        res.headers_mut()
            .insert("x-rejected-by", r.by().parse().unwrap());
    }
    res
}

#[derive(Clone)]
struct Gate(Arc<Semaphore>);

async fn blocked(axum::extract::State(g): axum::extract::State<Gate>) -> &'static str {
    g.0.acquire().await.unwrap().forget();
    "unblocked"
}

#[tokio::test]
async fn over_http_a_rejection_is_503_with_retry_after_json_and_the_marker() {
    let layer = PriorityQueueLayer::builder()
        .limit(1)
        .queue_capacity(1)
        .route_priority("/block", Priority::High)
        .build()
        .unwrap();
    let h = layer.handle();
    let gate = Gate(Arc::new(Semaphore::new(0)));
    let app = Router::new()
        .route("/block", get(blocked))
        .route(
            "/p",
            get(|p: axum::Extension<Priority>| async move { p.0.as_str() }),
        )
        .with_state(gate.clone())
        .layer(layer)
        .layer(axum::middleware::map_response(expose_rejected));
    let base = format!("http://{}", serve(app).await);
    let c = client();
    let running = tokio::spawn(c.get(format!("{base}/block")).send());
    let waiting = tokio::spawn(c.get(format!("{base}/block")).send());
    for i in 0.. {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if h.snapshot().queued == 1 {
            break;
        }
        assert!(i < 5_000, "the second request never queued");
    }
    let res = c.get(format!("{base}/p")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["x-rejected-by"], "queue");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "queue full");
    assert_eq!(body["retry_after_secs"], 1);

    gate.0.add_permits(2);
    for t in [running, waiting] {
        let res = t.await.unwrap().unwrap();
        assert_eq!(res.text().await.unwrap(), "unblocked");
    }
    // Once the queue drains, the class reaches the handler through the extensions.
    let res = c.get(format!("{base}/p")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "normal");
    assert_eq!(h.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_cache_outside_serves_stale_when_the_queue_turns_a_request_away() {
    let layer = PriorityQueueLayer::builder()
        .limit(1)
        .queue_capacity(1)
        .max_wait(Priority::Normal, Duration::from_secs(3600))
        .build()
        .unwrap();
    let h = layer.handle();
    let gate = Gate(Arc::new(Semaphore::new(0)));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = served.clone();
    let app = Router::new()
        .route("/block", get(blocked))
        .route(
            "/cached",
            get(move || {
                let k = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                async move {
                    (
                        [("cache-control", "max-age=1, stale-if-error=60")],
                        format!("fresh {k}"),
                    )
                }
            }),
        )
        .with_state(gate.clone())
        .layer(layer)
        .layer(ResponseCacheLayer::new());
    let base = format!("http://{}", serve(app).await);
    let c = client();
    assert_eq!(
        c.get(format!("{base}/cached"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "fresh 1"
    );
    advance(Duration::from_secs(2)).await;
    // Fill the limit and the queue.
    // Distinct URLs: the cache would coalesce two identical GETs into one.
    let running = tokio::spawn(c.get(format!("{base}/block?1")).send());
    let waiting = tokio::spawn(c.get(format!("{base}/block?2")).send());
    for i in 0.. {
        settle().await;
        if h.snapshot().queued == 1 {
            break;
        }
        assert!(i < 10_000, "the second request never queued");
    }
    let res = c.get(format!("{base}/cached")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(status.contains("stale-if-error"), "{status}");
    assert_eq!(res.text().await.unwrap(), "fresh 1");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(h.snapshot().class(Priority::Normal).rejected, 1);
    gate.0.add_permits(2);
    for t in [running, waiting] {
        t.await.unwrap().unwrap().text().await.unwrap();
    }
}
