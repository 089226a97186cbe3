//! The smallest app with every tower-perf layer: an axum router inside one `PerfStack`, built
//! from the defaults, or from a configuration file when one is given.
//!
//! ```text
//! cargo run --example minimal                           # defaults
//! cargo run --example minimal -- examples/minimal.toml  # from the file
//! curl -i http://127.0.0.1:3000/        # Cache-Status, Server-Timing, RateLimit (with the file)
//! curl -s http://127.0.0.1:3000/stats   # latency per route
//! ```

use std::net::SocketAddr;

use axum::{routing::get, Json, Router};
use tower_perf::stack::{PerfConfig, PerfStack};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stack = match std::env::args().nth(1) {
        // Every layer with its defaults (no rate limit).
        None => PerfStack::builder().build()?,
        // A `PerfConfig` in TOML (any serde format works); a bad value fails here, naming its
        // key: "invalid `cache.max_mb`: must be at least 1".
        Some(path) => {
            let config: PerfConfig = toml::from_str(&std::fs::read_to_string(path)?)?;
            PerfStack::from_config(&config)?
        }
    };
    let handles = stack.handles();

    let app = Router::new()
        .route(
            "/",
            get(|| async { ([("cache-control", "max-age=60")], "hello") }),
        )
        .route(
            "/stats",
            get(move || async move { Json(handles.slow.snapshot()) }),
        )
        // After the routes, so the layers see the route template of each request.
        .layer(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    // The peer address identifies clients for the rate limit.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}
