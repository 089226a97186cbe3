//! What the whole stack costs: one process, one route per stack, under axum and under plain
//! hyper, for measuring them side by side with an HTTP load generator
//! (`scripts/wrk-stack.sh` runs wrk over every route in interleaved rounds and prints the
//! medians and the ratios to the bare server of the README's performance section).
//!
//! Every handler answers 13 bytes; `*-hit` routes mark them `cache-control: public,
//! max-age=3600`, so a [`PerfStack`] answers them from its cache after the first request.
//!
//! | path | stack |
//! |---|---|
//! | `/bare` | the handler alone |
//! | `/perf-miss` | `PerfStack::builder().build()` defaults; the response is not cacheable |
//! | `/bare-hit` | the handler alone, with the cacheable response |
//! | `/perf-hit` | `PerfStack` defaults, the cacheable response: hits after the first |
//! | `/tower` | what a user would otherwise assemble: tower-http `TraceLayer`, `CompressionLayer`, tower `ConcurrencyLimit`, tower-http `TimeoutLayer` |
//!
//! Under axum, every path on one router at `PORT` (3005 by default). Under hyper, one listener
//! per stack (no router; the hyper service is the stack itself), in the order of the table at
//! `PORT + 1` to `PORT + 5`, answering any path.
//!
//! ```text
//! cargo run --release --example stack_server      # PORT=3005 by default
//! curl -i 127.0.0.1:3005/perf-hit                 # axum
//! curl -i 127.0.0.1:3009/                         # hyper, PerfStack hit path
//! ```

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::limit::ConcurrencyLimitLayer;
use tower::{service_fn, Layer, ServiceBuilder};
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_perf::stack::PerfStack;

/// What every handler answers.
const BODY: &[u8] = b"Hello, World!";
/// The `ConcurrencyLimit` of the tower stack.
const CONCURRENCY: usize = 256;
/// The `Timeout` of the tower stack.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The 13 bytes, not cacheable.
fn plain() -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

/// The 13 bytes, cacheable for an hour.
fn cacheable() -> Response<Full<Bytes>> {
    let mut res = plain();
    res.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

/// The layers a user would otherwise assemble from tower and tower-http.
macro_rules! tower_layers {
    () => {
        ServiceBuilder::new()
            .layer(CompressionLayer::new())
            .layer(TraceLayer::new_for_http())
            .layer(ConcurrencyLimitLayer::new(CONCURRENCY))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                TIMEOUT,
            ))
    };
}

/// Serves `service` on `port` with hyper alone, every connection with a clone. The request
/// body becomes axum's `Body` (as under axum) for every stack alike: the cache needs a request
/// body with a `Default`, which hyper's `Incoming` has not.
async fn serve_hyper<S, B>(port: u16, service: S) -> std::io::Result<()>
where
    S: tower::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(
            ServiceBuilder::new()
                .map_request(|req: Request<Incoming>| req.map(Body::new))
                .service(service.clone()),
        );
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn axum_app() -> Result<Router, Box<dyn std::error::Error>> {
    let miss = PerfStack::builder().build()?;
    let hit = PerfStack::builder().build()?;
    Ok(Router::new()
        .route("/bare", get(|| async { plain() }))
        .route("/perf-miss", get(|| async { plain() }).layer(miss))
        .route("/bare-hit", get(|| async { cacheable() }))
        .route("/perf-hit", get(|| async { cacheable() }).layer(hit))
        .route("/tower", get(|| async { plain() }).layer(tower_layers!())))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3005);
    let plain_fn = service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(plain()) });
    let hit_fn = service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(cacheable()) });
    let miss = PerfStack::builder().build()?;
    let hit = PerfStack::builder().build()?;
    tokio::spawn(serve_hyper(port + 1, plain_fn));
    tokio::spawn(serve_hyper(port + 2, miss.layer(plain_fn)));
    tokio::spawn(serve_hyper(port + 3, hit_fn));
    tokio::spawn(serve_hyper(port + 4, hit.layer(hit_fn)));
    tokio::spawn(serve_hyper(port + 5, tower_layers!().service(plain_fn)));

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "stack_server: axum on http://{addr} (/bare /perf-miss /bare-hit /perf-hit /tower), \
         hyper on ports {}..={} (same stacks, in that order)",
        port + 1,
        port + 5
    );
    axum::serve(listener, axum_app()?).await?;
    Ok(())
}
