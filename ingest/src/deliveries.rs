//! `POST /v1/deliveries/{id}/retry`: re-sends a failed delivery now.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use herald_domain::ids::DeliveryId;
use herald_domain::DeliveryStatus;
use herald_http::auth::Caller;
use herald_http::{ApiError, ValidPath};
use herald_schemas::{DeliveryRequeued, DeliveryTask, HeraldEvent};
use serde::Serialize;

use crate::IngestState;

#[derive(Debug, Serialize)]
pub(crate) struct RetryOut {
    id: String,
    status: DeliveryStatus,
    /// The number of the attempt that follows.
    attempt: i32,
}

/// One more attempt, at once, with the task exactly as it was dead-lettered (same message
/// id, so a receiver can still deduplicate). It is a single attempt: if it fails too, the
/// delivery is failed again. A disabled endpoint must be re-enabled first.
pub(crate) async fn retry_delivery(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<(StatusCode, Json<RetryOut>), ApiError> {
    let not_found = || ApiError::NotFound("delivery");
    let id = DeliveryId::parse(&id).map_err(|_| not_found())?;
    let delivery = state
        .store
        .delivery(&caller.tenant_id, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    if delivery.status != DeliveryStatus::Failed {
        return Err(ApiError::Conflict(format!(
            "only a failed delivery can be retried; this one is {}",
            delivery.status
        )));
    }
    let encoded = state
        .store
        .dead_letter(&caller.tenant_id, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::Conflict(
                "this delivery's dead-lettered task is not available (yet); retry shortly".into(),
            )
        })?;
    let Ok(HeraldEvent::DeliveryTask(dead)) = herald_schemas::decode(&encoded) else {
        return Err(ApiError::internal("a dead letter is not a delivery task"));
    };
    let attempt = i32::try_from(delivery.attempts)
        .unwrap_or(i32::MAX - 1)
        .max(dead.attempt - 1)
        + 1;
    let now_ms = Utc::now().timestamp_millis();
    let events = [
        HeraldEvent::DeliveryRequeued(DeliveryRequeued {
            tenant_id: caller.tenant_id.to_string(),
            delivery_id: id.to_string(),
            channel: dead.channel.clone(),
            attempt,
            requested_at: now_ms,
        }),
        HeraldEvent::DeliveryTask(DeliveryTask {
            attempt,
            not_before: 0,
            ..dead
        }),
    ];
    state.append(&events).await?;
    tracing::info!(delivery_id = %id, attempt, "failed delivery re-sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryOut {
            id: id.to_string(),
            status: DeliveryStatus::Queued,
            attempt,
        }),
    ))
}
