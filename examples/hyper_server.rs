//! The slow-request tracker on a plain hyper 1 server: no axum, no router.
//!
//! Without axum there is no `MatchedPath`, so the tracker learns each request's route *template*
//! from [`route_of`], given to [`SlowRequestBuilder::route_with`]. The handler dispatches on the
//! same function, so the routes it serves and the routes the tracker reports cannot drift apart.
//! The tower stack (tower-http request ids, then the tracker, then a `service_fn`) becomes a hyper
//! service through `hyper_util::service::TowerToHyperService`.
//!
//! [`SlowRequestBuilder::route_with`]: tower_perf::slow::SlowRequestBuilder::route_with
//!
//! # Run it
//!
//! ```text
//! cargo run --example hyper_server          # PORT=3001 by default
//!
//! curl -i http://127.0.0.1:3001/
//! curl -i http://127.0.0.1:3001/items/7
//! curl -i 'http://127.0.0.1:3001/slow?ms=750'   # over the 500 ms threshold: logged as slow
//! curl -s http://127.0.0.1:3001/stats          # percentiles per route + recent slow requests
//! ```
//!
//! Every response carries `Server-Timing` (the `/slow` route records a `work` phase) and an
//! `x-request-id`, which is also the id of the request in the slow log.

use std::convert::Infallible;
use std::io::IsTerminal as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tower::{service_fn, ServiceBuilder};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_perf::slow::{SlowRequestHandle, SlowRequestLayer};
use tower_perf::Timings;

/// Requests at or above this are slow.
const SLOW_THRESHOLD: Duration = Duration::from_millis(500);
/// What `/slow` sleeps without `?ms=`.
const DEFAULT_SLOW_MS: u64 = 750;
/// The longest `/slow` may sleep.
const MAX_SLOW_MS: u64 = 10_000;
/// How long shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------------------------
// Routes
// ------------------------------------------------------------------------------------------------

/// The route template of a request: what the tracker keys its figures by and what the handler
/// dispatches on. Never the raw path, so `/items/1` and `/items/2` share one entry.
fn route_of(req: &Parts) -> Option<&str> {
    match req.uri.path() {
        "/" => Some("/"),
        "/slow" => Some("/slow"),
        "/stats" => Some("/stats"),
        path => match path.strip_prefix("/items/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Some("/items/{id}"),
            _ => None,
        },
    }
}

type Body = Full<Bytes>;

async fn handle(
    req: Request<Incoming>,
    stats: SlowRequestHandle,
) -> Result<Response<Body>, Infallible> {
    let (parts, _body) = req.into_parts();
    let response = match (route_of(&parts), &parts.method) {
        (Some("/"), &Method::GET) => text(StatusCode::OK, "hello from a plain hyper server\n"),
        (Some("/items/{id}"), &Method::GET) => item(&parts),
        (Some("/slow"), &Method::GET) => slow(&parts).await,
        (Some("/stats"), &Method::GET) => json_response(
            StatusCode::OK,
            &json!({
                "latency": stats.snapshot(),
                "slow_requests": stats.slow_requests(),
            }),
        ),
        (Some(_), _) => {
            let mut res = error(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            res
        }
        (None, _) => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {}", parts.uri.path()),
        ),
    };
    Ok(response)
}

/// `GET /items/{id}`: a made-up catalogue of items 1 to 1000.
fn item(parts: &Parts) -> Response<Body> {
    let raw = parts.uri.path().trim_start_matches("/items/");
    let Ok(id) = raw.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("item id must be a non-negative integer, got {raw:?}"),
        );
    };
    if !(1..=1000).contains(&id) {
        return error(StatusCode::NOT_FOUND, &format!("item {id} not found"));
    }
    json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "name": format!("item {id}"),
            "price_cents": 199 + (id * 7_919) % 10_000,
            "in_stock": id % 3 != 0,
        }),
    )
}

/// `GET /slow?ms=N`: sleeps N ms (default 750, at most 10000), recorded as the `work` phase.
async fn slow(parts: &Parts) -> Response<Body> {
    let raw = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="));
    let ms = match raw.map(str::parse::<u64>) {
        None => DEFAULT_SLOW_MS,
        Some(Ok(ms)) if ms <= MAX_SLOW_MS => ms,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("`ms` must be an integer from 0 to {MAX_SLOW_MS}"),
            )
        }
    };
    // The tracker put a `Timings` record on the request; phases recorded here show up in
    // `Server-Timing` and in the slow log.
    let work = parts.extensions.get::<Timings>().map(|t| t.start("work"));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    drop(work);
    json_response(StatusCode::OK, &json!({ "slept_ms": ms }))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    // A `Value` always serializes; the fallback only keeps the signature infallible.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

// ------------------------------------------------------------------------------------------------
// Server
// ------------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let port = match std::env::var("PORT") {
        Err(std::env::VarError::NotPresent) => 3001,
        Ok(raw) => match raw.trim().parse::<u16>() {
            Ok(port) => port,
            Err(e) => {
                eprintln!("error: invalid PORT={raw:?}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(std::env::VarError::NotUnicode(raw)) => {
            eprintln!("error: invalid PORT={raw:?}: not valid UTF-8");
            return ExitCode::from(2);
        }
    };

    let tracker = match SlowRequestLayer::builder()
        .threshold(SLOW_THRESHOLD)
        .route_with(route_of)
        .build()
    {
        Ok(layer) => layer,
        Err(e) => {
            eprintln!("error: slow request tracker: {e}");
            return ExitCode::from(2);
        }
    };
    let stats = tracker.handle();
    let service = ServiceBuilder::new()
        // Outside the tracker, so the tracker's slow log carries the request id.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(tracker)
        .service(service_fn(move |req| handle(req, stats.clone())));

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(addr);
    println!("hyper + tower-perf listening on http://{addr} (slow threshold {SLOW_THRESHOLD:?})");
    println!("try:");
    println!("  curl -i http://{addr}/items/7");
    println!("  curl -i 'http://{addr}/slow?ms=750'");
    println!("  curl -s http://{addr}/stats");

    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let conn = builder
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    println!("shutting down: waiting up to {SHUTDOWN_GRACE:?} for open connections");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => eprintln!("some connections did not close in time"),
    }
    ExitCode::SUCCESS
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
