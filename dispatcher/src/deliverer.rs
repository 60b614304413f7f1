//! The deliverer: attempts delivery tasks without letting one target hold up another.
//!
//! ```text
//!  poller ──records──► scheduler ──► lane per target ──► attempt tasks ──► finish tasks ──► results writer
//!    ▲  (owns the consumer)   (owns every lane)  queue, concurrency,    (HTTP)        (plan)        (append a group,
//!    └── commits what the OffsetTracker says is done ◄──────────────────────────────────────────── mark done)
//! ```
//!
//! * The **poller** owns the log consumer. It reads records as long as fewer than
//!   `max_in_progress` are unfinished, and commits the prefix of each partition that is done
//!   (see `offsets`), so commits trail a slow endpoint but reading does not stop for it.
//! * The **scheduler** owns the lanes: one per delivery target (a webhook endpoint, or a
//!   recipient's channel address). A lane has a queue, a concurrency limit, an optional
//!   `rate_limit_per_second` throttle (governor's GCRA) and, for webhook endpoints, the
//!   endpoint's health (`endpoint_health`). All lane state changes happen on this one task,
//!   in completion order, so failure counts need no locks and are exact.
//! * **Attempt** tasks make the HTTP request; **finish** tasks plan what follows
//!   (`plan::after_attempt`); the **results writer** appends what they planned in groups
//!   (one append for up to 4,096 records) and only then marks their records done.
//!
//! A lane whose queue is full (a hanging or throttled endpoint with a backlog) parks further
//! tasks in a retry tier, unchanged, for about as long as its queue takes to drain: memory
//! stays bounded and other lanes keep flowing.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use herald_domain::ids::{EndpointId, TenantId};
use herald_domain::model::Endpoint;
use herald_domain::Channel;
use herald_log::{ConsumedRecord, LogConsumer, LogPosition, OutgoingRecord, StartPosition};
use herald_schemas::topics::delivery_target_key;
use herald_schemas::{DeliveryTask, HeraldEvent};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::endpoint_health::{EndpointHealth, HealthVerdict};
use crate::offsets::OffsetTracker;
use crate::plan::{self, AttemptContext, Outgoing};
use crate::{now_ms, DispatchError, Shared, DELIVERER_GROUP};

/// How long lanes may sit idle before they are dropped (their state is reloaded on demand).
const LANE_IDLE: Duration = Duration::from_secs(60);

/// A record being worked on.
struct Job {
    task: DeliveryTask,
    position: LogPosition,
}

/// The records in progress, shared by the poller (which begins and commits) and the finish
/// tasks (which mark records done).
struct Progress {
    tracker: Mutex<OffsetTracker>,
    room: Notify,
}

impl Progress {
    fn finish(&self, position: &LogPosition) {
        self.finish_all(std::slice::from_ref(position));
    }

    fn finish_all(&self, positions: &[LogPosition]) {
        let mut tracker = self.tracker.lock().expect("not poisoned");
        positions
            .iter()
            .for_each(|position| tracker.finish(position));
        drop(tracker);
        self.room.notify_one();
    }
}

/// What one record's processing appends, and the record it came from.
type Results = (Vec<OutgoingRecord>, LogPosition);

/// The most records one append of results carries.
const MAX_RESULTS_PER_APPEND: usize = 4_096;

/// Appends the results of finished records in groups, then marks the records done. One
/// append per group rather than per attempt: under load, thousands of attempts' records go
/// to the log in one call.
async fn write_results(
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    mut results: mpsc::UnboundedReceiver<Results>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = results.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let (mut records, position) = first;
        let mut positions = vec![position];
        while records.len() < MAX_RESULTS_PER_APPEND {
            match results.try_recv() {
                Ok((more, position)) => {
                    records.extend(more);
                    positions.push(position);
                }
                Err(_) => break,
            }
        }
        if !crate::append_until_done(&shared.log, records, &shutdown).await {
            return; // shutting down: the records stay uncommitted and are read again
        }
        progress.finish_all(&positions);
    }
}

enum LaneHealth {
    /// Not a webhook endpoint: nothing to count.
    Untracked,
    /// A webhook endpoint whose failure count is being read from the store.
    Loading,
    Ready(EndpointHealth),
}

struct Lane {
    queue: VecDeque<Job>,
    in_flight: usize,
    health: LaneHealth,
    /// The throttle and the rate it was built for.
    limiter: Option<(u32, DefaultDirectRateLimiter)>,
    wake_pending: bool,
    /// A moving average of attempt latency, to estimate how long the queue takes to drain.
    latency_ms: f64,
    /// The time stamped on the lane's last completed attempt. Stamps strictly increase, so
    /// the attempt log's newest row is the last attempt counted, even within a millisecond,
    /// and the failure count read back after a restart is the latest.
    last_stamp_ms: i64,
    last_active: Instant,
}

impl Lane {
    fn new(health: LaneHealth) -> Self {
        Self {
            queue: VecDeque::new(),
            in_flight: 0,
            health,
            limiter: None,
            wake_pending: false,
            latency_ms: 100.0,
            last_stamp_ms: 0,
            last_active: Instant::now(),
        }
    }

    fn disabled_at(&self) -> Option<i64> {
        match &self.health {
            LaneHealth::Ready(health) => health.disabled_at,
            _ => None,
        }
    }

    /// Takes in the endpoint as last read: its health and its throttle.
    fn observe(&mut self, endpoint: &Endpoint) {
        if let LaneHealth::Ready(health) = &mut self.health {
            health.observe(endpoint);
        }
        let wanted = endpoint.rate_limit_per_second.and_then(NonZeroU32::new);
        match (wanted, &self.limiter) {
            (Some(rate), Some((current, _))) if rate.get() == *current => {}
            (Some(rate), _) => {
                self.limiter = Some((rate.get(), RateLimiter::direct(Quota::per_second(rate))))
            }
            (None, _) => self.limiter = None,
        }
    }

    /// Whether the lane may be forgotten: nothing queued or running, and no state worth
    /// keeping in memory (a failure count is in the store's attempt log anyway).
    fn is_idle(&self, now: Instant) -> bool {
        let quiet = match &self.health {
            LaneHealth::Untracked => true,
            LaneHealth::Loading => false,
            LaneHealth::Ready(health) => health.consecutive_failures == 0 && !health.is_disabled(),
        };
        quiet
            && self.queue.is_empty()
            && self.in_flight == 0
            && now.duration_since(self.last_active) > LANE_IDLE
    }

    /// About how long the queue takes to drain, to park overflow for that long.
    fn drain_estimate(&self, concurrency: usize) -> Duration {
        let mut seconds =
            self.queue.len() as f64 * self.latency_ms / 1000.0 / concurrency.max(1) as f64;
        if let Some((rate, _)) = &self.limiter {
            seconds = seconds.max(self.queue.len() as f64 / f64::from(*rate));
        }
        Duration::from_secs_f64(seconds.clamp(1.0, 3600.0))
    }
}

/// What the scheduler hears back.
enum Event {
    Loaded {
        key: String,
        health: EndpointHealth,
        endpoint: Option<Box<Endpoint>>,
    },
    Attempted {
        key: String,
        job: Box<Job>,
        report: crate::AttemptReport,
        endpoint: Option<Box<Endpoint>>,
        /// The tenant's failure threshold now (webhook endpoints).
        threshold: Option<u32>,
    },
    Wake(String),
}

/// Runs the deliverer until `shutdown`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), DispatchError> {
    let consumer = shared
        .log
        .consumer(
            DELIVERER_GROUP,
            std::slice::from_ref(&shared.topics.deliveries),
            StartPosition::Committed,
        )
        .await?;
    tracing::info!(group = DELIVERER_GROUP, "deliverer started");
    let progress = Arc::new(Progress {
        tracker: Mutex::new(OffsetTracker::default()),
        room: Notify::new(),
    });
    let (records_tx, records_rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll(
        shared.clone(),
        consumer,
        progress.clone(),
        records_tx,
        shutdown.clone(),
    ));
    let (results_tx, results_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_results(
        shared.clone(),
        progress.clone(),
        results_rx,
        shutdown.clone(),
    ));
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut scheduler = Scheduler {
        shared,
        progress,
        lanes: HashMap::new(),
        events: events_tx,
        results: results_tx,
        shutdown: shutdown.clone(),
        tasks: JoinSet::new(),
    };
    let scheduled = scheduler.run(records_rx, events_rx).await;
    // Whatever is still running holds records that stay uncommitted: stop it, so nothing
    // outlives the dispatcher (the log and store must be free to reopen).
    shutdown.cancel();
    scheduler.tasks.shutdown().await;
    drop(scheduler);
    let _ = writer.await;
    let polled = match poller.await {
        Ok(result) => result,
        Err(panic) => Err(DispatchError::Panicked(panic.to_string())),
    };
    scheduled.and(polled)
}

/// Reads records while there is room, and commits what is done.
async fn poll(
    shared: Arc<Shared>,
    mut consumer: Box<dyn LogConsumer>,
    progress: Arc<Progress>,
    records: mpsc::UnboundedSender<Vec<ConsumedRecord>>,
    shutdown: CancellationToken,
) -> Result<(), DispatchError> {
    let max_in_progress = shared.config.max_in_progress;
    loop {
        commit(&mut consumer, &progress).await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let in_progress = progress.tracker.lock().expect("not poisoned").in_progress();
        if in_progress >= max_in_progress {
            // Full: wait for records to finish (or time out, to commit what did meanwhile).
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::timeout(Duration::from_millis(100), progress.room.notified()) => {}
            }
            continue;
        }
        let batch = shared.config.batch_size.min(max_in_progress - in_progress);
        let polled = tokio::select! {
            _ = shutdown.cancelled() => continue,
            polled = consumer.poll(batch, Duration::from_millis(100)) => polled,
        };
        match polled {
            Ok(batch) if batch.is_empty() => {}
            Ok(batch) => {
                {
                    let mut tracker = progress.tracker.lock().expect("not poisoned");
                    batch
                        .iter()
                        .for_each(|record| tracker.begin(&record.position()));
                }
                if records.send(batch).is_err() {
                    return Ok(()); // the scheduler stopped: shutting down
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "poll failed; retrying");
                if crate::pause(&shutdown, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
        }
    }
}

async fn commit(consumer: &mut Box<dyn LogConsumer>, progress: &Progress) {
    let positions = progress
        .tracker
        .lock()
        .expect("not poisoned")
        .take_committable();
    if positions.is_empty() {
        return;
    }
    if let Err(err) = consumer.commit(&positions).await {
        // Delivered records may be delivered again after a restart; receivers deduplicate.
        tracing::warn!(error = %err, "commit failed; will try again");
        progress
            .tracker
            .lock()
            .expect("not poisoned")
            .commit_failed(&positions);
    }
}

struct Scheduler {
    shared: Arc<Shared>,
    progress: Arc<Progress>,
    lanes: HashMap<String, Lane>,
    events: mpsc::UnboundedSender<Event>,
    /// To `write_results`.
    results: mpsc::UnboundedSender<Results>,
    shutdown: CancellationToken,
    /// Attempts, finishes, parks, loads and wake-ups in flight.
    tasks: JoinSet<()>,
}

impl Scheduler {
    async fn run(
        &mut self,
        mut records: mpsc::UnboundedReceiver<Vec<ConsumedRecord>>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Result<(), DispatchError> {
        let mut sweep = tokio::time::interval(LANE_IDLE / 2);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                batch = records.recv() => match batch {
                    Some(batch) => {
                        // Once per batch, not per record: whether the reading budget is
                        // filling, which makes lanes park their overflow early.
                        let in_progress = self.progress.tracker.lock().expect("not poisoned").in_progress();
                        let budget_filling = in_progress > self.shared.config.max_in_progress / 2;
                        batch.into_iter().for_each(|record| self.admit(record, budget_filling));
                    }
                    None => return Ok(()),
                },
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // A panic is a bug; its record would stay in progress for ever. Stop,
                    // so the process fails loudly and a supervisor restarts it.
                    if let Err(err) = joined {
                        if err.is_panic() {
                            return Err(DispatchError::Panicked(err.to_string()));
                        }
                    }
                }
                Some(event) = events.recv() => self.handle(event),
                _ = sweep.tick() => {
                    let now = Instant::now();
                    self.lanes.retain(|_, lane| !lane.is_idle(now));
                }
            }
        }
    }

    fn admit(&mut self, record: ConsumedRecord, budget_filling: bool) {
        let position = record.position();
        let task = match herald_schemas::decode(&record.value) {
            Ok(HeraldEvent::DeliveryTask(task)) => task,
            Ok(other) => {
                tracing::warn!(
                    record = other.name(),
                    "unexpected record on the deliveries topic"
                );
                self.progress.finish(&position);
                return;
            }
            Err(err) => {
                // No schema reads it; retrying cannot help. Skip it loudly.
                tracing::error!(topic = position.topic, partition = position.partition, offset = position.offset, error = %err, "skipping an undecodable record");
                self.progress.finish(&position);
                return;
            }
        };
        let key = lane_key(&task);
        if !self.lanes.contains_key(&key) {
            let health = if task.channel == Channel::Webhook.as_str() {
                self.load(&key, &task);
                LaneHealth::Loading
            } else {
                LaneHealth::Untracked
            };
            self.lanes.insert(key.clone(), Lane::new(health));
        }
        let lane = self.lanes.get_mut(&key).expect("inserted above");
        lane.last_active = Instant::now();
        let job = Job { task, position };
        // A lane parks its overflow once its queue is full, or earlier once the records in
        // progress near the reading limit, so a few slow lanes cannot use up the whole budget
        // and stop reading for everyone.
        let concurrency = self.shared.config.endpoint_concurrency;
        if lane.queue.len() >= self.shared.config.lane_queue
            || (budget_filling && lane.queue.len() >= 2 * concurrency)
        {
            let delay = lane.drain_estimate(self.shared.config.endpoint_concurrency);
            self.park(job, delay);
            return;
        }
        lane.queue.push_back(job);
        self.pump(&key);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Loaded {
                key,
                health,
                endpoint,
            } => {
                if let Some(lane) = self.lanes.get_mut(&key) {
                    lane.health = LaneHealth::Ready(health);
                    if let Some(endpoint) = &endpoint {
                        lane.observe(endpoint);
                    }
                    self.pump(&key);
                }
            }
            Event::Attempted {
                key,
                job,
                report,
                endpoint,
                threshold,
            } => {
                let Some(lane) = self.lanes.get_mut(&key) else {
                    return; // lanes with work in flight are never dropped
                };
                lane.in_flight -= 1;
                lane.last_active = Instant::now();
                if !report.skipped {
                    let ms = report.latency.as_secs_f64() * 1000.0;
                    lane.latency_ms = 0.8 * lane.latency_ms + 0.2 * ms;
                }
                if let Some(endpoint) = &endpoint {
                    lane.observe(endpoint);
                }
                let stamp_ms = now_ms().max(lane.last_stamp_ms + 1);
                lane.last_stamp_ms = stamp_ms;
                let verdict = match &mut lane.health {
                    LaneHealth::Ready(health) => {
                        if let Some(threshold) = threshold {
                            health.threshold = threshold.max(1);
                        }
                        health.record(&report, stamp_ms)
                    }
                    _ => HealthVerdict::Untracked,
                };
                if let HealthVerdict::Disabled { reason, .. } = &verdict {
                    tracing::warn!(
                        tenant_id = job.task.tenant_id,
                        endpoint_id = key,
                        reason,
                        "endpoint disabled"
                    );
                }
                let schedule = endpoint
                    .and_then(|endpoint| endpoint.retry_schedule)
                    .unwrap_or_else(|| self.shared.config.retry_schedule.clone());
                self.finish(*job, report, verdict, schedule, stamp_ms);
                self.pump(&key);
            }
            Event::Wake(key) => {
                if let Some(lane) = self.lanes.get_mut(&key) {
                    lane.wake_pending = false;
                    self.pump(&key);
                }
            }
        }
    }

    /// Starts as many of the lane's queued tasks as its limits allow.
    fn pump(&mut self, key: &str) {
        let concurrency = self.shared.config.endpoint_concurrency;
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        while !lane.queue.is_empty() {
            let disabled_at = lane.disabled_at();
            match &lane.health {
                LaneHealth::Loading => return,
                LaneHealth::Ready(health) if !health.may_start(lane.in_flight) => return,
                _ => {}
            }
            // The limits hold for a disabled lane too: its tasks are mostly failed without a
            // request, but one that finds the endpoint re-enabled meanwhile does send.
            {
                if lane.in_flight >= concurrency {
                    return;
                }
                if let Some((_, limiter)) = &lane.limiter {
                    if let Err(not_until) = limiter.check() {
                        if !lane.wake_pending {
                            lane.wake_pending = true;
                            let wait = not_until.wait_time_from(DefaultClock::default().now());
                            let events = self.events.clone();
                            let key = key.to_owned();
                            self.tasks.spawn(async move {
                                tokio::time::sleep(wait).await;
                                let _ = events.send(Event::Wake(key));
                            });
                        }
                        return;
                    }
                }
            }
            let job = lane.queue.pop_front().expect("not empty");
            lane.in_flight += 1;
            let shared = self.shared.clone();
            let events = self.events.clone();
            let shutdown = self.shutdown.clone();
            let key = key.to_owned();
            self.tasks.spawn(async move {
                let Some((report, endpoint, threshold)) =
                    shared.attempt(&job.task, disabled_at, &shutdown).await
                else {
                    return; // shutting down: the record stays uncommitted
                };
                let _ = events.send(Event::Attempted {
                    key,
                    job: Box::new(job),
                    report,
                    endpoint: endpoint.map(Box::new),
                    threshold,
                });
            });
        }
    }

    /// Reads what a webhook lane needs before its first attempt: the endpoint's failure count
    /// (from its attempt log) and the tenant's threshold.
    fn load(&mut self, key: &str, task: &DeliveryTask) {
        let shared = self.shared.clone();
        let events = self.events.clone();
        let shutdown = self.shutdown.clone();
        let key = key.to_owned();
        let tenant = TenantId::from_trusted(&task.tenant_id);
        let endpoint_id = EndpointId::from_trusted(&key);
        self.tasks.spawn(async move {
            let Some((health, endpoint)) = shared
                .endpoint_health(&tenant, &endpoint_id, &shutdown)
                .await
            else {
                return;
            };
            let _ = events.send(Event::Loaded {
                key,
                health,
                endpoint: endpoint.map(Box::new),
            });
        });
    }

    /// Plans what follows an attempt, appends it, then marks the record done.
    fn finish(
        &mut self,
        job: Job,
        report: crate::AttemptReport,
        verdict: HealthVerdict,
        schedule: herald_domain::retry::RetrySchedule,
        stamp_ms: i64,
    ) {
        let shared = self.shared.clone();
        let results = self.results.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let task = &job.task;
            // Announcements need the tenant's endpoints: `delivery.*` for notifications,
            // `endpoint.disabled` when this attempt disabled one.
            let needs_endpoints = task.channel != Channel::Webhook.as_str()
                || matches!(verdict, HealthVerdict::Disabled { .. });
            let endpoints = if needs_endpoints {
                match shared.endpoints(&task.tenant_id, &shutdown).await {
                    Some(endpoints) => endpoints,
                    None => return,
                }
            } else {
                Arc::new(Vec::new())
            };
            let planned = plan::after_attempt(
                task,
                &report,
                &AttemptContext {
                    schedule: &schedule,
                    now_ms: stamp_ms,
                    endpoints: &endpoints,
                    verdict: &verdict,
                },
            );
            let records = planned
                .into_iter()
                .map(|out| shared.to_record(out))
                .collect();
            let _ = results.send((records, job.position));
        });
    }

    /// Puts a task aside in a retry tier, unchanged, and marks its record done.
    fn park(&mut self, job: Job, delay: Duration) {
        tracing::debug!(
            delivery_id = job.task.delivery_id,
            ?delay,
            "lane full; parking a task"
        );
        let task = DeliveryTask {
            not_before: now_ms() + delay.as_millis() as i64,
            ..job.task
        };
        let record = self.shared.to_record(Outgoing::Retry { task, delay });
        let _ = self.results.send((vec![record], job.position));
    }
}

/// The lane of a task: its endpoint id, or its target key (recipient and channel).
fn lane_key(task: &DeliveryTask) -> String {
    match &task.endpoint_id {
        Some(endpoint) => endpoint.clone(),
        None => String::from_utf8_lossy(&delivery_target_key(task)).into_owned(),
    }
}
