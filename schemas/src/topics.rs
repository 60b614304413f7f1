//! Where each record goes: topic names and record keys (DESIGN.md "The log").
//!
//! Keys choose partitions, and a partition has one consumer at a time, so the key decides
//! what is processed in order and by whom: one delivery target (endpoint, or recipient and
//! channel) is always owned by one dispatcher.

use crate::HeraldEvent;

/// The names of Herald's topics under one prefix (`herald.` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    /// Compacted: tenants, API keys, templates, endpoints, recipients. Key: entity id.
    pub control: String,
    /// Send requests and business events. Key: tenant + recipient, or tenant + event id.
    pub requests: String,
    /// One task per delivery target. Key: endpoint id, or recipient + channel.
    pub deliveries: String,
    /// Attempts and outcomes. Key: delivery id.
    pub outcomes: String,
    /// Tasks that exhausted their retry schedule. Key: as `deliveries`.
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::new("herald.")
    }
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            control: format!("{prefix}control"),
            requests: format!("{prefix}requests"),
            deliveries: format!("{prefix}deliveries"),
            outcomes: format!("{prefix}outcomes"),
            dead_letter: format!("{prefix}dead-letter"),
        }
    }

    /// The retry tier for one delay, named by it (`herald.retry.5m`): every task in a tier
    /// waits the same time, so a tier is ordered by due time and never blocks on its head.
    pub fn retry_tier(&self, delay_label: &str) -> String {
        format!("{}retry.{delay_label}", self.prefix)
    }

    /// The topic an event is appended to first, and its record key.
    pub fn route(&self, event: &HeraldEvent) -> (&str, Vec<u8>) {
        use HeraldEvent as E;
        let join = |a: &str, b: &str| format!("{a}/{b}").into_bytes();
        match event {
            E::SendRequested(e) => (&self.requests, join(&e.tenant_id, &e.recipient_id)),
            E::BusinessEventReceived(e) => (&self.requests, join(&e.tenant_id, &e.event_id)),
            E::DeliveryTask(task) => (&self.deliveries, delivery_target_key(task)),
            E::DeliveryAttempted(e) => (&self.outcomes, e.delivery_id.clone().into_bytes()),
            E::DeliverySucceeded(e) => (&self.outcomes, e.delivery_id.clone().into_bytes()),
            E::DeliveryFailed(e) => (&self.outcomes, e.delivery_id.clone().into_bytes()),
            E::EndpointDisabled(e) => (&self.outcomes, e.endpoint_id.clone().into_bytes()),
            E::DeliveryRequeued(e) => (&self.outcomes, e.delivery_id.clone().into_bytes()),
            E::TenantUpserted(e) => (&self.control, e.tenant_id.clone().into_bytes()),
            E::ApiKeyCreated(e) => (&self.control, e.key_id.clone().into_bytes()),
            E::ApiKeyRevoked(e) => (&self.control, e.key_id.clone().into_bytes()),
            E::TemplateUpserted(e) => (&self.control, e.template_id.clone().into_bytes()),
            E::TemplateDeleted(e) => (&self.control, e.template_id.clone().into_bytes()),
            E::EndpointUpserted(e) => (&self.control, e.endpoint_id.clone().into_bytes()),
            E::EndpointDeleted(e) => (&self.control, e.endpoint_id.clone().into_bytes()),
            E::RecipientUpserted(e) => (&self.control, e.recipient_id.clone().into_bytes()),
        }
    }
}

/// The delivery target of a task: its endpoint, or its recipient and channel.
pub fn delivery_target_key(task: &crate::DeliveryTask) -> Vec<u8> {
    match (&task.endpoint_id, &task.recipient_id) {
        (Some(endpoint), _) => endpoint.clone().into_bytes(),
        (None, Some(recipient)) => format!("{recipient}/{}", task.channel).into_bytes(),
        (None, None) => task.delivery_id.clone().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let topics = Topics::new("acme.");
        assert_eq!(topics.deliveries, "acme.deliveries");
        assert_eq!(topics.retry_tier("5m"), "acme.retry.5m");
        assert_eq!(Topics::default().control, "herald.control");
    }
}
