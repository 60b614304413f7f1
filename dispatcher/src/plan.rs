//! What the dispatcher does next, as pure functions: routing requests into delivery tasks,
//! fanning events out to subscribed endpoints, and deciding what follows an attempt
//! (success, a retry in a tier, or failure and the dead-letter topic).
//!
//! Everything here is deterministic in its inputs — ids included — so re-processing a record
//! after a crash produces the very same tasks and events, which every consumer downstream
//! deduplicates.

use std::time::Duration;

use herald_domain::filter::subscribes_to;
use herald_domain::ids::{DeliveryId, EventId};
use herald_domain::model::Endpoint;
use herald_domain::retry::RetrySchedule;
use herald_domain::webhook::{delivery_event_type, AttemptOutcome, WebhookPayload};
use herald_domain::{time_from_millis, Channel, DeliveryStatus};
use herald_schemas::{
    BusinessEventReceived, DeliveryAttempted, DeliveryFailed, DeliverySucceeded, DeliveryTask,
    HeraldEvent, SendRequested,
};

use crate::providers::AttemptReport;

/// Something to append, and where.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// To the event's own topic (see `Topics::route`).
    Event(HeraldEvent),
    /// To the retry tier of `delay`.
    Retry { task: DeliveryTask, delay: Duration },
    /// To the dead-letter topic.
    DeadLetter(DeliveryTask),
}

/// The delivery task of a send request.
pub fn task_for_send(request: &SendRequested) -> DeliveryTask {
    DeliveryTask {
        tenant_id: request.tenant_id.clone(),
        delivery_id: request.delivery_id.clone(),
        channel: request.channel.clone(),
        endpoint_id: None,
        recipient_id: Some(request.recipient_id.clone()),
        destination: request.destination.clone(),
        subject: request.subject.clone(),
        body: request.body.clone(),
        // The delivery id doubles as the message id: stable across every retry.
        message_id: request.delivery_id.clone(),
        event_type: None,
        attempt: 1,
        not_before: 0,
        created_at: request.requested_at,
        priority: request.priority.clone(),
    }
}

/// One webhook task per active endpoint subscribed to `event_type`.
///
/// The delivery id of each task is derived from the event id and the endpoint id, so
/// routing the same event twice yields the same deliveries.
pub fn webhook_fanout(
    tenant_id: &str,
    event_id: &str,
    event_type: &str,
    data: &serde_json::Value,
    at_ms: i64,
    endpoints: &[Endpoint],
) -> Vec<DeliveryTask> {
    let body = WebhookPayload {
        id: event_id,
        event_type,
        timestamp: time_from_millis(at_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data,
    }
    .to_json();
    // Ids come from the event id alone (never the clock), so routing it again yields the
    // same deliveries.
    let id_time_ms = EventId::from_trusted(event_id).timestamp_ms();
    endpoints
        .iter()
        .filter(|endpoint| endpoint.is_active && subscribes_to(&endpoint.events, event_type))
        .map(|endpoint| DeliveryTask {
            tenant_id: tenant_id.to_owned(),
            delivery_id: DeliveryId::derive(
                id_time_ms,
                format!("{event_id}/{}", endpoint.id).as_bytes(),
            )
            .to_string(),
            channel: Channel::Webhook.to_string(),
            endpoint_id: Some(endpoint.id.to_string()),
            recipient_id: None,
            destination: endpoint.url.clone(),
            subject: None,
            body: body.clone(),
            message_id: event_id.to_owned(),
            event_type: Some(event_type.to_owned()),
            attempt: 1,
            not_before: 0,
            created_at: at_ms,
            priority: "normal".into(),
        })
        .collect()
}

/// The fan-out of a business event.
pub fn tasks_for_business_event(
    event: &BusinessEventReceived,
    endpoints: &[Endpoint],
) -> Vec<DeliveryTask> {
    let data = serde_json::from_str(&event.data_json).unwrap_or(serde_json::Value::Null);
    webhook_fanout(
        &event.tenant_id,
        &event.event_id,
        &event.event_name,
        &data,
        event.received_at,
        endpoints,
    )
}

/// The fan-out announcing that a notification reached `status` (`delivery.<status>`).
/// Webhook deliveries announce nothing: a failing endpoint must not set off a cascade of
/// `delivery.failed` webhooks to other failing endpoints.
pub fn status_fanout(
    task: &DeliveryTask,
    status: DeliveryStatus,
    attempts: i32,
    error: Option<&str>,
    at_ms: i64,
    endpoints: &[Endpoint],
) -> Vec<DeliveryTask> {
    if task.channel == Channel::Webhook.as_str() {
        return Vec::new();
    }
    let event_type = delivery_event_type(status);
    // Derived from what the task carries, not the time of this attempt: re-processing the
    // attempt announces the status under the same `webhook-id`.
    let event_id = EventId::derive(
        task.created_at,
        format!("{}/{}", task.delivery_id, status).as_bytes(),
    )
    .to_string();
    let data = serde_json::json!({
        "delivery_id": task.delivery_id,
        "status": status.as_str(),
        "channel": task.channel,
        "recipient_id": task.recipient_id,
        "attempts": attempts,
        "error": error,
    });
    webhook_fanout(
        &task.tenant_id,
        &event_id,
        &event_type,
        &data,
        at_ms,
        endpoints,
    )
}

/// What follows one attempt of `task`: the attempt record, then either success, a retry
/// after the schedule's delay, or failure (with the task dead-lettered).
pub fn after_attempt(
    task: &DeliveryTask,
    report: &AttemptReport,
    schedule: &RetrySchedule,
    now_ms: i64,
    endpoints: &[Endpoint],
) -> Vec<Outgoing> {
    let attempt = task.attempt.max(1);
    let retry_delay = match report.outcome {
        AttemptOutcome::Retriable => schedule.delay_after_attempt(attempt as u32),
        _ => None,
    };
    let mut out = vec![Outgoing::Event(HeraldEvent::DeliveryAttempted(
        DeliveryAttempted {
            tenant_id: task.tenant_id.clone(),
            delivery_id: task.delivery_id.clone(),
            channel: task.channel.clone(),
            endpoint_id: task.endpoint_id.clone(),
            attempt,
            outcome: report.outcome.as_str().to_owned(),
            status_code: report.status_code.map(i32::from),
            error: report.error.clone(),
            response_excerpt: report.response_excerpt.clone(),
            latency_ms: report.latency.as_millis().min(i64::MAX as u128) as i64,
            attempted_at: now_ms,
            next_attempt_at: retry_delay.map(|delay| now_ms + delay.as_millis() as i64),
        },
    ))];
    match (report.outcome, retry_delay) {
        (AttemptOutcome::Success, _) => {
            out.push(Outgoing::Event(HeraldEvent::DeliverySucceeded(
                DeliverySucceeded {
                    tenant_id: task.tenant_id.clone(),
                    delivery_id: task.delivery_id.clone(),
                    channel: task.channel.clone(),
                    endpoint_id: task.endpoint_id.clone(),
                    attempt,
                    status: DeliveryStatus::Delivered.as_str().to_owned(),
                    external_id: report.external_id.clone(),
                    succeeded_at: now_ms,
                },
            )));
            let fanout = status_fanout(
                task,
                DeliveryStatus::Delivered,
                attempt,
                None,
                now_ms,
                endpoints,
            );
            out.extend(
                fanout
                    .into_iter()
                    .map(|t| Outgoing::Event(HeraldEvent::DeliveryTask(t))),
            );
        }
        (_, Some(delay)) => {
            let next = DeliveryTask {
                attempt: attempt + 1,
                not_before: now_ms + delay.as_millis() as i64,
                ..task.clone()
            };
            out.push(Outgoing::Retry { task: next, delay });
        }
        (outcome, None) => {
            let reason = match (outcome, &report.error) {
                (AttemptOutcome::Retriable, Some(error)) => {
                    format!("gave up after {attempt} attempts: {error}")
                }
                (_, Some(error)) => error.clone(),
                (_, None) => "delivery failed".to_owned(),
            };
            out.push(Outgoing::Event(HeraldEvent::DeliveryFailed(
                DeliveryFailed {
                    tenant_id: task.tenant_id.clone(),
                    delivery_id: task.delivery_id.clone(),
                    channel: task.channel.clone(),
                    endpoint_id: task.endpoint_id.clone(),
                    attempts: attempt,
                    reason: reason.clone(),
                    failed_at: now_ms,
                },
            )));
            out.push(Outgoing::DeadLetter(task.clone()));
            let fanout = status_fanout(
                task,
                DeliveryStatus::Failed,
                attempt,
                Some(&reason),
                now_ms,
                endpoints,
            );
            out.extend(
                fanout
                    .into_iter()
                    .map(|t| Outgoing::Event(HeraldEvent::DeliveryTask(t))),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use herald_domain::ids::{EndpointId, TenantId};
    use herald_domain::model::SignatureScheme;

    use super::*;

    fn endpoint(events: &[&str], active: bool) -> Endpoint {
        Endpoint {
            id: EndpointId::generate(),
            tenant_id: TenantId::generate(),
            url: "https://example.com/hook".into(),
            description: None,
            events: events.iter().map(|s| s.to_string()).collect(),
            signature_scheme: SignatureScheme::Standard,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            is_active: active,
            disabled_reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn slack_task(attempt: i32) -> DeliveryTask {
        DeliveryTask {
            tenant_id: "tnt_1".into(),
            delivery_id: "dlv_1".into(),
            channel: "slack".into(),
            endpoint_id: None,
            recipient_id: Some("rcp_1".into()),
            destination: "https://hooks.slack.com/x".into(),
            subject: None,
            body: "hi".into(),
            message_id: "dlv_1".into(),
            event_type: None,
            attempt,
            not_before: 0,
            created_at: 0,
            priority: "normal".into(),
        }
    }

    fn report(outcome: AttemptOutcome) -> AttemptReport {
        AttemptReport {
            outcome,
            status_code: Some(503),
            error: Some("answered HTTP 503".into()),
            response_excerpt: None,
            external_id: None,
            latency: Duration::from_millis(5),
        }
    }

    fn kinds(out: &[Outgoing]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Outgoing::Event(e) => e.name().to_owned(),
                Outgoing::Retry { delay, .. } => format!("retry {delay:?}"),
                Outgoing::DeadLetter(_) => "dead-letter".into(),
            })
            .collect()
    }

    #[test]
    fn fanout_reaches_only_active_subscribers_with_stable_ids() {
        let endpoints = [
            endpoint(&["order.*"], true),
            endpoint(&["invoice.*"], true),
            endpoint(&[], false),
        ];
        let data = serde_json::json!({"n": 1});
        let first = webhook_fanout("tnt_1", "evt_1", "order.shipped", &data, 1_000, &endpoints);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].endpoint_id.as_deref(),
            Some(endpoints[0].id.as_str())
        );
        assert_eq!(first[0].message_id, "evt_1");
        assert_eq!(
            first,
            webhook_fanout("tnt_1", "evt_1", "order.shipped", &data, 1_000, &endpoints)
        );
        let body: serde_json::Value = serde_json::from_str(&first[0].body).unwrap();
        assert_eq!(body["type"], "order.shipped");
        assert_eq!(body["data"]["n"], 1);
    }

    #[test]
    fn announcements_keep_their_ids_when_reprocessed_later() {
        let subscriber = [endpoint(&["delivery.*"], true)];
        let first = status_fanout(
            &slack_task(1),
            DeliveryStatus::Delivered,
            1,
            None,
            10_000,
            &subscriber,
        );
        let again = status_fanout(
            &slack_task(1),
            DeliveryStatus::Delivered,
            1,
            None,
            99_000,
            &subscriber,
        );
        assert_eq!(first.len(), 1);
        assert_eq!(
            (&first[0].message_id, &first[0].delivery_id),
            (&again[0].message_id, &again[0].delivery_id)
        );
        let failed = status_fanout(
            &slack_task(1),
            DeliveryStatus::Failed,
            1,
            None,
            10_000,
            &subscriber,
        );
        assert_ne!(
            failed[0].message_id, first[0].message_id,
            "each status is its own event"
        );
    }

    #[test]
    fn retriable_failure_goes_to_the_next_tier() {
        let schedule: RetrySchedule = "5s,5m".parse().unwrap();
        let out = after_attempt(
            &slack_task(1),
            &report(AttemptOutcome::Retriable),
            &schedule,
            10_000,
            &[],
        );
        assert_eq!(kinds(&out), ["DeliveryAttempted", "retry 5s"]);
        let Outgoing::Retry { task, .. } = &out[1] else {
            unreachable!()
        };
        assert_eq!((task.attempt, task.not_before), (2, 15_000));
        assert_eq!(task.message_id, "dlv_1");
    }

    #[test]
    fn exhausted_schedule_fails_and_dead_letters() {
        let schedule: RetrySchedule = "5s,5m".parse().unwrap();
        let subscriber = [endpoint(&["delivery.*"], true)];
        let out = after_attempt(
            &slack_task(3),
            &report(AttemptOutcome::Retriable),
            &schedule,
            0,
            &subscriber,
        );
        assert_eq!(
            kinds(&out),
            [
                "DeliveryAttempted",
                "DeliveryFailed",
                "dead-letter",
                "DeliveryTask"
            ]
        );
        let Outgoing::Event(HeraldEvent::DeliveryTask(announce)) = &out[3] else {
            unreachable!()
        };
        assert_eq!(announce.event_type.as_deref(), Some("delivery.failed"));
    }

    #[test]
    fn permanent_failure_does_not_retry() {
        let schedule = RetrySchedule::default();
        let out = after_attempt(
            &slack_task(1),
            &report(AttemptOutcome::Permanent),
            &schedule,
            0,
            &[],
        );
        assert_eq!(
            kinds(&out),
            ["DeliveryAttempted", "DeliveryFailed", "dead-letter"]
        );
    }

    #[test]
    fn success_announces_delivered_but_webhooks_announce_nothing() {
        let subscriber = [endpoint(&["delivery.delivered"], true)];
        let ok = AttemptReport {
            outcome: AttemptOutcome::Success,
            status_code: Some(200),
            error: None,
            response_excerpt: None,
            external_id: None,
            latency: Duration::ZERO,
        };
        let out = after_attempt(
            &slack_task(1),
            &ok,
            &RetrySchedule::default(),
            0,
            &subscriber,
        );
        assert_eq!(
            kinds(&out),
            ["DeliveryAttempted", "DeliverySucceeded", "DeliveryTask"]
        );
        let webhook_task = DeliveryTask {
            channel: "webhook".into(),
            ..slack_task(1)
        };
        let out = after_attempt(
            &webhook_task,
            &ok,
            &RetrySchedule::default(),
            0,
            &subscriber,
        );
        assert_eq!(kinds(&out), ["DeliveryAttempted", "DeliverySucceeded"]);
    }
}
