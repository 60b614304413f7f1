//! Authentication: API keys for tenants, a bearer token for the admin API.
//!
//! Keys are looked up by their SHA-256 only. Lookups are cached for one second: long enough
//! to take the store off the hot path, short enough that a revocation made by any process is
//! in force everywhere within a second.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use herald_domain::api_key::{hash_api_key, looks_like_api_key};
use herald_domain::ids::{ApiKeyId, TenantId};
use herald_domain::model::ApiKeyRecord;
use herald_store::Store;
use subtle::ConstantTimeEq as _;

use crate::ApiError;

/// How long a key lookup (found or not) is trusted.
const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Resolves API keys to tenants.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: moka::future::Cache<String, Option<ApiKeyRecord>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(KEY_CACHE_TTL)
            .build();
        Self { store, cache }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        if !looks_like_api_key(token) {
            return Err(ApiError::Unauthorized);
        }
        let hash = hash_api_key(token);
        let store = self.store.clone();
        let record = self
            .cache
            .try_get_with(
                hash.clone(),
                async move { store.api_key_by_hash(&hash).await },
            )
            .await
            .map_err(|err| ApiError::internal(format!("api key lookup failed: {err}")))?;
        match record {
            None => Err(ApiError::Unauthorized),
            Some(record) if record.revoked_at.is_some() => Err(ApiError::KeyRevoked),
            Some(record) => Ok(Caller {
                tenant_id: record.tenant_id,
                key_id: record.id,
            }),
        }
    }
}

/// The authenticated tenant of a request. Every tenant-scoped handler takes one, and every
/// store read it makes is keyed by `tenant_id`: that is the tenant wall.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: TenantId,
    pub key_id: ApiKeyId,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<S> FromRequestParts<S> for Caller
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        Authenticator::from_ref(state).authenticate(token).await
    }
}

/// The admin bearer token (`HERALD_ADMIN_TOKEN`); `None` turns the admin API off.
#[derive(Clone, Default)]
pub struct AdminToken(pub Option<Arc<str>>);

/// Proof that a request carried the admin token.
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    AdminToken: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let AdminToken(Some(expected)) = AdminToken::from_ref(state) else {
            return Err(ApiError::AdminDisabled);
        };
        let presented = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
