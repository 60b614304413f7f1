//! The HTTP conventions every Herald API shares (API.md "Conventions").
//!
//! * [`ApiError`]: the one place errors become HTTP — status, stable code, the uniform
//!   envelope `{"error", "code", "request_id", "details"}`. Internals are logged, never shown.
//! * [`request_id`]: `X-Request-Id` on every response, in error bodies and in log spans.
//! * [`ValidJson`]: JSON extraction whose rejections speak the envelope (400 `invalid_json`,
//!   413, 415, 422 with the failing field).
//! * [`auth`]: API-key and admin-token authentication as extractors.
//! * [`layers`]: the middleware stack and fallback every router gets.

pub mod api;
pub mod auth;
pub mod clock;
mod error;
mod json;
pub mod request_id;
pub mod validate;

pub use error::{ApiError, FieldErrors};
pub use json::{ValidJson, ValidPath};

use axum::Router;

/// Default cap on request bodies: 1 MiB, ample for 100-message batches.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Wraps a complete router with Herald's middleware: request ids (outermost, so every
/// response carries one), tracing, panic capture, the body limit and the 404 fallback.
pub fn layers(router: Router, max_body_bytes: usize) -> Router {
    router
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .layer(axum::middleware::from_fn(request_id::middleware))
}
