//! The ScyllaDB store: Herald's read models on ScyllaDB (or Apache Cassandra 4+), through the
//! `scylla` driver. Enabled by the `scylla` feature.
//!
//! **Status: this implementation has not been run against a live ScyllaDB in this
//! repository's CI** (no node can run on the build machine). It compiles, its pure parts are
//! unit-tested, and `tests/scylla.rs` runs the whole store conformance suite against a node
//! when `HERALD_TEST_SCYLLA=host:port` is set. Run that before relying on it.
//!
//! # Tables
//!
//! The schema is `schemas/cql/herald.cql`, embedded, applied at [`ScyllaStore::connect`]
//! (every statement `CREATE ... IF NOT EXISTS`), and documented table by table there. It is
//! query-first: one table per read, keyed the way the read asks, so every read is one
//! partition:
//!
//! | table | partition key | clustering | answers |
//! |---|---|---|---|
//! | `tenants` | tenant_id | | [`Store::tenant`] |
//! | `api_keys_by_hash` | key_hash | | [`Store::api_key_by_hash`] |
//! | `templates` | tenant_id | slug | [`Store::template`] |
//! | `endpoints` | tenant_id | endpoint_id ASC | [`Store::endpoint`], [`Store::endpoints`] |
//! | `recipients` | (tenant_id, recipient_id) | | [`Store::recipient`] |
//! | `recipients_by_contact` | (tenant_id, kind, contact) | recipient_id | [`Store::recipient_by_contact`] |
//! | `deliveries` | (tenant_id, delivery_id) | | [`Store::delivery`] |
//! | `deliveries_by_time` | (tenant_id, day) | delivery_id DESC | the delivery list to come |
//! | `endpoint_attempts` | (tenant_id, endpoint_id) | attempted_at DESC, delivery_id DESC, attempt DESC | [`Store::attempts`] |
//! | `dead_letters` | (tenant_id, delivery_id) | | [`Store::dead_letter`] |
//! | `health_minutes` | day | minute, contribution | [`Store::health_counts`] |
//! | `health_days` | scope (one partition) | day | which `health_minutes` days exist |
//! | `claims` | (tenant_id, scope, claim_key) | | [`Store::claim`] and friends |
//! | `checkpoints` | consumer | topic, log_partition | [`Store::checkpoint`] |
//!
//! Entities are one JSON `doc` text column each, not typed columns: versions are resolved per
//! cell (below), and one cell keeps a version whole where typed columns would be merged column
//! by column when two writes tie. What a rule or query needs on its own is typed: keys,
//! `revoked_at`, health numbers, claim state, offsets.
//!
//! # Versioned upserts: write timestamps, no read-before-write
//!
//! Tenants, templates, endpoints and recipients are written `USING TIMESTAMP` their
//! `updated_at` in microseconds, so ScyllaDB keeps the newest version whatever order writes
//! arrive in: a stale write lands "in the past" and changes nothing, without a read. The store
//! contract also says an *equal* `updated_at` replaces the row (a retried write is the latest
//! word). On a timestamp tie ScyllaDB and Cassandra keep the greater cell value, so every `doc`
//! starts with a write stamp (16 hex digits of a process-wide, strictly increasing microsecond
//! clock): the later write has the greater value and wins. Between processes that tie is
//! decided by their clocks, which only matters for two different contents claiming the very
//! same version.
//!
//! `TemplateDeleted { at }` and `EndpointDeleted { at }` are `DELETE ... USING TIMESTAMP at`:
//! they shadow every version up to
//! and including `at` (a tombstone wins a tie), including ones that arrive later, and a version
//! updated after `at` survives. Tombstones are purged after the table's `gc_grace_seconds`
//! (ten days by default); a version older than the delete arriving later than that would come
//! back.
//!
//! The attempt log and dead letters are not versioned either: a row is identified by its key
//! (an attempt by tenant, endpoint, time, delivery and attempt number), so writing it again
//! overwrites it, with the store's write clock. Both tables expire rows after 30 days
//! (`default_time_to_live`); [`Store::attempts`] pages with a clustering-key range,
//! `(attempted_at, delivery_id, attempt) < (cursor)`, so a page costs its rows, however deep.
//!
//! API keys have no version: they are written with the store's write clock. A revocation is
//! sticky because `revoked_at` is its own column, written only when set (`MaybeUnset`), never
//! overwritten with null.
//!
//! Recipients are the one versioned write that reads first (one read per distinct recipient
//! per [`Store::apply`], in parallel): its contact index (`recipients_by_contact`) must stop
//! finding the recipient by contacts it no longer has, and a stale write must index nothing.
//! A write that loses to the stored (or earlier in the batch) version is skipped entirely;
//! one that wins rewrites the row, deletes the index rows of the contacts it dropped (one
//! microsecond below its version, so it never shadows a re-insert by an equal version) and
//! writes the ones it has, all timestamped by version, so two racing writers still converge.
//! Index rows are clustered by recipient id (a recipient only touches its own), and a lookup
//! confirms each hit against the recipient row, so a leftover index row can never return a
//! recipient that lacks the contact.
//!
//! # `apply`: logged batches, checkpoint last
//!
//! One `apply` becomes one LOGGED batch holding every row and the checkpoint rows (same
//! keyspace): the batch log makes it all-or-nothing. Batches are kept under 32 KiB of values
//! (`codec::BATCH_BYTES`; Cassandra rejects batches over 50 KiB by default). A bigger `apply`
//! writes its rows in several logged batches, in parallel (never splitting the rows of one
//! write, such as a recipient and its contact index), and only then one final batch with the
//! health rows and the checkpoint. Every row write is idempotent (versioned, or replacing
//! with the same content), so a crash between the two steps leaves rows without the
//! checkpoint, and the restarted projector re-applies the same events to the same end state:
//! a restarted consumer cannot tell it from all-or-nothing.
//!
//! # Health counters: idempotent rows, summed on read
//!
//! ScyllaDB `counter` columns are not idempotent (a retried increment counts twice) and cannot
//! share a batch with other writes (so not with the checkpoint). Instead every `apply` writes
//! one plain row per minute it touches, `(day, minute, contribution) -> sent, delivered,
//! failed`, with the minute's counts of that apply already added up (the same minute twice in
//! one batch is one row carrying both). `contribution` names the write: with a checkpoint it
//! is the consumer plus a stable hash of the checkpoint, which a consumer never repeats for
//! different events, so a retried or replayed batch overwrites its own rows with the same
//! numbers; without a checkpoint it is a fresh ULID (each such `apply` adds, as in the
//! embedded store, since the caller gave nothing to recognise a retry by). `health_counts`
//! sums the rows from `since` on, reading only the day partitions listed in `health_days`. The
//! price is one row per minute per projector batch rather than one per minute.
//!
//! # Claims: lightweight transactions, only there
//!
//! Deduplication claims are the one place that needs compare-and-set, and the only place that
//! uses lightweight transactions (Paxos); everything else is plain writes. A claim is `INSERT
//! ... IF NOT EXISTS`; the existing row it returns decides: in flight, completed (replayed), an
//! expired lease taken over keeping the original id (`UPDATE ... IF id = ? AND completed =
//! false AND claimed_at_ms = ?`), or an expired completion replaced. Completing is a
//! single-partition conditional batch that rewrites every cell with the TTL of the expiry and
//! rewrites the row marker with the same TTL, so a completed claim disappears entirely when it
//! expires; the expiry is also checked against the caller's clock. Releasing is `DELETE ... IF
//! completed = false`. On ScyllaDB 6+ the keyspace is created with tablets disabled when the
//! server accepts that, because those versions do not run LWTs on tablets.
//!
//! Reads use prepared statements and pages (`execute_iter`) wherever they list rows.
//!
//! # Schema changes at start
//!
//! Every role applies the schema when it connects. ScyllaDB 5.4+ (Raft-managed schema) handles
//! concurrent `CREATE ... IF NOT EXISTS` from several processes; on Cassandra, or older
//! ScyllaDB, start one role first (or apply `herald.cql` by hand) so that two nodes never
//! create the same table at once.

mod codec;
mod plan;
mod schema;

use std::collections::HashMap;
use std::sync::Arc;

use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use ::scylla::frame::types::Consistency;
use ::scylla::response::query_result::QueryResult;
use ::scylla::serialize::row::SerializeRow;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::value::{CqlTimestamp, CqlValue, MaybeUnset, Row};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use herald_domain::ids::{DeliveryId, EndpointId, RecipientId, TenantId};
use herald_domain::model::{
    ApiKeyRecord, AttemptCursor, AttemptRecord, Delivery, Endpoint, Recipient, Template, Tenant,
};
use serde::de::DeserializeOwned;

use self::codec::{ClaimStep, StoredClaim, WriteClock};
use self::plan::{Mutation, RecipientKey};
use crate::{
    Checkpoint, ClaimKey, ClaimOutcome, ContactKind, HealthCounts, ReadModelWrite, Result, Store,
    StoreError,
};

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaOptions {
    /// Contact points, `host:port` (the driver discovers the rest of the cluster).
    pub nodes: Vec<String>,
    /// Keyspace of every table; created if missing. A plain identifier (letters, digits, `_`).
    pub keyspace: String,
    /// Replication factor used when the keyspace is created (SimpleStrategy). An existing
    /// keyspace is left as it is.
    pub replication_factor: u32,
}

/// Herald's read models on ScyllaDB. Cheap to clone: clones share one driver session.
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    statements: Statements,
}

/// One write clock for the process, shared by every store it opens (a reconnected store keeps
/// stamping after the one before it).
static CLOCK: WriteClock = WriteClock::new();

/// Attempts of a claim operation that lost a compare-and-set to a concurrent one.
const CLAIM_ATTEMPTS: usize = 16;
/// Distinct recipients read, and row batches written, at once within one `apply`.
const PARALLELISM: usize = 8;

fn db<E>(context: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| StoreError::Database {
        context,
        source: Box::new(source),
    }
}

impl ScyllaStore {
    /// Connects, applies the schema (`schemas/cql/herald.cql`) and prepares every statement.
    pub async fn connect(options: ScyllaOptions) -> Result<ScyllaStore> {
        schema::validate_keyspace(&options.keyspace)?;
        if options.nodes.is_empty() {
            return Err(StoreError::Backend(
                "no scylladb nodes configured to connect to".to_owned(),
            ));
        }
        if options.replication_factor == 0 {
            return Err(StoreError::Backend(
                "the scylladb replication factor must be at least 1".to_owned(),
            ));
        }
        let session = SessionBuilder::new()
            .known_nodes(&options.nodes)
            .build()
            .await
            .map_err(db("connecting to scylladb"))?;
        apply_schema(&session, &options.keyspace, options.replication_factor).await?;
        let statements = Statements::prepare(&session, &options.keyspace).await?;
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                statements,
            }),
        })
    }
}

async fn apply_schema(session: &Session, keyspace: &str, replication_factor: u32) -> Result<()> {
    for statement in schema::statements(keyspace, replication_factor) {
        if let Some(without_tablets) = schema::with_tablets_disabled(&statement) {
            match session.query_unpaged(without_tablets, ()).await {
                Ok(_) => continue,
                Err(err) if rejected_as_invalid(&err) => {
                    tracing::debug!(error = %err, "the server does not take `tablets` options; creating the keyspace without");
                }
                Err(err) => return Err(db("creating the keyspace")(err)),
            }
        }
        session
            .query_unpaged(statement, ())
            .await
            .map_err(db("applying the schema"))?;
    }
    Ok(())
}

/// Whether the server refused a statement as invalid (as opposed to failing to run it).
fn rejected_as_invalid(err: &ExecutionError) -> bool {
    matches!(
        err,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::SyntaxError | DbError::Invalid | DbError::ConfigError,
            _
        ))
    )
}

// ---------------------------------------------------------------------------------------
// Statements

/// Every statement the store runs, prepared once at connect.
struct Statements {
    insert_tenant: PreparedStatement,
    select_tenant: PreparedStatement,
    insert_api_key: PreparedStatement,
    select_api_key: PreparedStatement,
    insert_template: PreparedStatement,
    delete_template: PreparedStatement,
    select_template: PreparedStatement,
    select_templates: PreparedStatement,
    insert_endpoint: PreparedStatement,
    delete_endpoint: PreparedStatement,
    select_endpoint: PreparedStatement,
    select_endpoints: PreparedStatement,
    insert_recipient: PreparedStatement,
    select_recipient: PreparedStatement,
    insert_contact: PreparedStatement,
    delete_contact: PreparedStatement,
    select_contact: PreparedStatement,
    insert_delivery: PreparedStatement,
    insert_delivery_by_time: PreparedStatement,
    select_delivery: PreparedStatement,
    insert_attempt: PreparedStatement,
    select_attempts: PreparedStatement,
    select_attempts_after: PreparedStatement,
    insert_dead_letter: PreparedStatement,
    select_dead_letter: PreparedStatement,
    insert_health: PreparedStatement,
    insert_health_day: PreparedStatement,
    select_health_days: PreparedStatement,
    select_health_minutes: PreparedStatement,
    insert_checkpoint: PreparedStatement,
    select_checkpoint: PreparedStatement,
    insert_claim: PreparedStatement,
    select_claim: PreparedStatement,
    take_over_claim: PreparedStatement,
    replace_claim: PreparedStatement,
    complete_claim: PreparedStatement,
    expire_claim_row: PreparedStatement,
    release_claim: PreparedStatement,
}

/// How a statement is run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain read or write: safe for the driver to retry.
    Idempotent,
    /// A lightweight transaction: never retried blindly.
    Conditional,
    /// A read of claims, linearizable with their transactions.
    SerialRead,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Statements> {
        use Kind::*;
        let prepare = |cql: String, kind: Kind| async move {
            let mut statement = session
                .prepare(cql)
                .await
                .map_err(db("preparing a statement"))?;
            match kind {
                Idempotent => statement.set_is_idempotent(true),
                Conditional => statement.set_is_idempotent(false),
                SerialRead => {
                    statement.set_is_idempotent(true);
                    statement.set_consistency(Consistency::LocalSerial);
                }
            }
            Ok::<_, StoreError>(statement)
        };
        let claims_key = "tenant_id = ? AND scope = ? AND claim_key = ?";
        Ok(Statements {
            insert_tenant: prepare(
                format!("INSERT INTO {ks}.tenants (tenant_id, doc) VALUES (?, ?) USING TIMESTAMP ?"),
                Idempotent,
            )
            .await?,
            select_tenant: prepare(
                format!("SELECT doc FROM {ks}.tenants WHERE tenant_id = ?"),
                Idempotent,
            )
            .await?,
            insert_api_key: prepare(
                format!(
                    "INSERT INTO {ks}.api_keys_by_hash (key_hash, doc, revoked_at) VALUES (?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_api_key: prepare(
                format!("SELECT doc, revoked_at FROM {ks}.api_keys_by_hash WHERE key_hash = ?"),
                Idempotent,
            )
            .await?,
            insert_template: prepare(
                format!(
                    "INSERT INTO {ks}.templates (tenant_id, slug, doc) VALUES (?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            delete_template: prepare(
                format!(
                    "DELETE FROM {ks}.templates USING TIMESTAMP ? WHERE tenant_id = ? AND slug = ?"
                ),
                Idempotent,
            )
            .await?,
            select_template: prepare(
                format!("SELECT doc FROM {ks}.templates WHERE tenant_id = ? AND slug = ?"),
                Idempotent,
            )
            .await?,
            // One partition per tenant, clustered by slug: the list comes out in slug order.
            select_templates: prepare(
                format!("SELECT doc FROM {ks}.templates WHERE tenant_id = ?"),
                Idempotent,
            )
            .await?,
            insert_endpoint: prepare(
                format!(
                    "INSERT INTO {ks}.endpoints (tenant_id, endpoint_id, doc) VALUES (?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            delete_endpoint: prepare(
                format!(
                    "DELETE FROM {ks}.endpoints USING TIMESTAMP ? WHERE tenant_id = ? AND endpoint_id = ?"
                ),
                Idempotent,
            )
            .await?,
            select_endpoint: prepare(
                format!("SELECT doc FROM {ks}.endpoints WHERE tenant_id = ? AND endpoint_id = ?"),
                Idempotent,
            )
            .await?,
            select_endpoints: prepare(
                format!("SELECT doc FROM {ks}.endpoints WHERE tenant_id = ?"),
                Idempotent,
            )
            .await?,
            insert_recipient: prepare(
                format!(
                    "INSERT INTO {ks}.recipients (tenant_id, recipient_id, doc) VALUES (?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_recipient: prepare(
                format!(
                    "SELECT doc FROM {ks}.recipients WHERE tenant_id = ? AND recipient_id = ?"
                ),
                Idempotent,
            )
            .await?,
            insert_contact: prepare(
                format!(
                    "INSERT INTO {ks}.recipients_by_contact (tenant_id, kind, contact, recipient_id) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            delete_contact: prepare(
                format!(
                    "DELETE FROM {ks}.recipients_by_contact USING TIMESTAMP ? WHERE tenant_id = ? AND kind = ? AND contact = ? AND recipient_id = ?"
                ),
                Idempotent,
            )
            .await?,
            select_contact: prepare(
                format!(
                    "SELECT recipient_id FROM {ks}.recipients_by_contact WHERE tenant_id = ? AND kind = ? AND contact = ?"
                ),
                Idempotent,
            )
            .await?,
            insert_delivery: prepare(
                format!(
                    "INSERT INTO {ks}.deliveries (tenant_id, delivery_id, doc) VALUES (?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            insert_delivery_by_time: prepare(
                format!(
                    "INSERT INTO {ks}.deliveries_by_time (tenant_id, day, delivery_id, doc) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_delivery: prepare(
                format!(
                    "SELECT doc FROM {ks}.deliveries WHERE tenant_id = ? AND delivery_id = ?"
                ),
                Idempotent,
            )
            .await?,
            insert_attempt: prepare(
                format!(
                    "INSERT INTO {ks}.endpoint_attempts (tenant_id, endpoint_id, attempted_at, delivery_id, attempt, doc) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_attempts: prepare(
                format!(
                    "SELECT doc FROM {ks}.endpoint_attempts WHERE tenant_id = ? AND endpoint_id = ? LIMIT ?"
                ),
                Idempotent,
            )
            .await?,
            select_attempts_after: prepare(
                format!(
                    "SELECT doc FROM {ks}.endpoint_attempts WHERE tenant_id = ? AND endpoint_id = ? AND (attempted_at, delivery_id, attempt) < (?, ?, ?) LIMIT ?"
                ),
                Idempotent,
            )
            .await?,
            insert_dead_letter: prepare(
                format!(
                    "INSERT INTO {ks}.dead_letters (tenant_id, delivery_id, task) VALUES (?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_dead_letter: prepare(
                format!(
                    "SELECT task FROM {ks}.dead_letters WHERE tenant_id = ? AND delivery_id = ?"
                ),
                Idempotent,
            )
            .await?,
            insert_health: prepare(
                format!(
                    "INSERT INTO {ks}.health_minutes (day, minute, contribution, sent, delivered, failed) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            insert_health_day: prepare(
                format!(
                    "INSERT INTO {ks}.health_days (scope, day) VALUES (?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_health_days: prepare(
                format!("SELECT day FROM {ks}.health_days WHERE scope = ? AND day >= ?"),
                Idempotent,
            )
            .await?,
            select_health_minutes: prepare(
                format!(
                    "SELECT sent, delivered, failed FROM {ks}.health_minutes WHERE day = ? AND minute >= ?"
                ),
                Idempotent,
            )
            .await?,
            insert_checkpoint: prepare(
                format!(
                    "INSERT INTO {ks}.checkpoints (consumer, topic, log_partition, next_offset) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                Idempotent,
            )
            .await?,
            select_checkpoint: prepare(
                format!(
                    "SELECT topic, log_partition, next_offset FROM {ks}.checkpoints WHERE consumer = ?"
                ),
                Idempotent,
            )
            .await?,
            insert_claim: prepare(
                format!(
                    "INSERT INTO {ks}.claims (tenant_id, scope, claim_key, id, completed, claimed_at_ms) VALUES (?, ?, ?, ?, false, ?) IF NOT EXISTS"
                ),
                Conditional,
            )
            .await?,
            select_claim: prepare(
                format!(
                    "SELECT id, completed, claimed_at_ms, response, expires_at_ms FROM {ks}.claims WHERE {claims_key}"
                ),
                SerialRead,
            )
            .await?,
            take_over_claim: prepare(
                format!(
                    "UPDATE {ks}.claims SET claimed_at_ms = ? WHERE {claims_key} IF id = ? AND completed = false AND claimed_at_ms = ?"
                ),
                Conditional,
            )
            .await?,
            replace_claim: prepare(
                format!(
                    "UPDATE {ks}.claims SET id = ?, completed = false, claimed_at_ms = ?, response = null, expires_at_ms = null WHERE {claims_key} IF id = ? AND completed = true AND expires_at_ms = ?"
                ),
                Conditional,
            )
            .await?,
            complete_claim: prepare(
                format!(
                    "UPDATE {ks}.claims USING TTL ? SET id = ?, completed = true, claimed_at_ms = ?, response = ?, expires_at_ms = ? WHERE {claims_key} IF id = ? AND completed = ? AND claimed_at_ms = ?"
                ),
                Conditional,
            )
            .await?,
            expire_claim_row: prepare(
                format!(
                    "INSERT INTO {ks}.claims (tenant_id, scope, claim_key) VALUES (?, ?, ?) USING TTL ?"
                ),
                Conditional,
            )
            .await?,
            release_claim: prepare(
                format!("DELETE FROM {ks}.claims WHERE {claims_key} IF completed = false"),
                Conditional,
            )
            .await?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Binding planned writes

type Values = Box<dyn SerializeRow + Send + Sync>;

/// One statement of a batch, with its values and a rough size.
struct Op<'a> {
    statement: &'a PreparedStatement,
    values: Values,
    size: usize,
}

impl Statements {
    /// The prepared statement and values of a planned write.
    fn bind(&self, mutation: Mutation) -> Op<'_> {
        let size = mutation.size();
        let (statement, values): (&PreparedStatement, Values) = match mutation {
            Mutation::Tenant { tenant, doc, ts } => {
                (&self.insert_tenant, Box::new((tenant, doc, ts)))
            }
            Mutation::ApiKey {
                key_hash,
                doc,
                revoked_at,
                ts,
            } => {
                let revoked_at = revoked_at.map_or(MaybeUnset::Unset, MaybeUnset::Set);
                (
                    &self.insert_api_key,
                    Box::new((key_hash, doc, revoked_at, ts)),
                )
            }
            Mutation::Template {
                tenant,
                slug,
                doc,
                ts,
            } => (&self.insert_template, Box::new((tenant, slug, doc, ts))),
            Mutation::DeleteTemplate { tenant, slug, ts } => {
                (&self.delete_template, Box::new((ts, tenant, slug)))
            }
            Mutation::Endpoint {
                tenant,
                endpoint,
                doc,
                ts,
            } => (&self.insert_endpoint, Box::new((tenant, endpoint, doc, ts))),
            Mutation::DeleteEndpoint {
                tenant,
                endpoint,
                ts,
            } => (&self.delete_endpoint, Box::new((ts, tenant, endpoint))),
            Mutation::Attempt {
                tenant,
                endpoint,
                attempted_at,
                delivery,
                attempt,
                doc,
                ts,
            } => (
                &self.insert_attempt,
                Box::new((
                    tenant,
                    endpoint,
                    CqlTimestamp(attempted_at),
                    delivery,
                    attempt,
                    doc,
                    ts,
                )),
            ),
            Mutation::DeadLetter {
                tenant,
                delivery,
                task,
                ts,
            } => (
                &self.insert_dead_letter,
                Box::new((tenant, delivery, task, ts)),
            ),
            Mutation::Recipient {
                tenant,
                recipient,
                doc,
                ts,
            } => (
                &self.insert_recipient,
                Box::new((tenant, recipient, doc, ts)),
            ),
            Mutation::IndexContact {
                tenant,
                kind,
                contact,
                recipient,
                ts,
            } => (
                &self.insert_contact,
                Box::new((tenant, kind, contact, recipient, ts)),
            ),
            Mutation::UnindexContact {
                tenant,
                kind,
                contact,
                recipient,
                ts,
            } => (
                &self.delete_contact,
                Box::new((ts, tenant, kind, contact, recipient)),
            ),
            Mutation::Delivery {
                tenant,
                delivery,
                doc,
                ts,
            } => (&self.insert_delivery, Box::new((tenant, delivery, doc, ts))),
            Mutation::DeliveryByTime {
                tenant,
                day,
                delivery,
                doc,
                ts,
            } => (
                &self.insert_delivery_by_time,
                Box::new((tenant, day, delivery, doc, ts)),
            ),
            Mutation::Health {
                day,
                minute,
                contribution,
                sent,
                delivered,
                failed,
                ts,
            } => (
                &self.insert_health,
                Box::new((day, minute, contribution, sent, delivered, failed, ts)),
            ),
            Mutation::HealthDay { day, ts } => (
                &self.insert_health_day,
                Box::new((plan::HEALTH_DAYS_SCOPE, day, ts)),
            ),
            Mutation::Checkpoint {
                consumer,
                topic,
                partition,
                next,
                ts,
            } => (
                &self.insert_checkpoint,
                Box::new((consumer, topic, partition, next, ts)),
            ),
        };
        Op {
            statement,
            values,
            size,
        }
    }
}

impl Inner {
    /// Runs statements as one logged batch (one statement runs on its own: no batch needed,
    /// and no batch size limit applies).
    async fn run(&self, ops: &[Op<'_>]) -> Result<()> {
        match ops {
            [] => Ok(()),
            [single] => self
                .session
                .execute_unpaged(single.statement, &*single.values)
                .await
                .map(drop)
                .map_err(db("writing a row")),
            _ => {
                let mut batch = Batch::new(BatchType::Logged);
                batch.set_is_idempotent(true);
                for op in ops {
                    batch.append_statement(op.statement.clone());
                }
                let values: Vec<&(dyn SerializeRow + Send + Sync)> =
                    ops.iter().map(|op| &*op.values).collect();
                self.session
                    .batch(&batch, values)
                    .await
                    .map(drop)
                    .map_err(db("writing a batch"))
            }
        }
    }

    /// The stored recipient, for a versioned write that needs the previous contacts.
    async fn stored_recipient(&self, key: &RecipientKey) -> Result<Option<Recipient>> {
        let (tenant, id) = key;
        self.read_doc(
            &self.statements.select_recipient,
            (tenant.as_str(), id.as_str()),
            || format!("recipients/{}/{}", tenant.as_str(), id.as_str()),
        )
        .await
    }

    /// Reads the `doc` of at most one row.
    async fn read_doc<T: DeserializeOwned>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        key: impl FnOnce() -> String,
    ) -> Result<Option<T>> {
        let rows = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(db("reading a row"))?
            .into_rows_result()
            .map_err(db("reading a row"))?;
        let doc = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(db("reading a row"))?
            .and_then(|(doc,)| doc);
        doc.map(|doc| codec::decode_doc(&key(), &doc)).transpose()
    }

    /// Every document of a tenant's partition of `table` (a query by `tenant_id`).
    async fn read_docs<T: DeserializeOwned>(
        &self,
        statement: &PreparedStatement,
        tenant: &TenantId,
        table: &str,
    ) -> Result<Vec<T>> {
        let rows: Vec<(Option<String>,)> = self.read_all(statement, (tenant.as_str(),)).await?;
        let key = format!("{table}/{}", tenant.as_str());
        rows.into_iter()
            .filter_map(|(doc,)| doc)
            .map(|doc| codec::decode_doc(&key, &doc))
            .collect()
    }

    /// Every row of a paged query.
    async fn read_all<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>>
    where
        R: for<'frame, 'metadata> ::scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(db("reading rows"))?
            .rows_stream::<R>()
            .map_err(db("reading rows"))?
            .try_collect()
            .await
            .map_err(db("reading rows"))
    }

    async fn claim_row(&self, claim: &ClaimKey) -> Result<Option<StoredClaim>> {
        let rows = self
            .session
            .execute_unpaged(&self.statements.select_claim, claim_values(claim))
            .await
            .map_err(db("reading a claim"))?
            .into_rows_result()
            .map_err(db("reading a claim"))?;
        let row = rows
            .maybe_first_row::<(
                Option<String>,
                Option<bool>,
                Option<i64>,
                Option<String>,
                Option<i64>,
            )>()
            .map_err(db("reading a claim"))?;
        Ok(row.map(
            |(id, completed, claimed_at_ms, response, expires_at_ms)| StoredClaim {
                id,
                completed,
                claimed_at_ms,
                response,
                expires_at_ms,
            },
        ))
    }
}

fn claim_values(claim: &ClaimKey) -> (String, &'static str, String) {
    (
        claim.tenant_id.as_str().to_owned(),
        claim.scope,
        claim.key.clone(),
    )
}

fn claim_name(claim: &ClaimKey) -> String {
    codec::claim_name(claim.tenant_id.as_str(), claim.scope, &claim.key)
}

/// The outcome of a lightweight transaction: whether it applied, and the row it found
/// (ScyllaDB returns the whole old row; Cassandra the columns it was asked about, or, for
/// `IF NOT EXISTS`, the whole existing row).
fn lwt_outcome(result: QueryResult, what: &'static str) -> Result<(bool, StoredClaim)> {
    let rows = result.into_rows_result().map_err(db(what))?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_owned())
        .collect();
    let Some(row) = rows.maybe_first_row::<Row>().map_err(db(what))? else {
        return Err(StoreError::Backend(format!(
            "{what}: the conditional write returned no row"
        )));
    };
    let mut applied = None;
    let mut found = StoredClaim::default();
    for (name, value) in names.iter().zip(row.columns) {
        match (name.as_str(), value) {
            ("[applied]", Some(CqlValue::Boolean(value))) => applied = Some(value),
            ("id", Some(CqlValue::Text(value))) => found.id = Some(value),
            ("completed", Some(CqlValue::Boolean(value))) => found.completed = Some(value),
            ("claimed_at_ms", Some(CqlValue::BigInt(value))) => found.claimed_at_ms = Some(value),
            ("response", Some(CqlValue::Text(value))) => found.response = Some(value),
            ("expires_at_ms", Some(CqlValue::BigInt(value))) => found.expires_at_ms = Some(value),
            _ => {}
        }
    }
    let applied = applied.ok_or_else(|| {
        StoreError::Backend(format!(
            "{what}: the conditional write returned no `[applied]` column"
        ))
    })?;
    Ok((applied, found))
}

fn contended(claim: &ClaimKey, what: &str) -> StoreError {
    StoreError::Backend(format!(
        "{what} `{}` kept losing to concurrent requests",
        claim_name(claim)
    ))
}

// ---------------------------------------------------------------------------------------
// The port

#[async_trait]
impl Store for ScyllaStore {
    async fn apply(
        &self,
        writes: Vec<ReadModelWrite>,
        checkpoint: Option<(&str, &Checkpoint)>,
    ) -> Result<()> {
        let inner = &*self.inner;
        // The stored version of every recipient written, read in parallel, once each.
        let mut recipients: HashMap<RecipientKey, Option<Recipient>> =
            futures::stream::iter(plan::recipient_keys(&writes))
                .map(|key| async move {
                    let stored = inner.stored_recipient(&key).await?;
                    Ok::<_, StoreError>((key, stored))
                })
                .buffer_unordered(PARALLELISM)
                .try_collect()
                .await?;
        let plan = plan::plan(writes, checkpoint, &mut recipients, &CLOCK)?;
        let groups = plan.row_groups();
        let s = &inner.statements;
        let rows: Vec<Op<'_>> = plan.rows.into_iter().map(|m| s.bind(m)).collect();
        let last: Vec<Op<'_>> = plan.last.into_iter().map(|m| s.bind(m)).collect();
        let total: usize = rows.iter().chain(&last).map(|op| op.size).sum();
        if total <= codec::BATCH_BYTES {
            let all: Vec<Op<'_>> = rows.into_iter().chain(last).collect();
            return inner.run(&all).await;
        }
        // Too big for one batch: the rows first (idempotent, in parallel, never splitting one
        // write's rows), then the health rows and the checkpoint, so the checkpoint never
        // covers rows that are not written.
        let group_sizes: Vec<usize> = groups
            .iter()
            .map(|group| rows[group.clone()].iter().map(|op| op.size).sum())
            .collect();
        let chunks: Vec<std::ops::Range<usize>> =
            codec::chunk_by_size(&group_sizes, codec::BATCH_BYTES)
                .into_iter()
                .map(|chunk| groups[chunk.start].start..groups[chunk.end - 1].end)
                .collect();
        tracing::debug!(
            statements = rows.len(),
            bytes = total,
            batches = chunks.len() + 1,
            "splitting a large store write"
        );
        futures::stream::iter(chunks)
            .map(|chunk| inner.run(&rows[chunk]))
            .buffer_unordered(PARALLELISM)
            .try_collect::<()>()
            .await?;
        inner.run(&last).await
    }

    async fn checkpoint(&self, consumer: &str) -> Result<Checkpoint> {
        let rows: Vec<(String, i64, i64)> = self
            .inner
            .read_all(&self.inner.statements.select_checkpoint, (consumer,))
            .await?;
        rows.into_iter()
            .map(|(topic, partition, next)| {
                codec::position_from_cql(consumer, topic, partition, next)
            })
            .collect()
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        self.inner
            .read_doc(&self.inner.statements.select_tenant, (id.as_str(),), || {
                format!("tenants/{}", id.as_str())
            })
            .await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let key = || format!("api_keys_by_hash/{key_hash}");
        let rows = self
            .inner
            .session
            .execute_unpaged(&self.inner.statements.select_api_key, (key_hash,))
            .await
            .map_err(db("reading an api key"))?
            .into_rows_result()
            .map_err(db("reading an api key"))?;
        let Some((Some(doc), revoked_at)) = rows
            .maybe_first_row::<(Option<String>, Option<String>)>()
            .map_err(db("reading an api key"))?
        else {
            return Ok(None);
        };
        let mut record: ApiKeyRecord = codec::decode_doc(&key(), &doc)?;
        if let Some(revoked_at) = revoked_at {
            // The sticky column outlives docs written later without a revocation.
            record.revoked_at = Some(codec::decode_time(&key(), &revoked_at)?);
        }
        Ok(Some(record))
    }

    async fn template(&self, tenant: &TenantId, slug: &str) -> Result<Option<Template>> {
        self.inner
            .read_doc(
                &self.inner.statements.select_template,
                (tenant.as_str(), slug),
                || format!("templates/{}/{slug}", tenant.as_str()),
            )
            .await
    }

    async fn templates(&self, tenant: &TenantId) -> Result<Vec<Template>> {
        self.inner
            .read_docs(&self.inner.statements.select_templates, tenant, "templates")
            .await
    }

    async fn endpoint(&self, tenant: &TenantId, id: &EndpointId) -> Result<Option<Endpoint>> {
        self.inner
            .read_doc(
                &self.inner.statements.select_endpoint,
                (tenant.as_str(), id.as_str()),
                || format!("endpoints/{}/{}", tenant.as_str(), id.as_str()),
            )
            .await
    }

    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<Endpoint>> {
        self.inner
            .read_docs(&self.inner.statements.select_endpoints, tenant, "endpoints")
            .await
    }

    async fn recipient(&self, tenant: &TenantId, id: &RecipientId) -> Result<Option<Recipient>> {
        self.inner
            .stored_recipient(&(tenant.clone(), id.clone()))
            .await
    }

    async fn recipient_by_contact(
        &self,
        tenant: &TenantId,
        kind: ContactKind,
        value: &str,
    ) -> Result<Option<RecipientId>> {
        let candidates: Vec<(String,)> = self
            .inner
            .read_all(
                &self.inner.statements.select_contact,
                (tenant.as_str(), kind.as_str(), value),
            )
            .await?;
        // Confirm each hit against the recipient itself; of several recipients sharing the
        // contact, the most recently updated one answers.
        let mut found: Option<Recipient> = None;
        for (id,) in candidates {
            let key = (tenant.clone(), RecipientId::from_trusted(id));
            let Some(recipient) = self.inner.stored_recipient(&key).await? else {
                continue;
            };
            let newer = found.as_ref().is_none_or(|best| {
                (recipient.updated_at, &recipient.id) > (best.updated_at, &best.id)
            });
            if codec::has_contact(&recipient, kind, value) && newer {
                found = Some(recipient);
            }
        }
        Ok(found.map(|recipient| recipient.id))
    }

    async fn delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>> {
        self.inner
            .read_doc(
                &self.inner.statements.select_delivery,
                (tenant.as_str(), id.as_str()),
                || format!("deliveries/{}/{}", tenant.as_str(), id.as_str()),
            )
            .await
    }

    async fn attempts(
        &self,
        tenant: &TenantId,
        endpoint: &EndpointId,
        after: Option<&AttemptCursor>,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>> {
        // CQL refuses `LIMIT 0`; a page of nothing needs no read.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let s = &self.inner.statements;
        let cql_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let (tenant_id, endpoint_id) = (tenant.as_str(), endpoint.as_str());
        let rows: Vec<(Option<String>,)> = match after {
            Some(cursor) => {
                let values = (
                    tenant_id,
                    endpoint_id,
                    CqlTimestamp(cursor.attempted_at_ms),
                    cursor.delivery_id.as_str(),
                    i64::from(cursor.attempt),
                    cql_limit,
                );
                self.inner
                    .read_all(&s.select_attempts_after, values)
                    .await?
            }
            None => {
                self.inner
                    .read_all(&s.select_attempts, (tenant_id, endpoint_id, cql_limit))
                    .await?
            }
        };
        let key = format!("endpoint_attempts/{tenant_id}/{endpoint_id}");
        rows.into_iter()
            .filter_map(|(doc,)| doc)
            .take(limit)
            .map(|doc| codec::decode_doc(&key, &doc))
            .collect()
    }

    async fn dead_letter(
        &self,
        tenant: &TenantId,
        delivery: &DeliveryId,
    ) -> Result<Option<Vec<u8>>> {
        let what = "reading a dead letter";
        let rows = self
            .inner
            .session
            .execute_unpaged(
                &self.inner.statements.select_dead_letter,
                (tenant.as_str(), delivery.as_str()),
            )
            .await
            .map_err(db(what))?
            .into_rows_result()
            .map_err(db(what))?;
        Ok(rows
            .maybe_first_row::<(Option<Vec<u8>>,)>()
            .map_err(db(what))?
            .and_then(|(task,)| task))
    }

    async fn health_counts(&self, since_minute: i64) -> Result<HealthCounts> {
        let statements = &self.inner.statements;
        let days: Vec<(i64,)> = self
            .inner
            .read_all(
                &statements.select_health_days,
                (plan::HEALTH_DAYS_SCOPE, codec::minute_day(since_minute)),
            )
            .await?;
        let mut total = HealthCounts::default();
        for (day,) in days {
            let rows: Vec<(Option<i64>, Option<i64>, Option<i64>)> = self
                .inner
                .read_all(&statements.select_health_minutes, (day, since_minute))
                .await?;
            let key = format!("health_minutes/{day}");
            for (sent, delivered, failed) in rows {
                total.add(HealthCounts {
                    sent: codec::count_from_cql(&key, sent.unwrap_or(0))?,
                    delivered: codec::count_from_cql(&key, delivered.unwrap_or(0))?,
                    failed: codec::count_from_cql(&key, failed.unwrap_or(0))?,
                });
            }
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
        let inner = &*self.inner;
        let s = &inner.statements;
        let (tenant, scope, key) = claim_values(claim);
        for _ in 0..CLAIM_ATTEMPTS {
            let values = (
                tenant.clone(),
                scope,
                key.clone(),
                proposed_id.to_owned(),
                now_ms,
            );
            let result = inner
                .session
                .execute_unpaged(&s.insert_claim, values)
                .await
                .map_err(db("claiming a key"))?;
            let (applied, existing) = lwt_outcome(result, "claiming a key")?;
            if applied {
                return Ok(ClaimOutcome::Claimed {
                    id: proposed_id.to_owned(),
                });
            }
            let step = codec::claim_step(&claim_name(claim), &existing, now_ms, lease_ms)?;
            let (result, id) = match step {
                ClaimStep::Answer(outcome) => return Ok(outcome),
                ClaimStep::TakeOver { id, claimed_at_ms } => {
                    let values = (
                        now_ms,
                        tenant.clone(),
                        scope,
                        key.clone(),
                        id.clone(),
                        claimed_at_ms,
                    );
                    let result = inner.session.execute_unpaged(&s.take_over_claim, values);
                    (result.await, id)
                }
                ClaimStep::Replace {
                    old_id,
                    expires_at_ms,
                } => {
                    let values = (
                        proposed_id.to_owned(),
                        now_ms,
                        tenant.clone(),
                        scope,
                        key.clone(),
                        old_id,
                        expires_at_ms,
                    );
                    let result = inner.session.execute_unpaged(&s.replace_claim, values);
                    (result.await, proposed_id.to_owned())
                }
            };
            let result = result.map_err(db("taking over a claim"))?;
            if lwt_outcome(result, "taking over a claim")?.0 {
                return Ok(ClaimOutcome::Claimed { id });
            }
            // Someone else changed the claim in between: look again.
        }
        Err(contended(claim, "claiming"))
    }

    async fn complete_claim(
        &self,
        claim: &ClaimKey,
        response: Option<String>,
        expires_at_ms: Option<i64>,
    ) -> Result<()> {
        let inner = &*self.inner;
        let s = &inner.statements;
        let (tenant, scope, key) = claim_values(claim);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ttl = codec::claim_ttl_secs(expires_at_ms, now_ms);
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(row) = inner.claim_row(claim).await? else {
                return Err(StoreError::Backend(format!(
                    "no claim for `{}` to complete",
                    claim.key
                )));
            };
            let (Some(id), Some(completed), Some(claimed_at_ms)) =
                (row.id, row.completed, row.claimed_at_ms)
            else {
                return Err(StoreError::Backend(format!(
                    "stored claim `{}` is incomplete",
                    claim_name(claim)
                )));
            };
            // Every cell and the row marker get the TTL, so the whole row goes at expiry.
            let mut batch = Batch::new(BatchType::Logged);
            batch.append_statement(s.complete_claim.clone());
            batch.append_statement(s.expire_claim_row.clone());
            let update = (
                ttl,
                id.clone(),
                claimed_at_ms,
                response.clone(),
                expires_at_ms,
                tenant.clone(),
                scope,
                key.clone(),
                id,
                completed,
                claimed_at_ms,
            );
            let marker = (tenant.clone(), scope, key.clone(), ttl);
            let result = inner
                .session
                .batch(&batch, (update, marker))
                .await
                .map_err(db("completing a claim"))?;
            if lwt_outcome(result, "completing a claim")?.0 {
                return Ok(());
            }
        }
        Err(contended(claim, "completing"))
    }

    async fn release_claim(&self, claim: &ClaimKey) -> Result<()> {
        let result = self
            .inner
            .session
            .execute_unpaged(&self.inner.statements.release_claim, claim_values(claim))
            .await
            .map_err(db("releasing a claim"))?;
        // Not applied: no claim, or a completed one, which a release leaves alone.
        lwt_outcome(result, "releasing a claim").map(drop)
    }
}
