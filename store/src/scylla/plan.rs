//! What one [`Store::apply`](crate::Store::apply) writes, as plain data: every CQL mutation
//! with its key, payload and write timestamp, before it is bound to a prepared statement.
//! Pure, so the versioning, indexing, health and checkpoint rules are unit-tested without a
//! database.

use std::collections::HashMap;

use herald_domain::ids::{RecipientId, TenantId};
use herald_domain::model::Recipient;

use super::codec::{self, WriteClock};
use crate::{Checkpoint, ReadModelWrite, Result};

/// `health_days` has one partition.
pub(super) const HEALTH_DAYS_SCOPE: &str = "minutes";

/// One CQL write. `ts` is the `USING TIMESTAMP` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mutation {
    Tenant {
        tenant: String,
        doc: String,
        ts: i64,
    },
    /// `revoked_at: None` leaves the column unset (never null), which keeps a revocation.
    ApiKey {
        key_hash: String,
        doc: String,
        revoked_at: Option<String>,
        ts: i64,
    },
    Template {
        tenant: String,
        slug: String,
        doc: String,
        ts: i64,
    },
    DeleteTemplate {
        tenant: String,
        slug: String,
        ts: i64,
    },
    Endpoint {
        tenant: String,
        endpoint: String,
        doc: String,
        ts: i64,
    },
    DeleteEndpoint {
        tenant: String,
        endpoint: String,
        ts: i64,
    },
    /// `attempted_at` in milliseconds; `attempt` widened to `bigint`.
    Attempt {
        tenant: String,
        endpoint: String,
        attempted_at: i64,
        delivery: String,
        attempt: i64,
        doc: String,
        ts: i64,
    },
    DeadLetter {
        tenant: String,
        delivery: String,
        task: Vec<u8>,
        ts: i64,
    },
    Recipient {
        tenant: String,
        recipient: String,
        doc: String,
        ts: i64,
    },
    IndexContact {
        tenant: String,
        kind: &'static str,
        contact: String,
        recipient: String,
        ts: i64,
    },
    UnindexContact {
        tenant: String,
        kind: &'static str,
        contact: String,
        recipient: String,
        ts: i64,
    },
    Delivery {
        tenant: String,
        delivery: String,
        doc: String,
        ts: i64,
    },
    DeliveryByTime {
        tenant: String,
        day: i64,
        delivery: String,
        doc: String,
        ts: i64,
    },
    Health {
        day: i64,
        minute: i64,
        contribution: String,
        sent: i64,
        delivered: i64,
        failed: i64,
        ts: i64,
    },
    HealthDay {
        day: i64,
        ts: i64,
    },
    Checkpoint {
        consumer: String,
        topic: String,
        partition: i64,
        next: i64,
        ts: i64,
    },
}

impl Mutation {
    /// A rough size in a batch: the values' bytes plus per-statement overhead.
    pub(super) fn size(&self) -> usize {
        use Mutation::*;
        let bytes = match self {
            Tenant { tenant, doc, .. } => tenant.len() + doc.len() + 8,
            ApiKey {
                key_hash,
                doc,
                revoked_at,
                ..
            } => key_hash.len() + doc.len() + revoked_at.as_ref().map_or(0, String::len) + 8,
            Template {
                tenant, slug, doc, ..
            } => tenant.len() + slug.len() + doc.len() + 8,
            DeleteTemplate { tenant, slug, .. } => tenant.len() + slug.len() + 8,
            Endpoint {
                tenant,
                endpoint,
                doc,
                ..
            } => tenant.len() + endpoint.len() + doc.len() + 8,
            DeleteEndpoint {
                tenant, endpoint, ..
            } => tenant.len() + endpoint.len() + 8,
            Attempt {
                tenant,
                endpoint,
                delivery,
                doc,
                ..
            } => tenant.len() + endpoint.len() + delivery.len() + doc.len() + 24,
            DeadLetter {
                tenant,
                delivery,
                task,
                ..
            } => tenant.len() + delivery.len() + task.len() + 8,
            Recipient {
                tenant,
                recipient,
                doc,
                ..
            } => tenant.len() + recipient.len() + doc.len() + 8,
            IndexContact {
                tenant,
                kind,
                contact,
                recipient,
                ..
            }
            | UnindexContact {
                tenant,
                kind,
                contact,
                recipient,
                ..
            } => tenant.len() + kind.len() + contact.len() + recipient.len() + 8,
            Delivery {
                tenant,
                delivery,
                doc,
                ..
            } => tenant.len() + delivery.len() + doc.len() + 8,
            DeliveryByTime {
                tenant,
                delivery,
                doc,
                ..
            } => tenant.len() + delivery.len() + doc.len() + 16,
            Health { contribution, .. } => contribution.len() + 48,
            HealthDay { .. } => HEALTH_DAYS_SCOPE.len() + 16,
            Checkpoint {
                consumer, topic, ..
            } => consumer.len() + topic.len() + 24,
        };
        codec::statement_size(bytes)
    }
}

/// The mutations of one `apply`: the read-model rows, and what must come last, in the same
/// batch as the rows or after them (health rows and the checkpoint).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub rows: Vec<Mutation>,
    /// Where each write's mutations start in `rows`: a write's mutations (a recipient and its
    /// contact index, a delivery and its listing row) always go in one batch.
    pub groups: Vec<usize>,
    pub last: Vec<Mutation>,
}

impl Plan {
    /// The rows of each write, in order.
    pub(super) fn row_groups(&self) -> Vec<std::ops::Range<usize>> {
        let ends = self.groups.iter().skip(1).copied().chain([self.rows.len()]);
        self.groups
            .iter()
            .copied()
            .zip(ends)
            .filter(|(start, end)| start < end)
            .map(|(start, end)| start..end)
            .collect()
    }
}

pub(super) type RecipientKey = (TenantId, RecipientId);

/// The distinct recipients `writes` touch: their stored versions are what `plan` needs.
pub(super) fn recipient_keys(writes: &[ReadModelWrite]) -> Vec<RecipientKey> {
    let mut keys: Vec<RecipientKey> = writes
        .iter()
        .filter_map(|write| match write {
            ReadModelWrite::Recipient(r) => Some((r.tenant_id.clone(), r.id.clone())),
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Plans one `apply`. `recipients` holds the stored version of every recipient written (see
/// [`recipient_keys`]) and is kept current as the batch's own recipient writes are planned, so
/// a later write in the batch compares against an earlier one.
pub(super) fn plan(
    writes: Vec<ReadModelWrite>,
    checkpoint: Option<(&str, &Checkpoint)>,
    recipients: &mut HashMap<RecipientKey, Option<Recipient>>,
    clock: &WriteClock,
) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut health = Vec::new();
    for write in writes {
        let stamp = clock.next();
        plan.groups.push(plan.rows.len());
        match write {
            ReadModelWrite::Tenant(tenant) => plan.rows.push(Mutation::Tenant {
                doc: codec::encode_doc(stamp, &tenant),
                ts: codec::version_timestamp(tenant.updated_at),
                tenant: tenant.id.as_str().to_owned(),
            }),
            ReadModelWrite::ApiKey(record) => plan.rows.push(Mutation::ApiKey {
                doc: codec::encode_doc(stamp, &record),
                revoked_at: record.revoked_at.map(codec::encode_time),
                key_hash: record.key_hash,
                ts: stamp,
            }),
            ReadModelWrite::Template(template) => plan.rows.push(Mutation::Template {
                doc: codec::encode_doc(stamp, &template),
                ts: codec::version_timestamp(template.updated_at),
                tenant: template.tenant_id.as_str().to_owned(),
                slug: template.slug,
            }),
            ReadModelWrite::TemplateDeleted {
                tenant_id,
                slug,
                at,
            } => plan.rows.push(Mutation::DeleteTemplate {
                tenant: tenant_id.as_str().to_owned(),
                slug,
                ts: codec::version_timestamp(at),
            }),
            ReadModelWrite::Endpoint(endpoint) => plan.rows.push(Mutation::Endpoint {
                doc: codec::encode_doc(stamp, &endpoint),
                ts: codec::version_timestamp(endpoint.updated_at),
                tenant: endpoint.tenant_id.as_str().to_owned(),
                endpoint: endpoint.id.as_str().to_owned(),
            }),
            ReadModelWrite::EndpointDeleted {
                tenant_id,
                endpoint_id,
                at,
            } => plan.rows.push(Mutation::DeleteEndpoint {
                tenant: tenant_id.as_str().to_owned(),
                endpoint: endpoint_id.as_str().to_owned(),
                ts: codec::version_timestamp(at),
            }),
            ReadModelWrite::Attempt(record) => plan.rows.push(Mutation::Attempt {
                doc: codec::encode_doc(stamp, &record),
                tenant: record.tenant_id.as_str().to_owned(),
                endpoint: record.endpoint_id.as_str().to_owned(),
                attempted_at: record.attempted_at.timestamp_millis(),
                delivery: record.delivery_id.as_str().to_owned(),
                attempt: i64::from(record.attempt),
                ts: stamp,
            }),
            ReadModelWrite::DeadLetter {
                tenant_id,
                delivery_id,
                task,
            } => plan.rows.push(Mutation::DeadLetter {
                tenant: tenant_id.as_str().to_owned(),
                delivery: delivery_id.as_str().to_owned(),
                task,
                ts: stamp,
            }),
            ReadModelWrite::Recipient(recipient) => {
                let key = (recipient.tenant_id.clone(), recipient.id.clone());
                let stored = recipients.entry(key).or_default();
                if codec::recipient_write_wins(stored.as_ref(), &recipient) {
                    plan_recipient(&mut plan.rows, stamp, stored.as_ref(), &recipient);
                    *stored = Some(recipient);
                }
            }
            ReadModelWrite::Delivery(delivery) => {
                let doc = codec::encode_doc(stamp, &delivery);
                let tenant = delivery.tenant_id.as_str().to_owned();
                let id = delivery.id.as_str().to_owned();
                plan.rows.push(Mutation::DeliveryByTime {
                    tenant: tenant.clone(),
                    day: codec::delivery_day(&delivery),
                    delivery: id.clone(),
                    doc: doc.clone(),
                    ts: stamp,
                });
                plan.rows.push(Mutation::Delivery {
                    tenant,
                    delivery: id,
                    doc,
                    ts: stamp,
                });
            }
            ReadModelWrite::HealthCounts { minute, counts } => health.push((minute, counts)),
        }
    }

    let minutes = codec::health_by_minute(health);
    if !minutes.is_empty() {
        let contribution = match checkpoint {
            Some((consumer, positions)) => codec::checkpoint_contribution(consumer, positions),
            None => codec::one_off_contribution(),
        };
        let ts = clock.next();
        let mut days = Vec::new();
        for (minute, counts) in minutes {
            let day = codec::minute_day(minute);
            if days.last() != Some(&day) {
                days.push(day);
            }
            plan.last.push(Mutation::Health {
                day,
                minute,
                contribution: contribution.clone(),
                sent: codec::count_to_cql(counts.sent)?,
                delivered: codec::count_to_cql(counts.delivered)?,
                failed: codec::count_to_cql(counts.failed)?,
                ts,
            });
        }
        plan.last
            .extend(days.into_iter().map(|day| Mutation::HealthDay { day, ts }));
    }
    if let Some((consumer, positions)) = checkpoint {
        let ts = clock.next();
        for ((topic, partition), next) in positions {
            plan.last.push(Mutation::Checkpoint {
                consumer: consumer.to_owned(),
                topic: topic.clone(),
                partition: i64::from(*partition),
                next: codec::offset_to_cql(topic, *partition, *next)?,
                ts,
            });
        }
    }
    Ok(plan)
}

/// Plans a recipient write that wins over `stored`: the row, and its contact index.
fn plan_recipient(
    rows: &mut Vec<Mutation>,
    stamp: i64,
    stored: Option<&Recipient>,
    recipient: &Recipient,
) {
    let tenant = recipient.tenant_id.as_str();
    let id = recipient.id.as_str();
    let ts = codec::version_timestamp(recipient.updated_at);
    rows.push(Mutation::Recipient {
        tenant: tenant.to_owned(),
        recipient: id.to_owned(),
        doc: codec::encode_doc(stamp, recipient),
        ts,
    });
    let (stale, fresh) = codec::contact_changes(stored, recipient);
    let unindex_ts = codec::unindex_timestamp(recipient.updated_at);
    rows.extend(
        stale
            .into_iter()
            .map(|(kind, contact)| Mutation::UnindexContact {
                tenant: tenant.to_owned(),
                kind: kind.as_str(),
                contact: contact.to_owned(),
                recipient: id.to_owned(),
                ts: unindex_ts,
            }),
    );
    rows.extend(
        fresh
            .into_iter()
            .map(|(kind, contact)| Mutation::IndexContact {
                tenant: tenant.to_owned(),
                kind: kind.as_str(),
                contact: contact.to_owned(),
                recipient: id.to_owned(),
                ts,
            }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthCounts;
    use chrono::{DateTime, Utc};
    use herald_domain::ids::{ApiKeyId, DeliveryId, EndpointId};
    use herald_domain::model::{ApiKeyRecord, AttemptRecord, Contacts, Delivery, Tenant};
    use herald_domain::{Channel, DeliveryStatus};

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_123 + ms).unwrap()
    }

    fn us(ms: i64) -> i64 {
        at(ms).timestamp_micros()
    }

    fn tenant(id: &TenantId, name: &str, updated_ms: i64) -> Tenant {
        Tenant {
            id: id.clone(),
            name: name.to_owned(),
            plan: Default::default(),
            endpoint_failure_threshold: None,
            created_at: at(0),
            updated_at: at(updated_ms),
        }
    }

    fn recipient(tenant: &TenantId, id: &RecipientId, email: &str, ms: i64) -> Recipient {
        Recipient {
            id: id.clone(),
            tenant_id: tenant.clone(),
            name: None,
            contacts: Contacts {
                email: Some(email.to_owned()),
                phone: Some("+49301".to_owned()),
                ..Contacts::default()
            },
            created_at: at(0),
            updated_at: at(ms),
        }
    }

    fn plan_of(writes: Vec<ReadModelWrite>) -> Plan {
        let mut recipients = HashMap::new();
        plan(writes, None, &mut recipients, &WriteClock::default()).unwrap()
    }

    fn docs(plan: &Plan) -> Vec<&str> {
        plan.rows
            .iter()
            .filter_map(|m| match m {
                Mutation::Tenant { doc, .. } => Some(doc.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn versioned_rows_are_timestamped_by_updated_at() {
        let id = TenantId::generate();
        let plan = plan_of(vec![
            ReadModelWrite::Tenant(tenant(&id, "v2", 200)),
            ReadModelWrite::Tenant(tenant(&id, "v1", 100)),
        ]);
        let ts: Vec<i64> = plan
            .rows
            .iter()
            .map(|m| match m {
                Mutation::Tenant { ts, tenant, .. } => {
                    assert_eq!(tenant, id.as_str());
                    *ts
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ts, vec![us(200), us(100)]);
        assert!(plan.last.is_empty());
    }

    #[test]
    fn equal_versions_later_in_a_batch_carry_a_greater_doc() {
        let id = TenantId::generate();
        let plan = plan_of(vec![
            ReadModelWrite::Tenant(tenant(&id, "zzz", 200)),
            ReadModelWrite::Tenant(tenant(&id, "aaa", 200)),
        ]);
        let docs = docs(&plan);
        assert!(docs[1] > docs[0], "the later write must win the tie");
        assert!(docs[1].contains("aaa"));
    }

    #[test]
    fn template_deletes_are_timestamped_by_at() {
        let tenant_id = TenantId::generate();
        let plan = plan_of(vec![ReadModelWrite::TemplateDeleted {
            tenant_id: tenant_id.clone(),
            slug: "welcome".to_owned(),
            at: at(150),
        }]);
        assert_eq!(
            plan.rows,
            vec![Mutation::DeleteTemplate {
                tenant: tenant_id.as_str().to_owned(),
                slug: "welcome".to_owned(),
                ts: us(150)
            }]
        );
    }

    #[test]
    fn endpoint_deletes_are_timestamped_by_at() {
        let tenant_id = TenantId::generate();
        let endpoint_id = EndpointId::generate();
        let plan = plan_of(vec![ReadModelWrite::EndpointDeleted {
            tenant_id: tenant_id.clone(),
            endpoint_id: endpoint_id.clone(),
            at: at(150),
        }]);
        assert_eq!(
            plan.rows,
            vec![Mutation::DeleteEndpoint {
                tenant: tenant_id.as_str().to_owned(),
                endpoint: endpoint_id.as_str().to_owned(),
                ts: us(150)
            }]
        );
    }

    #[test]
    fn attempts_are_keyed_by_time_delivery_and_number() {
        let record = AttemptRecord {
            tenant_id: TenantId::generate(),
            endpoint_id: EndpointId::generate(),
            delivery_id: DeliveryId::generate(),
            attempt: 3,
            message_id: Some("evt_1".to_owned()),
            event_type: Some("order.paid".to_owned()),
            outcome: "retriable".to_owned(),
            status_code: Some(503),
            error: None,
            response_excerpt: Some("busy".to_owned()),
            latency_ms: 12,
            attempted_at: at(7),
            next_attempt_at: Some(at(5_007)),
            consecutive_failures: 2,
        };
        let plan = plan_of(vec![
            ReadModelWrite::Attempt(record.clone()),
            ReadModelWrite::Attempt(record.clone()),
        ]);
        let planned: Vec<_> = plan
            .rows
            .iter()
            .map(|m| match m {
                Mutation::Attempt {
                    tenant,
                    endpoint,
                    attempted_at,
                    delivery,
                    attempt,
                    doc,
                    ts,
                } => {
                    assert_eq!(
                        (tenant.as_str(), endpoint.as_str(), delivery.as_str()),
                        (
                            record.tenant_id.as_str(),
                            record.endpoint_id.as_str(),
                            record.delivery_id.as_str()
                        )
                    );
                    assert_eq!((*attempted_at, *attempt), (at(7).timestamp_millis(), 3));
                    assert_eq!(
                        codec::decode_doc::<AttemptRecord>("k", doc).unwrap(),
                        record
                    );
                    *ts
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert!(
            planned[1] > planned[0],
            "a rewrite takes the write clock and wins"
        );
    }

    #[test]
    fn dead_letters_keep_their_bytes() {
        let tenant_id = TenantId::generate();
        let delivery_id = DeliveryId::generate();
        let task = vec![0xc3, 0x01, 0x00, 0xff];
        let plan = plan_of(vec![ReadModelWrite::DeadLetter {
            tenant_id: tenant_id.clone(),
            delivery_id: delivery_id.clone(),
            task: task.clone(),
        }]);
        match &plan.rows[..] {
            [Mutation::DeadLetter {
                tenant,
                delivery,
                task: written,
                ..
            }] => {
                assert_eq!(
                    (tenant.as_str(), delivery.as_str(), written),
                    (tenant_id.as_str(), delivery_id.as_str(), &task)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn api_keys_write_revoked_at_only_when_set() {
        let record = ApiKeyRecord {
            id: ApiKeyId::generate(),
            tenant_id: TenantId::generate(),
            name: "ci".to_owned(),
            prefix: "hk_x".to_owned(),
            key_hash: "abc".to_owned(),
            created_at: at(0),
            revoked_at: None,
        };
        let revoked = ApiKeyRecord {
            revoked_at: Some(at(5)),
            ..record.clone()
        };
        let plan = plan_of(vec![
            ReadModelWrite::ApiKey(revoked),
            ReadModelWrite::ApiKey(record),
        ]);
        let revocations: Vec<Option<String>> = plan
            .rows
            .iter()
            .map(|m| match m {
                Mutation::ApiKey { revoked_at, .. } => revoked_at.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(revocations, vec![Some(codec::encode_time(at(5))), None]);
        let ts: Vec<i64> = plan
            .rows
            .iter()
            .map(|m| match m {
                Mutation::ApiKey { ts, .. } => *ts,
                _ => unreachable!(),
            })
            .collect();
        assert!(ts[1] > ts[0], "unversioned writes take the write clock");
    }

    #[test]
    fn a_newer_recipient_reindexes_and_a_stale_one_writes_nothing() {
        let tenant_id = TenantId::generate();
        let id = RecipientId::generate();
        let v1 = recipient(&tenant_id, &id, "v1@example.com", 100);
        let mut recipients = HashMap::new();
        recipients.insert((tenant_id.clone(), id.clone()), Some(v1));
        let writes = vec![
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "v2@example.com", 200)),
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "stale@example.com", 150)),
        ];
        let plan = plan(writes, None, &mut recipients, &WriteClock::default()).unwrap();
        let t = tenant_id.as_str().to_owned();
        let r = id.as_str().to_owned();
        assert!(matches!(&plan.rows[0], Mutation::Recipient { ts, .. } if *ts == us(200)));
        assert_eq!(
            plan.rows[1..],
            [
                Mutation::UnindexContact {
                    tenant: t.clone(),
                    kind: "email",
                    contact: "v1@example.com".to_owned(),
                    recipient: r.clone(),
                    ts: us(200) - 1,
                },
                Mutation::IndexContact {
                    tenant: t.clone(),
                    kind: "email",
                    contact: "v2@example.com".to_owned(),
                    recipient: r.clone(),
                    ts: us(200),
                },
                Mutation::IndexContact {
                    tenant: t,
                    kind: "phone",
                    contact: "+49301".to_owned(),
                    recipient: r,
                    ts: us(200),
                },
            ]
        );
        let stored = recipients[&(tenant_id, id)].as_ref().unwrap();
        assert_eq!(stored.contacts.email.as_deref(), Some("v2@example.com"));
    }

    #[test]
    fn an_equal_recipient_version_replaces_and_compares_within_the_batch() {
        let tenant_id = TenantId::generate();
        let id = RecipientId::generate();
        let writes = vec![
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "a@example.com", 200)),
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "b@example.com", 200)),
        ];
        let mut recipients = HashMap::new();
        let plan = plan(writes, None, &mut recipients, &WriteClock::default()).unwrap();
        let recipient_rows = plan
            .rows
            .iter()
            .filter(|m| matches!(m, Mutation::Recipient { .. }))
            .count();
        assert_eq!(recipient_rows, 2);
        assert!(plan.rows.iter().any(|m| matches!(m,
            Mutation::UnindexContact { contact, ts, .. } if contact == "a@example.com" && *ts == us(200) - 1)));
    }

    #[test]
    fn deliveries_go_to_both_tables_with_the_same_doc() {
        let tenant_id = TenantId::generate();
        let delivery = Delivery {
            id: DeliveryId::generate(),
            tenant_id: tenant_id.clone(),
            status: DeliveryStatus::Queued,
            channel: Channel::Email,
            recipient_id: None,
            template: None,
            created_at: at(0),
            updated_at: at(0),
            attempts: 0,
            last_error: None,
            external_id: None,
        };
        let day = codec::delivery_day(&delivery);
        let plan = plan_of(vec![ReadModelWrite::Delivery(delivery.clone())]);
        match &plan.rows[..] {
            [Mutation::DeliveryByTime {
                day: d,
                doc: a,
                ts: t1,
                ..
            }, Mutation::Delivery { doc: b, ts: t2, .. }] => {
                assert_eq!((*d, a, t1), (day, b, t2));
                assert_eq!(codec::decode_doc::<Delivery>("k", a).unwrap(), delivery);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn health_and_checkpoint_come_last_and_add_up() {
        let counts = |sent| HealthCounts {
            sent,
            delivered: 0,
            failed: 1,
        };
        let mut checkpoint = Checkpoint::new();
        checkpoint.insert(("herald.events.v1".to_owned(), 3), 42);
        let minute = 1_440 * 20_000 + 5;
        let writes = vec![
            ReadModelWrite::HealthCounts {
                minute,
                counts: counts(1),
            },
            ReadModelWrite::Tenant(tenant(&TenantId::generate(), "t", 1)),
            ReadModelWrite::HealthCounts {
                minute,
                counts: counts(10),
            },
        ];
        let mut recipients = HashMap::new();
        let clock = WriteClock::default();
        let planned = plan(
            writes.clone(),
            Some(("projector", &checkpoint)),
            &mut recipients,
            &clock,
        )
        .unwrap();
        assert_eq!(planned.rows.len(), 1);
        let contribution = codec::checkpoint_contribution("projector", &checkpoint);
        match &planned.last[..] {
            [Mutation::Health {
                day,
                minute: m,
                contribution: c,
                sent: 11,
                delivered: 0,
                failed: 2,
                ..
            }, Mutation::HealthDay { day: d2, .. }, Mutation::Checkpoint {
                consumer,
                topic,
                partition: 3,
                next: 42,
                ..
            }] => {
                assert_eq!((*day, *m, c), (20_000, minute, &contribution));
                assert_eq!(*d2, 20_000);
                assert_eq!(
                    (consumer.as_str(), topic.as_str()),
                    ("projector", "herald.events.v1")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // The same batch again (a retry) writes the same health rows.
        let again = plan(
            writes,
            Some(("projector", &checkpoint)),
            &mut recipients,
            &clock,
        )
        .unwrap();
        let keys = |p: &Plan| -> Vec<(i64, String, i64)> {
            p.last
                .iter()
                .filter_map(|m| match m {
                    Mutation::Health {
                        minute,
                        contribution,
                        sent,
                        ..
                    } => Some((*minute, contribution.clone(), *sent)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(keys(&again), keys(&planned));
    }

    #[test]
    fn health_without_a_checkpoint_adds_every_time() {
        let write = || {
            vec![ReadModelWrite::HealthCounts {
                minute: 7,
                counts: HealthCounts {
                    sent: 1,
                    delivered: 1,
                    failed: 1,
                },
            }]
        };
        let first = plan_of(write());
        let second = plan_of(write());
        let contribution = |p: &Plan| match &p.last[0] {
            Mutation::Health { contribution, .. } => contribution.clone(),
            other => panic!("unexpected {other:?}"),
        };
        assert_ne!(contribution(&first), contribution(&second));
        assert_eq!(first.last.len(), 2, "one health row and its day");
    }

    #[test]
    fn minutes_across_days_list_each_day_once() {
        let writes = [1_439, 1_440, 1_441, 5]
            .into_iter()
            .map(|minute| ReadModelWrite::HealthCounts {
                minute,
                counts: HealthCounts::default(),
            })
            .collect();
        let plan = plan_of(writes);
        let days: Vec<i64> = plan
            .last
            .iter()
            .filter_map(|m| match m {
                Mutation::HealthDay { day, .. } => Some(*day),
                _ => None,
            })
            .collect();
        assert_eq!(days, vec![0, 1]);
    }

    #[test]
    fn recipient_keys_are_distinct() {
        let tenant_id = TenantId::generate();
        let id = RecipientId::generate();
        let writes = vec![
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "a@x", 1)),
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "b@x", 2)),
            ReadModelWrite::Tenant(tenant(&tenant_id, "t", 1)),
        ];
        assert_eq!(recipient_keys(&writes), vec![(tenant_id, id)]);
    }

    #[test]
    fn each_write_is_one_group() {
        let tenant_id = TenantId::generate();
        let id = RecipientId::generate();
        let planned = plan_of(vec![
            ReadModelWrite::Tenant(tenant(&tenant_id, "t", 1)),
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "a@x", 2)),
            ReadModelWrite::Recipient(recipient(&tenant_id, &id, "stale@x", 1)),
            ReadModelWrite::HealthCounts {
                minute: 1,
                counts: HealthCounts::default(),
            },
            ReadModelWrite::Tenant(tenant(&tenant_id, "t", 3)),
        ]);
        // Tenant; recipient + two index rows; (stale recipient: nothing); (health: last);
        // tenant.
        assert_eq!(planned.row_groups(), vec![0..1, 1..4, 4..5]);
        assert_eq!(planned.rows.len(), 5);
    }

    #[test]
    fn sizes_grow_with_payloads() {
        let small = Mutation::HealthDay { day: 1, ts: 1 };
        let big = Mutation::Tenant {
            tenant: "t".to_owned(),
            doc: "x".repeat(10_000),
            ts: 1,
        };
        assert!(small.size() < 100);
        assert!(big.size() > 10_000);
    }
}
