//! The dispatcher role: turns requests into deliveries and delivers them.
//!
//! Three kinds of consumer loops, each a consumer group on the log:
//!
//! * **router** (`requests`): a send request becomes a delivery task; a business event
//!   becomes one webhook task per subscribed endpoint. Tasks go to `deliveries`, keyed by
//!   delivery target, so each target is owned by one dispatcher.
//! * **deliverer** (`deliveries`): attempts each task through its channel's provider and
//!   appends what happened (`plan::after_attempt`): the attempt, then success, a retry in a
//!   tier, or failure plus a dead-letter record, and `delivery.*` announcements.
//! * **retry tiers** (`retry.<delay>`): every task in a tier waited the same delay, so the
//!   tier is in due order; the loop waits for the head to come due, then attempts it.
//!
//! Every loop appends its results *before* committing its input, so a crash anywhere means
//! re-processing (at-least-once), never loss; the deterministic ids of `plan` make the
//! re-processing produce identical records.

mod plan;
pub mod providers;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use herald_domain::ids::TenantId;
use herald_domain::model::Endpoint;
use herald_domain::retry::{format_delay, RetrySchedule};
use herald_domain::webhook::AttemptOutcome;
use herald_domain::{Channel, DeliveryStatus};
use herald_log::{ConsumedRecord, Log, LogPosition, OutgoingRecord, StartPosition};
use herald_schemas::topics::{delivery_target_key, Topics};
use herald_schemas::{DeliveryTask, HeraldEvent};
use herald_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use plan::Outgoing;
pub use providers::{AttemptReport, ChannelProvider, GuardedHttp, HttpOptions, Providers};

/// Consumer group names; the group is the unit Kafka balances partitions over.
pub const ROUTER_GROUP: &str = "herald-router";
pub const DELIVERER_GROUP: &str = "herald-dispatcher";

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Delays between attempts (`HERALD_RETRY_SCHEDULE`).
    pub retry_schedule: RetrySchedule,
    pub http: HttpOptions,
    /// Records taken from the log per poll.
    pub batch_size: usize,
    /// Attempts in flight at once per loop.
    pub max_in_flight: usize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            retry_schedule: RetrySchedule::default(),
            http: HttpOptions::default(),
            batch_size: 512,
            max_in_flight: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("the log failed")]
    Log(#[from] herald_log::LogError),
    #[error("a dispatcher loop panicked: {0}")]
    Panicked(String),
}

/// The retry tiers of a schedule: each distinct delay and its topic.
pub fn retry_tiers(topics: &Topics, schedule: &RetrySchedule) -> Vec<(Duration, String)> {
    schedule
        .tiers()
        .into_iter()
        .map(|delay| (delay, topics.retry_tier(&format_delay(delay))))
        .collect()
}

/// Everything the loops share.
struct Shared {
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    topics: Topics,
    config: DispatcherConfig,
    providers: Providers,
    tiers: Vec<(Duration, String)>,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
}

impl Dispatcher {
    pub fn new(
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        topics: Topics,
        config: DispatcherConfig,
    ) -> Self {
        let providers = Providers::new(GuardedHttp::new(config.http.clone()), store.clone());
        let tiers = retry_tiers(&topics, &config.retry_schedule);
        Self {
            shared: Arc::new(Shared {
                log,
                store,
                topics,
                config,
                providers,
                tiers,
            }),
        }
    }

    /// Runs every loop until `shutdown`; returns the first loop's error, if any.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DispatchError> {
        let shared = &self.shared;
        let mut loops = JoinSet::new();
        let spawn = |loops: &mut JoinSet<_>, group: String, topics: Vec<String>, stage: Stage| {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            loops.spawn(async move { consume(shared, group, topics, stage, shutdown).await });
        };
        spawn(
            &mut loops,
            ROUTER_GROUP.into(),
            vec![shared.topics.requests.clone()],
            Stage::Route,
        );
        spawn(
            &mut loops,
            DELIVERER_GROUP.into(),
            vec![shared.topics.deliveries.clone()],
            Stage::Deliver,
        );
        for (delay, topic) in &shared.tiers {
            let group = format!("{DELIVERER_GROUP}-retry-{}", format_delay(*delay));
            spawn(&mut loops, group, vec![topic.clone()], Stage::Retry);
        }
        let mut result = Ok(());
        while let Some(joined) = loops.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "a dispatcher loop stopped");
                    shutdown.cancel();
                    result = result.and(Err(err));
                }
                Err(panic) => {
                    // A panic must stop the process with an error, so supervisors restart it.
                    tracing::error!(error = %panic, "a dispatcher loop panicked");
                    shutdown.cancel();
                    result = result.and(Err(DispatchError::Panicked(panic.to_string())));
                }
            }
        }
        result
    }
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Route,
    Deliver,
    Retry,
}

/// One consumer loop: poll, handle, append the results, then commit.
async fn consume(
    shared: Arc<Shared>,
    group: String,
    topics: Vec<String>,
    stage: Stage,
    shutdown: CancellationToken,
) -> Result<(), DispatchError> {
    let mut consumer = shared
        .log
        .consumer(&group, &topics, StartPosition::Committed)
        .await?;
    tracing::info!(group, ?topics, "dispatcher loop started");
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            polled = consumer.poll(shared.config.batch_size, Duration::from_millis(500)) => polled,
        };
        let records = match polled {
            Ok(records) if records.is_empty() => continue,
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(group, error = %err, "poll failed; retrying");
                if pause(&shutdown, Duration::from_secs(1)).await {
                    return Ok(());
                }
                continue;
            }
        };
        let positions = last_positions(&records);
        let handled = match stage {
            Stage::Route => shared.route(records, &shutdown).await,
            Stage::Deliver => shared.deliver(records, &shutdown).await,
            Stage::Retry => shared.retry(records, &shutdown).await,
        };
        // `None`: shutdown came while waiting; the batch is left uncommitted and re-read.
        let Some(outgoing) = handled else {
            return Ok(());
        };
        if !append_until_done(&shared.log, outgoing, &shutdown).await {
            return Ok(());
        }
        if let Err(err) = consumer.commit(&positions).await {
            // The work is appended; re-processing after a failed commit only duplicates it,
            // and every consumer downstream deduplicates.
            tracing::warn!(group, error = %err, "commit failed; the batch may be processed again");
        }
    }
}

/// Appends, retrying with backoff while the log refuses; false if shut down first.
async fn append_until_done(
    log: &Arc<dyn Log>,
    records: Vec<OutgoingRecord>,
    shutdown: &CancellationToken,
) -> bool {
    if records.is_empty() {
        return true;
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        match log.append(records.clone()).await {
            Ok(_) => return true,
            Err(err) => {
                tracing::warn!(error = %err, records = records.len(), "append failed; retrying");
                if pause(shutdown, backoff).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Waits `duration` unless shut down first; true if shut down.
async fn pause(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

fn last_positions(records: &[ConsumedRecord]) -> Vec<LogPosition> {
    let mut last = std::collections::BTreeMap::new();
    for record in records {
        let entry = last
            .entry((record.topic.clone(), record.partition))
            .or_insert(record.offset);
        *entry = (*entry).max(record.offset);
    }
    last.into_iter()
        .map(|((topic, partition), offset)| LogPosition {
            topic,
            partition,
            offset,
        })
        .collect()
}

fn decode_all(records: Vec<ConsumedRecord>) -> Vec<HeraldEvent> {
    records
        .into_iter()
        .filter_map(|record| match herald_schemas::decode(&record.value) {
            Ok(event) => Some(event),
            Err(err) => {
                // A record no schema can read cannot be processed by retrying; skip it loudly.
                tracing::error!(topic = record.topic, partition = record.partition, offset = record.offset, error = %err, "skipping an undecodable record");
                None
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Shared {
    /// A tenant's endpoints. A store failure is retried with backoff, never taken for "no
    /// endpoints": that would drop the fan-out for good once the batch is committed. `None`
    /// only when shutting down, which leaves the batch uncommitted to be read again.
    async fn endpoints(
        &self,
        tenant_id: &str,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Endpoint>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .store
                .endpoints(&TenantId::from_trusted(tenant_id))
                .await
            {
                Ok(endpoints) => return Some(endpoints),
                Err(err) => {
                    tracing::warn!(tenant_id, error = %err, "could not read endpoints; retrying");
                    if pause(shutdown, backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Routing: requests → delivery tasks.
    async fn route(
        &self,
        records: Vec<ConsumedRecord>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OutgoingRecord>> {
        let mut tasks = Vec::new();
        for event in decode_all(records) {
            match event {
                HeraldEvent::SendRequested(request) => {
                    let task = plan::task_for_send(&request);
                    let endpoints = self.endpoints(&request.tenant_id, shutdown).await?;
                    tasks.extend(plan::status_fanout(
                        &task,
                        DeliveryStatus::Queued,
                        0,
                        None,
                        request.requested_at,
                        &endpoints,
                    ));
                    tasks.push(task);
                }
                HeraldEvent::BusinessEventReceived(event) => {
                    let endpoints = self.endpoints(&event.tenant_id, shutdown).await?;
                    tasks.extend(plan::tasks_for_business_event(&event, &endpoints));
                }
                other => tracing::warn!(
                    record = other.name(),
                    "unexpected record on the requests topic"
                ),
            }
        }
        Some(
            tasks
                .into_iter()
                .map(|task| self.to_record(Outgoing::Event(HeraldEvent::DeliveryTask(task))))
                .collect(),
        )
    }

    /// Delivery: one attempt per task, concurrently.
    async fn deliver(
        self: &Arc<Self>,
        records: Vec<ConsumedRecord>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OutgoingRecord>> {
        let tasks: Vec<DeliveryTask> = decode_all(records)
            .into_iter()
            .filter_map(as_task)
            .collect();
        let done: Vec<Option<Vec<OutgoingRecord>>> = futures::stream::iter(tasks)
            .map(|task| self.attempt(task, shutdown.clone()))
            .buffer_unordered(self.config.max_in_flight)
            .collect()
            .await;
        done.into_iter().try_fold(Vec::new(), |mut all, records| {
            all.extend(records?);
            Some(all)
        })
    }

    /// A retry tier: waits for each task to come due, attempting those already due meanwhile.
    async fn retry(
        self: &Arc<Self>,
        records: Vec<ConsumedRecord>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<OutgoingRecord>> {
        let mut tasks: Vec<DeliveryTask> = decode_all(records)
            .into_iter()
            .filter_map(as_task)
            .collect();
        tasks.sort_by_key(|task| task.not_before);
        let mut attempts = JoinSet::new();
        for task in tasks {
            let wait = Duration::from_millis((task.not_before - now_ms()).max(0) as u64);
            if !wait.is_zero() && pause(shutdown, wait).await {
                attempts.abort_all();
                return None;
            }
            let shared = self.clone();
            let stop = shutdown.clone();
            attempts.spawn(async move { shared.attempt(task, stop).await });
        }
        let mut outgoing = Vec::new();
        while let Some(done) = attempts.join_next().await {
            // A panicking attempt is a bug: fail the loop (and the process) rather than hide it.
            let records = done.expect("an attempt panicked")?;
            outgoing.extend(records);
        }
        Some(outgoing)
    }

    async fn attempt(
        &self,
        task: DeliveryTask,
        shutdown: CancellationToken,
    ) -> Option<Vec<OutgoingRecord>> {
        let report = match task
            .channel
            .parse::<Channel>()
            .ok()
            .and_then(|c| self.providers.get(c))
        {
            Some(provider) => provider.deliver(&task).await,
            None => AttemptReport::refused(
                AttemptOutcome::Permanent,
                format!("no provider for channel `{}`", task.channel),
            ),
        };
        tracing::debug!(
            delivery_id = task.delivery_id,
            attempt = task.attempt,
            outcome = report.outcome.as_str(),
            "attempted"
        );
        let endpoints = if task.channel == Channel::Webhook.as_str() {
            Vec::new()
        } else {
            self.endpoints(&task.tenant_id, &shutdown).await?
        };
        let planned = plan::after_attempt(
            &task,
            &report,
            &self.config.retry_schedule,
            now_ms(),
            &endpoints,
        );
        Some(planned.into_iter().map(|out| self.to_record(out)).collect())
    }

    /// Where an outgoing record goes in the log.
    fn to_record(&self, outgoing: Outgoing) -> OutgoingRecord {
        match outgoing {
            Outgoing::Event(event) => {
                let (topic, key) = self.topics.route(&event);
                let topic = topic.to_owned();
                OutgoingRecord::new(topic, key, encode(&event))
            }
            Outgoing::Retry { task, delay } => {
                let key = delivery_target_key(&task);
                OutgoingRecord::new(
                    self.tier_for(delay),
                    key,
                    encode(&HeraldEvent::DeliveryTask(task)),
                )
            }
            Outgoing::DeadLetter(task) => {
                let key = delivery_target_key(&task);
                OutgoingRecord::new(
                    self.topics.dead_letter.clone(),
                    key,
                    encode(&HeraldEvent::DeliveryTask(task)),
                )
            }
        }
    }

    /// The tier a retry waits in: the longest tier not longer than the delay (the task's
    /// `not_before` keeps the exact time), or the shortest tier.
    fn tier_for(&self, delay: Duration) -> String {
        self.tiers
            .iter()
            .rev()
            .find(|(tier, _)| *tier <= delay)
            .or(self.tiers.first())
            .map(|(_, topic)| topic.clone())
            .expect("a retry is only planned when the schedule has delays")
    }
}

fn as_task(event: HeraldEvent) -> Option<DeliveryTask> {
    match event {
        HeraldEvent::DeliveryTask(task) => Some(task),
        other => {
            tracing::warn!(
                record = other.name(),
                "unexpected record on a delivery topic"
            );
            None
        }
    }
}

fn encode(event: &HeraldEvent) -> Vec<u8> {
    herald_schemas::encode(event).expect("records built by Herald match their schemas")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deliverable_channel_has_a_provider() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(herald_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let providers = Providers::new(GuardedHttp::new(HttpOptions::default()), store);
        for channel in herald_domain::routing::DELIVERABLE {
            assert!(
                providers.get(channel).is_some(),
                "{channel} has no provider"
            );
        }
    }

    #[test]
    fn retries_wait_in_the_matching_tier() {
        let topics = Topics::default();
        let tiers = retry_tiers(&topics, &"5s,5m,5m,2h".parse().unwrap());
        let names: Vec<&str> = tiers.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            names,
            ["herald.retry.5s", "herald.retry.5m", "herald.retry.2h"]
        );
    }
}
