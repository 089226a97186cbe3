//! `AdaptiveCompressionLayer` against a real axum server on loopback with a real HTTP client
//! (reqwest without its decompression features, so the client sees the raw coded bytes). Every
//! compressed body is decoded with independent decoders (flate2, brotli, zstd) and compared with
//! the original bytes.

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{client, serve};
use futures_util::StreamExt;
use http_body::Body as _;
use tokio::sync::mpsc;
use tower::{service_fn, Layer, ServiceExt};
use tower_perf::cache::ResponseCacheLayer;
use tower_perf::compression::{
    AdaptiveCompressionLayer, Algorithm, CompressionHandle, Decision, EventStreams, Tier,
};
use tower_perf::queue::PriorityQueueLayer;

/// A JSON document of about `n` bytes, deterministic, with the redundancy of real API output.
fn json(n: usize) -> String {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"Property {i}\",\"city\":\"{}\",\"status\":\"{}\",\"monthly_rent\":{}}}",
            ["Lisbon", "Porto", "Braga", "Faro"][i % 4],
            ["active", "vacant", "maintenance"][i % 3],
            900 + (i * 37) % 1100
        ));
        i += 1;
    }
    s.push(']');
    s
}

/// Decodes a whole body with the decoder for `coding` (`None`: identity).
fn decode(coding: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(data),
        Some("gzip") => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gzip");
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .expect("zlib");
        }
        Some("br") => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        Some("zstd") => out = zstd::stream::decode_all(data).expect("zstd"),
        Some(other) => panic!("unexpected coding {other}"),
    }
    out
}

/// A streaming decoder that takes compressed bytes as they arrive.
enum StreamDecoder {
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl StreamDecoder {
    fn new(coding: &str) -> Self {
        match coding {
            "gzip" => Self::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "deflate" => Self::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => Self::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            "zstd" => Self::Zstd(zstd::stream::write::Decoder::new(Vec::new()).unwrap()),
            other => panic!("unexpected coding {other}"),
        }
    }

    /// Feeds compressed bytes; returns everything decoded so far and clears it.
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Gzip(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                std::mem::take(d.get_mut())
            }
            Self::Deflate(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                std::mem::take(d.get_mut())
            }
            Self::Br(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                std::mem::take(d.get_mut())
            }
            Self::Zstd(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
                std::mem::take(d.get_mut())
            }
        }
    }
}

const CODINGS: [&str; 4] = ["zstd", "br", "gzip", "deflate"];

fn typed(content_type: &'static str, body: impl Into<Body>) -> Response {
    Response::builder()
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

/// The routes most tests use.
fn routes() -> Router {
    let doc = json(20_000);
    let html = format!(
        "<!doctype html><html><body>{}</body></html>",
        "<p>hello world</p>".repeat(1000)
    );
    let bin: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    Router::new()
        .route(
            "/json",
            get({
                let d = doc.clone();
                move || async move { typed("application/json", d) }
            }),
        )
        .route(
            "/html",
            get({
                let h = html.clone();
                move || async move { typed("text/html; charset=utf-8", h) }
            }),
        )
        .route(
            "/png",
            get({
                let b = bin.clone();
                move || async move { typed("image/png", b) }
            }),
        )
        .route(
            "/woff2",
            get({
                let b = bin.clone();
                move || async move { typed("font/woff2", b) }
            }),
        )
        .route(
            "/svg",
            get({
                let h = html.clone();
                move || async move { typed("image/svg+xml", h) }
            }),
        )
        .route(
            "/small",
            get(|| async { typed("application/json", "{\"ok\":true}") }),
        )
        .route(
            "/none",
            get({
                let d = doc.clone();
                move || async move { Response::new(Body::from(d)) }
            }),
        )
}

async fn app(layer: AdaptiveCompressionLayer) -> String {
    let addr = serve(routes().layer(layer)).await;
    format!("http://{addr}")
}

async fn fetch(url: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = client().get(url);
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body"))
}

fn coding(h: &HeaderMap) -> Option<&str> {
    h.get("content-encoding").map(|v| v.to_str().unwrap())
}

fn varies(h: &HeaderMap) -> bool {
    h.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    })
}

#[tokio::test]
async fn every_coding_decodes_to_the_original_bytes() {
    let base = app(AdaptiveCompressionLayer::new()).await;
    let doc = json(20_000);
    for c in CODINGS {
        for path in ["/json", "/html"] {
            let (status, h, body) = fetch(&format!("{base}{path}"), Some(c)).await;
            assert_eq!(status, 200);
            assert_eq!(coding(&h), Some(c), "{path} {c}");
            assert!(varies(&h));
            assert!(h.get("content-length").is_none(), "{path} {c}");
            let decoded = decode(Some(c), &body);
            if path == "/json" {
                assert_eq!(decoded, doc.as_bytes(), "{c}");
                assert!(body.len() * 4 < doc.len(), "{c}: {} bytes", body.len());
            } else {
                assert!(decoded.starts_with(b"<!doctype html>"));
            }
        }
    }
}

#[tokio::test]
async fn accept_encoding_and_content_type_matrix() {
    let layer = AdaptiveCompressionLayer::new();
    let handle = layer.handle();
    let base = app(layer).await;
    // (Accept-Encoding, the coding a compressible response gets)
    let accepts: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some(""), None),
        (Some("gzip, deflate, br, zstd"), Some("zstd")),
        (Some("gzip, deflate, br"), Some("br")),
        (Some("gzip"), Some("gzip")),
        (Some("deflate"), Some("deflate")),
        (Some("GZIP ; Q=0.5 , Br;q=0.4"), Some("gzip")),
        (Some("br;q=0.8, zstd;q=0.9"), Some("zstd")),
        (Some("*"), Some("zstd")),
        (Some("*;q=0.1, gzip;q=0.2"), Some("gzip")),
        (Some("gzip;q=0, *"), Some("zstd")),
        (Some("identity"), None),
        (Some("identity, gzip;q=0.5"), None),
        (Some("x-gzip"), Some("gzip")),
        (Some("compress, exi"), None),
        (Some("gzip;q=2, br;q=abc, deflate"), Some("deflate")),
        (Some("identity;q=0, gzip"), Some("gzip")),
        (Some("br;q=0, gzip;q=0, zstd;q=0, deflate;q=0"), None),
    ];
    // (path, compressible, original bytes)
    let doc = json(20_000);
    let paths: &[(&str, bool)] = &[
        ("/json", true),
        ("/html", true),
        ("/svg", true),
        ("/png", false),
        ("/woff2", false),
        ("/none", false),
    ];
    for &(path, compressible) in paths {
        let (_, _, original) = fetch(&format!("{base}{path}"), None).await;
        for &(accept, expect) in accepts {
            let (status, h, body) = fetch(&format!("{base}{path}"), accept).await;
            assert_eq!(status, 200, "{path} {accept:?}");
            let want = if compressible { expect } else { None };
            assert_eq!(coding(&h), want, "{path} {accept:?}");
            assert_eq!(varies(&h), compressible, "{path} {accept:?}");
            assert_eq!(decode(want, &body), original, "{path} {accept:?}");
            if path == "/json" {
                assert_eq!(original, doc.as_bytes());
            }
            if want.is_none() {
                assert_eq!(
                    h.get("content-length")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    Some(original.len().to_string())
                );
            }
        }
    }
    let snap = handle.snapshot();
    let identity = snap
        .encodings
        .iter()
        .find(|e| e.encoding == "identity")
        .unwrap();
    assert!(identity.responses > 0);
    assert!(handle.responses("identity", Decision::ContentType) > 0);
    assert!(handle.responses("zstd", Decision::Normal) > 0);
}

#[tokio::test]
async fn not_acceptable_only_when_nothing_acceptable_remains() {
    let base = app(AdaptiveCompressionLayer::new()).await;
    for accept in [
        "identity;q=0",
        "*;q=0",
        "identity;q=0, gzip;q=0",
        "IDENTITY;Q=0.000",
    ] {
        let (status, h, body) = fetch(&format!("{base}/json"), Some(accept)).await;
        assert_eq!(status, 406, "{accept}");
        assert!(varies(&h));
        assert!(body.is_empty());
    }
    // Something is acceptable: served.
    for (accept, want) in [
        ("identity;q=0, br", Some("br")),
        ("*;q=0, identity", None),
        ("*;q=0, deflate;q=0.1", Some("deflate")),
    ] {
        let (status, h, _) = fetch(&format!("{base}/json"), Some(accept)).await;
        assert_eq!(status, 200, "{accept}");
        assert_eq!(coding(&h), want, "{accept}");
    }
    // A response that is never compressed is served as it is.
    let (status, h, _) = fetch(&format!("{base}/png"), Some("identity;q=0")).await;
    assert_eq!(status, 200);
    assert_eq!(coding(&h), None);
}

#[tokio::test]
async fn skip_rules() {
    let doc = json(20_000);
    let d = doc.clone();
    let app = Router::new()
        .route(
            "/small",
            get(|| async { typed("application/json", "{\"ok\":true}") }),
        )
        .route(
            "/encoded",
            get({
                let d = d.clone();
                move || async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("content-encoding", "gzip"),
                        ],
                        d,
                    )
                }
            }),
        )
        .route(
            "/partial",
            get({
                let d = d.clone();
                move || async move {
                    (
                        StatusCode::PARTIAL_CONTENT,
                        [
                            ("content-type", "application/json"),
                            ("content-range", "bytes 0-99/20000"),
                        ],
                        d,
                    )
                }
            }),
        )
        .route(
            "/range-200",
            get({
                let d = d.clone();
                move || async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("content-range", "bytes 0-99/20000"),
                        ],
                        d,
                    )
                }
            }),
        )
        .route(
            "/no-transform",
            get({
                let d = d.clone();
                move || async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("cache-control", "public, No-Transform"),
                        ],
                        d,
                    )
                }
            }),
        )
        .route("/no-content", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/not-modified",
            get(|| async { (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")]) }),
        )
        .route(
            "/json",
            get({
                let d = d.clone();
                move || async move { typed("application/json", d) }
            }),
        )
        .layer(AdaptiveCompressionLayer::new());
    let base = format!("http://{}", serve(app).await);
    for (path, status, vary) in [
        ("/small", 200, false),
        ("/encoded", 200, false),
        ("/partial", 206, false),
        ("/range-200", 200, false),
        ("/no-transform", 200, false),
        ("/no-content", 204, false),
        ("/not-modified", 304, false),
    ] {
        let (s, h, _) = fetch(&format!("{base}{path}"), Some("gzip, br, zstd")).await;
        assert_eq!(s, status, "{path}");
        assert_ne!(coding(&h), Some("zstd"), "{path}");
        assert_eq!(varies(&h), vary, "{path}");
    }
    let (_, h, body) = fetch(&format!("{base}/encoded"), Some("zstd")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(body, doc.as_bytes());
    // HEAD: no compression, but the representation varies.
    let res = client()
        .head(format!("{base}/json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("content-encoding").is_none());
    assert!(varies(res.headers()));
}

#[tokio::test]
async fn headers_of_compressed_responses() {
    let doc = json(20_000);
    let app = Router::new()
        .route(
            "/strong",
            get({
                let d = doc.clone();
                move || async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("etag", "\"v1\""),
                            ("accept-ranges", "bytes"),
                            ("vary", "Origin"),
                        ],
                        d,
                    )
                }
            }),
        )
        .route(
            "/weak",
            get({
                let d = doc.clone();
                move || async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("etag", "W/\"v1\""),
                            ("vary", "*"),
                        ],
                        d,
                    )
                }
            }),
        )
        .route(
            "/already",
            get({
                let d = doc.clone();
                move || async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("vary", "accept-encoding, origin"),
                        ],
                        d,
                    )
                }
            }),
        )
        .layer(AdaptiveCompressionLayer::new());
    let base = format!("http://{}", serve(app).await);
    let mut tags = Vec::new();
    for c in CODINGS {
        let (_, h, body) = fetch(&format!("{base}/strong"), Some(c)).await;
        assert_eq!(coding(&h), Some(c));
        assert_eq!(h["etag"], format!("\"v1-{c}\"").as_str());
        tags.push(h["etag"].clone());
        assert!(h.get("accept-ranges").is_none());
        assert!(h.get("content-length").is_none());
        let vary: Vec<_> = h
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(vary, ["Origin", "accept-encoding"]);
        assert_eq!(decode(Some(c), &body), doc.as_bytes());
    }
    tags.dedup();
    assert_eq!(tags.len(), 4, "every coding has its own validator");
    // Uncompressed: the original validator and headers.
    let (_, h, _) = fetch(&format!("{base}/strong"), None).await;
    assert_eq!(h["etag"], "\"v1\"");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(varies(&h));
    // Weak tags are kept; `Vary: *` is left alone.
    let (_, h, _) = fetch(&format!("{base}/weak"), Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(h["etag"], "W/\"v1\"");
    assert_eq!(h.get_all("vary").iter().count(), 1);
    assert_eq!(h["vary"], "*");
    // Accept-Encoding already in Vary: not added twice.
    let (_, h, _) = fetch(&format!("{base}/already"), Some("br")).await;
    assert_eq!(h.get_all("vary").iter().count(), 1);
}

/// An SSE route fed by a channel: each message is one event, one body frame.
fn sse_app(layer: AdaptiveCompressionLayer) -> (Router, mpsc::Sender<String>) {
    let (tx, rx) = mpsc::channel::<String>(4);
    let r = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let r = r.clone();
                async move {
                    let rx = r.lock().await.take().expect("one stream per test");
                    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                        .map(|e| Ok::<_, Infallible>(Bytes::from(format!("data: {e}\n\n"))));
                    typed("text/event-stream", Body::from_stream(stream))
                }
            }),
        )
        .layer(layer);
    (app, tx)
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    for c in CODINGS {
        let (app, tx) = sse_app(AdaptiveCompressionLayer::new());
        let base = format!("http://{}", serve(app).await);
        let res = client()
            .get(format!("{base}/events"))
            .header("accept-encoding", c)
            .send()
            .await
            .unwrap();
        assert_eq!(coding(res.headers()), Some(c));
        let mut stream = res.bytes_stream();
        let mut decoder = StreamDecoder::new(c);
        for i in 0..5 {
            let event = format!("{{\"tick\":{i},\"padding\":\"{}\"}}", "x".repeat(200));
            tx.send(event.clone()).await.unwrap();
            // The stream is still open: the event must be decodable from what arrived.
            let mut decoded = Vec::new();
            while !decoded.ends_with(b"\n\n") {
                let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{c}: event {i} did not arrive before the stream ended")
                    })
                    .expect("stream open")
                    .unwrap();
                decoded.extend(decoder.feed(&chunk));
            }
            assert_eq!(
                decoded,
                format!("data: {event}\n\n").as_bytes(),
                "{c} event {i}"
            );
        }
        drop(tx);
        let mut rest = Vec::new();
        while let Some(chunk) = stream.next().await {
            rest.extend(decoder.feed(&chunk.unwrap()));
        }
        assert!(rest.is_empty());
    }
}

#[tokio::test]
async fn server_sent_events_can_be_excluded() {
    let layer = AdaptiveCompressionLayer::builder()
        .event_streams(EventStreams::Exclude)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (app, tx) = sse_app(layer);
    let base = format!("http://{}", serve(app).await);
    let res = client()
        .get(format!("{base}/events"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(coding(res.headers()), None);
    tx.send("one".into()).await.unwrap();
    drop(tx);
    assert_eq!(res.text().await.unwrap(), "data: one\n\n");
    assert_eq!(handle.responses("identity", Decision::EventStream), 1);
}

/// A body fed from a channel, for driving the compression body by hand.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Text that compresses like a CSV export: about 4x.
fn csv_chunk(k: usize, len: usize) -> Bytes {
    let mut s = String::with_capacity(len + 100);
    let mut row = k * 1000;
    while s.len() < len {
        s.push_str(&format!(
            "{row},Property {row},{},{}\n",
            ["Lisbon", "Porto", "Braga"][row % 3],
            (row * 7919) % 100_000
        ));
        row += 1;
    }
    s.truncate(len);
    Bytes::from(s)
}

#[tokio::test]
async fn multi_megabyte_stream_is_compressed_with_bounded_memory() {
    for c in CODINGS {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let rx = std::sync::Mutex::new(Some(rx));
        let svc =
            AdaptiveCompressionLayer::new().layer(service_fn(move |_req: http::Request<()>| {
                let rx = rx.lock().unwrap().take().unwrap();
                async move {
                    let mut res = http::Response::new(ChannelBody(rx));
                    res.headers_mut()
                        .insert("content-type", "text/csv".parse().unwrap());
                    Ok::<_, Infallible>(res)
                }
            }));
        let req = http::Request::get("/export")
            .header("accept-encoding", c)
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(coding(res.headers()), Some(c));
        let mut body = std::pin::pin!(res.into_body());
        let mut decoder = StreamDecoder::new(c);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let (mut sent, mut decoded, mut max_frame, mut max_held) = (0usize, 0usize, 0usize, 0usize);
        let mut original = Vec::new();
        let mut out = Vec::new();
        // 8 MiB in 64 KiB chunks: after each chunk the body is polled until it waits for more.
        for k in 0..128 {
            let chunk = csv_chunk(k, 64 * 1024);
            original.extend_from_slice(&chunk);
            sent += chunk.len();
            tx.try_send(chunk).unwrap();
            // Polling by hand inside a tokio task: give the coop budget back each round.
            tokio::task::yield_now().await;
            loop {
                match body.as_mut().poll_frame(&mut cx) {
                    Poll::Ready(Some(Ok(f))) => {
                        let data = f.into_data().unwrap();
                        max_frame = max_frame.max(data.len());
                        let d = decoder.feed(&data);
                        decoded += d.len();
                        out.extend(d);
                    }
                    Poll::Pending => break,
                    other => panic!("{c}: unexpected {:?}", other.map(|o| o.map(|r| r.is_ok()))),
                }
            }
            // Nothing accumulates: what went in has come out, but for what the encoder holds
            // to find matches (brotli writes meta-blocks in bursts: under 1 MiB with its 256 KiB
            // stream window, against 8 MiB and more with its default window).
            let bound = if c == "br" { 1024 } else { 512 } * 1024;
            max_held = max_held.max(sent - decoded);
            assert!(
                sent - decoded <= bound,
                "{c}: {} bytes held after {sent}",
                sent - decoded
            );
        }
        drop(tx);
        tokio::task::yield_now().await;
        loop {
            match body.as_mut().poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let data = f.into_data().unwrap();
                    max_frame = max_frame.max(data.len());
                    out.extend(decoder.feed(&data));
                }
                Poll::Ready(None) => break,
                Poll::Pending => panic!("{c}: pending after the end"),
                Poll::Ready(Some(Err(e))) => panic!("{c}: {e}"),
            }
        }
        assert!(max_frame <= 128 * 1024, "{c}: frame of {max_frame} bytes");
        eprintln!("{c}: largest frame {max_frame} B, most input held {max_held} B");
        assert_eq!(out.len(), original.len(), "{c}");
        assert!(out == original, "{c}: decoded bytes differ");
    }
}

#[tokio::test]
async fn large_streamed_export_over_the_wire() {
    let app = Router::new()
        .route(
            "/export",
            get(|| async {
                let stream = futures_util::stream::iter(0..64)
                    .map(|k| Ok::<_, Infallible>(csv_chunk(k, 64 * 1024)));
                typed("text/csv; charset=utf-8", Body::from_stream(stream))
            }),
        )
        .layer(AdaptiveCompressionLayer::new());
    let base = format!("http://{}", serve(app).await);
    let original: Vec<u8> = (0..64)
        .flat_map(|k| csv_chunk(k, 64 * 1024).to_vec())
        .collect();
    for c in CODINGS {
        let (_, h, body) = fetch(&format!("{base}/export"), Some(c)).await;
        assert_eq!(coding(&h), Some(c));
        assert!(body.len() * 2 < original.len());
        assert!(decode(Some(c), &body) == original, "{c}");
    }
}

#[tokio::test]
async fn malformed_headers_never_panic() {
    let doc = json(5_000);
    let app = Router::new()
        .route(
            "/odd",
            get({
                let d = doc.clone();
                move |headers: HeaderMap| {
                    let d = d.clone();
                    async move {
                        // The handler echoes odd response headers chosen by the request.
                        let mut res = d.into_response();
                        for (name, hdr) in [
                            ("content-type", "x-ct"),
                            ("cache-control", "x-cc"),
                            ("content-length", "x-cl"),
                            ("etag", "x-etag"),
                            ("vary", "x-vary"),
                        ] {
                            if let Some(v) = headers.get(hdr) {
                                res.headers_mut().insert(name, v.clone());
                            }
                        }
                        res
                    }
                }
            }),
        )
        .layer(AdaptiveCompressionLayer::new());
    let base = format!("http://{}", serve(app).await);
    let odd: &[&[u8]] = &[
        b"",
        b",",
        b";",
        b";;;",
        b"q=1",
        b"gzip;q=",
        b"gzip;q=1.0000",
        b"*;q=-0",
        b"\"gzip\"",
        b"gzip;q=\"1\"",
        b"gzip;level=\"unterminated",
        b"\xff\xfe",
        b"br;q=0.5;q=0.6",
        b"\tzstd\t;\tq=0.5",
        b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z",
        b"gzip;q=1e3",
        b"*;*;*",
        b"identity;q=",
        b"==",
        b"W/\"x\"",
    ];
    for &v in odd {
        let value = http::HeaderValue::from_bytes(v).unwrap();
        let res = client()
            .get(format!("{base}/odd"))
            .header("accept-encoding", value.clone())
            .header("x-ct", value.clone())
            .header("x-cc", value.clone())
            .header("x-etag", value.clone())
            .header("x-vary", value.clone())
            .send()
            .await
            .unwrap();
        assert!(res.status() == 200 || res.status() == 406, "{v:?}");
        let c = coding(res.headers()).map(str::to_owned);
        let body = res.bytes().await.unwrap();
        if c.is_some() {
            assert_eq!(decode(c.as_deref(), &body), doc.as_bytes());
        }
    }
    // A content type that is on the list, with garbage around it, and a bogus length.
    let res = client()
        .get(format!("{base}/odd"))
        .header("accept-encoding", "gzip")
        .header("x-ct", " Application/JSON ;; charset=\"utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(coding(res.headers()), Some("gzip"));
    assert_eq!(
        decode(Some("gzip"), &res.bytes().await.unwrap()),
        doc.as_bytes()
    );
}

#[tokio::test]
async fn bad_configuration_names_its_field() {
    let b = AdaptiveCompressionLayer::builder;
    let cases: Vec<(
        &str,
        Result<AdaptiveCompressionLayer, tower_perf::ConfigError>,
    )> = vec![
        ("level", b().level(Algorithm::Zstd, 23).build()),
        ("level", b().level(Algorithm::Zstd, -8).build()),
        ("level", b().level(Algorithm::Gzip, 0).build()),
        ("level", b().level(Algorithm::Br, 12).build()),
        ("levels", b().levels(Algorithm::Br, 5, 4, 9).build()),
        ("levels", b().levels(Algorithm::Deflate, 1, 4, 10).build()),
        (
            "prefer",
            b().prefer(&[Algorithm::Gzip, Algorithm::Gzip]).build(),
        ),
        ("cpu_budget", b().cpu_budget(0.0).build()),
        ("cpu_budget", b().cpu_budget(1.5).build()),
        ("cpu_budget", b().cpu_budget(f64::NAN).build()),
        ("load_interval", b().load_interval(Duration::ZERO).build()),
        ("cores", b().cores(0).build()),
        ("max_in_flight", b().max_in_flight(0).build()),
        (
            "large_body_cost",
            b().large_body_cost(Duration::ZERO).build(),
        ),
    ];
    for (field, result) in cases {
        let err = result.expect_err(field);
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field));
    }
    assert!(b()
        .level(Algorithm::Zstd, 19)
        .levels(Algorithm::Br, 0, 5, 11)
        .prefer(&[])
        .build()
        .is_ok());
}

#[tokio::test]
async fn preference_order_is_configurable() {
    let layer = AdaptiveCompressionLayer::builder()
        .prefer(&[Algorithm::Gzip, Algorithm::Br])
        .build()
        .unwrap();
    let base = app(layer).await;
    for (accept, want) in [
        ("zstd, br, gzip", Some("gzip")),
        ("zstd, br", Some("br")),
        ("zstd", None),
        ("deflate", None),
        ("br;q=1, gzip;q=0.9", Some("br")),
    ] {
        let (_, h, body) = fetch(&format!("{base}/json"), Some(accept)).await;
        assert_eq!(coding(&h), want, "{accept}");
        assert_eq!(decode(want, &body), json(20_000).as_bytes());
    }
}

#[tokio::test]
async fn minimum_size_is_configurable() {
    let base = app(AdaptiveCompressionLayer::builder()
        .min_size(0)
        .build()
        .unwrap())
    .await;
    let (_, h, body) = fetch(&format!("{base}/small"), Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &body), b"{\"ok\":true}");
    let base = app(AdaptiveCompressionLayer::builder()
        .min_size(50_000)
        .build()
        .unwrap())
    .await;
    let (_, h, _) = fetch(&format!("{base}/json"), Some("gzip")).await;
    assert_eq!(coding(&h), None);
    assert!(!varies(&h));
}

#[tokio::test]
async fn predicates_compose_with_the_default() {
    use tower_perf::compression::{DefaultPredicate, Predicate};
    let layer = AdaptiveCompressionLayer::builder()
        .compress_when(
            DefaultPredicate::new()
                .and(|p: &http::response::Parts| {
                    p.headers
                        .get("content-type")
                        .is_some_and(|v| v != "image/svg+xml")
                })
                .or(|p: &http::response::Parts| {
                    p.headers
                        .get("content-type")
                        .is_some_and(|v| v == "image/png")
                }),
        )
        .build()
        .unwrap();
    let base = app(layer).await;
    for (path, want) in [("/json", Some("br")), ("/svg", None), ("/png", Some("br"))] {
        let (_, h, body) = fetch(&format!("{base}{path}"), Some("br")).await;
        assert_eq!(coding(&h), want, "{path}");
        let (_, _, original) = fetch(&format!("{base}{path}"), None).await;
        assert_eq!(decode(want, &body), original);
    }
}

fn level_of(handle: &CompressionHandle, coding: &str) -> Option<i32> {
    handle
        .snapshot()
        .encodings
        .iter()
        .find(|e| e.encoding == coding)
        .and_then(|e| e.level)
}

#[tokio::test(start_paused = true)]
async fn saturation_sends_identity_beyond_the_budget_and_holds_while_demand_lasts() {
    // A budget so small that any real compression exceeds it.
    let layer = AdaptiveCompressionLayer::builder()
        .cores(1)
        .cpu_budget(1e-9)
        .load_interval(Duration::from_millis(100))
        .essential_with(|req| {
            req.headers
                .get("x-priority")
                .is_some_and(|p| p == "critical")
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let base = app(layer).await;
    let url = format!("{base}/json");
    let doc = json(20_000);

    let (_, h, body) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &body), doc.as_bytes());
    assert_eq!(handle.responses("gzip", Decision::Normal), 1);
    assert_eq!(level_of(&handle, "gzip"), Some(5));

    tokio::time::advance(Duration::from_millis(100)).await;
    let (_, h, body) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), None, "saturated: sent as it is");
    assert!(varies(&h));
    assert_eq!(body, doc.as_bytes());
    assert_eq!(handle.tier(), Tier::Saturated);
    assert_eq!(handle.responses("identity", Decision::Saturated), 1);
    let snap = handle.snapshot();
    assert_eq!(snap.tier, Tier::Saturated);
    assert!(snap.utilization > 1.0);

    // Still within the interval, with no time elapsed: no budget left, still sent as is.
    let (_, h, _) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), None);

    // An interval in which nothing was compressed: the shed responses still count as demand,
    // so the layer does not mistake its own quiet for a fall in load (no flapping).
    tokio::time::advance(Duration::from_millis(100)).await;
    let (_, h, _) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), None);
    assert_eq!(handle.tier(), Tier::Saturated);
    assert_eq!(handle.snapshot().utilization, 0.0);

    // Inside an interval, compression goes on while it stays under the budget for the time
    // elapsed: one response at the fast level, then the budget is spent again.
    tokio::time::advance(Duration::from_millis(50)).await;
    let (_, h, body) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &body), doc.as_bytes());
    assert_eq!(handle.responses("gzip", Decision::Busy), 1);
    assert_eq!(level_of(&handle, "gzip"), Some(1));
    let snap = serde_json::to_value(handle.snapshot()).unwrap();
    let gzip = snap["encodings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["encoding"] == "gzip")
        .unwrap();
    assert_eq!(gzip["last_decision"], "busy");
    let (_, h, _) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), None);

    // Essential requests stay compressed while saturated, at the fast level.
    let res = client()
        .get(&url)
        .header("accept-encoding", "gzip")
        .header("x-priority", "critical")
        .send()
        .await
        .unwrap();
    assert_eq!(coding(res.headers()), Some("gzip"));
    assert_eq!(
        decode(Some("gzip"), &res.bytes().await.unwrap()),
        doc.as_bytes()
    );
    assert_eq!(handle.responses("gzip", Decision::Busy), 2);
    assert_eq!(handle.responses("identity", Decision::Saturated), 4);
}

#[tokio::test(start_paused = true)]
async fn idle_cpu_goes_to_ratio_and_large_bodies_to_fast_levels() {
    let layer = AdaptiveCompressionLayer::builder()
        .cores(64)
        .cpu_budget(1.0)
        .load_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let base = app(layer).await;
    let doc = json(20_000);
    let (_, h, normal) = fetch(&format!("{base}/json"), Some("br")).await;
    assert_eq!(coding(&h), Some("br"));
    assert_eq!(handle.responses("br", Decision::Normal), 1);
    tokio::time::advance(Duration::from_millis(100)).await;
    let (_, h, best) = fetch(&format!("{base}/json"), Some("br")).await;
    assert_eq!(coding(&h), Some("br"));
    assert_eq!(handle.tier(), Tier::Idle);
    assert_eq!(handle.responses("br", Decision::Idle), 1);
    assert_eq!(level_of(&handle, "br"), Some(6));
    assert_eq!(decode(Some("br"), &best), doc.as_bytes());
    assert!(
        best.len() < normal.len(),
        "best {} < normal {}",
        best.len(),
        normal.len()
    );

    // A cost cap below what the body costs: the fast level.
    let layer = AdaptiveCompressionLayer::builder()
        .large_body_cost(Duration::from_nanos(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let base = app(layer).await;
    let (_, h, body) = fetch(&format!("{base}/json"), Some("zstd")).await;
    assert_eq!(coding(&h), Some("zstd"));
    assert_eq!(decode(Some("zstd"), &body), doc.as_bytes());
    assert_eq!(handle.responses("zstd", Decision::LargeBody), 1);
    assert_eq!(level_of(&handle, "zstd"), Some(-1));
}

/// Low-priority responses (the class a priority queue outside put on the request) step down a
/// tier first: under normal load they get the fast level while the others keep the normal one;
/// `step_down_low(false)` treats them like the rest.
#[tokio::test(start_paused = true)]
async fn low_priority_responses_step_down_a_tier_first() {
    for step_down in [true, false] {
        let layer = AdaptiveCompressionLayer::builder()
            .step_down_low(step_down)
            .build()
            .unwrap();
        let handle = layer.handle();
        let queue = PriorityQueueLayer::builder()
            .trust_priority_header(true)
            .build()
            .unwrap();
        let base = format!("http://{}", serve(routes().layer(layer).layer(queue)).await);
        for class in ["normal", "low"] {
            let res = client()
                .get(format!("{base}/json"))
                .header("accept-encoding", "br")
                .header("x-priority", class)
                .send()
                .await
                .unwrap();
            assert_eq!(coding(res.headers()), Some("br"));
            let body = res.bytes().await.unwrap();
            assert_eq!(decode(Some("br"), &body), json(20_000).as_bytes());
        }
        let (normal, busy) = (
            handle.responses("br", Decision::Normal),
            handle.responses("br", Decision::Busy),
        );
        if step_down {
            assert_eq!((normal, busy), (1, 1), "the low response at the fast level");
        } else {
            assert_eq!((normal, busy), (2, 0), "both at the normal level");
        }
    }
}

#[tokio::test]
async fn too_many_compressions_in_flight_get_fast_levels() {
    let layer = AdaptiveCompressionLayer::builder()
        .max_in_flight(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let calls = Arc::new(AtomicUsize::new(0));
    let app = routes()
        .route(
            "/slow-export",
            get(move || {
                let rx = rx.lock().unwrap().take().unwrap();
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    typed(
                        "text/csv",
                        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    )
                }
            }),
        )
        .layer(layer);
    let base = format!("http://{}", serve(app).await);
    let res = client()
        .get(format!("{base}/slow-export"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(coding(res.headers()), Some("gzip"));
    assert_eq!(handle.snapshot().in_flight, 1);
    let (_, h, body) = fetch(&format!("{base}/json"), Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &body), json(20_000).as_bytes());
    assert_eq!(handle.responses("gzip", Decision::Busy), 1);
    tx.send(Ok(csv_chunk(0, 10_000))).await.unwrap();
    drop(tx);
    let body = res.bytes().await.unwrap();
    assert_eq!(decode(Some("gzip"), &body), csv_chunk(0, 10_000));
    assert_eq!(handle.snapshot().in_flight, 0);
}

#[tokio::test]
async fn a_cache_outside_stores_each_coding_and_a_hit_costs_no_compression() {
    let compression = AdaptiveCompressionLayer::new();
    let handle = compression.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let doc = json(20_000);
    let d = doc.clone();
    let app = Router::new()
        .route(
            "/props",
            get(move || {
                c2.fetch_add(1, Ordering::SeqCst);
                let d = d.clone();
                async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("cache-control", "public, max-age=60"),
                        ],
                        d,
                    )
                }
            }),
        )
        .layer(compression)
        .layer(ResponseCacheLayer::new());
    let base = format!("http://{}", serve(app).await);
    let url = format!("{base}/props");
    let compressed = |h: &CompressionHandle| -> u64 {
        h.snapshot()
            .encodings
            .iter()
            .filter(|e| e.encoding != "identity")
            .map(|e| e.responses)
            .sum()
    };
    let input = |h: &CompressionHandle| -> u64 {
        h.snapshot().encodings.iter().map(|e| e.input_bytes).sum()
    };

    let (_, h, gz) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(decode(Some("gzip"), &gz), doc.as_bytes());
    assert_eq!(compressed(&handle), 1);
    let bytes_in = input(&handle);
    assert_eq!(bytes_in, doc.len() as u64);

    // Hits: the cache answers with the stored gzip bytes; the layer is not reached.
    for _ in 0..3 {
        let (_, h, again) = fetch(&url, Some("deflate;q=0.5, gzip")).await;
        assert_eq!(coding(&h), Some("gzip"));
        assert!(
            h["cache-status"].to_str().unwrap().contains("hit"),
            "{:?}",
            h["cache-status"]
        );
        assert_eq!(again, gz);
    }
    assert_eq!(compressed(&handle), 1);
    assert_eq!(input(&handle), bytes_in);

    // A br client gets its own variant, compressed once, then hit.
    let (_, h, br) = fetch(&url, Some("br, gzip")).await;
    assert_eq!(coding(&h), Some("br"));
    assert_eq!(decode(Some("br"), &br), doc.as_bytes());
    assert_eq!(compressed(&handle), 2);
    let (_, h, br_again) = fetch(&url, Some("gzip, br")).await;
    assert_eq!(coding(&h), Some("br"));
    assert!(h["cache-status"].to_str().unwrap().contains("hit"));
    assert_eq!(br_again, br);
    // And gzip clients still get gzip.
    let (_, h, gz_again) = fetch(&url, Some("gzip")).await;
    assert_eq!(coding(&h), Some("gzip"));
    assert_eq!(gz_again, gz);
    // An identity client gets the uncompressed variant.
    let (_, h, plain) = fetch(&url, None).await;
    assert_eq!(coding(&h), None);
    assert_eq!(plain, doc.as_bytes());
    assert_eq!(compressed(&handle), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn conditional_requests_with_a_coded_validator_get_304() {
    let doc = json(20_000);
    let d = doc.clone();
    let app = Router::new()
        .route(
            "/doc",
            get(move |headers: HeaderMap| {
                let d = d.clone();
                async move {
                    // The service knows only its own validator, "v1".
                    let matches = headers
                        .get_all("if-none-match")
                        .iter()
                        .any(|v| v.to_str().unwrap().split(',').any(|t| t.trim() == "\"v1\""));
                    if matches {
                        return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")]).into_response();
                    }
                    (
                        [("content-type", "application/json"), ("etag", "\"v1\"")],
                        d,
                    )
                        .into_response()
                }
            }),
        )
        .layer(AdaptiveCompressionLayer::new());
    let base = format!("http://{}", serve(app).await);
    let url = format!("{base}/doc");
    let conditional = |accept: &'static str, tag: &'static str| {
        let url = url.clone();
        async move {
            let res = client()
                .get(url)
                .header("accept-encoding", accept)
                .header("if-none-match", tag)
                .send()
                .await
                .unwrap();
            let (status, h) = (res.status(), res.headers().clone());
            (status, h, res.bytes().await.unwrap())
        }
    };
    let (_, h, _) = fetch(&url, Some("gzip")).await;
    assert_eq!(h["etag"], "\"v1-gzip\"");
    // The gzip validator, from a gzip client: 304 for the gzip representation.
    let (status, h, body) = conditional("gzip", "\"v1-gzip\"").await;
    assert_eq!(status, 304);
    assert_eq!(h["etag"], "\"v1-gzip\"");
    assert!(varies(&h));
    assert!(body.is_empty());
    // Among other tags, too.
    let (status, _, _) = conditional("gzip", "\"x\", \"v1-gzip\"").await;
    assert_eq!(status, 304);
    // The gzip validator from a br client never matches: the br representation in full.
    let (status, h, body) = conditional("br", "\"v1-gzip\"").await;
    assert_eq!(status, 200);
    assert_eq!(h["etag"], "\"v1-br\"");
    assert_eq!(decode(Some("br"), &body), doc.as_bytes());
    // The identity validator is the service's own: it answers for the client's identity copy,
    // and the layer leaves that 304 as it is.
    let (status, h, body) = conditional("gzip", "\"v1\"").await;
    assert_eq!(status, 304);
    assert_eq!(h["etag"], "\"v1\"");
    assert!(body.is_empty());
    // The identity validator from an identity client: 304, untouched.
    let (status, h, _) = conditional("identity", "\"v1\"").await;
    assert_eq!(status, 304);
    assert_eq!(h["etag"], "\"v1\"");
}

#[tokio::test]
async fn compression_time_goes_into_the_request_timings() {
    use http_body_util::BodyExt;
    let doc = json(20_000);
    let d = doc.clone();
    let svc = AdaptiveCompressionLayer::new().layer(service_fn(move |_req: http::Request<()>| {
        let d = d.clone();
        async move {
            let mut res = http::Response::new(http_body_util::Full::new(Bytes::from(d)));
            res.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, Infallible>(res)
        }
    }));
    let timings = tower_perf::Timings::new();
    let mut req = http::Request::get("/")
        .header("accept-encoding", "br")
        .body(())
        .unwrap();
    req.extensions_mut().insert(timings.clone());
    let res = svc.clone().oneshot(req).await.unwrap();
    assert!(timings.phases().is_empty(), "recorded when the body ends");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(decode(Some("br"), &body), doc.as_bytes());
    let phases = timings.phases();
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].name(), "compression");
    assert!(phases[0].duration() > Duration::ZERO);

    // Not compressed: no phase.
    let timings = tower_perf::Timings::new();
    let mut req = http::Request::get("/").body(()).unwrap();
    req.extensions_mut().insert(timings.clone());
    let res = svc.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert!(timings.phases().is_empty());
}

/// With `recompress_hot`, an entry stored at the compression layer's fast level is encoded
/// again at the best level after enough hits; later hits carry fewer bytes that decode to the
/// same document, with a weak validator. Real time: the work runs on the blocking pool.
#[tokio::test]
async fn hot_cache_entries_are_recompressed_at_the_best_level() {
    let doc = json(60_000);
    let cache = ResponseCacheLayer::builder()
        .recompress_hot(3)
        .build()
        .unwrap();
    let handle = cache.handle();
    let doc2 = doc.clone();
    let app = Router::new()
        .route(
            "/hot",
            get(move || {
                let body = doc2.clone();
                async move {
                    (
                        [
                            ("content-type", "application/json"),
                            ("cache-control", "public, max-age=600"),
                            ("etag", "\"v1\""),
                        ],
                        body,
                    )
                }
            }),
        )
        .layer(AdaptiveCompressionLayer::new())
        .layer(cache);
    let base = format!("http://{}", serve(app).await);
    let url = format!("{base}/hot");

    let (_, first_headers, first) = fetch(&url, Some("br")).await;
    assert_eq!(coding(&first_headers), Some("br"));
    for _ in 0..3 {
        let (_, h, b) = fetch(&url, Some("br")).await;
        assert_eq!(
            b, first,
            "hits before the recompression are the stored bytes"
        );
        assert_eq!(h.get("etag").unwrap(), first_headers.get("etag").unwrap());
    }
    let start = std::time::Instant::now();
    while handle.snapshot().recompressed == 0 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = handle.snapshot();
    assert_eq!(stats.recompressed, 1, "{stats:?}");

    let (status, headers, better) = fetch(&url, Some("br")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(coding(&headers), Some("br"));
    assert!(
        better.len() < first.len(),
        "best level: {} bytes, fast level: {}",
        better.len(),
        first.len()
    );
    assert_eq!(decode(Some("br"), &better), doc.as_bytes());
    assert_eq!(
        stats.recompress_saved_bytes,
        (first.len() - better.len()) as u64
    );
    assert_eq!(
        headers.get("content-length").unwrap().to_str().unwrap(),
        better.len().to_string()
    );
    let etag = headers.get("etag").unwrap().to_str().unwrap();
    assert!(
        etag.starts_with("W/"),
        "weak validator on other bytes: {etag}"
    );
}

/// A body that arrives whole (one frame) may take the codec's one-shot path (libdeflate, with
/// `compression-native`), whose cost is not the streaming encoder's: it must not move the cost
/// average that sizes levels for large streamed bodies. A streamed body does move it.
#[tokio::test]
async fn one_shot_bodies_leave_the_streaming_cost_alone() {
    let layer = AdaptiveCompressionLayer::builder()
        .adaptive(false)
        .build()
        .unwrap();
    let handle = layer.handle();
    let doc = json(20_000);
    let app = Router::new()
        .route(
            "/whole",
            get({
                let d = doc.clone();
                move || async move { typed("application/json", d) }
            }),
        )
        .route(
            "/chunks",
            get({
                let d = doc.clone();
                move || async move {
                    let halves = [
                        Bytes::copy_from_slice(&d.as_bytes()[..10_000]),
                        Bytes::copy_from_slice(&d.as_bytes()[10_000..]),
                    ];
                    let stream = futures_util::stream::iter(halves.map(Ok::<_, Infallible>));
                    typed("application/json", Body::from_stream(stream))
                }
            }),
        )
        .layer(layer);
    let base = format!("http://{}", serve(app).await);
    let normal_cost = |coding: &str| {
        handle
            .snapshot()
            .encodings
            .iter()
            .find(|e| e.encoding == coding)
            .and_then(|e| e.ns_per_byte.as_ref().map(|n| n.normal.1))
    };
    for c in ["gzip", "deflate"] {
        let before = normal_cost(c);
        for _ in 0..3 {
            let (_, h, body) = fetch(&format!("{base}/whole"), Some(c)).await;
            assert_eq!(coding(&h), Some(c));
            assert_eq!(decode(Some(c), &body), doc.as_bytes());
        }
        let after_whole = normal_cost(c);
        assert_eq!(
            after_whole == before,
            cfg!(feature = "compression-native"),
            "{c}: {before:?} -> {after_whole:?}"
        );
        let (_, h, body) = fetch(&format!("{base}/chunks"), Some(c)).await;
        assert_eq!(coding(&h), Some(c));
        assert_eq!(decode(Some(c), &body), doc.as_bytes());
        assert_ne!(normal_cost(c), after_whole, "{c}: streamed");
    }
}
