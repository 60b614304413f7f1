//! Channel providers: one adapter per channel behind [`ChannelProvider`].
//!
//! A provider performs one attempt and reports what happened, including its own judgement of
//! whether a failure is worth retrying (each protocol has its own rules). It never decides
//! *when* to retry or what to append: that is `plan`'s pure logic.

mod discord;
mod http;
mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use herald_domain::webhook::AttemptOutcome;
use herald_domain::Channel;
use herald_schemas::DeliveryTask;

pub use self::http::{GuardedHttp, HttpOptions};

/// What one attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    /// Why it failed, for people: lower-case, no secrets.
    pub error: Option<String>,
    /// The start of the receiver's answer, to help debugging.
    pub response_excerpt: Option<String>,
    /// The provider's id for the message.
    pub external_id: Option<String>,
    pub latency: Duration,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// No request was made, because there was nothing to send to (a disabled or deleted
    /// endpoint, an unreadable secret): the delivery fails without an attempt on record and
    /// without counting against the endpoint.
    pub skipped: bool,
}

impl AttemptReport {
    /// A failure of the attempt itself before any answer came (a refused target, ...).
    pub fn refused(outcome: AttemptOutcome, error: impl Into<String>) -> Self {
        Self {
            outcome,
            status_code: None,
            error: Some(error.into()),
            response_excerpt: None,
            external_id: None,
            latency: Duration::ZERO,
            retry_after: None,
            skipped: false,
        }
    }

    /// No attempt: the delivery fails for good with `reason` (see [`AttemptReport::skipped`]).
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self {
            skipped: true,
            ..Self::refused(AttemptOutcome::Permanent, reason)
        }
    }
}

#[async_trait]
pub trait ChannelProvider: Send + Sync {
    async fn deliver(&self, task: &DeliveryTask) -> AttemptReport;
}

/// The providers of every deliverable channel. Webhooks are not among them: they need the
/// endpoint resolved first (see [`webhook::WebhookSender`]).
pub struct Providers {
    by_channel: BTreeMap<Channel, Box<dyn ChannelProvider>>,
}

impl Providers {
    /// One provider per channel in [`herald_domain::routing::DELIVERABLE`].
    pub fn new(http: GuardedHttp) -> Self {
        let mut by_channel: BTreeMap<Channel, Box<dyn ChannelProvider>> = BTreeMap::new();
        by_channel.insert(
            Channel::Slack,
            Box::new(slack::SlackProvider::new(http.clone())),
        );
        by_channel.insert(
            Channel::Discord,
            Box::new(discord::DiscordProvider::new(http)),
        );
        Self { by_channel }
    }

    pub fn get(&self, channel: Channel) -> Option<&dyn ChannelProvider> {
        self.by_channel.get(&channel).map(|p| p.as_ref())
    }

    pub fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        self.by_channel.keys().copied()
    }
}

/// Posts a JSON message to a chat-style incoming webhook and judges the answer the way
/// third-party providers are judged (4xx other than 408/425/429 is permanent).
async fn post_json_message(
    http: &GuardedHttp,
    url: &str,
    message: serde_json::Value,
) -> AttemptReport {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    let started = std::time::Instant::now();
    let answer = http
        .post(url, headers, message.to_string().into_bytes())
        .await;
    report_from_answer(
        answer,
        herald_domain::webhook::classify_provider_status,
        started.elapsed(),
    )
}

/// Turns an HTTP answer (or its absence) into a report, judging status codes with `classify`.
fn report_from_answer(
    answer: Result<http::HttpAnswer, http::HttpFailure>,
    classify: fn(u16) -> AttemptOutcome,
    latency: Duration,
) -> AttemptReport {
    match answer {
        Ok(answer) => {
            let outcome = classify(answer.status);
            let error = (outcome != AttemptOutcome::Success)
                .then(|| format!("answered HTTP {}", answer.status));
            AttemptReport {
                outcome,
                status_code: Some(answer.status),
                error,
                response_excerpt: (!answer.excerpt.is_empty()).then_some(answer.excerpt),
                external_id: None,
                latency,
                retry_after: answer.retry_after,
                skipped: false,
            }
        }
        Err(failure) => {
            // A refused target will not become acceptable by waiting.
            let outcome = match failure {
                http::HttpFailure::Refused(_) => AttemptOutcome::Permanent,
                _ => AttemptOutcome::Retriable,
            };
            AttemptReport {
                latency,
                ..AttemptReport::refused(outcome, failure.to_string())
            }
        }
    }
}
