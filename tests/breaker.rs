//! `CircuitBreakerLayer` against a real axum server on loopback, with a real HTTP client, under a
//! paused clock: open waits and slow calls are virtual time, so every figure is exact.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, serve, settle};
use http_body_util::Full;
use tokio::sync::Semaphore;
use tokio::time::advance;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_perf::breaker::{CircuitBreakerHandle, CircuitBreakerLayer, State, DEFAULT_KEY};
use tower_perf::Rejected;

/// The status the `/flaky` handler answers with (changed by the test).
#[derive(Clone)]
struct Flaky(Arc<AtomicU16>);

impl Flaky {
    fn new() -> Self {
        Self(Arc::new(AtomicU16::new(200)))
    }
    fn set(&self, status: u16) {
        self.0.store(status, Ordering::SeqCst);
    }
}

async fn flaky(AxState(f): AxState<Flaky>) -> StatusCode {
    StatusCode::from_u16(f.0.load(Ordering::SeqCst)).unwrap()
}

async fn status(Path(code): Path<u16>) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

async fn sleep_ms(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

/// Copies the `Rejected` marker (a response extension, invisible on the wire) into a header.
async fn expose_rejected(mut res: Response) -> Response {
    if let Some(r) = res.extensions().get::<Rejected>().copied() {
        res.headers_mut()
            .insert("x-rejected-by", r.by().parse().unwrap());
    }
    res
}

/// A small, deterministic breaker: last 10 calls, verdict from 5, 50% failures, 10 s open wait
/// doubling up to 60 s, no jitter, 2 probes.
fn builder() -> tower_perf::breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .count_window(10)
        .minimum_calls(5)
        .failure_rate(0.5)
        .open_wait(Duration::from_secs(10), Duration::from_secs(60))
        .jitter(0.0)
        .half_open_calls(2)
}

async fn app(layer: CircuitBreakerLayer, f: Flaky) -> String {
    let app = Router::new()
        .route("/flaky", get(flaky))
        .route("/status/{code}", get(status))
        .route("/sleep/{ms}", get(sleep_ms))
        .with_state(f)
        .layer(layer)
        .layer(axum::middleware::map_response(expose_rejected));
    format!("http://{}", serve(app).await)
}

async fn get_status(c: &reqwest::Client, url: &str) -> u16 {
    let res = c.get(url).send().await.unwrap();
    let s = res.status().as_u16();
    res.bytes().await.unwrap();
    s
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_only_after_minimum_calls() {
    let layer = builder().build().unwrap();
    let h = layer.handle();
    let f = Flaky::new();
    let base = app(layer, f.clone()).await;
    let c = client();
    let url = format!("{base}/flaky");

    f.set(500);
    for i in 0..4 {
        assert_eq!(get_status(&c, &url).await, 500, "call {i}");
        assert_eq!(h.state("/flaky"), Some(State::Closed), "call {i}");
    }
    // The fifth failure reaches the minimum: 100% failures, open.
    assert_eq!(get_status(&c, &url).await, 500);
    assert_eq!(h.state("/flaky"), Some(State::Open));

    // Open: answered without the handler, 503 + Retry-After + JSON + marker.
    f.set(200);
    advance(Duration::from_millis(2500)).await;
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "8"); // 7.5 s left, rounded up
    assert_eq!(res.headers()["x-rejected-by"], "breaker");
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["retry_after_secs"], 8);

    let snap = h.breaker("/flaky").unwrap();
    assert_eq!(snap.state, State::Open);
    assert_eq!(snap.retry_after_secs, Some(8));
    assert_eq!(snap.consecutive_trips, 1);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_below_threshold_stays_closed() {
    let layer = builder().build().unwrap();
    let h = layer.handle();
    let f = Flaky::new();
    let base = app(layer, f.clone()).await;
    let c = client();
    let url = format!("{base}/flaky");
    // 4 failures in 10 calls: 40% < 50%.
    for i in 0..10 {
        f.set(if [2, 5, 7, 9].contains(&i) { 503 } else { 200 });
        get_status(&c, &url).await;
    }
    let snap = h.breaker("/flaky").unwrap();
    assert_eq!(
        (snap.state, snap.calls, snap.failures),
        (State::Closed, 10, 4)
    );
    assert_eq!(snap.failure_rate, 0.4);
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_call_rate() {
    let layer = builder()
        .slow_calls(Duration::from_millis(100), 0.6)
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    // Fast calls, then slow ones: 3 slow of 5 is 60%.
    for _ in 0..2 {
        assert_eq!(get_status(&c, &format!("{base}/sleep/10")).await, 200);
    }
    for i in 0..2 {
        assert_eq!(get_status(&c, &format!("{base}/sleep/150")).await, 200);
        assert_eq!(h.state("/sleep/{ms}"), Some(State::Closed), "slow call {i}");
    }
    assert_eq!(get_status(&c, &format!("{base}/sleep/100")).await, 200);
    assert_eq!(h.state("/sleep/{ms}"), Some(State::Open));
    assert_eq!(get_status(&c, &format!("{base}/sleep/1")).await, 503);
}

#[tokio::test(start_paused = true)]
async fn open_wait_grows_on_repeated_trips_and_resets_on_recovery() {
    let layer = builder().half_open_calls(1).build().unwrap();
    let h = layer.handle();
    let f = Flaky::new();
    let base = app(layer, f.clone()).await;
    let c = client();
    let url = format!("{base}/flaky");
    let retry_after = |c: reqwest::Client, url: String| async move {
        let res = c.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 503);
        res.headers()["retry-after"].to_str().unwrap().to_owned()
    };

    f.set(500);
    for _ in 0..5 {
        get_status(&c, &url).await;
    }
    assert_eq!(retry_after(c.clone(), url.clone()).await, "10");
    // Still failing: the probe fails, the wait doubles, and again.
    for expected in ["20", "40", "60", "60"] {
        advance(Duration::from_secs(61)).await;
        assert_eq!(get_status(&c, &url).await, 500); // the probe
        assert_eq!(h.state("/flaky"), Some(State::Open));
        assert_eq!(retry_after(c.clone(), url.clone()).await, expected);
    }
    // Recovered: the probe succeeds and closes the breaker; the next trip waits 10 s again.
    f.set(200);
    advance(Duration::from_secs(61)).await;
    assert_eq!(get_status(&c, &url).await, 200);
    assert_eq!(h.state("/flaky"), Some(State::Closed));
    f.set(500);
    for _ in 0..5 {
        get_status(&c, &url).await;
    }
    assert_eq!(retry_after(c.clone(), url.clone()).await, "10");
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_n_probes_under_a_burst_then_closes() {
    const PROBES: usize = 3;
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let fail = Arc::new(AtomicU16::new(500));
    let layer = builder().half_open_calls(PROBES as u32).build().unwrap();
    let h = layer.handle();
    let handler = {
        let (entered, gate, fail) = (entered.clone(), gate.clone(), fail.clone());
        move || {
            let (entered, gate, fail) = (entered.clone(), gate.clone(), fail.clone());
            async move {
                let code = fail.load(Ordering::SeqCst);
                if code == 200 {
                    entered.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.unwrap().forget();
                }
                StatusCode::from_u16(code).unwrap()
            }
        }
    };
    let app = Router::new().route("/pay", get(handler)).layer(layer);
    let base = format!("http://{}", serve(app).await);
    let c = client();
    let url = format!("{base}/pay");
    for _ in 0..5 {
        assert_eq!(get_status(&c, &url).await, 500);
    }
    assert_eq!(h.state("/pay"), Some(State::Open));
    fail.store(200, Ordering::SeqCst);
    advance(Duration::from_secs(10)).await;

    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (c, url, done) = (c.clone(), url.clone(), done.clone());
            tokio::spawn(async move {
                let s = get_status(&c, &url).await;
                done.fetch_add(1, Ordering::SeqCst);
                s
            })
        })
        .collect();
    for _ in 0..1000 {
        if done.load(Ordering::SeqCst) >= 50 - PROBES && entered.load(Ordering::SeqCst) >= PROBES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    settle().await;
    assert_eq!(entered.load(Ordering::SeqCst), PROBES);
    assert_eq!(done.load(Ordering::SeqCst), 50 - PROBES);
    assert_eq!(h.breaker("/pay").unwrap().probes_in_flight, PROBES as u32);
    assert_eq!(h.state("/pay"), Some(State::HalfOpen));

    gate.add_permits(PROBES);
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|&&s| s == 200).count(), PROBES);
    assert_eq!(codes.iter().filter(|&&s| s == 503).count(), 50 - PROBES);
    assert_eq!(h.state("/pay"), Some(State::Closed));
    gate.add_permits(100);
    assert_eq!(get_status(&c, &url).await, 200);
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn canceled_probe_gives_its_slot_back() {
    let layer = builder()
        .half_open_calls(1)
        .key_with(|_| Some("upstream"))
        .build()
        .unwrap();
    let h = layer.handle();
    let mode = Arc::new(AtomicU16::new(500));
    let m = mode.clone();
    let mut svc = layer.layer(service_fn(move |_req: http::Request<()>| {
        let code = m.load(Ordering::SeqCst);
        async move {
            if code == 0 {
                std::future::pending::<()>().await;
            }
            let mut res = http::Response::new(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::from_u16(code).unwrap();
            Ok::<_, Infallible>(res)
        }
    }));
    let req = || http::Request::get("/").body(()).unwrap();
    for _ in 0..5 {
        svc.ready().await.unwrap().call(req()).await.unwrap();
    }
    assert_eq!(h.state("upstream"), Some(State::Open));
    advance(Duration::from_secs(10)).await;

    // The probe hangs, then its caller goes away.
    mode.store(0, Ordering::SeqCst);
    {
        let mut fut = pin!(svc.ready().await.unwrap().call(req()));
        assert!(poll_once(fut.as_mut()).is_pending());
        // Its slot is taken: another caller is turned away.
        let res = svc.ready().await.unwrap().call(req()).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.extensions().get::<Rejected>().unwrap().by(), "breaker");
    }
    assert_eq!(h.breaker("upstream").unwrap().probes_in_flight, 0);
    // The slot is free again: the next probe goes through and closes the breaker.
    mode.store(200, Ordering::SeqCst);
    let res = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(h.state("upstream"), Some(State::Closed));
}

#[tokio::test(start_paused = true)]
async fn classifier_counts_429_and_ignores_503() {
    let layer = builder()
        .key_with(|_| Some("dep"))
        .classify_with(|s| {
            s == StatusCode::TOO_MANY_REQUESTS
                || (s.is_server_error() && s != StatusCode::SERVICE_UNAVAILABLE)
        })
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get_status(&c, &format!("{base}/status/503")).await, 503);
    }
    assert_eq!(h.state("dep"), Some(State::Closed));
    assert_eq!(h.breaker("dep").unwrap().failures, 0);
    for _ in 0..5 {
        assert_eq!(get_status(&c, &format!("{base}/status/429")).await, 429);
    }
    assert_eq!(h.state("dep"), Some(State::Open));
}

#[tokio::test(start_paused = true)]
async fn one_failing_route_does_not_open_another() {
    let layer = builder().build().unwrap();
    let h = layer.handle();
    let f = Flaky::new();
    let base = app(layer, f.clone()).await;
    let c = client();
    f.set(500);
    for _ in 0..5 {
        get_status(&c, &format!("{base}/flaky")).await;
        assert_eq!(get_status(&c, &format!("{base}/status/200")).await, 200);
    }
    assert_eq!(h.state("/flaky"), Some(State::Open));
    assert_eq!(h.state("/status/{code}"), Some(State::Closed));
    assert_eq!(get_status(&c, &format!("{base}/flaky")).await, 503);
    assert_eq!(get_status(&c, &format!("{base}/status/200")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn number_of_breakers_is_bounded_and_open_ones_stay() {
    let layer = builder()
        .max_breakers(8)
        .key_with(|req| req.headers.get("x-key").and_then(|v| v.to_str().ok()))
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    h.force_open("hot");
    for i in 0..50 {
        let res = c
            .get(format!("{base}/status/200"))
            .header("x-key", format!("k{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(h.len() <= 8, "{} breakers", h.len());
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(h.len(), 8);
    assert_eq!(h.state("hot"), Some(State::Open));
    // The most recent keys are the ones kept.
    assert_eq!(h.state("k49"), Some(State::Closed));
    assert_eq!(h.state("k0"), None);
    // No key: the default breaker.
    assert_eq!(get_status(&c, &format!("{base}/status/200")).await, 200);
    assert_eq!(h.state(DEFAULT_KEY), Some(State::Closed));
}

#[tokio::test(start_paused = true)]
async fn idle_breakers_are_evicted() {
    let layer = builder()
        .idle_timeout(Duration::from_secs(60))
        .key_with(|req| req.headers.get("x-key").and_then(|v| v.to_str().ok()))
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    for k in ["a", "b"] {
        c.get(format!("{base}/status/200"))
            .header("x-key", k)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(h.len(), 2);
    advance(Duration::from_secs(61)).await;
    c.get(format!("{base}/status/200"))
        .header("x-key", "c")
        .send()
        .await
        .unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h.state("c"), Some(State::Closed));
}

/// Open breakers nobody calls any more are evicted too, once idle past both the idle timeout
/// and the longest open wait, instead of holding slots for ever and pushing out busy closed
/// breakers; one opened by hand stays.
#[tokio::test(start_paused = true)]
async fn idle_open_breakers_are_evicted_after_their_longest_wait() {
    let layer = builder()
        .idle_timeout(Duration::from_secs(60))
        .open_wait(Duration::from_secs(5), Duration::from_secs(120))
        .key_with(|req| req.headers.get("x-key").and_then(|v| v.to_str().ok()))
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    let call = |k: &'static str, status: u16| {
        let c = c.clone();
        let url = format!("{base}/status/{status}");
        async move { c.get(url).header("x-key", k).send().await.unwrap() }
    };
    // "a" trips on failures; "b" is opened by hand.
    for _ in 0..5 {
        call("a", 500).await;
    }
    call("b", 200).await;
    h.force_open("b");
    assert_eq!(h.state("a"), Some(State::Open));
    // Idle past the idle timeout, not past the longest wait: kept.
    advance(Duration::from_secs(90)).await;
    call("c", 200).await;
    assert_eq!(h.len(), 3);
    assert_eq!(h.state("a"), Some(State::Open));
    // Past both: the tripped one goes, the forced one stays.
    advance(Duration::from_secs(40)).await;
    call("d", 200).await;
    assert_eq!(h.state("a"), None);
    assert_eq!(h.state("b"), Some(State::Open));
    assert_eq!(h.state("d"), Some(State::Closed));
}

#[tokio::test(start_paused = true)]
async fn handle_forces_open_close_and_resets() {
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let t = transitions.clone();
    let layer = builder()
        .on_state_change(move |key, from, to| t.lock().unwrap().push((key.to_owned(), from, to)))
        .build()
        .unwrap();
    let h: CircuitBreakerHandle = layer.handle();
    let f = Flaky::new();
    let base = app(layer, f.clone()).await;
    let c = client();
    let url = format!("{base}/flaky");
    assert_eq!(get_status(&c, &url).await, 200);

    h.force_open("/flaky");
    advance(Duration::from_secs(3600)).await;
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "10");
    assert!(h.breaker("/flaky").unwrap().forced_open);

    assert!(h.force_close("/flaky"));
    assert_eq!(get_status(&c, &url).await, 200);

    f.set(500);
    for _ in 0..5 {
        get_status(&c, &url).await;
    }
    assert_eq!(h.state("/flaky"), Some(State::Open));
    assert!(h.reset("/flaky"));
    let snap = h.breaker("/flaky").unwrap();
    assert_eq!(
        (snap.state, snap.calls, snap.consecutive_trips),
        (State::Closed, 0, 0)
    );
    assert!(!h.reset("/nope"));

    let json = serde_json::to_value(h.snapshot()).unwrap();
    assert_eq!(json["breakers"][0]["key"], "/flaky");
    assert_eq!(json["breakers"][0]["state"], "closed");

    let seen = transitions.lock().unwrap().clone();
    let states: Vec<_> = seen.iter().map(|(_, from, to)| (*from, *to)).collect();
    assert_eq!(
        states,
        [
            (State::Closed, State::Open),
            (State::Open, State::Closed),
            (State::Closed, State::Open),
            (State::Open, State::Closed),
        ]
    );
    assert!(seen.iter().all(|(k, _, _)| k == "/flaky"));
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let layer = builder().time_window(10).build().unwrap();
    let h = layer.handle();
    let f = Flaky::new();
    let base = app(layer, f.clone()).await;
    let c = client();
    let url = format!("{base}/flaky");
    f.set(500);
    for _ in 0..4 {
        get_status(&c, &url).await;
    }
    assert_eq!(h.breaker("/flaky").unwrap().calls, 4);
    advance(Duration::from_secs(11)).await;
    assert_eq!(h.breaker("/flaky").unwrap().calls, 0);
    // One more failure is not enough: the four older ones left the window.
    get_status(&c, &url).await;
    assert_eq!(h.state("/flaky"), Some(State::Closed));
    for _ in 0..4 {
        get_status(&c, &url).await;
    }
    assert_eq!(h.state("/flaky"), Some(State::Open));
}

#[tokio::test(start_paused = true)]
async fn call_timeout_answers_504_and_counts_as_failure() {
    let layer = builder()
        .call_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    for _ in 0..5 {
        let res = c.get(format!("{base}/sleep/1000")).send().await.unwrap();
        assert_eq!(res.status(), 504);
        assert_eq!(res.headers()["x-rejected-by"], "breaker");
    }
    assert_eq!(h.state("/sleep/{ms}"), Some(State::Open));
}

/// A timeout beyond what the clock can hold is no deadline, not a panic.
#[tokio::test]
async fn an_unbounded_call_timeout_is_no_deadline() {
    let layer = builder().call_timeout(Duration::MAX).build().unwrap();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    assert_eq!(get_status(&c, &format!("{base}/sleep/1")).await, 200);
    assert_eq!(get_status(&c, &format!("{base}/status/200")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn fallback_answers_while_open() {
    let layer = builder()
        .fallback_with(|open| {
            http::Response::new(Bytes::from(format!(
                "{} back in {}s",
                open.key(),
                open.retry_after().as_secs()
            )))
        })
        .build()
        .unwrap();
    let h = layer.handle();
    let base = app(layer, Flaky::new()).await;
    let c = client();
    h.force_open("/flaky");
    let res = c.get(format!("{base}/flaky")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-rejected-by"], "breaker");
    assert_eq!(res.text().await.unwrap(), "/flaky back in 10s");
}

#[test]
fn bad_configuration_names_the_field() {
    let field = |b: tower_perf::breaker::CircuitBreakerBuilder| b.build().unwrap_err().field();
    assert_eq!(field(builder().count_window(0)), "count_window");
    assert_eq!(field(builder().time_window(0)), "time_window");
    assert_eq!(field(builder().minimum_calls(11)), "minimum_calls");
    assert_eq!(field(builder().failure_rate(0.0)), "failure_rate");
    assert_eq!(
        field(builder().slow_calls(Duration::ZERO, 0.5)),
        "slow_calls"
    );
    assert_eq!(field(builder().half_open_calls(0)), "half_open_calls");
    assert_eq!(
        field(builder().open_wait(Duration::from_secs(10), Duration::from_secs(1))),
        "open_wait"
    );
    assert_eq!(field(builder().jitter(1.5)), "jitter");
    assert_eq!(
        field(builder().call_timeout(Duration::ZERO)),
        "call_timeout"
    );
    assert_eq!(field(builder().max_breakers(0)), "max_breakers");
}
