//! `SlowRequestLayer` against a real axum server on loopback, with a real HTTP client.
//!
//! Latencies are driven by `tokio::time::sleep` under a paused clock, so every duration the layer
//! measures is exactly the virtual time the handler slept: the figures can be compared with exact
//! values, and nothing depends on how fast this machine is.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::{Extension, Router};
use common::{client, get_text, serve, settle};
use futures_util::StreamExt as _;
use tower_perf::slow::{Outcome, SlowRequestLayer, UNMATCHED_ROUTE};
use tower_perf::Timings;

async fn sleep_ms(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "done"
}

/// A deterministic spread of latencies with a long tail: mostly 5-60 ms, some up to ~2 s.
fn latencies(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 100 {
                0..=89 => 5 + x % 56,
                90..=98 => 100 + x % 400,
                _ => 1000 + x % 1000,
            }
        })
        .collect()
}

/// Nearest-rank quantile of sorted values.
fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn assert_close(what: &str, got: Duration, exact_ms: u64) {
    let exact = Duration::from_millis(exact_ms);
    let diff = got.abs_diff(exact);
    // Default precision: 2 significant digits, reported at the middle of a bucket.
    assert!(
        diff <= exact / 100 + Duration::from_micros(1),
        "{what}: got {got:?}, exact {exact:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn percentiles_agree_with_exact_sorted_latencies() {
    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_secs(10))
        .build()
        .unwrap();
    let stats = tracker.handle();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();

    let lat = latencies(400);
    for ms in &lat {
        let res = client
            .get(format!("http://{addr}/sleep/{ms}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "done");
    }

    let mut sorted = lat.clone();
    sorted.sort_unstable();
    let route = stats
        .route("/sleep/{ms}")
        .expect("route tracked by its template");
    for summary in [route.total, route.window] {
        assert_eq!(summary.count, 400);
        assert_eq!(summary.errors, 0);
        assert_eq!(summary.canceled, 0);
        assert_close("p50", summary.p50, exact_quantile(&sorted, 0.50));
        assert_close("p90", summary.p90, exact_quantile(&sorted, 0.90));
        assert_close("p95", summary.p95, exact_quantile(&sorted, 0.95));
        assert_close("p99", summary.p99, exact_quantile(&sorted, 0.99));
        assert_close("p99.9", summary.p999, exact_quantile(&sorted, 0.999));
        assert_eq!(summary.max, Duration::from_millis(*sorted.last().unwrap()));
        let mean_us = lat.iter().sum::<u64>() * 1000 / lat.len() as u64;
        assert_eq!(summary.mean, Duration::from_micros(mean_us));
    }
    // The raw paths never became routes.
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.routes.len(), 1, "{:?}", snapshot.routes);
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["routes"][0]["route"], "/sleep/{ms}");
    assert!(json["routes"][0]["total"]["p99_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test(start_paused = true)]
async fn window_moves_on_and_total_stays() {
    let tracker = SlowRequestLayer::builder()
        .window(Duration::from_secs(60), 6)
        .build()
        .unwrap();
    let stats = tracker.handle();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    for _ in 0..3 {
        get_text(&client, format!("http://{addr}/sleep/500")).await;
    }
    tokio::time::sleep(Duration::from_secs(70)).await;
    get_text(&client, format!("http://{addr}/sleep/20")).await;
    let route = stats.route("/sleep/{ms}").unwrap();
    assert_eq!(route.window.count, 1);
    assert_eq!(route.window.max, Duration::from_millis(20));
    assert_eq!(route.total.count, 4);
    assert_eq!(route.total.max, Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn slow_log_is_bounded_newest_first_and_complete() {
    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_millis(100))
        .slow_log_capacity(5)
        .build()
        .unwrap();
    let stats = tracker.handle();
    let app = Router::new()
        .route(
            "/work/{ms}",
            get(
                |Path(ms): Path<u64>, Extension(t): Extension<Timings>| async move {
                    t.record("db", Duration::from_millis(ms / 2));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "ok"
                },
            ),
        )
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    // 8 slow requests of distinct durations, and fast ones in between that must not be logged.
    for i in 0..8u64 {
        for ms in [101 + i, 5] {
            client
                .get(format!("http://{addr}/work/{ms}?token=secret"))
                .header("x-request-id", format!("req-{ms}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        }
    }
    let log = stats.slow_requests();
    assert_eq!(log.len(), 5);
    let durations: Vec<_> = log.iter().map(|e| e.duration.as_millis()).collect();
    assert_eq!(durations, [108, 107, 106, 105, 104], "newest first");
    let e = &log[0];
    assert_eq!(e.method, "GET");
    assert_eq!(e.route, "/work/{ms}");
    assert_eq!(e.path, "/work/108", "the query is dropped by default");
    assert_eq!(e.status, Some(200));
    assert_eq!(e.outcome, Outcome::Completed);
    assert_eq!(e.request_id.as_deref(), Some("req-108"));
    assert_eq!(e.head, Some(Duration::from_millis(108)));
    assert_eq!(e.phases.len(), 1);
    assert_eq!(e.phases[0].name(), "db");
    assert_eq!(e.phases[0].duration(), Duration::from_millis(54));
    let route = stats.route("/work/{ms}").unwrap();
    assert_eq!(route.total.slow, 8);
    assert_eq!(route.total.count, 16);
    let json = serde_json::to_value(&log[0]).unwrap();
    assert_eq!(json["duration_ms"], 108.0);
    assert_eq!(json["phases"][0]["name"], "db");
}

#[tokio::test(start_paused = true)]
async fn slow_log_keeps_the_query_when_asked_and_uses_route_thresholds() {
    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_secs(1))
        .route_threshold("/sleep/{ms}", Duration::from_millis(30))
        .log_query(true)
        .build()
        .unwrap();
    let stats = tracker.handle();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .route("/other/{ms}", get(sleep_ms))
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    for path in ["/sleep/40?page=2", "/other/40", "/sleep/20"] {
        get_text(&client, format!("http://{addr}{path}")).await;
    }
    let log = stats.slow_requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/sleep/40?page=2");
    assert_eq!(
        stats.route("/sleep/{ms}").unwrap().slow_threshold,
        Duration::from_millis(30)
    );
}

/// Parses `Server-Timing` strictly: `name;dur=<ms>` entries separated by `, `.
fn parse_server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(", ")
        .map(|entry| {
            let (name, dur) = entry.split_once(";dur=").expect("name;dur=ms");
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            );
            (
                name.to_owned(),
                dur.parse::<f64>().expect("duration is a number"),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn server_timing_is_well_formed() {
    let app = Router::new()
        .route(
            "/",
            get(|Extension(t): Extension<Timings>| async move {
                let g = t.start("db");
                tokio::time::sleep(Duration::from_millis(12)).await;
                drop(g);
                t.record("bad name", Duration::from_millis(1));
                tokio::time::sleep(Duration::from_millis(2)).await;
                "ok"
            }),
        )
        .layer(SlowRequestLayer::new());
    let addr = serve(app).await;
    let res = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    let values: Vec<_> = res.headers().get_all("server-timing").iter().collect();
    assert_eq!(values.len(), 1);
    let entries = parse_server_timing(values[0].to_str().unwrap());
    assert_eq!(
        entries,
        vec![("db".to_owned(), 12.0), ("total".to_owned(), 14.0)]
    );

    // Turned off: no header.
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        SlowRequestLayer::builder()
            .server_timing(false)
            .build()
            .unwrap(),
    );
    let addr = serve(app).await;
    let res = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("server-timing").is_none());
}

#[tokio::test(start_paused = true)]
async fn client_gone_while_handler_runs_is_canceled() {
    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_millis(100))
        .build()
        .unwrap();
    let stats = tracker.handle();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    let req = client.get(format!("http://{addr}/sleep/10000")).send();
    // The client gives up after 200 ms of virtual time and closes its connection.
    let timed_out = tokio::time::timeout(Duration::from_millis(200), req).await;
    assert!(timed_out.is_err());
    drop(client);
    let mut route = None;
    for _ in 0..100 {
        settle().await;
        route = stats.route("/sleep/{ms}");
        if route.as_ref().is_some_and(|r| r.total.count == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = route.expect("route recorded").total;
    assert_eq!((total.count, total.canceled, total.errors), (1, 1, 0));
    // Canceled requests stay out of the latency figures...
    assert_eq!(total.max, Duration::ZERO);
    // ...but are in the slow log, since the client waited past the threshold.
    let log = stats.slow_requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, Outcome::Canceled);
    assert_eq!(log[0].status, None);
    assert!(log[0].duration >= Duration::from_millis(200));
}

/// Responses served in full are never counted as canceled, even when hyper or axum drop the
/// body without reading it to its end: a `HEAD` request (no body is sent), and a stream with a
/// `Content-Length` that does not say it has ended after its last byte.
#[tokio::test(start_paused = true)]
async fn head_requests_and_streams_of_known_length_complete() {
    let tracker = SlowRequestLayer::new();
    let stats = tracker.handle();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .route(
            "/sized",
            get(|| async {
                let chunks = futures_util::stream::iter(["hello ", "world"])
                    .map(|s| Ok::<_, std::io::Error>(bytes::Bytes::from_static(s.as_bytes())))
                    // Never says it is over: ends only when polled past the last chunk.
                    .chain(futures_util::stream::pending());
                (
                    [(axum::http::header::CONTENT_LENGTH, "11")],
                    axum::body::Body::from_stream(chunks),
                )
            }),
        )
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    let res = client
        .head(format!("http://{addr}/sleep/5"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .get(format!("http://{addr}/sized"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "hello world");
    let mut got = (None, None);
    for _ in 0..100 {
        settle().await;
        got = (
            stats.route("/sleep/{ms}").map(|r| r.total),
            stats.route("/sized").map(|r| r.total),
        );
        if got.0.is_some_and(|t| t.count == 1) && got.1.is_some_and(|t| t.count == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (head, sized) = (
        got.0.expect("HEAD recorded"),
        got.1.expect("stream recorded"),
    );
    assert_eq!(
        (head.count, head.canceled, head.errors),
        (1, 0, 0),
        "{head:?}"
    );
    assert_eq!(
        (sized.count, sized.canceled, sized.errors),
        (1, 0, 0),
        "{sized:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn client_gone_mid_body_is_canceled() {
    let tracker = SlowRequestLayer::new();
    let stats = tracker.handle();
    let app = Router::new()
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0u64, |n| async move {
                    if n > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 * 1024])),
                        n + 1,
                    ))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    let mut res = client
        .get(format!("http://{addr}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(res);
    drop(client);
    let mut total = None;
    for _ in 0..200 {
        settle().await;
        total = stats.route("/stream").map(|r| r.total);
        if total.is_some_and(|t| t.count == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = total.expect("route recorded");
    assert_eq!((total.count, total.canceled), (1, 1), "{total:?}");
}

#[tokio::test(start_paused = true)]
async fn errors_and_unmatched_requests() {
    let tracker = SlowRequestLayer::new();
    let stats = tracker.handle();
    let app = Router::new()
        .route(
            "/fail",
            get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route("/ok", get(|| async { "ok" }))
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    for path in ["/fail", "/ok", "/nope/1", "/nope/2", "/nope/3"] {
        get_text(&client, format!("http://{addr}{path}")).await;
    }
    let snap = stats.snapshot();
    let fail = snap.route("/fail").unwrap();
    assert_eq!((fail.total.count, fail.total.errors), (1, 1));
    assert_eq!(snap.route("/ok").unwrap().total.errors, 0);
    // Unknown paths share one bounded bucket; they never become routes of their own.
    assert_eq!(snap.route(UNMATCHED_ROUTE).unwrap().total.count, 3);
    assert!(snap.routes.iter().all(|r| !r.route.starts_with("/nope")));
}

#[tokio::test(start_paused = true)]
async fn request_id_from_the_response_when_the_request_had_none() {
    use tower_http::request_id::{
        MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
    };

    #[derive(Clone, Default)]
    struct Counter(Arc<Mutex<u64>>);
    impl MakeRequestId for Counter {
        fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
            let mut n = self.0.lock().unwrap();
            *n += 1;
            Some(RequestId::new(format!("gen-{n}").parse().unwrap()))
        }
    }

    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_millis(1))
        .build()
        .unwrap();
    let stats = tracker.handle();
    // The tracker inside the request-id layers: it reads tower-http's `RequestId` extension.
    let inner = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .layer(tracker.clone())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(Counter::default()));
    let addr = serve(inner).await;
    let res = client()
        .get(format!("http://{addr}/sleep/5"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "gen-1");
    res.text().await.unwrap();
    assert_eq!(
        stats.slow_requests()[0].request_id.as_deref(),
        Some("gen-1")
    );

    // The tracker outside the request-id layers: it finds the id on the response.
    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_millis(1))
        .route_with(|_| Some("/all"))
        .build()
        .unwrap();
    let stats = tracker.handle();
    let app = tower::ServiceBuilder::new()
        .layer(tracker)
        .layer(SetRequestIdLayer::x_request_id(Counter::default()))
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(Router::new().route("/sleep/{ms}", get(sleep_ms)));
    // Served as a plain tower service: the outer router only hands every request to it.
    let addr = serve(Router::new().fallback_service(app)).await;
    get_text(&client(), format!("http://{addr}/sleep/5")).await;
    let log = stats.slow_requests();
    assert_eq!(
        log[0].route, "/all",
        "route_with names routes outside the router"
    );
    assert_eq!(log[0].request_id.as_deref(), Some("gen-1"));
}

/// Collects the WARN events of the tracker.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<HashMap<String, String>>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Visitor<'a>(&'a mut HashMap<String, String>);
        impl tracing::field::Visit for Visitor<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().to_owned(), format!("{value:?}"));
            }
        }
        if event.metadata().target() == "tower_perf::slow"
            && *event.metadata().level() == tracing::Level::WARN
        {
            let mut fields = HashMap::new();
            event.record(&mut Visitor(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn slow_request_events_are_rate_limited() {
    use tracing_subscriber::layer::SubscriberExt;
    let events = Events::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));

    let tracker = SlowRequestLayer::builder()
        .threshold(Duration::from_millis(1))
        .warn_per_second(3)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .layer(tracker);
    let addr = serve(app).await;
    let client = client();
    // A flood: 40 slow requests within one second.
    for _ in 0..40 {
        get_text(&client, format!("http://{addr}/sleep/2")).await;
    }
    assert_eq!(events.0.lock().unwrap().len(), 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    get_text(&client, format!("http://{addr}/sleep/2")).await;
    let events = events.0.lock().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["suppressed"], "37");
    assert_eq!(events[3]["route"], "/sleep/{ms}");
    assert_eq!(events[3]["message"], "slow request");
}

#[test]
fn bad_configuration_names_the_field() {
    let cases: Vec<(&str, tower_perf::ConfigError)> = vec![
        (
            "threshold",
            SlowRequestLayer::builder()
                .threshold(Duration::ZERO)
                .build()
                .unwrap_err(),
        ),
        (
            "route_threshold",
            SlowRequestLayer::builder()
                .route_threshold("/a", Duration::ZERO)
                .build()
                .unwrap_err(),
        ),
        (
            "window",
            SlowRequestLayer::builder()
                .window(Duration::from_secs(60), 0)
                .build()
                .unwrap_err(),
        ),
        (
            "window",
            SlowRequestLayer::builder()
                .window(Duration::from_micros(10), 6)
                .build()
                .unwrap_err(),
        ),
        (
            "precision",
            SlowRequestLayer::builder()
                .precision(6)
                .build()
                .unwrap_err(),
        ),
        (
            "max_routes",
            SlowRequestLayer::builder()
                .max_routes(0)
                .build()
                .unwrap_err(),
        ),
        (
            "slow_log_capacity",
            SlowRequestLayer::builder()
                .slow_log_capacity(10_000_000)
                .build()
                .unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field);
        assert!(
            err.to_string().starts_with(&format!("invalid `{field}`")),
            "{err}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn timings_extractor_with_and_without_the_layer() {
    async fn handler(timings: Timings, maybe: Option<Timings>) -> String {
        timings.record("db", Duration::from_millis(3));
        format!("layer={}", maybe.is_some())
    }
    let tracker = SlowRequestLayer::new();
    let with = Router::new().route("/", get(handler)).layer(tracker);
    let without = Router::new().route("/", get(handler));
    let (with, without) = (serve(with).await, serve(without).await);
    let client = client();

    let res = client.get(format!("http://{with}/")).send().await.unwrap();
    let st = res.headers()["server-timing"].to_str().unwrap().to_owned();
    assert!(st.starts_with("db;dur=3.000, total;dur="), "{st}");
    assert_eq!(res.text().await.unwrap(), "layer=true");

    // Without the layer the handler still runs; its phases go nowhere.
    let res = client
        .get(format!("http://{without}/"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("server-timing").is_none());
    assert_eq!(res.text().await.unwrap(), "layer=false");
}

#[tokio::test(start_paused = true)]
async fn snapshot_json_has_clean_millisecond_figures() {
    let tracker = SlowRequestLayer::new();
    let stats = tracker.handle();
    let app = Router::new()
        .route("/sleep/{ms}", get(sleep_ms))
        .layer(tracker);
    let addr = serve(app).await;
    get_text(&client(), format!("http://{addr}/sleep/45")).await;
    let json = serde_json::to_string(&stats.snapshot()).unwrap();
    assert!(json.contains("\"max_ms\":45.0"), "{json}");
    assert!(json.contains("\"window_ms\":60000.0"), "{json}");
}
