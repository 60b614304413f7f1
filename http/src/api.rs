//! Resource shapes shown by both APIs (ingest answers writes with them, query-api answers
//! reads). Named `<Resource>Out` after what they are: the wire form, not the stored form.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use herald_domain::model::{AttemptRecord, Delivery, Endpoint, Plan, Template, Tenant};
use herald_domain::template::ChannelContent;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PlanOut {
    pub monthly_quota: Option<u64>,
    pub rate_limit_per_minute: u32,
}

impl From<&Plan> for PlanOut {
    fn from(plan: &Plan) -> Self {
        Self {
            monthly_quota: plan.monthly_quota,
            rate_limit_per_minute: plan.rate_limit_per_minute,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TenantOut {
    pub id: String,
    pub name: String,
    pub plan: PlanOut,
    /// Consecutive failed attempts that disable one of the tenant's webhook endpoints.
    pub endpoint_failure_threshold: u32,
    pub created_at: DateTime<Utc>,
}

impl From<&Tenant> for TenantOut {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.to_string(),
            name: tenant.name.clone(),
            plan: PlanOut::from(&tenant.plan),
            endpoint_failure_threshold: tenant.endpoint_failure_threshold(),
            created_at: tenant.created_at,
        }
    }
}

/// A webhook endpoint. The secret appears only in the answers to its creation and to a
/// rotation (and never in `Debug` output).
#[derive(Serialize)]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub signature_scheme: &'static str,
    /// Delays between attempts; `null` is the server's default schedule.
    pub retry_schedule: Option<Vec<String>>,
    pub rate_limit_per_second: Option<u32>,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    /// Until when the secret before the last rotation still signs, if it does.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for EndpointOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointOut")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

impl EndpointOut {
    /// The public view, without the secret.
    pub fn public(endpoint: &Endpoint) -> Self {
        Self {
            id: endpoint.id.to_string(),
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            events: endpoint.events.clone(),
            signature_scheme: endpoint.signature_scheme.as_str(),
            retry_schedule: endpoint.retry_schedule.as_ref().map(|schedule| {
                schedule
                    .delays()
                    .iter()
                    .map(|delay| herald_domain::retry::format_delay(*delay))
                    .collect()
            }),
            rate_limit_per_second: endpoint.rate_limit_per_second,
            is_active: endpoint.is_active,
            disabled_reason: endpoint.disabled_reason.clone(),
            previous_secret_expires_at: endpoint
                .previous_secret_expires_at
                .filter(|at| *at > Utc::now()),
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
            secret: None,
        }
    }

    /// The view that shows the secret, given in clear (the stored one may be sealed).
    pub fn with_secret(endpoint: &Endpoint, clear_secret: &str) -> Self {
        Self {
            secret: Some(clear_secret.to_owned()),
            ..Self::public(endpoint)
        }
    }
}

/// One attempt in an endpoint's attempt log.
#[derive(Debug, Serialize)]
pub struct AttemptOut {
    pub delivery_id: String,
    pub attempt: u32,
    /// The `webhook-id` of the message.
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    /// `success`, `retriable` or `permanent`.
    pub outcome: String,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub attempted_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl From<&AttemptRecord> for AttemptOut {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            delivery_id: a.delivery_id.to_string(),
            attempt: a.attempt,
            message_id: a.message_id.clone(),
            event_type: a.event_type.clone(),
            outcome: a.outcome.clone(),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error.clone(),
            response_excerpt: a.response_excerpt.clone(),
            attempted_at: a.attempted_at,
            next_attempt_at: a.next_attempt_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TemplateOut {
    pub id: String,
    pub slug: String,
    pub channels: BTreeMap<String, ChannelContent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Template> for TemplateOut {
    fn from(template: &Template) -> Self {
        Self {
            id: template.id.to_string(),
            slug: template.slug.clone(),
            channels: template
                .channels
                .iter()
                .map(|(channel, content)| (channel.to_string(), content.clone()))
                .collect(),
            created_at: template.created_at,
            updated_at: template.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeliveryOut {
    pub id: String,
    pub status: &'static str,
    pub channel: &'static str,
    pub recipient_id: Option<String>,
    pub template: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub external_id: Option<String>,
}

impl From<&Delivery> for DeliveryOut {
    fn from(delivery: &Delivery) -> Self {
        Self {
            id: delivery.id.to_string(),
            status: delivery.status.as_str(),
            channel: delivery.channel.as_str(),
            recipient_id: delivery.recipient_id.as_ref().map(ToString::to_string),
            template: delivery.template.clone(),
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
            attempts: delivery.attempts,
            last_error: delivery.last_error.clone(),
            external_id: delivery.external_id.clone(),
        }
    }
}

/// A list page (API.md "Pagination").
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// The same page with every item converted.
    pub fn map<U>(self, convert: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(convert).collect(),
            next_cursor: self.next_cursor,
            has_more: self.has_more,
        }
    }
}
