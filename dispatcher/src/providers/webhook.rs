//! Webhook endpoints: the signed POST of a prepared payload.
//!
//! The endpoint is read at attempt time, not routing time, so a disabled or deleted
//! endpoint stops receiving at once and a rotated secret signs the very next attempt.

use std::sync::Arc;

use async_trait::async_trait;
use herald_domain::ids::{EndpointId, TenantId};
use herald_domain::model::SignatureScheme;
use herald_domain::signing::{hex_signature, standard_signature, stripe_signature, EndpointSecret};
use herald_domain::webhook::{classify_webhook_status, AttemptOutcome};
use herald_schemas::DeliveryTask;
use herald_store::Store;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::http::GuardedHttp;
use super::{report_from_answer, AttemptReport, ChannelProvider};

pub struct WebhookProvider {
    http: GuardedHttp,
    store: Arc<dyn Store>,
}

impl WebhookProvider {
    pub fn new(http: GuardedHttp, store: Arc<dyn Store>) -> Self {
        Self { http, store }
    }
}

/// The signature headers of one attempt.
pub fn signature_headers(
    scheme: SignatureScheme,
    secret: &EndpointSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    match scheme {
        SignatureScheme::Standard => vec![
            ("webhook-id", msg_id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            (
                "webhook-signature",
                standard_signature(secret, msg_id, timestamp, body),
            ),
        ],
        SignatureScheme::Stripe => vec![
            ("webhook-id", msg_id.to_owned()),
            (
                "herald-signature",
                stripe_signature(secret, timestamp, body),
            ),
        ],
        SignatureScheme::Hex => vec![
            ("webhook-id", msg_id.to_owned()),
            ("x-herald-signature", hex_signature(secret, body)),
        ],
    }
}

#[async_trait]
impl ChannelProvider for WebhookProvider {
    async fn deliver(&self, task: &DeliveryTask) -> AttemptReport {
        let Some(endpoint_id) = &task.endpoint_id else {
            return AttemptReport::refused(
                AttemptOutcome::Permanent,
                "webhook task without an endpoint",
            );
        };
        let tenant = TenantId::from_trusted(&task.tenant_id);
        let endpoint = match self
            .store
            .endpoint(&tenant, &EndpointId::from_trusted(endpoint_id))
            .await
        {
            Ok(Some(endpoint)) => endpoint,
            // Endpoints cannot be deleted yet, so an unknown one has not reached this process's
            // store (a local projection lagging behind): retry rather than drop the delivery.
            Ok(None) => {
                return AttemptReport::refused(
                    AttemptOutcome::Retriable,
                    "the endpoint is not known here yet",
                )
            }
            Err(err) => {
                return AttemptReport::refused(
                    AttemptOutcome::Retriable,
                    format!("endpoint lookup failed: {err}"),
                )
            }
        };
        if !endpoint.is_active {
            return AttemptReport::refused(AttemptOutcome::Permanent, "the endpoint is disabled");
        }
        let Ok(secret) = EndpointSecret::parse(&endpoint.secret) else {
            return AttemptReport::refused(
                AttemptOutcome::Permanent,
                "the endpoint's secret is unreadable",
            );
        };
        let body = task.body.clone().into_bytes();
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in signature_headers(
            endpoint.signature_scheme,
            &secret,
            &task.message_id,
            timestamp,
            &body,
        ) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let started = std::time::Instant::now();
        let answer = self.http.post(&endpoint.url, headers, body).await;
        report_from_answer(answer, classify_webhook_status, started.elapsed())
    }
}
