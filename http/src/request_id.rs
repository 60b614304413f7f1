//! Request ids: `X-Request-Id: req_...` on every response.
//!
//! A valid incoming id (from a proxy or a client retrying) is kept so one id follows a request
//! across systems; anything else is replaced by a fresh one. The id lives in a task-local while
//! the request is handled, so error bodies and log lines can name it without threading it
//! through every function.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use herald_domain::ids::RequestId;
use tracing::Instrument as _;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled, or `req_unknown` outside a request.
pub fn current() -> String {
    CURRENT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "req_unknown".to_owned())
}

/// Accepts ids of the form `req_` + up to 64 URL-safe characters.
fn acceptable(incoming: &str) -> bool {
    incoming.len() <= 68
        && incoming.strip_prefix("req_").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| acceptable(value))
        .map(str::to_owned)
        .unwrap_or_else(|| RequestId::generate().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = CURRENT
        .scope(id.clone(), next.run(request))
        .instrument(span)
        .await;
    response.headers_mut().insert(
        HEADER,
        HeaderValue::from_str(&id).expect("request ids are ASCII"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_well_formed_incoming_ids() {
        assert!(acceptable("req_abc-123_X"));
        assert!(!acceptable("req_"));
        assert!(!acceptable("abc"));
        assert!(!acceptable("req_has space"));
        assert!(!acceptable(&format!("req_{}", "a".repeat(65))));
    }
}
