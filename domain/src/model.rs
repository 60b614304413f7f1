//! The entities of the read models, and the pure folds that keep them current.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ApiKeyId, DeliveryId, EndpointId, RecipientId, TemplateId, TenantId};
use crate::retry::RetrySchedule;
use crate::template::ChannelContent;
use crate::{Channel, DeliveryStatus};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Sends allowed per calendar month; `None` is unlimited.
    pub monthly_quota: Option<u64>,
    pub rate_limit_per_minute: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            monthly_quota: None,
            rate_limit_per_minute: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub plan: Plan,
    /// Consecutive failed attempts that disable one of the tenant's webhook endpoints;
    /// `None` is [`DEFAULT_ENDPOINT_FAILURE_THRESHOLD`].
    #[serde(default)]
    pub endpoint_failure_threshold: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Consecutive failed attempts that disable a webhook endpoint unless its tenant says otherwise.
pub const DEFAULT_ENDPOINT_FAILURE_THRESHOLD: u32 = 10;

impl Tenant {
    pub fn endpoint_failure_threshold(&self) -> u32 {
        self.endpoint_failure_threshold
            .unwrap_or(DEFAULT_ENDPOINT_FAILURE_THRESHOLD)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The displayable start of the key (`hk_AbCdEfGh`).
    pub prefix: String,
    /// Hex SHA-256 of the key; the key itself is never stored.
    pub key_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub id: TemplateId,
    pub tenant_id: TenantId,
    pub slug: String,
    pub channels: BTreeMap<Channel, ChannelContent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The signature scheme an endpoint's receiver verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    #[default]
    Standard,
    /// `Herald-Signature: t=<ts>,v1=<hex>`, for receivers migrating from Stripe-style code.
    Stripe,
    /// `X-Herald-Signature: <hex HMAC of the body>`.
    Hex,
}

impl SignatureScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::Standard => "standard",
            SignatureScheme::Stripe => "stripe",
            SignatureScheme::Hex => "hex",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "standard" => Some(SignatureScheme::Standard),
            "stripe" => Some(SignatureScheme::Stripe),
            "hex" => Some(SignatureScheme::Hex),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub description: Option<String>,
    /// Subscription patterns; empty means every event.
    pub events: Vec<String>,
    pub signature_scheme: SignatureScheme,
    /// The signing secret: `whsec_...`, or sealed (`enc:v1:...`, see [`crate::secret_box`])
    /// when the server has a secret key. Kept out of `Debug` output by the callers that log
    /// endpoints.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_expires_at`
    /// so receivers can switch over without dropping deliveries. Stored like `secret`.
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Delays between attempts; `None` is the server's default (`HERALD_RETRY_SCHEDULE`).
    #[serde(default)]
    pub retry_schedule: Option<RetrySchedule>,
    /// Attempts per second at most; `None` is unthrottled.
    #[serde(default)]
    pub rate_limit_per_second: Option<u32>,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Endpoint {
    /// Everything but the secrets, which never reach logs, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("signature_scheme", &self.signature_scheme)
            .field("secret", &"..")
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .field("retry_schedule", &self.retry_schedule)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("is_active", &self.is_active)
            .field("disabled_reason", &self.disabled_reason)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The previous secret while it is still valid at `now`.
    pub fn previous_secret_at(&self, now: DateTime<Utc>) -> Option<&str> {
        match (&self.previous_secret, self.previous_secret_expires_at) {
            (Some(secret), Some(expires)) if now < expires => Some(secret),
            _ => None,
        }
    }
}

/// One attempt to deliver to a webhook endpoint: a row of `GET /v1/webhooks/{id}/attempts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub tenant_id: TenantId,
    pub endpoint_id: EndpointId,
    pub delivery_id: DeliveryId,
    /// 1-based attempt number within the delivery.
    pub attempt: u32,
    /// The `webhook-id` of the message attempted (its event id).
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    /// `success`, `retriable` or `permanent`.
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub latency_ms: u64,
    pub attempted_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's consecutive failed attempts after this one (0 after a success).
    pub consecutive_failures: u32,
}

/// A position in an endpoint's attempt log, newest first: the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCursor {
    pub attempted_at_ms: i64,
    pub delivery_id: DeliveryId,
    pub attempt: u32,
}

impl AttemptRecord {
    pub fn cursor(&self) -> AttemptCursor {
        AttemptCursor {
            attempted_at_ms: self.attempted_at.timestamp_millis(),
            delivery_id: self.delivery_id.clone(),
            attempt: self.attempt,
        }
    }
}

/// Ways to reach a recipient, one per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub whatsapp_phone: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub slack_webhook_url: Option<String>,
    pub discord_webhook_url: Option<String>,
}

impl Contacts {
    /// The address a message on `channel` goes to, if the recipient has one.
    pub fn destination(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms => self.phone.as_deref(),
            Channel::Whatsapp => self.whatsapp_phone.as_deref(),
            Channel::Telegram => self.telegram_chat_id.as_deref(),
            Channel::Slack => self.slack_webhook_url.as_deref(),
            Channel::Discord => self.discord_webhook_url.as_deref(),
            Channel::Push | Channel::Webhook => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub id: RecipientId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub contacts: Contacts,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The deliveries read model: one row per delivery, as `GET /v1/deliveries/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub tenant_id: TenantId,
    pub status: DeliveryStatus,
    pub channel: Channel,
    pub recipient_id: Option<RecipientId>,
    pub template: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Attempts made so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The provider's id for the message, when it gives one.
    pub external_id: Option<String>,
}

/// Something that happened to a delivery, as the projector folds it into the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryChange {
    Attempted {
        attempt: u32,
        error: Option<String>,
        at: DateTime<Utc>,
    },
    Reached {
        status: DeliveryStatus,
        external_id: Option<String>,
        at: DateTime<Utc>,
    },
    Failed {
        attempts: u32,
        reason: String,
        at: DateTime<Utc>,
    },
    /// An operator asked to re-send a failed delivery (`POST /v1/deliveries/{id}/retry`): the
    /// one deliberate way back from `failed`, to `queued`.
    Requeued { at: DateTime<Utc> },
}

impl Delivery {
    /// Folds a change into the row. Idempotent and order-tolerant: attempts only grow, and
    /// the status only moves forward (see [`DeliveryStatus::can_move_to`]), so duplicated or
    /// late events leave the row as it should be.
    pub fn apply(&mut self, change: &DeliveryChange) {
        match change {
            DeliveryChange::Attempted { attempt, error, at } => {
                if *attempt >= self.attempts {
                    self.attempts = *attempt;
                    self.last_error.clone_from(error);
                }
                self.touch(*at);
            }
            DeliveryChange::Reached {
                status,
                external_id,
                at,
            } => {
                if self.status.can_move_to(*status) {
                    self.status = *status;
                    if external_id.is_some() {
                        self.external_id.clone_from(external_id);
                    }
                }
                self.touch(*at);
            }
            DeliveryChange::Failed {
                attempts,
                reason,
                at,
            } => {
                if self.status.can_move_to(DeliveryStatus::Failed) {
                    self.status = DeliveryStatus::Failed;
                    self.attempts = self.attempts.max(*attempts);
                    self.last_error = Some(reason.clone());
                }
                self.touch(*at);
            }
            DeliveryChange::Requeued { at } => {
                // Only a failure at or before the request is undone: replaying the log puts a
                // later failure (of the re-sent attempt) after it again.
                if self.status == DeliveryStatus::Failed && self.updated_at <= *at {
                    self.status = DeliveryStatus::Queued;
                }
                self.touch(*at);
            }
        }
    }

    fn touch(&mut self, at: DateTime<Utc>) {
        self.updated_at = self.updated_at.max(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> Delivery {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Delivery {
            id: DeliveryId::generate(),
            tenant_id: TenantId::generate(),
            status: DeliveryStatus::Queued,
            channel: Channel::Slack,
            recipient_id: None,
            template: Some("welcome".into()),
            created_at: at,
            updated_at: at,
            attempts: 0,
            last_error: None,
            external_id: None,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn endpoint_debug_output_has_no_secret() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let endpoint = Endpoint {
            id: EndpointId::generate(),
            tenant_id: TenantId::generate(),
            url: "https://example.com".into(),
            description: None,
            events: vec![],
            signature_scheme: SignatureScheme::Standard,
            secret: "whsec_current-secret".into(),
            previous_secret: Some("whsec_previous-secret".into()),
            previous_secret_expires_at: Some(at),
            retry_schedule: None,
            rate_limit_per_second: None,
            is_active: true,
            disabled_reason: None,
            created_at: at,
            updated_at: at,
        };
        let shown = format!("{endpoint:?}");
        assert!(!shown.contains("current-secret") && !shown.contains("previous-secret"));
        assert!(shown.contains("example.com"));
    }

    #[test]
    fn retries_then_success() {
        let mut delivery = queued();
        delivery.apply(&DeliveryChange::Attempted {
            attempt: 1,
            error: Some("503".into()),
            at: at(1),
        });
        delivery.apply(&DeliveryChange::Attempted {
            attempt: 2,
            error: None,
            at: at(6),
        });
        delivery.apply(&DeliveryChange::Reached {
            status: DeliveryStatus::Delivered,
            external_id: None,
            at: at(6),
        });
        assert_eq!(delivery.status, DeliveryStatus::Delivered);
        assert_eq!(delivery.attempts, 2);
        assert_eq!(delivery.last_error, None);
        assert_eq!(delivery.updated_at, at(6));
    }

    #[test]
    fn replaying_events_changes_nothing() {
        let events = [
            DeliveryChange::Attempted {
                attempt: 1,
                error: Some("timeout".into()),
                at: at(1),
            },
            DeliveryChange::Failed {
                attempts: 1,
                reason: "timeout".into(),
                at: at(1),
            },
        ];
        let mut once = queued();
        events.iter().for_each(|e| once.apply(e));
        let mut twice = once.clone();
        events.iter().for_each(|e| twice.apply(e));
        assert_eq!(once, twice);
        assert_eq!(once.status, DeliveryStatus::Failed);
    }

    #[test]
    fn a_late_event_does_not_move_status_back() {
        let mut delivery = queued();
        delivery.apply(&DeliveryChange::Reached {
            status: DeliveryStatus::Delivered,
            external_id: None,
            at: at(2),
        });
        delivery.apply(&DeliveryChange::Attempted {
            attempt: 1,
            error: Some("old".into()),
            at: at(1),
        });
        delivery.apply(&DeliveryChange::Failed {
            attempts: 1,
            reason: "old".into(),
            at: at(1),
        });
        assert_eq!(delivery.status, DeliveryStatus::Delivered);
        assert_eq!(delivery.updated_at, at(2));
    }
}
