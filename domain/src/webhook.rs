//! What a webhook delivery carries and how its answers are judged.

use serde::Serialize;

use crate::DeliveryStatus;

/// The JSON body of every webhook: `{"id", "type", "timestamp", "data"}`.
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    /// The event id (`evt_...`), equal to the `webhook-id` header.
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// RFC 3339 UTC.
    pub timestamp: String,
    pub data: &'a serde_json::Value,
}

impl<'a> WebhookPayload<'a> {
    /// The payload of an event that happened at `at_ms` (its `timestamp`, RFC 3339 UTC).
    pub fn at(
        id: &'a str,
        event_type: &'a str,
        at_ms: crate::Millis,
        data: &'a serde_json::Value,
    ) -> Self {
        Self {
            id,
            event_type,
            timestamp: crate::time_from_millis(at_ms)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            data,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JSON value always serialises")
    }
}

/// The event type announcing that a delivery reached `status`.
pub fn delivery_event_type(status: DeliveryStatus) -> String {
    format!("delivery.{status}")
}

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    /// Worth trying again later (timeouts, connection errors, 5xx, 429...).
    Retriable,
    /// Trying again cannot help.
    Permanent,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Retriable => "retriable",
            AttemptOutcome::Permanent => "permanent",
        }
    }
}

/// Webhook endpoints: only 2xx is success and every other answer is retried, because the
/// receiver is the tenant's own service and may be mid-deploy (Standard Webhooks practice).
pub fn classify_webhook_status(status: u16) -> AttemptOutcome {
    if (200..300).contains(&status) {
        AttemptOutcome::Success
    } else {
        AttemptOutcome::Retriable
    }
}

/// Third-party providers (Slack, Discord, ...): 2xx succeeds; 408, 425, 429 and 5xx are
/// transient; any other 4xx means the request itself is wrong and retrying cannot help.
pub fn classify_provider_status(status: u16) -> AttemptOutcome {
    match status {
        200..=299 => AttemptOutcome::Success,
        408 | 425 | 429 | 500..=599 => AttemptOutcome::Retriable,
        _ => AttemptOutcome::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shape() {
        let data = serde_json::json!({"order_id": "1"});
        let payload = WebhookPayload {
            id: "evt_1",
            event_type: "order.shipped",
            timestamp: "2026-01-01T00:00:00Z".into(),
            data: &data,
        };
        assert_eq!(
            payload.to_json(),
            r#"{"id":"evt_1","type":"order.shipped","timestamp":"2026-01-01T00:00:00Z","data":{"order_id":"1"}}"#
        );
    }

    #[test]
    fn classification() {
        use AttemptOutcome::*;
        assert_eq!(classify_webhook_status(204), Success);
        assert_eq!(classify_webhook_status(400), Retriable);
        assert_eq!(classify_webhook_status(301), Retriable);
        assert_eq!(classify_provider_status(404), Permanent);
        assert_eq!(classify_provider_status(429), Retriable);
        assert_eq!(classify_provider_status(503), Retriable);
        assert_eq!(
            delivery_event_type(DeliveryStatus::Delivered),
            "delivery.delivered"
        );
    }
}
