//! `POST /v1/webhooks`: registers a webhook endpoint.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use herald_domain::filter::validate_pattern;
use herald_domain::ids::EndpointId;
use herald_domain::model::{Endpoint, SignatureScheme};
use herald_domain::signing::EndpointSecret;
use herald_http::api::EndpointOut;
use herald_http::auth::Caller;
use herald_http::validate::Validator;
use herald_http::{ApiError, ValidJson};
use herald_schemas::{EndpointUpserted, HeraldEvent};
use herald_store::ReadModelWrite;
use serde::Deserialize;

use crate::IngestState;

const MAX_PATTERNS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointIn {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    signature_scheme: Option<String>,
}

pub(crate) async fn create_endpoint(
    State(state): State<IngestState>,
    caller: Caller,
    ValidJson(input): ValidJson<EndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let mut v = Validator::new();
    v.length("url", &input.url, 1, 2048);
    if let Err(err) = state.target_policy.check_url(&input.url) {
        v.error("url", err.to_string());
    }
    v.check(input.events.len() <= MAX_PATTERNS, "events", || {
        format!("at most {MAX_PATTERNS} patterns")
    });
    for (i, pattern) in input.events.iter().enumerate() {
        if let Err(message) = validate_pattern(pattern) {
            v.error(format!("events[{i}]"), message);
        }
    }
    if let Some(description) = &input.description {
        v.length("description", description, 0, 500);
    }
    let scheme = match input.signature_scheme.as_deref() {
        None => SignatureScheme::default(),
        Some(text) => SignatureScheme::parse(text).unwrap_or_else(|| {
            v.error("signature_scheme", "must be one of standard, stripe, hex");
            SignatureScheme::default()
        }),
    };
    v.finish()?;

    let now = Utc::now();
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        tenant_id: caller.tenant_id,
        url: input.url,
        description: input.description,
        events: input.events,
        signature_scheme: scheme,
        secret: EndpointSecret::generate().expose().to_owned(),
        is_active: true,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    let events = [HeraldEvent::EndpointUpserted(EndpointUpserted::from(
        &endpoint,
    ))];
    state
        .append_control(&events, vec![ReadModelWrite::Endpoint(endpoint.clone())])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointOut::with_secret(&endpoint)),
    ))
}
