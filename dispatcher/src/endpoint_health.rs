//! When a webhook endpoint is disabled, as a pure state machine.
//!
//! The dispatcher that owns an endpoint's partition keeps one [`EndpointHealth`] per endpoint
//! and feeds it every attempt's report, in completion order.
//!
//! **What counts as a failure**: an attempt that was made and did not get a 2xx answer — a
//! timeout, a connection error (including a target refused at connection time because it
//! resolves to a non-public address), or any non-2xx status, 429 included. A 2xx resets the
//! count to zero. Deliveries that fail without an attempt (the endpoint was already disabled
//! or deleted, its secret cannot be opened) do not count. After `threshold` consecutive
//! failures (10 unless the tenant sets `endpoint_failure_threshold`) the endpoint is disabled;
//! a `410 Gone` disables it at once.
//!
//! **Exactly `threshold`**: attempts run concurrently, and attempts started before the
//! disabling failure completed would otherwise still reach the endpoint. So an endpoint with
//! `n` consecutive failures gets at most `threshold - n` attempts in flight: as failures
//! accumulate, concurrency narrows, and the `threshold`-th failure is the last attempt made.

use herald_domain::model::Endpoint;
use herald_domain::webhook::AttemptOutcome;

use crate::providers::AttemptReport;

/// What one attempt did to the endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthVerdict {
    /// Not an endpoint's attempt, or no attempt at all: nothing changes.
    Untracked,
    /// The endpoint's consecutive failures after the attempt.
    Counted { consecutive_failures: u32 },
    /// The attempt disabled the endpoint.
    Disabled {
        consecutive_failures: u32,
        reason: String,
    },
}

impl HealthVerdict {
    pub fn consecutive_failures(&self) -> Option<u32> {
        match self {
            HealthVerdict::Untracked => None,
            HealthVerdict::Counted {
                consecutive_failures,
            }
            | HealthVerdict::Disabled {
                consecutive_failures,
                ..
            } => Some(*consecutive_failures),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub consecutive_failures: u32,
    pub threshold: u32,
    /// When this dispatcher disabled the endpoint (ms), or saw it disabled. Kept until the
    /// endpoint is re-enabled (`PATCH {"is_active": true}`, a later `updated_at`).
    pub disabled_at: Option<i64>,
}

impl EndpointHealth {
    pub fn new(consecutive_failures: u32, threshold: u32) -> Self {
        Self {
            consecutive_failures,
            threshold: threshold.max(1),
            disabled_at: None,
        }
    }

    /// Whether another attempt may start while `in_flight` are running.
    pub fn may_start(&self, in_flight: usize) -> bool {
        let failures = self.consecutive_failures as usize;
        let threshold = self.threshold as usize;
        // A disabled endpoint's tasks are skipped without a request: nothing to limit.
        self.disabled_at.is_some()
            || failures + in_flight < threshold
            // At or over the threshold without being disabled (the threshold was lowered, or
            // a restart read the count before the disabling was projected): one attempt at a
            // time, whose outcome either resets the count or disables the endpoint. Never
            // stuck.
            || (failures >= threshold && in_flight == 0)
    }

    /// Takes in the endpoint as the store has it now.
    pub fn observe(&mut self, endpoint: &Endpoint) {
        let updated_at = endpoint.updated_at.timestamp_millis();
        match (endpoint.is_active, self.disabled_at) {
            // Re-enabled after we disabled it: a fresh start.
            (true, Some(disabled_at)) if updated_at > disabled_at => {
                self.disabled_at = None;
                self.consecutive_failures = 0;
            }
            // Disabled elsewhere (before a restart, by another dispatcher): stop too.
            (false, None) => self.disabled_at = Some(updated_at),
            _ => {}
        }
    }

    /// Whether the endpoint is disabled as far as this dispatcher knows.
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }

    /// Counts one attempt's report.
    pub fn record(&mut self, report: &AttemptReport, now_ms: i64) -> HealthVerdict {
        if report.skipped {
            return HealthVerdict::Untracked;
        }
        if report.outcome == AttemptOutcome::Success {
            self.consecutive_failures = 0;
            return HealthVerdict::Counted {
                consecutive_failures: 0,
            };
        }
        self.consecutive_failures += 1;
        let failures = self.consecutive_failures;
        if self.disabled_at.is_some() {
            // An attempt that was already in flight: the endpoint is disabled once.
            return HealthVerdict::Counted {
                consecutive_failures: failures,
            };
        }
        let reason = if report.status_code == Some(410) {
            "the endpoint answered 410 Gone".to_owned()
        } else if failures >= self.threshold {
            let last = report.error.as_deref().unwrap_or("failed");
            format!("{failures} consecutive failed attempts (last: {last})")
        } else {
            return HealthVerdict::Counted {
                consecutive_failures: failures,
            };
        };
        self.disabled_at = Some(now_ms);
        HealthVerdict::Disabled {
            consecutive_failures: failures,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use herald_domain::ids::{EndpointId, TenantId};
    use herald_domain::model::SignatureScheme;

    use super::*;

    fn answered(status: u16) -> AttemptReport {
        AttemptReport {
            outcome: herald_domain::webhook::classify_webhook_status(status),
            status_code: Some(status),
            error: (status >= 300).then(|| format!("answered HTTP {status}")),
            response_excerpt: None,
            external_id: None,
            latency: Duration::from_millis(3),
            retry_after: None,
            skipped: false,
        }
    }

    fn endpoint(active: bool, updated_ms: i64) -> Endpoint {
        let at = DateTime::<Utc>::from_timestamp_millis(updated_ms).unwrap();
        Endpoint {
            id: EndpointId::generate(),
            tenant_id: TenantId::generate(),
            url: "https://example.com".into(),
            description: None,
            events: vec![],
            signature_scheme: SignatureScheme::Standard,
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_secret_expires_at: None,
            retry_schedule: None,
            rate_limit_per_second: None,
            is_active: active,
            disabled_reason: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_tenth_consecutive_failure_disables_and_not_the_ninth() {
        let mut health = EndpointHealth::new(0, 10);
        for n in 1..=9 {
            assert_eq!(
                health.record(&answered(500), n),
                HealthVerdict::Counted {
                    consecutive_failures: n as u32
                }
            );
        }
        let verdict = health.record(&answered(503), 10);
        assert!(
            matches!(verdict, HealthVerdict::Disabled { consecutive_failures: 10, ref reason } if reason.contains("503")),
            "{verdict:?}"
        );
        // A straggler that was in flight does not disable it twice.
        assert!(matches!(
            health.record(&answered(500), 11),
            HealthVerdict::Counted { .. }
        ));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut health = EndpointHealth::new(0, 10);
        for n in 0..9 {
            health.record(&answered(500), n);
        }
        health.record(&answered(204), 9);
        for n in 0..9 {
            assert!(matches!(
                health.record(&answered(408), 10 + n),
                HealthVerdict::Counted { .. }
            ));
        }
        assert!(!health.is_disabled());
    }

    #[test]
    fn gone_disables_at_once_and_skips_do_not_count() {
        let mut health = EndpointHealth::new(0, 10);
        assert_eq!(
            health.record(&AttemptReport::skipped("deleted"), 1),
            HealthVerdict::Untracked
        );
        assert!(matches!(
            health.record(&answered(410), 2),
            HealthVerdict::Disabled {
                consecutive_failures: 1,
                ..
            }
        ));
    }

    #[test]
    fn concurrency_narrows_near_the_threshold() {
        let mut health = EndpointHealth::new(0, 10);
        assert!(health.may_start(9));
        assert!(!health.may_start(10));
        for n in 0..7 {
            health.record(&answered(500), n);
        }
        assert!(health.may_start(2));
        assert!(
            !health.may_start(3),
            "7 failures + 3 in flight could make 10"
        );
    }

    #[test]
    fn re_enabling_after_the_disable_starts_afresh() {
        let mut health = EndpointHealth::new(9, 10);
        health.record(&answered(500), 1_000);
        assert!(health.is_disabled());
        // The store has not caught up yet: still the version from before the disable.
        health.observe(&endpoint(true, 500));
        assert!(health.is_disabled());
        health.observe(&endpoint(true, 2_000));
        assert!(!health.is_disabled());
        assert_eq!(health.consecutive_failures, 0);
        // Disabled by someone else: noticed.
        health.observe(&endpoint(false, 3_000));
        assert!(health.is_disabled());
    }

    #[test]
    fn a_count_at_the_threshold_without_a_disable_probes_once_and_never_sticks() {
        // E.g. the tenant's threshold was lowered to 5 while the endpoint had 7 failures.
        let mut health = EndpointHealth::new(7, 5);
        assert!(health.may_start(0));
        assert!(!health.may_start(1));
        assert!(matches!(
            health.record(&answered(500), 1),
            HealthVerdict::Disabled {
                consecutive_failures: 8,
                ..
            }
        ));
        let mut recovering = EndpointHealth::new(7, 5);
        recovering.record(&answered(200), 1);
        assert!(recovering.may_start(4) && !recovering.may_start(5));
    }

    #[test]
    fn a_per_tenant_threshold() {
        let mut health = EndpointHealth::new(0, 3);
        health.record(&answered(500), 1);
        health.record(&answered(500), 2);
        assert!(matches!(
            health.record(&answered(500), 3),
            HealthVerdict::Disabled { .. }
        ));
    }
}
