//! `POST /v1/events`: business events from ERPs, billing systems and the like.
//!
//! Events are deduplicated by the client's `event_id` per tenant through a claim in the store:
//! claim → append → complete. A duplicate of an accepted event answers 200 `duplicate`; a
//! request that finds the same id being accepted right now answers 409 so the client retries;
//! a claim abandoned by a crash or a failed append is never released but taken over after
//! [`CLAIM_LEASE_MS`] with the *same* Herald event id, so even an event that did reach the
//! log yields identical deliveries (same `webhook-id`) rather than new ones.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use herald_domain::ids::EventId;
use herald_http::auth::Caller;
use herald_http::validate::Validator;
use herald_http::{ApiError, ValidJson};
use herald_schemas::{BusinessEventReceived, HeraldEvent};
use herald_store::{ClaimKey, ClaimOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestState;

/// How long a claim may stay pending before another request may take it over.
const CLAIM_LEASE_MS: i64 = 30_000;
/// How long an accepted `event_id` is remembered.
pub const DEDUPE_WINDOW_MS: i64 = 30 * 24 * 3_600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventIn {
    event_id: String,
    event_name: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    actor: Option<ActorIn>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorIn {
    #[serde(rename = "type")]
    actor_type: String,
    id: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct EventAcceptedOut {
    status: &'static str,
    /// Herald's id of the event (`evt_...`): the `webhook-id` of its webhooks.
    id: String,
    /// The client's own id, as sent.
    event_id: String,
}

/// Event names are dotted identifiers, like `order.shipped`.
fn valid_event_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

pub(crate) async fn post_event(
    State(state): State<IngestState>,
    caller: Caller,
    ValidJson(input): ValidJson<EventIn>,
) -> Result<(StatusCode, Json<EventAcceptedOut>), ApiError> {
    let mut v = Validator::new();
    v.length("event_id", &input.event_id, 1, 64);
    v.check(valid_event_name(&input.event_name), "event_name", || {
        "use 1 to 128 letters, digits, `.`, `_`, `-` or `:`, like `order.shipped`".into()
    });
    v.check(
        !input.event_name.starts_with("delivery.") && !input.event_name.starts_with("endpoint."),
        "event_name",
        || "`delivery.*` and `endpoint.*` are Herald's own event names".into(),
    );
    if let Some(source) = &input.source {
        v.length("source", source, 1, 64);
    }
    if let Some(actor) = &input.actor {
        v.length("actor.type", &actor.actor_type, 1, 64);
        v.length("actor.id", &actor.id, 1, 128);
    }
    let data = input
        .data
        .unwrap_or_else(|| Value::Object(Default::default()));
    v.check(data.is_object(), "data", || "must be a JSON object".into());
    v.finish()?;

    let now = Utc::now();
    let claim = ClaimKey {
        tenant_id: caller.tenant_id.clone(),
        scope: "event",
        key: input.event_id.clone(),
    };
    let proposed = EventId::generate();
    let herald_event_id = match state
        .store
        .claim(
            &claim,
            proposed.as_str(),
            now.timestamp_millis(),
            CLAIM_LEASE_MS,
        )
        .await?
    {
        ClaimOutcome::Claimed { id } => id,
        ClaimOutcome::Completed { id, .. } => {
            return Ok((
                StatusCode::OK,
                Json(EventAcceptedOut {
                    status: "duplicate",
                    id,
                    event_id: input.event_id,
                }),
            ));
        }
        ClaimOutcome::InFlight => {
            return Err(ApiError::Conflict(format!(
                "event `{}` is being accepted by another request right now; retry in a moment",
                input.event_id
            )));
        }
    };

    let event = HeraldEvent::BusinessEventReceived(BusinessEventReceived {
        tenant_id: caller.tenant_id.to_string(),
        event_id: herald_event_id.clone(),
        external_id: input.event_id.clone(),
        event_name: input.event_name,
        source: input.source,
        actor_type: input.actor.as_ref().map(|a| a.actor_type.clone()),
        actor_id: input.actor.map(|a| a.id),
        data_json: data.to_string(),
        occurred_at: input.occurred_at.map(|at| at.timestamp_millis()),
        received_at: now.timestamp_millis(),
    });
    // A failed append may still have reached the log (a timeout, or an acknowledgement
    // without an offset), so the claim is kept, not released: once its lease runs out, the
    // client's retry takes it over with the *same* Herald event id, and a record that did
    // land yields identical deliveries rather than a second event.
    state.append(&[event]).await?;
    // The event is durable: a failure to mark the claim completed is logged, not returned
    // (an error here would invite a retry; the pending claim dedupes it the same way).
    let expires = Some(now.timestamp_millis() + DEDUPE_WINDOW_MS);
    if let Err(err) = state.store.complete_claim(&claim, None, expires).await {
        tracing::warn!(error = %err, "could not mark an accepted event's claim completed");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(EventAcceptedOut {
            status: "accepted",
            id: herald_event_id,
            event_id: input.event_id,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::valid_event_name;

    #[test]
    fn event_names() {
        assert!(valid_event_name("order.shipped"));
        assert!(valid_event_name("invoice:paid_v2"));
        assert!(!valid_event_name("order shipped"));
        assert!(!valid_event_name(""));
    }
}
