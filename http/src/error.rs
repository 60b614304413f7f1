//! [`ApiError`]: every failure a client can see, and how it is shown.

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::request_id;

/// Per-field validation messages: `{"recipient": ["required"]}`.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("missing or unknown API key: send `Authorization: Bearer hk_...`")]
    Unauthorized,
    #[error("this API key has been revoked")]
    KeyRevoked,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the admin API is off: start Herald with HERALD_ADMIN_TOKEN set to use it")]
    AdminDisabled,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("send the body as JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the request is invalid")]
    Validation(FieldErrors),
    #[error("no template with slug `{0}`")]
    TemplateNotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// An unexpected failure. The cause is logged with the request id and never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A validation error on one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(BTreeMap::from([(field.into(), vec![message.into()])]))
    }

    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(source.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::KeyRevoked => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::AdminDisabled => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::TemplateNotFound(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients branch on (API.md "Codes").
    /// The error as one item of a batch answer: `{"error", "code", "details"}`, the envelope
    /// without the request id (the batch's own response carries it).
    pub fn item(&self) -> serde_json::Value {
        if let ApiError::Internal(source) = self {
            tracing::error!(request_id = %request_id::current(), error = %error_chain(source.as_ref()), "a batch item failed");
        }
        serde_json::json!({
            "error": self.message(),
            "code": self.code(),
            "details": self.details(),
        })
    }

    fn message(&self) -> String {
        match self {
            ApiError::Validation(fields) => validation_summary(fields),
            other => other.to_string(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Unauthorized => "unauthorized",
            ApiError::KeyRevoked => "key_revoked",
            ApiError::NotFound(_) | ApiError::AdminDisabled => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::TemplateNotFound(_) => "template_not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            ApiError::Validation(fields) => json!({ "field_errors": fields }),
            ApiError::TemplateNotFound(slug) => json!({ "template": slug }),
            _ => json!({}),
        }
    }
}

impl From<herald_store::StoreError> for ApiError {
    fn from(err: herald_store::StoreError) -> Self {
        ApiError::internal(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id::current();
        if let ApiError::Internal(source) = &self {
            tracing::error!(request_id = %request_id, error = %error_chain(source.as_ref()), "request failed");
        }
        let body = ErrorBody {
            error: self.message(),
            code: self.code(),
            request_id,
            details: self.details(),
        };
        (self.status(), axum::Json(body)).into_response()
    }
}

/// The uniform error envelope, fields in the order people read them.
#[derive(serde::Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
    request_id: String,
    details: serde_json::Value,
}

/// "recipient: required; channel: unknown channel `fax`" — readable without parsing details.
fn validation_summary(fields: &FieldErrors) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(field, messages)| format!("{field}: {}", messages.join(", ")))
        .collect();
    format!("validation failed: {}", parts.join("; "))
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Turns a panic in a handler into the uniform 500 (the panic itself is logged).
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    let mut response = ApiError::internal("handler panicked").into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
