//! `ResponseCacheLayer` against a real axum server on loopback, with a real HTTP client.
//!
//! The layer runs inside the router (`Router::layer`), so it sees axum's `MatchedPath`. Every
//! test runs under a paused tokio clock: handler sleeps and entry ages follow virtual time, so
//! "61 seconds later" costs nothing and nothing depends on how fast this machine is. Origin calls
//! are counted in the handlers' state.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{client, serve, settle};
use futures_util::future::join_all;
use tower_perf::cache::ResponseCacheLayer;
use tower_perf::{Rejected, Route};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Counts the calls that reach a handler (the origin).
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    /// Counts one call; returns its number (1 for the first).
    fn inc(&self) -> usize {
        self.0.fetch_add(1, SeqCst) + 1
    }

    fn get(&self) -> usize {
        self.0.load(SeqCst)
    }
}

/// A response as the client saw it.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// The one `Cache-Status` member of the response, parsed.
    fn cs(&self) -> CacheStatus {
        let lines: Vec<&str> = self
            .headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().expect("ascii cache-status"))
            .collect();
        assert_eq!(lines.len(), 1, "one Cache-Status field line: {lines:?}");
        CacheStatus::parse(lines[0])
    }
}

/// A `Cache-Status` member (RFC 9211): the cache's name and its parameters.
#[derive(Debug)]
struct CacheStatus {
    #[allow(dead_code)] // shown by Debug in failure messages
    raw: String,
    name: String,
    params: Vec<(String, Option<String>)>,
}

impl CacheStatus {
    fn parse(raw: &str) -> Self {
        assert!(!raw.contains(','), "one cache, one member: {raw:?}");
        let mut parts = raw.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default().to_owned();
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (
                    k.trim().to_owned(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (p.to_owned(), None),
            })
            .collect();
        Self {
            raw: raw.to_owned(),
            name,
            params,
        }
    }

    /// A boolean parameter (`hit`, `stored`, `collapsed`): bare, or `=?1`.
    fn flag(&self, key: &str) -> bool {
        self.params
            .iter()
            .any(|(k, v)| k == key && v.as_deref().is_none_or(|v| v == "?1"))
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    fn fwd(&self) -> Option<&str> {
        self.param("fwd")
    }

    fn detail(&self) -> Option<&str> {
        self.param("detail")
    }
}

async fn fetch(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.expect("whole body");
    Reply {
        status,
        headers,
        body,
    }
}

async fn get_with(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    fetch(client, Method::GET, url, headers).await
}

async fn get_url(client: &reqwest::Client, url: &str) -> Reply {
    get_with(client, url, &[]).await
}

/// Lets virtual time pass (the paused clock jumps; nothing really waits).
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Lets background work (refreshes) run to completion under the paused clock.
async fn let_background_run() {
    for _ in 0..10 {
        settle().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const PUBLIC_60: &str = "public, max-age=60";

/// A handler: counts the call, answers `cache-control` with `body-{n}`.
fn counted(
    cc: &'static str,
) -> impl Fn(State<Calls>) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |State(calls): State<Calls>| {
        let n = calls.inc();
        std::future::ready(([(header::CACHE_CONTROL, cc)], format!("body-{n}")).into_response())
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------------------------
// 1. Miss, hit, stale
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cacheable_get_is_a_miss_then_a_hit_then_stale_after_its_max_age() {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route("/page", get(counted(PUBLIC_60)))
        .layer(cache)
        .with_state(calls.clone());
    let url = format!("http://{}/page", serve(app).await);
    let client = client();

    let first = get_url(&client, &url).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "body-1");
    let cs = first.cs();
    assert_eq!(cs.name, "tower-perf", "{cs:?}");
    assert_eq!(cs.fwd(), Some("uri-miss"), "{cs:?}");
    assert!(cs.flag("stored"), "{cs:?}");
    assert!(!cs.flag("hit"), "{cs:?}");
    assert_eq!(cs.param("fwd-status"), Some("200"), "{cs:?}");
    assert_eq!(calls.get(), 1);

    pass(Duration::from_secs(5)).await;
    let second = get_url(&client, &url).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body, "identical body");
    assert_eq!(second.header("age"), Some("5"));
    let cs = second.cs();
    assert!(cs.flag("hit"), "{cs:?}");
    assert_eq!(cs.fwd(), None, "{cs:?}");
    assert_eq!(cs.param("ttl"), Some("55"), "{cs:?}");
    assert_eq!(second.header("cache-control"), Some(PUBLIC_60));
    assert_eq!(calls.get(), 1, "the hit did not reach the origin");

    let stats = handle.snapshot();
    assert_eq!(stats.hits, 1, "{stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.stale, 0, "{stats:?}");
    assert_eq!(stats.bypass, 0, "{stats:?}");
    assert_eq!(stats.entries, 1, "{stats:?}");
    assert!(stats.bytes > 0, "{stats:?}");
    assert!((stats.hit_ratio - 0.5).abs() < 1e-9, "{stats:?}");

    // 61 s after it was stored, the entry is stale: the origin is asked again.
    pass(Duration::from_secs(56)).await;
    let third = get_url(&client, &url).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.text(), "body-2");
    assert_eq!(calls.get(), 2);
    let cs = third.cs();
    assert!(!cs.flag("hit"), "{cs:?}");
    assert_eq!(cs.fwd(), Some("stale"), "{cs:?}");
    assert!(cs.flag("stored"), "{cs:?}");

    // And the new response is the fresh entry now.
    let fourth = get_url(&client, &url).await;
    assert_eq!(fourth.text(), "body-2");
    assert!(fourth.cs().flag("hit"));
    assert_eq!(calls.get(), 2);
    let stats = handle.snapshot();
    assert_eq!((stats.hits, stats.misses), (2, 2), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Coalescing
// ---------------------------------------------------------------------------------------------

/// The outcome as an extension, for layers outside the cache: only when asked for. A layer
/// around the cache copies what it finds into a header the client can read.
#[tokio::test(start_paused = true)]
async fn the_outcome_extension_is_there_only_when_asked_for() {
    use tower_perf::cache::CacheOutcome;
    async fn run(cache: ResponseCacheLayer) -> Vec<Option<String>> {
        let app = Router::new()
            .route("/page", get(counted(PUBLIC_60)))
            .layer(cache)
            .layer(axum::middleware::map_response(
                |mut res: Response| async move {
                    let seen = res.extensions().get::<CacheOutcome>().copied();
                    if let Some(outcome) = seen {
                        let value = format!("{outcome:?}").parse().unwrap();
                        res.headers_mut().insert("x-outcome", value);
                    }
                    res
                },
            ))
            .with_state(Calls::default());
        let url = format!("http://{}/page", serve(app).await);
        let client = client();
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(
                get_url(&client, &url)
                    .await
                    .header("x-outcome")
                    .map(str::to_owned),
            );
        }
        seen
    }
    let on = ResponseCacheLayer::builder()
        .outcome_extension(true)
        .build()
        .unwrap();
    assert_eq!(
        run(on).await,
        [Some("Miss".to_owned()), Some("Hit".to_owned())]
    );
    assert_eq!(run(ResponseCacheLayer::new()).await, [None, None]);
}

async fn slow_origin(State(calls): State<Calls>) -> Response {
    let n = calls.inc();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (
        [(header::CACHE_CONTROL, PUBLIC_60)],
        format!("slow body {n}"),
    )
        .into_response()
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_on_one_key_reach_the_origin_once() {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route("/cold", get(slow_origin))
        .layer(cache)
        .with_state(calls.clone());
    let url = format!("http://{}/cold", serve(app).await);
    let client = client();

    let results = join_all((0..1000).map(|_| {
        let req = client.get(&url).send();
        async move {
            let res = req.await.expect("request sent");
            let status = res.status();
            (status, res.text().await.expect("whole body"))
        }
    }))
    .await;

    assert_eq!(results.len(), 1000);
    for (i, (status, body)) in results.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}");
        assert_eq!(body, "slow body 1", "request {i}");
    }
    assert_eq!(
        calls.get(),
        1,
        "one origin request for 1,000 concurrent misses"
    );
    let stats = handle.snapshot();
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.hits, 999, "{stats:?}");
    assert!(
        stats.collapsed > 0,
        "some requests waited for the leader: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_with_authorization_are_not_coalesced() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/cold", get(slow_origin))
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/cold", serve(app).await);
    let client = client();

    let results = join_all((0..5).map(|i| {
        let req = client
            .get(&url)
            .header(header::AUTHORIZATION, format!("Bearer user-{i}"))
            .send();
        async move {
            let res = req.await.expect("request sent");
            (res.status(), res.text().await.expect("whole body"))
        }
    }))
    .await;
    for (status, body) in &results {
        assert_eq!(*status, 200);
        assert!(body.starts_with("slow body "), "{body}");
    }
    assert_eq!(
        calls.get(),
        5,
        "each request with credentials asks the origin itself"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Never served to the wrong client
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn response_with_set_cookie_is_never_stored() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/login",
            get(|State(calls): State<Calls>| async move {
                let n = calls.inc();
                (
                    [
                        (header::CACHE_CONTROL, PUBLIC_60.to_owned()),
                        (header::SET_COOKIE, format!("session=client-{n}")),
                    ],
                    format!("welcome {n}"),
                )
            }),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/login", serve(app).await);
    let client = client();

    let first = get_url(&client, &url).await;
    assert_eq!(first.header("set-cookie"), Some("session=client-1"));
    assert_eq!(first.text(), "welcome 1");
    let cs = first.cs();
    assert!(!cs.flag("stored"), "{cs:?}");
    assert_eq!(cs.detail(), Some("set-cookie"), "{cs:?}");

    let second = get_url(&client, &url).await;
    assert_eq!(
        second.header("set-cookie"),
        Some("session=client-2"),
        "its own cookie"
    );
    assert_eq!(second.text(), "welcome 2");
    assert!(!second.cs().flag("hit"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn private_response_is_never_stored() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/mine", get(counted("private, max-age=60")))
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/mine", serve(app).await);
    let client = client();

    let first = get_url(&client, &url).await;
    assert_eq!(first.text(), "body-1");
    let cs = first.cs();
    assert!(!cs.flag("stored"), "{cs:?}");
    assert_eq!(cs.detail(), Some("private"), "{cs:?}");
    let second = get_url(&client, &url).await;
    assert_eq!(second.text(), "body-2");
    assert_eq!(calls.get(), 2);
}

async fn whoami(State(calls): State<Calls>, headers: HeaderMap) -> Response {
    calls.inc();
    let user = header_str(&headers, "authorization")
        .unwrap_or("anonymous")
        .to_owned();
    (
        [(header::CACHE_CONTROL, "max-age=60")],
        format!("user={user}"),
    )
        .into_response()
}

async fn shared_with_auth(State(calls): State<Calls>, headers: HeaderMap) -> Response {
    calls.inc();
    let user = header_str(&headers, "authorization")
        .unwrap_or("anonymous")
        .to_owned();
    (
        [(header::CACHE_CONTROL, PUBLIC_60)],
        format!("shared, asked by {user}"),
    )
        .into_response()
}

#[tokio::test(start_paused = true)]
async fn response_to_authorized_request_is_stored_only_when_public() {
    let me = Calls::default();
    let shared = Calls::default();
    let app = Router::new()
        .route("/me", get(whoami).with_state(me.clone()))
        .route("/shared", get(shared_with_auth).with_state(shared.clone()))
        .layer(ResponseCacheLayer::new());
    let addr = serve(app).await;
    let client = client();
    let me_url = format!("http://{addr}/me");

    let alice = get_with(&client, &me_url, &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.text(), "user=Bearer alice");
    let cs = alice.cs();
    assert!(!cs.flag("stored"), "{cs:?}");
    assert_eq!(cs.detail(), Some("authorization"), "{cs:?}");

    let anonymous = get_url(&client, &me_url).await;
    assert_eq!(anonymous.text(), "user=anonymous", "never alice's response");
    assert_eq!(me.get(), 2);

    // With `public`, a response to an authorized request is shared.
    let shared_url = format!("http://{addr}/shared");
    let first = get_with(&client, &shared_url, &[("authorization", "Bearer alice")]).await;
    assert!(first.cs().flag("stored"), "{:?}", first.cs());
    let second = get_with(&client, &shared_url, &[("authorization", "Bearer alice")]).await;
    assert_eq!(second.text(), "shared, asked by Bearer alice");
    assert!(second.cs().flag("hit"), "{:?}", second.cs());
    assert_eq!(shared.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Vary
// ---------------------------------------------------------------------------------------------

async fn by_language(State(calls): State<Calls>, headers: HeaderMap) -> Response {
    calls.inc();
    let lang = header_str(&headers, "accept-language")
        .unwrap_or("none")
        .to_owned();
    (
        [
            (header::CACHE_CONTROL, PUBLIC_60),
            (header::VARY, "Accept-Language"),
        ],
        format!("lang={lang}"),
    )
        .into_response()
}

#[tokio::test(start_paused = true)]
async fn vary_stores_one_variant_per_request_header_value() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/greeting", get(by_language))
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/greeting", serve(app).await);
    let client = client();
    let lang = |l: &'static str| [("accept-language", l)];

    let en = get_with(&client, &url, &lang("en")).await;
    assert_eq!(en.text(), "lang=en");
    assert_eq!(en.cs().fwd(), Some("uri-miss"));
    let fr = get_with(&client, &url, &lang("fr")).await;
    assert_eq!(fr.text(), "lang=fr");
    assert_eq!(fr.cs().fwd(), Some("vary-miss"), "{:?}", fr.cs());
    let en = get_with(&client, &url, &lang("en")).await;
    assert_eq!(en.text(), "lang=en");
    assert!(en.cs().flag("hit"));
    let fr = get_with(&client, &url, &lang("fr")).await;
    assert_eq!(fr.text(), "lang=fr");
    assert!(fr.cs().flag("hit"));
    assert_eq!(calls.get(), 2, "en, fr, en, fr: two variants");
    assert_eq!(fr.header("vary"), Some("Accept-Language"));

    // No Accept-Language at all is a variant of its own.
    let none = get_url(&client, &url).await;
    assert_eq!(none.text(), "lang=none");
    assert_eq!(calls.get(), 3);
    let none = get_url(&client, &url).await;
    assert_eq!(none.text(), "lang=none");
    assert!(none.cs().flag("hit"));
    let en = get_with(&client, &url, &lang("en")).await;
    assert_eq!(en.text(), "lang=en");
    assert_eq!(calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn vary_star_is_never_stored() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/anything",
            get(|State(calls): State<Calls>| async move {
                let n = calls.inc();
                (
                    [(header::CACHE_CONTROL, PUBLIC_60), (header::VARY, "*")],
                    format!("body-{n}"),
                )
            }),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/anything", serve(app).await);
    let client = client();

    let first = get_url(&client, &url).await;
    let cs = first.cs();
    assert!(!cs.flag("stored"), "{cs:?}");
    assert_eq!(cs.detail(), Some("vary-star"), "{cs:?}");
    let second = get_url(&client, &url).await;
    assert_eq!(second.text(), "body-2");
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn accept_encoding_is_normalised_to_the_selected_coding() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/asset",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    let n = calls.inc();
                    let ae = header_str(&headers, "accept-encoding")
                        .unwrap_or("none")
                        .to_owned();
                    (
                        [
                            (header::CACHE_CONTROL, PUBLIC_60),
                            (header::VARY, "Accept-Encoding"),
                        ],
                        format!("response {n} for [{ae}]"),
                    )
                },
            ),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/asset", serve(app).await);
    let client = client();

    let chrome = get_with(
        &client,
        &url,
        &[("accept-encoding", "gzip, deflate, br, zstd")],
    )
    .await;
    assert_eq!(chrome.text(), "response 1 for [gzip, deflate, br, zstd]");
    // Another header string that selects zstd too: the same variant.
    let other = get_with(&client, &url, &[("accept-encoding", "zstd, br, gzip")]).await;
    assert_eq!(other.body, chrome.body);
    assert!(other.cs().flag("hit"), "{:?}", other.cs());
    assert_eq!(calls.get(), 1);

    // gzip alone selects gzip: another variant.
    let gzip = get_with(&client, &url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.text(), "response 2 for [gzip]");
    assert_eq!(gzip.cs().fwd(), Some("vary-miss"), "{:?}", gzip.cs());
    assert_eq!(calls.get(), 2);

    // Both stay stored side by side.
    let gzip = get_with(&client, &url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gzip.text(), "response 2 for [gzip]");
    let zstd = get_with(&client, &url, &[("accept-encoding", "zstd, br, gzip")]).await;
    assert_eq!(zstd.text(), "response 1 for [gzip, deflate, br, zstd]");
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Purges
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct TwoRoutes {
    props: Calls,
    other: Calls,
}

#[tokio::test(start_paused = true)]
async fn hard_purge_by_tag_removes_every_variant_and_only_them() {
    let state = TwoRoutes::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/props",
            get(
                |State(s): State<TwoRoutes>, headers: HeaderMap| async move {
                    let n = s.props.inc();
                    let lang = header_str(&headers, "accept-language")
                        .unwrap_or("none")
                        .to_owned();
                    (
                        [
                            (header::CACHE_CONTROL, PUBLIC_60),
                            (header::VARY, "Accept-Language"),
                            (HeaderName::from_static("cache-tag"), "properties"),
                        ],
                        format!("props {lang} v{n}"),
                    )
                },
            ),
        )
        .route(
            "/other",
            get(|State(s): State<TwoRoutes>| async move {
                let n = s.other.inc();
                (
                    [
                        (header::CACHE_CONTROL, PUBLIC_60),
                        (HeaderName::from_static("cache-tag"), "other"),
                    ],
                    format!("other v{n}"),
                )
            }),
        )
        .layer(cache)
        .with_state(state.clone());
    let addr = serve(app).await;
    let client = client();
    let props = format!("http://{addr}/props");
    let other = format!("http://{addr}/other");

    let en = get_with(&client, &props, &[("accept-language", "en")]).await;
    assert_eq!(en.text(), "props en v1");
    assert!(
        en.header("cache-tag").is_none(),
        "the tag header is for the cache only"
    );
    let fr = get_with(&client, &props, &[("accept-language", "fr")]).await;
    assert_eq!(fr.text(), "props fr v2");
    let o = get_url(&client, &other).await;
    assert_eq!(o.text(), "other v1");
    assert!(o.header("cache-tag").is_none());
    // All three are hits now, still without the tag header.
    for (url, lang) in [(&props, "en"), (&props, "fr"), (&other, "en")] {
        let r = get_with(&client, url, &[("accept-language", lang)]).await;
        assert!(r.cs().flag("hit"), "{url} {lang}: {:?}", r.cs());
        assert!(r.header("cache-tag").is_none());
    }
    assert_eq!((state.props.get(), state.other.get()), (2, 1));

    handle.purge_tags(["properties"], true);

    let en = get_with(&client, &props, &[("accept-language", "en")]).await;
    assert_eq!(en.text(), "props en v3");
    assert!(!en.cs().flag("hit"));
    let fr = get_with(&client, &props, &[("accept-language", "fr")]).await;
    assert_eq!(fr.text(), "props fr v4");
    assert!(!fr.cs().flag("hit"));
    let o = get_url(&client, &other).await;
    assert_eq!(o.text(), "other v1");
    assert!(o.cs().flag("hit"), "another tag is untouched: {:?}", o.cs());
    assert_eq!((state.props.get(), state.other.get()), (4, 1));

    // The responses stored after the purge are not covered by it.
    let en = get_with(&client, &props, &[("accept-language", "en")]).await;
    assert_eq!(en.text(), "props en v3");
    assert!(en.cs().flag("hit"));
    assert_eq!(state.props.get(), 4);
}

#[tokio::test(start_paused = true)]
async fn soft_purge_serves_stale_while_revalidating_once_in_the_background() {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/list",
            get(|State(calls): State<Calls>| async move {
                let n = calls.inc();
                (
                    [
                        (
                            header::CACHE_CONTROL,
                            "public, max-age=60, stale-while-revalidate=30",
                        ),
                        (HeaderName::from_static("cache-tag"), "properties"),
                    ],
                    format!("list v{n}"),
                )
            }),
        )
        .layer(cache)
        .with_state(calls.clone());
    let url = format!("http://{}/list", serve(app).await);
    let client = client();

    assert_eq!(get_url(&client, &url).await.text(), "list v1");
    assert!(get_url(&client, &url).await.cs().flag("hit"));
    assert_eq!(calls.get(), 1);

    handle.purge_tags(["properties"], false);

    let stale = get_url(&client, &url).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "list v1", "served stale");
    let cs = stale.cs();
    assert_eq!(cs.detail(), Some("stale-while-revalidate"), "{cs:?}");
    assert!(stale.header("cache-tag").is_none());

    let_background_run().await;
    assert_eq!(calls.get(), 2, "one background revalidation");
    assert_eq!(handle.snapshot().stale, 1);

    let fresh = get_url(&client, &url).await;
    assert_eq!(fresh.text(), "list v2");
    let cs = fresh.cs();
    assert!(cs.flag("hit"), "{cs:?}");
    assert_eq!(cs.detail(), None, "a fresh hit again: {cs:?}");
    let_background_run().await;
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn purge_by_uri_and_by_prefix() {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let doc = |State(calls): State<Calls>, Path(id): Path<String>| async move {
        let n = calls.inc();
        ([(header::CACHE_CONTROL, PUBLIC_60)], format!("{id} v{n}"))
    };
    let app = Router::new()
        .route("/docs/{id}", get(doc))
        .route("/blog/{id}", get(doc))
        .layer(cache)
        .with_state(calls.clone());
    let addr = serve(app).await;
    let client = client();
    let urls =
        ["/docs/1?x=1", "/docs/1?x=2", "/docs/2", "/blog/1"].map(|p| format!("http://{addr}{p}"));

    let mut bodies = HashMap::new();
    for url in &urls {
        bodies.insert(url.clone(), get_url(&client, url).await.text().to_owned());
    }
    assert_eq!(calls.get(), 4);

    // By URI: path and query, exactly.
    handle.purge_uri("/docs/1?x=1", true);
    let r = get_url(&client, &urls[0]).await;
    assert_ne!(r.text(), bodies[&urls[0]], "purged: fetched again");
    assert_eq!(calls.get(), 5);
    bodies.insert(urls[0].clone(), r.text().to_owned());
    for url in &urls[1..] {
        let r = get_url(&client, url).await;
        assert!(r.cs().flag("hit"), "{url} untouched: {:?}", r.cs());
        assert_eq!(r.text(), bodies[url]);
    }
    assert_eq!(calls.get(), 5);

    // By prefix: every path under /docs/, whatever the query.
    handle.purge_prefix("/docs/", true);
    for url in &urls[..3] {
        let r = get_url(&client, url).await;
        assert!(!r.cs().flag("hit"), "{url} purged: {:?}", r.cs());
        assert_ne!(r.text(), bodies[url]);
    }
    assert_eq!(calls.get(), 8);
    let blog = get_url(&client, &urls[3]).await;
    assert!(blog.cs().flag("hit"), "{:?}", blog.cs());
    assert_eq!(blog.text(), bodies[&urls[3]]);
    assert_eq!(calls.get(), 8);
}

/// The module's promise: a response the origin computed before a purge never survives it, even
/// when it is stored just after.
#[tokio::test(start_paused = true)]
async fn hard_purge_during_an_origin_request_covers_its_response() {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/slow-tagged",
            get(|State(calls): State<Calls>| async move {
                let n = calls.inc();
                tokio::time::sleep(Duration::from_millis(100)).await;
                (
                    [
                        (header::CACHE_CONTROL, PUBLIC_60),
                        (HeaderName::from_static("cache-tag"), "properties"),
                    ],
                    format!("computed before the purge {n}"),
                )
            }),
        )
        .layer(cache)
        .with_state(calls.clone());
    let url = format!("http://{}/slow-tagged", serve(app).await);
    let client = client();

    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { get_url(&client, &url).await }
    });
    pass(Duration::from_millis(50)).await;
    assert_eq!(calls.get(), 1, "the origin is working on it");
    handle.purge_tags(["properties"], true);
    let first = in_flight.await.unwrap();
    assert_eq!(first.text(), "computed before the purge 1");

    let next = get_url(&client, &url).await;
    assert!(!next.cs().flag("hit"), "purged: {:?}", next.cs());
    assert_eq!(next.text(), "computed before the purge 2");
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// 6. Byte budget
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_stays_within_the_byte_budget() {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::builder()
        .max_bytes(64 * 1024)
        .max_entry_bytes(8 * 1024)
        .build()
        .unwrap();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/blob/{n}",
            get(
                |State(calls): State<Calls>, Path(n): Path<u32>| async move {
                    calls.inc();
                    let byte = b'a' + (n % 26) as u8;
                    ([(header::CACHE_CONTROL, PUBLIC_60)], vec![byte; 4096])
                },
            ),
        )
        .layer(cache)
        .with_state(calls.clone());
    let addr = serve(app).await;
    let client = client();

    for batch in 0..10u32 {
        for i in 0..20u32 {
            let n = batch * 20 + i;
            let r = get_url(&client, &format!("http://{addr}/blob/{n}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body.len(), 4096);
            assert!(r.body.iter().all(|&b| b == b'a' + (n % 26) as u8));
        }
        let stats = handle.snapshot();
        assert_eq!(stats.max_bytes, 64 * 1024);
        assert!(
            stats.bytes <= stats.max_bytes,
            "after batch {batch}: {} bytes held, budget {}: {stats:?}",
            stats.bytes,
            stats.max_bytes
        );
        assert!(
            stats.entries <= 16,
            "at most 16 entries of 4 KiB fit: {stats:?}"
        );
    }
    assert_eq!(calls.get(), 200);
    let stats = handle.snapshot();
    assert!(stats.evicted_size > 0, "{stats:?}");
    assert!(stats.entries > 0, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. Large bodies
// ---------------------------------------------------------------------------------------------

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_entry_limit_stream_whole_and_are_not_stored() {
    let big = Calls::default();
    let streamed = Calls::default();
    let cache = ResponseCacheLayer::builder()
        .max_entry_bytes(1024)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/big",
            get(|State(calls): State<Calls>| async move {
                calls.inc();
                ([(header::CACHE_CONTROL, PUBLIC_60)], pattern(100 * 1024))
            })
            .with_state(big.clone()),
        )
        .route(
            "/stream",
            get(|State(calls): State<Calls>| async move {
                calls.inc();
                let chunks = (0..100u32)
                    .map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![(i % 256) as u8; 1024])));
                (
                    [(header::CACHE_CONTROL, PUBLIC_60)],
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
            })
            .with_state(streamed.clone()),
        )
        .layer(cache);
    let addr = serve(app).await;
    let client = client();

    for round in 1..=2 {
        let r = get_url(&client, &format!("http://{addr}/big")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 100 * 1024);
        assert!(r.body == pattern(100 * 1024), "content intact");
        let cs = r.cs();
        assert!(!cs.flag("hit") && !cs.flag("stored"), "{cs:?}");
        assert_eq!(cs.detail(), Some("too-large"), "{cs:?}");
        assert_eq!(big.get(), round);

        let r = get_url(&client, &format!("http://{addr}/stream")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 100 * 1024);
        for (i, chunk) in r.body.chunks(1024).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == (i % 256) as u8),
                "chunk {i} intact"
            );
        }
        assert!(!r.cs().flag("hit"), "{:?}", r.cs());
        assert_eq!(
            streamed.get(),
            round,
            "not stored: the origin is asked every time"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Conditional requests and revalidation
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn client_conditional_request_is_answered_from_the_entry() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/doc",
            get(|State(calls): State<Calls>| async move {
                calls.inc();
                (
                    [(header::CACHE_CONTROL, PUBLIC_60), (header::ETAG, "\"v1\"")],
                    "the document",
                )
            }),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/doc", serve(app).await);
    let client = client();

    let first = get_url(&client, &url).await;
    assert_eq!(first.text(), "the document");
    assert_eq!(first.header("etag"), Some("\"v1\""));

    let same = get_with(&client, &url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty(), "a 304 has no body");
    assert_eq!(same.header("etag"), Some("\"v1\""));
    assert!(same.cs().flag("hit"), "{:?}", same.cs());
    assert_eq!(calls.get(), 1, "answered without the origin");

    let older = get_with(&client, &url, &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(older.status, 200);
    assert_eq!(older.text(), "the document");
    assert_eq!(calls.get(), 1);
}

#[derive(Clone, Default)]
struct Revalidating {
    calls: Calls,
    not_modified: Calls,
    seen_if_none_match: Arc<Mutex<Vec<Option<String>>>>,
}

#[tokio::test(start_paused = true)]
async fn stale_entry_is_revalidated_and_refreshed_by_a_304() {
    let state = Revalidating::default();
    let app = Router::new()
        .route(
            "/reval",
            get(
                |State(s): State<Revalidating>, headers: HeaderMap| async move {
                    s.calls.inc();
                    let inm = header_str(&headers, "if-none-match").map(str::to_owned);
                    s.seen_if_none_match.lock().unwrap().push(inm.clone());
                    if inm.as_deref() == Some("\"v1\"") {
                        s.not_modified.inc();
                        return (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v1\"")])
                            .into_response();
                    }
                    (
                        [
                            (header::CACHE_CONTROL, "max-age=1"),
                            (header::ETAG, "\"v1\""),
                        ],
                        "original body",
                    )
                        .into_response()
                },
            ),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(state.clone());
    let url = format!("http://{}/reval", serve(app).await);
    let client = client();

    let first = get_url(&client, &url).await;
    assert_eq!(first.text(), "original body");
    assert!(first.cs().flag("stored"));

    pass(Duration::from_secs(2)).await;
    let revalidated = get_url(&client, &url).await;
    assert_eq!(
        *state.seen_if_none_match.lock().unwrap(),
        vec![None, Some("\"v1\"".to_owned())],
        "the cache revalidates with the stored ETag"
    );
    assert_eq!(state.not_modified.get(), 1);
    assert_eq!(
        revalidated.status, 200,
        "the client did not ask conditionally"
    );
    assert_eq!(
        revalidated.text(),
        "original body",
        "the stored body, refreshed"
    );
    let cs = revalidated.cs();
    assert_eq!(cs.fwd(), Some("stale"), "{cs:?}");
    assert_eq!(cs.param("fwd-status"), Some("304"), "{cs:?}");
    assert_eq!(state.calls.get(), 2);

    // Fresh again: no origin call.
    let after = get_url(&client, &url).await;
    assert_eq!(after.text(), "original body");
    let cs = after.cs();
    assert!(cs.flag("hit"), "{cs:?}");
    assert_eq!(cs.fwd(), None, "{cs:?}");
    assert_eq!(state.calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// 9. stale-if-error
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Failing {
    calls: Calls,
    /// 0: 200; 1: 500; 2: 503 rejected by a layer; 3: 429 rejected by a layer.
    mode: Arc<AtomicUsize>,
}

async fn failing(State(s): State<Failing>) -> Response {
    let n = s.calls.inc();
    match s.mode.load(SeqCst) {
        0 => (
            [(header::CACHE_CONTROL, "max-age=1, stale-if-error=60")],
            format!("good body {n}"),
        )
            .into_response(),
        1 => (StatusCode::INTERNAL_SERVER_ERROR, "origin broke").into_response(),
        2 => {
            let mut res = (StatusCode::SERVICE_UNAVAILABLE, "queue full").into_response();
            res.extensions_mut().insert(Rejected::new("queue"));
            res
        }
        _ => {
            let mut res = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            res.extensions_mut().insert(Rejected::new("rate_limit"));
            res
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_the_stale_entry_while_the_origin_fails() {
    let state = Failing::default();
    let app = Router::new()
        .route("/sie", get(failing))
        .layer(ResponseCacheLayer::new())
        .with_state(state.clone());
    let url = format!("http://{}/sie", serve(app).await);
    let client = client();

    assert_eq!(get_url(&client, &url).await.text(), "good body 1");
    pass(Duration::from_secs(2)).await;
    state.mode.store(1, SeqCst);

    let r = get_url(&client, &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "good body 1");
    let cs = r.cs();
    assert_eq!(cs.detail(), Some("stale-if-error"), "{cs:?}");
    assert_eq!(cs.param("fwd-status"), Some("500"), "{cs:?}");
    assert_eq!(state.calls.get(), 2, "the origin was asked");

    // Past the stale-if-error window, the error passes through.
    pass(Duration::from_secs(70)).await;
    let r = get_url(&client, &url).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "origin broke");
    assert_eq!(state.calls.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn rejected_marker_counts_as_an_origin_failure() {
    let state = Failing::default();
    let app = Router::new()
        .route("/rej", get(failing))
        .layer(ResponseCacheLayer::new())
        .with_state(state.clone());
    let url = format!("http://{}/rej", serve(app).await);
    let client = client();

    assert_eq!(get_url(&client, &url).await.text(), "good body 1");
    pass(Duration::from_secs(2)).await;

    state.mode.store(2, SeqCst);
    let r = get_url(&client, &url).await;
    assert_eq!(
        r.status, 200,
        "a layer's 503 rejection gets the stale entry"
    );
    assert_eq!(r.text(), "good body 1");
    assert_eq!(r.cs().detail(), Some("stale-if-error"), "{:?}", r.cs());

    // Not a 5xx, but marked Rejected: a failure too.
    state.mode.store(3, SeqCst);
    let r = get_url(&client, &url).await;
    assert_eq!(
        r.status, 200,
        "a layer's 429 rejection gets the stale entry"
    );
    assert_eq!(r.text(), "good body 1");
    assert_eq!(r.cs().detail(), Some("stale-if-error"), "{:?}", r.cs());
    assert_eq!(state.calls.get(), 3);
}

// ---------------------------------------------------------------------------------------------
// 10. Request directives
// ---------------------------------------------------------------------------------------------

/// A server with one counted route `/r` answering `cc`.
async fn one_route(cc: &'static str) -> (String, Calls, tower_perf::cache::CacheHandle) {
    let calls = Calls::default();
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route("/r", get(counted(cc)))
        .layer(cache)
        .with_state(calls.clone());
    let url = format!("http://{}/r", serve(app).await);
    (url, calls, handle)
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_goes_to_the_origin_even_when_fresh() {
    let (url, calls, _) = one_route(PUBLIC_60).await;
    let client = client();
    assert_eq!(get_url(&client, &url).await.text(), "body-1");
    assert!(get_url(&client, &url).await.cs().flag("hit"));

    let r = get_with(&client, &url, &[("cache-control", "no-cache")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body-2");
    assert!(!r.cs().flag("hit"), "{:?}", r.cs());
    assert_eq!(r.cs().fwd(), Some("request"), "{:?}", r.cs());
    assert_eq!(calls.get(), 2);

    // The origin's answer replaced the entry.
    let r = get_url(&client, &url).await;
    assert_eq!(r.text(), "body-2");
    assert!(r.cs().flag("hit"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn request_no_store_bypasses_the_cache_and_stores_nothing() {
    let (url, calls, handle) = one_route(PUBLIC_60).await;
    let client = client();

    let r = get_with(&client, &url, &[("cache-control", "no-store")]).await;
    assert_eq!(r.text(), "body-1");
    let cs = r.cs();
    assert_eq!(cs.fwd(), Some("bypass"), "{cs:?}");
    assert!(!cs.flag("stored"), "{cs:?}");
    assert_eq!(handle.snapshot().bypass, 1);

    let r = get_url(&client, &url).await;
    assert_eq!(r.text(), "body-2", "nothing was stored");
    assert_eq!(r.cs().fwd(), Some("uri-miss"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_on_a_cold_key_is_504() {
    let (url, calls, _) = one_route(PUBLIC_60).await;
    let client = client();

    let r = get_with(&client, &url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(calls.get(), 0, "never the origin");

    // Once stored, it is answered.
    get_url(&client, &url).await;
    let r = get_with(&client, &url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body-1");
    assert_eq!(calls.get(), 1);

    // Stale, and nothing allows serving it stale: still 504, still never the origin.
    pass(Duration::from_secs(61)).await;
    let r = get_with(&client, &url, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(calls.get(), 1, "never the origin");
    // ...unless the request accepts it stale.
    let r = get_with(
        &client,
        &url,
        &[("cache-control", "only-if-cached, max-stale")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body-1");
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_stale_accepts_a_stale_entry_without_the_origin() {
    let (url, calls, handle) = one_route("max-age=10").await;
    let client = client();
    assert_eq!(get_url(&client, &url).await.text(), "body-1");
    pass(Duration::from_secs(20)).await; // 10 s stale

    let r = get_with(&client, &url, &[("cache-control", "max-stale=100")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body-1");
    assert_eq!(r.cs().detail(), Some("max-stale"), "{:?}", r.cs());
    assert_eq!(r.header("age"), Some("20"));
    assert_eq!(calls.get(), 1);
    assert_eq!(handle.snapshot().stale, 1);

    // Staler than the client accepts: the origin.
    let r = get_with(&client, &url, &[("cache-control", "max-stale=5")]).await;
    assert_eq!(r.text(), "body-2");
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn min_fresh_beyond_the_remaining_freshness_goes_to_the_origin() {
    let (url, calls, _) = one_route(PUBLIC_60).await;
    let client = client();
    assert_eq!(get_url(&client, &url).await.text(), "body-1");
    pass(Duration::from_secs(10)).await; // 50 s left

    let r = get_with(&client, &url, &[("cache-control", "min-fresh=10")]).await;
    assert_eq!(r.text(), "body-1");
    assert!(r.cs().flag("hit"));
    assert_eq!(calls.get(), 1);

    let r = get_with(&client, &url, &[("cache-control", "min-fresh=100")]).await;
    assert_eq!(r.text(), "body-2");
    let cs = r.cs();
    assert!(
        !cs.flag("hit") && cs.detail().is_none(),
        "not served stale: {cs:?}"
    );
    assert_eq!(cs.fwd(), Some("request"), "{cs:?}");
    let_background_run().await;
    assert_eq!(calls.get(), 2);
}

// ---------------------------------------------------------------------------------------------
// 11. Unsafe methods
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn successful_unsafe_request_invalidates_its_uri_and_location() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/items",
            get(counted(PUBLIC_60)).post(|headers: HeaderMap| async move {
                if headers.contains_key("x-fail") {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response();
                }
                (
                    StatusCode::CREATED,
                    [(header::LOCATION, "/items/7")],
                    "created",
                )
                    .into_response()
            }),
        )
        .route("/items/{id}", get(counted(PUBLIC_60)))
        .route("/unrelated", get(counted(PUBLIC_60)))
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let addr = serve(app).await;
    let client = client();
    let list = format!("http://{addr}/items");
    let item = format!("http://{addr}/items/7");
    let unrelated = format!("http://{addr}/unrelated");

    for url in [&list, &item, &unrelated] {
        get_url(&client, url).await;
        assert!(get_url(&client, url).await.cs().flag("hit"));
    }
    assert_eq!(calls.get(), 3);

    let created = fetch(&client, Method::POST, &list, &[]).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.cs().fwd(), Some("bypass"));

    for url in [&list, &item] {
        let r = get_url(&client, url).await;
        assert!(!r.cs().flag("hit"), "{url} invalidated: {:?}", r.cs());
    }
    assert_eq!(calls.get(), 5);
    assert!(get_url(&client, &unrelated).await.cs().flag("hit"));
    assert_eq!(calls.get(), 5);

    // A failed POST changes nothing.
    let failed = fetch(&client, Method::POST, &list, &[("x-fail", "1")]).await;
    assert_eq!(failed.status, 500);
    for url in [&list, &item] {
        let r = get_url(&client, url).await;
        assert!(r.cs().flag("hit"), "{url} still cached: {:?}", r.cs());
    }
    assert_eq!(calls.get(), 5);
}

// ---------------------------------------------------------------------------------------------
// 12. HEAD
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_get_entry() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/h",
            get(|State(calls): State<Calls>| async move {
                calls.inc();
                (
                    [
                        (header::CACHE_CONTROL, PUBLIC_60),
                        (header::ETAG, "\"h1\""),
                        (HeaderName::from_static("x-custom"), "yes"),
                    ],
                    "hello head",
                )
            }),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/h", serve(app).await);
    let client = client();

    let get = get_url(&client, &url).await;
    assert_eq!(get.text(), "hello head");
    let hit = get_url(&client, &url).await;
    assert!(hit.cs().flag("hit"));

    let head = fetch(&client, Method::HEAD, &url, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.cs().flag("hit"), "{:?}", head.cs());
    assert_eq!(calls.get(), 1, "no origin call");
    for name in ["content-type", "cache-control", "etag", "x-custom"] {
        assert_eq!(head.header(name), hit.header(name), "{name}");
    }
    // RFC 9110 9.3.2 / 8.6: a Content-Length in a HEAD response is the GET body's length.
    assert_eq!(hit.header("content-length"), Some("10"));
    if let Some(len) = head.header("content-length") {
        assert_eq!(
            len, "10",
            "HEAD content-length is the length of the stored body"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 13. Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn malformed_headers_never_panic_and_count_as_absent() {
    let good = Calls::default();
    let bad = Calls::default();
    let app = Router::new()
        .route("/good", get(counted(PUBLIC_60)).with_state(good.clone()))
        .route(
            "/bad",
            get(|State(calls): State<Calls>| async move {
                let n = calls.inc();
                (
                    [
                        (header::CACHE_CONTROL, "max-age="),
                        (header::EXPIRES, "garbage"),
                    ],
                    format!("bad {n}"),
                )
            })
            .with_state(bad.clone()),
        )
        .layer(ResponseCacheLayer::new());
    let addr = serve(app).await;
    let client = client();
    let weird = [("cache-control", "max-age=abc, , ,, =, max-stale=-1")];

    // A request with garbage directives is a plain request: miss, then hit.
    let r = get_with(&client, &format!("http://{addr}/good"), &weird).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body-1");
    assert!(r.cs().flag("stored"), "{:?}", r.cs());
    let r = get_with(&client, &format!("http://{addr}/good"), &weird).await;
    assert_eq!(r.status, 200);
    assert!(r.cs().flag("hit"), "{:?}", r.cs());
    assert_eq!(good.get(), 1);

    // A response whose freshness is malformed is not fresh (and, without a validator, not kept).
    for n in 1..=3 {
        let r = get_with(&client, &format!("http://{addr}/bad"), &weird).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("bad {n}"));
        assert!(!r.cs().flag("hit"), "{:?}", r.cs());
        assert!(!r.cs().flag("stored"), "{:?}", r.cs());
    }
    assert_eq!(bad.get(), 3);
}

// ---------------------------------------------------------------------------------------------
// 14. Bad configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_configuration_fails_at_build_naming_the_field() {
    let field = |b: tower_perf::cache::ResponseCacheBuilder| b.build().unwrap_err().field();
    let b = ResponseCacheLayer::builder;
    assert_eq!(field(b().max_bytes(10)), "max_bytes");
    assert_eq!(field(b().max_entry_bytes(0)), "max_entry_bytes");
    assert_eq!(field(b().default_ttl(Duration::ZERO)), "default_ttl");
    assert_eq!(field(b().name("has space")), "name");
    assert_eq!(
        field(b().heuristic(2.0, Duration::from_secs(3600))),
        "heuristic"
    );
    assert_eq!(field(b().coalesce(true, Duration::ZERO)), "coalesce");
    assert_eq!(
        field(b().route_ttl(Route::prefix("/a"), Duration::ZERO)),
        "route_ttl"
    );
    #[cfg(feature = "redis")]
    assert_eq!(field(b().redis_seed(7)), "redis_seed");
    let err = b().max_entry_bytes(0).build().unwrap_err();
    assert!(err.to_string().contains("max_entry_bytes"), "{err}");
    // And the defaults are valid.
    assert!(b().build().is_ok());
}

// ---------------------------------------------------------------------------------------------
// 15. Route TTL
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn route_ttl_gives_freshness_to_responses_without_any() {
    let with_ttl = Calls::default();
    let without = Calls::default();
    let plain = |State(calls): State<Calls>| async move { format!("plain {}", calls.inc()) };
    let cache = ResponseCacheLayer::builder()
        .route_ttl("/ttl/{id}", Duration::from_secs(30))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/ttl/{id}", get(plain).with_state(with_ttl.clone()))
        .route("/none/{id}", get(plain).with_state(without.clone()))
        .layer(cache);
    let addr = serve(app).await;
    let client = client();
    let ttl_url = format!("http://{addr}/ttl/1");
    let none_url = format!("http://{addr}/none/1");

    let first = get_url(&client, &ttl_url).await;
    assert_eq!(first.text(), "plain 1");
    assert!(first.header("cache-control").is_none());
    let cs = first.cs();
    assert!(cs.flag("stored"), "{cs:?}");
    assert_eq!(cs.param("ttl"), Some("30"), "{cs:?}");
    pass(Duration::from_secs(29)).await;
    let hit = get_url(&client, &ttl_url).await;
    assert_eq!(hit.text(), "plain 1");
    assert!(hit.cs().flag("hit"));
    assert_eq!(with_ttl.get(), 1);
    pass(Duration::from_secs(2)).await;
    let stale = get_url(&client, &ttl_url).await;
    assert_eq!(stale.text(), "plain 2", "stale after 30 s");
    assert_eq!(with_ttl.get(), 2);

    // Another route: no freshness, no Last-Modified for a heuristic, so not stored.
    for n in 1..=2 {
        let r = get_url(&client, &none_url).await;
        assert_eq!(r.text(), format!("plain {n}"));
        let cs = r.cs();
        assert!(!cs.flag("stored"), "{cs:?}");
        assert_eq!(cs.detail(), Some("no-freshness"), "{cs:?}");
    }
    assert_eq!(without.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_prefix_route_ttl_covers_every_route_under_it_and_an_exact_one_wins() {
    let calls = Calls::default();
    let plain = |State(calls): State<Calls>| async move { format!("plain {}", calls.inc()) };
    let cache = ResponseCacheLayer::builder()
        .route_ttl(Route::prefix("/api/"), Duration::from_secs(30))
        .route_ttl("/api/live", Duration::from_secs(5))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/api/items/{id}", get(plain))
        .route("/api/live", get(plain))
        .layer(cache)
        .with_state(calls.clone());
    let addr = serve(app).await;
    let client = client();
    let items = get_url(&client, &format!("http://{addr}/api/items/1")).await;
    assert_eq!(items.cs().param("ttl"), Some("30"), "{:?}", items.cs());
    let live = get_url(&client, &format!("http://{addr}/api/live")).await;
    assert_eq!(live.cs().param("ttl"), Some("5"), "{:?}", live.cs());
}

// -------------------------------------------------------------------------------------------------
// Warming
// -------------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn warming_fills_the_cache_through_the_app() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = ResponseCacheLayer::new();
    let handle = cache.handle();
    let app = Router::new()
        .route(
            "/page/{n}",
            get(
                |State(calls): State<Arc<AtomicUsize>>, Path(n): Path<u32>| async move {
                    calls.fetch_add(1, SeqCst);
                    (
                        [(header::CACHE_CONTROL, "public, max-age=60")],
                        format!("page {n}"),
                    )
                },
            ),
        )
        .route(
            "/private",
            get(|| async { ([(header::CACHE_CONTROL, "private")], "mine") }),
        )
        .layer(cache)
        .with_state(calls.clone());
    // The key includes the authority: warm with the `Host` clients will send.
    let addr = serve(app.clone()).await;
    let requests = |paths: &[&str]| -> Vec<axum::http::Request<Body>> {
        paths
            .iter()
            .map(|p| {
                axum::http::Request::get(*p)
                    .header(header::HOST, addr.to_string())
                    .body(Body::empty())
                    .unwrap()
            })
            .collect()
    };

    let report = handle
        .warm(
            app.clone(),
            requests(&["/page/1", "/page/2", "/page/3", "/private"]),
            2,
        )
        .await;
    assert_eq!(report.requested, 4);
    assert_eq!(report.stored, 3);
    assert_eq!(report.not_stored, 1);
    assert_eq!(report.failed, 0);
    assert_eq!(calls.load(SeqCst), 3);

    // Warmed entries answer real clients without the origin.
    let res = client()
        .get(format!("http://{addr}/page/2"))
        .send()
        .await
        .unwrap();
    assert!(res.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("hit"));
    assert_eq!(res.text().await.unwrap(), "page 2");
    assert_eq!(calls.load(SeqCst), 3);

    // Warming again finds them cached.
    let again = handle
        .warm(app, requests(&["/page/1", "/page/2", "/page/3"]), 8)
        .await;
    assert_eq!((again.already_cached, again.stored), (3, 0));
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_canceled_leader_never_leaves_the_key_locked() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = ResponseCacheLayer::builder()
        .coalesce(true, Duration::from_secs(30))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/slow",
            get(|State(calls): State<Arc<AtomicUsize>>| async move {
                calls.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                ([(header::CACHE_CONTROL, "public, max-age=60")], "done")
            }),
        )
        .layer(cache)
        .with_state(calls.clone());
    let addr = serve(app).await;

    // The leader's client gives up after 50 ms; a follower arrives at 10 ms and waits on it.
    let leader_client = client();
    let leader = tokio::spawn({
        let url = format!("http://{addr}/slow");
        async move {
            tokio::time::timeout(Duration::from_millis(50), leader_client.get(url).send()).await
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let follower = tokio::spawn({
        let url = format!("http://{addr}/slow");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    assert!(
        leader.await.unwrap().is_err(),
        "the leader's client gave up"
    );
    // The follower is released (long before its 30 s coalescing timeout) and gets the answer.
    let body = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("the follower was not left waiting on a canceled leader")
        .unwrap();
    assert_eq!(body, "done");
    // The key is free: the next request is a hit or a fresh flight, never stuck.
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(format!("http://{addr}/slow")).send(),
    )
    .await
    .expect("not stuck")
    .unwrap();
    assert_eq!(res.text().await.unwrap(), "done");
    assert!(
        calls.load(SeqCst) <= 2,
        "{} origin calls",
        calls.load(SeqCst)
    );
}

/// A response cacheable with a stale-while-revalidate window, then `private` (with `extra`
/// headers) from the second call on: the stale copy is served once, refreshed in the background
/// where the origin now says private, and must then be gone.
async fn refresh_turns_private(extra: &'static [(&'static str, &'static str)]) {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = ResponseCacheLayer::new();
    let app = Router::new()
        .route(
            "/r",
            get(move |State(calls): State<Arc<AtomicUsize>>| async move {
                let n = calls.fetch_add(1, SeqCst) + 1;
                let mut res = format!("v{n}").into_response();
                let cc = if n == 1 {
                    "public, max-age=1, stale-while-revalidate=60"
                } else {
                    "private, max-age=60"
                };
                let headers = res.headers_mut();
                headers.insert(header::CACHE_CONTROL, cc.parse().unwrap());
                for (k, v) in extra {
                    headers.insert(HeaderName::from_static(k), v.parse().unwrap());
                }
                res
            }),
        )
        .layer(cache)
        .with_state(calls.clone());
    let addr = serve(app).await;
    let client = client();
    let get = || async {
        let res = client.get(format!("http://{addr}/r")).send().await.unwrap();
        let cs = res.headers()["cache-status"].to_str().unwrap().to_owned();
        (cs, res.text().await.unwrap())
    };
    assert_eq!(get().await.1, "v1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Stale: served at once, refreshed in the background, where the origin now says private.
    let (cs, body) = get().await;
    assert_eq!(body, "v1");
    assert!(cs.contains("stale-while-revalidate"), "{cs}");
    for _ in 0..20 {
        settle().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(calls.load(SeqCst), 2);
    // The old copy is gone: the next request goes to the origin instead of being served stale.
    let (cs, body) = get().await;
    assert_eq!(body, "v3", "{cs}");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_is_no_longer_cacheable_drops_the_stale_copy() {
    refresh_turns_private(&[]).await;
}

/// Another cache's member in `Cache-Status` (an upstream cache that stored the response) says
/// nothing about what this cache did: a background refresh whose response is no longer
/// cacheable drops the stale copy even when the origin's `Cache-Status` says `stored`.
#[tokio::test(start_paused = true)]
async fn an_upstream_cache_status_stored_does_not_keep_an_uncacheable_refresh() {
    refresh_turns_private(&[("cache-status", "upstream; fwd=uri-miss; stored")]).await;
}

// ---------------------------------------------------------------------------------------------
// Review findings: each of these served something it should not have
// ---------------------------------------------------------------------------------------------

/// An origin that picks codings its own way (here: gzip or nothing) while the cache's variant
/// key assumes this crate's preference order: a stored coding the client does not accept is
/// never served to it.
#[tokio::test(start_paused = true)]
async fn a_stored_coding_the_client_does_not_accept_is_never_served() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/e",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    calls.inc();
                    let gzip =
                        header_str(&headers, "accept-encoding").is_some_and(|v| v.contains("gzip"));
                    let mut res = (
                        [
                            (header::CACHE_CONTROL, PUBLIC_60),
                            (header::VARY, "accept-encoding"),
                        ],
                        if gzip { "GZIP-BYTES" } else { "plain" },
                    )
                        .into_response();
                    if gzip {
                        res.headers_mut()
                            .insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
                    }
                    res
                },
            ),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/e", serve(app).await);
    let client = client();
    let r = get_with(&client, &url, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = get_with(&client, &url, &[("accept-encoding", "br")]).await;
    assert_eq!(r.header("content-encoding"), None, "{:?}", r.headers);
    assert_eq!(r.text(), "plain");
    assert_eq!(calls.get(), 2);
}

/// Conditionals apply only to what would be a 2xx (RFC 9110 section 13.2.1).
#[tokio::test(start_paused = true)]
async fn a_stored_404_ignores_conditionals() {
    let app = Router::new()
        .route(
            "/missing",
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    [(header::CACHE_CONTROL, PUBLIC_60)],
                    "nope",
                )
            }),
        )
        .layer(ResponseCacheLayer::new());
    let url = format!("http://{}/missing", serve(app).await);
    let client = client();
    assert_eq!(get_url(&client, &url).await.status, 404);
    let r = get_with(&client, &url, &[("if-none-match", "*")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "nope");
    assert!(r.cs().flag("hit"), "{:?}", r.cs());
}

/// `s-maxage` implies `proxy-revalidate`: never served stale, whatever the grace.
#[tokio::test(start_paused = true)]
async fn s_maxage_responses_are_never_served_stale() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/s", get(counted("s-maxage=10")))
        .layer(
            ResponseCacheLayer::builder()
                .grace(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
        .with_state(calls.clone());
    let url = format!("http://{}/s", serve(app).await);
    let client = client();
    assert_eq!(get_url(&client, &url).await.text(), "body-1");
    pass(Duration::from_secs(15)).await;
    assert_eq!(get_url(&client, &url).await.text(), "body-2");
    assert_eq!(calls.get(), 2);
}

/// A revalidation whose `304` makes the response `private` (and sets a cookie): the client
/// that asked gets the response and its cookie; the shared copy is dropped, not refreshed.
#[tokio::test(start_paused = true)]
async fn a_304_that_makes_the_response_private_drops_the_shared_copy() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/r",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    let n = calls.inc();
                    if headers.contains_key(header::IF_NONE_MATCH) {
                        (
                            StatusCode::NOT_MODIFIED,
                            [
                                (header::ETAG, "\"v1\""),
                                (header::CACHE_CONTROL, "private, max-age=60"),
                                (header::SET_COOKIE, "sid=for-this-client"),
                            ],
                        )
                            .into_response()
                    } else {
                        (
                            [
                                (header::ETAG, "\"v1\""),
                                (header::CACHE_CONTROL, "public, max-age=1"),
                            ],
                            format!("body-{n}"),
                        )
                            .into_response()
                    }
                },
            ),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/r", serve(app).await);
    let client = client();
    assert_eq!(get_url(&client, &url).await.text(), "body-1");
    pass(Duration::from_secs(5)).await;
    let r = get_url(&client, &url).await;
    assert_eq!(r.text(), "body-1");
    assert_eq!(r.header("set-cookie"), Some("sid=for-this-client"));
    assert_eq!(calls.get(), 2);
    // Another client: not served the private copy.
    let r = get_url(&client, &url).await;
    assert!(!r.cs().flag("hit"), "{:?}", r.cs());
    assert_eq!(r.header("set-cookie"), None);
    assert_eq!(calls.get(), 3);
}

/// The same through the background refresh of stale-while-revalidate: its `304` makes the
/// response `private`, so the shared copy goes instead of being refreshed.
#[tokio::test(start_paused = true)]
async fn a_background_304_that_makes_the_response_private_drops_the_shared_copy() {
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/r",
            get(
                |State(calls): State<Calls>, headers: HeaderMap| async move {
                    let n = calls.inc();
                    if headers.contains_key(header::IF_NONE_MATCH) {
                        (
                            StatusCode::NOT_MODIFIED,
                            [
                                (header::ETAG, "\"v1\""),
                                (header::CACHE_CONTROL, "private, max-age=60"),
                            ],
                        )
                            .into_response()
                    } else {
                        (
                            [
                                (header::ETAG, "\"v1\""),
                                (
                                    header::CACHE_CONTROL,
                                    "public, max-age=1, stale-while-revalidate=60",
                                ),
                            ],
                            format!("body-{n}"),
                        )
                            .into_response()
                    }
                },
            ),
        )
        .layer(ResponseCacheLayer::new())
        .with_state(calls.clone());
    let url = format!("http://{}/r", serve(app).await);
    let client = client();
    assert_eq!(get_url(&client, &url).await.text(), "body-1");
    pass(Duration::from_secs(5)).await;
    // Stale within the window: served, refreshed in the background by a 304.
    let r = get_url(&client, &url).await;
    assert_eq!(r.text(), "body-1");
    let_background_run().await;
    assert_eq!(calls.get(), 2);
    // The private refresh was not kept: the next request goes to the origin.
    let r = get_url(&client, &url).await;
    assert!(!r.cs().flag("hit"), "{:?}", r.cs());
    assert_eq!(calls.get(), 3);
}

/// With `sort_query`, both orders of the same parameters share one entry.
#[tokio::test(start_paused = true)]
async fn sort_query_shares_one_entry_between_orders() {
    let calls = Calls::default();
    let app = Router::new()
        .route("/q", get(counted(PUBLIC_60)))
        .layer(
            ResponseCacheLayer::builder()
                .sort_query(true)
                .build()
                .unwrap(),
        )
        .with_state(calls.clone());
    let base = format!("http://{}", serve(app).await);
    let client = client();
    assert_eq!(
        get_url(&client, &format!("{base}/q?a=1&b=2")).await.text(),
        "body-1"
    );
    let r = get_url(&client, &format!("{base}/q?b=2&a=1")).await;
    assert!(r.cs().flag("hit"), "{:?}", r.cs());
    assert_eq!(r.text(), "body-1");
    let r = get_url(&client, &format!("{base}/q?a=1&b=2")).await;
    assert!(r.cs().flag("hit"), "{:?}", r.cs());
    assert_eq!(calls.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// 16. Memory
// ---------------------------------------------------------------------------------------------

/// A handler answering `/bodies/{len}` with `len` bytes, cacheable.
async fn sized(State(calls): State<Calls>, Path(len): Path<usize>) -> Response {
    let n = calls.inc();
    let body: Vec<u8> = (0..len).map(|i| b'a' + ((i + n) % 26) as u8).collect();
    ([(header::CACHE_CONTROL, PUBLIC_60)], body).into_response()
}

/// Large bodies are kept in pages of their own (counted in the snapshot, weighed by whole
/// pages), served whole from there, and given back when their entry goes; small ones and a
/// cache built without the option keep them on the heap.
#[tokio::test(start_paused = true)]
async fn large_bodies_live_in_pages_of_their_own_until_their_entry_goes() {
    for in_pages in [true, false] {
        let calls = Calls::default();
        let cache = ResponseCacheLayer::builder()
            .large_bodies_in_pages(in_pages)
            .build()
            .expect("valid");
        let handle = cache.handle();
        let app = Router::new()
            .route("/bodies/{len}", get(sized))
            .layer(cache)
            .with_state(calls.clone());
        let addr = serve(app).await;
        let client = client();
        let large = format!("http://{addr}/bodies/20000");
        let small = format!("http://{addr}/bodies/1000");

        let first = get_url(&client, &large).await;
        let small_first = get_url(&client, &small).await;
        let hit = get_url(&client, &large).await;
        assert!(hit.cs().flag("hit"), "{:?}", hit.cs());
        assert_eq!(hit.body.len(), 20000);
        assert_eq!(hit.body, first.body, "the stored copy is the origin's body");
        let small_hit = get_url(&client, &small).await;
        assert!(small_hit.cs().flag("hit"));
        assert_eq!(small_hit.body, small_first.body);
        assert_eq!(calls.get(), 2);
        let stats = handle.snapshot();
        // 20000 bytes take five 4 KiB pages; the small body stays on the heap.
        let expected = if in_pages { 5 * 4096 } else { 0 };
        assert_eq!(stats.bytes_in_pages, expected, "in_pages={in_pages}");
        assert!(stats.bytes >= 5 * 4096 + 1000, "weighed by its pages");

        handle.purge_uri("/bodies/20000", true);
        assert_eq!(
            handle.snapshot().bytes_in_pages,
            0,
            "unmapped with its entry"
        );
        let again = get_url(&client, &large).await;
        assert!(!again.cs().flag("hit"));
        assert_ne!(again.body, first.body, "fetched again");
        assert_eq!(handle.snapshot().bytes_in_pages, expected);
    }
}
