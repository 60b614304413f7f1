//! The conformance suite every [`Store`] implementation must pass (embedded now, ScyllaDB
//! later).
//!
//! Each check is an `async fn` taking the store under test and panicking with a message that
//! says which contract broke. Every check works under freshly generated tenant ids, consumer
//! names and claim keys, so all of them can share one store, including a long-lived database
//! node that earlier runs have written to; [`run_all`] runs them one after the other.
//!
//! The one table that is not partitioned by tenant is the health counters (one row per
//! minute, for every tenant): [`health_counts_add_up_per_minute`] therefore measures the
//! difference its own writes make, and assumes nothing else writes health counters while it
//! runs.
//!
//! Durability across a restart depends on how a store is opened, so it is a separate check,
//! [`survives_reopen`], given a function that opens (or reconnects to) the same store.
//!
//! Times are whole milliseconds, the precision every backend keeps.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::ids::{ApiKeyId, DeliveryId, EndpointId, RecipientId, TemplateId, TenantId};
use herald_domain::model::{
    ApiKeyRecord, AttemptRecord, Contacts, Delivery, Endpoint, Plan, Recipient, SignatureScheme,
    Template, Tenant,
};
use herald_domain::template::ChannelContent;
use herald_domain::{Channel, DeliveryStatus};

use crate::embedded::EmbeddedStore;
use crate::{Checkpoint, ClaimKey, ClaimOutcome, ContactKind, HealthCounts, ReadModelWrite, Store};

/// An embedded store in a fresh temporary directory, for tests of the roles that use a store.
/// The directory is deleted when the returned guard drops.
pub fn embedded_in_tempdir() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("conformance: cannot create a temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("conformance: cannot open embedded store");
    (dir, store)
}

/// Runs every check against one store, one after the other.
pub async fn run_all(store: Arc<dyn Store>) {
    let store = &*store;
    tenant_round_trip(store).await;
    api_key_round_trip(store).await;
    template_round_trip(store).await;
    templates_are_listed_by_slug(store).await;
    endpoint_round_trip(store).await;
    optional_settings_round_trip(store).await;
    recipient_round_trip(store).await;
    delivery_round_trip(store).await;
    dead_letter_round_trip(store).await;
    tenants_are_isolated(store).await;
    versioned_upserts_keep_the_newest(store).await;
    api_key_revocation_is_sticky(store).await;
    template_deleted_respects_versions(store).await;
    endpoint_deleted_respects_versions(store).await;
    attempts_page_newest_first(store).await;
    attempt_writes_are_idempotent(store).await;
    recipients_are_found_by_contact(store).await;
    health_counts_add_up_per_minute(store).await;
    checkpoints_are_stored_with_writes(store).await;
    later_writes_in_a_batch_see_earlier_ones(store).await;
    claims_deduplicate(store).await;
}

// ---------------------------------------------------------------------------------------
// Fixtures

/// A fixed instant, whole milliseconds, plus `ms`.
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_123 + ms).expect("valid fixture time")
}

fn tenant(id: &TenantId, name: &str, updated_ms: i64) -> Tenant {
    Tenant {
        id: id.clone(),
        name: name.to_owned(),
        plan: Plan {
            monthly_quota: Some(10_000),
            rate_limit_per_minute: 60,
        },
        endpoint_failure_threshold: None,
        created_at: at(0),
        updated_at: at(updated_ms),
    }
}

fn api_key(tenant: &TenantId, name: &str, revoked: Option<DateTime<Utc>>) -> ApiKeyRecord {
    let id = ApiKeyId::generate();
    ApiKeyRecord {
        key_hash: format!("sha256-of-{}", id.as_str()),
        id,
        tenant_id: tenant.clone(),
        name: name.to_owned(),
        prefix: "hk_AbCdEfGh".to_owned(),
        created_at: at(0),
        revoked_at: revoked,
    }
}

fn template(tenant: &TenantId, slug: &str, body: &str, updated_ms: i64) -> Template {
    let mut channels = BTreeMap::new();
    channels.insert(
        Channel::Email,
        ChannelContent {
            subject: Some("Hello {{ name }}".to_owned()),
            body: body.to_owned(),
        },
    );
    channels.insert(
        Channel::Sms,
        ChannelContent {
            subject: None,
            body: format!("sms: {body}"),
        },
    );
    Template {
        // Derived from the slug, so versions of one template share their id.
        id: TemplateId::derive(at(0).timestamp_millis(), slug.as_bytes()),
        tenant_id: tenant.clone(),
        slug: slug.to_owned(),
        channels,
        created_at: at(0),
        updated_at: at(updated_ms),
    }
}

fn endpoint(tenant: &TenantId, id: &EndpointId, url: &str, updated_ms: i64) -> Endpoint {
    Endpoint {
        id: id.clone(),
        tenant_id: tenant.clone(),
        url: url.to_owned(),
        description: Some("orders webhook".to_owned()),
        events: vec!["order.*".to_owned(), "invoice.paid".to_owned()],
        signature_scheme: SignatureScheme::Stripe,
        secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".to_owned(),
        previous_secret: None,
        previous_secret_expires_at: None,
        retry_schedule: None,
        rate_limit_per_second: None,
        is_active: true,
        disabled_reason: None,
        created_at: at(0),
        updated_at: at(updated_ms),
    }
}

fn recipient(tenant: &TenantId, id: &RecipientId, email: &str, updated_ms: i64) -> Recipient {
    Recipient {
        id: id.clone(),
        tenant_id: tenant.clone(),
        name: Some("Ada".to_owned()),
        contacts: Contacts {
            email: Some(email.to_owned()),
            phone: Some(format!("+4930{}", updated_ms.rem_euclid(100_000))),
            whatsapp_phone: None,
            telegram_chat_id: Some("123456".to_owned()),
            slack_webhook_url: Some(format!("https://hooks.slack.com/services/{}", id.as_str())),
            discord_webhook_url: None,
        },
        created_at: at(0),
        updated_at: at(updated_ms),
    }
}

fn delivery(tenant: &TenantId, id: &DeliveryId, recipient: Option<&RecipientId>) -> Delivery {
    Delivery {
        id: id.clone(),
        tenant_id: tenant.clone(),
        status: DeliveryStatus::Queued,
        channel: Channel::Email,
        recipient_id: recipient.cloned(),
        template: Some("welcome".to_owned()),
        created_at: at(0),
        updated_at: at(0),
        attempts: 0,
        last_error: None,
        external_id: None,
    }
}

/// Attempt `number` of a delivery to an endpoint, made at `at(ms)`.
fn attempt(
    tenant: &TenantId,
    endpoint: &EndpointId,
    delivery: &DeliveryId,
    number: u32,
    ms: i64,
) -> AttemptRecord {
    AttemptRecord {
        tenant_id: tenant.clone(),
        endpoint_id: endpoint.clone(),
        delivery_id: delivery.clone(),
        attempt: number,
        message_id: Some(format!("evt_{}", delivery.as_str())),
        event_type: Some("order.paid".to_owned()),
        outcome: "retriable".to_owned(),
        status_code: Some(503),
        error: Some("service unavailable".to_owned()),
        response_excerpt: Some("{\"busy\":true}".to_owned()),
        latency_ms: 42,
        attempted_at: at(ms),
        next_attempt_at: Some(at(ms + 5_000)),
        consecutive_failures: number,
    }
}

/// Unwraps a store result, naming the operation that failed.
fn ok<T>(result: crate::Result<T>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("conformance: store error during {what}: {error:?}"),
    }
}

async fn apply(store: &dyn Store, writes: Vec<ReadModelWrite>, what: &str) {
    ok(store.apply(writes, None).await, what);
}

// ---------------------------------------------------------------------------------------
// Round trips

/// A tenant written is read back unchanged; an unknown tenant is `None`.
pub async fn tenant_round_trip(store: &dyn Store) {
    let id = TenantId::generate();
    let written = tenant(&id, "Acme", 10);
    apply(
        store,
        vec![ReadModelWrite::Tenant(written.clone())],
        "writing a tenant",
    )
    .await;
    let read = ok(store.tenant(&id).await, "reading a tenant");
    assert_eq!(
        read,
        Some(written),
        "tenant_round_trip: the tenant read back differs"
    );
    let unknown = ok(
        store.tenant(&TenantId::generate()).await,
        "reading an unknown tenant",
    );
    assert_eq!(
        unknown, None,
        "tenant_round_trip: an unknown tenant id must be None"
    );
}

/// An API key is found by its hash; an unknown hash is `None`.
pub async fn api_key_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let written = api_key(&tenant_id, "ci", None);
    apply(
        store,
        vec![ReadModelWrite::ApiKey(written.clone())],
        "writing an api key",
    )
    .await;
    let read = ok(
        store.api_key_by_hash(&written.key_hash).await,
        "reading an api key",
    );
    assert_eq!(
        read,
        Some(written.clone()),
        "api_key_round_trip: the key read back differs"
    );
    let unknown = format!("{}-unknown", written.key_hash);
    let read = ok(
        store.api_key_by_hash(&unknown).await,
        "reading an unknown api key",
    );
    assert_eq!(
        read, None,
        "api_key_round_trip: an unknown key hash must be None"
    );
}

/// A template is found by tenant and slug; an unknown slug is `None`.
pub async fn template_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let written = template(&tenant_id, "welcome", "Hi {{ name }}", 10);
    apply(
        store,
        vec![ReadModelWrite::Template(written.clone())],
        "writing a template",
    )
    .await;
    let read = ok(
        store.template(&tenant_id, "welcome").await,
        "reading a template",
    );
    assert_eq!(
        read,
        Some(written),
        "template_round_trip: the template read back differs"
    );
    let read = ok(
        store.template(&tenant_id, "welcome-2").await,
        "reading an unknown template",
    );
    assert_eq!(
        read, None,
        "template_round_trip: an unknown slug must be None"
    );
    let read = ok(
        store.template(&tenant_id, "welcom").await,
        "reading a slug prefix",
    );
    assert_eq!(
        read, None,
        "template_round_trip: a prefix of a slug must not find the template"
    );
}

/// A tenant's templates are listed in slug order, without deleted ones or other tenants'.
pub async fn templates_are_listed_by_slug(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let other = TenantId::generate();
    let writes = ["welcome", "alpha", "receipt", "gone"]
        .iter()
        .map(|slug| ReadModelWrite::Template(template(&tenant_id, slug, "Hi", 10)))
        .chain([ReadModelWrite::Template(template(&other, "beta", "Hi", 10))])
        .collect();
    apply(store, writes, "writing templates").await;
    apply(
        store,
        vec![ReadModelWrite::TemplateDeleted {
            tenant_id: tenant_id.clone(),
            slug: "gone".into(),
            at: at(20),
        }],
        "deleting a template",
    )
    .await;
    let listed = ok(store.templates(&tenant_id).await, "listing templates");
    let slugs: Vec<&str> = listed.iter().map(|t| t.slug.as_str()).collect();
    assert_eq!(
        slugs,
        ["alpha", "receipt", "welcome"],
        "templates_are_listed_by_slug: slug order, no deleted template, no other tenant's"
    );
    assert_eq!(
        ok(store.templates(&TenantId::generate()).await, "listing none"),
        Vec::new(),
        "templates_are_listed_by_slug: a tenant without templates lists none"
    );
}

/// An endpoint is found by tenant and id and listed, oldest first; an unknown id is `None`.
pub async fn endpoint_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    // Ids carry their creation time; derive them so their order is certain.
    let seed = tenant_id.as_str().as_bytes();
    let older_id = EndpointId::derive(at(0).timestamp_millis(), seed);
    let newer_id = EndpointId::derive(at(5_000).timestamp_millis(), seed);
    let older = endpoint(&tenant_id, &older_id, "https://example.com/older", 10);
    let mut newer = endpoint(&tenant_id, &newer_id, "https://example.com/newer", 10);
    newer.created_at = at(5_000);
    newer.signature_scheme = SignatureScheme::Standard;
    newer.is_active = false;
    newer.disabled_reason = Some("failing for 5 days".to_owned());
    // Written newest first: the listing must not depend on write order.
    let writes = vec![
        ReadModelWrite::Endpoint(newer.clone()),
        ReadModelWrite::Endpoint(older.clone()),
    ];
    apply(store, writes, "writing endpoints").await;

    let read = ok(
        store.endpoint(&tenant_id, &older_id).await,
        "reading an endpoint",
    );
    assert_eq!(
        read,
        Some(older.clone()),
        "endpoint_round_trip: the endpoint read back differs"
    );
    let read = ok(
        store.endpoint(&tenant_id, &newer_id).await,
        "reading an endpoint",
    );
    assert_eq!(
        read,
        Some(newer.clone()),
        "endpoint_round_trip: the endpoint read back differs"
    );
    let read = ok(
        store.endpoint(&tenant_id, &EndpointId::generate()).await,
        "reading an unknown endpoint",
    );
    assert_eq!(
        read, None,
        "endpoint_round_trip: an unknown endpoint id must be None"
    );
    let listed = ok(store.endpoints(&tenant_id).await, "listing endpoints");
    assert_eq!(
        listed,
        vec![older, newer],
        "endpoint_round_trip: endpoints() must list the tenant's endpoints, oldest first"
    );
    let listed = ok(
        store.endpoints(&TenantId::generate()).await,
        "listing an unknown tenant's endpoints",
    );
    assert!(
        listed.is_empty(),
        "endpoint_round_trip: a tenant without endpoints must list none, got {listed:?}"
    );
}

/// Every optional setting of an endpoint (rotated secret, retry schedule, rate limit) and of a
/// tenant (failure threshold) round-trips when set.
pub async fn optional_settings_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let mut t = tenant(&tenant_id, "Configured", 10);
    t.endpoint_failure_threshold = Some(3);
    let mut ep = endpoint(
        &tenant_id,
        &endpoint_id,
        "https://example.com/configured",
        10,
    );
    ep.secret = "enc:v1:bm9uY2U=:c2VhbGVk".to_owned();
    ep.previous_secret = Some("whsec_b2xkLW9sZC1vbGQ=".to_owned());
    ep.previous_secret_expires_at = Some(at(86_400_000));
    ep.retry_schedule = Some(
        "5s,1m,2h"
            .parse()
            .expect("optional_settings_round_trip: fixture schedule"),
    );
    ep.rate_limit_per_second = Some(25);
    apply(
        store,
        vec![
            ReadModelWrite::Tenant(t.clone()),
            ReadModelWrite::Endpoint(ep.clone()),
        ],
        "writing a configured tenant and endpoint",
    )
    .await;
    assert_eq!(
        ok(store.tenant(&tenant_id).await, "reading a tenant"),
        Some(t),
        "optional_settings_round_trip: a tenant's endpoint_failure_threshold must round-trip"
    );
    assert_eq!(
        ok(
            store.endpoint(&tenant_id, &endpoint_id).await,
            "reading an endpoint"
        ),
        Some(ep.clone()),
        "optional_settings_round_trip: an endpoint's previous secret, its expiry, retry schedule and rate limit must round-trip"
    );
    assert_eq!(
        ok(store.endpoints(&tenant_id).await, "listing endpoints"),
        vec![ep],
        "optional_settings_round_trip: the listed endpoint must carry its optional settings"
    );
}

/// A recipient is found by tenant and id; an unknown id is `None`.
pub async fn recipient_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let id = RecipientId::generate();
    let written = recipient(&tenant_id, &id, "ada@example.com", 10);
    apply(
        store,
        vec![ReadModelWrite::Recipient(written.clone())],
        "writing a recipient",
    )
    .await;
    let read = ok(
        store.recipient(&tenant_id, &id).await,
        "reading a recipient",
    );
    assert_eq!(
        read,
        Some(written),
        "recipient_round_trip: the recipient read back differs"
    );
    let read = ok(
        store.recipient(&tenant_id, &RecipientId::generate()).await,
        "reading an unknown recipient",
    );
    assert_eq!(
        read, None,
        "recipient_round_trip: an unknown recipient id must be None"
    );
}

/// A delivery is found by tenant and id, and a later write replaces the row; an unknown id
/// is `None`.
pub async fn delivery_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let id = DeliveryId::generate();
    let written = delivery(&tenant_id, &id, Some(&RecipientId::generate()));
    apply(
        store,
        vec![ReadModelWrite::Delivery(written.clone())],
        "writing a delivery",
    )
    .await;
    let read = ok(store.delivery(&tenant_id, &id).await, "reading a delivery");
    assert_eq!(
        read,
        Some(written.clone()),
        "delivery_round_trip: the delivery read back differs"
    );

    let mut folded = written;
    folded.status = DeliveryStatus::Delivered;
    folded.attempts = 2;
    folded.last_error = None;
    folded.external_id = Some("msg-42".to_owned());
    folded.updated_at = at(2_000);
    apply(
        store,
        vec![ReadModelWrite::Delivery(folded.clone())],
        "replacing a delivery",
    )
    .await;
    let read = ok(
        store.delivery(&tenant_id, &id).await,
        "reading a replaced delivery",
    );
    assert_eq!(
        read,
        Some(folded),
        "delivery_round_trip: a later delivery write must replace the row"
    );

    let read = ok(
        store.delivery(&tenant_id, &DeliveryId::generate()).await,
        "reading an unknown delivery",
    );
    assert_eq!(
        read, None,
        "delivery_round_trip: an unknown delivery id must be None"
    );
}

/// A dead letter's task bytes are read back exactly (any byte, large ones too), a later
/// write replaces them, and an unknown delivery has none.
pub async fn dead_letter_round_trip(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let id = DeliveryId::generate();
    let large_id = DeliveryId::generate();
    // Avro single-object encoding starts C3 01; NUL and FF must survive too.
    let task = vec![0xc3, 0x01, 0x00, 0xff, 0x7f, 0x80, 0x00];
    apply(
        store,
        vec![ReadModelWrite::DeadLetter {
            tenant_id: tenant_id.clone(),
            delivery_id: id.clone(),
            task: task.clone(),
        }],
        "writing a dead letter",
    )
    .await;
    assert_eq!(
        ok(
            store.dead_letter(&tenant_id, &id).await,
            "reading a dead letter"
        ),
        Some(task),
        "dead_letter_round_trip: the task read back differs"
    );

    // Larger than a ScyllaDB batch, written together with another row.
    let large: Vec<u8> = (0..80_000u32).map(|i| (i % 251) as u8).collect();
    let replaced = b"re-encoded task".to_vec();
    apply(
        store,
        vec![
            ReadModelWrite::DeadLetter {
                tenant_id: tenant_id.clone(),
                delivery_id: large_id.clone(),
                task: large.clone(),
            },
            ReadModelWrite::DeadLetter {
                tenant_id: tenant_id.clone(),
                delivery_id: id.clone(),
                task: replaced.clone(),
            },
        ],
        "writing dead letters",
    )
    .await;
    assert_eq!(
        ok(
            store.dead_letter(&tenant_id, &large_id).await,
            "reading a large dead letter"
        ),
        Some(large),
        "dead_letter_round_trip: a large task read back differs"
    );
    assert_eq!(
        ok(
            store.dead_letter(&tenant_id, &id).await,
            "reading a rewritten dead letter"
        ),
        Some(replaced),
        "dead_letter_round_trip: a later dead letter of the same delivery must replace the task"
    );
    assert_eq!(
        ok(
            store.dead_letter(&tenant_id, &DeliveryId::generate()).await,
            "reading an unknown dead letter"
        ),
        None,
        "dead_letter_round_trip: an unknown delivery must have no dead letter"
    );
}

// ---------------------------------------------------------------------------------------
// Tenant isolation

/// Rows are found only under their own tenant, even by another tenant that knows their ids.
pub async fn tenants_are_isolated(store: &dyn Store) {
    let owner = TenantId::generate();
    let other = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let recipient_id = RecipientId::generate();
    let delivery_id = DeliveryId::generate();
    let other_endpoint_id = EndpointId::generate();
    let other_endpoint = endpoint(
        &other,
        &other_endpoint_id,
        "https://other.example.com/hook",
        10,
    );
    let writes = vec![
        ReadModelWrite::Tenant(tenant(&owner, "Owner", 10)),
        ReadModelWrite::Tenant(tenant(&other, "Other", 10)),
        ReadModelWrite::Template(template(&owner, "welcome", "Hi", 10)),
        ReadModelWrite::Endpoint(endpoint(
            &owner,
            &endpoint_id,
            "https://owner.example.com/hook",
            10,
        )),
        ReadModelWrite::Endpoint(other_endpoint.clone()),
        ReadModelWrite::Recipient(recipient(&owner, &recipient_id, "owner@example.com", 10)),
        ReadModelWrite::Delivery(delivery(&owner, &delivery_id, Some(&recipient_id))),
        ReadModelWrite::Attempt(attempt(&owner, &endpoint_id, &delivery_id, 1, 10)),
        ReadModelWrite::DeadLetter {
            tenant_id: owner.clone(),
            delivery_id: delivery_id.clone(),
            task: b"owner's task".to_vec(),
        },
    ];
    apply(store, writes, "writing two tenants' rows").await;

    // The owner sees its rows (so the `None`s below are about isolation, not missing rows).
    assert!(
        ok(
            store.template(&owner, "welcome").await,
            "reading a template"
        )
        .is_some(),
        "tenants_are_isolated: the owner must find its template"
    );
    assert!(
        ok(
            store.delivery(&owner, &delivery_id).await,
            "reading a delivery"
        )
        .is_some(),
        "tenants_are_isolated: the owner must find its delivery"
    );
    assert_eq!(
        ok(
            store.attempts(&owner, &endpoint_id, None, 10).await,
            "listing attempts"
        )
        .len(),
        1,
        "tenants_are_isolated: the owner must find its endpoint's attempt"
    );
    assert!(
        ok(
            store.dead_letter(&owner, &delivery_id).await,
            "reading a dead letter"
        )
        .is_some(),
        "tenants_are_isolated: the owner must find its dead letter"
    );

    let read = ok(
        store.template(&other, "welcome").await,
        "reading another tenant's template",
    );
    assert_eq!(
        read, None,
        "tenants_are_isolated: a template slug must not be found under another tenant"
    );
    let read = ok(
        store.endpoint(&other, &endpoint_id).await,
        "reading another tenant's endpoint",
    );
    assert_eq!(
        read, None,
        "tenants_are_isolated: an endpoint id must not be found under another tenant"
    );
    let read = ok(
        store.endpoint(&owner, &other_endpoint_id).await,
        "reading another tenant's endpoint",
    );
    assert_eq!(
        read, None,
        "tenants_are_isolated: an endpoint id must not be found under another tenant"
    );
    let read = ok(
        store.recipient(&other, &recipient_id).await,
        "reading another tenant's recipient",
    );
    assert_eq!(
        read, None,
        "tenants_are_isolated: a recipient id must not be found under another tenant"
    );
    let read = ok(
        store.delivery(&other, &delivery_id).await,
        "reading another tenant's delivery",
    );
    assert_eq!(
        read, None,
        "tenants_are_isolated: a delivery id must not be found under another tenant"
    );
    let read = ok(
        store.attempts(&other, &endpoint_id, None, 10).await,
        "listing another tenant's attempts",
    );
    assert!(
        read.is_empty(),
        "tenants_are_isolated: an endpoint's attempts must not be listed under another tenant, got {read:?}"
    );
    let read = ok(
        store.attempts(&owner, &other_endpoint_id, None, 10).await,
        "listing attempts of another tenant's endpoint",
    );
    assert!(
        read.is_empty(),
        "tenants_are_isolated: another tenant's endpoint id must list no attempts, got {read:?}"
    );
    let read = ok(
        store.dead_letter(&other, &delivery_id).await,
        "reading another tenant's dead letter",
    );
    assert_eq!(
        read, None,
        "tenants_are_isolated: a dead letter must not be found under another tenant"
    );

    let listed = ok(store.endpoints(&owner).await, "listing endpoints");
    let ids: Vec<&EndpointId> = listed.iter().map(|e| &e.id).collect();
    assert_eq!(
        ids,
        vec![&endpoint_id],
        "tenants_are_isolated: endpoints(owner) must list only the owner's endpoints"
    );
    let listed = ok(store.endpoints(&other).await, "listing endpoints");
    assert_eq!(
        listed,
        vec![other_endpoint],
        "tenants_are_isolated: endpoints(other) must list only the other's endpoints"
    );
}

// ---------------------------------------------------------------------------------------
// Versioned upserts

/// An older `updated_at` written after a newer one changes nothing; an equal or newer one
/// replaces the row (tenants, templates, endpoints, recipients).
pub async fn versioned_upserts_keep_the_newest(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let recipient_id = RecipientId::generate();

    // Version 2 first, then the stale version 1.
    let t2 = tenant(&tenant_id, "Acme v2", 200);
    let tpl2 = template(&tenant_id, "welcome", "v2", 200);
    let ep2 = endpoint(&tenant_id, &endpoint_id, "https://example.com/v2", 200);
    let rcp2 = recipient(&tenant_id, &recipient_id, "v2@example.com", 200);
    let newer = vec![
        ReadModelWrite::Tenant(t2.clone()),
        ReadModelWrite::Template(tpl2.clone()),
        ReadModelWrite::Endpoint(ep2.clone()),
        ReadModelWrite::Recipient(rcp2.clone()),
    ];
    apply(store, newer, "writing newer versions").await;
    let older = vec![
        ReadModelWrite::Tenant(tenant(&tenant_id, "Acme v1", 100)),
        ReadModelWrite::Template(template(&tenant_id, "welcome", "v1", 100)),
        ReadModelWrite::Endpoint(endpoint(
            &tenant_id,
            &endpoint_id,
            "https://example.com/v1",
            100,
        )),
        ReadModelWrite::Recipient(recipient(&tenant_id, &recipient_id, "v1@example.com", 100)),
    ];
    apply(store, older, "writing older versions").await;
    check_versions(
        store,
        &tenant_id,
        &t2,
        &tpl2,
        &ep2,
        &rcp2,
        "an older write must not replace a newer row",
    )
    .await;

    // The same version with other content replaces (a retried write is the latest word).
    let t2b = tenant(&tenant_id, "Acme v2b", 200);
    let tpl2b = template(&tenant_id, "welcome", "v2b", 200);
    let ep2b = endpoint(&tenant_id, &endpoint_id, "https://example.com/v2b", 200);
    let rcp2b = recipient(&tenant_id, &recipient_id, "v2b@example.com", 200);
    let equal = vec![
        ReadModelWrite::Tenant(t2b.clone()),
        ReadModelWrite::Template(tpl2b.clone()),
        ReadModelWrite::Endpoint(ep2b.clone()),
        ReadModelWrite::Recipient(rcp2b.clone()),
    ];
    apply(store, equal, "writing equal versions").await;
    check_versions(
        store,
        &tenant_id,
        &t2b,
        &tpl2b,
        &ep2b,
        &rcp2b,
        "an equal updated_at must replace the row",
    )
    .await;

    let t3 = tenant(&tenant_id, "Acme v3", 300);
    let tpl3 = template(&tenant_id, "welcome", "v3", 300);
    let ep3 = endpoint(&tenant_id, &endpoint_id, "https://example.com/v3", 300);
    let rcp3 = recipient(&tenant_id, &recipient_id, "v3@example.com", 300);
    let newest = vec![
        ReadModelWrite::Tenant(t3.clone()),
        ReadModelWrite::Template(tpl3.clone()),
        ReadModelWrite::Endpoint(ep3.clone()),
        ReadModelWrite::Recipient(rcp3.clone()),
    ];
    apply(store, newest, "writing newest versions").await;
    check_versions(
        store,
        &tenant_id,
        &t3,
        &tpl3,
        &ep3,
        &rcp3,
        "a newer updated_at must replace the row",
    )
    .await;
}

async fn check_versions(
    store: &dyn Store,
    tenant_id: &TenantId,
    t: &Tenant,
    tpl: &Template,
    ep: &Endpoint,
    rcp: &Recipient,
    rule: &str,
) {
    let read = ok(store.tenant(tenant_id).await, "reading a tenant");
    assert_eq!(
        read.as_ref(),
        Some(t),
        "versioned_upserts_keep_the_newest (tenant): {rule}"
    );
    let read = ok(
        store.template(tenant_id, &tpl.slug).await,
        "reading a template",
    );
    assert_eq!(
        read.as_ref(),
        Some(tpl),
        "versioned_upserts_keep_the_newest (template): {rule}"
    );
    let read = ok(
        store.endpoint(tenant_id, &ep.id).await,
        "reading an endpoint",
    );
    assert_eq!(
        read.as_ref(),
        Some(ep),
        "versioned_upserts_keep_the_newest (endpoint): {rule}"
    );
    let listed = ok(store.endpoints(tenant_id).await, "listing endpoints");
    assert_eq!(
        listed,
        vec![ep.clone()],
        "versioned_upserts_keep_the_newest (endpoints list): {rule}"
    );
    let read = ok(
        store.recipient(tenant_id, &rcp.id).await,
        "reading a recipient",
    );
    assert_eq!(
        read.as_ref(),
        Some(rcp),
        "versioned_upserts_keep_the_newest (recipient): {rule}"
    );
}

/// A revoked key stays revoked when a later write (say, a rename replayed from the log)
/// carries no `revoked_at`.
pub async fn api_key_revocation_is_sticky(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let active = api_key(&tenant_id, "ci", None);
    apply(
        store,
        vec![ReadModelWrite::ApiKey(active.clone())],
        "writing an api key",
    )
    .await;
    let read = ok(
        store.api_key_by_hash(&active.key_hash).await,
        "reading an api key",
    );
    assert_eq!(
        read.and_then(|k| k.revoked_at),
        None,
        "api_key_revocation_is_sticky: a new key must not be revoked"
    );

    let revoked_at = at(1_000);
    let revoked = ApiKeyRecord {
        revoked_at: Some(revoked_at),
        ..active.clone()
    };
    apply(
        store,
        vec![ReadModelWrite::ApiKey(revoked)],
        "revoking an api key",
    )
    .await;
    let read = ok(
        store.api_key_by_hash(&active.key_hash).await,
        "reading a revoked api key",
    );
    assert_eq!(
        read.and_then(|k| k.revoked_at),
        Some(revoked_at),
        "api_key_revocation_is_sticky: a write with revoked_at must revoke the key"
    );

    let renamed = ApiKeyRecord {
        name: "ci renamed".to_owned(),
        revoked_at: None,
        ..active.clone()
    };
    apply(
        store,
        vec![ReadModelWrite::ApiKey(renamed)],
        "rewriting a revoked api key",
    )
    .await;
    let read = ok(
        store.api_key_by_hash(&active.key_hash).await,
        "reading a revoked api key",
    )
    .expect("api_key_revocation_is_sticky: the revoked key must still be found");
    assert_eq!(
        read.revoked_at,
        Some(revoked_at),
        "api_key_revocation_is_sticky: a later write without revoked_at must keep the revocation"
    );
}

/// `TemplateDeleted { at }` removes a template last updated at or before `at`, and leaves one
/// updated after it (re-created after the delete).
pub async fn template_deleted_respects_versions(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let writes = vec![
        ReadModelWrite::Template(template(&tenant_id, "old", "old", 100)),
        ReadModelWrite::Template(template(&tenant_id, "recreated", "new", 300)),
        ReadModelWrite::Template(template(&tenant_id, "kept", "kept", 100)),
    ];
    apply(store, writes, "writing templates").await;
    let deletes = vec![
        ReadModelWrite::TemplateDeleted {
            tenant_id: tenant_id.clone(),
            slug: "old".to_owned(),
            at: at(200),
        },
        ReadModelWrite::TemplateDeleted {
            tenant_id: tenant_id.clone(),
            slug: "recreated".to_owned(),
            at: at(200),
        },
        ReadModelWrite::TemplateDeleted {
            tenant_id: tenant_id.clone(),
            slug: "missing".to_owned(),
            at: at(200),
        },
        // Another tenant's delete of the same slug touches nothing here.
        ReadModelWrite::TemplateDeleted {
            tenant_id: TenantId::generate(),
            slug: "kept".to_owned(),
            at: at(200),
        },
    ];
    apply(store, deletes, "deleting templates").await;

    let read = ok(
        store.template(&tenant_id, "old").await,
        "reading a deleted template",
    );
    assert_eq!(
        read, None,
        "template_deleted_respects_versions: a template updated before `at` must be removed"
    );
    let read = ok(
        store.template(&tenant_id, "recreated").await,
        "reading a re-created template",
    );
    assert_eq!(
        read.map(|t| t.updated_at),
        Some(at(300)),
        "template_deleted_respects_versions: a template updated after `at` must be kept"
    );
    let read = ok(
        store.template(&tenant_id, "kept").await,
        "reading a template",
    );
    assert!(
        read.is_some(),
        "template_deleted_respects_versions: another tenant's delete must not remove this template"
    );
    let read = ok(
        store.template(&tenant_id, "missing").await,
        "reading a never-written template",
    );
    assert_eq!(
        read, None,
        "template_deleted_respects_versions: deleting a missing template must not create it"
    );
}

/// `EndpointDeleted { at }` removes an endpoint last updated at or before `at` (from
/// `endpoint` and `endpoints`), and leaves one updated after it; a version written after the
/// delete and newer than it is the endpoint again.
pub async fn endpoint_deleted_respects_versions(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    // Ids carry their creation time; derive them so the listing order is certain.
    let seed = tenant_id.as_str().as_bytes();
    let id = |n: i64| EndpointId::derive(at(n * 1_000).timestamp_millis(), seed);
    let (old, tied, recreated, kept, missing) = (id(1), id(2), id(3), id(4), id(5));
    let url = "https://example.com/hook";
    let writes = vec![
        ReadModelWrite::Endpoint(endpoint(&tenant_id, &old, url, 100)),
        ReadModelWrite::Endpoint(endpoint(&tenant_id, &tied, url, 200)),
        ReadModelWrite::Endpoint(endpoint(&tenant_id, &recreated, url, 300)),
        ReadModelWrite::Endpoint(endpoint(&tenant_id, &kept, url, 100)),
    ];
    apply(store, writes, "writing endpoints").await;
    let delete = |tenant_id: &TenantId, endpoint_id: &EndpointId| ReadModelWrite::EndpointDeleted {
        tenant_id: tenant_id.clone(),
        endpoint_id: endpoint_id.clone(),
        at: at(200),
    };
    let deletes = vec![
        delete(&tenant_id, &old),
        delete(&tenant_id, &tied),
        delete(&tenant_id, &recreated),
        delete(&tenant_id, &missing),
        // Another tenant's delete of the same id touches nothing here.
        delete(&TenantId::generate(), &kept),
    ];
    apply(store, deletes, "deleting endpoints").await;

    let read = |id: EndpointId| {
        let tenant_id = tenant_id.clone();
        async move { ok(store.endpoint(&tenant_id, &id).await, "reading an endpoint") }
    };
    assert_eq!(
        read(old.clone()).await,
        None,
        "endpoint_deleted_respects_versions: an endpoint updated before `at` must be removed"
    );
    assert_eq!(
        read(tied.clone()).await,
        None,
        "endpoint_deleted_respects_versions: an endpoint updated exactly at `at` must be removed"
    );
    assert_eq!(
        read(recreated.clone()).await.map(|e| e.updated_at),
        Some(at(300)),
        "endpoint_deleted_respects_versions: an endpoint updated after `at` must be kept"
    );
    assert!(
        read(kept.clone()).await.is_some(),
        "endpoint_deleted_respects_versions: another tenant's delete must not remove this endpoint"
    );
    assert_eq!(
        read(missing.clone()).await,
        None,
        "endpoint_deleted_respects_versions: deleting a missing endpoint must not create it"
    );
    let listed: Vec<EndpointId> = ok(store.endpoints(&tenant_id).await, "listing endpoints")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        listed,
        vec![recreated.clone(), kept.clone()],
        "endpoint_deleted_respects_versions: endpoints() must omit deleted endpoints"
    );

    // A version newer than the delete, arriving after it, is the endpoint again.
    let again = endpoint(&tenant_id, &old, "https://example.com/again", 250);
    apply(
        store,
        vec![ReadModelWrite::Endpoint(again.clone())],
        "re-creating a deleted endpoint",
    )
    .await;
    assert_eq!(
        read(old.clone()).await,
        Some(again),
        "endpoint_deleted_respects_versions: a version updated after the delete must be stored"
    );
    let listed: Vec<EndpointId> = ok(store.endpoints(&tenant_id).await, "listing endpoints")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        listed,
        vec![old, recreated, kept],
        "endpoint_deleted_respects_versions: a re-created endpoint must be listed again"
    );
}

// ---------------------------------------------------------------------------------------
// The attempt log

/// An endpoint's attempt log pages newest first (time, then delivery id, then attempt, all
/// descending): following each page's last cursor returns every row exactly once, in order,
/// whatever order they were written in; other endpoints' attempts never show.
pub async fn attempts_page_newest_first(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let neighbour = EndpointId::generate();
    let seed = tenant_id.as_str().as_bytes();
    let deliveries: Vec<DeliveryId> = (0..5)
        .map(|n| DeliveryId::derive(at(n * 10).timestamp_millis(), seed))
        .collect();
    // 25 attempts over five instants: at each, two attempts of one delivery, one of another
    // and two of a third, so time, delivery id and attempt number all decide somewhere.
    let mut rows = Vec::new();
    for t in 0..5usize {
        let ms = 60_000 * t as i64;
        let d = |k: usize| &deliveries[(t + k) % deliveries.len()];
        for (delivery, number) in [(d(0), 1), (d(0), 2), (d(1), 1), (d(2), 3), (d(2), 1)] {
            rows.push(attempt(&tenant_id, &endpoint_id, delivery, number, ms));
        }
    }
    let mut expected = rows.clone();
    expected.sort_by(|a, b| {
        let key = |r: &AttemptRecord| (r.attempted_at, r.delivery_id.clone(), r.attempt);
        key(b).cmp(&key(a))
    });

    // Written scrambled (11 is coprime to 25), in several batches, among the neighbour's.
    let mut writes: Vec<ReadModelWrite> = (0..rows.len())
        .map(|i| ReadModelWrite::Attempt(rows[(i * 11) % rows.len()].clone()))
        .collect();
    for (i, delivery) in deliveries.iter().enumerate() {
        let row = attempt(&tenant_id, &neighbour, delivery, 1, 30_000 * i as i64);
        writes.insert(i * 4, ReadModelWrite::Attempt(row));
    }
    while !writes.is_empty() {
        let rest = writes.split_off(writes.len().min(7));
        apply(store, writes, "writing attempts").await;
        writes = rest;
    }

    let page = |after: Option<AttemptRecord>, limit: usize| {
        let (tenant_id, endpoint_id) = (tenant_id.clone(), endpoint_id.clone());
        async move {
            let cursor = after.map(|row| row.cursor());
            ok(
                store
                    .attempts(&tenant_id, &endpoint_id, cursor.as_ref(), limit)
                    .await,
                "listing attempts",
            )
        }
    };
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let next = page(seen.last().cloned(), 10).await;
        sizes.push(next.len());
        if next.is_empty() {
            break;
        }
        assert!(
            sizes.len() <= 5,
            "attempts_page_newest_first: paging with cursors must end, got pages of {sizes:?}"
        );
        seen.extend(next);
    }
    assert_eq!(
        sizes,
        vec![10, 10, 5, 0],
        "attempts_page_newest_first: 25 attempts with limit 10 must come in pages of 10, 10, 5, then none"
    );
    assert_eq!(
        seen, expected,
        "attempts_page_newest_first: following cursors must return every attempt exactly once, newest first (time, delivery id, attempt descending)"
    );

    assert_eq!(
        page(None, 100).await,
        expected,
        "attempts_page_newest_first: a limit above the row count must return every attempt"
    );
    assert_eq!(
        page(Some(expected[3].clone()), 4).await,
        expected[4..8].to_vec(),
        "attempts_page_newest_first: a page must start strictly after its cursor"
    );
    assert!(
        page(None, 0).await.is_empty(),
        "attempts_page_newest_first: a limit of 0 must return nothing"
    );
    let neighbours = ok(
        store.attempts(&tenant_id, &neighbour, None, 100).await,
        "listing another endpoint's attempts",
    );
    assert_eq!(
        neighbours.len(),
        deliveries.len(),
        "attempts_page_newest_first: each endpoint must list only its own attempts"
    );
    let none = ok(
        store
            .attempts(&tenant_id, &EndpointId::generate(), None, 10)
            .await,
        "listing an unknown endpoint's attempts",
    );
    assert!(
        none.is_empty(),
        "attempts_page_newest_first: an endpoint without attempts must list none, got {none:?}"
    );
}

/// Writing the same attempt again, in one batch or later (a replay of the log), stores one
/// row; a later write of the same attempt replaces it.
pub async fn attempt_writes_are_idempotent(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let delivery_id = DeliveryId::generate();
    let row = attempt(&tenant_id, &endpoint_id, &delivery_id, 2, 1_000);
    apply(
        store,
        vec![
            ReadModelWrite::Attempt(row.clone()),
            ReadModelWrite::Attempt(row.clone()),
        ],
        "writing an attempt twice",
    )
    .await;
    apply(
        store,
        vec![ReadModelWrite::Attempt(row.clone())],
        "writing an attempt again",
    )
    .await;
    let listed = ok(
        store.attempts(&tenant_id, &endpoint_id, None, 10).await,
        "listing attempts",
    );
    assert_eq!(
        listed,
        vec![row.clone()],
        "attempt_writes_are_idempotent: the same attempt written three times must be one row"
    );

    let rewritten = AttemptRecord {
        outcome: "permanent".to_owned(),
        status_code: Some(410),
        next_attempt_at: None,
        ..row
    };
    apply(
        store,
        vec![ReadModelWrite::Attempt(rewritten.clone())],
        "rewriting an attempt",
    )
    .await;
    let listed = ok(
        store.attempts(&tenant_id, &endpoint_id, None, 10).await,
        "listing attempts",
    );
    assert_eq!(
        listed,
        vec![rewritten],
        "attempt_writes_are_idempotent: a later write of the same attempt must replace the row"
    );
}

// ---------------------------------------------------------------------------------------
// Recipients by contact

/// Recipients are found by email, phone and Slack URL within their tenant only; a newer
/// write indexes its new contacts (and stops finding the recipient by the old ones); a stale
/// write indexes nothing.
pub async fn recipients_are_found_by_contact(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let other = TenantId::generate();
    let id = RecipientId::generate();
    let v1 = recipient(&tenant_id, &id, "ada@example.com", 100);
    let phone = v1.contacts.phone.clone().expect("fixture has a phone");
    let slack = v1
        .contacts
        .slack_webhook_url
        .clone()
        .expect("fixture has a slack url");
    apply(
        store,
        vec![ReadModelWrite::Recipient(v1.clone())],
        "writing a recipient",
    )
    .await;

    let lookup = |tenant: TenantId, kind: ContactKind, value: String| async move {
        ok(
            store.recipient_by_contact(&tenant, kind, &value).await,
            "looking up a recipient by contact",
        )
    };
    for (kind, value) in [
        (ContactKind::Email, "ada@example.com".to_owned()),
        (ContactKind::Phone, phone.clone()),
        (ContactKind::SlackWebhookUrl, slack.clone()),
    ] {
        let found = lookup(tenant_id.clone(), kind, value.clone()).await;
        assert_eq!(
            found.as_ref(),
            Some(&id),
            "recipients_are_found_by_contact: {kind:?} `{value}` must find the recipient"
        );
        let found = lookup(other.clone(), kind, value.clone()).await;
        assert_eq!(found, None, "recipients_are_found_by_contact: {kind:?} `{value}` must not be found under another tenant");
    }
    let found = lookup(
        tenant_id.clone(),
        ContactKind::Phone,
        "ada@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found, None,
        "recipients_are_found_by_contact: an email must not be found as a phone"
    );
    let found = lookup(
        tenant_id.clone(),
        ContactKind::Email,
        "nobody@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found, None,
        "recipients_are_found_by_contact: an unknown email must be None"
    );
    let found = lookup(
        tenant_id.clone(),
        ContactKind::DiscordWebhookUrl,
        slack.clone(),
    )
    .await;
    assert_eq!(
        found, None,
        "recipients_are_found_by_contact: a contact the recipient lacks must be None"
    );

    // The same contact under another tenant belongs to that tenant's recipient.
    let other_id = RecipientId::generate();
    let mut twin = recipient(&other, &other_id, "ada@example.com", 100);
    twin.contacts.slack_webhook_url = Some(slack.clone());
    apply(
        store,
        vec![ReadModelWrite::Recipient(twin)],
        "writing another tenant's recipient",
    )
    .await;
    let found = lookup(
        other.clone(),
        ContactKind::Email,
        "ada@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found.as_ref(),
        Some(&other_id),
        "recipients_are_found_by_contact: each tenant finds its own recipient"
    );
    let found = lookup(
        tenant_id.clone(),
        ContactKind::Email,
        "ada@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found.as_ref(),
        Some(&id),
        "recipients_are_found_by_contact: another tenant's recipient must not take over"
    );

    // A newer write with a new email indexes it.
    let mut v2 = v1.clone();
    v2.contacts.email = Some("ada.lovelace@example.com".to_owned());
    v2.updated_at = at(200);
    apply(
        store,
        vec![ReadModelWrite::Recipient(v2)],
        "changing a recipient's email",
    )
    .await;
    let found = lookup(
        tenant_id.clone(),
        ContactKind::Email,
        "ada.lovelace@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found.as_ref(),
        Some(&id),
        "recipients_are_found_by_contact: a newer write must index its new email"
    );
    let found = lookup(
        tenant_id.clone(),
        ContactKind::Email,
        "ada@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found, None,
        "recipients_are_found_by_contact: a recipient must no longer be found by an email it no longer has"
    );
    let found = lookup(tenant_id.clone(), ContactKind::Phone, phone.clone()).await;
    assert_eq!(
        found.as_ref(),
        Some(&id),
        "recipients_are_found_by_contact: an unchanged phone must still find the recipient"
    );

    // A stale write (older than what is stored) indexes nothing.
    let mut stale = v1;
    stale.contacts.email = Some("stale@example.com".to_owned());
    stale.updated_at = at(150);
    apply(
        store,
        vec![ReadModelWrite::Recipient(stale)],
        "writing a stale recipient",
    )
    .await;
    let found = lookup(
        tenant_id.clone(),
        ContactKind::Email,
        "stale@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found, None,
        "recipients_are_found_by_contact: a stale write must not index its contacts"
    );
    let found = lookup(
        tenant_id,
        ContactKind::Email,
        "ada.lovelace@example.com".to_owned(),
    )
    .await;
    assert_eq!(
        found.as_ref(),
        Some(&id),
        "recipients_are_found_by_contact: a stale write must not unindex the current email"
    );
}

// ---------------------------------------------------------------------------------------
// Health counters

/// Health counter writes add up per minute, `health_counts(since)` sums the minutes from
/// `since` on, and one minute written twice in one batch counts both.
///
/// The counters are shared by every tenant, so this compares totals before and after its own
/// writes (to minutes of the last hour) and needs no concurrent writer of health counters.
pub async fn health_counts_add_up_per_minute(store: &dyn Store) {
    let first = Utc::now().timestamp().div_euclid(60) - 30;
    let (before, second, third) = (first - 1, first + 1, first + 2);
    let counts = |sent, delivered, failed| HealthCounts {
        sent,
        delivered,
        failed,
    };
    let total =
        |since| async move { ok(store.health_counts(since).await, "reading health counts") };
    let difference = |after: HealthCounts, earlier: HealthCounts| HealthCounts {
        sent: after.sent - earlier.sent,
        delivered: after.delivered - earlier.delivered,
        failed: after.failed - earlier.failed,
    };

    let from_before = total(before).await;
    let from_first = total(first).await;
    let from_second = total(second).await;
    let from_third = total(third).await;

    let writes = vec![
        ReadModelWrite::HealthCounts {
            minute: before,
            counts: counts(1_000_000, 0, 0),
        },
        ReadModelWrite::HealthCounts {
            minute: first,
            counts: counts(1, 2, 3),
        },
        // The same minute twice in one batch: both count.
        ReadModelWrite::HealthCounts {
            minute: second,
            counts: counts(10, 20, 30),
        },
        ReadModelWrite::HealthCounts {
            minute: second,
            counts: counts(100, 200, 300),
        },
    ];
    apply(store, writes, "writing health counts").await;
    // A later batch adds to what is there.
    let writes = vec![ReadModelWrite::HealthCounts {
        minute: first,
        counts: counts(1_000, 2_000, 3_000),
    }];
    apply(store, writes, "adding to a minute's health counts").await;

    let got = difference(total(first).await, from_first);
    assert_eq!(
        got,
        counts(1_111, 2_222, 3_333),
        "health_counts_add_up_per_minute: health_counts(since) must add every write to minutes >= since \
         (the same minute twice in one batch counting both), and nothing before since"
    );
    let got = difference(total(second).await, from_second);
    assert_eq!(
        got,
        counts(110, 220, 330),
        "health_counts_add_up_per_minute: the same minute written twice in one batch must count both"
    );
    let got = difference(total(before).await, from_before);
    assert_eq!(
        got,
        counts(1_001_111, 2_222, 3_333),
        "health_counts_add_up_per_minute: since is inclusive"
    );
    let got = difference(total(third).await, from_third);
    assert_eq!(
        got,
        HealthCounts::default(),
        "health_counts_add_up_per_minute: minutes before since must not count"
    );
}

// ---------------------------------------------------------------------------------------
// Checkpoints

/// `apply` stores a checkpoint together with its writes; consumers' checkpoints are
/// independent; a later checkpoint overwrites per partition; topic names with dots and
/// partitions above 9 round-trip.
pub async fn checkpoints_are_stored_with_writes(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let consumer = format!("projector-{}", tenant_id.as_str());
    // A name that starts with the first one: must not be mixed up with it.
    let other_consumer = format!("{consumer}-2");

    let read = ok(
        store.checkpoint(&consumer).await,
        "reading a missing checkpoint",
    );
    assert!(read.is_empty(), "checkpoints_are_stored_with_writes: an unknown consumer's checkpoint must be empty, got {read:?}");

    let mut first = Checkpoint::new();
    first.insert(("herald.events.v1".to_owned(), 0), 17);
    first.insert(("herald.events.v1".to_owned(), 2), 5);
    first.insert(("herald.events.v1".to_owned(), 12), 1_000_000_000_000);
    first.insert(("herald.outcomes".to_owned(), 3), 0);
    let written = tenant(&tenant_id, "Checkpointed", 10);
    let writes = vec![ReadModelWrite::Tenant(written.clone())];
    ok(
        store.apply(writes, Some((&consumer, &first))).await,
        "applying writes with a checkpoint",
    );
    let read = ok(store.checkpoint(&consumer).await, "reading a checkpoint");
    assert_eq!(
        read, first,
        "checkpoints_are_stored_with_writes: the checkpoint read back differs"
    );
    let read = ok(
        store.tenant(&tenant_id).await,
        "reading a tenant written with a checkpoint",
    );
    assert_eq!(
        read,
        Some(written),
        "checkpoints_are_stored_with_writes: the writes applied with a checkpoint must be stored"
    );

    let read = ok(
        store.checkpoint(&other_consumer).await,
        "reading another consumer's checkpoint",
    );
    assert!(read.is_empty(), "checkpoints_are_stored_with_writes: another consumer must not see this checkpoint, got {read:?}");
    let mut theirs = Checkpoint::new();
    theirs.insert(("herald.events.v1".to_owned(), 0), 3);
    ok(
        store
            .apply(Vec::new(), Some((&other_consumer, &theirs)))
            .await,
        "storing another consumer's checkpoint",
    );
    let read = ok(
        store.checkpoint(&other_consumer).await,
        "reading another consumer's checkpoint",
    );
    assert_eq!(
        read, theirs,
        "checkpoints_are_stored_with_writes: each consumer has its own checkpoint"
    );
    let read = ok(store.checkpoint(&consumer).await, "reading a checkpoint");
    assert_eq!(read, first, "checkpoints_are_stored_with_writes: another consumer's checkpoint must not change this one");

    let mut later = Checkpoint::new();
    later.insert(("herald.events.v1".to_owned(), 2), 9);
    later.insert(("herald.events.v1".to_owned(), 12), 1_000_000_000_001);
    ok(
        store.apply(Vec::new(), Some((&consumer, &later))).await,
        "storing a later checkpoint",
    );
    let mut expected = first;
    expected.extend(later);
    let read = ok(
        store.checkpoint(&consumer).await,
        "reading an overwritten checkpoint",
    );
    assert_eq!(
        read, expected,
        "checkpoints_are_stored_with_writes: a later checkpoint must overwrite the partitions it names and keep the others"
    );
}

// ---------------------------------------------------------------------------------------
// Batches

/// Within one `apply`, a later write of a row compares against the earlier ones: the newest
/// version wins whatever the order, and a delete sees a template written just before it.
pub async fn later_writes_in_a_batch_see_earlier_ones(store: &dyn Store) {
    let tenant_id = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let recipient_id = RecipientId::generate();
    let newest_tenant = tenant(&tenant_id, "v2", 200);
    let newest_endpoint = endpoint(&tenant_id, &endpoint_id, "https://example.com/v2", 200);
    let newest_recipient = recipient(&tenant_id, &recipient_id, "v2@example.com", 200);
    let short_lived_endpoint = EndpointId::generate();
    let writes = vec![
        // Newest first, then older.
        ReadModelWrite::Template(template(&tenant_id, "newest-first", "v2", 200)),
        ReadModelWrite::Template(template(&tenant_id, "newest-first", "v1", 100)),
        // Oldest first, then newer.
        ReadModelWrite::Template(template(&tenant_id, "oldest-first", "v1", 100)),
        ReadModelWrite::Template(template(&tenant_id, "oldest-first", "v2", 200)),
        ReadModelWrite::Tenant(newest_tenant.clone()),
        ReadModelWrite::Tenant(tenant(&tenant_id, "v1", 100)),
        ReadModelWrite::Endpoint(newest_endpoint.clone()),
        ReadModelWrite::Endpoint(endpoint(
            &tenant_id,
            &endpoint_id,
            "https://example.com/v1",
            100,
        )),
        ReadModelWrite::Recipient(newest_recipient.clone()),
        ReadModelWrite::Recipient(recipient(&tenant_id, &recipient_id, "v1@example.com", 100)),
        // Written, then deleted, in the same batch.
        ReadModelWrite::Template(template(&tenant_id, "short-lived", "v1", 100)),
        ReadModelWrite::TemplateDeleted {
            tenant_id: tenant_id.clone(),
            slug: "short-lived".to_owned(),
            at: at(150),
        },
        ReadModelWrite::Endpoint(endpoint(
            &tenant_id,
            &short_lived_endpoint,
            "https://example.com/short-lived",
            100,
        )),
        ReadModelWrite::EndpointDeleted {
            tenant_id: tenant_id.clone(),
            endpoint_id: short_lived_endpoint.clone(),
            at: at(150),
        },
    ];
    apply(store, writes, "applying several versions in one batch").await;

    for slug in ["newest-first", "oldest-first"] {
        let read = ok(store.template(&tenant_id, slug).await, "reading a template");
        assert_eq!(
            read.map(|t| t.channels[&Channel::Email].body.clone()),
            Some("v2".to_owned()),
            "later_writes_in_a_batch_see_earlier_ones: the newest template version in a batch must win ({slug})"
        );
    }
    let read = ok(store.tenant(&tenant_id).await, "reading a tenant");
    assert_eq!(
        read,
        Some(newest_tenant),
        "later_writes_in_a_batch_see_earlier_ones: the newest tenant version must win"
    );
    let read = ok(
        store.endpoint(&tenant_id, &endpoint_id).await,
        "reading an endpoint",
    );
    assert_eq!(
        read,
        Some(newest_endpoint),
        "later_writes_in_a_batch_see_earlier_ones: the newest endpoint version must win"
    );
    let read = ok(
        store.recipient(&tenant_id, &recipient_id).await,
        "reading a recipient",
    );
    assert_eq!(
        read,
        Some(newest_recipient),
        "later_writes_in_a_batch_see_earlier_ones: the newest recipient version must win"
    );
    let found = ok(
        store
            .recipient_by_contact(&tenant_id, ContactKind::Email, "v1@example.com")
            .await,
        "looking up a recipient by contact",
    );
    assert_eq!(
        found, None,
        "later_writes_in_a_batch_see_earlier_ones: the older recipient version must not be indexed"
    );
    let read = ok(
        store.template(&tenant_id, "short-lived").await,
        "reading a deleted template",
    );
    assert_eq!(read, None, "later_writes_in_a_batch_see_earlier_ones: a delete must remove a template written earlier in the batch");
    let read = ok(
        store.endpoint(&tenant_id, &short_lived_endpoint).await,
        "reading a deleted endpoint",
    );
    assert_eq!(read, None, "later_writes_in_a_batch_see_earlier_ones: a delete must remove an endpoint written earlier in the batch");
}

// ---------------------------------------------------------------------------------------
// Claims

/// Deduplication claims: pending, taken over after the lease with the original id,
/// completed (replaying the response until it expires), released; per tenant and scope.
pub async fn claims_deduplicate(store: &dyn Store) {
    const LEASE: i64 = 30_000;
    let now = Utc::now().timestamp_millis();
    let tenant_id = TenantId::generate();
    let key = ClaimKey {
        tenant_id: tenant_id.clone(),
        scope: "idempotency",
        key: "order-42".to_owned(),
    };
    let claim = |key: ClaimKey, proposed: &'static str, at_ms: i64| async move {
        ok(
            store.claim(&key, proposed, at_ms, LEASE).await,
            "claiming a key",
        )
    };
    let claimed = |id: &str| ClaimOutcome::Claimed { id: id.to_owned() };

    assert_eq!(
        claim(key.clone(), "dlv_a", now).await,
        claimed("dlv_a"),
        "claims_deduplicate: the first claim must be Claimed with the proposed id"
    );
    assert_eq!(
        claim(key.clone(), "dlv_b", now + LEASE - 1).await,
        ClaimOutcome::InFlight,
        "claims_deduplicate: a second claim within the lease must be InFlight"
    );
    assert_eq!(
        claim(key.clone(), "dlv_c", now + LEASE + 1).await,
        claimed("dlv_a"),
        "claims_deduplicate: a claim after the lease must take over with the ORIGINAL id"
    );
    assert_eq!(
        claim(key.clone(), "dlv_d", now + LEASE + 2).await,
        ClaimOutcome::InFlight,
        "claims_deduplicate: a taken-over claim must start a new lease"
    );

    // Claims are per tenant and per scope.
    let other_tenant = ClaimKey {
        tenant_id: TenantId::generate(),
        ..key.clone()
    };
    assert_eq!(
        claim(other_tenant, "dlv_t", now + LEASE + 2).await,
        claimed("dlv_t"),
        "claims_deduplicate: the same key under another tenant is a different claim"
    );
    let other_scope = ClaimKey {
        scope: "event",
        ..key.clone()
    };
    assert_eq!(
        claim(other_scope, "dlv_s", now + LEASE + 2).await,
        claimed("dlv_s"),
        "claims_deduplicate: the same key in another scope is a different claim"
    );

    // Completed: the response is replayed until the claim expires.
    let expires = now + 10 * LEASE;
    let response = Some(r#"{"id":"dlv_a"}"#.to_owned());
    ok(
        store
            .complete_claim(&key, response.clone(), Some(expires))
            .await,
        "completing a claim",
    );
    assert_eq!(
        claim(key.clone(), "dlv_e", now + LEASE + 3).await,
        ClaimOutcome::Completed { id: "dlv_a".to_owned(), response: response.clone() },
        "claims_deduplicate: a claim after complete_claim must be Completed with the id and response"
    );
    assert_eq!(
        claim(key.clone(), "dlv_e", expires - 1).await,
        ClaimOutcome::Completed { id: "dlv_a".to_owned(), response },
        "claims_deduplicate: a completed claim must stay Completed until it expires, even past the lease"
    );
    assert_eq!(
        claim(key.clone(), "dlv_f", expires + 1).await,
        claimed("dlv_f"),
        "claims_deduplicate: a completed claim whose expires_at is past must be Claimed again, with the new id"
    );

    // Completed without expiry: never expires; no response is replayed as none.
    let forever = ClaimKey {
        key: "evt-forever".to_owned(),
        ..key.clone()
    };
    assert_eq!(
        claim(forever.clone(), "dlv_g", now).await,
        claimed("dlv_g"),
        "claims_deduplicate: first claim"
    );
    ok(
        store.complete_claim(&forever, None, None).await,
        "completing a claim without expiry",
    );
    assert_eq!(
        claim(forever, "dlv_h", now + 1_000 * LEASE).await,
        ClaimOutcome::Completed {
            id: "dlv_g".to_owned(),
            response: None
        },
        "claims_deduplicate: a claim completed without expires_at must never expire"
    );

    // Released: the next claim is Claimed with its own proposed id.
    let released = ClaimKey {
        key: "order-43".to_owned(),
        ..key
    };
    assert_eq!(
        claim(released.clone(), "dlv_i", now).await,
        claimed("dlv_i"),
        "claims_deduplicate: first claim"
    );
    ok(store.release_claim(&released).await, "releasing a claim");
    assert_eq!(
        claim(released, "dlv_j", now + 1).await,
        claimed("dlv_j"),
        "claims_deduplicate: after release_claim a claim must be Claimed with the new proposed id"
    );
}

// ---------------------------------------------------------------------------------------
// Durability

/// Every kind of row, a checkpoint and claims written through one store survive closing it
/// and opening the same store again. `open` opens (or reconnects to) the same store each time;
/// the first store is dropped before the second is opened.
pub async fn survives_reopen<F, Fut>(mut open: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let tenant_id = TenantId::generate();
    let endpoint_id = EndpointId::generate();
    let recipient_id = RecipientId::generate();
    let delivery_id = DeliveryId::generate();
    let consumer = format!("projector-{}", tenant_id.as_str());
    let now = Utc::now();
    let minute = now.timestamp().div_euclid(60) - 5;
    let now_ms = now.timestamp_millis();

    let t = tenant(&tenant_id, "Durable", 10);
    let key = api_key(&tenant_id, "ci", Some(at(20)));
    let tpl = template(&tenant_id, "welcome", "Hi", 10);
    let ep = endpoint(&tenant_id, &endpoint_id, "https://example.com/durable", 10);
    let rcp = recipient(&tenant_id, &recipient_id, "durable@example.com", 10);
    let dlv = delivery(&tenant_id, &delivery_id, Some(&recipient_id));
    let deleted_endpoint = EndpointId::generate();
    let att = attempt(&tenant_id, &endpoint_id, &delivery_id, 1, 30);
    let dead = b"dead-lettered task".to_vec();
    let mut checkpoint = Checkpoint::new();
    checkpoint.insert(("herald.events.v1".to_owned(), 11), 4_242);
    let completed = ClaimKey {
        tenant_id: tenant_id.clone(),
        scope: "idempotency",
        key: "done".to_owned(),
    };
    let pending = ClaimKey {
        tenant_id: tenant_id.clone(),
        scope: "event",
        key: "pending".to_owned(),
    };

    let health_before;
    {
        let store = open().await;
        health_before = ok(store.health_counts(minute).await, "reading health counts");
        let writes = vec![
            ReadModelWrite::Tenant(t.clone()),
            ReadModelWrite::ApiKey(key.clone()),
            ReadModelWrite::Template(tpl.clone()),
            ReadModelWrite::Template(template(&tenant_id, "deleted", "gone", 10)),
            ReadModelWrite::TemplateDeleted {
                tenant_id: tenant_id.clone(),
                slug: "deleted".to_owned(),
                at: at(20),
            },
            ReadModelWrite::Endpoint(ep.clone()),
            ReadModelWrite::Endpoint(endpoint(
                &tenant_id,
                &deleted_endpoint,
                "https://example.com/deleted",
                10,
            )),
            ReadModelWrite::EndpointDeleted {
                tenant_id: tenant_id.clone(),
                endpoint_id: deleted_endpoint.clone(),
                at: at(20),
            },
            ReadModelWrite::Recipient(rcp.clone()),
            ReadModelWrite::Delivery(dlv.clone()),
            ReadModelWrite::Attempt(att.clone()),
            ReadModelWrite::DeadLetter {
                tenant_id: tenant_id.clone(),
                delivery_id: delivery_id.clone(),
                task: dead.clone(),
            },
            ReadModelWrite::HealthCounts {
                minute,
                counts: HealthCounts {
                    sent: 3,
                    delivered: 2,
                    failed: 1,
                },
            },
        ];
        ok(
            store.apply(writes, Some((&consumer, &checkpoint))).await,
            "applying writes with a checkpoint",
        );
        let outcome = ok(
            store.claim(&completed, "dlv_done", now_ms, 30_000).await,
            "claiming a key",
        );
        assert_eq!(
            outcome,
            ClaimOutcome::Claimed {
                id: "dlv_done".to_owned()
            },
            "survives_reopen: first claim"
        );
        ok(
            store
                .complete_claim(&completed, Some("ok".to_owned()), None)
                .await,
            "completing a claim",
        );
        let outcome = ok(
            store.claim(&pending, "evt_pending", now_ms, 30_000).await,
            "claiming a key",
        );
        assert_eq!(
            outcome,
            ClaimOutcome::Claimed {
                id: "evt_pending".to_owned()
            },
            "survives_reopen: first claim"
        );
        drop(store);
    }

    let store = open().await;
    let what = "survives_reopen: after reopening,";
    assert_eq!(
        ok(store.tenant(&tenant_id).await, "reading a tenant"),
        Some(t),
        "{what} the tenant must be there"
    );
    assert_eq!(
        ok(
            store.api_key_by_hash(&key.key_hash).await,
            "reading an api key"
        ),
        Some(key),
        "{what} the api key must be there"
    );
    assert_eq!(
        ok(
            store.template(&tenant_id, "welcome").await,
            "reading a template"
        ),
        Some(tpl),
        "{what} the template must be there"
    );
    assert_eq!(
        ok(
            store.template(&tenant_id, "deleted").await,
            "reading a template"
        ),
        None,
        "{what} a deleted template must stay deleted"
    );
    assert_eq!(
        ok(
            store.endpoint(&tenant_id, &endpoint_id).await,
            "reading an endpoint"
        ),
        Some(ep.clone()),
        "{what} the endpoint must be there"
    );
    assert_eq!(
        ok(store.endpoints(&tenant_id).await, "listing endpoints"),
        vec![ep],
        "{what} the endpoint must be listed"
    );
    assert_eq!(
        ok(
            store.endpoint(&tenant_id, &deleted_endpoint).await,
            "reading an endpoint"
        ),
        None,
        "{what} a deleted endpoint must stay deleted"
    );
    assert_eq!(
        ok(
            store.attempts(&tenant_id, &endpoint_id, None, 10).await,
            "listing attempts"
        ),
        vec![att],
        "{what} the attempt must be there"
    );
    assert_eq!(
        ok(
            store.dead_letter(&tenant_id, &delivery_id).await,
            "reading a dead letter"
        ),
        Some(dead),
        "{what} the dead letter must be there"
    );
    assert_eq!(
        ok(
            store.recipient(&tenant_id, &recipient_id).await,
            "reading a recipient"
        ),
        Some(rcp),
        "{what} the recipient must be there"
    );
    assert_eq!(
        ok(
            store
                .recipient_by_contact(&tenant_id, ContactKind::Email, "durable@example.com")
                .await,
            "looking up a contact"
        ),
        Some(recipient_id),
        "{what} the contact index must be there"
    );
    assert_eq!(
        ok(
            store.delivery(&tenant_id, &delivery_id).await,
            "reading a delivery"
        ),
        Some(dlv),
        "{what} the delivery must be there"
    );
    let health = ok(store.health_counts(minute).await, "reading health counts");
    assert_eq!(
        (
            health.sent - health_before.sent,
            health.delivered - health_before.delivered,
            health.failed - health_before.failed
        ),
        (3, 2, 1),
        "{what} the health counters must be there"
    );
    assert_eq!(
        ok(store.checkpoint(&consumer).await, "reading a checkpoint"),
        checkpoint,
        "{what} the checkpoint must be there"
    );
    assert_eq!(
        ok(
            store
                .claim(&completed, "dlv_other", now_ms + 1, 30_000)
                .await,
            "claiming a key"
        ),
        ClaimOutcome::Completed {
            id: "dlv_done".to_owned(),
            response: Some("ok".to_owned())
        },
        "{what} a completed claim must be there"
    );
    assert_eq!(
        ok(
            store.claim(&pending, "evt_other", now_ms + 1, 30_000).await,
            "claiming a key"
        ),
        ClaimOutcome::InFlight,
        "{what} a pending claim must be there"
    );
}
