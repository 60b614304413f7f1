//! Avro single-object encoding of [`HeraldEvent`]s.
//!
//! Done by hand (header + schema-aware serde straight to/from Avro binary) rather than with
//! apache-avro's `SpecificSingleObject*` types: those need one reader/writer per Rust type and
//! cannot pick the type from the fingerprint, which is the whole point of [`decode`].

use std::fmt;

use serde::{de::DeserializeOwned, Serialize};

use crate::{registry, HeraldEvent, Kind};

/// The two bytes every single-object encoded message starts with (Avro spec).
pub const MARKER: [u8; 2] = [0xC3, 0x01];

/// Marker plus the 8-byte schema fingerprint; the datum starts at this offset.
pub const HEADER_LEN: usize = 10;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Not single-object encoded: shorter than the 10-byte header.
    #[error(
        "not an Avro single-object message: {len} bytes, shorter than the {HEADER_LEN}-byte header"
    )]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// Not single-object encoded: does not start with `C3 01`.
    #[error("not an Avro single-object message: starts with {:02x} {:02x}, not c3 01", found[0], found[1])]
    BadMarker {
        /// The first two bytes of the input.
        found: [u8; 2],
    },
    /// The fingerprint matches none of the schemas this build knows (written by a newer
    /// Herald, or not a Herald record at all).
    #[error("unknown schema fingerprint {}", Hex(fingerprint))]
    UnknownFingerprint {
        /// The 8 fingerprint bytes as they appear on the wire.
        fingerprint: [u8; 8],
    },
    /// The datum does not match the schema its fingerprint names (corrupt or truncated).
    #[error("malformed {record} datum")]
    Malformed {
        /// Record name of the schema named by the fingerprint.
        record: &'static str,
        /// What apache-avro could not read.
        #[source]
        source: apache_avro::Error,
    },
    /// The datum decoded, but bytes were left over: a single-object message is exactly one
    /// datum, so the message is corrupt (or two were concatenated).
    #[error("{count} trailing bytes after {record} datum")]
    TrailingBytes {
        /// Record name of the schema named by the fingerprint.
        record: &'static str,
        /// Number of bytes left after the datum.
        count: usize,
    },
    /// A record could not be serialized with its own schema. Only a mismatch between a struct
    /// and its `.avsc` (a bug the tests catch) can cause this.
    #[error("cannot encode {record}")]
    Encode {
        /// Record name.
        record: &'static str,
        /// What apache-avro rejected.
        #[source]
        source: apache_avro::Error,
    },
}

/// Lower-case hex, for fingerprints in messages.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Encodes `event` as an Avro single-object message: `C3 01`, the schema fingerprint, the datum.
///
/// Fails only if a struct has drifted from its `.avsc` (see [`SchemaError::Encode`]); any value
/// of the record structs is otherwise encodable.
pub fn encode(event: &HeraldEvent) -> Result<Vec<u8>, SchemaError> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&MARKER);
    buf.extend_from_slice(&event.fingerprint());
    event.write_datum(&mut buf)?;
    Ok(buf)
}

/// Decodes one single-object message, choosing the record type from its schema fingerprint.
///
/// Never panics on bad input: a wrong marker, an unknown fingerprint, a truncated or corrupt
/// datum and leftover bytes are all reported as [`SchemaError`]s.
pub fn decode(bytes: &[u8]) -> Result<HeraldEvent, SchemaError> {
    if bytes.len() < HEADER_LEN {
        return Err(SchemaError::TooShort { len: bytes.len() });
    }
    let (header, mut datum) = bytes.split_at(HEADER_LEN);
    if header[..2] != MARKER {
        return Err(SchemaError::BadMarker {
            found: [header[0], header[1]],
        });
    }
    let fingerprint: [u8; 8] = header[2..].try_into().expect("header is 10 bytes");
    let (event, record) = match registry::by_fingerprint(fingerprint) {
        Some(entry) => (HeraldEvent::read_datum(entry.kind, &mut datum)?, entry.name),
        // Written by an earlier version of a schema: read it with that version.
        None => {
            let past = registry::past_by_fingerprint(fingerprint)
                .ok_or(SchemaError::UnknownFingerprint { fingerprint })?;
            (
                read_past(past, &mut datum)?,
                registry::entry(past.kind).name,
            )
        }
    };
    if !datum.is_empty() {
        return Err(SchemaError::TrailingBytes {
            record,
            count: datum.len(),
        });
    }
    Ok(event)
}

/// Reads a datum written with a past schema, resolved to the current one (fields added
/// since take their defaults).
pub(crate) fn read_past(
    past: &registry::PastEntry,
    datum: &mut &[u8],
) -> Result<HeraldEvent, SchemaError> {
    let record = registry::entry(past.kind).name;
    let value = past
        .reader
        .read_value(datum)
        .map_err(|source| SchemaError::Malformed { record, source })?;
    HeraldEvent::from_value(past.kind, &value)
        .map_err(|source| SchemaError::Malformed { record, source })
}

pub(crate) fn write_datum<T: Serialize>(
    kind: Kind,
    record: &T,
    buf: &mut Vec<u8>,
) -> Result<(), SchemaError> {
    registry::codec(kind)
        .writer
        .write_ser(buf, record)
        .map(drop)
        .map_err(|source| SchemaError::Encode {
            record: registry::entry(kind).name,
            source,
        })
}

pub(crate) fn read_datum<T: DeserializeOwned>(
    kind: Kind,
    datum: &mut &[u8],
) -> Result<T, SchemaError> {
    registry::codec(kind)
        .reader
        .read_deser(datum)
        .map_err(|source| SchemaError::Malformed {
            record: registry::entry(kind).name,
            source,
        })
}
