//! `GET /v1/health`: is Herald keeping up?
//!
//! * `queue_depth`: deliveries accepted but not yet attempted — the dispatcher groups'
//!   consumer lag on the delivery topic and the retry tiers.
//! * `worker`: `stale` when there is a backlog and the dispatchers' committed positions have
//!   not moved for `stale_after`; `active` otherwise.
//! * `last_hour`: outcomes of the last 60 minutes, from the projector's minute counters.
//! * `status`: `degraded` when the queue depth exceeds the threshold or the worker is stale.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use herald_http::ApiError;
use herald_log::Log;
use herald_store::Store;
use serde::Serialize;

use crate::QueryState;

#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// The consumer groups whose backlog is undelivered work, with their topics.
    pub dispatcher_groups: Vec<(String, Vec<String>)>,
    /// Above this queue depth Herald reports `degraded`.
    pub degraded_above: u64,
    /// How long a backlog may sit without progress before the worker is `stale`.
    pub stale_after: Duration,
}

pub struct HealthProbe {
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    config: HealthConfig,
    /// The dispatchers' total committed offset when it last moved, and when.
    progress: Mutex<Option<(u64, Instant)>>,
}

#[derive(Debug, Serialize)]
pub struct HealthOut {
    status: &'static str,
    worker: &'static str,
    queue_depth: u64,
    last_hour: LastHour,
    timestamp: chrono::DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct LastHour {
    sent: u64,
    delivered: u64,
    failed: u64,
}

impl HealthProbe {
    pub fn new(log: Arc<dyn Log>, store: Arc<dyn Store>, config: HealthConfig) -> Self {
        Self {
            log,
            store,
            config,
            progress: Mutex::new(None),
        }
    }

    pub async fn check(&self) -> Result<HealthOut, ApiError> {
        let (mut depth, mut committed) = (0u64, 0u64);
        for (group, topics) in &self.config.dispatcher_groups {
            let lags = self
                .log
                .lag(group, topics)
                .await
                .map_err(ApiError::internal)?;
            depth += lags.iter().map(|l| l.lag()).sum::<u64>();
            committed += lags.iter().map(|l| l.committed).sum::<u64>();
        }
        let stale = self.observe(committed, depth);
        let now = Utc::now();
        let counts = self
            .store
            .health_counts(now.timestamp().div_euclid(60) - 59)
            .await?;
        let degraded = stale || depth > self.config.degraded_above;
        Ok(HealthOut {
            status: if degraded { "degraded" } else { "healthy" },
            worker: if stale { "stale" } else { "active" },
            queue_depth: depth,
            last_hour: LastHour {
                sent: counts.sent,
                delivered: counts.delivered,
                failed: counts.failed,
            },
            timestamp: now,
        })
    }

    /// Records the committed total; true when a backlog has seen no progress for too long.
    fn observe(&self, committed: u64, depth: u64) -> bool {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *progress {
            // The clock runs only while there is a backlog and nothing moves.
            Some((last, since)) if last == committed && depth > 0 => {
                now.duration_since(since) > self.config.stale_after
            }
            _ => {
                *progress = Some((committed, now));
                false
            }
        }
    }
}

pub(crate) async fn health(State(state): State<QueryState>) -> Result<Json<HealthOut>, ApiError> {
    state.health.check().await.map(Json)
}
