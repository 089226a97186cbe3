//! One server, one route per compression stack, for measuring them against each other with an
//! HTTP load generator (`scripts/wrk-compression.sh` runs wrk over every route and coding and
//! prints the table of the README's performance section).
//!
//! Every route serves the same 20 KB JSON document, built by the handler on each request (as a
//! real handler would, from its data):
//!
//! | route | stack |
//! |---|---|
//! | `/plain` | no compression |
//! | `/tower-http` | tower-http `CompressionLayer`, its defaults |
//! | `/fixed` | `AdaptiveCompressionLayer`, adaptation off (the normal levels always) |
//! | `/adaptive` | `AdaptiveCompressionLayer`, defaults |
//! | `/cached` | `ResponseCacheLayer` outside `AdaptiveCompressionLayer`: hits after the first |
//!
//! ```text
//! cargo run --release --example compression_server      # PORT=3003 by default
//! curl -s -H 'accept-encoding: br' -o /dev/null -w '%{size_download}\n' 127.0.0.1:3003/cached
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_perf::cache::ResponseCacheLayer;
use tower_perf::compression::AdaptiveCompressionLayer;

#[path = "support/json.rs"]
mod json;

/// A 20 KB JSON list of properties, built per request.
async fn properties() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        json::properties(20_000),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3003);
    let fixed = AdaptiveCompressionLayer::builder()
        .adaptive(false)
        .build()?;
    let cache = ResponseCacheLayer::builder().build()?;
    let app = Router::new()
        .route("/plain", get(properties))
        .route(
            "/tower-http",
            get(properties).layer(CompressionLayer::new()),
        )
        .route("/fixed", get(properties).layer(fixed))
        .route(
            "/adaptive",
            get(properties).layer(AdaptiveCompressionLayer::new()),
        )
        .route(
            "/cached",
            get(properties).layer::<_, std::convert::Infallible>(
                tower::ServiceBuilder::new()
                    .layer(cache)
                    .layer(AdaptiveCompressionLayer::new()),
            ),
        );
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("compression_server on http://{addr}: /plain /tower-http /fixed /adaptive /cached");
    axum::serve(listener, app).await?;
    Ok(())
}
