//! The known schemas, parsed once from the embedded `.avsc` files.

use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{rabin::Rabin, Schema};

use crate::{Kind, SOURCES};

/// Namespace every Herald record lives in.
const NAMESPACE: &str = "dev.herald.events";

pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) source: &'static str,
    pub(crate) schema: Schema,
    pub(crate) fingerprint: [u8; 8],
}

/// Parsed schemas, indexed by `Kind as usize`. A bad `.avsc` is a build-time mistake, so it
/// panics here (and in the tests) rather than surfacing as a runtime error on every call.
static REGISTRY: LazyLock<Vec<Entry>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .enumerate()
        .map(|(index, &(kind, name, source))| {
            assert_eq!(kind as usize, index, "SOURCES is out of Kind order");
            let schema = Schema::parse_str(source)
                .unwrap_or_else(|e| panic!("schemas/avro/{name}.avsc does not parse: {e}"));
            match &schema {
                Schema::Record(record) => {
                    assert_eq!(record.name.name(), name, "record name in {name}.avsc");
                    assert_eq!(
                        record.name.namespace(),
                        Some(NAMESPACE),
                        "namespace in {name}.avsc"
                    );
                }
                _ => panic!("schemas/avro/{name}.avsc is not a record schema"),
            }
            let fingerprint = schema
                .fingerprint::<Rabin>()
                .bytes
                .try_into()
                .expect("a Rabin fingerprint is 8 bytes");
            Entry {
                name,
                kind,
                source,
                schema,
                fingerprint,
            }
        })
        .collect()
});

/// A writer and reader per schema, built once: constructing them resolves the schema's
/// named types, which is wasted work to repeat per message.
pub(crate) struct Codec {
    pub(crate) writer: GenericDatumWriter<'static>,
    pub(crate) reader: GenericDatumReader<'static>,
}

static CODECS: LazyLock<Vec<Codec>> = LazyLock::new(|| {
    REGISTRY
        .iter()
        .map(|entry| Codec {
            // human_readable only affects types with two serde representations (none here),
            // but pinning it keeps encode and decode independent of the library's global.
            writer: GenericDatumWriter::builder(&entry.schema)
                .human_readable(false)
                .build()
                .unwrap_or_else(|e| panic!("cannot build writer for {}: {e}", entry.name)),
            reader: GenericDatumReader::builder(&entry.schema)
                .human_readable(false)
                .build()
                .unwrap_or_else(|e| panic!("cannot build reader for {}: {e}", entry.name)),
        })
        .collect()
});

pub(crate) fn entry(kind: Kind) -> &'static Entry {
    &REGISTRY[kind as usize]
}

pub(crate) fn codec(kind: Kind) -> &'static Codec {
    &CODECS[kind as usize]
}

pub(crate) fn by_fingerprint(fingerprint: [u8; 8]) -> Option<&'static Entry> {
    // Fourteen entries: a linear scan beats hashing.
    REGISTRY.iter().find(|e| e.fingerprint == fingerprint)
}

macro_rules! history {
    ($kind:ident, $file:literal) => {
        (
            Kind::$kind,
            $file,
            include_str!(concat!("../avro/history/", $file)),
        )
    };
}

/// Earlier versions of the record schemas: `(kind, file in avro/history/, .avsc text)`.
///
/// When a schema in `avro/` changes (backward-compatibly: only optional fields with defaults
/// added), its previous text moves to `avro/history/<Record>.v<N>.avsc` and is listed here, so
/// records already in the log — written with the old fingerprint — still decode: they are
/// read with the schema that wrote them and resolved to the current one. The test
/// `current_fingerprints_are_pinned` fails when a schema changes without this step.
pub(crate) const HISTORY: &[(Kind, &str, &str)] = &[
    // v1 → v2: endpoint secrets may be sealed; rotation, retry schedule and throttle added.
    history!(EndpointUpserted, "EndpointUpserted.v1.avsc"),
    // v1 → v2: per-tenant endpoint failure threshold added.
    history!(TenantUpserted, "TenantUpserted.v1.avsc"),
    // v1 → v2: message id, event type and the endpoint's consecutive failures added.
    history!(DeliveryAttempted, "DeliveryAttempted.v1.avsc"),
];

/// A past writer schema, ready to read old records into the current shape.
pub(crate) struct PastEntry {
    pub(crate) kind: Kind,
    pub(crate) fingerprint: [u8; 8],
    pub(crate) reader: GenericDatumReader<'static>,
}

static PAST: LazyLock<Vec<PastEntry>> = LazyLock::new(|| {
    HISTORY
        .iter()
        .map(|&(kind, file, source)| {
            // Leaked once per historical schema at start: the readers borrow them for 'static.
            let writer: &'static Schema =
                Box::leak(Box::new(Schema::parse_str(source).unwrap_or_else(|e| {
                    panic!("schemas/avro/history/{file} does not parse: {e}")
                })));
            past_entry(kind, file, writer)
        })
        .collect()
});

/// A reader of records written with `writer`, resolving them to the current schema of `kind`.
pub(crate) fn past_entry(kind: Kind, file: &'static str, writer: &'static Schema) -> PastEntry {
    let fingerprint = writer
        .fingerprint::<Rabin>()
        .bytes
        .try_into()
        .expect("a Rabin fingerprint is 8 bytes");
    let reader = GenericDatumReader::builder(writer)
        .reader_schema(&entry(kind).schema)
        .human_readable(false)
        .build()
        .unwrap_or_else(|e| panic!("{file} cannot be resolved to the current schema: {e}"));
    PastEntry {
        kind,
        fingerprint,
        reader,
    }
}

pub(crate) fn past_by_fingerprint(fingerprint: [u8; 8]) -> Option<&'static PastEntry> {
    PAST.iter().find(|e| e.fingerprint == fingerprint)
}

fn by_name(name: &str) -> Option<&'static Entry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// Every known record schema as `(record name, schema)`, e.g. for tools that register them
/// with a schema registry or print them.
pub fn schemas() -> impl Iterator<Item = (&'static str, &'static Schema)> {
    REGISTRY.iter().map(|e| (e.name, &e.schema))
}

/// The parsed schema of the record called `name` (without namespace, e.g. `"DeliveryTask"`).
pub fn schema_of(name: &str) -> Option<&'static Schema> {
    by_name(name).map(|e| &e.schema)
}

/// The 8 fingerprint bytes (CRC-64-AVRO of the canonical form, little-endian, as written after
/// the marker) of the record called `name`.
pub fn fingerprint_of(name: &str) -> Option<[u8; 8]> {
    by_name(name).map(|e| e.fingerprint)
}

/// The `.avsc` text of the record called `name`, exactly as in `schemas/avro/`.
pub fn avsc(name: &str) -> Option<&'static str> {
    by_name(name).map(|e| e.source)
}

#[cfg(test)]
mod tests {
    use apache_avro::types::{Record, Value};

    use super::*;
    use crate::codec::read_past;
    use crate::{HeraldEvent, TenantUpserted};

    fn hex(bytes: [u8; 8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Changing a schema changes its fingerprint, and records already in the log carry the
    /// old one. If this fails, a schema changed: move its previous text to
    /// `avro/history/<Record>.v<N>.avsc`, list it in `HISTORY`, then update the pin here.
    #[test]
    fn current_fingerprints_are_pinned() {
        let pinned: &[(&str, &str)] = &[
            ("SendRequested", "4f6e3983cc6d745b"),
            ("BusinessEventReceived", "6f850575a1236a35"),
            ("DeliveryTask", "30c9a8d19458909a"),
            ("DeliveryAttempted", "89e8b9a285114565"),
            ("DeliverySucceeded", "d8740d5896186a8a"),
            ("DeliveryFailed", "cfec31a9d2f97763"),
            ("EndpointDisabled", "91f4c5b416a92cbe"),
            ("DeliveryRequeued", "e095c44944299b10"),
            ("TenantUpserted", "6306a46b898c5043"),
            ("ApiKeyCreated", "f79eb7cc8dd87018"),
            ("ApiKeyRevoked", "07520c0981842acb"),
            ("TemplateUpserted", "433ba30fb2f35f63"),
            ("TemplateDeleted", "1a122f9f9d8f50e6"),
            ("EndpointUpserted", "f6fff005cb84ae14"),
            ("EndpointDeleted", "f514228c4a66c33e"),
            ("RecipientUpserted", "9b4cd28cd169a0ff"),
        ];
        let actual: Vec<(&str, String)> = REGISTRY
            .iter()
            .map(|e| (e.name, hex(e.fingerprint)))
            .collect();
        let pinned: Vec<(&str, String)> = pinned.iter().map(|(n, f)| (*n, f.to_string())).collect();
        assert_eq!(
            actual, pinned,
            "a schema changed without its previous version in HISTORY"
        );
    }

    /// A file in `avro/history/` must be the exact text that was current before: records in
    /// the log carry its fingerprint, pinned here when it was retired.
    #[test]
    fn past_fingerprints_are_pinned() {
        let pinned: &[(&str, &str)] = &[
            ("EndpointUpserted.v1.avsc", "a2ba485485551499"),
            ("TenantUpserted.v1.avsc", "fdeb809c1c12797e"),
            ("DeliveryAttempted.v1.avsc", "f0b6dfaf1069cc5d"),
        ];
        let actual: Vec<(&str, String)> = HISTORY
            .iter()
            .zip(PAST.iter())
            .map(|(&(_, file, _), past)| (file, hex(past.fingerprint)))
            .collect();
        let pinned: Vec<(&str, String)> = pinned.iter().map(|(n, f)| (*n, f.to_string())).collect();
        assert_eq!(actual, pinned);
    }

    #[test]
    fn records_written_with_an_earlier_schema_still_decode() {
        // TenantUpserted as it would have been before `monthly_quota` was added.
        let current = &entry(Kind::TenantUpserted).schema;
        let Schema::Record(record) = current else {
            unreachable!()
        };
        let mut old: serde_json::Value =
            serde_json::from_str(entry(Kind::TenantUpserted).source).unwrap();
        old["fields"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != "monthly_quota");
        assert_eq!(
            old["fields"].as_array().unwrap().len(),
            record.fields.len() - 1
        );
        let old: &'static Schema =
            Box::leak(Box::new(Schema::parse_str(&old.to_string()).unwrap()));

        let mut written = Record::new(old).unwrap();
        written.put("tenant_id", "tnt_1");
        written.put("name", "Acme");
        written.put("rate_limit_per_minute", Value::Int(120));
        written.put("created_at", Value::Long(1));
        written.put("updated_at", Value::Long(2));
        let mut datum = Vec::new();
        GenericDatumWriter::builder(old)
            .build()
            .unwrap()
            .write_value(&mut datum, written)
            .unwrap();

        let past = past_entry(Kind::TenantUpserted, "TenantUpserted.v0.avsc", old);
        assert_ne!(past.fingerprint, entry(Kind::TenantUpserted).fingerprint);
        let event = read_past(&past, &mut datum.as_slice()).unwrap();
        assert_eq!(
            event,
            HeraldEvent::TenantUpserted(TenantUpserted {
                tenant_id: "tnt_1".into(),
                name: "Acme".into(),
                monthly_quota: None,
                rate_limit_per_minute: 120,
                endpoint_failure_threshold: None,
                created_at: 1,
                updated_at: 2,
            })
        );
    }
}
