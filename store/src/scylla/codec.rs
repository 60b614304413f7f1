//! The pure half of the ScyllaDB store: how rows, keys, buckets, timestamps and claim
//! decisions are encoded. Nothing here talks to the database, so all of it is unit-tested.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use herald_domain::model::{Delivery, Recipient};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Checkpoint, ClaimOutcome, ContactKind, HealthCounts, Result, StoreError};

// ---------------------------------------------------------------------------------------
// Documents

/// Hex digits of the write stamp that starts every `doc` value.
pub(super) const STAMP_LEN: usize = 16;

/// A `doc` column value: the write stamp as 16 lower-case hex digits, then the JSON.
///
/// When two writes of a cell carry the same CQL write timestamp (two versions with the same
/// `updated_at`), ScyllaDB and Cassandra keep the greater value. Fixed-width hex sorts like the
/// number, so the write with the later stamp wins: an equal version replaces the row, as the
/// store contract asks, and the JSON never decides.
pub(super) fn encode_doc<T: Serialize>(stamp: i64, value: &T) -> String {
    let json = serde_json::to_string(value).expect("read models always serialise");
    format!("{:016x}{json}", stamp.max(0) as u64)
}

/// Parses a `doc` column value; `key` names the row in errors.
pub(super) fn decode_doc<T: DeserializeOwned>(key: &str, doc: &str) -> Result<T> {
    let corrupt = |source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    };
    let stamped = doc.len() > STAMP_LEN
        && doc.is_char_boundary(STAMP_LEN)
        && doc.as_bytes()[..STAMP_LEN]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    if !stamped {
        return Err(corrupt(<serde_json::Error as serde::de::Error>::custom(
            "the document has no write stamp",
        )));
    }
    serde_json::from_str(&doc[STAMP_LEN..]).map_err(corrupt)
}

/// A timestamp as text, at full precision (RFC 3339), for typed columns such as `revoked_at`.
pub(super) fn encode_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(super) fn decode_time(key: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| StoreError::Corrupt {
            key: key.to_owned(),
            source: <serde_json::Error as serde::de::Error>::custom(format!(
                "`{text}` is not an rfc 3339 time: {err}"
            )),
        })
}

// ---------------------------------------------------------------------------------------
// Write timestamps

/// The CQL write timestamp of a version: its `updated_at` in microseconds since the epoch.
/// Sub-microsecond differences count as equal versions.
pub(super) fn version_timestamp(updated_at: DateTime<Utc>) -> i64 {
    updated_at.timestamp_micros()
}

/// The write timestamp that deletes an index row a version no longer has: one microsecond
/// below the version, so it shadows every older version's insert (a tombstone wins a tie) but
/// never an insert by this same version.
pub(super) fn unindex_timestamp(updated_at: DateTime<Utc>) -> i64 {
    version_timestamp(updated_at).saturating_sub(1)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Write stamps and the timestamps of unversioned writes: wall-clock microseconds, strictly
/// increasing within the process, so later writes of one store win even within a microsecond
/// or when the clock steps back.
#[derive(Debug, Default)]
pub(super) struct WriteClock {
    last: AtomicI64,
}

impl WriteClock {
    pub(super) const fn new() -> Self {
        Self {
            last: AtomicI64::new(0),
        }
    }

    pub(super) fn next(&self) -> i64 {
        let now = now_micros();
        let previous = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .expect("the update closure always returns a value");
        now.max(previous.saturating_add(1))
    }
}

// ---------------------------------------------------------------------------------------
// Buckets

pub(super) const MINUTES_PER_DAY: i64 = 24 * 60;
const MS_PER_DAY: i64 = 24 * 60 * 60 * 1000;

/// The `health_minutes` partition of a minute (minutes since the epoch): its UTC day.
pub(super) fn minute_day(minute: i64) -> i64 {
    minute.div_euclid(MINUTES_PER_DAY)
}

/// The `deliveries_by_time` partition of a delivery: the UTC day of the time in its id (ULIDs
/// carry their creation time), so a listing cursor, which is an id, names its bucket. An id
/// without a time falls back to `created_at`.
pub(super) fn delivery_day(delivery: &Delivery) -> i64 {
    let from_id = delivery.id.timestamp_ms();
    let ms = if from_id > 0 {
        from_id
    } else {
        delivery.created_at.timestamp_millis()
    };
    ms.div_euclid(MS_PER_DAY)
}

// ---------------------------------------------------------------------------------------
// Health contributions

/// 128-bit FNV-1a: small, stable across Rust releases and platforms (unlike `DefaultHasher`),
/// and plenty to tell one checkpoint of a consumer from another.
fn fnv1a_128(bytes: impl IntoIterator<Item = u8>) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.into_iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    })
}

/// The contribution id of health rows written with `consumer`'s checkpoint. A consumer's
/// positions only move forward, so the checkpoint names the batch: writing the same batch
/// again (a retry after a timeout, a replay) overwrites the same rows with the same numbers.
pub(super) fn checkpoint_contribution(consumer: &str, checkpoint: &Checkpoint) -> String {
    let mut canonical = Vec::new();
    for ((topic, partition), next) in checkpoint {
        canonical.extend_from_slice(&(topic.len() as u64).to_be_bytes());
        canonical.extend_from_slice(topic.as_bytes());
        canonical.extend_from_slice(&partition.to_be_bytes());
        canonical.extend_from_slice(&next.to_be_bytes());
    }
    format!("{consumer}@{:032x}", fnv1a_128(canonical))
}

/// The contribution id of health rows written without a checkpoint: unique, so every such
/// write adds (the caller gave nothing to recognise a retry by).
pub(super) fn one_off_contribution() -> String {
    format!("~{}", ulid::Ulid::new())
}

/// Adds up the health writes of one `apply` per minute, so a minute written twice in one
/// batch becomes one row carrying both.
pub(super) fn health_by_minute(
    writes: impl IntoIterator<Item = (i64, HealthCounts)>,
) -> BTreeMap<i64, HealthCounts> {
    let mut minutes = BTreeMap::<i64, HealthCounts>::new();
    for (minute, counts) in writes {
        minutes.entry(minute).or_default().add(counts);
    }
    minutes
}

/// A count as stored (`bigint`).
pub(super) fn count_to_cql(count: u64) -> Result<i64> {
    i64::try_from(count)
        .map_err(|_| StoreError::Backend(format!("health count {count} does not fit a bigint")))
}

/// A stored count; a negative one means the row is corrupt.
pub(super) fn count_from_cql(key: &str, count: i64) -> Result<u64> {
    u64::try_from(count).map_err(|_| {
        StoreError::Backend(format!("stored row `{key}` has a negative count {count}"))
    })
}

// ---------------------------------------------------------------------------------------
// Checkpoints

pub(super) fn offset_to_cql(topic: &str, partition: u32, next: u64) -> Result<i64> {
    i64::try_from(next).map_err(|_| {
        StoreError::Backend(format!(
            "offset {next} of `{topic}` partition {partition} does not fit a bigint"
        ))
    })
}

pub(super) fn position_from_cql(
    consumer: &str,
    topic: String,
    partition: i64,
    next: i64,
) -> Result<((String, u32), u64)> {
    let key = || format!("checkpoints/{consumer}/{topic}/{partition}");
    let partition = u32::try_from(partition).map_err(|_| {
        StoreError::Backend(format!("stored row `{}` has an invalid partition", key()))
    })?;
    let next = u64::try_from(next).map_err(|_| {
        StoreError::Backend(format!("stored row `{}` has a negative offset", key()))
    })?;
    Ok(((topic, partition), next))
}

// ---------------------------------------------------------------------------------------
// Recipients by contact

/// The contacts of a recipient that `recipient_by_contact` finds it by.
pub(super) fn indexed_contacts(recipient: &Recipient) -> [(ContactKind, Option<&str>); 4] {
    crate::indexed_contacts(&recipient.contacts)
}

/// Whether `recipient` has `value` as its contact of `kind`.
pub(super) fn has_contact(recipient: &Recipient, kind: ContactKind, value: &str) -> bool {
    indexed_contacts(recipient)
        .iter()
        .any(|(k, v)| *k == kind && *v == Some(value))
}

/// Contacts as index rows: `(kind, value)`.
pub(super) type ContactList<'a> = Vec<(ContactKind, &'a str)>;

/// The index rows a recipient version changes: the contacts `previous` had that `next` has not
/// (to delete), and every contact `next` has (to write; rewriting an unchanged one is a no-op).
pub(super) fn contact_changes<'a>(
    previous: Option<&'a Recipient>,
    next: &'a Recipient,
) -> (ContactList<'a>, ContactList<'a>) {
    let current = indexed_contacts(next);
    let stale = previous
        .map(indexed_contacts)
        .into_iter()
        .flatten()
        .zip(current)
        .filter_map(|((kind, old), (_, new))| {
            old.filter(|old| Some(*old) != new).map(|old| (kind, old))
        })
        .collect();
    let fresh = current
        .into_iter()
        .filter_map(|(kind, value)| value.map(|value| (kind, value)))
        .collect();
    (stale, fresh)
}

/// Whether a write of `next` replaces `stored` (an equal version replaces).
pub(super) fn recipient_write_wins(stored: Option<&Recipient>, next: &Recipient) -> bool {
    stored.is_none_or(|stored| stored.updated_at <= next.updated_at)
}

// ---------------------------------------------------------------------------------------
// Claims

/// A `claims` row as read back; every column may be null in CQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct StoredClaim {
    pub id: Option<String>,
    pub completed: Option<bool>,
    pub claimed_at_ms: Option<i64>,
    pub response: Option<String>,
    pub expires_at_ms: Option<i64>,
}

/// What `claim` does about an existing row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClaimStep {
    /// Answer without writing.
    Answer(ClaimOutcome),
    /// The pending claim's lease ran out: take it over, keeping its id (compare-and-set on
    /// the observed `claimed_at_ms`).
    TakeOver { id: String, claimed_at_ms: i64 },
    /// The completed claim expired: replace it with a new pending claim under the proposed id
    /// (compare-and-set on the observed id and expiry).
    Replace { old_id: String, expires_at_ms: i64 },
}

/// Decides about an existing claim row, by the same rules as the embedded store.
pub(super) fn claim_step(
    key: &str,
    row: &StoredClaim,
    now_ms: i64,
    lease_ms: i64,
) -> Result<ClaimStep> {
    let (Some(id), Some(completed), Some(claimed_at_ms)) =
        (row.id.clone(), row.completed, row.claimed_at_ms)
    else {
        return Err(StoreError::Backend(format!(
            "stored claim `{key}` is incomplete: {row:?}"
        )));
    };
    if completed {
        match row.expires_at_ms {
            Some(expires_at_ms) if expires_at_ms <= now_ms => Ok(ClaimStep::Replace {
                old_id: id,
                expires_at_ms,
            }),
            _ => Ok(ClaimStep::Answer(ClaimOutcome::Completed {
                id,
                response: row.response.clone(),
            })),
        }
    } else if now_ms - claimed_at_ms < lease_ms {
        Ok(ClaimStep::Answer(ClaimOutcome::InFlight))
    } else {
        Ok(ClaimStep::TakeOver { id, claimed_at_ms })
    }
}

/// Cassandra's and ScyllaDB's largest TTL: 20 years.
pub(super) const MAX_TTL_SECS: i32 = 20 * 365 * 24 * 60 * 60;

/// The TTL (seconds) of a claim completed at `now_ms` that expires at `expires_at_ms`: 0 (no
/// TTL) for none, else rounded up so the row outlives its expiry, and at least 1 (a TTL of 0
/// would mean "never").
pub(super) fn claim_ttl_secs(expires_at_ms: Option<i64>, now_ms: i64) -> i32 {
    match expires_at_ms {
        None => 0,
        Some(expires_at_ms) => {
            let remaining_ms = expires_at_ms.saturating_sub(now_ms).max(0);
            let secs = remaining_ms.div_euclid(1000) + i64::from(remaining_ms % 1000 != 0);
            secs.clamp(1, i64::from(MAX_TTL_SECS)) as i32
        }
    }
}

/// The key of a claim, for messages.
pub(super) fn claim_name(tenant: &str, scope: &str, key: &str) -> String {
    format!("claims/{tenant}/{scope}/{key}")
}

// ---------------------------------------------------------------------------------------
// Batches

/// A batch stays under this many bytes of values: Cassandra 4 rejects batches over 50 KiB by
/// default (`batch_size_fail_threshold_in_kb`), ScyllaDB warns from 128 KiB.
pub(super) const BATCH_BYTES: usize = 32 * 1024;

/// A rough size of one statement in a batch: its values plus per-statement overhead.
pub(super) fn statement_size(value_bytes: usize) -> usize {
    value_bytes + 32
}

/// Splits consecutive statements of the given sizes into batches of at most `limit` bytes
/// (a statement larger than the limit goes alone).
pub(super) fn chunk_by_size(sizes: &[usize], limit: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        if i > start && bytes + size > limit {
            chunks.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_domain::ids::{DeliveryId, RecipientId, TenantId};
    use herald_domain::model::{Contacts, Endpoint, Tenant};
    use herald_domain::{Channel, DeliveryStatus};

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_123 + ms).unwrap()
    }

    fn recipient(email: Option<&str>, phone: Option<&str>, updated_ms: i64) -> Recipient {
        Recipient {
            id: RecipientId::from_trusted("rcp_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
            tenant_id: TenantId::from_trusted("tnt_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
            name: None,
            contacts: Contacts {
                email: email.map(str::to_owned),
                phone: phone.map(str::to_owned),
                slack_webhook_url: Some("https://hooks.slack.com/x".to_owned()),
                ..Contacts::default()
            },
            created_at: at(0),
            updated_at: at(updated_ms),
        }
    }

    #[test]
    fn docs_round_trip_and_carry_their_stamp() {
        let tenant = Tenant {
            id: TenantId::generate(),
            name: "Acme; \"quoted\" ✓".to_owned(),
            plan: Default::default(),
            endpoint_failure_threshold: Some(7),
            created_at: at(0),
            updated_at: at(1),
        };
        let doc = encode_doc(0x1234, &tenant);
        assert!(doc.starts_with("0000000000001234{"), "{doc}");
        assert_eq!(decode_doc::<Tenant>("k", &doc).unwrap(), tenant);
    }

    #[test]
    fn docs_written_before_optional_fields_existed_still_read() {
        // Rows written before tenants had a failure threshold and endpoints a rotated secret,
        // retry schedule and rate limit: those fields are missing from the JSON.
        let tenant = r#"{"id":"tnt_01HZZZZZZZZZZZZZZZZZZZZZZZ","name":"Acme","plan":{"monthly_quota":null,"rate_limit_per_minute":60},"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.124Z"}"#;
        let tenant = decode_doc::<Tenant>("k", &format!("{:016x}{tenant}", 1)).unwrap();
        assert_eq!(tenant.endpoint_failure_threshold, None);
        let endpoint = r#"{"id":"ep_01HZZZZZZZZZZZZZZZZZZZZZZZ","tenant_id":"tnt_01HZZZZZZZZZZZZZZZZZZZZZZZ","url":"https://example.com/hook","description":null,"events":[],"signature_scheme":"standard","secret":"whsec_c2VjcmV0","is_active":true,"disabled_reason":null,"created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.123Z"}"#;
        let endpoint = decode_doc::<Endpoint>("k", &format!("{:016x}{endpoint}", 1)).unwrap();
        assert_eq!(
            (
                endpoint.previous_secret,
                endpoint.previous_secret_expires_at,
                endpoint.retry_schedule,
                endpoint.rate_limit_per_second
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn later_stamps_sort_after_earlier_ones_whatever_the_json() {
        let clock = WriteClock::default();
        let first = encode_doc(clock.next(), &"zzzz");
        let second = encode_doc(clock.next(), &"aaaa");
        assert!(second > first, "{second} must sort after {first}");
        // Across a change in the number of significant digits too.
        assert!(encode_doc(0x10, &"a") > encode_doc(0xf, &"z"));
    }

    #[test]
    fn unstamped_or_broken_docs_are_corrupt() {
        for doc in [
            "",
            "{\"a\":1}",
            "000000000000000g{}",
            "0000000000000001",
            "0000000000000001{",
        ] {
            let err = decode_doc::<serde_json::Value>("tenants/t", doc).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key, .. } if key == "tenants/t"),
                "{doc:?} gave {err:?}"
            );
        }
        // A multi-byte character across the stamp boundary must not panic.
        assert!(decode_doc::<serde_json::Value>("k", "000000000000000é{}").is_err());
    }

    #[test]
    fn times_round_trip_at_full_precision() {
        let precise = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        for at in [at(0), precise] {
            assert_eq!(decode_time("k", &encode_time(at)).unwrap(), at);
        }
        assert!(decode_time("k", "yesterday").is_err());
    }

    #[test]
    fn version_timestamps_are_microseconds() {
        assert_eq!(version_timestamp(at(0)), 1_700_000_000_123_000);
        let precise = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(version_timestamp(precise), 1_700_000_000_123_456);
        assert_eq!(unindex_timestamp(at(0)), 1_700_000_000_122_999);
        // Before the epoch is negative, not wrapped.
        assert_eq!(
            version_timestamp(DateTime::from_timestamp_millis(-1).unwrap()),
            -1_000
        );
    }

    #[test]
    fn the_write_clock_strictly_increases_and_follows_the_wall_clock() {
        let clock = WriteClock::default();
        let mut last = clock.next();
        assert!(last > 1_600_000_000_000_000, "microseconds since the epoch");
        for _ in 0..10_000 {
            let next = clock.next();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn minutes_bucket_by_utc_day() {
        assert_eq!(minute_day(0), 0);
        assert_eq!(minute_day(1439), 0);
        assert_eq!(minute_day(1440), 1);
        assert_eq!(minute_day(-1), -1);
        let minute = 1_700_000_000 / 60;
        assert_eq!(minute_day(minute), 1_700_000_000 / 86_400);
    }

    #[test]
    fn deliveries_bucket_by_the_day_in_their_id() {
        let day_ms = 19_675 * MS_PER_DAY;
        let mut delivery = Delivery {
            id: DeliveryId::derive(day_ms + 5, b"x"),
            tenant_id: TenantId::generate(),
            status: DeliveryStatus::Queued,
            channel: Channel::Email,
            recipient_id: None,
            template: None,
            created_at: DateTime::from_timestamp_millis(day_ms - 1).unwrap(),
            updated_at: at(0),
            attempts: 0,
            last_error: None,
            external_id: None,
        };
        assert_eq!(delivery_day(&delivery), 19_675);
        delivery.id = DeliveryId::from_trusted("dlv_not-a-ulid");
        assert_eq!(delivery_day(&delivery), 19_674, "falls back to created_at");
    }

    #[test]
    fn checkpoint_contributions_are_stable_and_distinct() {
        let mut checkpoint = Checkpoint::new();
        checkpoint.insert(("herald.events.v1".to_owned(), 0), 17);
        checkpoint.insert(("herald.events.v1".to_owned(), 12), 5);
        let a = checkpoint_contribution("projector", &checkpoint);
        assert_eq!(a, checkpoint_contribution("projector", &checkpoint.clone()));
        assert!(a.starts_with("projector@") && a.len() == "projector@".len() + 32);
        // Pinned: the id must not change across releases, or replays would double count.
        assert_eq!(
            checkpoint_contribution("p", &Checkpoint::new()),
            format!("p@{:032x}", 0x6c62272e07bb014262b821756295c58d_u128)
        );
        assert_ne!(a, checkpoint_contribution("projector-2", &checkpoint));
        let mut later = checkpoint.clone();
        later.insert(("herald.events.v1".to_owned(), 12), 6);
        assert_ne!(a, checkpoint_contribution("projector", &later));
        // Topic boundaries are part of the encoding: ("ab", 1) differs from ("a", ...).
        let mut x = Checkpoint::new();
        x.insert(("ab".to_owned(), 1), 1);
        let mut y = Checkpoint::new();
        y.insert(("a".to_owned(), 1), 1);
        assert_ne!(
            checkpoint_contribution("p", &x),
            checkpoint_contribution("p", &y)
        );
    }

    #[test]
    fn one_off_contributions_are_unique() {
        let a = one_off_contribution();
        let b = one_off_contribution();
        assert_ne!(a, b);
        assert!(a.starts_with('~'));
    }

    #[test]
    fn health_writes_add_up_per_minute() {
        let c = |sent, delivered, failed| HealthCounts {
            sent,
            delivered,
            failed,
        };
        let minutes =
            health_by_minute([(5, c(10, 20, 30)), (4, c(1, 2, 3)), (5, c(100, 200, 300))]);
        assert_eq!(minutes.len(), 2);
        assert_eq!(minutes[&5], c(110, 220, 330));
        assert_eq!(minutes[&4], c(1, 2, 3));
    }

    #[test]
    fn counts_and_offsets_convert_or_refuse() {
        assert_eq!(count_to_cql(7).unwrap(), 7);
        assert!(count_to_cql(u64::MAX).is_err());
        assert_eq!(count_from_cql("k", 7).unwrap(), 7);
        assert!(count_from_cql("k", -1).is_err());
        assert_eq!(
            offset_to_cql("t", 1, 1_000_000_000_000).unwrap(),
            1_000_000_000_000
        );
        assert!(offset_to_cql("t", 1, u64::MAX).is_err());
        assert_eq!(
            position_from_cql("c", "t".to_owned(), 12, 5).unwrap(),
            (("t".to_owned(), 12), 5)
        );
        assert!(position_from_cql("c", "t".to_owned(), -1, 5).is_err());
        assert!(position_from_cql("c", "t".to_owned(), i64::from(u32::MAX) + 1, 5).is_err());
        assert!(position_from_cql("c", "t".to_owned(), 1, -5).is_err());
    }

    #[test]
    fn contact_changes_drop_only_what_changed() {
        let v1 = recipient(Some("ada@example.com"), Some("+49301"), 100);
        let v2 = recipient(Some("ada.l@example.com"), Some("+49301"), 200);
        let (stale, fresh) = contact_changes(Some(&v1), &v2);
        assert_eq!(stale, vec![(ContactKind::Email, "ada@example.com")]);
        assert_eq!(
            fresh,
            vec![
                (ContactKind::Email, "ada.l@example.com"),
                (ContactKind::Phone, "+49301"),
                (ContactKind::SlackWebhookUrl, "https://hooks.slack.com/x"),
            ]
        );
        let v3 = recipient(None, Some("+49301"), 300);
        let (stale, _) = contact_changes(Some(&v2), &v3);
        assert_eq!(stale, vec![(ContactKind::Email, "ada.l@example.com")]);
        let (stale, fresh) = contact_changes(None, &v1);
        assert!(stale.is_empty());
        assert_eq!(fresh.len(), 3);
    }

    #[test]
    fn contacts_are_matched_by_kind_and_value() {
        let r = recipient(Some("ada@example.com"), Some("+49301"), 100);
        assert!(has_contact(&r, ContactKind::Email, "ada@example.com"));
        assert!(!has_contact(&r, ContactKind::Phone, "ada@example.com"));
        assert!(!has_contact(
            &r,
            ContactKind::DiscordWebhookUrl,
            "https://hooks.slack.com/x"
        ));
        assert!(has_contact(
            &r,
            ContactKind::SlackWebhookUrl,
            "https://hooks.slack.com/x"
        ));
    }

    #[test]
    fn recipient_writes_win_when_equal_or_newer() {
        let stored = recipient(None, None, 200);
        assert!(recipient_write_wins(None, &stored));
        assert!(recipient_write_wins(
            Some(&stored),
            &recipient(None, None, 200)
        ));
        assert!(recipient_write_wins(
            Some(&stored),
            &recipient(None, None, 201)
        ));
        assert!(!recipient_write_wins(
            Some(&stored),
            &recipient(None, None, 199)
        ));
    }

    fn pending(id: &str, claimed_at_ms: i64) -> StoredClaim {
        StoredClaim {
            id: Some(id.to_owned()),
            completed: Some(false),
            claimed_at_ms: Some(claimed_at_ms),
            response: None,
            expires_at_ms: None,
        }
    }

    #[test]
    fn claim_steps_follow_the_store_rules() {
        const LEASE: i64 = 30_000;
        let row = pending("dlv_a", 1_000);
        assert_eq!(
            claim_step("k", &row, 1_000 + LEASE - 1, LEASE).unwrap(),
            ClaimStep::Answer(ClaimOutcome::InFlight)
        );
        assert_eq!(
            claim_step("k", &row, 1_000 + LEASE, LEASE).unwrap(),
            ClaimStep::TakeOver {
                id: "dlv_a".to_owned(),
                claimed_at_ms: 1_000
            }
        );
        let done = StoredClaim {
            completed: Some(true),
            response: Some("{}".to_owned()),
            expires_at_ms: Some(50_000),
            ..row.clone()
        };
        assert_eq!(
            claim_step("k", &done, 49_999, LEASE).unwrap(),
            ClaimStep::Answer(ClaimOutcome::Completed {
                id: "dlv_a".to_owned(),
                response: Some("{}".to_owned())
            })
        );
        assert_eq!(
            claim_step("k", &done, 50_000, LEASE).unwrap(),
            ClaimStep::Replace {
                old_id: "dlv_a".to_owned(),
                expires_at_ms: 50_000
            }
        );
        let forever = StoredClaim {
            expires_at_ms: None,
            ..done
        };
        assert_eq!(
            claim_step("k", &forever, i64::MAX / 2, LEASE).unwrap(),
            ClaimStep::Answer(ClaimOutcome::Completed {
                id: "dlv_a".to_owned(),
                response: Some("{}".to_owned())
            })
        );
        let broken = StoredClaim::default();
        assert!(claim_step("k", &broken, 0, LEASE).is_err());
    }

    #[test]
    fn claim_ttls_round_up_and_never_mean_forever_by_accident() {
        assert_eq!(claim_ttl_secs(None, 0), 0);
        assert_eq!(claim_ttl_secs(Some(300_000), 0), 300);
        assert_eq!(claim_ttl_secs(Some(300_001), 0), 301);
        assert_eq!(claim_ttl_secs(Some(1), 0), 1);
        assert_eq!(
            claim_ttl_secs(Some(0), 0),
            1,
            "already expired: shortest TTL"
        );
        assert_eq!(claim_ttl_secs(Some(-5_000), 0), 1);
        assert_eq!(claim_ttl_secs(Some(i64::MAX), 0), MAX_TTL_SECS);
        assert_eq!(claim_ttl_secs(Some(i64::MIN), i64::MAX), 1);
    }

    #[test]
    fn batches_split_by_size() {
        assert!(chunk_by_size(&[], 100).is_empty());
        assert_eq!(chunk_by_size(&[10, 20, 30], 100), vec![0..3]);
        assert_eq!(chunk_by_size(&[60, 50, 40, 10], 100), vec![0..1, 1..4]);
        assert_eq!(chunk_by_size(&[150, 10, 200], 100), vec![0..1, 1..2, 2..3]);
        assert_eq!(chunk_by_size(&[50, 50, 50], 100), vec![0..2, 2..3]);
        assert_eq!(statement_size(10), 42);
    }
}
