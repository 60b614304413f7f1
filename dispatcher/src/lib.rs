//! The dispatcher role: turns requests into deliveries and delivers them.
//!
//! Three kinds of consumer loops, each a consumer group on the log:
//!
//! * **router** (`requests`): a send request becomes a delivery task; a business event
//!   becomes one webhook task per subscribed endpoint. Tasks go to `deliveries`, keyed by
//!   delivery target, so each target is owned by one dispatcher.
//! * **deliverer** (`deliveries`, see `deliverer`): one lane per delivery target, so a slow,
//!   failing or throttled endpoint never holds up another; attempts each task and appends
//!   what happened (`plan::after_attempt`): the attempt, then success, a retry, or failure
//!   plus a dead-letter record, and the `delivery.*` / `endpoint.disabled` announcements.
//! * **retry timers** (`retry.<delay>`, see `timers`): a task waiting for its next attempt
//!   sits in the tier of its wait, then goes back to `deliveries`, so every attempt at a
//!   target, first or retry, is made by the one dispatcher that owns the target's partition.
//!
//! Every loop appends its results *before* committing its input, so a crash anywhere means
//! re-processing (at-least-once), never loss; the deterministic ids of `plan` make the
//! re-processing produce identical records.

mod deliverer;
mod endpoint_health;
mod offsets;
mod plan;
pub mod providers;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use herald_domain::ids::{EndpointId, TenantId};
use herald_domain::model::{Endpoint, DEFAULT_ENDPOINT_FAILURE_THRESHOLD};
use herald_domain::retry::{format_delay, tier_delays, RetrySchedule};
use herald_domain::secret_box::SecretKey;
use herald_domain::{Channel, DeliveryStatus};
use herald_log::{ConsumedRecord, Log, LogPosition, OutgoingRecord, StartPosition};
use herald_schemas::topics::{delivery_target_key, Topics};
use herald_schemas::{DeliveryTask, HeraldEvent};
use herald_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use endpoint_health::EndpointHealth;
pub use plan::Outgoing;
use providers::webhook::{SigningSecrets, WebhookSender};
pub use providers::{AttemptReport, ChannelProvider, GuardedHttp, HttpOptions, Providers};

/// Consumer group names; the group is the unit Kafka balances partitions over.
pub const ROUTER_GROUP: &str = "herald-router";
pub const DELIVERER_GROUP: &str = "herald-dispatcher";

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Delays between attempts for endpoints without a schedule of their own
    /// (`HERALD_RETRY_SCHEDULE`).
    pub retry_schedule: RetrySchedule,
    pub http: HttpOptions,
    /// Opens sealed endpoint secrets (`HERALD_SECRET_KEY`).
    pub secret_key: Option<SecretKey>,
    /// Records taken from the log per poll.
    pub batch_size: usize,
    /// Records read but not finished, at most; reading pauses above it.
    pub max_in_progress: usize,
    /// Attempts in flight at once per delivery target.
    pub endpoint_concurrency: usize,
    /// Tasks queued per delivery target before further ones are parked in a retry tier.
    pub lane_queue: usize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            retry_schedule: RetrySchedule::default(),
            http: HttpOptions::default(),
            secret_key: None,
            batch_size: 512,
            max_in_progress: 10_000,
            endpoint_concurrency: 16,
            lane_queue: 1_000,
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

/// The retry tiers: the fixed ladder plus the default schedule's delays, each with its topic.
pub fn retry_tiers(topics: &Topics, default_schedule: &RetrySchedule) -> Vec<(Duration, String)> {
    tier_delays(default_schedule)
        .into_iter()
        .map(|delay| (delay, topics.retry_tier(&format_delay(delay))))
        .collect()
}

/// How long an endpoint or a tenant's endpoint list is cached: a change (a re-enable, a
/// rotated secret, a new subscription) reaches deliveries within this time.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// Everything the loops share.
struct Shared {
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    topics: Topics,
    config: DispatcherConfig,
    providers: Providers,
    webhooks: WebhookSender,
    tiers: Vec<(Duration, String)>,
    endpoint_cache: moka::future::Cache<(TenantId, EndpointId), Option<Endpoint>>,
    endpoints_cache: moka::future::Cache<TenantId, Arc<Vec<Endpoint>>>,
    threshold_cache: moka::future::Cache<TenantId, u32>,
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
        let http = GuardedHttp::new(config.http.clone());
        let providers = Providers::new(http.clone());
        let tiers = retry_tiers(&topics, &config.retry_schedule);
        Self {
            shared: Arc::new(Shared {
                log,
                store,
                topics,
                config,
                providers,
                webhooks: WebhookSender::new(http),
                tiers,
                endpoint_cache: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(CACHE_TTL)
                    .build(),
                endpoints_cache: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(CACHE_TTL)
                    .build(),
                threshold_cache: moka::future::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(CACHE_TTL)
                    .build(),
            }),
        }
    }

    /// Runs every loop until `shutdown`; returns the first loop's error, if any.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DispatchError> {
        let shared = &self.shared;
        let mut loops = JoinSet::new();
        {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            let topics = vec![shared.topics.requests.clone()];
            loops.spawn(
                async move { route_loop(shared, ROUTER_GROUP.into(), topics, shutdown).await },
            );
        }
        {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            loops.spawn(async move { deliverer::run(shared, shutdown).await });
        }
        for (delay, topic) in &shared.tiers {
            let group = format!("{DELIVERER_GROUP}-retry-{}", format_delay(*delay));
            let (shared, shutdown, topic, delay) =
                (shared.clone(), shutdown.clone(), topic.clone(), *delay);
            loops.spawn(async move { timers::run(shared, group, topic, delay, shutdown).await });
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

/// The router loop: poll, route, append the tasks, then commit.
async fn route_loop(
    shared: Arc<Shared>,
    group: String,
    topics: Vec<String>,
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
        let handled = shared.route(records, &shutdown).await;
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

/// The highest position per partition: what to commit after processing `records`.
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
    /// A tenant's endpoints, cached briefly. A store failure is retried with backoff, never
    /// taken for "no endpoints": that would drop the fan-out for good once the batch is
    /// committed. `None` only when shutting down, which leaves the work to be done again.
    async fn endpoints(
        &self,
        tenant_id: &str,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Vec<Endpoint>>> {
        let tenant = TenantId::from_trusted(tenant_id);
        // One read per tenant at a time, whatever the number of tasks asking.
        let read = async {
            retrying(shutdown, "read endpoints", || self.store.endpoints(&tenant))
                .await
                .map(Arc::new)
        };
        self.endpoints_cache
            .optionally_get_with(tenant.clone(), read)
            .await
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

    /// One attempt at a task, and the endpoint as it was read for it (webhooks). `None`
    /// only when shutting down. `disabled_at`: when the task's lane disabled the endpoint.
    async fn attempt(
        &self,
        task: &DeliveryTask,
        disabled_at: Option<i64>,
        shutdown: &CancellationToken,
    ) -> Option<(AttemptReport, Option<Endpoint>, Option<u32>)> {
        let (report, endpoint) = self.attempt_once(task, disabled_at, shutdown).await?;
        // The tenant's threshold as it is now, so a change reaches a running lane.
        let threshold = match &endpoint {
            Some(endpoint) => Some(
                self.failure_threshold(&endpoint.tenant_id, shutdown)
                    .await?,
            ),
            None => None,
        };
        tracing::debug!(
            delivery_id = task.delivery_id,
            attempt = task.attempt,
            outcome = report.outcome.as_str(),
            skipped = report.skipped,
            "attempted"
        );
        Some((report, endpoint, threshold))
    }

    /// A tenant's endpoint failure threshold, cached briefly. `None` when shutting down.
    async fn failure_threshold(
        &self,
        tenant: &TenantId,
        shutdown: &CancellationToken,
    ) -> Option<u32> {
        let read = async {
            let tenant = retrying(shutdown, "read a tenant", || self.store.tenant(tenant)).await?;
            Some(tenant.map_or(DEFAULT_ENDPOINT_FAILURE_THRESHOLD, |t| {
                t.endpoint_failure_threshold()
            }))
        };
        self.threshold_cache
            .optionally_get_with(tenant.clone(), read)
            .await
    }

    async fn attempt_once(
        &self,
        task: &DeliveryTask,
        disabled_at: Option<i64>,
        shutdown: &CancellationToken,
    ) -> Option<(AttemptReport, Option<Endpoint>)> {
        let Ok(channel) = task.channel.parse::<Channel>() else {
            let error = format!("unknown channel `{}`", task.channel);
            return Some((AttemptReport::skipped(error), None));
        };
        if channel != Channel::Webhook {
            let report = match self.providers.get(channel) {
                Some(provider) => provider.deliver(task).await,
                None => AttemptReport::skipped(format!("no provider for channel `{channel}`")),
            };
            return Some((report, None));
        }
        let Some(endpoint_id) = &task.endpoint_id else {
            return Some((
                AttemptReport::skipped("webhook task without an endpoint"),
                None,
            ));
        };
        let tenant = TenantId::from_trusted(&task.tenant_id);
        let id = EndpointId::from_trusted(endpoint_id);
        // Disabled in the store, or by this dispatcher and not re-enabled since.
        let unusable = |endpoint: &Option<Endpoint>| match endpoint {
            None => true,
            Some(endpoint) => {
                !endpoint.is_active
                    || disabled_at.is_some_and(|at| endpoint.updated_at.timestamp_millis() <= at)
            }
        };
        let mut endpoint = self.endpoint(&tenant, &id, shutdown).await?;
        if unusable(&endpoint) {
            // Before failing a delivery for good, make sure the cache is not merely behind
            // (an endpoint re-enabled a moment ago).
            self.endpoint_cache
                .invalidate(&(tenant.clone(), id.clone()))
                .await;
            endpoint = self.endpoint(&tenant, &id, shutdown).await?;
        }
        let Some(endpoint) = endpoint else {
            return Some((AttemptReport::skipped("the endpoint was deleted"), None));
        };
        if unusable(&Some(endpoint.clone())) {
            let report = AttemptReport::skipped("the endpoint is disabled");
            return Some((report, Some(endpoint)));
        }
        let report = match SigningSecrets::of(
            &endpoint,
            self.config.secret_key.as_ref(),
            chrono::Utc::now(),
        ) {
            Ok(secrets) => self.webhooks.deliver(task, &endpoint, &secrets).await,
            Err(err) => {
                tracing::error!(endpoint_id = %endpoint.id, error = err, "cannot open an endpoint's signing secret");
                AttemptReport::skipped(format!(
                    "the endpoint's signing secret cannot be opened ({err}); check HERALD_SECRET_KEY"
                ))
            }
        };
        Some((report, Some(endpoint)))
    }

    /// An endpoint, cached briefly; store failures are retried. `None` when shutting down.
    async fn endpoint(
        &self,
        tenant: &TenantId,
        id: &EndpointId,
        shutdown: &CancellationToken,
    ) -> Option<Option<Endpoint>> {
        let read = retrying(shutdown, "read an endpoint", || {
            self.store.endpoint(tenant, id)
        });
        self.endpoint_cache
            .optionally_get_with((tenant.clone(), id.clone()), read)
            .await
    }

    /// The health of an endpoint as its lane starts: the failure count of its last attempt,
    /// unless the endpoint was changed since (re-enabled, or fixed), and its tenant's
    /// threshold. `None` when shutting down.
    async fn endpoint_health(
        &self,
        tenant: &TenantId,
        id: &EndpointId,
        shutdown: &CancellationToken,
    ) -> Option<(EndpointHealth, Option<Endpoint>)> {
        let endpoint = self.endpoint(tenant, id, shutdown).await?;
        let threshold = self.failure_threshold(tenant, shutdown).await?;
        let last = retrying(shutdown, "read an attempt log", || {
            self.store.attempts(tenant, id, None, 1)
        })
        .await?;
        let failures = match (last.first(), &endpoint) {
            (Some(last), Some(endpoint)) if endpoint.updated_at <= last.attempted_at => {
                last.consecutive_failures
            }
            _ => 0,
        };
        let mut health = EndpointHealth::new(failures, threshold);
        if let Some(endpoint) = &endpoint {
            health.observe(endpoint);
        }
        Some((health, endpoint))
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

    /// The tier a wait starts in: the longest tier not longer than the wait (the task's
    /// `not_before` keeps the exact time; `timers` hops it down the ladder).
    fn tier_for(&self, delay: Duration) -> String {
        let delays: Vec<Duration> = self.tiers.iter().map(|(delay, _)| *delay).collect();
        let tier = herald_domain::retry::tier_for(&delays, delay);
        self.topics.retry_tier(&format_delay(tier))
    }
}

/// Runs a store read until it succeeds, backing off; `None` if shut down first.
async fn retrying<T, F, Fut>(shutdown: &CancellationToken, what: &str, mut read: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = herald_store::Result<T>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match read().await {
            Ok(value) => return Some(value),
            Err(err) => {
                tracing::warn!(error = %err, "could not {what}; retrying");
                if pause(shutdown, backoff).await {
                    return None;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
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
        let providers = Providers::new(GuardedHttp::new(HttpOptions::default()));
        for channel in herald_domain::routing::DELIVERABLE {
            assert!(
                providers.get(channel).is_some(),
                "{channel} has no provider"
            );
        }
    }

    #[test]
    fn the_tiers_are_the_ladder_plus_the_default_schedule() {
        let topics = Topics::default();
        let tiers = retry_tiers(&topics, &"50ms,5s,5m,5m,2h".parse().unwrap());
        let names: Vec<&str> = tiers.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "herald.retry.50ms",
                "herald.retry.1s",
                "herald.retry.5s",
                "herald.retry.10s",
                "herald.retry.1m",
                "herald.retry.5m",
                "herald.retry.10m",
                "herald.retry.1h",
                "herald.retry.2h"
            ]
        );
    }
}
