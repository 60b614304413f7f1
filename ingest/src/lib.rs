//! The ingest role: Herald's write API.
//!
//! Every handler authenticates, validates, and appends events to the log; it answers 2xx only
//! once the append is durable. It never talks to a channel or a provider: delivering is the
//! dispatcher's job, reading the projector's and the query API's. Control changes (tenants,
//! keys, templates, endpoints, recipients) are also written through to the store right after
//! their append, so a client can use what it just created (see `herald_store`).
//!
//! **Rule:** every route here changes something; every read-only route lives in
//! `herald-query-api`. A load balancer can split the two roles by method alone.

mod admin;
mod append;
mod deliveries;
mod events;
mod send;
mod templates;
mod webhooks;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::{patch, post, put};
use axum::Router;
use herald_domain::secret_box::SecretKey;
use herald_domain::target::TargetPolicy;
use herald_http::auth::{AdminToken, Authenticator};
use herald_http::clock::Clock;
use herald_log::Log;
use herald_schemas::topics::Topics;
use herald_store::Store;

/// What the ingest handlers share.
#[derive(Clone)]
pub struct IngestState {
    pub log: Arc<dyn Log>,
    pub store: Arc<dyn Store>,
    pub topics: Arc<Topics>,
    pub auth: Authenticator,
    pub admin_token: AdminToken,
    /// Checked when endpoints and contact URLs are registered (and again when connecting).
    pub target_policy: TargetPolicy,
    /// Seals endpoint signing secrets before they reach the log and the store
    /// (`HERALD_SECRET_KEY`); `None` stores them in clear.
    pub secret_key: Option<SecretKey>,
    /// The time, as sends read it (idempotency windows).
    pub clock: Clock,
}

impl FromRef<IngestState> for Authenticator {
    fn from_ref(state: &IngestState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<IngestState> for AdminToken {
    fn from_ref(state: &IngestState) -> Self {
        state.admin_token.clone()
    }
}

/// Every write route, ready to be merged with the other roles' routers.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/admin/tenants", post(admin::create_tenant))
        .route("/v1/admin/tenants/{id}", patch(admin::update_tenant))
        .route("/v1/webhooks", post(webhooks::create_endpoint))
        .route(
            "/v1/webhooks/{id}",
            patch(webhooks::update_endpoint).delete(webhooks::delete_endpoint),
        )
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/v1/webhooks/{id}/replay", post(webhooks::replay))
        .route(
            "/v1/deliveries/{id}/retry",
            post(deliveries::retry_delivery),
        )
        .route(
            "/v1/templates/{slug}",
            put(templates::put_template).delete(templates::delete_template),
        )
        .route("/v1/send", post(send::send))
        .route("/v1/send/batch", post(send::send_batch))
        .route("/v1/events", post(events::post_event))
        .with_state(state)
}
