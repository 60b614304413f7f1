//! Webhook endpoints: `POST /v1/webhooks`, `PATCH|DELETE /v1/webhooks/{id}`,
//! `POST /v1/webhooks/{id}/rotate-secret` and `POST /v1/webhooks/{id}/replay`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use herald_domain::filter::{subscribes_to, validate_pattern};
use herald_domain::ids::{DeliveryId, EndpointId};
use herald_domain::model::{Endpoint, SignatureScheme};
use herald_domain::retry::RetrySchedule;
use herald_domain::secret_box;
use herald_domain::signing::EndpointSecret;
use herald_domain::webhook::WebhookPayload;
use herald_http::api::EndpointOut;
use herald_http::auth::Caller;
use herald_http::validate::Validator;
use herald_http::{ApiError, ValidJson, ValidPath};
use herald_log::StartPosition;
use herald_schemas::{DeliveryTask, EndpointDeleted, EndpointUpserted, HeraldEvent};
use herald_store::ReadModelWrite;
use serde::{Deserialize, Deserializer, Serialize};

use crate::append::next_version;
use crate::IngestState;

const MAX_PATTERNS: usize = 100;
/// How long the secret before a rotation keeps signing.
const ROTATION_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// The most events one replay re-sends; a wider window is refused, to be split.
const MAX_REPLAY: usize = 10_000;
/// How long a replay may spend reading the log.
const REPLAY_SCAN_LIMIT: Duration = Duration::from_secs(60);

/// A retry schedule as clients write it: `["30s", "2m"]` or `"30s,2m"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScheduleIn {
    List(Vec<String>),
    Text(String),
}

impl ScheduleIn {
    fn parse(&self) -> Result<RetrySchedule, String> {
        let text = match self {
            ScheduleIn::List(items) => items.join(","),
            ScheduleIn::Text(text) => text.clone(),
        };
        text.parse()
            .map_err(|err: herald_domain::retry::ScheduleError| err.to_string())
    }
}

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
    #[serde(default)]
    retry_schedule: Option<ScheduleIn>,
    #[serde(default)]
    rate_limit_per_second: Option<u32>,
}

/// `PATCH` fields: absent leaves a field as it is; `null` clears the ones that may be empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointPatch {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default)]
    signature_scheme: Option<String>,
    #[serde(default, deserialize_with = "present")]
    retry_schedule: Option<Option<ScheduleIn>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit_per_second: Option<Option<u32>>,
    #[serde(default)]
    is_active: Option<bool>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`), for `PATCH` bodies.
pub(crate) fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The checks shared by create and update.
struct Fields<'a> {
    url: Option<&'a str>,
    events: Option<&'a [String]>,
    description: Option<&'a str>,
    signature_scheme: Option<&'a str>,
    retry_schedule: Option<&'a ScheduleIn>,
    rate_limit_per_second: Option<u32>,
}

struct Checked {
    scheme: Option<SignatureScheme>,
    schedule: Option<RetrySchedule>,
}

fn check(state: &IngestState, fields: Fields<'_>) -> Result<Checked, ApiError> {
    let mut v = Validator::new();
    if let Some(url) = fields.url {
        v.length("url", url, 1, 2048);
        if let Err(err) = state.target_policy.check_url(url) {
            v.error("url", err.to_string());
        }
    }
    if let Some(events) = fields.events {
        v.check(events.len() <= MAX_PATTERNS, "events", || {
            format!("at most {MAX_PATTERNS} patterns")
        });
        for (i, pattern) in events.iter().enumerate() {
            if let Err(message) = validate_pattern(pattern) {
                v.error(format!("events[{i}]"), message);
            }
        }
    }
    if let Some(description) = fields.description {
        v.length("description", description, 0, 500);
    }
    let scheme = fields.signature_scheme.map(|text| {
        SignatureScheme::parse(text).unwrap_or_else(|| {
            v.error("signature_scheme", "must be one of standard, stripe, hex");
            SignatureScheme::default()
        })
    });
    let schedule = fields
        .retry_schedule
        .and_then(|schedule| match schedule.parse() {
            Ok(schedule) => Some(schedule),
            Err(message) => {
                v.error("retry_schedule", message);
                None
            }
        });
    if let Some(rate) = fields.rate_limit_per_second {
        v.check(
            (1..=10_000).contains(&rate),
            "rate_limit_per_second",
            || "must be between 1 and 10000".into(),
        );
    }
    v.finish()?;
    Ok(Checked { scheme, schedule })
}

pub(crate) async fn create_endpoint(
    State(state): State<IngestState>,
    caller: Caller,
    ValidJson(input): ValidJson<EndpointIn>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let checked = check(
        &state,
        Fields {
            url: Some(&input.url),
            events: Some(&input.events),
            description: input.description.as_deref(),
            signature_scheme: input.signature_scheme.as_deref(),
            retry_schedule: input.retry_schedule.as_ref(),
            rate_limit_per_second: input.rate_limit_per_second,
        },
    )?;
    let now = Utc::now();
    let id = EndpointId::generate();
    let secret = EndpointSecret::generate();
    let endpoint = Endpoint {
        secret: state.protect(secret.expose(), &id),
        id,
        tenant_id: caller.tenant_id,
        url: input.url,
        description: input.description,
        events: input.events,
        signature_scheme: checked.scheme.unwrap_or_default(),
        previous_secret: None,
        previous_secret_expires_at: None,
        retry_schedule: checked.schedule,
        rate_limit_per_second: input.rate_limit_per_second,
        is_active: true,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    state.save_endpoint(&endpoint).await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointOut::with_secret(&endpoint, secret.expose())),
    ))
}

pub(crate) async fn update_endpoint(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
    ValidJson(patch): ValidJson<EndpointPatch>,
) -> Result<Json<EndpointOut>, ApiError> {
    let mut endpoint = state.endpoint(&caller, &id).await?;
    let checked = check(
        &state,
        Fields {
            url: patch.url.as_deref(),
            events: patch.events.as_deref(),
            description: patch.description.as_ref().and_then(|d| d.as_deref()),
            signature_scheme: patch.signature_scheme.as_deref(),
            retry_schedule: patch.retry_schedule.as_ref().and_then(|s| s.as_ref()),
            rate_limit_per_second: patch.rate_limit_per_second.flatten(),
        },
    )?;
    if let Some(url) = patch.url {
        endpoint.url = url;
    }
    if let Some(events) = patch.events {
        endpoint.events = events;
    }
    if let Some(description) = patch.description {
        endpoint.description = description;
    }
    if let Some(scheme) = checked.scheme {
        endpoint.signature_scheme = scheme;
    }
    if let Some(schedule) = patch.retry_schedule {
        endpoint.retry_schedule = schedule.and(checked.schedule);
    }
    if let Some(rate) = patch.rate_limit_per_second {
        endpoint.rate_limit_per_second = rate;
    }
    match patch.is_active {
        // Re-enabling clears the reason; the dispatcher starts the failure count afresh.
        Some(true) => {
            endpoint.is_active = true;
            endpoint.disabled_reason = None;
        }
        Some(false) if endpoint.is_active => {
            endpoint.is_active = false;
            endpoint.disabled_reason = Some("disabled through the API".into());
        }
        _ => {}
    }
    endpoint.updated_at = next_version(endpoint.updated_at);
    state.save_endpoint(&endpoint).await?;
    Ok(Json(EndpointOut::public(&endpoint)))
}

pub(crate) async fn delete_endpoint(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<StatusCode, ApiError> {
    let endpoint = state.endpoint(&caller, &id).await?;
    let at = next_version(endpoint.updated_at);
    let event = HeraldEvent::EndpointDeleted(EndpointDeleted {
        tenant_id: endpoint.tenant_id.to_string(),
        endpoint_id: endpoint.id.to_string(),
        deleted_at: at.timestamp_millis(),
    });
    let write = ReadModelWrite::EndpointDeleted {
        tenant_id: endpoint.tenant_id.clone(),
        endpoint_id: endpoint.id.clone(),
        at,
    };
    state.append_control(&[event], vec![write]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret; the old one keeps signing (beside it) for 24 hours.
pub(crate) async fn rotate_secret(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<EndpointOut>, ApiError> {
    let mut endpoint = state.endpoint(&caller, &id).await?;
    let secret = EndpointSecret::generate();
    let now = next_version(endpoint.updated_at);
    endpoint.previous_secret = Some(std::mem::replace(
        &mut endpoint.secret,
        state.protect(secret.expose(), &endpoint.id),
    ));
    endpoint.previous_secret_expires_at = Some(now + ROTATION_OVERLAP);
    endpoint.updated_at = now;
    state.save_endpoint(&endpoint).await?;
    Ok(Json(EndpointOut::with_secret(&endpoint, secret.expose())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayIn {
    since: DateTime<Utc>,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct ReplayOut {
    endpoint_id: String,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    dry_run: bool,
    /// Events re-sent (or, in a dry run, that would be).
    events: usize,
}

/// Re-sends every event of the window that the endpoint subscribes to: business events (by
/// its current subscription) and Herald's own events that were sent to it. Each goes out as
/// a new delivery with the event's original `webhook-id`, so a receiver that already has it
/// can tell.
pub(crate) async fn replay(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(id): ValidPath<String>,
    ValidJson(input): ValidJson<ReplayIn>,
) -> Result<(StatusCode, Json<ReplayOut>), ApiError> {
    let endpoint = state.endpoint(&caller, &id).await?;
    let now = Utc::now();
    let until = input.until.unwrap_or(now).min(now);
    if input.since >= until {
        return Err(ApiError::field(
            "since",
            "must be before `until` and the present",
        ));
    }
    let tasks = replay_tasks(&state, &endpoint, input.since, until, now).await?;
    let count = tasks.len();
    if !input.dry_run {
        for chunk in tasks.chunks(500) {
            let events: Vec<HeraldEvent> = chunk
                .iter()
                .cloned()
                .map(HeraldEvent::DeliveryTask)
                .collect();
            state.append(&events).await?;
        }
        tracing::info!(endpoint_id = %endpoint.id, events = count, "replay appended");
    }
    Ok((
        if input.dry_run {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        Json(ReplayOut {
            endpoint_id: endpoint.id.to_string(),
            since: input.since,
            until,
            dry_run: input.dry_run,
            events: count,
        }),
    ))
}

/// Reads `requests` and `deliveries` from their beginnings up to their current ends and
/// builds one task per matching event.
async fn replay_tasks(
    state: &IngestState,
    endpoint: &Endpoint,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<DeliveryTask>, ApiError> {
    let unavailable = |err: herald_log::LogError| {
        tracing::error!(error = %err, "replay could not read the log");
        ApiError::Unavailable("the log could not be read; retry shortly".into())
    };
    let topics = vec![
        state.topics.requests.clone(),
        state.topics.deliveries.clone(),
    ];
    // A throwaway group that never commits: reading does not disturb anyone.
    let group = format!("herald-replay-{}", ulid::Ulid::new());
    let mut remaining: std::collections::BTreeMap<(String, u32), u64> = state
        .log
        .lag(&group, &topics)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|lag| lag.end_offset > 0)
        .map(|lag| ((lag.topic, lag.partition), lag.end_offset))
        .collect();
    let mut consumer = state
        .log
        .consumer(&group, &topics, StartPosition::Explicit(Default::default()))
        .await
        .map_err(unavailable)?;
    let (since_ms, until_ms) = (since.timestamp_millis(), until.timestamp_millis());
    let deadline = tokio::time::Instant::now() + REPLAY_SCAN_LIMIT;
    let mut seen = std::collections::HashSet::new();
    let mut tasks = Vec::new();
    while !remaining.is_empty() {
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError::Unavailable(
                "reading the log for the replay took too long; replay a narrower window".into(),
            ));
        }
        let records = consumer
            .poll(2_000, Duration::from_millis(200))
            .await
            .map_err(unavailable)?;
        for record in records {
            let key = (record.topic.clone(), record.partition);
            let Some(end) = remaining.get(&key).copied() else {
                continue;
            };
            if record.offset + 1 >= end {
                remaining.remove(&key);
            }
            if record.offset >= end {
                continue;
            }
            let Ok(event) = herald_schemas::decode(&record.value) else {
                continue;
            };
            let Some(task) = replayed(&event, endpoint, since_ms, until_ms, now) else {
                continue;
            };
            if seen.insert(task.message_id.clone()) {
                tasks.push(task);
                if tasks.len() > MAX_REPLAY {
                    return Err(ApiError::field(
                        "since",
                        format!(
                            "more than {MAX_REPLAY} events in the window; replay a narrower one"
                        ),
                    ));
                }
            }
        }
    }
    Ok(tasks)
}

/// The replay of one log record to `endpoint`, if the record is an event it subscribes to.
fn replayed(
    event: &HeraldEvent,
    endpoint: &Endpoint,
    since_ms: i64,
    until_ms: i64,
    now: DateTime<Utc>,
) -> Option<DeliveryTask> {
    let in_window = |at: i64| (since_ms..until_ms).contains(&at);
    let (message_id, event_type, body, at) = match event {
        HeraldEvent::BusinessEventReceived(e)
            if e.tenant_id == endpoint.tenant_id.as_str()
                && in_window(e.received_at)
                && subscribes_to(&endpoint.events, &e.event_name) =>
        {
            let data = serde_json::from_str(&e.data_json).unwrap_or(serde_json::Value::Null);
            let body =
                WebhookPayload::at(&e.event_id, &e.event_name, e.received_at, &data).to_json();
            (
                e.event_id.clone(),
                e.event_name.clone(),
                body,
                e.received_at,
            )
        }
        // Herald's own events (`delivery.*`, `endpoint.disabled`) as first sent to it.
        HeraldEvent::DeliveryTask(task)
            if task.endpoint_id.as_deref() == Some(endpoint.id.as_str())
                && task.attempt <= 1
                && in_window(task.created_at)
                && task
                    .event_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with("delivery.") || t.starts_with("endpoint.")) =>
        {
            (
                task.message_id.clone(),
                task.event_type.clone().unwrap_or_default(),
                task.body.clone(),
                task.created_at,
            )
        }
        _ => return None,
    };
    let now_ms = now.timestamp_millis();
    // A new delivery: the replay is its own attempt history.
    let delivery_id = DeliveryId::derive(
        now_ms,
        format!("{message_id}/{}/replay/{now_ms}", endpoint.id).as_bytes(),
    );
    Some(DeliveryTask::first_webhook_attempt(
        endpoint,
        delivery_id.to_string(),
        &message_id,
        &event_type,
        body,
        at.max(0),
    ))
}

impl IngestState {
    /// The caller's endpoint, or 404 (also for another tenant's).
    async fn endpoint(&self, caller: &Caller, id: &str) -> Result<Endpoint, ApiError> {
        let Ok(id) = EndpointId::parse(id) else {
            return Err(ApiError::NotFound("endpoint"));
        };
        self.store
            .endpoint(&caller.tenant_id, &id)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::NotFound("endpoint"))
    }

    async fn save_endpoint(&self, endpoint: &Endpoint) -> Result<(), ApiError> {
        let events = [HeraldEvent::EndpointUpserted(EndpointUpserted::from(
            endpoint,
        ))];
        self.append_control(&events, vec![ReadModelWrite::Endpoint(endpoint.clone())])
            .await
    }

    /// A signing secret as stored: sealed when the server has a key.
    fn protect(&self, secret: &str, endpoint: &EndpointId) -> String {
        secret_box::protect(secret, self.secret_key.as_ref(), endpoint.as_str())
    }
}
