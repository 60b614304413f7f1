//! Folding one batch of events into read-model writes.

use std::collections::{BTreeMap, HashMap};

use herald_domain::ids::{DeliveryId, EndpointId, RecipientId, TenantId};
use herald_domain::model::{
    ApiKeyRecord, AttemptRecord, Delivery, DeliveryChange, Endpoint, Recipient, Template, Tenant,
};
use herald_domain::{time_from_millis, Channel, DeliveryStatus};
use herald_schemas::HeraldEvent;
use herald_store::{HealthCounts, ReadModelWrite, Store, StoreError};

/// Accumulates the writes of one batch. Rows touched more than once in a batch are read
/// from the batch, not the store, so the batch's own earlier events count.
pub struct Fold<'s> {
    store: &'s dyn Store,
    writes: Vec<ReadModelWrite>,
    deliveries: HashMap<(TenantId, DeliveryId), Delivery>,
    health: BTreeMap<i64, HealthCounts>,
}

/// A webhook endpoint's attempt as its attempt log shows it; `None` for other channels.
fn attempt_record(e: &herald_schemas::DeliveryAttempted) -> Option<AttemptRecord> {
    let endpoint_id = e.endpoint_id.as_ref()?;
    Some(AttemptRecord {
        tenant_id: TenantId::from_trusted(&e.tenant_id),
        endpoint_id: EndpointId::from_trusted(endpoint_id),
        delivery_id: DeliveryId::from_trusted(&e.delivery_id),
        attempt: e.attempt.max(0) as u32,
        message_id: e.message_id.clone(),
        event_type: e.event_type.clone(),
        outcome: e.outcome.clone(),
        status_code: e.status_code.and_then(|c| u16::try_from(c).ok()),
        error: e.error.clone(),
        response_excerpt: e.response_excerpt.clone(),
        latency_ms: e.latency_ms.max(0) as u64,
        attempted_at: time_from_millis(e.attempted_at),
        next_attempt_at: e.next_attempt_at.map(time_from_millis),
        consecutive_failures: e.consecutive_failures.unwrap_or(0).max(0) as u32,
    })
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

impl<'s> Fold<'s> {
    pub fn new(store: &'s dyn Store) -> Self {
        Self {
            store,
            writes: Vec::new(),
            deliveries: HashMap::new(),
            health: BTreeMap::new(),
        }
    }

    pub async fn apply(&mut self, event: &HeraldEvent) -> Result<(), StoreError> {
        use HeraldEvent as E;
        match event {
            E::TenantUpserted(e) => self.writes.push(ReadModelWrite::Tenant(Tenant::from(e))),
            E::ApiKeyCreated(e) => self
                .writes
                .push(ReadModelWrite::ApiKey(ApiKeyRecord::from(e))),
            E::ApiKeyRevoked(e) => {
                if let Some(mut key) = self.store.api_key_by_hash(&e.key_hash).await? {
                    key.revoked_at = Some(time_from_millis(e.revoked_at));
                    self.writes.push(ReadModelWrite::ApiKey(key));
                }
            }
            E::TemplateUpserted(e) => self
                .writes
                .push(ReadModelWrite::Template(Template::from(e))),
            E::TemplateDeleted(e) => self.writes.push(ReadModelWrite::TemplateDeleted {
                tenant_id: TenantId::from_trusted(&e.tenant_id),
                slug: e.slug.clone(),
                at: time_from_millis(e.deleted_at),
            }),
            E::EndpointUpserted(e) => self
                .writes
                .push(ReadModelWrite::Endpoint(Endpoint::from(e))),
            E::EndpointDeleted(e) => self.writes.push(ReadModelWrite::EndpointDeleted {
                tenant_id: TenantId::from_trusted(&e.tenant_id),
                endpoint_id: EndpointId::from_trusted(&e.endpoint_id),
                at: time_from_millis(e.deleted_at),
            }),
            E::EndpointDisabled(e) => self.endpoint_disabled(e).await?,
            E::DeliveryRequeued(e) => {
                let change = DeliveryChange::Requeued {
                    at: time_from_millis(e.requested_at),
                };
                self.change(
                    &e.tenant_id,
                    &e.delivery_id,
                    &e.channel,
                    e.requested_at,
                    change,
                )
                .await?;
            }
            E::RecipientUpserted(e) => self
                .writes
                .push(ReadModelWrite::Recipient(Recipient::from(e))),
            E::SendRequested(e) => {
                let at = time_from_millis(e.requested_at);
                let channel = e.channel.parse().unwrap_or(Channel::Webhook);
                let row = self
                    .delivery(&e.tenant_id, &e.delivery_id, channel, e.requested_at)
                    .await?;
                // The row may exist already if outcomes were read first; fill in what only
                // the request knows without touching the status it reached.
                row.recipient_id = Some(RecipientId::from_trusted(&e.recipient_id));
                row.template = Some(e.template.clone());
                row.created_at = row.created_at.min(at);
            }
            E::DeliveryAttempted(e) => {
                if let Some(attempt) = attempt_record(e) {
                    self.writes.push(ReadModelWrite::Attempt(attempt));
                }
                let change = DeliveryChange::Attempted {
                    attempt: e.attempt.max(0) as u32,
                    error: e.error.clone(),
                    at: time_from_millis(e.attempted_at),
                };
                self.change(
                    &e.tenant_id,
                    &e.delivery_id,
                    &e.channel,
                    e.attempted_at,
                    change,
                )
                .await?;
            }
            // Health counts a delivery once, when its status actually moves: an outcome
            // appended twice (a dispatcher that re-processed after a crash) counts once.
            E::DeliverySucceeded(e) => {
                let status = e.status.parse().unwrap_or(DeliveryStatus::Sent);
                let change = DeliveryChange::Reached {
                    status,
                    external_id: e.external_id.clone(),
                    at: time_from_millis(e.succeeded_at),
                };
                if self
                    .change(
                        &e.tenant_id,
                        &e.delivery_id,
                        &e.channel,
                        e.succeeded_at,
                        change,
                    )
                    .await?
                {
                    let counts = HealthCounts {
                        sent: 1,
                        delivered: u64::from(status == DeliveryStatus::Delivered),
                        failed: 0,
                    };
                    self.health
                        .entry(minute_of(e.succeeded_at))
                        .or_default()
                        .add(counts);
                }
            }
            E::DeliveryFailed(e) => {
                let change = DeliveryChange::Failed {
                    attempts: e.attempts.max(0) as u32,
                    reason: e.reason.clone(),
                    at: time_from_millis(e.failed_at),
                };
                if self
                    .change(
                        &e.tenant_id,
                        &e.delivery_id,
                        &e.channel,
                        e.failed_at,
                        change,
                    )
                    .await?
                {
                    let counts = HealthCounts {
                        failed: 1,
                        ..Default::default()
                    };
                    self.health
                        .entry(minute_of(e.failed_at))
                        .or_default()
                        .add(counts);
                }
            }
            // A webhook delivery's row starts with its task (a notification's starts with its
            // request); retries and parked tasks pass through `deliveries` again and change
            // nothing.
            E::DeliveryTask(task)
                if task.channel == Channel::Webhook.as_str() && task.attempt <= 1 =>
            {
                self.delivery(
                    &task.tenant_id,
                    &task.delivery_id,
                    Channel::Webhook,
                    task.created_at,
                )
                .await?;
            }
            // Business events get a read model of their own (event history) in later work.
            E::DeliveryTask(_) | E::BusinessEventReceived(_) => {}
        }
        Ok(())
    }

    /// A dead-lettered task, kept encoded.
    pub fn dead_letter(&mut self, task: &herald_schemas::DeliveryTask, encoded: Vec<u8>) {
        self.writes.push(ReadModelWrite::DeadLetter {
            tenant_id: TenantId::from_trusted(&task.tenant_id),
            delivery_id: DeliveryId::from_trusted(&task.delivery_id),
            task: encoded,
        });
    }

    /// Marks the endpoint inactive, unless it was changed (re-enabled) after the disabling.
    async fn endpoint_disabled(
        &mut self,
        e: &herald_schemas::EndpointDisabled,
    ) -> Result<(), StoreError> {
        let tenant = TenantId::from_trusted(&e.tenant_id);
        let id = EndpointId::from_trusted(&e.endpoint_id);
        // The batch's own latest write of the endpoint, else the store's.
        let in_batch = self.writes.iter().rev().find_map(|w| match w {
            ReadModelWrite::Endpoint(ep) if ep.id == id && ep.tenant_id == tenant => {
                Some(ep.clone())
            }
            _ => None,
        });
        let current = match in_batch {
            Some(endpoint) => Some(endpoint),
            None => self.store.endpoint(&tenant, &id).await?,
        };
        let Some(mut endpoint) = current else {
            return Ok(()); // deleted meanwhile
        };
        let at = time_from_millis(e.disabled_at);
        if endpoint.updated_at > at {
            return Ok(());
        }
        endpoint.is_active = false;
        endpoint.disabled_reason = Some(e.reason.clone());
        endpoint.updated_at = at;
        self.writes.push(ReadModelWrite::Endpoint(endpoint));
        Ok(())
    }

    async fn change(
        &mut self,
        tenant: &str,
        delivery: &str,
        channel: &str,
        at_ms: i64,
        change: DeliveryChange,
    ) -> Result<bool, StoreError> {
        let channel = channel.parse().unwrap_or(Channel::Webhook);
        let row = self.delivery(tenant, delivery, channel, at_ms).await?;
        let before = row.status;
        row.apply(&change);
        // Whether the status moved: the fold is idempotent, so a repeated event never does.
        Ok(row.status != before)
    }

    /// The row of a delivery: from this batch, else the store, else a new `queued` row.
    async fn delivery(
        &mut self,
        tenant: &str,
        delivery: &str,
        channel: Channel,
        at_ms: i64,
    ) -> Result<&mut Delivery, StoreError> {
        let key = (
            TenantId::from_trusted(tenant),
            DeliveryId::from_trusted(delivery),
        );
        if !self.deliveries.contains_key(&key) {
            let stored = self.store.delivery(&key.0, &key.1).await?;
            let at = time_from_millis(at_ms);
            let row = stored.unwrap_or_else(|| Delivery {
                id: key.1.clone(),
                tenant_id: key.0.clone(),
                status: DeliveryStatus::Queued,
                channel,
                recipient_id: None,
                template: None,
                created_at: at,
                updated_at: at,
                attempts: 0,
                last_error: None,
                external_id: None,
            });
            self.deliveries.insert(key.clone(), row);
        }
        Ok(self.deliveries.get_mut(&key).expect("inserted above"))
    }

    pub fn into_writes(mut self) -> Vec<ReadModelWrite> {
        self.writes
            .extend(self.deliveries.into_values().map(ReadModelWrite::Delivery));
        self.writes.extend(
            self.health
                .into_iter()
                .map(|(minute, counts)| ReadModelWrite::HealthCounts { minute, counts }),
        );
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use herald_schemas::{DeliverySucceeded, SendRequested};
    use herald_store::embedded::EmbeddedStore;
    use herald_store::ReadModelWrite;

    use super::*;

    fn send(tenant: &str, delivery: &str) -> HeraldEvent {
        HeraldEvent::SendRequested(SendRequested {
            tenant_id: tenant.into(),
            delivery_id: delivery.into(),
            request_id: None,
            recipient_id: "rcp_1".into(),
            channel: "slack".into(),
            template: "t".into(),
            vars_json: "{}".into(),
            subject: None,
            body: "hi".into(),
            destination: "https://hooks.slack.com/x".into(),
            priority: "normal".into(),
            scheduled_for: None,
            idempotency_key: None,
            requested_at: 60_000,
        })
    }

    fn delivered(tenant: &str, delivery: &str) -> HeraldEvent {
        HeraldEvent::DeliverySucceeded(DeliverySucceeded {
            tenant_id: tenant.into(),
            delivery_id: delivery.into(),
            channel: "slack".into(),
            endpoint_id: None,
            attempt: 1,
            status: "delivered".into(),
            external_id: None,
            succeeded_at: 61_000,
        })
    }

    fn health_of(writes: &[ReadModelWrite]) -> HealthCounts {
        let mut total = HealthCounts::default();
        for write in writes {
            if let ReadModelWrite::HealthCounts { counts, .. } = write {
                total.add(*counts);
            }
        }
        total
    }

    #[tokio::test]
    async fn a_duplicated_outcome_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let tenant = TenantId::generate().to_string();
        let delivery = DeliveryId::generate().to_string();

        // In one batch, and across batches (the second sees the stored row).
        let mut fold = Fold::new(&store);
        for event in [
            send(&tenant, &delivery),
            delivered(&tenant, &delivery),
            delivered(&tenant, &delivery),
        ] {
            fold.apply(&event).await.unwrap();
        }
        let writes = fold.into_writes();
        assert_eq!(
            health_of(&writes),
            HealthCounts {
                sent: 1,
                delivered: 1,
                failed: 0
            }
        );
        store.apply(writes, None).await.unwrap();

        let mut fold = Fold::new(&store);
        fold.apply(&delivered(&tenant, &delivery)).await.unwrap();
        assert_eq!(health_of(&fold.into_writes()), HealthCounts::default());
    }
}
