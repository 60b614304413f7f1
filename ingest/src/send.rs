//! `POST /v1/send`: one notification to one recipient; `POST /v1/send/batch`: up to 100, each
//! accepted or refused on its own, the accepted ones appended together.
//!
//! Validation happens here, completely, before anything is appended: the recipient is
//! resolved (found by id, or found or created by contacts), the channel chosen, and the
//! template rendered, so a missing variable is a 422 now rather than a failed delivery later.
//! The rendered content travels in the event, so what is sent is what was accepted even if
//! the template changes meanwhile.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use herald_domain::ids::{DeliveryId, RecipientId};
use herald_domain::model::{Contacts, Recipient};
use herald_domain::routing::choose_channel;
use herald_domain::template::{self, RenderError};
use herald_domain::Channel;
use herald_http::auth::Caller;
use herald_http::validate::Validator;
use herald_http::{request_id, ApiError, ValidJson};
use herald_schemas::{HeraldEvent, RecipientUpserted, SendRequested};
use herald_store::{ClaimKey, ClaimOutcome, ReadModelWrite};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::IngestState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendIn {
    recipient: RecipientIn,
    template: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    vars: Option<Value>,
    #[serde(default)]
    priority: Option<String>,
    // Accepted by the contract but not built yet; refused explicitly rather than ignored.
    #[serde(default)]
    scheduled_for: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    actions: Option<Value>,
    #[serde(default)]
    media: Option<Value>,
    #[serde(default)]
    attachments: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecipientIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    whatsapp_phone: Option<String>,
    #[serde(default)]
    telegram_chat_id: Option<String>,
    #[serde(default)]
    slack_webhook_url: Option<String>,
    #[serde(default)]
    discord_webhook_url: Option<String>,
    #[serde(default)]
    push: Option<Value>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SendOut {
    status: &'static str,
    delivery_id: String,
    channel: &'static str,
    recipient: RecipientRef,
    template: String,
}

#[derive(Debug, Serialize)]
struct RecipientRef {
    id: String,
}

/// A send, validated and resolved: what to append and what to answer.
struct Prepared {
    events: Vec<HeraldEvent>,
    /// A new or changed recipient, to write through to the store after the append.
    recipient: Option<Recipient>,
    out: SendOut,
}

/// How long an idempotency key is remembered.
const IDEMPOTENCY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// How long a claimed key may stay pending before another request may take it over.
const CLAIM_LEASE_MS: i64 = 30_000;

pub(crate) async fn send(
    State(state): State<IngestState>,
    caller: Caller,
    ValidJson(input): ValidJson<SendIn>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(key) = input.idempotency_key.clone() else {
        let prepared = prepare(
            &state,
            &caller,
            input,
            &mut Vec::new(),
            DeliveryId::generate(),
        )
        .await?;
        commit(&state, &prepared).await?;
        let body = serde_json::to_value(&prepared.out).map_err(ApiError::internal)?;
        return Ok((StatusCode::ACCEPTED, Json(body)));
    };
    if !(1..=128).contains(&key.chars().count()) {
        return Err(ApiError::field(
            "idempotency_key",
            "use 1 to 128 characters",
        ));
    }
    // The key is claimed before anything is appended; a request with a key seen within the
    // hour gets the first answer back, and nothing new is sent.
    let claim = ClaimKey {
        tenant_id: caller.tenant_id.clone(),
        scope: "idempotency",
        key,
    };
    let now = state.clock.now();
    let proposed = DeliveryId::generate();
    let delivery_id =
        match state
            .store
            .claim(
                &claim,
                proposed.as_str(),
                now.timestamp_millis(),
                CLAIM_LEASE_MS,
            )
            .await?
        {
            ClaimOutcome::Claimed { id } => DeliveryId::from_trusted(id),
            ClaimOutcome::Completed { response, .. } => {
                let mut body: Value = response
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .ok_or_else(|| ApiError::internal("an idempotent send without its answer"))?;
                body["replayed"] = Value::Bool(true);
                return Ok((StatusCode::OK, Json(body)));
            }
            ClaimOutcome::InFlight => return Err(ApiError::Conflict(
                "a send with this idempotency_key is being accepted right now; retry in a moment"
                    .into(),
            )),
        };
    let prepared = match prepare(&state, &caller, input, &mut Vec::new(), delivery_id).await {
        Ok(prepared) => prepared,
        Err(err) => {
            // Refused: the key is free for a corrected request.
            if let Err(release) = state.store.release_claim(&claim).await {
                tracing::warn!(error = %release, "could not release an idempotency key");
            }
            return Err(err);
        }
    };
    // A failed append keeps the claim (the record may have landed): a retry after the lease
    // takes it over with the same delivery id.
    commit(&state, &prepared).await?;
    let body = serde_json::to_value(&prepared.out).map_err(ApiError::internal)?;
    let expires = (now + IDEMPOTENCY_WINDOW).timestamp_millis();
    if let Err(err) = state
        .store
        .complete_claim(&claim, Some(body.to_string()), Some(expires))
        .await
    {
        tracing::warn!(error = %err, "could not mark an idempotency key accepted");
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Appends a prepared send, writing its recipient through when it is new or changed.
async fn commit(state: &IngestState, prepared: &Prepared) -> Result<(), ApiError> {
    match &prepared.recipient {
        Some(recipient) => {
            state
                .append_control(
                    &prepared.events,
                    vec![ReadModelWrite::Recipient(recipient.clone())],
                )
                .await
        }
        None => state.append(&prepared.events).await,
    }
}

/// The most messages one batch may hold.
const MAX_BATCH: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchIn {
    messages: Vec<Value>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BatchOut {
    total: usize,
    queued: usize,
    failed: usize,
    results: Vec<Value>,
}

/// Each message is validated and resolved on its own; the accepted ones reach the log in one
/// append. Recipients created by one message are found by the next ones of the same batch.
pub(crate) async fn send_batch(
    State(state): State<IngestState>,
    caller: Caller,
    ValidJson(input): ValidJson<BatchIn>,
) -> Result<(StatusCode, Json<BatchOut>), ApiError> {
    let count = input.messages.len();
    if !(1..=MAX_BATCH).contains(&count) {
        return Err(ApiError::field(
            "messages",
            format!("give 1 to {MAX_BATCH} messages, not {count}"),
        ));
    }
    let mut known = Vec::new();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(count);
    for (index, message) in input.messages.into_iter().enumerate() {
        let prepared = match serde_json::from_value::<SendIn>(message) {
            Ok(message) if message.idempotency_key.is_some() => Err(ApiError::field(
                "idempotency_key",
                "is not supported inside a batch yet; send the message on its own",
            )),
            Ok(message) => {
                prepare(&state, &caller, message, &mut known, DeliveryId::generate()).await
            }
            Err(err) => Err(ApiError::field(
                format!("messages[{index}]"),
                err.to_string(),
            )),
        };
        match prepared {
            Ok(prepared) => {
                events.extend(prepared.events);
                let mut item = serde_json::to_value(&prepared.out).map_err(ApiError::internal)?;
                item["index"] = index.into();
                results.push(item);
            }
            Err(err) => results.push(serde_json::json!({
                "index": index,
                "status": "failed",
                "error": err.item(),
            })),
        }
    }
    let queued = results.iter().filter(|r| r["status"] != "failed").count();
    if !events.is_empty() {
        // The batch's recipients, each as last resolved.
        let writes = known.into_iter().map(ReadModelWrite::Recipient).collect();
        state.append_control(&events, writes).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchOut {
            total: count,
            queued,
            failed: count - queued,
            results,
        }),
    ))
}

/// Validates a send completely and resolves it into the events to append. `known`: the
/// recipients created or changed earlier in the same request, found before the store's.
async fn prepare(
    state: &IngestState,
    caller: &Caller,
    input: SendIn,
    known: &mut Vec<Recipient>,
    delivery_id: DeliveryId,
) -> Result<Prepared, ApiError> {
    let mut v = Validator::new();
    let not_yet = "is not supported by this version of Herald yet";
    for (field, given) in [
        ("scheduled_for", input.scheduled_for.is_some()),
        ("actions", input.actions.is_some()),
        ("media", input.media.is_some()),
        ("attachments", input.attachments.is_some()),
        ("recipient.push", input.recipient.push.is_some()),
    ] {
        v.check(!given, field, || not_yet.to_owned());
    }
    let requested_channel = match input.channel.as_deref().map(str::parse::<Channel>) {
        None => None,
        Some(Ok(channel)) if channel != Channel::Webhook => Some(channel),
        Some(_) => {
            v.error(
                "channel",
                "must be one of email, sms, whatsapp, telegram, push, slack, discord",
            );
            None
        }
    };
    let priority = input.priority.as_deref().unwrap_or("normal");
    v.check(
        matches!(priority, "low" | "normal" | "high"),
        "priority",
        || "must be low, normal or high".into(),
    );
    let vars = input
        .vars
        .unwrap_or_else(|| Value::Object(Default::default()));
    v.check(vars.is_object(), "vars", || "must be a JSON object".into());
    v.length("template", &input.template, 1, 64);
    let contacts = validate_recipient(state, &input.recipient, &mut v);
    v.finish()?;

    let now = Utc::now();
    let (recipient, recipient_changed) =
        resolve_recipient(state, caller, &input.recipient, contacts, now, known).await?;
    let template = state
        .store
        .template(&caller.tenant_id, &input.template)
        .await?
        .ok_or_else(|| ApiError::TemplateNotFound(input.template.clone()))?;
    let channel = choose_channel(
        requested_channel,
        |c| template.channels.contains_key(&c),
        &recipient.contacts,
    )
    .map_err(|err| ApiError::field("channel", err.to_string()))?;
    let content = &template.channels[&channel];
    let rendered = template::render(content, &vars).map_err(|err| match err {
        RenderError::MissingVariable(name) => {
            ApiError::field(format!("vars.{name}"), "required by the template")
        }
        other => ApiError::field("template", other.to_string()),
    })?;
    let destination = recipient
        .contacts
        .destination(channel)
        .expect("choose_channel checked it")
        .to_owned();

    let mut events = Vec::with_capacity(2);
    if recipient_changed {
        events.push(HeraldEvent::RecipientUpserted(RecipientUpserted::from(
            &recipient,
        )));
    }
    events.push(HeraldEvent::SendRequested(SendRequested {
        tenant_id: caller.tenant_id.to_string(),
        delivery_id: delivery_id.to_string(),
        request_id: Some(request_id::current()),
        recipient_id: recipient.id.to_string(),
        channel: channel.to_string(),
        template: template.slug.clone(),
        vars_json: vars.to_string(),
        subject: rendered.subject,
        body: rendered.body,
        destination,
        priority: priority.to_owned(),
        scheduled_for: None,
        idempotency_key: input.idempotency_key.clone(),
        requested_at: now.timestamp_millis(),
    }));
    let changed = recipient_changed.then(|| {
        match known.iter_mut().find(|r| r.id == recipient.id) {
            Some(slot) => *slot = recipient.clone(),
            None => known.push(recipient.clone()),
        }
        recipient.clone()
    });
    Ok(Prepared {
        events,
        recipient: changed,
        out: SendOut {
            status: "queued",
            delivery_id: delivery_id.to_string(),
            channel: channel.as_str(),
            recipient: RecipientRef {
                id: recipient.id.to_string(),
            },
            template: template.slug,
        },
    })
}

/// Checks every contact's shape; returns them as domain contacts.
fn validate_recipient(state: &IngestState, input: &RecipientIn, v: &mut Validator) -> Contacts {
    let contacts = Contacts {
        email: input.email.clone(),
        phone: input.phone.clone(),
        whatsapp_phone: input.whatsapp_phone.clone(),
        telegram_chat_id: input.telegram_chat_id.clone(),
        slack_webhook_url: input.slack_webhook_url.clone(),
        discord_webhook_url: input.discord_webhook_url.clone(),
    };
    let has_contact = contacts != Contacts::default();
    match (&input.id, has_contact) {
        (Some(id), false) => {
            if RecipientId::parse(id).is_err() {
                v.error("recipient.id", "must be a recipient id (`rcp_...`)");
            }
        }
        (Some(_), true) => v.error("recipient", "give either `id` or contacts, not both"),
        (None, false) => v.error("recipient", "give an `id` or at least one contact"),
        (None, true) => {}
    }
    if let Some(name) = &input.name {
        v.length("recipient.name", name, 1, 200);
    }
    if let Some(email) = &contacts.email {
        v.check(valid_email(email), "recipient.email", || {
            "must be an email address".into()
        });
    }
    for (field, phone) in [
        ("recipient.phone", &contacts.phone),
        ("recipient.whatsapp_phone", &contacts.whatsapp_phone),
    ] {
        if let Some(phone) = phone {
            v.check(valid_e164(phone), field, || {
                "must be an E.164 phone number, like +40712345678".into()
            });
        }
    }
    if let Some(chat) = &contacts.telegram_chat_id {
        v.length("recipient.telegram_chat_id", chat, 1, 64);
    }
    for (field, url) in [
        ("recipient.slack_webhook_url", &contacts.slack_webhook_url),
        (
            "recipient.discord_webhook_url",
            &contacts.discord_webhook_url,
        ),
    ] {
        if let Some(url) = url {
            v.length(field, url, 1, 2048);
            if let Err(err) = state.target_policy.check_url(url) {
                v.error(field, err.to_string());
            }
        }
    }
    contacts
}

/// Finds the recipient by id, or by its first matching contact, creating it when unknown.
/// Returns the recipient and whether it is new or changed (and must be appended).
async fn resolve_recipient(
    state: &IngestState,
    caller: &Caller,
    input: &RecipientIn,
    contacts: Contacts,
    now: chrono::DateTime<Utc>,
    known: &[Recipient],
) -> Result<(Recipient, bool), ApiError> {
    if let Some(id) = &input.id {
        let id = RecipientId::from_trusted(id);
        if let Some(recipient) = known.iter().find(|r| r.id == id) {
            return Ok((recipient.clone(), false));
        }
        let recipient = state.store.recipient(&caller.tenant_id, &id).await?;
        return recipient
            .map(|r| (r, false))
            .ok_or_else(|| ApiError::field("recipient.id", "no recipient with this id"));
    }
    let lookups = herald_store::indexed_contacts(&contacts)
        .map(|(kind, value)| (kind, value.map(str::to_owned)));
    for (kind, value) in lookups {
        let Some(value) = value else { continue };
        let earlier = known.iter().find(|r| {
            herald_store::indexed_contacts(&r.contacts)
                .iter()
                .any(|(k, v)| *k == kind && *v == Some(value.as_str()))
        });
        let found = match earlier {
            Some(recipient) => Some(recipient.clone()),
            None => match state
                .store
                .recipient_by_contact(&caller.tenant_id, kind, &value)
                .await?
            {
                Some(id) => state.store.recipient(&caller.tenant_id, &id).await?,
                None => None,
            },
        };
        let Some(mut recipient) = found else {
            continue;
        };
        let before = recipient.clone();
        merge(&mut recipient.contacts, contacts);
        if input.name.is_some() {
            recipient.name.clone_from(&input.name);
        }
        let changed = recipient != before;
        if changed {
            recipient.updated_at = now;
        }
        return Ok((recipient, changed));
    }
    let recipient = Recipient {
        id: RecipientId::generate(),
        tenant_id: caller.tenant_id.clone(),
        name: input.name.clone(),
        contacts,
        created_at: now,
        updated_at: now,
    };
    Ok((recipient, true))
}

/// Contacts given in a send update the recipient's; ones not given are kept.
fn merge(existing: &mut Contacts, given: Contacts) {
    let Contacts {
        email,
        phone,
        whatsapp_phone,
        telegram_chat_id,
        slack_webhook_url,
        discord_webhook_url,
    } = given;
    existing.email = email.or(existing.email.take());
    existing.phone = phone.or(existing.phone.take());
    existing.whatsapp_phone = whatsapp_phone.or(existing.whatsapp_phone.take());
    existing.telegram_chat_id = telegram_chat_id.or(existing.telegram_chat_id.take());
    existing.slack_webhook_url = slack_webhook_url.or(existing.slack_webhook_url.take());
    existing.discord_webhook_url = discord_webhook_url.or(existing.discord_webhook_url.take());
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn valid_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(valid_email("ana@example.com"));
        assert!(!valid_email("ana@localhost"));
        assert!(!valid_email("@example.com"));
        assert!(!valid_email("a na@example.com"));
        assert!(!valid_email("ana"));
    }

    #[test]
    fn phones() {
        assert!(valid_e164("+40712345678"));
        assert!(!valid_e164("0712345678"));
        assert!(!valid_e164("+0712345678"));
        assert!(!valid_e164("+40 712"));
        assert!(!valid_e164("+1234567890123456"));
    }

    #[test]
    fn merging_keeps_contacts_not_given() {
        let mut existing = Contacts {
            email: Some("a@b.co".into()),
            phone: Some("+40712345678".into()),
            ..Contacts::default()
        };
        merge(
            &mut existing,
            Contacts {
                phone: Some("+40700000000".into()),
                ..Contacts::default()
            },
        );
        assert_eq!(existing.email.as_deref(), Some("a@b.co"));
        assert_eq!(existing.phone.as_deref(), Some("+40700000000"));
    }
}
