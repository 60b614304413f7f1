//! `PUT /v1/templates/{slug}` creates or replaces a template; `DELETE` removes it.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use herald_domain::ids::TemplateId;
use herald_domain::model::Template;
use herald_domain::template::{self, ChannelContent, TemplateError};
use herald_domain::Channel;
use herald_http::api::TemplateOut;
use herald_http::auth::Caller;
use herald_http::validate::Validator;
use herald_http::{ApiError, ValidJson, ValidPath};
use herald_schemas::{HeraldEvent, TemplateDeleted, TemplateUpserted};
use herald_store::ReadModelWrite;
use serde::Deserialize;

use crate::IngestState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateIn {
    channels: BTreeMap<String, ChannelContent>,
}

/// Slugs are what senders type: lower-case letters, digits, `_`, `-` and `.`, at most 64.
pub fn valid_slug(slug: &str) -> bool {
    (1..=64).contains(&slug.len())
        && slug.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

pub(crate) async fn put_template(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(slug): ValidPath<String>,
    ValidJson(input): ValidJson<TemplateIn>,
) -> Result<(StatusCode, Json<TemplateOut>), ApiError> {
    let mut v = Validator::new();
    v.check(valid_slug(&slug), "slug", || {
        "use 1 to 64 lower-case letters, digits, `_`, `-` or `.`".into()
    });
    v.check(!input.channels.is_empty(), "channels", || {
        "give content for at least one channel".into()
    });
    let mut channels = BTreeMap::new();
    for (name, content) in input.channels {
        match name.parse::<Channel>() {
            Ok(Channel::Webhook) | Err(_) => {
                v.error(format!("channels.{name}"), "unknown channel: expected email, sms, whatsapp, telegram, push, slack or discord");
            }
            Ok(channel) => {
                v.check(
                    !content.body.trim().is_empty(),
                    &format!("channels.{name}.body"),
                    || "must not be empty".into(),
                );
                channels.insert(channel, content);
            }
        }
    }
    if let Err(errors) = template::validate(&channels) {
        for error in errors {
            match error {
                TemplateError::Syntax {
                    field,
                    line,
                    message,
                } => v.error(field, format!("syntax error on line {line}: {message}")),
                TemplateError::TooLong { field } => v.error(
                    field,
                    format!("longer than {} bytes", template::MAX_TEMPLATE_FIELD_BYTES),
                ),
            }
        }
    }
    v.finish()?;

    let now = Utc::now();
    let existing = state.store.template(&caller.tenant_id, &slug).await?;
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let template = Template {
        id: existing
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_else(TemplateId::generate),
        tenant_id: caller.tenant_id,
        slug,
        channels,
        created_at: existing.as_ref().map(|t| t.created_at).unwrap_or(now),
        updated_at: now,
    };
    let events = [HeraldEvent::TemplateUpserted(TemplateUpserted::from(
        &template,
    ))];
    state
        .append_control(&events, vec![ReadModelWrite::Template(template.clone())])
        .await?;
    Ok((status, Json(TemplateOut::from(&template))))
}

/// Sends that name the template afterwards get `422 template_not_found`; deliveries already
/// accepted carry their rendered content and are not affected.
pub(crate) async fn delete_template(
    State(state): State<IngestState>,
    caller: Caller,
    ValidPath(slug): ValidPath<String>,
) -> Result<StatusCode, ApiError> {
    let template = state
        .store
        .template(&caller.tenant_id, &slug)
        .await?
        .ok_or(ApiError::NotFound("template"))?;
    let at = crate::append::next_version(template.updated_at);
    let events = [HeraldEvent::TemplateDeleted(TemplateDeleted {
        tenant_id: caller.tenant_id.to_string(),
        template_id: template.id.to_string(),
        slug: slug.clone(),
        deleted_at: at.timestamp_millis(),
    })];
    let write = ReadModelWrite::TemplateDeleted {
        tenant_id: caller.tenant_id,
        slug,
        at,
    };
    state.append_control(&events, vec![write]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::valid_slug;

    #[test]
    fn slugs() {
        assert!(valid_slug("order_shipped"));
        assert!(valid_slug("v2.welcome-email"));
        assert!(!valid_slug("Order"));
        assert!(!valid_slug(""));
        assert!(!valid_slug("a/b"));
        assert!(!valid_slug(&"a".repeat(65)));
    }
}
