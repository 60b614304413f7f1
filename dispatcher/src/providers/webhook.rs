//! Webhook endpoints: the signed POST of a prepared payload.
//!
//! The dispatcher resolves the endpoint at attempt time, not routing time, so a disabled or
//! deleted endpoint stops receiving at once and a rotated secret signs the very next attempt.

use herald_domain::model::{Endpoint, SignatureScheme};
use herald_domain::secret_box::{self, SecretKey};
use herald_domain::signing::{hex_signature, standard_signature, stripe_signature, EndpointSecret};
use herald_domain::webhook::classify_webhook_status;
use herald_schemas::DeliveryTask;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use super::http::GuardedHttp;
use super::{report_from_answer, AttemptReport};

/// The secrets an attempt signs with: the current one, and during the 24 h after a rotation
/// the previous one too, so a receiver still verifying with the old secret keeps accepting.
pub struct SigningSecrets {
    pub current: EndpointSecret,
    pub previous: Option<EndpointSecret>,
}

impl SigningSecrets {
    /// Opens the endpoint's stored secrets (sealed ones need the server key).
    pub fn of(
        endpoint: &Endpoint,
        key: Option<&SecretKey>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, String> {
        let context = endpoint.id.as_str();
        let open = |stored: &str| {
            secret_box::reveal(stored, key, context)
                .map_err(|err| err.to_string())
                .and_then(|clear| {
                    EndpointSecret::parse(&clear).map_err(|_| "not a signing secret".to_owned())
                })
        };
        Ok(Self {
            current: open(&endpoint.secret)?,
            previous: endpoint.previous_secret_at(now).map(open).transpose()?,
        })
    }

    fn all(&self) -> impl Iterator<Item = &EndpointSecret> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
}

/// The signature headers of one attempt. With two secrets, each header carries both
/// signatures: space-separated `v1,...` entries (as Standard Webhooks specifies), repeated
/// `v1=` entries (as Stripe does during a roll), or comma-separated hex values.
pub fn signature_headers(
    scheme: SignatureScheme,
    secrets: &SigningSecrets,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let id = ("webhook-id", msg_id.to_owned());
    match scheme {
        SignatureScheme::Standard => {
            let signatures: Vec<String> = secrets
                .all()
                .map(|secret| standard_signature(secret, msg_id, timestamp, body))
                .collect();
            vec![
                id,
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signatures.join(" ")),
            ]
        }
        SignatureScheme::Stripe => {
            let mut value = format!("t={timestamp}");
            for secret in secrets.all() {
                let signed = stripe_signature(secret, timestamp, body);
                // `t=<ts>,v1=<hex>`: keep the `v1=` part of each.
                let (_, v1) = signed.split_once(',').expect("t=..,v1=..");
                value.push(',');
                value.push_str(v1);
            }
            vec![id, ("herald-signature", value)]
        }
        SignatureScheme::Hex => {
            let signatures: Vec<String> = secrets
                .all()
                .map(|secret| hex_signature(secret, body))
                .collect();
            vec![id, ("x-herald-signature", signatures.join(","))]
        }
    }
}

#[derive(Clone)]
pub struct WebhookSender {
    http: GuardedHttp,
}

impl WebhookSender {
    pub fn new(http: GuardedHttp) -> Self {
        Self { http }
    }

    /// POSTs the task's payload to the endpoint, signed.
    pub async fn deliver(
        &self,
        task: &DeliveryTask,
        endpoint: &Endpoint,
        secrets: &SigningSecrets,
    ) -> AttemptReport {
        let body = task.body.clone().into_bytes();
        let timestamp = chrono::Utc::now().timestamp();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in signature_headers(
            endpoint.signature_scheme,
            secrets,
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
