//! `GET /api/v1/payments/{id}/status` calls a simulated payment provider, which
//! `PUT /admin/payments/fault` makes fail or slow down: the circuit breaker's playground.

use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tower_perf::Timings;

use crate::data::{mix64, AtomicRng};
use crate::routes::{parse_id, phase, ApiError, AppState, FieldError};

pub(crate) const PAYMENTS_SEED: u64 = 0xFA_u64 << 40;
const MAX_FAULT_LATENCY_MS: u64 = 60_000;

/// How the payment provider misbehaves. A field left out of a `PUT` is 0 (no failure, no
/// added latency), so `{"failure_rate": 1.0}` alone is accepted, as the docs show.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct FaultConfig {
    /// Share of calls that fail, 0.0 to 1.0.
    failure_rate: f64,
    /// Latency added to every call.
    latency_ms: u64,
}

pub(crate) struct PaymentProvider {
    fault: RwLock<FaultConfig>,
    rng: AtomicRng,
}

#[derive(Debug)]
enum ProviderError {
    Unavailable,
}

#[derive(Serialize)]
struct PaymentStatus {
    payment_id: u64,
    status: &'static str,
    amount: String,
    currency: &'static str,
    provider_latency_ms: f64,
}

impl PaymentProvider {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            fault: RwLock::new(FaultConfig::default()),
            rng: AtomicRng::new(seed),
        }
    }

    fn fault(&self) -> FaultConfig {
        *self.fault.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_fault(&self, fault: FaultConfig) {
        *self.fault.write().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// One call to the provider: a few milliseconds of network, plus the configured latency, and
    /// the configured share of failures. The payment's own status depends on its id only.
    async fn status(&self, payment_id: u64) -> Result<PaymentStatus, ProviderError> {
        let fault = self.fault();
        let start = Instant::now();
        let network = 2 + (self.rng.unit() * 8.0) as u64;
        tokio::time::sleep(Duration::from_millis(network + fault.latency_ms)).await;
        if self.rng.unit() < fault.failure_rate {
            return Err(ProviderError::Unavailable);
        }
        let bits = mix64(payment_id ^ PAYMENTS_SEED);
        let status = match bits % 10 {
            0..=6 => "settled",
            7 | 8 => "pending",
            _ => "declined",
        };
        let amount_cents = 50_000 + (bits >> 8) % 250_000;
        Ok(PaymentStatus {
            payment_id,
            status,
            amount: format!("{}.{:02}", amount_cents / 100, amount_cents % 100),
            currency: "EUR",
            provider_latency_ms: start.elapsed().as_micros() as f64 / 1e3,
        })
    }
}

pub(crate) async fn payment_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    timings: Option<Extension<Timings>>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "payment")?;
    let timings = timings.map(|Extension(t)| t);
    let call = phase(timings.as_ref(), "provider");
    let result = state.payments.status(id).await;
    drop(call);
    match result {
        Ok(status) => Ok(Json(status).into_response()),
        Err(ProviderError::Unavailable) => {
            tracing::warn!(payment_id = id, "payment provider failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "payment provider unavailable",
            ))
        }
    }
}

pub(crate) async fn get_fault(State(state): State<AppState>) -> Json<FaultConfig> {
    Json(state.payments.fault())
}

pub(crate) async fn put_fault(
    State(state): State<AppState>,
    payload: Result<Json<FaultConfig>, JsonRejection>,
) -> Result<Json<FaultConfig>, ApiError> {
    let Json(fault) = payload?;
    let mut errors = Vec::new();
    if !(0.0..=1.0).contains(&fault.failure_rate) {
        errors.push(FieldError {
            field: "failure_rate",
            message: "must be between 0.0 and 1.0".into(),
        });
    }
    if fault.latency_ms > MAX_FAULT_LATENCY_MS {
        errors.push(FieldError {
            field: "latency_ms",
            message: format!("must be at most {MAX_FAULT_LATENCY_MS}"),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    state.payments.set_fault(fault);
    tracing::info!(
        failure_rate = fault.failure_rate,
        latency_ms = fault.latency_ms,
        "payment provider fault changed"
    );
    Ok(Json(fault))
}
