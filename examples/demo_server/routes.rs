//! The application: its state, its router and its errors. The handlers live in
//! `properties.rs`, `reports.rs`, `payments.rs` and `admin.rs`.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;
use tower_perf::console::Console;
use tower_perf::stack::PerfHandles;
use tower_perf::{PhaseGuard, Timings};

use crate::data::{Store, DATA_SEED, DATA_SET_SIZE};
use crate::payments::{PaymentProvider, PAYMENTS_SEED};
use crate::{admin, payments, properties, reports};

/// Route of the CSV export; named once so the router, its slow threshold in `demo.toml` and the
/// banner cannot drift apart.
pub(crate) const EXPORT_ROUTE: &str = "/api/v1/reports/export";

/// The cache tag of everything derived from the property list; a write purges it.
pub(crate) const PROPERTIES_TAG: &str = "properties";

/// The response header handlers use to tag what the cache stores (read and removed by the cache).
pub(crate) const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) properties: Arc<RwLock<Store>>,
    pub(crate) payments: Arc<PaymentProvider>,
    pub(crate) metrics: PrometheusHandle,
    /// The stack's handles: `/admin/stats` reads them, a write purges the cache through them.
    pub(crate) layers: PerfHandles,
    pub(crate) started: Instant,
}

impl AppState {
    pub(crate) fn new(metrics: PrometheusHandle, layers: PerfHandles) -> Self {
        Self {
            properties: Arc::new(RwLock::new(Store::generate(DATA_SET_SIZE, DATA_SEED))),
            payments: Arc::new(PaymentProvider::new(PAYMENTS_SEED)),
            metrics,
            layers,
            started: Instant::now(),
        }
    }

    // A panic while holding the lock cannot leave the store half-written (every write is one
    // push), so a poisoned lock is still good to use.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.properties
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.properties
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The routes of the application, without the tower-perf stack (see `stack::around`).
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/properties",
            get(properties::list_properties).post(properties::create_property),
        )
        .route("/api/v1/properties/{id}", get(properties::get_property))
        .route("/api/v1/dashboard", get(reports::dashboard))
        .route(EXPORT_ROUTE, get(reports::export_ledger))
        .route(
            "/api/v1/payments/{id}/status",
            get(payments::payment_status),
        )
        .route(
            "/admin/payments/fault",
            get(payments::get_fault).put(payments::put_fault),
        )
        .route("/admin/stats", get(admin::admin_stats))
        .route("/admin/cache/purge", post(admin::purge_cache))
        .route("/metrics", get(admin::metrics))
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .route("/alive", get(admin::alive))
        .fallback(not_found)
        .with_state(state)
}

/// The live console at `/admin/console`, kept outside the tower-perf stack (see
/// `stack::around`): its event stream lasts as long as the page is open, and would otherwise
/// hold a queue permit and count as one very slow request.
pub(crate) fn console(state: &AppState) -> Router {
    Router::new().nest(
        "/admin/console",
        Console::new(state.layers.clone()).router(),
    )
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// An error answered as `{"error": "..."}` (plus `errors` for validation failures).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<FieldError>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FieldError {
    pub(crate) field: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "validation failed".into(),
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.errors.is_empty() {
            json!({ "error": self.message })
        } else {
            json!({ "error": self.message, "errors": self.errors })
        };
        (self.status, Json(body)).into_response()
    }
}

/// axum's JSON rejections keep their status (400 malformed, 415 wrong content type, 422 wrong
/// shape) but get a JSON body.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// Starts timing phase `name` of the request, if a layer put a [`Timings`] record on it.
pub(crate) fn phase(timings: Option<&Timings>, name: &'static str) -> Option<PhaseGuard> {
    timings.map(|t| t.start(name))
}

pub(crate) fn parse_id(raw: &str, what: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "{what} id must be a non-negative integer, got {raw:?}"
        ))
    })
}
