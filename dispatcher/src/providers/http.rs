//! The one HTTP client every provider posts through, with the target policy enforced where
//! it cannot be bypassed: at connection time.
//!
//! * names are resolved by [`GuardedResolver`], which drops every non-public address, so a
//!   name cannot resolve to a public address at registration and a private one at delivery
//!   (DNS rebinding);
//! * IP-literal hosts, which skip the resolver, are checked before each request;
//! * redirects are never followed (a redirect could lead anywhere) and proxies are off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_domain::target::TargetPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;

/// How much of a response is kept for the attempt log.
const EXCERPT_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub policy: TargetPolicy,
    /// Per-request timeout, connection included.
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            policy: TargetPolicy::default(),
            timeout: Duration::from_secs(15),
        }
    }
}

/// What came back from one POST.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub excerpt: String,
    /// The receiver's `Retry-After`, in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
}

/// Why a POST got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpFailure {
    #[error("{0}")]
    Refused(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
}

#[derive(Clone)]
pub struct GuardedHttp {
    client: reqwest::Client,
    options: HttpOptions,
}

impl GuardedHttp {
    pub fn new(options: HttpOptions) -> Self {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: options.policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is valid");
        Self { client, options }
    }

    /// POSTs `body` with `headers` to `url`, reading at most an excerpt of the answer.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<HttpAnswer, HttpFailure> {
        let url = self
            .options
            .policy
            .check_url(url)
            .map_err(|err| HttpFailure::Refused(err.to_string()))?;
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|err| self.describe(err))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
        let excerpt = read_excerpt(response).await;
        Ok(HttpAnswer {
            status,
            excerpt,
            retry_after,
        })
    }

    fn describe(&self, err: reqwest::Error) -> HttpFailure {
        if err.is_timeout() {
            return HttpFailure::Timeout(self.options.timeout);
        }
        // Walk to the root cause: reqwest's own message ("error sending request") says little.
        let mut cause: &dyn std::error::Error = &err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let text = cause.to_string();
        if text.contains("non-public") {
            HttpFailure::Refused(text)
        } else if err.is_connect() {
            HttpFailure::Connect(text)
        } else {
            HttpFailure::Other(text)
        }
    }
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110, 10.2.3); a date in the
/// past means "now".
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(EXCERPT_BYTES);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows.
struct GuardedResolver {
    policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| policy.check_ip(addr.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                // The addresses go to the server log only: shown to the tenant (in `last_error`) they
                // would turn deliveries into a probe of the internal DNS.
                tracing::warn!(host, addresses = ?resolved, "refused a delivery target that resolves only to non-public addresses");
                let message = format!("`{host}` resolves only to non-public addresses; deliveries only reach public addresses");
                return Err(message.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> GuardedHttp {
        GuardedHttp::new(HttpOptions {
            policy: TargetPolicy::default(),
            timeout: Duration::from_secs(2),
        })
    }

    #[tokio::test]
    async fn refuses_private_literals_without_connecting() {
        for url in [
            "http://127.0.0.1:1/x",
            "http://[::1]:1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let err = strict()
                .post(url, HeaderMap::new(), Vec::new())
                .await
                .unwrap_err();
            assert!(matches!(err, HttpFailure::Refused(_)), "{url}: {err:?}");
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn refuses_names_that_resolve_to_loopback() {
        let err = strict()
            .post("http://localhost:1/x", HeaderMap::new(), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, HttpFailure::Refused(_)), "{err:?}");
    }
}
