//! Slack incoming webhooks: `POST {"text": ...}` to the recipient's webhook URL.
//! Slack answers 200 `ok` once the message is in the channel, so success means delivered.

use async_trait::async_trait;
use herald_schemas::DeliveryTask;

use super::http::GuardedHttp;
use super::{post_json_message, AttemptReport, ChannelProvider};

pub struct SlackProvider {
    http: GuardedHttp,
}

impl SlackProvider {
    pub fn new(http: GuardedHttp) -> Self {
        Self { http }
    }
}

#[async_trait]
impl ChannelProvider for SlackProvider {
    async fn deliver(&self, task: &DeliveryTask) -> AttemptReport {
        let text = match &task.subject {
            Some(subject) => format!("*{subject}*\n{}", task.body),
            None => task.body.clone(),
        };
        post_json_message(
            &self.http,
            &task.destination,
            serde_json::json!({ "text": text }),
        )
        .await
    }
}
