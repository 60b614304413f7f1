//! Herald's event-log record types and their wire format.
//!
//! Every record Herald writes to its Kafka-style log (topics `requests`, `deliveries`, the
//! `retry.<delay>` tiers, `dead-letter`, `outcomes` and `control`; see DESIGN.md, "The log") is
//! defined here, once, as an Avro schema in `schemas/avro/<RecordName>.avsc`. Those files are
//! the source of truth: the Rust structs in this crate mirror them field for field, and a test
//! checks that they still do. Consumers in other languages need only the `.avsc` files.
//!
//! Records are written in Avro [single-object encoding]: the marker `C3 01`, the 8-byte
//! little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing Canonical Form,
//! then the Avro binary datum. The fingerprint makes each message self-describing, so a topic
//! can carry several record types and a reader can tell which schema wrote a message.
//!
//! ```
//! use herald_schemas::{decode, encode, DeliveryFailed, HeraldEvent};
//!
//! let event = HeraldEvent::from(DeliveryFailed {
//!     tenant_id: "ten_1".into(),
//!     delivery_id: "dlv_1".into(),
//!     channel: "webhook".into(),
//!     endpoint_id: Some("ep_1".into()),
//!     attempts: 8,
//!     reason: "retry schedule exhausted".into(),
//!     failed_at: 1_700_000_000_000,
//! });
//! let bytes = encode(&event).unwrap();
//! assert_eq!(&bytes[..2], &[0xC3, 0x01]);
//! assert_eq!(decode(&bytes).unwrap(), event);
//! ```
//!
//! # Evolving a schema
//!
//! Only backward-compatible changes: add fields that are optional (`["null", T]` with
//! `"default": null`) or have a default; never rename, retype or remove a field. Channels,
//! statuses and outcomes are `string`s rather than Avro enums because adding an enum symbol is
//! not backward compatible for old readers. Times are plain `long` milliseconds since the Unix
//! epoch rather than `timestamp-millis`: Avro implementations disagree on the canonical form
//! (and so the fingerprint) of logical types, and the fingerprint must be the same everywhere.
//!
//! Changing a schema changes its fingerprint. The previous version then moves to
//! `avro/history/` and is listed in `registry::HISTORY`, so [`decode`] still reads records
//! written with it, resolving them to the current schema. A test pins every current
//! fingerprint, so a schema cannot change without that step.
//!
//! [single-object encoding]: https://avro.apache.org/docs/1.12.0/specification/#single-object-encoding

mod codec;
pub mod convert;
mod records;
mod registry;
pub mod topics;

pub use codec::{decode, encode, SchemaError, HEADER_LEN, MARKER};
pub use records::*;
pub use registry::{avsc, fingerprint_of, schema_of, schemas};

/// Declares every record type once; everything that must list all of them (the event enum,
/// the schema registry, the encode/decode dispatch) is generated from this list so adding a
/// record cannot leave one of them behind.
macro_rules! herald_records {
    ($($name:ident),+ $(,)?) => {
        /// Any record Herald writes to its log; one variant per `.avsc` file.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum HeraldEvent {
            $(
                #[doc = concat!("See [`", stringify!($name), "`].")]
                $name($name),
            )+
        }

        impl HeraldEvent {
            /// The Avro record name (without namespace), e.g. `"SendRequested"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$name(_) => stringify!($name),)+
                }
            }

            /// Tenant the record belongs to (every record has one).
            pub fn tenant_id(&self) -> &str {
                match self {
                    $(Self::$name(r) => &r.tenant_id,)+
                }
            }

            /// The 8 fingerprint bytes this record's messages carry after the marker.
            pub fn fingerprint(&self) -> [u8; 8] {
                registry::entry(self.kind()).fingerprint
            }

            pub(crate) fn kind(&self) -> Kind {
                match self {
                    $(Self::$name(_) => Kind::$name,)+
                }
            }

            /// Appends the Avro binary datum (no header) to `buf`.
            pub(crate) fn write_datum(&self, buf: &mut Vec<u8>) -> Result<(), SchemaError> {
                match self {
                    $(Self::$name(r) => codec::write_datum(Kind::$name, r, buf),)+
                }
            }

            /// Converts a resolved Avro value of `kind` into its record.
            pub(crate) fn from_value(kind: Kind, value: &apache_avro::types::Value) -> Result<Self, apache_avro::Error> {
                match kind {
                    $(Kind::$name => apache_avro::from_value(value).map(Self::$name),)+
                }
            }

            /// Reads a datum written with the schema of `kind`, advancing `datum`.
            pub(crate) fn read_datum(kind: Kind, datum: &mut &[u8]) -> Result<Self, SchemaError> {
                match kind {
                    $(Kind::$name => codec::read_datum(kind, datum).map(Self::$name),)+
                }
            }
        }

        $(
            impl From<$name> for HeraldEvent {
                fn from(record: $name) -> Self {
                    Self::$name(record)
                }
            }
        )+

        /// Index of a record type in the registry (declaration order).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Kind {
            $($name,)+
        }

        /// (kind, record name, `.avsc` text) for every record, in `Kind` order.
        pub(crate) const SOURCES: &[(Kind, &str, &str)] = &[
            $((
                Kind::$name,
                stringify!($name),
                include_str!(concat!("../avro/", stringify!($name), ".avsc")),
            ),)+
        ];
    };
}

herald_records! {
    // topic `requests`
    SendRequested,
    BusinessEventReceived,
    // topic `deliveries` (and the retry tiers / dead letter)
    DeliveryTask,
    // topic `outcomes`
    DeliveryAttempted,
    DeliverySucceeded,
    DeliveryFailed,
    EndpointDisabled,
    DeliveryRequeued,
    // topic `control`
    TenantUpserted,
    ApiKeyCreated,
    ApiKeyRevoked,
    TemplateUpserted,
    TemplateDeleted,
    EndpointUpserted,
    EndpointDeleted,
    RecipientUpserted,
}
