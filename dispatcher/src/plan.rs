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
use herald_domain::{Channel, DeliveryStatus};
use herald_schemas::{
    BusinessEventReceived, DeliveryAttempted, DeliveryFailed, DeliverySucceeded, DeliveryTask,
    EndpointDisabled, HeraldEvent, SendRequested,
};

use crate::endpoint_health::HealthVerdict;
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
    event_id: &str,
    event_type: &str,
    data: &serde_json::Value,
    at_ms: i64,
    endpoints: &[Endpoint],
) -> Vec<DeliveryTask> {
    let body = WebhookPayload::at(event_id, event_type, at_ms, data).to_json();
    // Ids come from the event id alone (never the clock), so routing it again yields the
    // same deliveries.
    let id_time_ms = EventId::from_trusted(event_id).timestamp_ms();
    endpoints
        .iter()
        .filter(|endpoint| endpoint.is_active && subscribes_to(&endpoint.events, event_type))
        .map(|endpoint| {
            let delivery_id =
                DeliveryId::derive(id_time_ms, format!("{event_id}/{}", endpoint.id).as_bytes());
            DeliveryTask::first_webhook_attempt(
                endpoint,
                delivery_id.to_string(),
                event_id,
                event_type,
                body.clone(),
                at_ms,
            )
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
    webhook_fanout(&event_id, &event_type, &data, at_ms, endpoints)
}

/// What an attempt's planning needs besides the task and the report.
pub struct AttemptContext<'a> {
    /// The endpoint's own schedule, or the server's default.
    pub schedule: &'a RetrySchedule,
    pub now_ms: i64,
    /// The tenant's endpoints, for the `delivery.*` and `endpoint.disabled` announcements.
    pub endpoints: &'a [Endpoint],
    /// What the attempt did to the endpoint's health (see `endpoint_health`).
    pub verdict: &'a HealthVerdict,
}

/// What follows one attempt of `task`: the attempt record, then either success, a retry
/// after the schedule's delay (with jitter, honouring `Retry-After`), or failure (with the
/// task dead-lettered). An attempt that disabled its endpoint fails the delivery and
/// announces `endpoint.disabled`; a skipped attempt fails it without an attempt on record.
pub fn after_attempt(
    task: &DeliveryTask,
    report: &AttemptReport,
    ctx: &AttemptContext<'_>,
) -> Vec<Outgoing> {
    let attempt = task.attempt.max(1);
    let now_ms = ctx.now_ms;
    let disabled = matches!(ctx.verdict, HealthVerdict::Disabled { .. });
    let retry_delay = match report.outcome {
        AttemptOutcome::Retriable if !disabled && !report.skipped => {
            ctx.schedule
                .next_wait(attempt as u32, &task.delivery_id, report.retry_after)
        }
        _ => None,
    };
    let mut out = Vec::new();
    if !report.skipped {
        out.push(Outgoing::Event(HeraldEvent::DeliveryAttempted(
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
                message_id: Some(task.message_id.clone()),
                event_type: task.event_type.clone(),
                consecutive_failures: ctx
                    .verdict
                    .consecutive_failures()
                    .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            },
        )));
    }
    if let HealthVerdict::Disabled {
        consecutive_failures,
        reason,
    } = ctx.verdict
    {
        out.extend(endpoint_disabled(
            task,
            *consecutive_failures,
            reason,
            now_ms,
            ctx.endpoints,
        ));
    }
    let attempts = if report.skipped { attempt - 1 } else { attempt };
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
                ctx.endpoints,
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
            let reason = match (outcome, &report.error, ctx.verdict) {
                (_, _, HealthVerdict::Disabled { reason, .. }) => {
                    format!("the endpoint was disabled: {reason}")
                }
                (AttemptOutcome::Retriable, Some(error), _) => {
                    format!("gave up after {attempt} attempts: {error}")
                }
                (_, Some(error), _) => error.clone(),
                (_, None, _) => "delivery failed".to_owned(),
            };
            out.push(Outgoing::Event(HeraldEvent::DeliveryFailed(
                DeliveryFailed {
                    tenant_id: task.tenant_id.clone(),
                    delivery_id: task.delivery_id.clone(),
                    channel: task.channel.clone(),
                    endpoint_id: task.endpoint_id.clone(),
                    attempts,
                    reason: reason.clone(),
                    failed_at: now_ms,
                },
            )));
            out.push(Outgoing::DeadLetter(task.clone()));
            let fanout = status_fanout(
                task,
                DeliveryStatus::Failed,
                attempts,
                Some(&reason),
                now_ms,
                ctx.endpoints,
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

/// The record of an endpoint being disabled, and its `endpoint.disabled` announcement to
/// the tenant's other subscribed endpoints (never to the disabled one itself).
fn endpoint_disabled(
    task: &DeliveryTask,
    consecutive_failures: u32,
    reason: &str,
    now_ms: i64,
    endpoints: &[Endpoint],
) -> Vec<Outgoing> {
    let Some(endpoint_id) = &task.endpoint_id else {
        return Vec::new();
    };
    let mut out = vec![Outgoing::Event(HeraldEvent::EndpointDisabled(
        EndpointDisabled {
            tenant_id: task.tenant_id.clone(),
            endpoint_id: endpoint_id.clone(),
            reason: reason.to_owned(),
            consecutive_failures: i32::try_from(consecutive_failures).unwrap_or(i32::MAX),
            disabled_at: now_ms,
        },
    ))];
    // Derived from the attempt that disabled it, so re-processing that attempt announces the
    // disabling under the same `webhook-id`.
    let event_id = EventId::derive(
        task.created_at,
        format!(
            "{endpoint_id}/disabled/{}/{}",
            task.delivery_id, task.attempt
        )
        .as_bytes(),
    )
    .to_string();
    let data = serde_json::json!({
        "endpoint_id": endpoint_id,
        "url": task.destination,
        "reason": reason,
        "consecutive_failures": consecutive_failures,
    });
    let others: Vec<Endpoint> = endpoints
        .iter()
        .filter(|e| e.id.as_str() != endpoint_id)
        .cloned()
        .collect();
    out.extend(
        webhook_fanout(&event_id, ENDPOINT_DISABLED_EVENT, &data, now_ms, &others)
            .into_iter()
            .map(|t| Outgoing::Event(HeraldEvent::DeliveryTask(t))),
    );
    out
}

/// The event type announcing that an endpoint was disabled.
pub const ENDPOINT_DISABLED_EVENT: &str = "endpoint.disabled";

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
            previous_secret: None,
            previous_secret_expires_at: None,
            retry_schedule: None,
            rate_limit_per_second: None,
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

    fn webhook_task(attempt: i32) -> DeliveryTask {
        DeliveryTask {
            channel: "webhook".into(),
            endpoint_id: Some("ep_1".into()),
            recipient_id: None,
            message_id: "evt_1".into(),
            event_type: Some("order.shipped".into()),
            ..slack_task(attempt)
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
            retry_after: None,
            skipped: false,
        }
    }

    fn plan(
        task: &DeliveryTask,
        report: &AttemptReport,
        schedule: &RetrySchedule,
        now_ms: i64,
        endpoints: &[Endpoint],
    ) -> Vec<Outgoing> {
        plan_with(
            task,
            report,
            schedule,
            now_ms,
            endpoints,
            &HealthVerdict::Untracked,
        )
    }

    fn plan_with(
        task: &DeliveryTask,
        report: &AttemptReport,
        schedule: &RetrySchedule,
        now_ms: i64,
        endpoints: &[Endpoint],
        verdict: &HealthVerdict,
    ) -> Vec<Outgoing> {
        after_attempt(
            task,
            report,
            &AttemptContext {
                schedule,
                now_ms,
                endpoints,
                verdict,
            },
        )
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
        let first = webhook_fanout("evt_1", "order.shipped", &data, 1_000, &endpoints);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].endpoint_id.as_deref(),
            Some(endpoints[0].id.as_str())
        );
        assert_eq!(first[0].message_id, "evt_1");
        assert_eq!(
            first,
            webhook_fanout("evt_1", "order.shipped", &data, 1_000, &endpoints)
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
        let out = plan(
            &slack_task(1),
            &report(AttemptOutcome::Retriable),
            &schedule,
            10_000,
            &[],
        );
        let Outgoing::Retry { task, delay } = &out[1] else {
            unreachable!()
        };
        // 5 s with at most 10 % jitter, the same every time it is planned.
        assert!(*delay >= Duration::from_millis(4_500) && *delay < Duration::from_millis(5_500));
        assert_eq!(task.attempt, 2);
        assert_eq!(task.not_before, 10_000 + delay.as_millis() as i64);
        assert_eq!(task.message_id, "dlv_1");
        assert_eq!(
            out,
            plan(
                &slack_task(1),
                &report(AttemptOutcome::Retriable),
                &schedule,
                10_000,
                &[],
            )
        );
    }

    /// Schedule timing with a controlled clock: the seeds' schedules, attempt by attempt.
    #[test]
    fn each_retry_waits_its_scheduled_delay() {
        for (text, expected) in [
            ("30s,2m,10m", vec![30, 120, 600]),
            ("5m,30m,2h,5h,10h", vec![300, 1_800, 7_200, 18_000, 36_000]),
        ] {
            let schedule: RetrySchedule = text.parse().unwrap();
            let mut task = webhook_task(1);
            let mut now = 1_000_000;
            for expected_secs in &expected {
                let out = plan(
                    &task,
                    &report(AttemptOutcome::Retriable),
                    &schedule,
                    now,
                    &[],
                );
                let Some(Outgoing::Retry { task: next, delay }) = out.last() else {
                    panic!("{text}: attempt {} should retry: {out:?}", task.attempt)
                };
                let expected = Duration::from_secs(*expected_secs);
                assert!(
                    delay.as_secs_f64() >= expected.as_secs_f64() * 0.9
                        && delay.as_secs_f64() < expected.as_secs_f64() * 1.1,
                    "{text}: attempt {}: {delay:?} is not {expected:?} ± 10 %",
                    task.attempt
                );
                now = next.not_before;
                task = next.clone();
            }
            let out = plan(
                &task,
                &report(AttemptOutcome::Retriable),
                &schedule,
                now,
                &[],
            );
            assert_eq!(
                kinds(&out),
                ["DeliveryAttempted", "DeliveryFailed", "dead-letter"],
                "{text}: after {} attempts the schedule is exhausted",
                expected.len() + 1
            );
        }
    }

    #[test]
    fn retry_after_postpones_the_retry() {
        let schedule: RetrySchedule = "5s".parse().unwrap();
        let limited = AttemptReport {
            status_code: Some(429),
            retry_after: Some(Duration::from_secs(120)),
            ..report(AttemptOutcome::Retriable)
        };
        let out = plan(&webhook_task(1), &limited, &schedule, 0, &[]);
        let Some(Outgoing::Retry { task, delay }) = out.last() else {
            unreachable!()
        };
        assert_eq!(*delay, Duration::from_secs(120));
        assert_eq!(task.not_before, 120_000);
    }

    #[test]
    fn disabling_fails_the_delivery_and_tells_the_other_endpoints() {
        let watcher = endpoint(&["endpoint.*"], true);
        let failing = endpoint(&[], true);
        let task = DeliveryTask {
            endpoint_id: Some(failing.id.to_string()),
            ..webhook_task(4)
        };
        let verdict = HealthVerdict::Disabled {
            consecutive_failures: 10,
            reason: "10 consecutive failed attempts".into(),
        };
        let out = plan_with(
            &task,
            &report(AttemptOutcome::Retriable),
            &RetrySchedule::default(),
            5_000,
            &[watcher.clone(), failing.clone()],
            &verdict,
        );
        assert_eq!(
            kinds(&out),
            [
                "DeliveryAttempted",
                "EndpointDisabled",
                "DeliveryTask",
                "DeliveryFailed",
                "dead-letter"
            ]
        );
        let Outgoing::Event(HeraldEvent::DeliveryTask(notice)) = &out[2] else {
            unreachable!()
        };
        assert_eq!(notice.endpoint_id.as_deref(), Some(watcher.id.as_str()));
        assert_eq!(notice.event_type.as_deref(), Some(ENDPOINT_DISABLED_EVENT));
        let Outgoing::Event(HeraldEvent::DeliveryAttempted(attempted)) = &out[0] else {
            unreachable!()
        };
        assert_eq!(attempted.consecutive_failures, Some(10));
        assert_eq!(attempted.next_attempt_at, None);
    }

    #[test]
    fn a_skipped_attempt_fails_without_an_attempt_on_record() {
        let out = plan(
            &webhook_task(3),
            &AttemptReport::skipped("the endpoint is disabled"),
            &RetrySchedule::default(),
            0,
            &[],
        );
        assert_eq!(kinds(&out), ["DeliveryFailed", "dead-letter"]);
        let Outgoing::Event(HeraldEvent::DeliveryFailed(failed)) = &out[0] else {
            unreachable!()
        };
        assert_eq!(failed.attempts, 2, "attempt 3 was never made");
    }

    #[test]
    fn exhausted_schedule_fails_and_dead_letters() {
        let schedule: RetrySchedule = "5s,5m".parse().unwrap();
        let subscriber = [endpoint(&["delivery.*"], true)];
        let out = plan(
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
        let out = plan(
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
            retry_after: None,
            skipped: false,
        };
        let out = plan(
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
        let out = plan(
            &webhook_task,
            &ok,
            &RetrySchedule::default(),
            0,
            &subscriber,
        );
        assert_eq!(kinds(&out), ["DeliveryAttempted", "DeliverySucceeded"]);
    }
}
