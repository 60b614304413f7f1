//! The log on Apache Kafka (or any broker speaking the Kafka protocol), through `rdkafka`.
//!
//! How the port maps onto Kafka:
//!
//! * **Topics.** [`Log::ensure_topics`] creates missing topics with the admin API (replication
//!   factor from [`KafkaOptions`]), treats "already exists" as success, leaves existing topics
//!   alone and waits until the metadata shows every partition with a leader. Partition counts
//!   come from the cluster's metadata and are cached (they never shrink in Kafka); a topic the
//!   cache does not know is looked up again, so topics created by another process are found.
//!   Adding partitions to a live topic moves keys to other partitions (as with any Kafka
//!   producer) and is not supported. No client ever auto-creates a topic
//!   (`allow.auto.create.topics=false`): a typo must be an [`LogError::UnknownTopic`], not a
//!   new topic with the broker's default partition count.
//! * **Appends.** One idempotent producer (`enable.idempotence=true`, hence `acks=all` and
//!   in-order retries without duplicates) shared by all callers; a short `linger.ms` lets
//!   concurrent appends share produce requests. Each record's partition is chosen explicitly
//!   with [`partition_for_key`], so Kafka and the embedded log put a key on the same partition
//!   and other producers' partitioners do not matter. An append enqueues every record in input
//!   order, then waits for every delivery report: it returns only once the broker acknowledged
//!   all of them (durable on all in-sync replicas), with the offsets from the reports. A record
//!   not acknowledged within `operation_timeout` (`message.timeout.ms`) fails the append; it may
//!   or may not have been written, so the caller retries and consumers deduplicate by event id.
//!   So does a record acknowledged without an offset (librdkafka's implicit acknowledgement of
//!   a request with an uncertain outcome): it is durable, but the port promises positions.
//!   No Kafka transactions: the port promises no atomicity across partitions.
//! * **Group consumers.** A [`StartPosition::Committed`] consumer subscribes with the group
//!   (cooperative-sticky assignment, so a rebalance moves only the partitions that change
//!   owner). `enable.auto.offset.store=false`: librdkafka never marks a record processed by
//!   itself; [`LogConsumer::commit`] stores `offset + 1` of each processed position and then
//!   commits the stored offsets synchronously, because the port promises that a committed
//!   position is the group's (a restarted member resumes after it, [`Log::lag`] sees it).
//!   Auto-commit stays on as a backstop for offsets stored while a commit could not complete.
//!   On revocation the consumer commits what it stored, synchronously, before it lets go of the
//!   partitions, so the next owner resumes there. Records of a revoked partition that `poll`
//!   already returned may still be committed by the caller: storing them is refused by
//!   librdkafka and ignored here; the new owner processes them again (at-least-once).
//! * **Checkpointed consumers.** A [`StartPosition::Explicit`] consumer (the projector keeps
//!   its offsets in the store) does not join the group's balancing: it assigns itself every
//!   partition of its topics at the given offsets (the beginning where none is given). Its
//!   commits still go to the group, so its lag is visible like any other consumer's.
//! * **Lag.** The group's committed offsets (an idle consumer client with the group's id asks
//!   the group coordinator) against each partition's high watermark.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::{
    partition_for_key, ConsumedRecord, Log, LogConsumer, LogError, LogPosition, OutgoingRecord,
    PartitionLag, Result, StartPosition, TopicSpec,
};

/// How to reach the cluster and how to create topics on it.
#[derive(Clone)]
pub struct KafkaOptions {
    /// Bootstrap servers, comma-separated `host:port` pairs.
    pub brokers: String,
    /// `client.id` of every client, as brokers show it in logs, metrics and quotas.
    pub client_id: String,
    /// Replication factor of the topics [`Log::ensure_topics`] creates; `-1` takes the broker's
    /// `default.replication.factor`.
    pub replication_factor: i32,
    /// Partitions of a topic created from a [`TopicSpec`] asking for 0.
    pub default_partitions: u32,
    /// Bound on every request to the cluster: topic creation, metadata and offset look-ups,
    /// and an append (a record not acknowledged within it fails, `message.timeout.ms`).
    pub operation_timeout: Duration,
    /// Extra librdkafka settings applied last to every client (security, tuning, tests).
    pub overrides: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("replication_factor", &self.replication_factor)
            .field("default_partitions", &self.default_partitions)
            .field("operation_timeout", &self.operation_timeout)
            // Only the keys: values may be credentials (`sasl.password`, `ssl.key.password`).
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaOptions {
    /// Options for the cluster at `brokers`, with defaults for everything else: client id
    /// `herald`, the broker's default replication factor, 8 partitions, 30 s timeout.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: "herald".to_owned(),
            replication_factor: -1,
            default_partitions: 8,
            operation_timeout: Duration::from_secs(30),
            overrides: BTreeMap::new(),
        }
    }
}

/// The log on a Kafka cluster. Cheap to clone: clones share their clients.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    /// Replaced when librdkafka reports a fatal producer error, after which it refuses to send.
    producer: RwLock<Arc<FutureProducer<HeraldContext>>>,
    /// Creates topics and answers metadata requests.
    admin: AdminClient<HeraldContext>,
    /// Partition counts by topic, as the cluster's metadata showed them.
    partitions: RwLock<HashMap<String, u32>>,
    /// Idle consumer clients, one per group asked for its lag: the group's id decides which
    /// coordinator answers for its committed offsets.
    lag_clients: Mutex<HashMap<String, Arc<BaseConsumer<HeraldContext>>>>,
}

/// Groups whose lag clients are kept; beyond it the cache starts over (health checks ask for
/// a handful of groups, so this only bounds a misbehaving caller).
const MAX_LAG_CLIENTS: usize = 32;
/// Pause between metadata checks while a created topic is not visible yet.
const TOPIC_READY_POLL: Duration = Duration::from_millis(50);
/// Pause before re-enqueueing a record when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

impl KafkaLog {
    /// Creates the clients. librdkafka connects in the background, so an unreachable cluster
    /// shows as errors of the first operations, after `operation_timeout`.
    pub fn connect(options: KafkaOptions) -> Result<KafkaLog> {
        if options.brokers.trim().is_empty() {
            return Err(LogError::Backend("no kafka brokers configured".to_owned()));
        }
        if options.default_partitions == 0 {
            return Err(LogError::Backend(
                "the default partition count must be at least 1".to_owned(),
            ));
        }
        let admin = AdminClient::from_config_and_context(
            &client_config(&options, &[]),
            HeraldContext::new("admin", None),
        )
        .map_err(|error| backend("cannot create the kafka admin client", error))?;
        let producer = new_producer(&options)?;
        Ok(KafkaLog {
            inner: Arc::new(Inner {
                options,
                producer: RwLock::new(Arc::new(producer)),
                admin,
                partitions: RwLock::new(HashMap::new()),
                lag_clients: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The partition count of `topic`, from the cache or else the cluster.
    async fn partitions_of(&self, topic: &str) -> Result<u32> {
        if let Some(count) = self.inner.cached_partitions(topic) {
            return Ok(count);
        }
        let topic = topic.to_owned();
        self.blocking(move |inner| inner.lookup_partitions(&topic))
            .await
    }

    /// Runs a blocking librdkafka call off the async runtime.
    async fn blocking<T, F>(&self, call: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || call(&inner))
            .await
            .map_err(|error| LogError::Backend(format!("kafka request task failed: {error}")))?
    }

    /// Hands one record to librdkafka, waiting while its local queue is full.
    async fn enqueue(
        &self,
        producer: &FutureProducer<HeraldContext>,
        record: &OutgoingRecord,
        partition: u32,
    ) -> Result<DeliveryFuture> {
        let deadline = Instant::now() + self.inner.options.operation_timeout;
        let partition = i32::try_from(partition)
            .map_err(|_| LogError::Backend(format!("partition {partition} is out of range")))?;
        loop {
            let future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic)
                .partition(partition)
                .key(record.key.as_slice())
                .payload(record.value.as_slice());
            let error = match producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((error, _record)) => error,
            };
            match error {
                // The queue drains as the brokers acknowledge: back-pressure, not a failure.
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                error => return Err(self.inner.produce_error(&record.topic, error)),
            }
        }
    }
}

impl Inner {
    fn cached_partitions(&self, topic: &str) -> Option<u32> {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied()
    }

    fn cache_partitions(&self, topic: &str, count: u32) {
        self.partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), count);
    }

    fn forget_partitions(&self, topic: &str) {
        self.partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
    }

    fn producer(&self) -> Arc<FutureProducer<HeraldContext>> {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the cluster for a topic's partition count (blocking) and caches it.
    fn lookup_partitions(&self, topic: &str) -> Result<u32> {
        match describe_topic(self.admin.inner(), topic, self.options.operation_timeout)? {
            TopicState::Missing => Err(LogError::UnknownTopic(topic.to_owned())),
            TopicState::Exists { partitions: 0, .. } => Err(LogError::Backend(format!(
                "topic `{topic}` has no partitions yet"
            ))),
            TopicState::Exists { partitions, .. } => {
                self.cache_partitions(topic, partitions);
                Ok(partitions)
            }
        }
    }

    fn produce_error(&self, topic: &str, error: KafkaError) -> LogError {
        match error {
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition,
            ) => {
                // Deleted (or recreated smaller) behind our back: look it up again next time.
                self.forget_partitions(topic);
                LogError::UnknownTopic(topic.to_owned())
            }
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                LogError::Backend(format!(
                    "append to `{topic}` was not acknowledged within {:?}; the record may or \
                     may not have been written",
                    self.options.operation_timeout
                ))
            }
            error => backend(&format!("append to `{topic}` failed"), error),
        }
    }

    /// After a failed append: a producer in fatal state refuses every later record, so it is
    /// replaced (records it had accepted were reported failed and are the caller's to retry).
    fn replace_producer_if_fatal(&self, failed: &Arc<FutureProducer<HeraldContext>>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            return; // Another append replaced it already.
        }
        match new_producer(&self.options) {
            Ok(producer) => {
                tracing::error!(%code, reason, "kafka producer failed fatally; replaced it");
                *current = Arc::new(producer);
            }
            Err(error) => {
                tracing::error!(
                    %code,
                    reason,
                    %error,
                    "kafka producer failed fatally and cannot be replaced"
                );
            }
        }
    }

    fn lag_client(&self, group: &str) -> Result<Arc<BaseConsumer<HeraldContext>>> {
        let mut clients = self
            .lag_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(group) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_LAG_CLIENTS {
            clients.clear();
        }
        let config = client_config(
            &self.options,
            &[
                ("group.id", group),
                // It only reads the group's offsets; it never consumes or commits.
                ("enable.auto.commit", "false"),
            ],
        );
        let client =
            BaseConsumer::from_config_and_context(&config, HeraldContext::new("lag", Some(group)))
                .map_err(|error| backend("cannot create the kafka lag client", error))?;
        let client = Arc::new(client);
        clients.insert(group.to_owned(), client.clone());
        Ok(client)
    }

    /// Committed offsets and high watermarks of `partitions` (blocking).
    fn lag(
        &self,
        client: &BaseConsumer<HeraldContext>,
        group: &str,
        partitions: Vec<(String, u32)>,
    ) -> Result<Vec<PartitionLag>> {
        let timeout = self.options.operation_timeout;
        // Serves the idle client's queued events (errors, logs) so they do not pile up.
        while let Some(event) = client.poll(Duration::ZERO) {
            drop(event);
        }
        let mut request = TopicPartitionList::with_capacity(partitions.len());
        for (topic, partition) in &partitions {
            request.add_partition(topic, to_i32(*partition)?);
        }
        let committed = client
            .committed_offsets(request, timeout)
            .map_err(|error| {
                backend(
                    &format!("cannot read the committed offsets of group `{group}`"),
                    error,
                )
            })?
            .to_topic_map();
        partitions
            .into_iter()
            .map(|(topic, partition)| {
                let (_low, high) = client
                    .fetch_watermarks(&topic, to_i32(partition)?, timeout)
                    .map_err(|error| {
                        backend(
                            &format!("cannot read the end of `{topic}`/{partition}"),
                            error,
                        )
                    })?;
                let committed = match committed.get(&(topic.clone(), to_i32(partition)?)) {
                    Some(Offset::Offset(offset)) => u64::try_from(*offset).unwrap_or(0),
                    // No commit yet (`Offset::Invalid`).
                    _ => 0,
                };
                Ok(PartitionLag {
                    topic,
                    partition,
                    end_offset: u64::try_from(high).unwrap_or(0),
                    committed,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Log for KafkaLog {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let timeout = self.inner.options.operation_timeout;
        let mut missing = Vec::new();
        for spec in topics {
            let name = spec.name.clone();
            let state = self
                .blocking(move |inner| describe_topic(inner.admin.inner(), &name, timeout))
                .await?;
            match state {
                TopicState::Exists { partitions, .. } if partitions > 0 => {
                    // Existing topics keep their partitions, whatever the spec asks for.
                    self.inner.cache_partitions(&spec.name, partitions);
                }
                // Being created (by us earlier or someone else): wait for it below.
                TopicState::Exists { .. } => missing.push((spec.name.clone(), None, false)),
                TopicState::Missing => {
                    let partitions = if spec.partitions == 0 {
                        self.inner.options.default_partitions
                    } else {
                        spec.partitions
                    };
                    missing.push((spec.name.clone(), Some(partitions), spec.compacted));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }

        let new_topics = missing
            .iter()
            .filter_map(|(name, partitions, compacted)| {
                Some((name, partitions.as_ref()?, compacted))
            })
            .map(|(name, partitions, compacted)| {
                let topic = NewTopic::new(
                    name,
                    to_i32(*partitions)?,
                    TopicReplication::Fixed(self.inner.options.replication_factor),
                );
                Ok(if *compacted {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !new_topics.is_empty() {
            let admin_options = AdminOptions::new()
                .operation_timeout(Some(timeout))
                .request_timeout(Some(timeout));
            let results = self
                .inner
                .admin
                .create_topics(&new_topics, &admin_options)
                .await
                .map_err(|error| {
                    let names: Vec<&str> = new_topics.iter().map(|topic| topic.name).collect();
                    backend(&format!("cannot create topics {names:?}"), error)
                })?;
            for result in results {
                match result {
                    // Another process may have created it since we looked: same outcome.
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(LogError::Backend(format!(
                            "cannot create topic `{name}`: {code}"
                        )))
                    }
                }
            }
        }

        // Creation is asynchronous on the brokers: an append right after it could otherwise
        // find no leader, or the topic unknown to the broker it asks.
        let deadline = Instant::now() + timeout;
        for (name, _, _) in missing {
            loop {
                let topic = name.clone();
                let state = self
                    .blocking(move |inner| describe_topic(inner.admin.inner(), &topic, timeout))
                    .await?;
                if let TopicState::Exists {
                    partitions,
                    ready: true,
                } = state
                {
                    self.inner.cache_partitions(&name, partitions);
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LogError::Backend(format!(
                        "topic `{name}` did not become available within {timeout:?}"
                    )));
                }
                tokio::time::sleep(TOPIC_READY_POLL).await;
            }
        }
        Ok(())
    }

    /// From the cache; a topic not in it yet is looked up with a short blocking metadata
    /// request (the trait is synchronous).
    fn partitions(&self, topic: &str) -> Result<u32> {
        match self.inner.cached_partitions(topic) {
            Some(count) => Ok(count),
            None => self.inner.lookup_partitions(topic),
        }
    }

    async fn append(&self, records: Vec<OutgoingRecord>) -> Result<Vec<LogPosition>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Every topic is resolved before anything is sent: a batch naming an unknown topic
        // appends nothing.
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for record in &records {
            if !counts.contains_key(record.topic.as_str()) {
                let count = self.partitions_of(&record.topic).await?;
                counts.insert(&record.topic, count);
            }
        }

        let producer = self.inner.producer();
        // Enqueued in input order, so records of one key keep their order; librdkafka's
        // idempotent producer keeps that order through retries.
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let partition = partition_for_key(&record.key, counts[record.topic.as_str()]);
            match self.enqueue(&producer, record, partition).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => {
                    self.inner.replace_producer_if_fatal(&producer);
                    return Err(error);
                }
            }
        }

        // All records are in flight together; waiting for them one after the other takes as
        // long as the slowest. Every report is awaited, even after a failure, so that nothing
        // of this append is still pending when it returns.
        let mut positions = Vec::with_capacity(records.len());
        let mut first_error = None;
        for (record, delivery) in records.iter().zip(deliveries) {
            match delivery.await {
                Ok(Ok(delivery)) => match (
                    u32::try_from(delivery.partition),
                    u64::try_from(delivery.offset),
                ) {
                    (Ok(partition), Ok(offset)) => positions.push(LogPosition {
                        topic: record.topic.clone(),
                        partition,
                        offset,
                    }),
                    // Durable but without an offset: librdkafka acknowledges implicitly a
                    // request whose outcome was uncertain (timed out) once a later one of the
                    // same partition succeeded, and a retry the broker recognises as an old
                    // duplicate (DUPLICATE_SEQUENCE_NUMBER) has no offset either. The port
                    // promises positions, so this fails; a retry appends a duplicate, which
                    // consumers drop by event id.
                    _ => {
                        first_error.get_or_insert_with(|| {
                            LogError::Backend(format!(
                                "append to `{}`: the record is durable but the broker did not \
                                 report its offset (acknowledged implicitly or as a duplicate)",
                                record.topic
                            ))
                        });
                    }
                },
                Ok(Err((error, _message))) => {
                    if first_error.is_none() {
                        first_error = Some(self.inner.produce_error(&record.topic, error));
                    }
                }
                Err(_canceled) => {
                    first_error.get_or_insert(LogError::Closed);
                }
            }
        }
        match first_error {
            Some(error) => {
                self.inner.replace_producer_if_fatal(&producer);
                Err(error)
            }
            None => Ok(positions),
        }
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        start: StartPosition,
    ) -> Result<Box<dyn LogConsumer>> {
        let mut counts = Vec::with_capacity(topics.len());
        for topic in topics {
            counts.push((topic.as_str(), self.partitions_of(topic).await?));
        }
        let config = client_config(
            &self.inner.options,
            &[
                ("group.id", group),
                ("enable.auto.commit", "true"),
                // Only `commit` marks records processed, never their mere delivery.
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                // Prefetch at most 8 MiB per consumer (default 64 MiB): a process runs one
                // consumer per loop and Herald keeps to a small memory budget.
                ("queued.max.messages.kbytes", "8192"),
                // A member holds a batch until it is processed, and a retry tier's member waits
                // for its tasks to come due (up to the longest retry delay) before polling
                // again. Liveness is the session timeout's job (background heartbeats), so the
                // poll interval is as long as librdkafka allows (24 h) rather than the default
                // 5 min, which would evict the member mid-wait and re-deliver its batch.
                ("max.poll.interval.ms", "86400000"),
            ],
        );
        let consumer: StreamConsumer<HeraldContext> = StreamConsumer::from_config_and_context(
            &config,
            HeraldContext::new("consumer", Some(group)),
        )
        .map_err(|error| backend("cannot create the kafka consumer", error))?;
        match start {
            StartPosition::Committed => {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&names).map_err(|error| {
                    backend(&format!("cannot subscribe group `{group}`"), error)
                })?;
            }
            StartPosition::Explicit(offsets) => {
                let mut assignment = TopicPartitionList::new();
                for (topic, count) in counts {
                    for partition in 0..count {
                        let offset = match offsets.get(&(topic.to_owned(), partition)) {
                            Some(&next) => Offset::Offset(i64::try_from(next).map_err(|_| {
                                LogError::Backend(format!("offset {next} is out of range"))
                            })?),
                            None => Offset::Beginning,
                        };
                        assignment
                            .add_partition_offset(topic, to_i32(partition)?, offset)
                            .map_err(|error| backend("cannot build the assignment", error))?;
                    }
                }
                consumer
                    .assign(&assignment)
                    .map_err(|error| backend("cannot assign partitions", error))?;
            }
        }
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            group: group.to_owned(),
            stored: HashMap::new(),
        }))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
        let mut partitions = Vec::new();
        for topic in topics {
            let count = self.partitions_of(topic).await?;
            partitions.extend((0..count).map(|partition| (topic.clone(), partition)));
        }
        let client = self.inner.lag_client(group)?;
        let group = group.to_owned();
        self.blocking(move |inner| inner.lag(&client, &group, partitions))
            .await
    }
}

/// A member of a consumer group, or a self-assigned consumer for explicit start positions.
struct KafkaConsumer {
    /// Shared with blocking commit tasks.
    consumer: Arc<StreamConsumer<HeraldContext>>,
    group: String,
    /// The next offset this member stored per partition, so that its commits never move back.
    stored: HashMap<(String, i32), i64>,
}

impl KafkaConsumer {
    /// Errors on the consumer's stream are mostly librdkafka reporting what it retries by
    /// itself (a broker down, a leader moving): only a fatal one fails `poll`.
    fn tolerate(&self, error: KafkaError) -> Result<()> {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            return Err(LogError::Backend(format!(
                "kafka consumer of group `{}` failed fatally: {code}: {reason}",
                self.group
            )));
        }
        match error {
            KafkaError::PartitionEOF(_) => Ok(()),
            KafkaError::MessageConsumptionFatal(code) => Err(LogError::Backend(format!(
                "kafka consumer of group `{}` failed fatally: {code}",
                self.group
            ))),
            error => {
                tracing::warn!(
                    group = %self.group,
                    %error,
                    "kafka consumer error; librdkafka retries"
                );
                Ok(())
            }
        }
    }
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumedRecord>> {
        let mut records = Vec::new();
        if max_records == 0 {
            return Ok(records);
        }
        let deadline = Instant::now() + max_wait;
        let mut stream = self.consumer.stream();
        while records.is_empty() {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_elapsed) => return Ok(records),
                Ok(Some(Ok(message))) => records.push(consumed(&message)),
                Ok(Some(Err(error))) => self.tolerate(error)?,
                Ok(None) => return Err(LogError::Closed),
            }
        }
        // Then whatever librdkafka has already fetched, without waiting for more.
        while records.len() < max_records {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => records.push(consumed(&message)),
                Some(Some(Err(error))) => {
                    self.tolerate(error)?;
                    break;
                }
                Some(None) | None => break,
            }
        }
        Ok(records)
    }

    async fn commit(&mut self, processed: &[LogPosition]) -> Result<()> {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for position in processed {
            let offset = i64::try_from(position.offset)
                .ok()
                .and_then(|offset| offset.checked_add(1))
                .ok_or_else(|| {
                    LogError::Backend(format!("offset {} is out of range", position.offset))
                })?;
            let key = (position.topic.as_str(), to_i32(position.partition)?);
            let entry = next.entry(key).or_insert(offset);
            *entry = (*entry).max(offset);
        }
        // Kafka commits the offset of the next record to read: processed offset + 1.
        let mut offsets = TopicPartitionList::with_capacity(next.len());
        for ((topic, partition), offset) in next {
            let already = self.stored.get(&(topic.to_owned(), partition)).copied();
            if already.is_some_and(|stored| stored >= offset) {
                continue;
            }
            offsets
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(|error| backend("cannot build the offsets to commit", error))?;
        }
        if offsets.count() == 0 {
            return Ok(());
        }

        match self.consumer.store_offsets(&offsets) {
            // What librdkafka returns when no partition could be stored (none is assigned to
            // this member any more); each partition's reason is read below.
            Ok(())
            | Err(KafkaError::StoreOffset(
                RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition,
            )) => {}
            Err(error) => {
                return Err(backend(
                    &format!("cannot store the offsets of group `{}`", self.group),
                    error,
                ))
            }
        }
        let mut stored_any = false;
        for element in offsets.elements() {
            match (element.error(), element.offset()) {
                (Ok(()), Offset::Offset(offset)) => {
                    self.stored
                        .insert((element.topic().to_owned(), element.partition()), offset);
                    stored_any = true;
                }
                (Ok(()), _) => {}
                // The partition went to another member in a rebalance: it resumes from the
                // last commit and processes these records again (at-least-once).
                (Err(error), _) => tracing::debug!(
                    group = %self.group,
                    topic = element.topic(),
                    partition = element.partition(),
                    %error,
                    "offset of a partition no longer assigned to this member not stored"
                ),
            }
        }
        if !stored_any {
            return Ok(());
        }

        // Synchronous, so that a commit is the group's when this returns (lag, restarts).
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await
                .map_err(|error| LogError::Backend(format!("kafka commit task failed: {error}")))?;
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            // A rebalance is under way: the offsets stay stored, the revocation commit (or
            // the next auto-commit) writes them, or the next owner re-processes.
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId),
            )) => {
                tracing::debug!(group = %self.group, %code, "commit deferred by a rebalance");
                Ok(())
            }
            Err(error) => Err(backend(
                &format!("cannot commit the offsets of group `{}`", self.group),
                error,
            )),
        }
    }
}

fn consumed(message: &BorrowedMessage<'_>) -> ConsumedRecord {
    ConsumedRecord {
        topic: message.topic().to_owned(),
        partition: u32::try_from(message.partition()).unwrap_or_default(),
        offset: u64::try_from(message.offset()).unwrap_or_default(),
        key: message.key().unwrap_or_default().to_vec(),
        value: message.payload().unwrap_or_default().to_vec(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
    }
}

/// librdkafka diagnostics into `tracing`, and the rebalance handling of group members.
#[derive(Clone)]
struct HeraldContext {
    client: &'static str,
    group: Option<String>,
}

impl HeraldContext {
    fn new(client: &'static str, group: Option<&str>) -> Self {
        Self {
            client,
            group: group.map(str::to_owned),
        }
    }

    fn group(&self) -> &str {
        self.group.as_deref().unwrap_or("")
    }
}

impl ClientContext for HeraldContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let (client, group) = (self.client, self.group());
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client, group, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", client, group, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client, group, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client, group, facility, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Mostly transient (a broker unreachable, all brokers down) and retried by librdkafka;
        // fatal ones also surface as errors of the operations.
        tracing::warn!(
            target: "librdkafka",
            client = self.client,
            group = self.group(),
            %error,
            reason,
            "kafka client error"
        );
    }
}

impl ConsumerContext for HeraldContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                if consumer.assignment_lost() {
                    // The group already gave them away (session timeout): a commit would be
                    // refused; the new owners resume from the last commit.
                    tracing::warn!(
                        group = self.group(),
                        "partitions lost without a clean revocation"
                    );
                    return;
                }
                // The next owner starts from the committed offsets: hand over what this
                // member finished, before letting go.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(error) => tracing::warn!(
                        group = self.group(),
                        %error,
                        "commit on revocation failed; the next owner re-processes"
                    ),
                }
                tracing::debug!(
                    group = self.group(),
                    partitions = partitions.count(),
                    "partitions revoked"
                );
            }
            Rebalance::Assign(partitions) => {
                tracing::debug!(
                    group = self.group(),
                    partitions = partitions.count(),
                    "partitions assigned"
                );
            }
            Rebalance::Error(error) => {
                tracing::warn!(group = self.group(), %error, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::debug!(
                    group = self.group(),
                    %error,
                    "auto-commit failed; retried at the next interval"
                )
            }
        }
    }
}

/// What the metadata says of a topic.
enum TopicState {
    Missing,
    /// `ready`: every partition has a leader and no error.
    Exists {
        partitions: u32,
        ready: bool,
    },
}

/// Blocking metadata request for one topic.
fn describe_topic(
    client: &Client<HeraldContext>,
    topic: &str,
    timeout: Duration,
) -> Result<TopicState> {
    let metadata = match client.fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => metadata,
        Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
        )) => return Ok(TopicState::Missing),
        Err(error) => {
            return Err(backend(
                &format!("cannot read the metadata of topic `{topic}`"),
                error,
            ))
        }
    };
    let Some(found) = metadata.topics().iter().find(|found| found.name() == topic) else {
        return Ok(TopicState::Missing);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            return Ok(TopicState::Missing)
        }
        // Just created: leaders are being elected.
        Some(RDKafkaErrorCode::LeaderNotAvailable) => {
            return Ok(TopicState::Exists {
                partitions: u32::try_from(found.partitions().len()).unwrap_or(u32::MAX),
                ready: false,
            })
        }
        Some(code) => {
            return Err(LogError::Backend(format!(
                "cannot read the metadata of topic `{topic}`: {code}"
            )))
        }
    }
    let partitions = found.partitions();
    let ready = !partitions.is_empty()
        && partitions
            .iter()
            .all(|partition| partition.leader() >= 0 && partition.error().is_none());
    Ok(TopicState::Exists {
        partitions: u32::try_from(partitions.len()).unwrap_or(u32::MAX),
        ready,
    })
}

/// Settings every client shares, then `settings`, then the caller's overrides.
fn client_config(options: &KafkaOptions, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", &options.client_id)
        .set("allow.auto.create.topics", "false");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    for (key, value) in &options.overrides {
        config.set(key, value);
    }
    config
}

fn new_producer(options: &KafkaOptions) -> Result<FutureProducer<HeraldContext>> {
    let timeout_ms = options.operation_timeout.as_millis().max(1).to_string();
    let config = client_config(
        options,
        &[
            // Retries never duplicate or reorder a partition's records.
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // Concurrent appends share produce requests at the cost of ≤ 2 ms latency.
            ("linger.ms", "2"),
            ("message.timeout.ms", &timeout_ms),
            // librdkafka would buffer up to 1 GiB of unsent records; appends are awaited, so
            // a small buffer only bounds memory.
            ("queue.buffering.max.kbytes", "65536"),
        ],
    );
    FutureProducer::from_config_and_context(&config, HeraldContext::new("producer", None))
        .map_err(|error| backend("cannot create the kafka producer", error))
}

fn backend(context: &str, error: KafkaError) -> LogError {
    LogError::Backend(format!("{context}: {error}"))
}

fn to_i32(partition: u32) -> Result<i32> {
    i32::try_from(partition)
        .map_err(|_| LogError::Backend(format!("partition {partition} is out of range")))
}
