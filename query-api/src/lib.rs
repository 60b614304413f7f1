//! The query-api role: Herald's read API, answered from the store's read models (and, for
//! health, from the log's consumer lag).
//!
//! **Rule:** nothing here changes state; writes live in `herald-ingest`.

mod health;

use std::sync::Arc;

use axum::extract::{FromRef, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use herald_domain::ids::DeliveryId;
use herald_http::api::{DeliveryOut, EndpointOut, Page, TemplateOut};
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
    let limit = query.limit()?;
    let mut endpoints = state.store.endpoints(&caller.tenant_id).await?;
    endpoints.sort_by(|a, b| a.id.cmp(&b.id));
    let after: Vec<_> = endpoints
        .iter()
        .filter(|e| {
            query
                .cursor
                .as_deref()
                .is_none_or(|cursor| e.id.as_str() > cursor)
        })
        .collect();
    let has_more = after.len() > limit;
    let data: Vec<EndpointOut> = after
        .iter()
        .take(limit)
        .map(|e| EndpointOut::public(e))
        .collect();
    let next_cursor = if has_more {
        data.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(Page {
        data,
        next_cursor,
        has_more,
    }))
}
