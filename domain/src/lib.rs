//! Herald's business rules as pure functions over domain types.
//!
//! **Invariant:** nothing in this crate does I/O — no sockets, no files, no clocks except
//! where a caller passes the time in. Routing, rendering, retry and lifecycle rules live here so
//! they can be tested without a runtime, and every role (ingest, dispatcher, projector,
//! query API) shares one definition of them.

pub mod api_key;
pub mod channel;
pub mod filter;
pub mod ids;
pub mod model;
pub mod retry;
pub mod routing;
pub mod secret_box;
pub mod signing;
pub mod status;
pub mod target;
pub mod template;
pub mod webhook;

pub use channel::Channel;
pub use status::DeliveryStatus;

/// Milliseconds since the Unix epoch, the time unit of every event in the log.
pub type Millis = i64;

/// Converts log milliseconds to a UTC time (out-of-range values clamp to the epoch).
pub fn time_from_millis(ms: Millis) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
