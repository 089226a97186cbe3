//! `GET|POST /api/v1/properties` and `GET /api/v1/properties/{id}`: paginated, cacheable
//! reads with ETags, and writes that purge what they change.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::data::{unix_now, Property, Status};
use crate::routes::{parse_id, ApiError, AppState, FieldError, CACHE_TAG, PROPERTIES_TAG};

const DEFAULT_PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 200;

/// Query parameters as raw strings, parsed by hand so bad input gets our own 400.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    page: Option<String>,
    per_page: Option<String>,
    status: Option<String>,
}

#[derive(Serialize)]
struct PropertyPage {
    page: usize,
    per_page: usize,
    total: usize,
    total_pages: usize,
    status: Option<Status>,
    items: Vec<Property>,
}

/// A positive integer query parameter no larger than `max`.
fn parse_positive(
    name: &str,
    raw: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err(ApiError::bad_request(format!(
            "`{name}` must be at least 1, got 0"
        ))),
        Ok(n) => Err(ApiError::bad_request(format!(
            "`{name}` must be at most {max}, got {n}"
        ))),
        Err(_) => Err(ApiError::bad_request(format!(
            "`{name}` must be a positive integer, got {raw:?}"
        ))),
    }
}

pub(crate) async fn list_properties(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let page = parse_positive("page", params.page.as_deref(), 1, usize::MAX)?;
    let per_page = parse_positive(
        "per_page",
        params.per_page.as_deref(),
        DEFAULT_PER_PAGE,
        MAX_PER_PAGE,
    )?;
    let status = match params.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`status` must be one of available, leased, maintenance; got {s:?}"
            ))
        })?),
    };

    let (total, items) = {
        let store = state.read();
        let matching = || {
            store
                .properties
                .iter()
                .filter(|p| status.is_none() || status == Some(p.status))
        };
        let total = matching().count();
        let skip = (page - 1).saturating_mul(per_page);
        let items: Vec<Property> = matching().skip(skip).take(per_page).cloned().collect();
        (total, items)
    };
    let body = PropertyPage {
        page,
        per_page,
        total,
        total_pages: total.div_ceil(per_page),
        status,
        items,
    };
    Ok((
        [
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            ),
            (CACHE_TAG, HeaderValue::from_static(PROPERTIES_TAG)),
        ],
        Json(body),
    )
        .into_response())
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as RFC 9110 §13.1.2 asks).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let ours = opaque(etag);
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

pub(crate) async fn get_property(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "property")?;
    let property = state
        .read()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("property {id} not found")))?;
    let etag = HeaderValue::from_str(&property.etag()).expect("an ETag is digits, '-' and quotes");
    let cache_control = HeaderValue::from_static("public, max-age=30");
    if if_none_match(&headers, &property.etag()) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag), (CACHE_CONTROL, cache_control)],
        )
            .into_response());
    }
    Ok((
        [
            (ETAG, etag),
            (CACHE_CONTROL, cache_control),
            (CACHE_TAG, HeaderValue::from_static(PROPERTIES_TAG)),
        ],
        Json(property),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct NewProperty {
    name: String,
    city: String,
    status: String,
    monthly_rent: i64,
}

const MAX_TEXT_CHARS: usize = 200;
const MAX_RENT: i64 = 1_000_000;

/// Checks a new property; every problem is reported, not only the first.
fn validate(input: &NewProperty) -> Result<(String, String, Status, u32), ApiError> {
    let mut errors = Vec::new();
    let mut text = |field: &'static str, value: &str| {
        let value = value.trim();
        if value.is_empty() {
            errors.push(FieldError {
                field,
                message: "must not be empty".into(),
            });
        } else if value.chars().count() > MAX_TEXT_CHARS {
            errors.push(FieldError {
                field,
                message: format!("must be at most {MAX_TEXT_CHARS} characters"),
            });
        }
        value.to_owned()
    };
    let name = text("name", &input.name);
    let city = text("city", &input.city);
    let status = Status::parse(input.status.trim());
    if status.is_none() {
        errors.push(FieldError {
            field: "status",
            message: format!(
                "must be one of available, leased, maintenance; got {:?}",
                input.status
            ),
        });
    }
    if !(0..=MAX_RENT).contains(&input.monthly_rent) {
        errors.push(FieldError {
            field: "monthly_rent",
            message: format!("must be between 0 and {MAX_RENT}"),
        });
    }
    match (status, u32::try_from(input.monthly_rent)) {
        (Some(status), Ok(rent)) if errors.is_empty() => Ok((name, city, status, rent)),
        _ => Err(ApiError::validation(errors)),
    }
}

pub(crate) async fn create_property(
    State(state): State<AppState>,
    payload: Result<Json<NewProperty>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(input) = payload?;
    let (name, city, status, monthly_rent) = validate(&input)?;
    let property = {
        let mut store = state.write();
        let id = store.next_id;
        store.next_id += 1;
        let property = Property {
            id,
            description: format!("{name} in {city}, added through the API."),
            name,
            address: String::new(),
            postal_code: String::new(),
            city,
            status,
            monthly_rent,
            bedrooms: 0,
            bathrooms: 1,
            square_meters: 0,
            year_built: 0,
            amenities: Vec::new(),
            manager_email: "leasing@example-estates.com".into(),
            updated_at: unix_now(),
            version: 1,
        };
        store.properties.push(property.clone());
        property
    };
    tracing::info!(id = property.id, "property created");
    // Every cached list page (and item) derived from the data set is now out of date. The cache
    // already invalidated `POST`'s own URI and `Location` (RFC 9111 4.4); the tag covers the
    // rest: `?page=2`, `?status=leased`, ...
    state.layers.cache.purge_tags([PROPERTIES_TAG], true);
    let location = HeaderValue::from_str(&format!("/api/v1/properties/{}", property.id))
        .expect("a path of ASCII digits is a valid header value");
    let etag = HeaderValue::from_str(&property.etag()).expect("an ETag is digits, '-' and quotes");
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location), (ETAG, etag)],
        Json(property),
    )
        .into_response())
}
