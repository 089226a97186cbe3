//! Test harness: a real server on 127.0.0.1:0 and a real HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on a free loopback port; the server task ends with the test's runtime.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server");
    });
    addr
}

/// Like [`serve`], with the peer address of each connection in axum's `ConnectInfo` (what
/// per-client layers such as the rate limiter read).
pub async fn serve_with_peer(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("server");
    });
    addr
}

/// A client that talks straight to loopback, never through a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// Lets the runtime run every task that is ready, without moving the (paused) clock much: used
/// to wait for a server task to notice something the client did.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// GETs `url` and reads the whole body as text.
pub async fn get_text(client: &reqwest::Client, url: String) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}
pub mod alloc;
pub mod demo;
pub mod redis;
pub mod topology;
