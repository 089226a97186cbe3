//! The console's routes: the page, the event stream, a snapshot, and the admin controls.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::feed::Console;
use crate::rate_limit::ClientKey;

/// The page: HTML, CSS and JavaScript in one response, nothing fetched from elsewhere.
const PAGE: &str = concat!(
    include_str!("page/head.html"),
    "<style>\n",
    include_str!("page/console.css"),
    "</style>\n",
    include_str!("page/body.html"),
    "<script>\n",
    include_str!("page/console.js"),
    "</script>\n</body>\n</html>\n"
);

impl Console {
    /// The console's routes, to mount where the administrators go (behind an
    /// [`AdminAuthLayer`](super::AdminAuthLayer)): `app.nest("/admin/console",
    /// console.router())`.
    ///
    /// - `GET /`: the page;
    /// - `GET /events`: the `text/event-stream` of [`ConsoleSnapshot`](super::ConsoleSnapshot)s;
    /// - `GET /snapshot`: one snapshot taken now, as JSON;
    /// - `POST /purge` (`{"tag": "..."}` or `{"prefix": "/..."}`, optional `"hard": false`),
    ///   `POST /breaker` (`{"key": "/route", "action": "open" | "close" | "reset"}`),
    ///   `POST /rate-limit/reset` (`{"client": "192.0.2.7"}`): the controls, which answer `403`
    ///   unless the request carries the [`Admin`] mark of an `AdminAuthLayer` outside.
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/snapshot", get(snapshot))
            .route("/purge", post(purge))
            .route("/breaker", post(breaker))
            .route("/rate-limit/reset", post(reset_client))
            .with_state(self.clone())
    }
}

/// [`Console::new(handles).router()`](Console::router): the console with a snapshot per second.
pub fn router<S>(handles: crate::stack::PerfHandles) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Console::new(handles).router()
}

async fn page() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        PAGE,
    )
        .into_response()
}

async fn events(State(console): State<Console>) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(console.events()),
    )
        .into_response()
}

async fn snapshot(State(console): State<Console>) -> Response {
    (
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(console.snapshot()),
    )
        .into_response()
}

/// A control's refusal: `{"error": message}` with `status`.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused(status, message.into())
}

/// A control's request: the [`Admin`] mark (else `403`), and a JSON body of type `T` (else
/// axum's status for it: `400`, `415`, `422`).
struct Control<T>(T);

impl<S, T> FromRequest<S> for Control<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Refused;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.extensions().get::<Admin>().is_none() {
            return Err(error(
                StatusCode::FORBIDDEN,
                "the console's controls need an administrator (mount it behind AdminAuthLayer)",
            ));
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(t)) => Ok(Self(t)),
            Err(e) => Err(error(e.status(), e.body_text())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    tag: Option<String>,
    prefix: Option<String>,
    #[serde(default = "yes")]
    hard: bool,
}

fn yes() -> bool {
    true
}

async fn purge(
    State(console): State<Console>,
    Control(req): Control<Purge>,
) -> Result<Response, Refused> {
    let cache = &console.handles().cache;
    match (req.tag.as_deref(), req.prefix.as_deref()) {
        (Some(tag), None) if !tag.is_empty() && tag.len() <= 200 => {
            cache.purge_tags([tag], req.hard);
        }
        (None, Some(prefix)) if prefix.starts_with('/') && prefix.len() <= 2048 => {
            cache.purge_prefix(prefix, req.hard);
        }
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "give one of `tag` (1 to 200 characters) or `prefix` (a path starting with '/')",
            ))
        }
    }
    tracing::info!(tag = ?req.tag, prefix = ?req.prefix, hard = req.hard, "console: cache purged");
    Ok(
        Json(json!({ "purged": { "tag": req.tag, "prefix": req.prefix, "hard": req.hard } }))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerAction {
    key: String,
    action: String,
}

async fn breaker(
    State(console): State<Console>,
    Control(req): Control<BreakerAction>,
) -> Result<Response, Refused> {
    let breakers = &console.handles().breaker;
    // Only breakers the layer made: `force_open` would make one for any key.
    if breakers.state(&req.key).is_none() {
        return Err(error(StatusCode::NOT_FOUND, "no breaker with this key"));
    }
    match req.action.as_str() {
        "open" => breakers.force_open(&req.key),
        "close" => _ = breakers.force_close(&req.key),
        "reset" => _ = breakers.reset(&req.key),
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "`action` is one of \"open\", \"close\", \"reset\"",
            ))
        }
    }
    tracing::info!(key = %req.key, action = %req.action, "console: breaker forced");
    Ok(Json(json!({ "breaker": breakers.breaker(&req.key) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetClient {
    client: String,
}

async fn reset_client(
    State(console): State<Console>,
    Control(req): Control<ResetClient>,
) -> Result<Response, Refused> {
    let Ok(ip) = req.client.trim().parse::<IpAddr>() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "`client` is an IP address (clients are keyed by address)",
        ));
    };
    let forgotten = console.handles().rate_limit.reset(ClientKey::ip(ip));
    tracing::info!(client = %ip, forgotten, "console: client quota reset");
    Ok(Json(json!({ "client": ip, "forgotten": forgotten })).into_response())
}
