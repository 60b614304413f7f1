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
