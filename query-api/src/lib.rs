//! The query-api role: Herald's read API, answered from the store's read models (and, for
//! health, from the log's consumer lag).
//!
//! **Rule:** nothing here changes state; writes live in `herald-ingest`.

mod health;

use std::sync::Arc;

use axum::extract::{FromRef, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as CURSOR;
use base64::Engine as _;
use herald_domain::ids::{DeliveryId, EndpointId};
use herald_domain::model::{AttemptCursor, Endpoint};
use herald_http::api::{AttemptOut, DeliveryOut, EndpointOut, Page, TemplateOut};
use herald_http::auth::{Authenticator, Caller};
use herald_http::{ApiError, ValidPath};
use herald_log::Log;
use herald_store::Store;
use serde::Deserialize;

pub use health::{HealthConfig, HealthProbe};

#[derive(Clone)]
pub struct QueryState {
    pub store: Arc<dyn Store>,
    pub auth: Authenticator,
    pub health: Arc<HealthProbe>,
}

impl QueryState {
    pub fn new(
        store: Arc<dyn Store>,
        log: Arc<dyn Log>,
        auth: Authenticator,
        health: HealthConfig,
    ) -> Self {
        Self {
            health: Arc::new(HealthProbe::new(log, store.clone(), health)),
            store,
            auth,
        }
    }
}

impl FromRef<QueryState> for Authenticator {
    fn from_ref(state: &QueryState) -> Self {
        state.auth.clone()
    }
}

/// Every read route, ready to be merged with the other roles' routers.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/webhooks", get(list_endpoints))
        .route("/v1/webhooks/{id}", get(get_endpoint))
        .route("/v1/webhooks/{id}/attempts", get(list_attempts))
        .route("/v1/templates", get(list_templates))
        .route("/v1/templates/{slug}", get(get_template))
        .with_state(state)
}

async fn get_delivery(
    State(state): State<QueryState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<DeliveryOut>, ApiError> {
    // A malformed id cannot exist: same answer as an unknown one.
    let id = DeliveryId::parse(&id).map_err(|_| ApiError::NotFound("delivery"))?;
    let delivery = state
        .store
        .delivery(&caller.tenant_id, &id)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    Ok(Json(DeliveryOut::from(&delivery)))
}

async fn get_template(
    State(state): State<QueryState>,
    caller: Caller,
    ValidPath(slug): ValidPath<String>,
) -> Result<Json<TemplateOut>, ApiError> {
    let template = state
        .store
        .template(&caller.tenant_id, &slug)
        .await?
        .ok_or(ApiError::NotFound("template"))?;
    Ok(Json(TemplateOut::from(&template)))
}

/// Templates by slug; the cursor is the last slug of the previous page.
async fn list_templates(
    State(state): State<QueryState>,
    caller: Caller,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<TemplateOut>>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::field("query", err.body_text()))?;
    let templates = state.store.templates(&caller.tenant_id).await?;
    let page = page_after(&templates, &query, |t| &t.slug)?;
    Ok(Json(page.map(TemplateOut::from)))
}

/// A page of `items` (sorted by `key`, ascending) after the query's cursor, the cursor being
/// the key of the last item of the previous page.
fn page_after<'a, T>(
    items: &'a [T],
    query: &PageQuery,
    key: impl Fn(&T) -> &str,
) -> Result<Page<&'a T>, ApiError> {
    let limit = query.limit()?;
    let mut after = items.iter().filter(|item| {
        query
            .cursor
            .as_deref()
            .is_none_or(|cursor| key(item) > cursor)
    });
    let data: Vec<&T> = after.by_ref().take(limit).collect();
    let has_more = after.next().is_some();
    Ok(Page {
        next_cursor: has_more
            .then(|| data.last().map(|item| key(item).to_owned()))
            .flatten(),
        data,
        has_more,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(limit @ 1..=100) => Ok(limit),
            Some(_) => Err(ApiError::field("limit", "must be between 1 and 100")),
        }
    }
}

/// Endpoints in creation order; the cursor is the last id of the previous page (ids sort by
/// creation time, so pages stay stable while endpoints are added).
async fn list_endpoints(
    State(state): State<QueryState>,
    caller: Caller,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<EndpointOut>>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::field("query", err.body_text()))?;
    let mut endpoints = state.store.endpoints(&caller.tenant_id).await?;
    endpoints.sort_by(|a, b| a.id.cmp(&b.id));
    let page = page_after(&endpoints, &query, |e| e.id.as_str())?;
    Ok(Json(page.map(EndpointOut::public)))
}

async fn endpoint(state: &QueryState, caller: &Caller, id: &str) -> Result<Endpoint, ApiError> {
    let id = EndpointId::parse(id).map_err(|_| ApiError::NotFound("endpoint"))?;
    state
        .store
        .endpoint(&caller.tenant_id, &id)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))
}

async fn get_endpoint(
    State(state): State<QueryState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<EndpointOut>, ApiError> {
    let endpoint = endpoint(&state, &caller, &id).await?;
    Ok(Json(EndpointOut::public(&endpoint)))
}

/// An endpoint's attempts, newest first. The cursor encodes the last row's position, so
/// attempts made while paging never shift the pages.
async fn list_attempts(
    State(state): State<QueryState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<AttemptOut>>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::field("query", err.body_text()))?;
    let limit = query.limit()?;
    let after = query
        .cursor
        .as_deref()
        .map(|cursor| {
            decode_attempt_cursor(cursor)
                .ok_or_else(|| ApiError::field("cursor", "not a cursor this API gave out"))
        })
        .transpose()?;
    let endpoint = endpoint(&state, &caller, &id).await?;
    let mut rows = state
        .store
        .attempts(&caller.tenant_id, &endpoint.id, after.as_ref(), limit + 1)
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more {
        rows.last().map(|row| encode_attempt_cursor(&row.cursor()))
    } else {
        None
    };
    Ok(Json(Page {
        data: rows.iter().map(AttemptOut::from).collect(),
        next_cursor,
        has_more,
    }))
}

fn encode_attempt_cursor(cursor: &AttemptCursor) -> String {
    CURSOR.encode(format!(
        "{}:{}:{}",
        cursor.attempted_at_ms, cursor.attempt, cursor.delivery_id
    ))
}

fn decode_attempt_cursor(text: &str) -> Option<AttemptCursor> {
    let raw = String::from_utf8(CURSOR.decode(text).ok()?).ok()?;
    let mut parts = raw.splitn(3, ':');
    Some(AttemptCursor {
        attempted_at_ms: parts.next()?.parse().ok()?,
        attempt: parts.next()?.parse().ok()?,
        delivery_id: DeliveryId::parse(parts.next()?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_cursors_round_trip_and_garbage_is_refused() {
        let cursor = AttemptCursor {
            attempted_at_ms: 1_700_000_000_123,
            delivery_id: DeliveryId::generate(),
            attempt: 3,
        };
        assert_eq!(
            decode_attempt_cursor(&encode_attempt_cursor(&cursor)),
            Some(cursor)
        );
        assert_eq!(decode_attempt_cursor("not-a-cursor"), None);
        assert_eq!(decode_attempt_cursor(&CURSOR.encode("1:2:x")), None);
    }
}
