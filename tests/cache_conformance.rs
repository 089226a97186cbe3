//! HTTP caching conformance of `ResponseCacheLayer` (RFC 9111, 9110, 9213), each rule over a
//! real axum server on loopback with a real HTTP client, under a paused tokio clock.
//!
//! Every test scripts its origin: a function of the call number, the method and the request
//! headers that returns the response, so one route can answer `200`, then `304`, then `206`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use common::{client, serve};
use tower_perf::cache::{ResponseCacheBuilder, ResponseCacheLayer};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// What an origin answers: from the call number (1 for the first), the method and the headers.
type Script = Arc<dyn Fn(usize, &Method, &HeaderMap) -> Response + Send + Sync>;

#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    script: Script,
}

async fn origin(State(o): State<Origin>, method: Method, headers: HeaderMap) -> Response {
    let n = o.calls.fetch_add(1, SeqCst) + 1;
    (o.script)(n, &method, &headers)
}

/// A server whose every path goes through `cache` to the scripted origin.
struct Site {
    base: String,
    calls: Arc<AtomicUsize>,
    client: reqwest::Client,
    /// The cache's handle, when a test needs it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    handle: Option<tower_perf::cache::CacheHandle>,
}

impl Site {
    async fn new(
        cache: ResponseCacheLayer,
        script: impl Fn(usize, &Method, &HeaderMap) -> Response + Send + Sync + 'static,
    ) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let state = Origin {
            calls: calls.clone(),
            script: Arc::new(script),
        };
        let app = Router::new()
            .route("/{*path}", any(origin))
            .layer(cache)
            .with_state(state);
        Self {
            base: format!("http://{}", serve(app).await),
            calls,
            client: client(),
            handle: None,
        }
    }

    /// A site with the default cache.
    async fn default(
        script: impl Fn(usize, &Method, &HeaderMap) -> Response + Send + Sync + 'static,
    ) -> Self {
        Self::new(ResponseCacheLayer::new(), script).await
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    /// Two instances of a site that share one Redis tier.
    #[cfg(feature = "redis")]
    async fn redis_pair(
        redis: &common::redis::RedisServer,
        script: impl Fn(usize, &Method, &HeaderMap) -> Response + Clone + Send + Sync + 'static,
    ) -> (Self, Self) {
        let layer = || {
            let link = tower_perf::redis::RedisLink::builder()
                .url(redis.url())
                .deadline(Duration::from_secs(2))
                .build()
                .expect("link");
            builder()
                .ignore_host(true)
                .redis(link)
                .build()
                .expect("cache")
        };
        let (a, b) = (layer(), layer());
        let mut first = Site::new(a.clone(), script.clone()).await;
        first.handle = Some(a.handle());
        let mut second = Site::new(b.clone(), script).await;
        second.handle = Some(b.handle());
        (first, second)
    }

    /// Waits (a bounded time) until this instance's Redis tier says `done`: what it does in the
    /// background (stores, purge messages) comes after the client has its response.
    #[cfg(feature = "redis")]
    async fn until(&self, done: impl Fn(&tower_perf::cache::RedisTierSnapshot) -> bool) {
        let handle = self.handle.as_ref().expect("a site of redis_pair");
        for _ in 0..500 {
            if done(&handle.snapshot().redis.expect("redis tier")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until this instance wrote a response to Redis.
    #[cfg(feature = "redis")]
    async fn stored_in_redis(&self) {
        self.until(|r| r.stores > 0).await;
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        Reply {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.bytes().await.expect("whole body"),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[]).await
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
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The parameters of the `Cache-Status` member.
    fn cs(&self) -> Vec<&str> {
        let cs = self.header("cache-status").expect("Cache-Status");
        cs.split(';').map(str::trim).collect()
    }

    fn hit(&self) -> bool {
        self.cs().contains(&"hit")
    }

    fn stored(&self) -> bool {
        self.cs().contains(&"stored")
    }

    fn ttl(&self) -> Option<i64> {
        self.cs()
            .iter()
            .find_map(|p| p.strip_prefix("ttl="))
            .and_then(|t| t.parse().ok())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// A response from a status, header pairs and a body.
fn res(status: u16, headers: &[(&str, &str)], body: impl Into<String>) -> Response {
    let mut r = (StatusCode::from_u16(status).expect("status"), body.into()).into_response();
    for (k, v) in headers {
        r.headers_mut().append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    r
}

fn builder() -> ResponseCacheBuilder {
    ResponseCacheLayer::builder()
}

/// Lets virtual time pass (the paused clock jumps; nothing really waits).
async fn pass(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

// ---------------------------------------------------------------------------------------------
// Defects
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn empty_bodies_are_stored_and_only_then_said_stored() {
    let site = Site::default(|_, _, _| res(200, &[("cache-control", "max-age=3600")], "")).await;
    let first = site.get("/empty").await;
    assert!(first.stored(), "{:?}", first.cs());
    let second = site.get("/empty").await;
    assert!(second.hit(), "{:?}", second.cs());
    assert_eq!(second.header("content-length"), Some("0"));
    assert_eq!(site.calls(), 1);

    let site = Site::default(|_, _, _| res(204, &[("cache-control", "max-age=3600")], "")).await;
    site.get("/no-content").await;
    let second = site.get("/no-content").await;
    assert_eq!(second.status, 204);
    assert!(second.hit(), "{:?}", second.cs());
    assert_eq!(site.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_errors_with_explicit_freshness_are_stored_and_only_those() {
    for status in [500, 502, 503, 504, 599] {
        let site = Site::default(move |_, _, _| {
            res(status, &[("cache-control", "public, max-age=60")], "down")
        })
        .await;
        assert!(site.get("/e").await.stored(), "{status}");
        let again = site.get("/e").await;
        assert_eq!(again.status.as_u16(), status);
        assert!(again.hit(), "{status}: {:?}", again.cs());
        assert_eq!(site.calls(), 1, "{status}");
    }
    // No explicit freshness: never stored, even `public` with a validator.
    let last_modified =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(86_400));
    let site = Site::default(move |_, _, _| {
        res(
            500,
            &[
                ("cache-control", "public"),
                ("last-modified", &last_modified),
            ],
            "down",
        )
    })
    .await;
    assert!(!site.get("/e").await.stored());
    site.get("/e").await;
    assert_eq!(site.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_ttl_caps_heuristic_and_default_lifetimes_not_explicit_ones_unless_asked() {
    let site =
        Site::default(|_, _, _| res(200, &[("cache-control", "max-age=100000")], "long")).await;
    assert_eq!(site.get("/long").await.ttl(), Some(100_000));

    let site = Site::new(
        builder().max_ttl(Duration::from_secs(50)).build().unwrap(),
        |_, _, _| res(200, &[("cache-control", "max-age=100")], "long"),
    )
    .await;
    assert_eq!(site.get("/long").await.ttl(), Some(100));
    pass(60).await;
    assert!(
        site.get("/long").await.hit(),
        "explicit freshness outlives max_ttl"
    );

    let site = Site::new(
        builder()
            .max_ttl(Duration::from_secs(50))
            .cap_explicit_ttl(true)
            .build()
            .unwrap(),
        |_, _, _| res(200, &[("cache-control", "max-age=100")], "long"),
    )
    .await;
    assert_eq!(site.get("/long").await.ttl(), Some(50));

    // A heuristic lifetime stays capped.
    let last_modified =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100 * 86_400));
    let site = Site::new(
        builder().max_ttl(Duration::from_secs(50)).build().unwrap(),
        move |_, _, _| res(200, &[("last-modified", &last_modified)], "old"),
    )
    .await;
    assert_eq!(site.get("/old").await.ttl(), Some(50));
}

#[tokio::test(start_paused = true)]
async fn a_304_replaces_the_stored_set_cookie_and_does_not_merge_it() {
    let site = Site::new(
        builder().cache_set_cookie(true).build().unwrap(),
        |n, _, h| {
            if n > 1 && h.contains_key("if-none-match") {
                return res(304, &[("etag", "\"v1\""), ("set-cookie", "a=c")], "");
            }
            res(
                200,
                &[
                    ("cache-control", "max-age=1"),
                    ("etag", "\"v1\""),
                    ("set-cookie", "a=b"),
                ],
                "body",
            )
        },
    )
    .await;
    assert_eq!(site.get("/c").await.all("set-cookie"), ["a=b"]);
    pass(2).await;
    let revalidated = site.get("/c").await;
    assert_eq!(revalidated.text(), "body");
    assert_eq!(revalidated.all("set-cookie"), ["a=c"]);
    let hit = site.get("/c").await;
    assert!(hit.hit(), "{:?}", hit.cs());
    assert_eq!(
        hit.all("set-cookie"),
        ["a=c"],
        "the stored field was replaced"
    );
    assert_eq!(site.calls(), 2);

    // Without cookies in the cache, the 304's cookie reaches its own client only, once.
    let site = Site::default(|n, _, h| {
        if n > 1 && h.contains_key("if-none-match") {
            return res(304, &[("etag", "\"v1\""), ("set-cookie", "a=c")], "");
        }
        res(
            200,
            &[("cache-control", "max-age=1"), ("etag", "\"v1\"")],
            "body",
        )
    })
    .await;
    site.get("/c").await;
    pass(2).await;
    assert_eq!(site.get("/c").await.all("set-cookie"), ["a=c"]);
}

#[tokio::test(start_paused = true)]
async fn a_head_response_with_matching_validators_updates_the_stored_get_response() {
    let site = Site::default(|n, method, _| {
        let version = if n == 1 { "1" } else { "2" };
        let mut r = res(
            200,
            &[
                ("cache-control", "max-age=1"),
                ("etag", "\"v1\""),
                ("x-version", version),
            ],
            "the body",
        );
        if method == Method::HEAD {
            *r.body_mut() = axum::body::Body::empty();
        }
        r
    })
    .await;
    site.get("/h").await;
    pass(2).await;
    // The stale entry sends the HEAD to the origin, whose answer has the stored ETag.
    let head = site.send("HEAD", "/h", &[]).await;
    assert_eq!(head.header("x-version"), Some("2"));
    assert_eq!(site.calls(), 2);
    // RFC 9111 4.3.5: the stored GET response took the HEAD's fields and freshness.
    let get = site.get("/h").await;
    assert!(get.hit(), "{:?}", get.cs());
    assert_eq!(get.header("x-version"), Some("2"));
    assert_eq!(get.text(), "the body");
    assert_eq!(site.calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// Required behaviours
// ---------------------------------------------------------------------------------------------

/// Whether the second GET of a response with `fields` is served from the cache.
async fn reused(
    cache: ResponseCacheLayer,
    fields: &'static [(&'static str, &'static str)],
) -> bool {
    let site = Site::new(cache, move |_, _, _| res(200, fields, "x")).await;
    site.get("/t").await;
    pass(2).await;
    site.get("/t").await.hit()
}

#[tokio::test(start_paused = true)]
async fn cdn_cache_control_is_honoured_ahead_of_cache_control() {
    let cdn = ResponseCacheLayer::new;
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("cdn-cache-control", "max-age=3600")], true),
        (&[("cdn-cache-control", "max-age=99999999999")], true),
        (&[("cdn-cache-control", "foobar, max-age=3600")], true),
        (
            &[
                ("cache-control", "max-age=1"),
                ("cdn-cache-control", "max-age=3600"),
            ],
            true,
        ),
        (
            &[
                ("cache-control", "max-age=3600"),
                ("cdn-cache-control", "max-age=1"),
            ],
            false,
        ),
        (
            &[
                ("cdn-cache-control", "max-age=0"),
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ],
            false,
        ),
        (
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=10000"),
            ],
            true,
        ),
        (
            &[
                ("cache-control", "max-age=10000"),
                ("cdn-cache-control", "no-store"),
            ],
            false,
        ),
        (
            &[
                ("cache-control", "max-age=10000"),
                ("cdn-cache-control", "no-cache"),
            ],
            false,
        ),
        (
            &[
                ("cache-control", "max-age=10000"),
                ("cdn-cache-control", "private"),
            ],
            false,
        ),
        // Not a valid Structured Field: ignored, Cache-Control applies.
        (
            &[
                ("cache-control", "max-age=1"),
                ("cdn-cache-control", "max-age =100"),
            ],
            false,
        ),
        (
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=10000, &&&&&"),
            ],
            false,
        ),
        (
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=\"10000\""),
            ],
            false,
        ),
    ];
    for (fields, want) in cases {
        assert_eq!(reused(cdn(), fields).await, *want, "{fields:?}");
    }
    // Forwarded as it came.
    let site = Site::default(|_, _, _| res(200, &[("cdn-cache-control", "foo")], "x")).await;
    assert_eq!(
        site.get("/f").await.header("cdn-cache-control"),
        Some("foo")
    );
}

#[tokio::test(start_paused = true)]
async fn a_cache_specific_targeted_field_comes_first_and_cdn_cache_control_can_be_turned_off() {
    let own = || {
        builder()
            .targeted_cache_control(["towerperf-cache-control", "cdn-cache-control"])
            .build()
            .unwrap()
    };
    let both: &[(&str, &str)] = &[
        ("towerperf-cache-control", "max-age=3600"),
        ("cdn-cache-control", "no-store"),
    ];
    assert!(reused(own(), both).await);
    let cdn_only: &[(&str, &str)] = &[("cdn-cache-control", "max-age=3600")];
    assert!(reused(own(), cdn_only).await);
    let off = builder()
        .targeted_cache_control::<[&str; 0]>([])
        .build()
        .unwrap();
    assert!(!reused(off, cdn_only).await, "Cache-Control only");
    let bad = builder().targeted_cache_control(["not a header"]).build();
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("targeted_cache_control"));
}

#[tokio::test(start_paused = true)]
async fn an_age_that_is_a_list_or_invalid_makes_the_response_stale() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (
            &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
            false,
        ),
        (&[("cache-control", "max-age=3600"), ("age", "abc")], false),
        (
            &[("cache-control", "max-age=3600"), ("age", "-7200")],
            false,
        ),
        (
            &[("cache-control", "max-age=3600"), ("age", "7200.0")],
            false,
        ),
        (
            &[("cache-control", "max-age=3600"), ("age", "0, 7200")],
            true,
        ),
        (&[("cache-control", "max-age=3600"), ("age", "60")], true),
    ];
    for (fields, want) in cases {
        assert_eq!(
            reused(ResponseCacheLayer::new(), fields).await,
            *want,
            "{fields:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_successful_unknown_method_invalidates_the_target_uri() {
    let site = Site::default(|_, _, _| res(200, &[("cache-control", "max-age=3600")], "x")).await;
    site.get("/u").await;
    assert!(site.get("/u").await.hit());
    site.send("M-SEARCH", "/u", &[]).await;
    let after = site.get("/u").await;
    assert!(!after.hit(), "{:?}", after.cs());
    assert_eq!(site.calls(), 3);
    // A safe method does not.
    assert!(site.get("/u").await.hit());
    site.send("OPTIONS", "/u", &[]).await;
    assert!(site.get("/u").await.hit());
}

#[tokio::test(start_paused = true)]
async fn a_stored_content_encoding_is_reused_unless_the_response_varies_on_accept_encoding() {
    let gzip: &[(&str, &str)] = &[
        ("cache-control", "max-age=3600"),
        ("content-encoding", "gzip"),
    ];
    let site = Site::default(move |_, _, _| res(200, gzip, "x")).await;
    site.send("GET", "/g", &[("accept-encoding", "gzip")]).await;
    let other = site.send("GET", "/g", &[("accept-encoding", "br")]).await;
    assert!(other.hit(), "reused as stored: {:?}", other.cs());
    assert_eq!(other.header("content-encoding"), Some("gzip"));

    // Varying on Accept-Encoding keeps the protection.
    let varying: &[(&str, &str)] = &[
        ("cache-control", "max-age=3600"),
        ("content-encoding", "gzip"),
        ("vary", "accept-encoding"),
    ];
    let site = Site::default(move |_, _, _| res(200, varying, "x")).await;
    site.send("GET", "/g", &[("accept-encoding", "gzip")]).await;
    assert!(!site
        .send("GET", "/g", &[("accept-encoding", "br")])
        .await
        .hit());

    // So does the explicit option.
    let strict = builder().require_accepted_coding(true).build().unwrap();
    let site = Site::new(strict, move |_, _, _| res(200, gzip, "x")).await;
    site.send("GET", "/g", &[("accept-encoding", "gzip")]).await;
    assert!(!site
        .send("GET", "/g", &[("accept-encoding", "br")])
        .await
        .hit());
}

#[tokio::test(start_paused = true)]
async fn a_206_that_matches_the_stored_response_updates_its_header_fields() {
    let site = Site::default(|n, _, h| {
        if h.contains_key("range") {
            return res(
                206,
                &[
                    ("cache-control", "max-age=3600"),
                    ("etag", "\"v1\""),
                    ("content-range", "bytes 0-1/8"),
                    ("x-version", "2"),
                ],
                "th",
            );
        }
        assert_eq!(n, 1, "the complete response is fetched once");
        res(
            200,
            &[
                ("cache-control", "max-age=1"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
                ("x-kept", "yes"),
            ],
            "the body",
        )
    })
    .await;
    site.get("/p").await;
    pass(2).await;
    let partial = site.send("GET", "/p", &[("range", "bytes=0-1")]).await;
    assert_eq!(partial.status, 206);
    assert_eq!(partial.text(), "th");
    let full = site.get("/p").await;
    assert!(full.hit(), "{:?}", full.cs());
    assert_eq!(full.status, 200);
    assert_eq!(full.text(), "the body");
    assert_eq!(full.header("x-version"), Some("2"));
    assert_eq!(full.header("x-kept"), Some("yes"));
    assert_eq!(full.header("content-range"), None);
    assert_eq!(site.calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// Byte ranges from the cache
// ---------------------------------------------------------------------------------------------

fn ranges_origin() -> impl Fn(usize, &Method, &HeaderMap) -> Response + Clone + Send + Sync + 'static
{
    |_, _, _| {
        res(
            200,
            &[("cache-control", "max-age=3600"), ("etag", "\"r1\"")],
            "0123456789",
        )
    }
}

#[tokio::test(start_paused = true)]
async fn ranges_are_served_from_a_stored_complete_response() {
    let site = Site::default(ranges_origin()).await;
    site.get("/r").await;
    for (range, body, content_range) in [
        ("bytes=0-1", "01", "bytes 0-1/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=5-500", "56789", "bytes 5-9/10"),
    ] {
        let r = site.send("GET", "/r", &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert!(r.hit(), "{range}: {:?}", r.cs());
        assert_eq!(r.text(), body, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
        assert_eq!(r.header("content-length"), Some(&*body.len().to_string()));
    }
    let r = site.send("GET", "/r", &[("range", "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    assert!(r.body.is_empty());
    // If-Range: the stored strong ETag lets the range through; another one gets the whole.
    for (condition, status, body) in [("\"r1\"", 206, "0"), ("\"r0\"", 200, "0123456789")] {
        let headers = [("range", "bytes=0-0"), ("if-range", condition)];
        let r = site.send("GET", "/r", &headers).await;
        assert_eq!((r.status.as_u16(), r.text()), (status, body), "{condition}");
    }
    // Several ranges: the whole response.
    let r = site.send("GET", "/r", &[("range", "bytes=0-0,2-3")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(site.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn any_range_over_http_is_the_slice_with_its_exact_content_range() {
    use proptest::strategy::{Strategy, ValueTree};
    let body: String = (0..97u8).map(|i| char::from(b'!' + i % 90)).collect();
    let stored = body.clone();
    let site =
        Site::default(move |_, _, _| res(200, &[("cache-control", "max-age=3600")], &*stored))
            .await;
    site.get("/p").await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (0u64..120, 0u64..120, 0u8..3);
    let len = body.len() as u64;
    for _ in 0..64 {
        let (a, b, form) = strategy.new_tree(&mut runner).unwrap().current();
        let (spec, first, last) = match form {
            0 => (
                format!("bytes={}-{}", a.min(b), a.max(b)),
                a.min(b),
                a.max(b).min(len - 1),
            ),
            1 => (format!("bytes={a}-"), a, len - 1),
            _ => (format!("bytes=-{a}"), len.saturating_sub(a), len - 1),
        };
        let satisfiable = if form == 2 { a > 0 } else { first < len };
        let r = site.send("GET", "/p", &[("range", &spec)]).await;
        if satisfiable {
            assert_eq!(r.status, 206, "{spec}");
            assert_eq!(r.text(), &body[first as usize..=last as usize], "{spec}");
            assert_eq!(
                r.header("content-range"),
                Some(&*format!("bytes {first}-{last}/{len}"))
            );
        } else {
            assert_eq!(r.status, 416, "{spec}");
            assert_eq!(r.header("content-range"), Some(&*format!("bytes */{len}")));
        }
    }
    assert_eq!(site.calls(), 1);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn ranges_are_served_from_a_redis_hit_too() {
    let redis = common::redis::RedisServer::start();
    let (first, second) = Site::redis_pair(&redis, ranges_origin()).await;
    first.get("/redis").await;
    first.stored_in_redis().await;
    let r = second.send("GET", "/redis", &[("range", "bytes=-2")]).await;
    assert!(r.hit() && r.cs().contains(&"detail=redis"), "{:?}", r.cs());
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "89");
    assert_eq!(second.calls(), 0);
    assert_eq!(r.header("content-range"), Some("bytes 8-9/10"));
}

// ---------------------------------------------------------------------------------------------
// Other optional behaviours
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn any_status_with_explicit_freshness_and_heuristic_ones_without() {
    for status in [
        200, 203, 204, 299, 301, 400, 404, 410, 500, 502, 503, 504, 599,
    ] {
        let fields: &[(&str, &str)] = &[("cache-control", "public, max-age=3600")];
        let site = Site::default(move |_, _, _| res(status, fields, "")).await;
        site.get("/s").await;
        assert!(site.get("/s").await.hit(), "explicit {status}");
    }
    let last_modified =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100 * 86_400));
    for (status, cached) in [
        (200, true),
        (204, true),
        (404, true),
        (405, true),
        (410, true),
        (414, true),
        (501, false),
        (201, false),
        (302, false),
        (500, false),
    ] {
        let lm = last_modified.clone();
        let site = Site::default(move |_, _, _| res(status, &[("last-modified", &lm)], "")).await;
        site.get("/h").await;
        assert_eq!(site.get("/h").await.hit(), cached, "heuristic {status}");
    }
    // 501 with `public`: a server error, but heuristically cacheable.
    let lm = last_modified.clone();
    let site = Site::default(move |_, _, _| {
        res(
            501,
            &[("last-modified", &lm), ("cache-control", "public")],
            "",
        )
    })
    .await;
    site.get("/h").await;
    assert!(site.get("/h").await.hit());
}

#[tokio::test(start_paused = true)]
async fn expires_in_obsolete_formats_and_any_case_gives_freshness() {
    for expires in [
        "Thursday, 01-Jan-37 00:00:00 GMT",
        "Thu Jan  1 00:00:00 2037",
        "thu, 01 jan 2037 00:00:00 gmt",
    ] {
        let site = Site::default(move |_, _, _| res(200, &[("expires", expires)], "x")).await;
        site.get("/x").await;
        pass(10).await;
        assert!(site.get("/x").await.hit(), "{expires}");
    }
}

#[tokio::test(start_paused = true)]
async fn if_modified_since_is_answered_from_the_stored_date_without_last_modified() {
    let site = Site::default(|_, _, _| res(200, &[("cache-control", "max-age=3600")], "x")).await;
    site.get("/d").await;
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let r = site
        .send("GET", "/d", &[("if-modified-since", &later)])
        .await;
    assert_eq!(r.status, 304);
    let earlier = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let r = site
        .send("GET", "/d", &[("if-modified-since", &earlier)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(site.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn must_understand_stores_a_known_status_despite_no_store() {
    let fields: &[(&str, &str)] = &[("cache-control", "no-store, must-understand, max-age=3600")];
    let site = Site::default(move |_, _, _| res(200, fields, "x")).await;
    site.get("/m").await;
    assert!(site.get("/m").await.hit());
    let site = Site::default(move |_, _, _| res(299, fields, "x")).await;
    site.get("/m").await;
    assert!(
        !site.get("/m").await.hit(),
        "an unknown status is not stored"
    );
}

/// An origin that answers `POST /p?x=1` with the new representation of `/p?x=1`, and `GET`
/// with an older one.
fn post_origin() -> impl Fn(usize, &Method, &HeaderMap) -> Response + Clone + Send + Sync + 'static
{
    |_, method, _| {
        if method == Method::POST {
            let fields = [
                ("cache-control", "max-age=3600"),
                ("content-location", "/p?x=1"),
            ];
            return res(200, &fields, "posted");
        }
        res(200, &[("cache-control", "max-age=3600")], "fetched")
    }
}

#[tokio::test(start_paused = true)]
async fn a_post_response_with_explicit_freshness_and_its_own_content_location_serves_later_gets() {
    let site = Site::default(post_origin()).await;
    let posted = site.send("POST", "/p?x=1", &[]).await;
    assert!(posted.stored(), "{:?}", posted.cs());
    assert!(posted.cs().contains(&"fwd=method"), "{:?}", posted.cs());
    let get = site.get("/p?x=1").await;
    assert!(get.hit(), "{:?}", get.cs());
    assert_eq!(get.text(), "posted");
    assert_eq!(site.calls(), 1);
    // The HEAD of that GET too.
    assert!(site.send("HEAD", "/p?x=1", &[]).await.hit());

    // Without explicit freshness, or with another Content-Location (or none), a POST response
    // only invalidates.
    for fields in [
        &[("content-location", "/q"), ("etag", "\"1\"")][..],
        &[
            ("content-location", "/other"),
            ("cache-control", "max-age=60"),
        ][..],
        &[("cache-control", "max-age=60")][..],
        &[
            ("content-location", "http://elsewhere.example/q"),
            ("cache-control", "max-age=60"),
        ][..],
    ] {
        let site = Site::default(move |_, method, _| {
            let body = if method == Method::POST {
                "posted"
            } else {
                "fetched"
            };
            res(200, fields, body)
        })
        .await;
        site.send("POST", "/q", &[]).await;
        let get = site.get("/q").await;
        assert!(!get.hit(), "{fields:?}: {:?}", get.cs());
        assert_eq!(get.text(), "fetched", "{fields:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_absolute_content_location_of_the_same_origin_counts_as_the_target_uri() {
    let site = Site::default(|_, method, h| {
        let host = h["host"].to_str().unwrap().to_owned();
        let location = format!("http://{host}/abs");
        let body = if method == Method::POST {
            "posted"
        } else {
            "fetched"
        };
        res(
            200,
            &[
                ("cache-control", "max-age=3600"),
                ("content-location", &location),
            ],
            body,
        )
    })
    .await;
    site.send("POST", "/abs", &[]).await;
    let get = site.get("/abs").await;
    assert!(get.hit(), "{:?}", get.cs());
    assert_eq!(get.text(), "posted");
}

// ---------------------------------------------------------------------------------------------
// Vary normalisation
// ---------------------------------------------------------------------------------------------

/// A site whose responses vary on `name`, echoing the request's value as the body.
async fn varying(name: &'static str, extra: &'static [(&'static str, &'static str)]) -> Site {
    Site::default(move |_, _, h| {
        let echo = h
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join("|");
        let mut fields = vec![("cache-control", "max-age=3600"), ("vary", name)];
        fields.extend_from_slice(extra);
        res(200, &fields, echo)
    })
    .await
}

/// Whether a request with `headers` is a hit after one with `stored` was stored.
async fn selects(
    site: &Site,
    path: &str,
    stored: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> bool {
    site.send("GET", path, stored).await;
    site.send("GET", path, headers).await.hit()
}

#[tokio::test(start_paused = true)]
async fn unknown_selecting_fields_are_compared_without_whitespace_and_with_lines_combined() {
    let site = varying("foo", &[]).await;
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Fields, Fields, bool)] = &[
        (&[("foo", "1,2")], &[("foo", " 1, 2 ")], true),
        (&[("foo", "1,2")], &[("foo", "1 ,\t2")], true),
        (&[("foo", "1, 2")], &[("foo", "1"), ("foo", "2")], true),
        (&[("foo", "1,2")], &[("foo", "2,1")], false),
        (&[("foo", "1,2")], &[("foo", "1,3")], false),
        (&[("foo", "a b")], &[("foo", "ab")], false),
        (&[("foo", "\"a, b\"")], &[("foo", "\"a,b\"")], false),
        (&[("foo", "1")], &[], false),
    ];
    for (i, (stored, asked, hit)) in cases.iter().enumerate() {
        let path = format!("/v{i}");
        assert_eq!(
            selects(&site, &path, stored, asked).await,
            *hit,
            "{stored:?} {asked:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn accept_language_is_compared_ignoring_case_order_and_whitespace() {
    let site = varying("accept-language", &[]).await;
    let stored: &[(&str, &str)] = &[("accept-language", "en, de")];
    for (i, (asked, hit)) in [
        ("de, en", true),
        ("eN, De", true),
        (" en ,   de", true),
        ("de;q=1.0, en", true),
        ("en", false),
        ("en, de;q=0.5", false),
        ("en, de, fr", false),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/l{i}");
        let asked = [("accept-language", asked)];
        assert_eq!(
            selects(&site, &path, stored, &asked).await,
            hit,
            "{asked:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn accept_language_selects_a_stored_language_by_q_value() {
    let site = varying("accept-language", &[("content-language", "de")]).await;
    let stored: &[(&str, &str)] = &[("accept-language", "en, de")];
    for (i, (asked, hit)) in [
        ("fr;q=0.5, de;q=1.0", true),
        ("DE", true),
        ("de;q=0.8, en;q=0.7, *;q=0.1", true),
        ("fr, de", false),
        ("fr;q=0.9, de;q=0.5", false),
        ("de-AT", false),
        ("*", false),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/s{i}");
        let asked = [("accept-language", asked)];
        assert_eq!(
            selects(&site, &path, stored, &asked).await,
            hit,
            "{asked:?}"
        );
    }
    // Only a response in one language is selected so.
    let site = varying("accept-language", &[("content-language", "de, en")]).await;
    assert!(!selects(&site, "/two", stored, &[("accept-language", "de")]).await);
    // And every other selecting field must still match.
    let site = Site::default(|_, _, _| {
        let fields = [
            ("cache-control", "max-age=3600"),
            ("vary", "accept-language, foo"),
            ("content-language", "de"),
        ];
        res(200, &fields, "x")
    })
    .await;
    let stored: &[(&str, &str)] = &[("accept-language", "en, de"), ("foo", "1")];
    assert!(
        selects(
            &site,
            "/f",
            stored,
            &[("accept-language", "de"), ("foo", "1")]
        )
        .await
    );
    assert!(
        !selects(
            &site,
            "/g",
            stored,
            &[("accept-language", "de"), ("foo", "2")]
        )
        .await
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn normalised_selecting_fields_find_a_redis_copy_too() {
    let script = |_: usize, _: &Method, _: &HeaderMap| {
        let fields = [
            ("cache-control", "max-age=3600"),
            ("vary", "accept-language, foo"),
        ];
        res(200, &fields, "x")
    };
    let redis = common::redis::RedisServer::start();
    let (first, second) = Site::redis_pair(&redis, script).await;
    first
        .send(
            "GET",
            "/n",
            &[("accept-language", "en, de"), ("foo", "1,2")],
        )
        .await;
    first.stored_in_redis().await;
    let r = second
        .send(
            "GET",
            "/n",
            &[("accept-language", "DE,en"), ("foo", " 1, 2")],
        )
        .await;
    assert!(r.hit() && r.cs().contains(&"detail=redis"), "{:?}", r.cs());
    assert_eq!(second.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// Stored parts (206)
// ---------------------------------------------------------------------------------------------

/// An origin of the 10-byte body `0123456789` that answers `Range: bytes=a-b` with that part.
fn parts_origin() -> impl Fn(usize, &Method, &HeaderMap) -> Response + Clone + Send + Sync + 'static
{
    |_, _, h| {
        const BODY: &str = "0123456789";
        let fields = [("cache-control", "max-age=3600"), ("etag", "\"p1\"")];
        let Some(range) = h.get("range").and_then(|v| v.to_str().ok()) else {
            return res(200, &fields, BODY);
        };
        let (a, b) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .expect("bytes=a-b");
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        let content_range = format!("bytes {a}-{b}/10");
        let mut part = fields.to_vec();
        part.push(("content-range", &content_range));
        res(206, &part, &BODY[a..=b])
    }
}

#[tokio::test(start_paused = true)]
async fn a_stored_part_answers_the_ranges_inside_it_and_only_those() {
    let site = Site::default(parts_origin()).await;
    let first = site.send("GET", "/part", &[("range", "bytes=2-7")]).await;
    assert_eq!((first.status.as_u16(), first.text()), (206, "234567"));
    assert!(first.stored(), "{:?}", first.cs());
    for (range, body, content_range) in [
        ("bytes=3-5", "345", "bytes 3-5/10"),
        ("bytes=2-7", "234567", "bytes 2-7/10"),
        ("bytes=7-7", "7", "bytes 7-7/10"),
    ] {
        let r = site.send("GET", "/part", &[("range", range)]).await;
        assert!(r.hit(), "{range}: {:?}", r.cs());
        assert_eq!((r.status.as_u16(), r.text()), (206, body), "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
    }
    // Past the complete length: 416 from the part, which knows it.
    let r = site.send("GET", "/part", &[("range", "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    assert_eq!(site.calls(), 1);
    // Not inside the part, or with another validator: the origin.
    let r = site.send("GET", "/part", &[("range", "bytes=1-3")]).await;
    assert!(r.cs().contains(&"fwd=partial"), "{:?}", r.cs());
    assert_eq!(r.text(), "123");
    assert_eq!(site.calls(), 2);
    let headers = [("range", "bytes=1-2"), ("if-range", "\"p0\"")];
    assert!(!site.send("GET", "/part", &headers).await.hit());
    assert_eq!(site.calls(), 3);
    // A request for the whole response is never answered with a part.
    let whole = site.get("/part").await;
    assert_eq!((whole.status.as_u16(), whole.text()), (200, "0123456789"));
    assert!(!whole.hit());
    assert!(!site
        .send("HEAD", "/part", &[])
        .await
        .headers
        .contains_key("content-range"));
    // The complete response, once stored, answers every range.
    let r = site.send("GET", "/part", &[("range", "bytes=0-9")]).await;
    assert!(r.hit(), "{:?}", r.cs());
    assert_eq!(r.text(), "0123456789");
}

#[tokio::test(start_paused = true)]
async fn a_part_that_is_not_one_asked_range_is_not_stored() {
    // Two parts in one multipart body, and a part to a request without Range.
    let site = Site::default(|_, _, _| {
        res(
            206,
            &[
                ("cache-control", "max-age=3600"),
                ("content-type", "multipart/byteranges; boundary=x"),
            ],
            "--x--",
        )
    })
    .await;
    let r = site.send("GET", "/m", &[("range", "bytes=0-1,3-4")]).await;
    assert!(!r.stored(), "{:?}", r.cs());
    let site = Site::default(|_, _, _| {
        let fields = [
            ("cache-control", "max-age=3600"),
            ("content-range", "bytes 0-1/10"),
        ];
        res(206, &fields, "01")
    })
    .await;
    assert!(!site.get("/n").await.stored());
    // A Content-Range the body does not fill.
    let r = site.send("GET", "/n", &[("range", "bytes=0-1")]).await;
    assert!(r.stored(), "{:?}", r.cs());
    let site = Site::default(|_, _, _| {
        let fields = [
            ("cache-control", "max-age=3600"),
            ("content-range", "bytes 0-5/10"),
        ];
        res(206, &fields, "01")
    })
    .await;
    site.send("GET", "/short", &[("range", "bytes=0-5")]).await;
    let r = site.send("GET", "/short", &[("range", "bytes=0-1")]).await;
    assert!(!r.hit(), "{:?}", r.cs());
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_stored_part_answers_sub_ranges_from_a_redis_hit_too() {
    let redis = common::redis::RedisServer::start();
    let (first, second) = Site::redis_pair(&redis, parts_origin()).await;
    first.send("GET", "/rp", &[("range", "bytes=2-7")]).await;
    first.stored_in_redis().await;
    let r = second.send("GET", "/rp", &[("range", "bytes=4-5")]).await;
    assert!(r.hit() && r.cs().contains(&"detail=redis"), "{:?}", r.cs());
    assert_eq!((r.status.as_u16(), r.text()), (206, "45"));
    assert_eq!(r.header("content-range"), Some("bytes 4-5/10"));
    let whole = second.get("/rp").await;
    assert_eq!((whole.status.as_u16(), whole.text()), (200, "0123456789"));
    assert_eq!(second.calls(), 1);
}

// ---------------------------------------------------------------------------------------------
// The hit path stays lean
// ---------------------------------------------------------------------------------------------

#[global_allocator]
static ALLOCATOR: common::alloc::CountingAllocator = common::alloc::CountingAllocator;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hit_through_normalised_vary_fields_allocates_no_more_than_a_plain_hit() {
    use http_body_util::{BodyExt, Full};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use tower::{Layer, Service, ServiceExt};

    let origin = tower::service_fn(|req: axum::http::Request<Full<Bytes>>| async move {
        // The same fields either way (standard names, no copy on a clone) but for `Vary`.
        let (name, value) = match req.uri().path() {
            "/vary" => ("vary", "accept-language, foo, accept-encoding"),
            _ => ("link", "accept-language, foo, accept-encoding"),
        };
        let res = axum::http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header(name, value)
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap();
        Ok::<_, std::convert::Infallible>(res)
    });
    let mut svc = ResponseCacheLayer::new().layer(origin);
    let request = |path: &str| {
        axum::http::Request::get(path)
            .header("host", "alloc.test")
            .header("accept-language", " De;q=0.9 , en-US,  fr;q=0.1")
            .header("foo", " 1, 2 ")
            .header("accept-encoding", "gzip, br")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for path in ["/plain", "/vary"] {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(request(path))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let mut hit = |path: &str| {
        let req = request(path);
        let before = common::alloc::allocations();
        let mut fut = std::pin::pin!(svc.call(req));
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("a hit is answered at once");
        };
        let n = common::alloc::allocations() - before;
        assert_eq!(res.status(), 200);
        drop(res);
        n
    };
    // The first hits make one-off things (metric handles, lazily built state).
    hit("/plain");
    hit("/vary");
    for _ in 0..3 {
        let (plain, vary) = (hit("/plain"), hit("/vary"));
        assert_eq!(vary, plain, "a Vary hit allocates what a plain hit does");
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_post_response_stored_for_gets_survives_its_own_invalidation_across_the_fleet() {
    let redis = common::redis::RedisServer::start();
    let (first, second) = Site::redis_pair(&redis, post_origin()).await;
    // The other instance has the older representation in memory (and Redis).
    assert_eq!(second.get("/p?x=1").await.text(), "fetched");
    second.stored_in_redis().await;
    let posted = first.send("POST", "/p?x=1", &[]).await;
    assert!(posted.stored(), "{:?}", posted.cs());
    first.until(|r| r.purges_sent > 0 && r.stores > 0).await;
    second.until(|r| r.purges_received > 0).await;
    let here = first.get("/p?x=1").await;
    assert!(here.hit(), "{:?}", here.cs());
    assert_eq!(here.text(), "posted");
    // The invalidation removed the older copy there; Redis has the new one.
    let there = second.get("/p?x=1").await;
    assert!(
        there.hit() && there.cs().contains(&"detail=redis"),
        "{:?}",
        there.cs()
    );
    assert_eq!(there.text(), "posted");
    assert_eq!((first.calls(), second.calls()), (1, 1));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_stored_language_is_selected_by_q_value_from_redis_too() {
    let script = |_: usize, _: &Method, h: &HeaderMap| {
        let fields = [
            ("cache-control", "max-age=3600"),
            ("vary", "accept-language, foo"),
            ("content-language", "de"),
        ];
        let foo = h.get("foo").map_or("", |v| v.to_str().unwrap()).to_owned();
        res(200, &fields, foo)
    };
    let redis = common::redis::RedisServer::start();
    let (first, second) = Site::redis_pair(&redis, script).await;
    let stored = [("accept-language", "en, de"), ("foo", "1")];
    first.send("GET", "/lang", &stored).await;
    first.stored_in_redis().await;
    let asked = [("accept-language", "fr;q=0.5, de;q=1.0"), ("foo", " 1")];
    let r = second.send("GET", "/lang", &asked).await;
    assert!(r.hit() && r.cs().contains(&"detail=redis"), "{:?}", r.cs());
    assert_eq!(r.text(), "1");
    // Another value of the other selecting field, or a tie, is not selected.
    let other = [("accept-language", "de"), ("foo", "2")];
    assert!(!second.send("GET", "/lang", &other).await.hit());
    let tie = [("accept-language", "fr, de"), ("foo", "1")];
    assert!(!second.send("GET", "/lang", &tie).await.hit());
    assert_eq!(second.calls(), 2);
}
