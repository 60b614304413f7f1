//! The store port: Herald's read models, designed query-first.
//!
//! Every read a role makes is one method here, answered from one table keyed the way the
//! query asks (like ScyllaDB tables: partition key, clustering key). Writes arrive as
//! [`ReadModelWrite`]s through [`Store::apply`], which is idempotent: applying the same write
//! twice, or an older version after a newer one, leaves the newest state.
//!
//! Two writers exist: the projector (every read model, with its log checkpoint in the same
//! atomic write) and the ingest role, which writes control entities (tenants, keys, templates,
//! endpoints, recipients) through right after appending them to the log, so a client can use
//! what it just created. Both writes are the same versioned upserts, so their order never
//! matters.
//!
//! Implementations: `embedded` (fjall, on local disk, the default) and, behind the `scylla`
//! feature, `scylla::ScyllaStore` (ScyllaDB or Cassandra, for the distributed deployment).
//! Both must pass the suite in `conformance`.

pub mod embedded;

#[cfg(feature = "conformance")]
pub mod conformance;

// The ScyllaDB (or Cassandra) implementation, for the distributed deployment.
#[cfg(feature = "scylla")]
pub mod scylla;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_domain::ids::{DeliveryId, EndpointId, RecipientId, TenantId};
use herald_domain::model::{
    ApiKeyRecord, AttemptCursor, AttemptRecord, Delivery, Endpoint, Recipient, Template, Tenant,
};
use serde::{Deserialize, Serialize};

/// One change to the read models.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadModelWrite {
    /// Upserted unless the stored one has a later `updated_at`.
    Tenant(Tenant),
    /// Upserted; a revocation is sticky (a later write without `revoked_at` keeps it).
    ApiKey(ApiKeyRecord),
    /// Upserted unless the stored one has a later `updated_at`.
    Template(Template),
    /// Removes the template unless it was updated after `at`.
    TemplateDeleted {
        tenant_id: TenantId,
        slug: String,
        at: DateTime<Utc>,
    },
    /// Upserted unless the stored one has a later `updated_at`.
    Endpoint(Endpoint),
    /// Removes the endpoint unless it was updated after `at` (like `TemplateDeleted`). Its
    /// attempt log is left to age out: nothing reads it without the endpoint.
    EndpointDeleted {
        tenant_id: TenantId,
        endpoint_id: EndpointId,
        at: DateTime<Utc>,
    },
    /// One row of a webhook endpoint's attempt log. A row is identified by tenant, endpoint,
    /// `attempted_at` (milliseconds), delivery id and attempt number, so writing the same
    /// attempt again (a replay of the log) stores it once; the later write replaces it.
    Attempt(AttemptRecord),
    /// The encoded task (opaque bytes) of a delivery that exhausted its attempts, kept so an
    /// operator can re-send it. Upserted: the latest write wins.
    DeadLetter {
        tenant_id: TenantId,
        delivery_id: DeliveryId,
        task: Vec<u8>,
    },
    /// Upserted unless the stored one has a later `updated_at`; indexes its contacts.
    Recipient(Recipient),
    /// Replaces the row: the projector folds changes with `Delivery::apply` before writing.
    Delivery(Delivery),
    /// Adds to the counters of one minute (health's `last_hour`).
    HealthCounts { minute: i64, counts: HealthCounts },
}

/// Deliveries that reached each outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounts {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
}

impl HealthCounts {
    pub fn add(&mut self, other: HealthCounts) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.failed += other.failed;
    }
}

/// A consumer's position in the log: next offset per `(topic, partition)`.
pub type Checkpoint = BTreeMap<(String, u32), u64>;

/// The contact kinds recipients are found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    Email,
    Phone,
    SlackWebhookUrl,
    DiscordWebhookUrl,
}

impl ContactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactKind::Email => "email",
            ContactKind::Phone => "phone",
            ContactKind::SlackWebhookUrl => "slack_webhook_url",
            ContactKind::DiscordWebhookUrl => "discord_webhook_url",
        }
    }
}

/// The contacts a recipient is found by (`Store::recipient_by_contact`), in the order
/// a send looks them up. Every store indexes exactly these.
pub fn indexed_contacts(
    contacts: &herald_domain::model::Contacts,
) -> [(ContactKind, Option<&str>); 4] {
    [
        (ContactKind::Email, contacts.email.as_deref()),
        (ContactKind::Phone, contacts.phone.as_deref()),
        (
            ContactKind::SlackWebhookUrl,
            contacts.slack_webhook_url.as_deref(),
        ),
        (
            ContactKind::DiscordWebhookUrl,
            contacts.discord_webhook_url.as_deref(),
        ),
    ]
}

/// A deduplication key: at most one request per `(tenant, scope, key)` is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimKey {
    pub tenant_id: TenantId,
    /// What is deduplicated: `event` for business event ids, `idempotency` for send keys.
    pub scope: &'static str,
    pub key: String,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller owns the key now and must `complete_claim` or `release_claim` it.
    /// `id` is the id to use: the proposed one, or the one of an abandoned earlier claim, so
    /// that a retry after a crash produces the same ids.
    Claimed { id: String },
    /// The key was accepted before.
    Completed {
        id: String,
        response: Option<String>,
    },
    /// Another request holds the key right now.
    InFlight,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store storage failed")]
    Storage(#[from] fjall::Error),
    #[error("stored row `{key}` is unreadable")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("store backend error: {0}")]
    Backend(String),
    /// A request to the database behind the store (ScyllaDB) failed.
    #[error("store database request failed while {context}")]
    Database {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Herald's read models.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies writes atomically; with a checkpoint, stores it in the same atomic write so a
    /// consumer that restarts resumes exactly after what it applied.
    async fn apply(
        &self,
        writes: Vec<ReadModelWrite>,
        checkpoint: Option<(&str, &Checkpoint)>,
    ) -> Result<()>;

    /// The checkpoint last stored by `consumer` (empty if none).
    async fn checkpoint(&self, consumer: &str) -> Result<Checkpoint>;

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>>;
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>>;
    async fn template(&self, tenant: &TenantId, slug: &str) -> Result<Option<Template>>;
    /// Every template of a tenant, by slug.
    async fn templates(&self, tenant: &TenantId) -> Result<Vec<Template>>;
    async fn endpoint(&self, tenant: &TenantId, id: &EndpointId) -> Result<Option<Endpoint>>;
    /// Every endpoint of a tenant, oldest first.
    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<Endpoint>>;
    async fn recipient(&self, tenant: &TenantId, id: &RecipientId) -> Result<Option<Recipient>>;
    async fn recipient_by_contact(
        &self,
        tenant: &TenantId,
        kind: ContactKind,
        value: &str,
    ) -> Result<Option<RecipientId>>;
    async fn delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>>;
    /// A page of an endpoint's attempt log, newest first (`attempted_at` descending, then
    /// delivery id descending, then attempt descending): at most `limit` rows, only those
    /// strictly after `after` in that order (the cursor of the last row of the previous page).
    /// Stores may expire old attempts (ScyllaDB keeps 30 days).
    async fn attempts(
        &self,
        tenant: &TenantId,
        endpoint: &EndpointId,
        after: Option<&AttemptCursor>,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>>;
    /// The dead-lettered task of a delivery, as written by `ReadModelWrite::DeadLetter`.
    /// Stores may expire old ones (ScyllaDB keeps 30 days).
    async fn dead_letter(
        &self,
        tenant: &TenantId,
        delivery: &DeliveryId,
    ) -> Result<Option<Vec<u8>>>;
    /// Sums the health counters of the minutes from `since_minute` (inclusive) on.
    async fn health_counts(&self, since_minute: i64) -> Result<HealthCounts>;

    /// Claims a deduplication key for a request proposing `proposed_id`. A pending claim
    /// older than `lease_ms` was abandoned (its owner crashed) and is taken over.
    async fn claim(
        &self,
        key: &ClaimKey,
        proposed_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<ClaimOutcome>;
    /// Marks a claim accepted, remembering the response to replay; it expires at
    /// `expires_at_ms` (`None`: never).
    async fn complete_claim(
        &self,
        key: &ClaimKey,
        response: Option<String>,
        expires_at_ms: Option<i64>,
    ) -> Result<()>;
    /// Gives a claim up after the request failed, so a retry may claim it again.
    async fn release_claim(&self, key: &ClaimKey) -> Result<()>;
}
