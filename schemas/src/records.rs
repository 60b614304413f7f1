//! Rust mirrors of the `.avsc` files in `schemas/avro/`.
//!
//! Field order and names follow the schemas exactly (a test compares them). The field docs in
//! the `.avsc` files are authoritative; the notes here cover what a Rust caller most needs.
//! Conventions: every `*_at` / time field is milliseconds since the Unix epoch (UTC);
//! `Option` fields are Avro `["null", T]` unions defaulting to null; channels, statuses and
//! outcomes are free strings, not enums, so new values never break old readers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A client asked for one rendered message to one recipient (topic `requests`).
/// Schema: `avro/SendRequested.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequested {
    pub tenant_id: String,
    pub delivery_id: String,
    /// Id of the originating HTTP request, for tracing.
    pub request_id: Option<String>,
    pub recipient_id: String,
    pub channel: String,
    /// Template slug.
    pub template: String,
    /// Template variables: a JSON object as text.
    pub vars_json: String,
    /// Rendered subject.
    pub subject: Option<String>,
    /// Rendered body.
    pub body: String,
    /// Channel address: email address, webhook URL, chat id...
    pub destination: String,
    pub priority: String,
    /// Earliest send time (ms); `None` = now.
    pub scheduled_for: Option<i64>,
    pub idempotency_key: Option<String>,
    /// ms since the epoch.
    pub requested_at: i64,
}

/// A client reported a business event (topic `requests`).
/// Schema: `avro/BusinessEventReceived.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessEventReceived {
    pub tenant_id: String,
    /// Herald's id (`evt_...`).
    pub event_id: String,
    /// The client's own event id.
    pub external_id: String,
    pub event_name: String,
    pub source: Option<String>,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    /// Event payload: a JSON value as text.
    pub data_json: String,
    /// Client-reported time (ms).
    pub occurred_at: Option<i64>,
    /// ms since the epoch.
    pub received_at: i64,
}

/// Work for one delivery attempt to one target (topics `deliveries`, `retry.*`, `dead-letter`).
/// Schema: `avro/DeliveryTask.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub tenant_id: String,
    pub delivery_id: String,
    pub channel: String,
    pub endpoint_id: Option<String>,
    pub recipient_id: Option<String>,
    pub destination: String,
    pub subject: Option<String>,
    pub body: String,
    /// `webhook-id`; stable across retries.
    pub message_id: String,
    pub event_type: Option<String>,
    /// 1-based attempt number this task is for.
    pub attempt: i32,
    /// Do not attempt before this time (ms).
    pub not_before: i64,
    /// ms since the epoch.
    pub created_at: i64,
    pub priority: String,
}

/// One delivery attempt was made (topic `outcomes`).
/// Schema: `avro/DeliveryAttempted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempted {
    pub tenant_id: String,
    pub delivery_id: String,
    pub channel: String,
    pub endpoint_id: Option<String>,
    pub attempt: i32,
    /// `"success"`, `"retriable"` or `"permanent"`.
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub latency_ms: i64,
    /// ms since the epoch.
    pub attempted_at: i64,
    /// ms since the epoch; `None` = no further attempt.
    pub next_attempt_at: Option<i64>,
    /// The `webhook-id` of the message attempted.
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    /// For webhook endpoints: consecutive failed attempts after this one.
    pub consecutive_failures: Option<i32>,
}

/// A delivery succeeded (topic `outcomes`).
/// Schema: `avro/DeliverySucceeded.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySucceeded {
    pub tenant_id: String,
    pub delivery_id: String,
    pub channel: String,
    pub endpoint_id: Option<String>,
    pub attempt: i32,
    /// `"sent"` or `"delivered"`.
    pub status: String,
    /// Provider's message id.
    pub external_id: Option<String>,
    /// ms since the epoch.
    pub succeeded_at: i64,
}

/// A delivery was given up on (topic `outcomes`).
/// Schema: `avro/DeliveryFailed.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailed {
    pub tenant_id: String,
    pub delivery_id: String,
    pub channel: String,
    pub endpoint_id: Option<String>,
    pub attempts: i32,
    pub reason: String,
    /// ms since the epoch.
    pub failed_at: i64,
}

/// A webhook endpoint was disabled after consecutive failures (topic `outcomes`).
/// Schema: `avro/EndpointDisabled.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDisabled {
    pub tenant_id: String,
    pub endpoint_id: String,
    pub reason: String,
    pub consecutive_failures: i32,
    /// ms since the epoch.
    pub disabled_at: i64,
}

/// An operator re-sent a failed delivery (topic `outcomes`).
/// Schema: `avro/DeliveryRequeued.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequeued {
    pub tenant_id: String,
    pub delivery_id: String,
    pub channel: String,
    /// The attempt that follows.
    pub attempt: i32,
    /// ms since the epoch.
    pub requested_at: i64,
}

/// Current state of a tenant (topic `control`).
/// Schema: `avro/TenantUpserted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUpserted {
    pub tenant_id: String,
    pub name: String,
    /// Messages per month; `None` = unlimited.
    pub monthly_quota: Option<i64>,
    pub rate_limit_per_minute: i32,
    /// `None` = the default (10).
    pub endpoint_failure_threshold: Option<i32>,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch.
    pub updated_at: i64,
}

/// An API key was created (topic `control`). Carries only the key's hash.
/// Schema: `avro/ApiKeyCreated.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub tenant_id: String,
    pub key_id: String,
    pub name: String,
    pub prefix: String,
    /// Lower-case hex SHA-256 of the key; never the key.
    pub key_hash: String,
    /// ms since the epoch.
    pub created_at: i64,
}

/// An API key was revoked (topic `control`).
/// Schema: `avro/ApiKeyRevoked.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub tenant_id: String,
    pub key_id: String,
    pub key_hash: String,
    /// ms since the epoch.
    pub revoked_at: i64,
}

/// A template's unrendered content for one channel (nested in [`TemplateUpserted`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelContent {
    pub subject: Option<String>,
    pub body: String,
}

/// Current state of a template (topic `control`).
/// Schema: `avro/TemplateUpserted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateUpserted {
    pub tenant_id: String,
    pub template_id: String,
    pub slug: String,
    /// Content per channel name.
    pub channels: BTreeMap<String, ChannelContent>,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch.
    pub updated_at: i64,
}

/// A template was deleted (topic `control`).
/// Schema: `avro/TemplateDeleted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDeleted {
    pub tenant_id: String,
    pub template_id: String,
    pub slug: String,
    /// ms since the epoch.
    pub deleted_at: i64,
}

/// Current state of a webhook endpoint (topic `control`).
/// Schema: `avro/EndpointUpserted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointUpserted {
    pub tenant_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub description: Option<String>,
    /// Subscribed event names.
    pub events: Vec<String>,
    pub signature_scheme: String,
    /// Signing secret (`whsec_...`, or sealed `enc:v1:...`): sensitive.
    pub secret: String,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch.
    pub updated_at: i64,
    /// The secret before the last rotation, stored like `secret`.
    pub previous_secret: Option<String>,
    /// ms since the epoch.
    pub previous_secret_expires_at: Option<i64>,
    /// e.g. `"30s,2m,10m"`; `None` = the server's default.
    pub retry_schedule: Option<String>,
    pub rate_limit_per_second: Option<i32>,
}

/// A webhook endpoint was deleted (topic `control`).
/// Schema: `avro/EndpointDeleted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointDeleted {
    pub tenant_id: String,
    pub endpoint_id: String,
    /// ms since the epoch.
    pub deleted_at: i64,
}

/// Current state of a recipient and their channel addresses (topic `control`).
/// Schema: `avro/RecipientUpserted.avsc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientUpserted {
    pub tenant_id: String,
    pub recipient_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub whatsapp_phone: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub slack_webhook_url: Option<String>,
    pub discord_webhook_url: Option<String>,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch.
    pub updated_at: i64,
}
