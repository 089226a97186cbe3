//! `GET /api/v1/dashboard`, an expensive aggregate the cache serves stale while it refreshes,
//! and `GET /api/v1/reports/export`, a CSV ledger of several MB streamed and compressed as it
//! goes, never cached.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tower_perf::Timings;

use crate::data::{mix64, unix_now, Property, SplitMix64, Status, DATA_SEED};
use crate::routes::{phase, AppState, CACHE_TAG, PROPERTIES_TAG};

/// How long the simulated dashboard query takes in the "database".
const DASHBOARD_QUERY_TIME: Duration = Duration::from_millis(50);

#[derive(Serialize)]
struct Dashboard {
    total_properties: usize,
    by_status: BTreeMap<&'static str, usize>,
    /// Leased / all properties.
    occupancy_rate: f64,
    average_rent_by_city: BTreeMap<String, f64>,
    top_cities_by_rent: Vec<CityRent>,
    generated_at: u64,
}

#[derive(Serialize)]
struct CityRent {
    city: String,
    average_rent: f64,
    properties: usize,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn aggregate(properties: &[Property]) -> Dashboard {
    let mut by_status: BTreeMap<&'static str, usize> =
        Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut rent_by_city: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for p in properties {
        *by_status.entry(p.status.as_str()).or_default() += 1;
        let city = rent_by_city.entry(p.city.as_str()).or_default();
        city.0 += u64::from(p.monthly_rent);
        city.1 += 1;
    }
    let mut cities: Vec<CityRent> = rent_by_city
        .into_iter()
        .map(|(city, (sum, n))| CityRent {
            city: city.to_owned(),
            average_rent: round2(sum as f64 / n as f64),
            properties: n,
        })
        .collect();
    let average_rent_by_city = cities
        .iter()
        .map(|c| (c.city.clone(), c.average_rent))
        .collect();
    cities.sort_by(|a, b| b.average_rent.total_cmp(&a.average_rent));
    cities.truncate(5);
    let total = properties.len();
    let leased = by_status.get("leased").copied().unwrap_or(0);
    Dashboard {
        total_properties: total,
        by_status,
        occupancy_rate: if total == 0 {
            0.0
        } else {
            round2(leased as f64 / total as f64 * 100.0) / 100.0
        },
        average_rent_by_city,
        top_cities_by_rent: cities,
        generated_at: unix_now(),
    }
}

pub(crate) async fn dashboard(
    State(state): State<AppState>,
    timings: Option<Extension<Timings>>,
) -> Response {
    let timings = timings.map(|Extension(t)| t);

    // The expensive part: a reporting query in a real database.
    let db = phase(timings.as_ref(), "db");
    tokio::time::sleep(DASHBOARD_QUERY_TIME).await;
    drop(db);

    let agg = phase(timings.as_ref(), "aggregate");
    let body = aggregate(&state.read().properties);
    drop(agg);

    (
        [
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=5, stale-while-revalidate=30"),
            ),
            // Derived from the property list: a write purges it with the list.
            (CACHE_TAG, HeaderValue::from_static(PROPERTIES_TAG)),
        ],
        Json(body),
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------------
// CSV export
// ------------------------------------------------------------------------------------------------

const LEDGER_MONTHS: u64 = 24;
const LEDGER_HEADER: &str = "invoice_id,property_id,property_name,city,tenant_id,period,due_date,\
rent_due,late_fee,amount_paid,balance,currency,payment_method,payment_status,paid_on\n";
const PAYMENT_METHODS: [&str; 3] = ["bank_transfer", "direct_debit", "card"];

/// A CSV field, quoted when it holds a separator, a quote or a line break.
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn cents(out: &mut String, cents: u64) {
    let _ = write!(out, "{}.{:02}", cents / 100, cents % 100);
}

/// The 24 monthly ledger rows (January 2023 to December 2024) of one property.
fn ledger_rows(p: &Property) -> String {
    let mut out = String::with_capacity(LEDGER_MONTHS as usize * 180);
    for month in 0..LEDGER_MONTHS {
        let mut rng = SplitMix64::new(mix64(DATA_SEED ^ (p.id << 8) ^ month));
        let (year, mon) = (2023 + month / 12, month % 12 + 1);
        let tenant = p.id * 10 + month / 12;
        let vacant = p.status == Status::Available && month >= LEDGER_MONTHS - 4;
        let due = if vacant {
            0
        } else {
            u64::from(p.monthly_rent) * 100
        };
        let roll = rng.unit();
        let (late_fee, paid, status, paid_day) = if vacant {
            (0, 0, "vacant", None)
        } else if roll < 0.80 {
            (0, due, "paid", Some(rng.range(1, 5)))
        } else if roll < 0.92 {
            let fee = due / 20;
            (fee, due + fee, "paid_late", Some(rng.range(6, 28)))
        } else if roll < 0.97 {
            (
                0,
                due * rng.range(50, 90) / 100,
                "partial",
                Some(rng.range(1, 28)),
            )
        } else {
            (0, 0, "unpaid", None)
        };
        let _ = write!(out, "INV-{:06}-{year}{mon:02},{},", p.id, p.id);
        csv_field(&mut out, &p.name);
        out.push(',');
        csv_field(&mut out, &p.city);
        let _ = write!(out, ",T-{tenant:07},{year}-{mon:02},{year}-{mon:02}-01,");
        cents(&mut out, due);
        out.push(',');
        cents(&mut out, late_fee);
        out.push(',');
        cents(&mut out, paid);
        out.push(',');
        cents(&mut out, (due + late_fee).saturating_sub(paid));
        let method = if paid > 0 {
            *rng.pick(&PAYMENT_METHODS)
        } else {
            ""
        };
        let _ = write!(out, ",EUR,{method},{status},");
        if let Some(day) = paid_day {
            let _ = write!(out, "{year}-{mon:02}-{day:02}");
        }
        out.push('\n');
    }
    out
}

/// Streams the ledger one property (24 rows, a few KB) at a time: the whole file, about 4 MB, is
/// never in memory, and the read lock is held only while one chunk is formatted.
pub(crate) async fn export_ledger(State(state): State<AppState>) -> Response {
    let header =
        stream::once(async { Ok::<_, Infallible>(Bytes::from_static(LEDGER_HEADER.as_bytes())) });
    let rows = stream::unfold(0usize, move |index| {
        let state = state.clone();
        async move {
            let chunk = state.read().properties.get(index).map(ledger_rows)?;
            Some((Ok(Bytes::from(chunk)), index + 1))
        }
    });
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"ledger.csv\""),
            ),
        ],
        Body::from_stream(header.chain(rows)),
    )
        .into_response()
}
