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
use axum::Extension;
use axum::Router;
use common::demo::{eventually, start_demo};
use common::{client, serve, serve_with_peer};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;
use tower_http::request_id::{MakeRequestUuid, SetRequestIdLayer};
use tower_perf::console::{is_admin, AdminAuthLayer, Console};
use tower_perf::stack::{PerfConfig, PerfHandles, PerfStack};
use tower_perf::Timings;

const TOKEN: &str = "s3cret-token";

struct App {
    base: String,
    console: Console,
    handles: PerfHandles,
    router: Router,
}

/// Routes under `/api/` (rate-limited: 1 per second, burst 3; `/api/slow` takes 25 ms, past its
/// 10 ms slow threshold, and records a `db` phase) and `/admin/`, every layer of the stack with
/// administrators exempt from the rate limit, request ids outside it, the console beside it, and
/// `auth` around everything: the layout of the demo.
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
        .route(
            "/api/slow",
            get(|timings: Option<Extension<Timings>>| async move {
                if let Some(Extension(t)) = timings {
                    t.record("db", Duration::from_millis(20));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
                "slow"
            }),
        )
        .route("/admin/stats", get(|| async { "stats" }));
    let config: PerfConfig = serde_json::from_value(json!({
        "rate_limit": { "per_second": 1, "burst": 3, "path_prefixes": ["/api/"] },
        "slow": { "route_threshold_ms": { "/api/slow": 10 } }
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
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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

/// [`start`] with the token, one snapshot per second.
async fn with_token() -> App {
    start(
        AdminAuthLayer::token(TOKEN).unwrap(),
        Duration::from_secs(1),
        true,
    )
    .await
}

/// [`start`] in loopback mode, one snapshot per second.
async fn local() -> App {
    start(
        AdminAuthLayer::loopback_only(),
        Duration::from_secs(1),
        true,
    )
    .await
}

async fn status(req: reqwest::RequestBuilder) -> StatusCode {
    let status = req.send().await.expect("request").status();
    StatusCode::from_u16(status.as_u16()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn admin_routes_need_the_token() {
    let app = with_token().await;
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
    let app = with_token().await;
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
    let app = local().await;
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
    let app = local().await;
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

    // A viewer after the idle spell is sent a fresh snapshot, not the one left from before.
    let r = c
        .get(format!("{}/admin/console/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read_events(r, 1).await[0].0, idle + 1);
}

/// The `id` of the next `snapshot` event of `body` (an event stream read without a socket).
async fn next_seq<B>(body: &mut B) -> u64
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt as _;
    loop {
        let frame = body.frame().await.expect("stream open").expect("frame");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let text = std::str::from_utf8(&data).unwrap();
        if let Some(rest) = text.strip_prefix("event: snapshot\nid: ") {
            return rest.split('\n').next().unwrap().parse().unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_viewer_that_stops_reading_holds_only_the_latest_frame() {
    let app = local().await;
    // Through the router without a socket (whose buffers would take frames in): what the
    // server holds for a viewer is exactly what its body has not yet yielded.
    let mut req = axum::http::Request::get("/admin/console/events")
        .body(axum::body::Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:4000".parse::<SocketAddr>().unwrap()));
    let response = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_seq(&mut body).await;

    // The page is left open, unread, for a minute: the feed goes on computing ... (half an
    // interval past a tick, so that none is due while the figures are read)
    tokio::time::sleep(Duration::from_millis(60_500)).await;
    let computed = app.console.snapshots_computed();
    assert!(computed >= first + 59, "{computed} after {first}");
    // ... and the viewer gets the latest frame next, not the 59 it missed, then the one after.
    assert_eq!(next_seq(&mut body).await, computed);
    assert_eq!(next_seq(&mut body).await, computed + 1);
}

// ------------------------------------------------------------------------------------------------
// In a real browser: headless Chromium (Debian `chromium`; `scripts/test.sh` installs it).
// ------------------------------------------------------------------------------------------------

/// Longest a Chromium run may take before it is killed and the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

/// The Chromium binary, if one is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|bin| {
            std::process::Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Loads `url` in headless Chromium, lets the page run (its own `frames=N` parameter closes
/// the stream, so the browser's virtual time can run out), and returns the DOM it ends with.
/// `extra` adds flags (a screenshot). The run is killed after [`BROWSER_DEADLINE`].
async fn browse(bin: &str, url: &str, extra: &[String]) -> Result<String, String> {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile =
        std::env::temp_dir().join(format!("tower-perf-console-{}-{n}", std::process::id()));
    // A fresh profile each run (a leftover of a recycled process id is dropped).
    let _ = std::fs::remove_dir_all(&profile);
    let child = tokio::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1400,1250",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=30000")
        .args(extra)
        .args(extra.is_empty().then_some("--dump-dom"))
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))?;
    let output = tokio::time::timeout(BROWSER_DEADLINE, child.wait_with_output()).await;
    let _ = std::fs::remove_dir_all(&profile);
    let output = output
        .map_err(|_| format!("{bin} did not finish within {BROWSER_DEADLINE:?} (killed)"))?
        .map_err(|e| format!("{bin}: {e}"))?;
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    if extra.is_empty() && !dom.contains("<html") {
        return Err(format!(
            "{bin} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(dom)
}

/// The `data-k` / `data-v` pairs of the page, and the `body`'s `data-*` attributes.
fn figures(dom: &str) -> BTreeMap<String, String> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    let mut map = BTreeMap::new();
    // The script ends its run at the first error: report it before any figure.
    if let Some(errors) = dom.split("data-k=\"js-errors\" data-v=\"").nth(1) {
        panic!(
            "script errors on the page: {}",
            unescape(errors.split('"').next().unwrap_or(""))
        );
    }
    for part in dom.split("data-k=\"").skip(1) {
        let Some((key, rest)) = part.split_once('"') else {
            continue;
        };
        let Some(value) = rest
            .strip_prefix(" data-v=\"")
            .and_then(|r| r.split_once('"'))
        else {
            continue;
        };
        map.insert(unescape(key), unescape(value.0));
    }
    let body = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split_once('>'))
        .map_or("", |b| b.0);
    for attr in ["frames", "errors", "done"] {
        let needle = format!("data-{attr}=\"");
        if let Some(v) = body.split(&needle).nth(1).and_then(|v| v.split_once('"')) {
            map.insert(format!("body.{attr}"), v.0.to_owned());
        }
    }
    map
}

/// A figure of the page as a number, and a check that it equals a snapshot's value.
fn numbers(page: &BTreeMap<String, String>) -> impl Fn(&str, &Value) + '_ {
    move |key: &str, want: &Value| {
        let v = page
            .get(key)
            .unwrap_or_else(|| panic!("page has no {key}: {page:#?}"));
        let got: f64 = v.parse().unwrap_or_else(|_| panic!("{key} = {v:?}"));
        let want = want
            .as_f64()
            .unwrap_or_else(|| panic!("snapshot {key}: {want}"));
        assert_eq!(got, want, "{key}");
    }
}

/// Asserts that the page's counters (figures that only change with traffic: totals per route,
/// cache outcomes, rate-limit decisions, breaker states, the slow log) are the server's
/// snapshot's, and that the page ran without a script error.
fn assert_counters_match(page: &BTreeMap<String, String>, snap: &Value) {
    let same = numbers(page);
    for r in snap["latency"]["routes"].as_array().unwrap() {
        let k = format!("route:{}:", r["route"].as_str().unwrap());
        same(&format!("{k}total"), &r["total"]["count"]);
        same(&format!("{k}total_errors"), &r["total"]["errors"]);
    }
    let cache = &snap["cache"];
    for field in ["hits", "misses", "stale"] {
        same(&format!("cache.memory.{field}"), &cache[field]);
    }
    for field in ["allowed", "limited", "bypassed"] {
        same(&format!("rate_limit.{field}"), &snap["rate_limit"][field]);
    }
    for (i, e) in snap["slow_requests"].as_array().unwrap().iter().enumerate() {
        let k = format!("slow:{i}:");
        assert_eq!(page[&format!("{k}path")], e["path"].as_str().unwrap());
        assert_eq!(
            page[&format!("{k}request_id")],
            e["request_id"].as_str().unwrap()
        );
        same(&format!("{k}duration"), &e["duration_ms"]);
    }
    for b in snap["breakers"]["breakers"].as_array().unwrap() {
        let k = format!("breaker:{}:", b["key"].as_str().unwrap());
        assert_eq!(page[&format!("{k}state")], b["state"].as_str().unwrap());
    }
    assert_eq!(page["body.errors"], "0", "script errors on the page");
}

/// Asserts that what the page shows is what the server's snapshot says: its counters, and the
/// figures that also move with time (window percentiles, cache size, queue, failure rates).
fn assert_page_matches(page: &BTreeMap<String, String>, snap: &Value) {
    assert_counters_match(page, snap);
    let same = numbers(page);
    for r in snap["latency"]["routes"].as_array().unwrap() {
        let k = format!("route:{}:", r["route"].as_str().unwrap());
        for (field, value) in [
            ("count", &r["window"]["count"]),
            ("errors", &r["window"]["errors"]),
            ("p50", &r["window"]["p50_ms"]),
            ("p95", &r["window"]["p95_ms"]),
            ("p99", &r["window"]["p99_ms"]),
        ] {
            same(&format!("{k}{field}"), value);
        }
    }
    let cache = &snap["cache"];
    same("cache.memory.hit_ratio", &cache["hit_ratio"]);
    for field in ["entries", "bytes", "evicted_size"] {
        same(&format!("cache.{field}"), &cache[field]);
    }
    for field in ["limit", "in_flight", "queued"] {
        same(&format!("queue.{field}"), &snap["queue"][field]);
    }
    for b in snap["breakers"]["breakers"].as_array().unwrap() {
        let k = format!("breaker:{}:", b["key"].as_str().unwrap());
        same(&format!("{k}failure_rate"), &b["failure_rate"]);
    }
    assert_eq!(
        page["compression.tier"],
        snap["compression"]["tier"].as_str().unwrap()
    );
}

/// The Chromium binary for a browser test, or `None` when `TOWER_PERF_SKIP_BROWSER` asks to
/// skip it; fails when there is none or it cannot start (a missing browser is a failure, not a
/// pass).
async fn browser() -> Option<&'static str> {
    if std::env::var_os("TOWER_PERF_SKIP_BROWSER").is_some() {
        eprintln!("SKIPPED: TOWER_PERF_SKIP_BROWSER is set");
        return None;
    }
    let bin = chromium().expect(
        "no chromium: scripts/test.sh installs Debian's `chromium` \
         (or set TOWER_PERF_SKIP_BROWSER=1 to skip this test)",
    );
    browse(bin, "about:blank", &[])
        .await
        .unwrap_or_else(|e| panic!("{bin} cannot start here (--headless --no-sandbox): {e}"));
    Some(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_live_figures_in_chromium() {
    let Some(bin) = browser().await else {
        return;
    };
    let app = start(
        AdminAuthLayer::loopback_only(),
        Duration::from_millis(200),
        true,
    )
    .await;
    let c = client();
    let get = |path: &str| c.get(format!("{}{path}", app.base)).send();

    // Traffic: a miss, a hit, an error; then the quota (burst 3) runs out.
    for path in [
        "/api/items",
        "/api/items",
        "/api/fail",
        "/api/items",
        "/api/items",
    ] {
        get(path).await.unwrap();
    }
    app.handles.breaker.force_open("/api/fail");
    let console = format!("{}/admin/console", app.base);
    let snapshot = || async {
        let r = c.get(format!("{console}/snapshot")).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    };

    let dom = browse(bin, &format!("{console}?frames=3"), &[])
        .await
        .unwrap();
    let first = figures(&dom);
    assert!(first.contains_key("body.frames"), "{dom}");
    let snap = snapshot().await;
    assert!(
        first["body.frames"].parse::<u32>().unwrap() >= 3,
        "{first:#?}"
    );
    assert_eq!(first["body.done"], "true");
    assert_page_matches(&first, &snap);
    assert_eq!(first["breaker:/api/fail:state"], "open");
    assert_eq!(first["cache.memory.hits"], "1");
    // Four requests, the limited one included (the tracker is outermost).
    assert_eq!(first["route:/api/items:total"], "4");
    assert!(first["rate_limit.limited"].parse::<u64>().unwrap() >= 1);

    // More traffic, a slow request among it: the page follows. And a purge from the page's
    // form reaches the cache.
    app.handles.rate_limit.clear();
    for path in ["/api/items", "/api/items", "/api/slow"] {
        assert_eq!(get(path).await.unwrap().status(), 200, "{path}");
    }
    let url = format!("{console}?frames=2&purge-tag=items");
    let second = figures(&browse(bin, &url, &[]).await.unwrap());
    assert_page_matches(&second, &snapshot().await);
    assert_eq!(second["cache.memory.hits"], "3");
    assert_eq!(second["route:/api/items:total"], "6");
    assert_eq!(second["route:/api/slow:slow"], "1");
    assert_eq!(second["slow:0:path"], "/api/slow");
    assert!(
        second["slow:0:phases"].contains("db 20.0"),
        "{}",
        second["slow:0:phases"]
    );
    assert_eq!(second["slow:0:request_id"].len(), 36, "a UUID");
    assert_eq!(
        second.get("control:purge").map(String::as_str),
        Some("200"),
        "the page's purge form answered: {second:#?}"
    );
    let misses = app.handles.cache.snapshot().misses;
    app.handles.rate_limit.clear();
    let after = get("/api/items").await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(
        app.handles.cache.snapshot().misses,
        misses + 1,
        "purged from the page"
    );

    // A picture for people to look at (not committed), in the target directory wherever it
    // is (`CARGO_TARGET_DIR` moves it).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let flag = format!("--screenshot={}", shot.display());
    browse(bin, &format!("{console}?frames=10"), &[flag])
        .await
        .unwrap();
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

/// The console of the demo server itself (the real binary, in its own process, as users run
/// it), in Chromium: the figures on the page are the demo's snapshot, they follow the traffic
/// driven at the demo, and the purge form reaches the demo's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_console_follows_its_traffic_in_chromium() {
    let Some(bin) = browser().await else {
        return;
    };
    let c = client();
    let (_demo, base) = start_demo(&c, &[]).await;
    let console = format!("{base}/admin/console");
    let snapshot = || async {
        let r = c.get(format!("{console}/snapshot")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the console's snapshot from loopback");
        r.json::<Value>().await.unwrap()
    };
    // The start-up warm-up (five list pages and the dashboard: six misses, stored) is over.
    let warmed = eventually(Duration::from_secs(30), async || {
        (snapshot().await["cache"]["misses"].as_u64()? >= 6).then_some(())
    })
    .await;
    assert!(warmed.is_some(), "the demo's warm-up did not finish");

    // Page 7 (not warmed): a miss, then a hit; the dashboard past the cache: 50 ms, slow.
    let page7 = format!("{base}/api/v1/properties?page=7");
    for _ in 0..2 {
        assert_eq!(c.get(&page7).send().await.unwrap().status(), 200);
    }
    let dashboard = c
        .get(format!("{base}/api/v1/dashboard"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);

    let first = figures(
        &browse(bin, &format!("{console}?frames=2"), &[])
            .await
            .unwrap(),
    );
    assert_counters_match(&first, &snapshot().await);
    assert_eq!(first["slow:0:path"], "/api/v1/dashboard", "{first:#?}");
    let route = "route:/api/v1/properties:total";
    let before: u64 = first[route].parse().unwrap();
    let hits: u64 = first["cache.memory.hits"].parse().unwrap();
    assert!(hits >= 1, "{first:#?}");

    // Three more hits: the page follows. Its purge form purges the `properties` tag.
    for _ in 0..3 {
        assert_eq!(c.get(&page7).send().await.unwrap().status(), 200);
    }
    let url = format!("{console}?frames=2&purge-tag=properties");
    let second = figures(&browse(bin, &url, &[]).await.unwrap());
    assert_counters_match(&second, &snapshot().await);
    assert_eq!(second[route].parse::<u64>().unwrap(), before + 3);
    assert_eq!(
        second["cache.memory.hits"].parse::<u64>().unwrap(),
        hits + 3
    );
    assert_eq!(
        second.get("control:purge").map(String::as_str),
        Some("200"),
        "the page's purge form answered: {second:#?}"
    );
    let misses = snapshot().await["cache"]["misses"].as_u64().unwrap();
    let after = c.get(&page7).send().await.unwrap();
    assert_eq!(after.status(), 200);
    let status = after.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(!status.contains("hit"), "purged from the page: {status}");
    assert_eq!(
        snapshot().await["cache"]["misses"].as_u64().unwrap(),
        misses + 1,
        "purged from the page"
    );
}

/// The demo's admin security and health checks, on the real binary: with `ADMIN_TOKEN` set,
/// every admin route (the console, its controls, the stats, the purge and the fault switch)
/// answers `401` with `WWW-Authenticate` without the token and `403` with a wrong one, while
/// `/health` and `/ready` answer anyone; `/health` reports an open breaker and the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_guards_its_admin_routes_and_reports_its_health() {
    let c = client();
    let (_demo, base) = start_demo(&c, &[("ADMIN_TOKEN", TOKEN)]).await;
    let admin = [
        c.get(format!("{base}/admin/console")),
        c.get(format!("{base}/admin/console/snapshot")),
        c.get(format!("{base}/admin/console/events")),
        c.get(format!("{base}/admin/stats")),
        c.post(format!("{base}/admin/cache/purge"))
            .json(&json!({ "tags": ["properties"] })),
        c.put(format!("{base}/admin/payments/fault"))
            .json(&json!({ "failure_rate": 1.0 })),
    ];
    for req in admin {
        let anonymous = req.try_clone().unwrap().send().await.unwrap();
        let what = format!("{} {}", anonymous.url().path(), anonymous.status());
        assert_eq!(anonymous.status(), 401, "{what}");
        let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        let wrong = req.try_clone().unwrap().bearer_auth("not-it").send().await;
        assert_eq!(wrong.unwrap().status(), 403, "{what}");
    }

    let health = || async {
        let r = c.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), 200, "/health answers anyone");
        r.json::<Value>().await.unwrap()
    };
    let h = health().await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["breakers"]["open"], json!([]), "{h}");
    assert!(h["queue"]["limit"].as_u64().unwrap() >= 1, "{h}");
    assert_eq!(h["queue"]["saturated"], false, "{h}");
    assert!(h["redis"].is_null(), "no REDIS_URL: {h}");
    let ready = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], true);

    // With the token, the payment provider fails and the route's breaker opens.
    let fault = c
        .put(format!("{base}/admin/payments/fault"))
        .bearer_auth(TOKEN)
        .json(&json!({ "failure_rate": 1.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), 200);
    let mut statuses = Vec::new();
    while statuses.last() != Some(&503) && statuses.len() < 60 {
        let r = c.get(format!("{base}/api/v1/payments/2/status")).send();
        statuses.push(r.await.unwrap().status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&503), "breaker open: {statuses:?}");
    let h = health().await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(
        h["breakers"]["open"],
        json!(["/api/v1/payments/{id}/status"]),
        "{h}"
    );
}
