//! The console and the admin authentication, through a real server on loopback and a real
//! client: `401` / `403` / token / Basic / loopback-only, the rate limiter's bypass for
//! administrators only (no header a client sends can earn it), the console's controls, and the
//! event stream computed once per interval for any number of viewers (paused clock).

#![cfg(feature = "console")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use common::{client, serve, serve_with_peer};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;
use tower_perf::console::{is_admin, AdminAuthLayer, Console};
use tower_perf::stack::{PerfConfig, PerfHandles, PerfStack};

const TOKEN: &str = "s3cret-token";

struct App {
    base: String,
    console: Console,
    handles: PerfHandles,
    router: Router,
}

/// Routes under `/api/` (rate-limited: 1 per second, burst 3) and `/admin/`, every layer of
/// the stack with administrators exempt from the rate limit, the console beside it, and `auth`
/// around everything: the layout of the demo.
async fn start(auth: AdminAuthLayer, interval: Duration, peer: bool) -> App {
    let routes = Router::new()
        .route(
            "/api/items",
            get(|| async {
                (
                    [("cache-control", "max-age=60"), ("cache-tag", "items")],
                    "items",
                )
            }),
        )
        .route(
            "/api/fail",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/admin/stats", get(|| async { "stats" }));
    let config: PerfConfig = serde_json::from_value(json!({
        "rate_limit": { "per_second": 1, "burst": 3, "path_prefixes": ["/api/"] }
    }))
    .unwrap();
    let perf = PerfStack::builder()
        .config(config)
        .rate_limit_bypass_with(is_admin)
        .build()
        .unwrap();
    let handles = perf.handles();
    let console = Console::with_interval(handles.clone(), interval);
    let router = routes
        .layer(perf)
        .nest("/admin/console", console.router())
        .layer(auth);
    let addr = if peer {
        serve_with_peer(router.clone()).await
    } else {
        serve(router.clone()).await
    };
    App {
        base: format!("http://{addr}"),
        console,
        handles,
        router,
    }
}

async fn status(req: reqwest::RequestBuilder) -> StatusCode {
    let status = req.send().await.expect("request").status();
    StatusCode::from_u16(status.as_u16()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn admin_routes_need_the_token() {
    let app = start(
        AdminAuthLayer::token(TOKEN).unwrap(),
        Duration::from_secs(1),
        true,
    )
    .await;
    let c = client();
    let url = format!("{}/admin/stats", app.base);

    let response = c.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert!(challenge.contains("Basic realm="), "{challenge}");

    assert_eq!(status(c.get(&url).bearer_auth("wrong")).await, 403);
    assert_eq!(status(c.get(&url).bearer_auth(&TOKEN[..5])).await, 403);
    assert_eq!(
        status(c.get(&url).bearer_auth(format!("{TOKEN}x"))).await,
        403
    );
    assert_eq!(
        status(c.get(&url).header("authorization", TOKEN)).await,
        403
    );
    assert_eq!(status(c.get(&url).bearer_auth(TOKEN)).await, 200);
    // A browser sends the token as the Basic password.
    assert_eq!(
        status(c.get(&url).basic_auth("admin", Some(TOKEN))).await,
        200
    );
    assert_eq!(
        status(c.get(&url).basic_auth("admin", Some("no"))).await,
        403
    );

    // The console is an admin route like the others; its page and stream answer the token.
    let console = format!("{}/admin/console", app.base);
    assert_eq!(status(c.get(&console)).await, 401);
    let page = c.get(&console).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<script>") && html.contains("EventSource"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing fetched from elsewhere"
    );
    assert_eq!(
        status(c.get(format!("{console}/snapshot")).bearer_auth("x")).await,
        403
    );
    assert_eq!(
        status(c.get(format!("{console}/snapshot")).bearer_auth(TOKEN)).await,
        200
    );

    // Paths that do not route to an admin handler cannot reach one by spelling.
    for path in ["/%61dmin/stats", "/ADMIN/stats", "//admin/stats"] {
        let s = status(c.get(format!("{}{path}", app.base))).await;
        assert_ne!(s, 200, "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn only_authenticated_admins_bypass_the_rate_limit() {
    let app = start(
        AdminAuthLayer::token(TOKEN).unwrap(),
        Duration::from_secs(1),
        true,
    )
    .await;
    let c = client();
    let url = format!("{}/api/items", app.base);

    // Burst of 3, then 429: the clock is paused, so nothing refills.
    for _ in 0..3 {
        assert_eq!(status(c.get(&url)).await, 200);
    }
    assert_eq!(status(c.get(&url)).await, 429);

    // Nothing a client can send without the token earns the bypass.
    let spoofs = [
        ("authorization", "Bearer wrong"),
        ("authorization", "Basic YWRtaW46d3Jvbmc="),
        ("x-admin", "true"),
        ("x-forwarded-for", "127.0.0.1"),
        ("forwarded", "for=127.0.0.1"),
    ];
    for (name, value) in spoofs {
        assert_eq!(
            status(c.get(&url).header(name, value)).await,
            429,
            "{name}: {value}"
        );
    }
    let limited = app.handles.rate_limit.snapshot().limited;

    // The administrator's requests go through, uncounted.
    for _ in 0..10 {
        assert_eq!(status(c.get(&url).bearer_auth(TOKEN)).await, 200);
    }
    let snap = app.handles.rate_limit.snapshot();
    assert_eq!(snap.limited, limited);
    assert!(snap.bypassed >= 10, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn loopback_only_without_a_token() {
    let app = start(
        AdminAuthLayer::loopback_only(),
        Duration::from_secs(1),
        true,
    )
    .await;
    let c = client();
    let url = format!("{}/admin/stats", app.base);
    assert_eq!(status(c.get(&url)).await, 200);
    // Through a proxy on this host, the peer is loopback but the client is not.
    assert_eq!(
        status(c.get(&url).header("x-forwarded-for", "192.0.2.9")).await,
        403
    );
    assert_eq!(
        status(c.get(&url).header("forwarded", "for=192.0.2.9")).await,
        403
    );

    // Local API clients are not administrators: still rate-limited.
    let api = format!("{}/api/items", app.base);
    let statuses: Vec<u16> = futures_util::future::join_all((0..5).map(|_| c.get(&api).send()))
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        2,
        "{statuses:?}"
    );

    // Another host (the same router, asked with another peer address).
    let request = |peer: &str| {
        let mut req = axum::http::Request::get("/admin/stats")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    let remote = app
        .router
        .clone()
        .oneshot(request("192.0.2.1:4000"))
        .await
        .unwrap();
    assert_eq!(remote.status(), 403);
    let local = app
        .router
        .clone()
        .oneshot(request("127.0.0.1:4000"))
        .await
        .unwrap();
    assert_eq!(local.status(), 200);

    // Served without the peer address, nobody is local: refused, not let in.
    let blind = start(
        AdminAuthLayer::loopback_only(),
        Duration::from_secs(1),
        false,
    )
    .await;
    assert_eq!(
        status(c.get(format!("{}/admin/stats", blind.base))).await,
        403
    );
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let response = c.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(start_paused = true)]
async fn console_controls_purge_break_and_reset() {
    let app = start(
        AdminAuthLayer::loopback_only(),
        Duration::from_secs(1),
        true,
    )
    .await;
    let c = client();
    let console = format!("{}/admin/console", app.base);
    let items = format!("{}/api/items", app.base);

    // A stored entry, then a purge by tag from the console: the next request is a miss.
    assert_eq!(status(c.get(&items)).await, 200);
    assert_eq!(app.handles.cache.snapshot().entries, 1);
    let (s, body) = post(&c, &format!("{console}/purge"), json!({ "tag": "items" })).await;
    assert_eq!(s, 200, "{body}");
    let misses = app.handles.cache.snapshot().misses;
    assert_eq!(status(c.get(&items)).await, 200);
    assert_eq!(app.handles.cache.snapshot().misses, misses + 1);
    let (s, _) = post(
        &c,
        &format!("{console}/purge"),
        json!({ "prefix": "/api/" }),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = post(&c, &format!("{console}/purge"), json!({ "prefix": "api" })).await;
    assert_eq!(s, 400);
    let (s, _) = post(
        &c,
        &format!("{console}/purge"),
        json!({ "tag": "a", "prefix": "/" }),
    )
    .await;
    assert_eq!(s, 400);

    // Force the breaker of a route open, then closed (with a fresh quota: burst of 3).
    app.handles.rate_limit.clear();
    let fail = format!("{}/api/fail", app.base);
    assert_eq!(status(c.get(&fail)).await, 500);
    let breaker = format!("{console}/breaker");
    let (s, body) = post(
        &c,
        &breaker,
        json!({ "key": "/api/fail", "action": "open" }),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["breaker"]["state"], "open");
    assert_eq!(status(c.get(&fail)).await, 503);
    let (s, body) = post(
        &c,
        &breaker,
        json!({ "key": "/api/fail", "action": "close" }),
    )
    .await;
    assert_eq!(
        (s, body["breaker"]["state"].clone()),
        (200, json!("closed"))
    );
    let (s, _) = post(&c, &breaker, json!({ "key": "/nope", "action": "open" })).await;
    assert_eq!(s, 404);
    assert!(
        app.handles.breaker.state("/nope").is_none(),
        "no breaker made for a typo"
    );

    // Exhaust this client's quota, then reset it from the console.
    while status(c.get(&items)).await != 429 {}
    let reset = format!("{console}/rate-limit/reset");
    let (s, body) = post(&c, &reset, json!({ "client": "127.0.0.1" })).await;
    assert_eq!((s, body["forgotten"].clone()), (200, json!(true)));
    assert_eq!(status(c.get(&items)).await, 200);
    let (s, _) = post(&c, &reset, json!({ "client": "not an ip" })).await;
    assert_eq!(s, 400);
}

#[tokio::test(start_paused = true)]
async fn console_controls_refuse_without_the_auth_layer() {
    let perf = PerfStack::builder().build().unwrap();
    let console = Console::new(perf.handles());
    let addr = serve_with_peer(Router::new().nest("/console", console.router())).await;
    let c = client();
    let (s, _) = post(
        &c,
        &format!("http://{addr}/console/purge"),
        json!({ "tag": "x" }),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post(
        &c,
        &format!("http://{addr}/console/breaker"),
        json!({ "key": "/", "action": "open" }),
    )
    .await;
    assert_eq!(s, 403);
    // Viewing needs nothing from the console itself (the auth layer decides that).
    assert_eq!(
        status(c.get(format!("http://{addr}/console/snapshot"))).await,
        200
    );
}

/// Reads SSE frames from `stream` until `n` `snapshot` events came; returns `(seq, data)`.
async fn read_events(response: reqwest::Response, n: usize) -> Vec<(u64, String)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = stream.next().await.expect("stream open").expect("chunk");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if !frame.starts_with("event: snapshot\n") {
                continue;
            }
            let mut lines = frame.lines().skip(1);
            let seq = lines
                .next()
                .unwrap()
                .strip_prefix("id: ")
                .unwrap()
                .parse()
                .unwrap();
            let data = lines
                .next()
                .unwrap()
                .strip_prefix("data: ")
                .unwrap()
                .to_owned();
            events.push((seq, data));
        }
    }
    events
}

#[tokio::test(start_paused = true)]
async fn the_stream_is_computed_once_per_interval_for_all_viewers() {
    let interval = Duration::from_secs(1);
    let app = start(AdminAuthLayer::loopback_only(), interval, true).await;
    let c = client();
    let start = tokio::time::Instant::now();
    assert_eq!(
        app.console.snapshots_computed(),
        0,
        "nothing computed while nobody watches"
    );

    const VIEWERS: usize = 8;
    const EVENTS: usize = 3;
    let mut responses = Vec::new();
    for _ in 0..VIEWERS {
        let r = c
            .get(format!("{}/admin/console/events", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        responses.push(r);
    }
    let all =
        futures_util::future::join_all(responses.into_iter().map(|r| read_events(r, EVENTS))).await;

    let computed = app.console.snapshots_computed();
    let ticks = start.elapsed().as_millis() / interval.as_millis() + 1;
    assert!(
        computed as u128 <= ticks,
        "{computed} snapshots in {ticks} intervals"
    );
    assert!(computed >= EVENTS as u64);
    assert!((computed as usize) < VIEWERS * EVENTS, "not one per viewer");
    // Each seq is one computation: every viewer that got it got the same bytes.
    let mut by_seq: BTreeMap<u64, &str> = BTreeMap::new();
    for (seq, data) in all.iter().flatten() {
        assert!(*seq >= 1 && *seq <= computed);
        let first = *by_seq.entry(*seq).or_insert(data.as_str());
        assert_eq!(first, data.as_str(), "seq {seq}");
        let snapshot: Value = serde_json::from_str(data).unwrap();
        assert_eq!(snapshot["seq"], *seq);
        assert_eq!(snapshot["interval_ms"], 1000);
    }
    assert!(all
        .iter()
        .all(|events| events.windows(2).all(|w| w[0].0 < w[1].0)));

    // Viewers gone: the feed stops computing.
    drop(all);
    for _ in 0..1000 {
        if app.console.viewers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(app.console.viewers(), 0);
    let idle = app.console.snapshots_computed();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(app.console.snapshots_computed(), idle);
}
