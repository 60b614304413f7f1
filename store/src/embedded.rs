//! The embedded store: every read model in one fjall database on local disk.
//!
//! One keyspace per table, keys built from the query's partition and clustering parts joined
//! by NUL bytes (ids, slugs and contact values never contain NUL), values as JSON. One fjall
//! write batch per [`Store::apply`] gives the atomicity the projector's checkpoints need.
//! Writes that must read first (versioned upserts, counters, claims) are serialised by one
//! mutex; reads take no lock.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch as WriteBatch};
use herald_domain::ids::{DeliveryId, EndpointId, RecipientId, TenantId};
use herald_domain::model::{ApiKeyRecord, Delivery, Endpoint, Recipient, Template, Tenant};
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
    health_minutes: Keyspace,
    claims: Keyspace,
    checkpoints: Keyspace,
    /// Serialises read-modify-write operations; plain reads never take it.
    write_lock: Mutex<()>,
}

impl EmbeddedStore {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        // Bounded memory: fjall's default memtable is 64 MiB per keyspace, which across ten
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

fn get<T: DeserializeOwned>(keyspace: &Keyspace, key: &[u8]) -> Result<Option<T>> {
    keyspace
        .get(key)?
        .map(|bytes| decode(key, &bytes))
        .transpose()
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

    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<Endpoint>> {
        let mut endpoints = Vec::new();
        for guard in self.inner.endpoints.prefix(prefix(&[tenant.as_str()])) {
            let (k, v) = guard.into_inner()?;
            endpoints.push(decode(&k, &v)?);
        }
        Ok(endpoints)
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
