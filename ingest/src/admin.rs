//! `POST /v1/admin/tenants` creates a tenant and its first API key;
//! `PATCH /v1/admin/tenants/{id}` changes its name, plan or endpoint failure threshold.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use herald_domain::api_key::NewApiKey;
use herald_domain::ids::{ApiKeyId, TenantId};
use herald_domain::model::{ApiKeyRecord, Plan, Tenant};
use herald_http::api::TenantOut;
use herald_http::auth::Admin;
use herald_http::validate::Validator;
use herald_http::{ApiError, ValidJson, ValidPath};
use herald_schemas::{ApiKeyCreated, HeraldEvent, TenantUpserted};
use herald_store::ReadModelWrite;
use serde::{Deserialize, Serialize};

use crate::IngestState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantIn {
    name: String,
    #[serde(default)]
    plan: Option<PlanIn>,
    /// Consecutive failed attempts that disable one of the tenant's webhook endpoints.
    #[serde(default)]
    endpoint_failure_threshold: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanIn {
    #[serde(default)]
    monthly_quota: Option<u64>,
    #[serde(default)]
    rate_limit_per_minute: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TenantCreatedOut {
    tenant: TenantOut,
    /// Shown once; only its SHA-256 is kept.
    api_key: String,
}

pub(crate) async fn create_tenant(
    State(state): State<IngestState>,
    _admin: Admin,
    ValidJson(input): ValidJson<TenantIn>,
) -> Result<(StatusCode, Json<TenantCreatedOut>), ApiError> {
    let plan_in = input.plan.unwrap_or_default();
    let mut v = Validator::new();
    v.length("name", input.name.trim(), 1, 200);
    if let Some(rate) = plan_in.rate_limit_per_minute {
        v.check(
            (1..=1_000_000).contains(&rate),
            "plan.rate_limit_per_minute",
            || "must be between 1 and 1000000".into(),
        );
    }
    if let Some(threshold) = input.endpoint_failure_threshold {
        v.check(
            (1..=1000).contains(&threshold),
            "endpoint_failure_threshold",
            || "must be between 1 and 1000".into(),
        );
    }
    v.finish()?;

    let now = Utc::now();
    let defaults = Plan::default();
    let tenant = Tenant {
        id: TenantId::generate(),
        name: input.name.trim().to_owned(),
        plan: Plan {
            monthly_quota: plan_in.monthly_quota,
            rate_limit_per_minute: plan_in
                .rate_limit_per_minute
                .unwrap_or(defaults.rate_limit_per_minute),
        },
        endpoint_failure_threshold: input.endpoint_failure_threshold,
        created_at: now,
        updated_at: now,
    };
    let key = NewApiKey::generate();
    let key_record = ApiKeyRecord {
        id: ApiKeyId::generate(),
        tenant_id: tenant.id.clone(),
        name: "default".into(),
        prefix: key.prefix.clone(),
        key_hash: key.hash.clone(),
        created_at: now,
        revoked_at: None,
    };
    let events = [
        HeraldEvent::TenantUpserted(TenantUpserted::from(&tenant)),
        HeraldEvent::ApiKeyCreated(ApiKeyCreated::from(&key_record)),
    ];
    let writes = vec![
        ReadModelWrite::Tenant(tenant.clone()),
        ReadModelWrite::ApiKey(key_record),
    ];
    state.append_control(&events, writes).await?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(TenantCreatedOut {
            tenant: TenantOut::from(&tenant),
            api_key: key.secret,
        }),
    ))
}

/// `PATCH` fields: absent leaves a field as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    plan: Option<PlanIn>,
    /// `null` goes back to the default (10).
    #[serde(default, deserialize_with = "crate::webhooks::present")]
    endpoint_failure_threshold: Option<Option<u32>>,
}

pub(crate) async fn update_tenant(
    State(state): State<IngestState>,
    _admin: Admin,
    ValidPath(id): ValidPath<String>,
    ValidJson(patch): ValidJson<TenantPatch>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = TenantId::parse(&id).map_err(|_| ApiError::NotFound("tenant"))?;
    let mut tenant = state
        .store
        .tenant(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound("tenant"))?;
    let mut v = Validator::new();
    if let Some(name) = &patch.name {
        v.length("name", name.trim(), 1, 200);
    }
    if let Some(rate) = patch.plan.as_ref().and_then(|p| p.rate_limit_per_minute) {
        v.check(
            (1..=1_000_000).contains(&rate),
            "plan.rate_limit_per_minute",
            || "must be between 1 and 1000000".into(),
        );
    }
    if let Some(Some(threshold)) = patch.endpoint_failure_threshold {
        v.check(
            (1..=1000).contains(&threshold),
            "endpoint_failure_threshold",
            || "must be between 1 and 1000".into(),
        );
    }
    v.finish()?;
    if let Some(name) = patch.name {
        tenant.name = name.trim().to_owned();
    }
    if let Some(plan) = patch.plan {
        if plan.monthly_quota.is_some() {
            tenant.plan.monthly_quota = plan.monthly_quota;
        }
        if let Some(rate) = plan.rate_limit_per_minute {
            tenant.plan.rate_limit_per_minute = rate;
        }
    }
    if let Some(threshold) = patch.endpoint_failure_threshold {
        tenant.endpoint_failure_threshold = threshold;
    }
    tenant.updated_at = crate::append::next_version(tenant.updated_at);
    let events = [HeraldEvent::TenantUpserted(TenantUpserted::from(&tenant))];
    state
        .append_control(&events, vec![ReadModelWrite::Tenant(tenant.clone())])
        .await?;
    Ok(Json(TenantOut::from(&tenant)))
}
