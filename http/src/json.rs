//! [`ValidJson`]: a JSON body extractor whose every rejection is an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Like `axum::Json`, but: a body that is not JSON → 400 `invalid_json`; JSON of the wrong
/// shape → 422 `validation_failed` naming the field; too large → 413; wrong content type → 415.
pub struct ValidJson<T>(pub T);

impl<T, S> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(&request) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::InvalidJson(rejection.body_text())
                }
            })?;
        parse(&bytes).map(ValidJson)
    }
}

/// Parses in two steps so that syntax errors (400) and shape errors (422) stay apart.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|err| ApiError::InvalidJson(err.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let (field, message) = match missing_field(&message) {
            Some(name) if path == "." => (name.to_owned(), "required".to_owned()),
            Some(name) => (format!("{path}.{name}"), "required".to_owned()),
            None => (if path == "." { "body".to_owned() } else { path }, message),
        };
        ApiError::field(field, message)
    })
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn has_json_content_type(request: &Request) -> bool {
    let Some(content_type) = request.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(content_type) = content_type.to_str() else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Like `axum::extract::Path`, but a path that cannot be decoded (bad percent-encoding, wrong
/// type) is an [`ApiError`] in the envelope, not axum's plain-text 400.
pub struct ValidPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ValidPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ValidPath(value))
            .map_err(|rejection| ApiError::field("path", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        count: u32,
    }

    fn field_errors(err: ApiError) -> Vec<(String, Vec<String>)> {
        match err {
            ApiError::Validation(fields) => fields.into_iter().collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        assert!(matches!(
            parse::<Body>(b"{not json"),
            Err(ApiError::InvalidJson(_))
        ));
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            field_errors(parse::<Body>(b"{}").unwrap_err()),
            [("name".into(), vec!["required".into()])]
        );
        let nested = field_errors(parse::<Body>(br#"{"name":"a","nested":{}}"#).unwrap_err());
        assert_eq!(nested[0].0, "nested.count");
    }

    #[test]
    fn wrong_types_name_the_path() {
        let errors =
            field_errors(parse::<Body>(br#"{"name":"a","nested":{"count":"x"}}"#).unwrap_err());
        assert_eq!(errors[0].0, "nested.count");
    }
}
