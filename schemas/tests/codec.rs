//! Round-trip, wire-format, error and schema-file tests for `herald-schemas`.
//!
//! The wire format is checked against independent implementations of the spec's Parsing
//! Canonical Form and CRC-64-AVRO written here, not just against apache-avro, because the
//! promise is that non-Rust consumers can read the topics with the `.avsc` files alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use herald_schemas::*;
use proptest::prelude::*;
use proptest::sample::Index;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value as Json;

// ---------------------------------------------------------------------------------------------
// Strategies

/// Arbitrary unicode (incl. empty), plus lengths that need multi-byte length varints.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "\\PC{60,300}",
        "[a-z_]{1,12}",
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

/// i64 with the extremes (and zig-zag edge cases) well represented.
fn long() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just(-1),
        Just(1),
        0..4_102_444_800_000i64,
        any::<i64>(),
    ]
}

fn int() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(i32::MIN),
        Just(i32::MAX),
        Just(0),
        Just(-1),
        any::<i32>()
    ]
}

fn send_requested() -> impl Strategy<Value = SendRequested> {
    (
        (text(), text(), opt_text(), text(), text(), text(), text()),
        (opt_text(), text(), text(), text(), prop::option::of(long())),
        (opt_text(), long()),
    )
        .prop_map(
            |(
                (tenant_id, delivery_id, request_id, recipient_id, channel, template, vars_json),
                (subject, body, destination, priority, scheduled_for),
                (idempotency_key, requested_at),
            )| SendRequested {
                tenant_id,
                delivery_id,
                request_id,
                recipient_id,
                channel,
                template,
                vars_json,
                subject,
                body,
                destination,
                priority,
                scheduled_for,
                idempotency_key,
                requested_at,
            },
        )
}

fn business_event_received() -> impl Strategy<Value = BusinessEventReceived> {
    (
        (text(), text(), text(), text(), opt_text()),
        (
            opt_text(),
            opt_text(),
            text(),
            prop::option::of(long()),
            long(),
        ),
    )
        .prop_map(
            |(
                (tenant_id, event_id, external_id, event_name, source),
                (actor_type, actor_id, data_json, occurred_at, received_at),
            )| BusinessEventReceived {
                tenant_id,
                event_id,
                external_id,
                event_name,
                source,
                actor_type,
                actor_id,
                data_json,
                occurred_at,
                received_at,
            },
        )
}

fn delivery_task() -> impl Strategy<Value = DeliveryTask> {
    (
        (
            text(),
            text(),
            text(),
            opt_text(),
            opt_text(),
            text(),
            opt_text(),
        ),
        (text(), text(), opt_text(), int(), long(), long(), text()),
    )
        .prop_map(
            |(
                (tenant_id, delivery_id, channel, endpoint_id, recipient_id, destination, subject),
                (body, message_id, event_type, attempt, not_before, created_at, priority),
            )| DeliveryTask {
                tenant_id,
                delivery_id,
                channel,
                endpoint_id,
                recipient_id,
                destination,
                subject,
                body,
                message_id,
                event_type,
                attempt,
                not_before,
                created_at,
                priority,
            },
        )
}

fn delivery_attempted() -> impl Strategy<Value = DeliveryAttempted> {
    (
        (text(), text(), text(), opt_text(), int(), text()),
        (
            prop::option::of(int()),
            opt_text(),
            opt_text(),
            long(),
            long(),
            prop::option::of(long()),
        ),
        (opt_text(), opt_text(), prop::option::of(int())),
    )
        .prop_map(
            |(
                (tenant_id, delivery_id, channel, endpoint_id, attempt, outcome),
                (status_code, error, response_excerpt, latency_ms, attempted_at, next_attempt_at),
                (message_id, event_type, consecutive_failures),
            )| DeliveryAttempted {
                tenant_id,
                delivery_id,
                channel,
                endpoint_id,
                attempt,
                outcome,
                status_code,
                error,
                response_excerpt,
                latency_ms,
                attempted_at,
                next_attempt_at,
                message_id,
                event_type,
                consecutive_failures,
            },
        )
}

fn delivery_succeeded() -> impl Strategy<Value = DeliverySucceeded> {
    (
        text(),
        text(),
        text(),
        opt_text(),
        int(),
        text(),
        opt_text(),
        long(),
    )
        .prop_map(
            |(
                tenant_id,
                delivery_id,
                channel,
                endpoint_id,
                attempt,
                status,
                external_id,
                succeeded_at,
            )| DeliverySucceeded {
                tenant_id,
                delivery_id,
                channel,
                endpoint_id,
                attempt,
                status,
                external_id,
                succeeded_at,
            },
        )
}

fn delivery_failed() -> impl Strategy<Value = DeliveryFailed> {
    (text(), text(), text(), opt_text(), int(), text(), long()).prop_map(
        |(tenant_id, delivery_id, channel, endpoint_id, attempts, reason, failed_at)| {
            DeliveryFailed {
                tenant_id,
                delivery_id,
                channel,
                endpoint_id,
                attempts,
                reason,
                failed_at,
            }
        },
    )
}

fn endpoint_disabled() -> impl Strategy<Value = EndpointDisabled> {
    (text(), text(), text(), int(), long()).prop_map(
        |(tenant_id, endpoint_id, reason, consecutive_failures, disabled_at)| EndpointDisabled {
            tenant_id,
            endpoint_id,
            reason,
            consecutive_failures,
            disabled_at,
        },
    )
}

fn tenant_upserted() -> impl Strategy<Value = TenantUpserted> {
    (
        text(),
        text(),
        prop::option::of(long()),
        int(),
        prop::option::of(int()),
        long(),
        long(),
    )
        .prop_map(
            |(
                tenant_id,
                name,
                monthly_quota,
                rate_limit_per_minute,
                endpoint_failure_threshold,
                created_at,
                updated_at,
            )| {
                TenantUpserted {
                    tenant_id,
                    name,
                    monthly_quota,
                    rate_limit_per_minute,
                    endpoint_failure_threshold,
                    created_at,
                    updated_at,
                }
            },
        )
}

fn api_key_created() -> impl Strategy<Value = ApiKeyCreated> {
    (text(), text(), text(), text(), "[0-9a-f]{64}", long()).prop_map(
        |(tenant_id, key_id, name, prefix, key_hash, created_at)| ApiKeyCreated {
            tenant_id,
            key_id,
            name,
            prefix,
            key_hash,
            created_at,
        },
    )
}

fn api_key_revoked() -> impl Strategy<Value = ApiKeyRevoked> {
    (text(), text(), text(), long()).prop_map(|(tenant_id, key_id, key_hash, revoked_at)| {
        ApiKeyRevoked {
            tenant_id,
            key_id,
            key_hash,
            revoked_at,
        }
    })
}

fn channel_content() -> impl Strategy<Value = ChannelContent> {
    (opt_text(), text()).prop_map(|(subject, body)| ChannelContent { subject, body })
}

fn template_upserted() -> impl Strategy<Value = TemplateUpserted> {
    (
        text(),
        text(),
        text(),
        prop::collection::btree_map(text(), channel_content(), 0..6),
        long(),
        long(),
    )
        .prop_map(
            |(tenant_id, template_id, slug, channels, created_at, updated_at)| TemplateUpserted {
                tenant_id,
                template_id,
                slug,
                channels,
                created_at,
                updated_at,
            },
        )
}

fn template_deleted() -> impl Strategy<Value = TemplateDeleted> {
    (text(), text(), text(), long()).prop_map(|(tenant_id, template_id, slug, deleted_at)| {
        TemplateDeleted {
            tenant_id,
            template_id,
            slug,
            deleted_at,
        }
    })
}

fn endpoint_upserted() -> impl Strategy<Value = EndpointUpserted> {
    (
        (
            text(),
            text(),
            text(),
            opt_text(),
            prop::collection::vec(text(), 0..8),
        ),
        (text(), text(), any::<bool>(), opt_text(), long(), long()),
        (
            opt_text(),
            prop::option::of(long()),
            opt_text(),
            prop::option::of(int()),
        ),
    )
        .prop_map(
            |(
                (tenant_id, endpoint_id, url, description, events),
                (signature_scheme, secret, is_active, disabled_reason, created_at, updated_at),
                (
                    previous_secret,
                    previous_secret_expires_at,
                    retry_schedule,
                    rate_limit_per_second,
                ),
            )| EndpointUpserted {
                tenant_id,
                endpoint_id,
                url,
                description,
                events,
                signature_scheme,
                secret,
                is_active,
                disabled_reason,
                created_at,
                updated_at,
                previous_secret,
                previous_secret_expires_at,
                retry_schedule,
                rate_limit_per_second,
            },
        )
}

fn endpoint_deleted() -> impl Strategy<Value = EndpointDeleted> {
    (text(), text(), long()).prop_map(|(tenant_id, endpoint_id, deleted_at)| EndpointDeleted {
        tenant_id,
        endpoint_id,
        deleted_at,
    })
}

fn delivery_requeued() -> impl Strategy<Value = DeliveryRequeued> {
    (text(), text(), text(), int(), long()).prop_map(
        |(tenant_id, delivery_id, channel, attempt, requested_at)| DeliveryRequeued {
            tenant_id,
            delivery_id,
            channel,
            attempt,
            requested_at,
        },
    )
}

fn recipient_upserted() -> impl Strategy<Value = RecipientUpserted> {
    (
        (text(), text(), opt_text(), opt_text(), opt_text()),
        (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            long(),
            long(),
        ),
    )
        .prop_map(
            |(
                (tenant_id, recipient_id, name, email, phone),
                (
                    whatsapp_phone,
                    telegram_chat_id,
                    slack_webhook_url,
                    discord_webhook_url,
                    created_at,
                    updated_at,
                ),
            )| RecipientUpserted {
                tenant_id,
                recipient_id,
                name,
                email,
                phone,
                whatsapp_phone,
                telegram_chat_id,
                slack_webhook_url,
                discord_webhook_url,
                created_at,
                updated_at,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The `.avsc` file for `name`, read from disk (not via the crate) so tests see the real file.
fn avsc_file(name: &str) -> String {
    let path = format!("{}/avro/{name}.avsc", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asserts that `value` (from `apache_avro::to_value` of a struct) has exactly the schema's
/// record fields, in the schema's order, recursing into nested records. `Value::validate`
/// alone would accept a struct that lacks a nullable field.
fn assert_same_fields(value: &Value, schema: &Schema, path: &str) {
    match (value, schema) {
        (Value::Record(fields), Schema::Record(record)) => {
            let got: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(got, want, "field names of {path}");
            for ((name, v), f) in fields.iter().zip(&record.fields) {
                assert_same_fields(v, &f.schema, &format!("{path}.{name}"));
            }
        }
        (Value::Union(_, v), Schema::Union(u)) => {
            for variant in u.variants() {
                if let Schema::Record(_) = variant {
                    assert_same_fields(v, variant, path);
                }
            }
        }
        (Value::Map(m), Schema::Map(inner)) => {
            for (k, v) in m {
                assert_same_fields(v, &inner.types, &format!("{path}[{k:?}]"));
            }
        }
        (Value::Array(items), Schema::Array(inner)) => {
            for v in items {
                assert_same_fields(v, &inner.items, &format!("{path}[]"));
            }
        }
        _ => {}
    }
}

/// Everything checked for each record type with arbitrary values.
fn check_record<T>(record: T, cut: Index) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + Into<HeraldEvent>,
{
    let event: HeraldEvent = record.clone().into();
    let name = event.name();
    let bytes = encode(&event).expect("encode");

    // Round trip.
    prop_assert_eq!(&decode(&bytes).expect("decode"), &event);

    // Header: marker, then the fingerprint of this record's schema.
    prop_assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    prop_assert_eq!(&bytes[2..10], &fingerprint_of(name).unwrap()[..]);

    // A generic Avro reader with only the .avsc file reads the datum back to the same value.
    let schema = Schema::parse_str(&avsc_file(name)).unwrap();
    let mut datum = &bytes[HEADER_LEN..];
    let value = GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut datum)
        .expect("generic read");
    prop_assert!(datum.is_empty(), "generic reader left bytes over");
    prop_assert_eq!(&apache_avro::from_value::<T>(&value).unwrap(), &record);

    // ...and a generic, validating writer's output decodes with ours.
    let generic = apache_avro::to_value(&record).unwrap();
    prop_assert!(generic.validate(&schema), "to_value does not validate");
    assert_same_fields(&generic, &schema, name);
    let mut framed = bytes[..HEADER_LEN].to_vec();
    GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value(&mut framed, generic)
        .expect("generic write");
    prop_assert_eq!(&decode(&framed).expect("decode generic"), &event);

    // Any truncation is an error, never a panic or a wrong value.
    let len = cut.index(bytes.len());
    match decode(&bytes[..len]) {
        Err(SchemaError::TooShort { .. }) => prop_assert!(len < HEADER_LEN),
        Err(SchemaError::Malformed { record, .. }) => {
            prop_assert!(len >= HEADER_LEN);
            prop_assert_eq!(record, name);
        }
        other => prop_assert!(false, "truncated to {len}: {other:?}"),
    }
    Ok(())
}

macro_rules! record_tests {
    ($($test:ident: $strategy:ident => $name:literal,)+) => {
        proptest! {
            $(
                #[test]
                fn $test(record in $strategy(), cut in any::<Index>()) {
                    check_record(record, cut)?;
                }
            )+
        }

        /// Fails if a record type is added without a round-trip test above.
        const TESTED: &[&str] = &[$($name),+];
    };
}

record_tests! {
    roundtrip_send_requested: send_requested => "SendRequested",
    roundtrip_business_event_received: business_event_received => "BusinessEventReceived",
    roundtrip_delivery_task: delivery_task => "DeliveryTask",
    roundtrip_delivery_attempted: delivery_attempted => "DeliveryAttempted",
    roundtrip_delivery_succeeded: delivery_succeeded => "DeliverySucceeded",
    roundtrip_delivery_failed: delivery_failed => "DeliveryFailed",
    roundtrip_endpoint_disabled: endpoint_disabled => "EndpointDisabled",
    roundtrip_tenant_upserted: tenant_upserted => "TenantUpserted",
    roundtrip_api_key_created: api_key_created => "ApiKeyCreated",
    roundtrip_api_key_revoked: api_key_revoked => "ApiKeyRevoked",
    roundtrip_template_upserted: template_upserted => "TemplateUpserted",
    roundtrip_template_deleted: template_deleted => "TemplateDeleted",
    roundtrip_endpoint_upserted: endpoint_upserted => "EndpointUpserted",
    roundtrip_recipient_upserted: recipient_upserted => "RecipientUpserted",
    roundtrip_endpoint_deleted: endpoint_deleted => "EndpointDeleted",
    roundtrip_delivery_requeued: delivery_requeued => "DeliveryRequeued",
}

#[test]
fn every_record_type_has_a_roundtrip_test() {
    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    let known: BTreeSet<&str> = schemas().map(|(name, _)| name).collect();
    assert_eq!(tested, known);
}

fn any_event() -> impl Strategy<Value = HeraldEvent> {
    prop_oneof![
        send_requested().prop_map(HeraldEvent::from),
        business_event_received().prop_map(HeraldEvent::from),
        delivery_task().prop_map(HeraldEvent::from),
        delivery_attempted().prop_map(HeraldEvent::from),
        delivery_succeeded().prop_map(HeraldEvent::from),
        delivery_failed().prop_map(HeraldEvent::from),
        endpoint_disabled().prop_map(HeraldEvent::from),
        tenant_upserted().prop_map(HeraldEvent::from),
        api_key_created().prop_map(HeraldEvent::from),
        api_key_revoked().prop_map(HeraldEvent::from),
        template_upserted().prop_map(HeraldEvent::from),
        template_deleted().prop_map(HeraldEvent::from),
        endpoint_upserted().prop_map(HeraldEvent::from),
        recipient_upserted().prop_map(HeraldEvent::from),
        endpoint_deleted().prop_map(HeraldEvent::from),
        delivery_requeued().prop_map(HeraldEvent::from),
    ]
}

proptest! {
    /// Corrupting a valid message anywhere may yield an error or (rarely) another valid value,
    /// but never a panic.
    #[test]
    fn corrupted_messages_do_not_panic(
        event in any_event(),
        at in any::<Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode(&event).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode(&bytes);
    }

    /// Garbage after a valid header never panics either.
    #[test]
    fn garbage_datum_does_not_panic(
        event in any_event(),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = encode(&event).unwrap()[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&garbage);
        let _ = decode(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Wire format, against the spec

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Parsing Canonical Form, written from the Avro spec rather than taken from apache-avro.
fn spec_canonical_form(schema: &Json, namespace: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap();
    let full_name = |name: &str, ns: &str| {
        if name.contains('.') || ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}.{name}")
        }
    };
    match schema {
        Json::String(s) if PRIMITIVES.contains(&s.as_str()) => quote(s),
        Json::String(s) => quote(&full_name(s, namespace)),
        Json::Array(union) => {
            let parts: Vec<String> = union
                .iter()
                .map(|s| spec_canonical_form(s, namespace))
                .collect();
            format!("[{}]", parts.join(","))
        }
        Json::Object(map) => {
            let ty = map["type"].as_str();
            match ty {
                // [PRIMITIVES]: {"type": "long", ...} is just "long".
                Some(t) if PRIMITIVES.contains(&t) => quote(t),
                Some(t @ ("record" | "enum" | "fixed")) => {
                    let ns = map
                        .get("namespace")
                        .and_then(Json::as_str)
                        .unwrap_or(namespace);
                    let name = full_name(map["name"].as_str().unwrap(), ns);
                    let inner_ns = name.rsplit_once('.').map_or("", |(ns, _)| ns);
                    let mut out = format!("{{\"name\":{},\"type\":{}", quote(&name), quote(t));
                    if let Some(fields) = map.get("fields") {
                        let fields: Vec<String> = fields
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|f| {
                                format!(
                                    "{{\"name\":{},\"type\":{}}}",
                                    quote(f["name"].as_str().unwrap()),
                                    spec_canonical_form(&f["type"], inner_ns)
                                )
                            })
                            .collect();
                        out += &format!(",\"fields\":[{}]", fields.join(","));
                    }
                    if let Some(symbols) = map.get("symbols") {
                        out += &format!(",\"symbols\":{symbols}");
                    }
                    if let Some(size) = map.get("size") {
                        out += &format!(",\"size\":{size}");
                    }
                    out + "}"
                }
                Some("array") => format!(
                    "{{\"type\":\"array\",\"items\":{}}}",
                    spec_canonical_form(&map["items"], namespace)
                ),
                Some("map") => format!(
                    "{{\"type\":\"map\",\"values\":{}}}",
                    spec_canonical_form(&map["values"], namespace)
                ),
                _ => spec_canonical_form(&map["type"], namespace),
            }
        }
        other => panic!("not a schema: {other}"),
    }
}

/// CRC-64-AVRO exactly as the spec's reference code, little-endian as in single-object headers.
fn spec_rabin(data: &[u8]) -> [u8; 8] {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: Vec<u64> = (0..256u64)
        .map(|i| (0..8).fold(i, |fp, _| (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg())))
        .collect();
    data.iter()
        .fold(EMPTY, |fp, &b| {
            (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]
        })
        .to_le_bytes()
}

#[test]
fn rabin_matches_spec_test_vector() {
    // From the Avro test suite: fingerprint64("\"null\"") == 7195948357588979594.
    assert_eq!(
        spec_rabin(b"\"null\""),
        7_195_948_357_588_979_594i64.to_le_bytes()
    );
}

#[test]
fn header_is_marker_plus_spec_fingerprint() {
    let event = HeraldEvent::from(ApiKeyRevoked {
        tenant_id: "ten_1".into(),
        key_id: "key_1".into(),
        key_hash: "ab".repeat(32),
        revoked_at: 1_700_000_000_000,
    });
    let bytes = encode(&event).unwrap();
    let json: Json = serde_json::from_str(&avsc_file("ApiKeyRevoked")).unwrap();
    let canonical = spec_canonical_form(&json, "");
    assert_eq!(
        canonical,
        r#"{"name":"dev.herald.events.ApiKeyRevoked","type":"record","fields":[{"name":"tenant_id","type":"string"},{"name":"key_id","type":"string"},{"name":"key_hash","type":"string"},{"name":"revoked_at","type":"long"}]}"#
    );
    let mut header = vec![0xC3, 0x01];
    header.extend_from_slice(&spec_rabin(canonical.as_bytes()));
    assert_eq!(&bytes[..HEADER_LEN], &header[..]);
    assert_eq!(event.fingerprint(), spec_rabin(canonical.as_bytes()));
    // The rest is the plain Avro binary datum: "ten_1" is length 5 (zig-zag 0x0a) then bytes.
    assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 6], b"\x0aten_1");
}

#[test]
fn library_canonical_form_and_fingerprint_match_the_spec() {
    for (name, schema) in schemas() {
        let json: Json = serde_json::from_str(avsc(name).unwrap()).unwrap();
        let canonical = spec_canonical_form(&json, "");
        assert_eq!(schema.canonical_form(), canonical, "{name}");
        assert_eq!(
            fingerprint_of(name).unwrap(),
            spec_rabin(canonical.as_bytes()),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

fn sample() -> HeraldEvent {
    HeraldEvent::from(DeliveryFailed {
        tenant_id: "ten_1".into(),
        delivery_id: "dlv_1".into(),
        channel: "email".into(),
        endpoint_id: None,
        attempts: 3,
        reason: "mailbox unavailable".into(),
        failed_at: 1_700_000_000_000,
    })
}

#[test]
fn bad_marker_is_rejected() {
    let mut bytes = encode(&sample()).unwrap();
    bytes[1] = 0x02;
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            SchemaError::BadMarker {
                found: [0xC3, 0x02]
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("c3 02"), "{err}");
}

#[test]
fn short_input_is_rejected() {
    for len in 0..HEADER_LEN {
        let bytes = &encode(&sample()).unwrap()[..len];
        assert!(
            matches!(decode(bytes), Err(SchemaError::TooShort { len: l }) if l == len),
            "len {len}"
        );
    }
}

#[test]
fn unknown_fingerprint_is_reported_in_hex() {
    let mut bytes = encode(&sample()).unwrap();
    bytes[2..10].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03]);
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, SchemaError::UnknownFingerprint { fingerprint } if fingerprint[0] == 0xde),
        "{err:?}"
    );
    assert!(err.to_string().contains("deadbeef00010203"), "{err}");
}

#[test]
fn truncated_datum_is_malformed_with_source() {
    let bytes = encode(&sample()).unwrap();
    let err = decode(&bytes[..bytes.len() - 1]).unwrap_err();
    match &err {
        SchemaError::Malformed { record, .. } => assert_eq!(*record, "DeliveryFailed"),
        other => panic!("{other:?}"),
    }
    let source = std::error::Error::source(&err).expect("apache_avro error as source");
    assert!(source.downcast_ref::<apache_avro::Error>().is_some());
}

#[test]
fn header_only_is_malformed() {
    let bytes = encode(&sample()).unwrap();
    assert!(matches!(
        decode(&bytes[..HEADER_LEN]),
        Err(SchemaError::Malformed { .. })
    ));
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode(&sample()).unwrap();
    bytes.extend_from_slice(&[0, 0]);
    assert!(matches!(
        decode(&bytes),
        Err(SchemaError::TrailingBytes {
            record: "DeliveryFailed",
            count: 2
        })
    ));
}

#[test]
fn invalid_utf8_is_malformed() {
    let mut bytes = encode(&sample()).unwrap();
    // tenant_id "ten_1" starts right after its length byte.
    bytes[HEADER_LEN + 1] = 0xff;
    assert!(matches!(decode(&bytes), Err(SchemaError::Malformed { .. })));
}

#[test]
fn bad_union_index_is_malformed() {
    let event = HeraldEvent::from(DeliveryFailed {
        tenant_id: String::new(),
        delivery_id: String::new(),
        channel: String::new(),
        endpoint_id: None,
        attempts: 0,
        reason: String::new(),
        failed_at: 0,
    });
    let mut bytes = encode(&event).unwrap();
    // Three empty strings (one 0x00 byte each), then endpoint_id's union branch: make it 7.
    assert_eq!(bytes[HEADER_LEN + 3], 0x00);
    bytes[HEADER_LEN + 3] = 14; // zig-zag 7
    assert!(matches!(decode(&bytes), Err(SchemaError::Malformed { .. })));
}

// ---------------------------------------------------------------------------------------------
// The .avsc files

fn avsc_dir_files() -> BTreeMap<String, String> {
    let dir = format!("{}/avro", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn every_avsc_file_parses_is_registered_and_has_a_distinct_fingerprint() {
    let files = avsc_dir_files();
    assert_eq!(files.len(), 16);
    let mut fingerprints = BTreeSet::new();
    for (stem, text) in &files {
        let schema = Schema::parse_str(text).unwrap_or_else(|e| panic!("{stem}.avsc: {e}"));
        let Schema::Record(record) = &schema else {
            panic!("{stem}.avsc is not a record");
        };
        assert_eq!(record.name.name(), stem, "file name = record name");
        assert_eq!(record.name.namespace(), Some("dev.herald.events"));
        assert_eq!(avsc(stem), Some(text.as_str()), "{stem} is embedded");
        let fp = schema.fingerprint::<apache_avro::rabin::Rabin>().bytes;
        assert_eq!(fingerprint_of(stem).unwrap()[..], fp[..]);
        assert!(fingerprints.insert(fp), "{stem} shares a fingerprint");
    }
    assert_eq!(schemas().count(), files.len());
}

/// Walks every record in a schema's JSON, checking the evolution rules in the crate docs.
fn check_conventions(json: &Json, path: &str) {
    let Some(map) = json.as_object() else {
        if let Some(union) = json.as_array() {
            union.iter().for_each(|s| check_conventions(s, path));
        }
        return;
    };
    let ty = map.get("type");
    assert!(map.get("logicalType").is_none(), "{path}: no logical types");
    assert_ne!(ty.and_then(Json::as_str), Some("enum"), "{path}: no enums");
    match ty.and_then(Json::as_str) {
        Some("record") => {
            assert!(map.get("doc").is_some_and(|d| d.is_string()), "{path}: doc");
            for field in map["fields"].as_array().unwrap() {
                let name = field["name"].as_str().unwrap();
                let path = format!("{path}.{name}");
                let doc = field.get("doc").and_then(Json::as_str).unwrap_or("");
                assert!(!doc.is_empty(), "{path}: every field needs a doc");
                if let Some(union) = field["type"].as_array() {
                    assert_eq!(union.len(), 2, "{path}: optional = [null, T]");
                    assert_eq!(union[0], "null", "{path}: null first");
                    assert_eq!(
                        field.get("default"),
                        Some(&Json::Null),
                        "{path}: default null"
                    );
                }
                check_conventions(&field["type"], &path);
            }
        }
        Some("array") => check_conventions(&map["items"], path),
        Some("map") => check_conventions(&map["values"], path),
        _ => {
            if let Some(ty) = ty {
                check_conventions(ty, path);
            }
        }
    }
}

#[test]
fn avsc_files_follow_the_evolution_conventions() {
    for (stem, text) in avsc_dir_files() {
        let json: Json = serde_json::from_str(&text).unwrap();
        check_conventions(&json, &stem);
    }
}

#[test]
fn adding_an_optional_field_is_backward_compatible() {
    // Simulate version 1 of DeliveryFailed without `endpoint_id`, written by an old producer.
    let mut old: Json = serde_json::from_str(avsc("DeliveryFailed").unwrap()).unwrap();
    old["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "endpoint_id");
    let old = Schema::parse_str(&old.to_string()).unwrap();
    let new = schema_of("DeliveryFailed").unwrap();
    SchemaCompatibility::can_read(&old, new).expect("new schema reads old data");

    let mut old_record = match sample() {
        HeraldEvent::DeliveryFailed(r) => r,
        _ => unreachable!(),
    };
    old_record.endpoint_id = Some("dropped".into());
    let mut value = apache_avro::to_value(&old_record).unwrap();
    if let Value::Record(fields) = &mut value {
        fields.retain(|(n, _)| n != "endpoint_id");
    }
    let datum = GenericDatumWriter::builder(&old)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let read = GenericDatumReader::builder(&old)
        .reader_schema(new)
        .build()
        .unwrap()
        .read_value(&mut &datum[..])
        .unwrap();
    let upgraded: DeliveryFailed = apache_avro::from_value(&read).unwrap();
    assert_eq!(upgraded.endpoint_id, None);
    assert_eq!(upgraded.reason, old_record.reason);
}

#[test]
fn registry_lookups() {
    let event = sample();
    assert_eq!(event.name(), "DeliveryFailed");
    assert_eq!(event.tenant_id(), "ten_1");
    assert_eq!(Some(event.fingerprint()), fingerprint_of("DeliveryFailed"));
    assert!(schema_of("DeliveryFailed").is_some());
    assert!(schema_of("NoSuchRecord").is_none());
    assert!(
        fingerprint_of("ChannelContent").is_none(),
        "nested, not a topic record"
    );
    let names: Vec<&str> = schemas().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 16);
    assert_eq!(names[0], "SendRequested");
}
