//! Prefixed, time-sortable identifiers (`dlv_01J...`).
//!
//! Ids are ULIDs behind a type prefix: sortable by creation time, which the query-first
//! read models use for newest-first listing, and recognisable in logs and support tickets.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ulid::Ulid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid id: expected `{prefix}` followed by 26 characters")]
pub struct IdError {
    pub value: String,
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered after every id generated earlier in this millisecond's past.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, Ulid::new()))
            }

            /// A deterministic id: the same `at_ms` and `seed` always give the same id, so that
            /// re-processing an event produces identical ids rather than new ones.
            pub fn derive(at_ms: i64, seed: &[u8]) -> Self {
                Self(format!("{}{}", $prefix, derived_ulid(at_ms, seed)))
            }

            /// Parses an id a client sent, checking prefix and shape.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let valid = value
                    .strip_prefix($prefix)
                    .is_some_and(|rest| Ulid::from_string(rest).is_ok());
                if valid {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(IdError { value: value.chars().take(64).collect(), prefix: $prefix })
                }
            }

            /// Wraps an id read back from the log or the store, which only ever holds valid ids.
            pub fn from_trusted(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Creation time encoded in the id, in milliseconds since the epoch.
            pub fn timestamp_ms(&self) -> i64 {
                self.0
                    .strip_prefix($prefix)
                    .and_then(|rest| Ulid::from_string(rest).ok())
                    .map(|ulid| ulid.timestamp_ms() as i64)
                    .unwrap_or(0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(/// A tenant: the wall around every other resource.
    TenantId, "tnt_");
prefixed_id!(/// An API key's public id (never the key itself).
    ApiKeyId, "key_");
prefixed_id!(/// One message to one target on one channel.
    DeliveryId, "dlv_");
prefixed_id!(/// An event as Herald knows it; also the `webhook-id` receivers deduplicate with.
    EventId, "evt_");
prefixed_id!(/// A webhook endpoint.
    EndpointId, "ep_");
prefixed_id!(/// A recipient of notifications.
    RecipientId, "rcp_");
prefixed_id!(/// A template.
    TemplateId, "tpl_");
prefixed_id!(/// A rule turning business events into notifications.
    RuleId, "rul_");
prefixed_id!(/// One HTTP request, echoed in `X-Request-Id` and error bodies.
    RequestId, "req_");

fn derived_ulid(at_ms: i64, seed: &[u8]) -> Ulid {
    let digest = Sha256::digest(seed);
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    Ulid::from_parts(at_ms.max(0) as u64, u128::from_be_bytes(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = DeliveryId::generate();
        assert!(id.as_str().starts_with("dlv_"));
        assert_eq!(DeliveryId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn wrong_prefix_or_shape_is_rejected() {
        let id = DeliveryId::generate();
        assert!(EndpointId::parse(id.as_str()).is_err());
        assert!(DeliveryId::parse("dlv_nope").is_err());
        assert!(DeliveryId::parse("").is_err());
    }

    #[test]
    fn derived_ids_are_deterministic_and_keep_time() {
        let a = DeliveryId::derive(1_700_000_000_000, b"evt_1/ep_1");
        assert_eq!(a, DeliveryId::derive(1_700_000_000_000, b"evt_1/ep_1"));
        assert_ne!(a, DeliveryId::derive(1_700_000_000_000, b"evt_1/ep_2"));
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let older = DeliveryId::derive(1_000, b"x");
        let newer = DeliveryId::derive(2_000, b"a");
        assert!(older < newer);
    }
}
