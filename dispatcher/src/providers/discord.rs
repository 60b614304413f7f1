//! Discord webhooks: `POST {"content": ...}` to the recipient's webhook URL (204 on success).

use async_trait::async_trait;
use herald_schemas::DeliveryTask;

use super::http::GuardedHttp;
use super::{post_json_message, AttemptReport, ChannelProvider};

/// Discord refuses messages longer than this.
const MAX_CONTENT_CHARS: usize = 2000;

pub struct DiscordProvider {
    http: GuardedHttp,
}

impl DiscordProvider {
    pub fn new(http: GuardedHttp) -> Self {
        Self { http }
    }
}

#[async_trait]
impl ChannelProvider for DiscordProvider {
    async fn deliver(&self, task: &DeliveryTask) -> AttemptReport {
        let content = match &task.subject {
            Some(subject) => format!("**{subject}**\n{}", task.body),
            None => task.body.clone(),
        };
        if content.chars().count() > MAX_CONTENT_CHARS {
            return AttemptReport::refused(
                herald_domain::webhook::AttemptOutcome::Permanent,
                format!("discord messages are at most {MAX_CONTENT_CHARS} characters"),
            );
        }
        post_json_message(
            &self.http,
            &task.destination,
            serde_json::json!({ "content": content }),
        )
        .await
    }
}
