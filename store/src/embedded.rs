//! The embedded store: every read model in one fjall database on local disk.
//!
//! One keyspace per table, keys built from the query's partition and clustering parts joined
//! by NUL bytes (ids, slugs and contact values never contain NUL), values as JSON. One fjall
//! write batch per [`Store::apply`] gives the atomicity the projector's checkpoints need.
//! Writes that must read first (versioned upserts, counters, claims) are serialised by one
//! mutex; reads take no lock.
//!
//! Nothing here expires: the attempt log and dead letters are kept forever (ScyllaDB drops them
//! after 30 days). A single-machine deployment writes few enough of them for that to be fine;
//! deleting the data directory and letting the projector rebuild it starts afresh.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch as WriteBatch};
use herald_domain::ids::{DeliveryId, EndpointId, RecipientId, TenantId};
use herald_domain::model::{
    ApiKeyRecord, AttemptCursor, AttemptRecord, Delivery, Endpoint, Recipient, Template, Tenant,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{
    Checkpoint, ClaimKey, ClaimOutcome, ContactKind, HealthCounts, ReadModelWrite, Result, Store,
    StoreError,
};

const MIB: u64 = 1024 * 1024;

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    tenants: Keyspace,
    api_keys: Keyspace,
    templates: Keyspace,
    endpoints: Keyspace,
    recipients: Keyspace,
    recipient_contacts: Keyspace,
    deliveries: Keyspace,
    /// An endpoint's attempt log, keyed by [`attempt_key`].
    attempts: Keyspace,
    /// Dead-lettered tasks as raw bytes, keyed by tenant and delivery.
    dead_letters: Keyspace,
    health_minutes: Keyspace,
    claims: Keyspace,
    checkpoints: Keyspace,
    /// Serialises read-modify-write operations; plain reads never take it.
    write_lock: Mutex<()>,
}

impl EmbeddedStore {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        // Bounded memory: fjall's default memtable is 64 MiB per keyspace, which across a dozen
        // tables could hold hundreds of MiB before flushing.
        let db = Database::builder(dir.as_ref())
            .cache_size(32 * MIB)
            .open()?;
        let keyspace = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(4 * MIB)
            })
        };
        let inner = Inner {
            tenants: keyspace("tenants")?,
            api_keys: keyspace("api_keys_by_hash")?,
            templates: keyspace("templates")?,
            endpoints: keyspace("endpoints")?,
            recipients: keyspace("recipients")?,
            recipient_contacts: keyspace("recipients_by_contact")?,
            deliveries: keyspace("deliveries")?,
            attempts: keyspace("endpoint_attempts")?,
            dead_letters: keyspace("dead_letters")?,
            health_minutes: keyspace("health_minutes")?,
            claims: keyspace("claims")?,
            checkpoints: keyspace("checkpoints")?,
            write_lock: Mutex::new(()),
            db,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

/// Joins key parts with NUL separators.
fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

/// The prefix under which every key starting with `parts` lies.
fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut prefix = key(parts);
    prefix.push(0);
    prefix
}

/// The key of an attempt: `tenant NUL endpoint NUL`, then the attempt time as 8 big-endian
/// bytes with the sign bit flipped (so byte order is time order, before 1970 too), the delivery
/// id, NUL, and the attempt number as 4 big-endian bytes. Byte order is therefore the order of
/// `(attempted_at ms, delivery_id, attempt)` (NUL sorts below every byte of an id, as the end
/// of a shorter string does), and [`Store::attempts`] walks it backwards for newest first.
fn attempt_key(
    tenant: &TenantId,
    endpoint: &EndpointId,
    attempted_at_ms: i64,
    delivery: &DeliveryId,
    attempt: u32,
) -> Vec<u8> {
    let mut k = prefix(&[tenant.as_str(), endpoint.as_str()]);
    k.extend_from_slice(&((attempted_at_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(delivery.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

fn get<T: DeserializeOwned>(keyspace: &Keyspace, key: &[u8]) -> Result<Option<T>> {
    keyspace
        .get(key)?
        .map(|bytes| decode(key, &bytes))
        .transpose()
}

/// Every row under a key prefix, in key order.
fn scan<T: DeserializeOwned>(keyspace: &Keyspace, parts: &[&str]) -> Result<Vec<T>> {
    keyspace
        .prefix(prefix(parts))
        .map(|guard| {
            let (k, v) = guard.into_inner()?;
            decode(&k, &v)
        })
        .collect()
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("read models always serialise")
}

/// A claim as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredClaim {
    id: String,
    completed: bool,
    claimed_at_ms: i64,
    response: Option<String>,
    expires_at_ms: Option<i64>,
}

impl Inner {
    /// Adds one write to `batch`. `pending` holds rows written earlier in the same batch so
    /// that versions and counters compare against them, not the stale stored ones.
    fn stage(&self, batch: &mut Staged, write: ReadModelWrite) -> Result<()> {
        match write {
            ReadModelWrite::Tenant(tenant) => {
                let k = key(&[tenant.id.as_str()]);
                self.upsert_newer(batch, &self.tenants, k, tenant, |t: &Tenant| t.updated_at)
            }
            ReadModelWrite::ApiKey(mut record) => {
                let k = key(&[&record.key_hash]);
                if let Some(existing) = batch.read::<ApiKeyRecord>(&self.api_keys, &k)? {
                    record.revoked_at = record.revoked_at.or(existing.revoked_at);
                }
                batch.put(&self.api_keys, k, encode(&record));
                Ok(())
            }
            ReadModelWrite::Template(template) => {
                let k = key(&[template.tenant_id.as_str(), &template.slug]);
                self.upsert_newer(batch, &self.templates, k, template, |t: &Template| {
                    t.updated_at
                })
            }
            ReadModelWrite::TemplateDeleted {
                tenant_id,
                slug,
                at,
            } => {
                let k = key(&[tenant_id.as_str(), &slug]);
                if let Some(existing) = batch.read::<Template>(&self.templates, &k)? {
                    if existing.updated_at <= at {
                        batch.delete(&self.templates, k);
                    }
                }
                Ok(())
            }
            ReadModelWrite::Endpoint(endpoint) => {
                let k = key(&[endpoint.tenant_id.as_str(), endpoint.id.as_str()]);
                self.upsert_newer(batch, &self.endpoints, k, endpoint, |e: &Endpoint| {
                    e.updated_at
                })
            }
            ReadModelWrite::EndpointDeleted {
                tenant_id,
                endpoint_id,
                at,
            } => {
                let k = key(&[tenant_id.as_str(), endpoint_id.as_str()]);
                if let Some(existing) = batch.read::<Endpoint>(&self.endpoints, &k)? {
                    if existing.updated_at <= at {
                        batch.delete(&self.endpoints, k);
                    }
                }
                Ok(())
            }
            ReadModelWrite::Attempt(record) => {
                let k = attempt_key(
                    &record.tenant_id,
                    &record.endpoint_id,
                    record.attempted_at.timestamp_millis(),
                    &record.delivery_id,
                    record.attempt,
                );
                batch.put(&self.attempts, k, encode(&record));
                Ok(())
            }
            ReadModelWrite::DeadLetter {
                tenant_id,
                delivery_id,
                task,
            } => {
                let k = key(&[tenant_id.as_str(), delivery_id.as_str()]);
                batch.put(&self.dead_letters, k, task);
                Ok(())
            }
            ReadModelWrite::Recipient(recipient) => {
                let tenant = recipient.tenant_id.as_str().to_owned();
                let id = recipient.id.as_str().to_owned();
                let contacts = indexed_contacts(&recipient);
                let k = key(&[&tenant, &id]);
                let previous = batch.read::<Recipient>(&self.recipients, &k)?;
                if self.upsert_newer_applied(
                    batch,
                    &self.recipients,
                    k,
                    recipient,
                    |r: &Recipient| r.updated_at,
                )? {
                    // Unindex contacts the recipient no longer has (if still pointing to it).
                    let old = previous
                        .as_ref()
                        .map(indexed_contacts)
                        .into_iter()
                        .flatten();
                    for ((kind, old), (_, new)) in old.zip(&contacts) {
                        if let Some(old) = old.filter(|old| Some(old) != new.as_ref()) {
                            let k = key(&[&tenant, kind.as_str(), &old]);
                            if batch.read_raw(&self.recipient_contacts, &k)?.as_deref()
                                == Some(id.as_bytes())
                            {
                                batch.delete(&self.recipient_contacts, k);
                            }
                        }
                    }
                    for (kind, value) in contacts {
                        if let Some(value) = value {
                            let k = key(&[&tenant, kind.as_str(), &value]);
                            batch.put(&self.recipient_contacts, k, id.clone().into_bytes());
                        }
                    }
                }
                Ok(())
            }
            ReadModelWrite::Delivery(delivery) => {
                let k = key(&[delivery.tenant_id.as_str(), delivery.id.as_str()]);
                batch.put(&self.deliveries, k, encode(&delivery));
                Ok(())
            }
            ReadModelWrite::HealthCounts { minute, counts } => {
                let k = minute.to_be_bytes().to_vec();
                let mut total = batch
                    .read::<HealthCounts>(&self.health_minutes, &k)?
                    .unwrap_or_default();
                total.add(counts);
                batch.put(&self.health_minutes, k, encode(&total));
                Ok(())
            }
        }
    }

    fn upsert_newer<T: Serialize + DeserializeOwned>(
        &self,
        batch: &mut Staged,
        keyspace: &Keyspace,
        k: Vec<u8>,
        row: T,
        version: impl Fn(&T) -> chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        self.upsert_newer_applied(batch, keyspace, k, row, version)
            .map(|_| ())
    }

    /// Writes `row` unless the stored row is newer; returns whether it wrote.
    fn upsert_newer_applied<T: Serialize + DeserializeOwned>(
        &self,
        batch: &mut Staged,
        keyspace: &Keyspace,
        k: Vec<u8>,
        row: T,
        version: impl Fn(&T) -> chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        if let Some(existing) = batch.read::<T>(keyspace, &k)? {
            if version(&existing) > version(&row) {
                return Ok(false);
            }
        }
        batch.put(keyspace, k, encode(&row));
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave a half-applied batch (batches commit
        // atomically or not at all), so a poisoned lock is safe to reuse.
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The indexed contacts of a recipient, owned (they outlive the row moved into the batch).
fn indexed_contacts(recipient: &Recipient) -> [(ContactKind, Option<String>); 4] {
    crate::indexed_contacts(&recipient.contacts)
        .map(|(kind, value)| (kind, value.map(str::to_owned)))
}

/// A write batch plus the rows it has staged, readable before commit.
struct Staged {
    batch: WriteBatch,
    rows: std::collections::HashMap<(String, Vec<u8>), Option<Vec<u8>>>,
}

impl Staged {
    fn new(db: &Database) -> Self {
        Self {
            batch: db.batch(),
            rows: Default::default(),
        }
    }

    fn read<T: DeserializeOwned>(&self, keyspace: &Keyspace, k: &[u8]) -> Result<Option<T>> {
        match self.rows.get(&(keyspace.name().to_string(), k.to_vec())) {
            Some(Some(bytes)) => decode(k, bytes).map(Some),
            Some(None) => Ok(None),
            None => get(keyspace, k),
        }
    }

    /// Like `read`, for rows that are raw bytes rather than JSON.
    fn read_raw(&self, keyspace: &Keyspace, k: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.rows.get(&(keyspace.name().to_string(), k.to_vec())) {
            Some(staged) => Ok(staged.clone()),
            None => Ok(keyspace.get(k)?.map(|bytes| bytes.to_vec())),
        }
    }

    fn put(&mut self, keyspace: &Keyspace, k: Vec<u8>, value: Vec<u8>) {
        self.rows.insert(
            (keyspace.name().to_string(), k.clone()),
            Some(value.clone()),
        );
        self.batch.insert(keyspace, k, value);
    }

    fn delete(&mut self, keyspace: &Keyspace, k: Vec<u8>) {
        self.rows
            .insert((keyspace.name().to_string(), k.clone()), None);
        self.batch.remove(keyspace, k);
    }
}

fn checkpoint_prefix(consumer: &str) -> Vec<u8> {
    prefix(&[consumer])
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn apply(
        &self,
        writes: Vec<ReadModelWrite>,
        checkpoint: Option<(&str, &Checkpoint)>,
    ) -> Result<()> {
        let inner = &self.inner;
        let _guard = inner.lock();
        let mut staged = Staged::new(&inner.db);
        for write in writes {
            inner.stage(&mut staged, write)?;
        }
        if let Some((consumer, positions)) = checkpoint {
            for ((topic, partition), next) in positions {
                let k = key(&[consumer, topic, &partition.to_string()]);
                staged.put(&inner.checkpoints, k, next.to_be_bytes().to_vec());
            }
        }
        staged.batch.commit()?;
        Ok(())
    }

    async fn checkpoint(&self, consumer: &str) -> Result<Checkpoint> {
        let mut checkpoint = Checkpoint::new();
        let prefix = checkpoint_prefix(consumer);
        for guard in self.inner.checkpoints.prefix(&prefix) {
            let (k, v) = guard.into_inner()?;
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let (topic, partition) = rest.rsplit_once('\0').unwrap_or((&rest, "0"));
            let next = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
            checkpoint.insert((topic.to_owned(), partition.parse().unwrap_or(0)), next);
        }
        Ok(checkpoint)
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        get(&self.inner.tenants, &key(&[id.as_str()]))
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        get(&self.inner.api_keys, &key(&[key_hash]))
    }

    async fn template(&self, tenant: &TenantId, slug: &str) -> Result<Option<Template>> {
        get(&self.inner.templates, &key(&[tenant.as_str(), slug]))
    }

    async fn endpoint(&self, tenant: &TenantId, id: &EndpointId) -> Result<Option<Endpoint>> {
        get(&self.inner.endpoints, &key(&[tenant.as_str(), id.as_str()]))
    }

    async fn templates(&self, tenant: &TenantId) -> Result<Vec<Template>> {
        // Keys are `tenant/slug`: slug order.
        scan(&self.inner.templates, &[tenant.as_str()])
    }

    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<Endpoint>> {
        scan(&self.inner.endpoints, &[tenant.as_str()])
    }

    async fn recipient(&self, tenant: &TenantId, id: &RecipientId) -> Result<Option<Recipient>> {
        get(
            &self.inner.recipients,
            &key(&[tenant.as_str(), id.as_str()]),
        )
    }

    async fn recipient_by_contact(
        &self,
        tenant: &TenantId,
        kind: ContactKind,
        value: &str,
    ) -> Result<Option<RecipientId>> {
        let found =
            self.inner
                .recipient_contacts
                .get(key(&[tenant.as_str(), kind.as_str(), value]))?;
        Ok(found.map(|id| RecipientId::from_trusted(String::from_utf8_lossy(&id).into_owned())))
    }

    async fn delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>> {
        get(
            &self.inner.deliveries,
            &key(&[tenant.as_str(), id.as_str()]),
        )
    }

    async fn attempts(
        &self,
        tenant: &TenantId,
        endpoint: &EndpointId,
        after: Option<&AttemptCursor>,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>> {
        let start = prefix(&[tenant.as_str(), endpoint.as_str()]);
        let rows = match after {
            // Strictly before the cursor's own key, walking back: strictly after it, newest
            // first.
            Some(cursor) => {
                let end = attempt_key(
                    tenant,
                    endpoint,
                    cursor.attempted_at_ms,
                    &cursor.delivery_id,
                    cursor.attempt,
                );
                self.inner.attempts.range(start..end)
            }
            None => self.inner.attempts.prefix(start),
        };
        let mut attempts = Vec::new();
        for guard in rows.rev().take(limit) {
            let (k, v) = guard.into_inner()?;
            attempts.push(decode(&k, &v)?);
        }
        Ok(attempts)
    }

    async fn dead_letter(
        &self,
        tenant: &TenantId,
        delivery: &DeliveryId,
    ) -> Result<Option<Vec<u8>>> {
        let found = self
            .inner
            .dead_letters
            .get(key(&[tenant.as_str(), delivery.as_str()]))?;
        Ok(found.map(|task| task.to_vec()))
    }

    async fn health_counts(&self, since_minute: i64) -> Result<HealthCounts> {
        let mut total = HealthCounts::default();
        for guard in self
            .inner
            .health_minutes
            .range(since_minute.to_be_bytes()..)
        {
            let (k, v) = guard.into_inner()?;
            total.add(decode(&k, &v)?);
        }
        Ok(total)
    }

    async fn claim(
        &self,
        claim: &ClaimKey,
        proposed_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<ClaimOutcome> {
        let inner = &self.inner;
        let k = key(&[claim.tenant_id.as_str(), claim.scope, &claim.key]);
        let _guard = inner.lock();
        let mut id = proposed_id.to_owned();
        if let Some(existing) = get::<StoredClaim>(&inner.claims, &k)? {
            let expired = existing.expires_at_ms.is_some_and(|at| at <= now_ms);
            if existing.completed && !expired {
                return Ok(ClaimOutcome::Completed {
                    id: existing.id,
                    response: existing.response,
                });
            }
            if !existing.completed && now_ms - existing.claimed_at_ms < lease_ms {
                return Ok(ClaimOutcome::InFlight);
            }
            if !existing.completed {
                // Taken over from a request that never finished: keep its id so that, if it
                // did reach the log, the retry yields the very same ids.
                id = existing.id;
            }
        }
        let stored = StoredClaim {
            id: id.clone(),
            completed: false,
            claimed_at_ms: now_ms,
            response: None,
            expires_at_ms: None,
        };
        inner.claims.insert(k, encode(&stored))?;
        Ok(ClaimOutcome::Claimed { id })
    }

    async fn complete_claim(
        &self,
        claim: &ClaimKey,
        response: Option<String>,
        expires_at_ms: Option<i64>,
    ) -> Result<()> {
        let inner = &self.inner;
        let k = key(&[claim.tenant_id.as_str(), claim.scope, &claim.key]);
        let _guard = inner.lock();
        let Some(mut stored) = get::<StoredClaim>(&inner.claims, &k)? else {
            return Err(StoreError::Backend(format!(
                "no claim for `{}` to complete",
                claim.key
            )));
        };
        stored.completed = true;
        stored.response = response;
        stored.expires_at_ms = expires_at_ms;
        inner.claims.insert(k, encode(&stored))?;
        // The appends this claim deduplicates were fsynced; the claim must survive a power
        // loss as well, or a resend would be accepted again under a new id.
        inner.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    async fn release_claim(&self, claim: &ClaimKey) -> Result<()> {
        let inner = &self.inner;
        let k = key(&[claim.tenant_id.as_str(), claim.scope, &claim.key]);
        let _guard = inner.lock();
        if let Some(stored) = get::<StoredClaim>(&inner.claims, &k)? {
            if !stored.completed {
                inner.claims.remove(k)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows written by a Herald from before tenants had a failure threshold and endpoints a
    /// rotated secret, a retry schedule and a rate limit still read: the fields take their
    /// defaults (`None`).
    #[tokio::test]
    async fn rows_written_before_optional_fields_existed_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let tenant_id = TenantId::from_trusted("tnt_01HZZZZZZZZZZZZZZZZZZZZZZZ");
        let endpoint_id = EndpointId::from_trusted("ep_01HZZZZZZZZZZZZZZZZZZZZZZZ");
        let tenant = r#"{"id":"tnt_01HZZZZZZZZZZZZZZZZZZZZZZZ","name":"Acme","plan":{"monthly_quota":null,"rate_limit_per_minute":60},"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.124Z"}"#;
        let endpoint = r#"{"id":"ep_01HZZZZZZZZZZZZZZZZZZZZZZZ","tenant_id":"tnt_01HZZZZZZZZZZZZZZZZZZZZZZZ","url":"https://example.com/hook","description":null,"events":["order.*"],"signature_scheme":"standard","secret":"whsec_c2VjcmV0","is_active":true,"disabled_reason":null,"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.123Z"}"#;
        let inner = &store.inner;
        inner
            .tenants
            .insert(key(&[tenant_id.as_str()]), tenant)
            .unwrap();
        inner
            .endpoints
            .insert(key(&[tenant_id.as_str(), endpoint_id.as_str()]), endpoint)
            .unwrap();

        let tenant = store.tenant(&tenant_id).await.unwrap().unwrap();
        assert_eq!(tenant.endpoint_failure_threshold, None);
        assert_eq!(tenant.name, "Acme");
        let endpoint = store
            .endpoint(&tenant_id, &endpoint_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                &endpoint.previous_secret,
                endpoint.previous_secret_expires_at,
                &endpoint.retry_schedule,
                endpoint.rate_limit_per_second
            ),
            (&None, None, &None, None)
        );
        assert_eq!(endpoint.events, vec!["order.*".to_owned()]);
        assert_eq!(store.endpoints(&tenant_id).await.unwrap(), vec![endpoint]);
    }

    #[test]
    fn attempt_keys_sort_like_time_then_delivery_then_attempt() {
        let tenant = TenantId::from_trusted("tnt_a");
        let endpoint = EndpointId::from_trusted("ep_a");
        let k = |ms: i64, delivery: &str, attempt: u32| {
            attempt_key(
                &tenant,
                &endpoint,
                ms,
                &DeliveryId::from_trusted(delivery),
                attempt,
            )
        };
        let ascending = [
            k(-1, "dlv_z", u32::MAX),
            k(0, "dlv_a", 2),
            k(0, "dlv_a", 256),
            k(0, "dlv_ab", 1),
            k(0, "dlv_b", 1),
            k(1, "dlv_a", 1),
            k(i64::MAX, "dlv_a", 0),
        ];
        for pair in ascending.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{:?} must sort before {:?}",
                pair[0],
                pair[1]
            );
        }
        let start = prefix(&[tenant.as_str(), endpoint.as_str()]);
        assert!(ascending.iter().all(|key| key.starts_with(&start)));
    }
}
