//! The edge between the wire and the domain: Avro records to and from domain entities.
//!
//! The log carries flat, evolution-friendly records (strings, milliseconds); roles work with
//! rich domain types. Every crossing goes through here. Ids and enums read back from the log
//! were validated when first written, so they are trusted; an unknown enum value (written by
//! a newer Herald) falls back to a safe default instead of stopping a consumer.

use std::collections::BTreeMap;

use herald_domain::ids::{ApiKeyId, EndpointId, RecipientId, TemplateId, TenantId};
use herald_domain::model::{
    ApiKeyRecord, Contacts, Endpoint, Plan, Recipient, SignatureScheme, Template, Tenant,
};
use herald_domain::template::ChannelContent as DomainContent;
use herald_domain::{time_from_millis, Channel};

use crate::{
    ApiKeyCreated, ChannelContent, DeliveryTask, EndpointUpserted, RecipientUpserted,
    TemplateUpserted, TenantUpserted,
};

fn ms(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

impl From<&Tenant> for TenantUpserted {
    fn from(t: &Tenant) -> Self {
        Self {
            tenant_id: t.id.to_string(),
            name: t.name.clone(),
            monthly_quota: t
                .plan
                .monthly_quota
                .map(|q| i64::try_from(q).unwrap_or(i64::MAX)),
            rate_limit_per_minute: i32::try_from(t.plan.rate_limit_per_minute).unwrap_or(i32::MAX),
            endpoint_failure_threshold: t
                .endpoint_failure_threshold
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            created_at: ms(t.created_at),
            updated_at: ms(t.updated_at),
        }
    }
}

impl From<&TenantUpserted> for Tenant {
    fn from(e: &TenantUpserted) -> Self {
        Self {
            id: TenantId::from_trusted(&e.tenant_id),
            name: e.name.clone(),
            plan: Plan {
                monthly_quota: e.monthly_quota.map(|q| q.max(0) as u64),
                rate_limit_per_minute: e.rate_limit_per_minute.max(1) as u32,
            },
            endpoint_failure_threshold: e.endpoint_failure_threshold.map(|n| n.max(1) as u32),
            created_at: time_from_millis(e.created_at),
            updated_at: time_from_millis(e.updated_at),
        }
    }
}

impl From<&ApiKeyRecord> for ApiKeyCreated {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            tenant_id: k.tenant_id.to_string(),
            key_id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            key_hash: k.key_hash.clone(),
            created_at: ms(k.created_at),
        }
    }
}

impl From<&ApiKeyCreated> for ApiKeyRecord {
    fn from(e: &ApiKeyCreated) -> Self {
        Self {
            id: ApiKeyId::from_trusted(&e.key_id),
            tenant_id: TenantId::from_trusted(&e.tenant_id),
            name: e.name.clone(),
            prefix: e.prefix.clone(),
            key_hash: e.key_hash.clone(),
            created_at: time_from_millis(e.created_at),
            revoked_at: None,
        }
    }
}

impl From<&Template> for TemplateUpserted {
    fn from(t: &Template) -> Self {
        Self {
            tenant_id: t.tenant_id.to_string(),
            template_id: t.id.to_string(),
            slug: t.slug.clone(),
            channels: t
                .channels
                .iter()
                .map(|(channel, c)| {
                    (
                        channel.to_string(),
                        ChannelContent {
                            subject: c.subject.clone(),
                            body: c.body.clone(),
                        },
                    )
                })
                .collect(),
            created_at: ms(t.created_at),
            updated_at: ms(t.updated_at),
        }
    }
}

impl From<&TemplateUpserted> for Template {
    fn from(e: &TemplateUpserted) -> Self {
        let channels: BTreeMap<Channel, DomainContent> = e
            .channels
            .iter()
            .filter_map(|(name, c)| {
                let channel = name.parse().ok()?;
                Some((
                    channel,
                    DomainContent {
                        subject: c.subject.clone(),
                        body: c.body.clone(),
                    },
                ))
            })
            .collect();
        Self {
            id: TemplateId::from_trusted(&e.template_id),
            tenant_id: TenantId::from_trusted(&e.tenant_id),
            slug: e.slug.clone(),
            channels,
            created_at: time_from_millis(e.created_at),
            updated_at: time_from_millis(e.updated_at),
        }
    }
}

impl From<&Endpoint> for EndpointUpserted {
    fn from(ep: &Endpoint) -> Self {
        Self {
            tenant_id: ep.tenant_id.to_string(),
            endpoint_id: ep.id.to_string(),
            url: ep.url.clone(),
            description: ep.description.clone(),
            events: ep.events.clone(),
            signature_scheme: ep.signature_scheme.as_str().to_owned(),
            secret: ep.secret.clone(),
            is_active: ep.is_active,
            disabled_reason: ep.disabled_reason.clone(),
            created_at: ms(ep.created_at),
            updated_at: ms(ep.updated_at),
            previous_secret: ep.previous_secret.clone(),
            previous_secret_expires_at: ep.previous_secret_expires_at.map(ms),
            retry_schedule: ep.retry_schedule.as_ref().map(|s| s.to_string()),
            rate_limit_per_second: ep
                .rate_limit_per_second
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }
}

impl From<&EndpointUpserted> for Endpoint {
    fn from(e: &EndpointUpserted) -> Self {
        Self {
            id: EndpointId::from_trusted(&e.endpoint_id),
            tenant_id: TenantId::from_trusted(&e.tenant_id),
            url: e.url.clone(),
            description: e.description.clone(),
            events: e.events.clone(),
            signature_scheme: SignatureScheme::parse(&e.signature_scheme).unwrap_or_default(),
            secret: e.secret.clone(),
            previous_secret: e.previous_secret.clone(),
            previous_secret_expires_at: e.previous_secret_expires_at.map(time_from_millis),
            // Written by Herald from a validated schedule; an unreadable one (never expected)
            // falls back to the server's default rather than losing the endpoint.
            retry_schedule: e.retry_schedule.as_deref().and_then(|s| s.parse().ok()),
            rate_limit_per_second: e.rate_limit_per_second.map(|n| n.max(1) as u32),
            is_active: e.is_active,
            disabled_reason: e.disabled_reason.clone(),
            created_at: time_from_millis(e.created_at),
            updated_at: time_from_millis(e.updated_at),
        }
    }
}

impl From<&Recipient> for RecipientUpserted {
    fn from(r: &Recipient) -> Self {
        let c = &r.contacts;
        Self {
            tenant_id: r.tenant_id.to_string(),
            recipient_id: r.id.to_string(),
            name: r.name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            whatsapp_phone: c.whatsapp_phone.clone(),
            telegram_chat_id: c.telegram_chat_id.clone(),
            slack_webhook_url: c.slack_webhook_url.clone(),
            discord_webhook_url: c.discord_webhook_url.clone(),
            created_at: ms(r.created_at),
            updated_at: ms(r.updated_at),
        }
    }
}

impl From<&RecipientUpserted> for Recipient {
    fn from(e: &RecipientUpserted) -> Self {
        Self {
            id: RecipientId::from_trusted(&e.recipient_id),
            tenant_id: TenantId::from_trusted(&e.tenant_id),
            name: e.name.clone(),
            contacts: Contacts {
                email: e.email.clone(),
                phone: e.phone.clone(),
                whatsapp_phone: e.whatsapp_phone.clone(),
                telegram_chat_id: e.telegram_chat_id.clone(),
                slack_webhook_url: e.slack_webhook_url.clone(),
                discord_webhook_url: e.discord_webhook_url.clone(),
            },
            created_at: time_from_millis(e.created_at),
            updated_at: time_from_millis(e.updated_at),
        }
    }
}

impl DeliveryTask {
    /// The first attempt of a webhook message to `endpoint`.
    pub fn first_webhook_attempt(
        endpoint: &Endpoint,
        delivery_id: String,
        message_id: &str,
        event_type: &str,
        body: String,
        created_at: i64,
    ) -> Self {
        Self {
            tenant_id: endpoint.tenant_id.to_string(),
            delivery_id,
            channel: herald_domain::Channel::Webhook.to_string(),
            endpoint_id: Some(endpoint.id.to_string()),
            recipient_id: None,
            destination: endpoint.url.clone(),
            subject: None,
            body,
            message_id: message_id.to_owned(),
            event_type: Some(event_type.to_owned()),
            attempt: 1,
            not_before: 0,
            created_at,
            priority: "normal".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn entities_survive_the_round_trip() {
        let at = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        let tenant = Tenant {
            id: TenantId::generate(),
            name: "Acme".into(),
            plan: Plan {
                monthly_quota: Some(10),
                rate_limit_per_minute: 120,
            },
            endpoint_failure_threshold: Some(3),
            created_at: at,
            updated_at: at,
        };
        assert_eq!(Tenant::from(&TenantUpserted::from(&tenant)), tenant);

        let template = Template {
            id: TemplateId::generate(),
            tenant_id: tenant.id.clone(),
            slug: "welcome".into(),
            channels: BTreeMap::from([(
                Channel::Slack,
                DomainContent {
                    subject: None,
                    body: "hi".into(),
                },
            )]),
            created_at: at,
            updated_at: at,
        };
        assert_eq!(Template::from(&TemplateUpserted::from(&template)), template);

        let endpoint = Endpoint {
            id: EndpointId::generate(),
            tenant_id: tenant.id.clone(),
            url: "https://example.com".into(),
            description: Some("d".into()),
            events: vec!["order.*".into()],
            signature_scheme: SignatureScheme::Stripe,
            secret: "whsec_x".into(),
            previous_secret: Some("whsec_y".into()),
            previous_secret_expires_at: Some(at),
            retry_schedule: Some("30s,2m,10m".parse().unwrap()),
            rate_limit_per_second: Some(5),
            is_active: true,
            disabled_reason: None,
            created_at: at,
            updated_at: at,
        };
        assert_eq!(Endpoint::from(&EndpointUpserted::from(&endpoint)), endpoint);

        let recipient = Recipient {
            id: RecipientId::generate(),
            tenant_id: tenant.id.clone(),
            name: Some("Ana".into()),
            contacts: Contacts {
                email: Some("a@example.com".into()),
                ..Contacts::default()
            },
            created_at: at,
            updated_at: at,
        };
        assert_eq!(
            Recipient::from(&RecipientUpserted::from(&recipient)),
            recipient
        );
    }
}
