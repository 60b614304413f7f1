//! The embedded log: Kafka-shaped topics stored on local disk with fjall.
//!
//! This module is responsible for
//!
//! * the on-disk layout (three keyspaces, see below) and recovering the in-memory state
//!   (topics, next offsets) from it on [`EmbeddedLog::open`];
//! * **group commit**: every write (appends, offset commits, topic creation) goes through one
//!   writer thread that drains all pending requests, writes them in one fjall batch and
//!   fsyncs once, and only then answers the callers, so concurrent appends share an fsync;
//! * consumers: one active member per group in this process, reading every partition of its
//!   topics fairly and waking up on new appends instead of polling the disk.
//!
//! Layout:
//!
//! * `records`: `topic id (u32 BE) | partition (u32 BE) | offset (u64 BE)` ->
//!   `timestamp_ms (i64 BE) | key length (u32 BE) | key | value`. Big endian keys sort in
//!   offset order, so a partition is a contiguous range.
//! * `topics`: `topic name` -> `topic id (u32 BE) | partitions (u32 BE)`.
//! * `group_offsets`: `group length (u32 BE) | group | topic id (u32 BE) | partition (u32 BE)`
//!   -> `next offset (u64 BE)`.

const MIB: u64 = 1024 * 1024;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::{oneshot, watch};

use crate::{
    partition_for_key, ConsumedRecord, Log, LogConsumer, LogError, LogPosition, OutgoingRecord,
    PartitionLag, Result, StartPosition, TopicSpec,
};

const RECORDS_KEYSPACE: &str = "records";
const TOPICS_KEYSPACE: &str = "topics";
const GROUP_OFFSETS_KEYSPACE: &str = "group_offsets";

/// Upper bound on the requests folded into one write batch, so one batch (and the memory it
/// holds) stays bounded under a flood of appends.
const MAX_REQUESTS_PER_BATCH: usize = 4096;

/// How an [`EmbeddedLog`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedLogOptions {
    /// Whether a write is fsynced before it is acknowledged. With `false` an acknowledged
    /// write survives the process dying but not the machine losing power. Default `true`.
    pub fsync: bool,
    /// The partition count of a topic created from a [`TopicSpec`] with 0 partitions.
    /// Default 8.
    pub default_partitions: u32,
}

impl Default for EmbeddedLogOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            default_partitions: 8,
        }
    }
}

/// The embedded [`Log`]: topics on local disk, for a single process.
///
/// Cheap to clone; clones share the same storage and writer. The writer thread stops, and the
/// storage is closed, once the last clone and the last consumer are dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A topic as the readers see it. `ends` only moves once records are durable, so consumers,
/// which never read past it, never hand out a record that a crash could still take back.
struct TopicState {
    name: String,
    id: u32,
    partitions: u32,
    /// Per partition, the offset the next appended record gets.
    ends: Box<[AtomicU64]>,
}

impl TopicState {
    fn end(&self, partition: u32) -> u64 {
        self.ends[partition as usize].load(Ordering::Acquire)
    }
}

/// State shared by the handles, the consumers and the writer thread.
struct Shared {
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    /// Bumped after every durable batch that contains records; consumers wait on it.
    appended: watch::Sender<u64>,
}

impl Shared {
    fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn known_topic(&self, name: &str) -> Result<Arc<TopicState>> {
        self.topic(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }
}

struct Inner {
    options: EmbeddedLogOptions,
    group_offsets: Keyspace,
    records: Keyspace,
    shared: Arc<Shared>,
    /// `None` only while dropping: closing the channel is what stops the writer.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Groups with a live consumer in this process.
    active_groups: Mutex<HashSet<String>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what it already took.
        // Joining it means that once our own keyspace handles drop right after this, the
        // database is closed and its lock file released, so the same directory can be
        // reopened right away. This
        // cannot hang: the writer only ever blocks on the channel and on the disk.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the embedded log writer thread panicked");
            }
        }
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log stored in `dir` and recovers its topics and offsets.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedLogOptions) -> Result<Self> {
        let dir = dir.as_ref();
        // We fsync ourselves, once per batch; fjall still hands each batch to the OS on
        // commit, which is what makes acknowledged writes survive a crash of the process
        // when `fsync` is off.
        // Bounded memory: fjall's default memtable is 64 MiB per keyspace; a log flushes
        // sooner and keeps a small block cache (consumers mostly read what was just written).
        let db = Database::builder(dir).cache_size(16 * MIB).open()?;
        let small = || KeyspaceCreateOptions::default().max_memtable_size(MIB);
        let records = db.keyspace(RECORDS_KEYSPACE, || {
            KeyspaceCreateOptions::default().max_memtable_size(16 * MIB)
        })?;
        let topics_ks = db.keyspace(TOPICS_KEYSPACE, small)?;
        let group_offsets = db.keyspace(GROUP_OFFSETS_KEYSPACE, small)?;

        let (topics, next_topic_id) = recover_topics(&topics_ks, &records)?;
        tracing::debug!(dir = %dir.display(), topics = topics.len(), "opened embedded log");

        let (appended, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            topics: RwLock::new(topics),
            appended,
        });
        let (requests, receiver) = mpsc::channel();
        let writer = Writer {
            db,
            records: records.clone(),
            topics: topics_ks,
            group_offsets: group_offsets.clone(),
            shared: shared.clone(),
            fsync: options.fsync,
            next_topic_id,
            failure: None,
        };
        let writer = std::thread::Builder::new()
            .name("herald-log-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| LogError::Backend(format!("cannot start the log writer thread: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                options,
                group_offsets,
                records,
                shared,
                requests: Some(requests),
                writer: Some(writer),
                active_groups: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &EmbeddedLogOptions {
        &self.inner.options
    }
}

impl Inner {
    /// Hands a request to the writer and waits for its answer.
    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(LogError::Closed)?;
        requests.send(make(reply)).map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    fn committed_offset(&self, group: &str, topic: &TopicState, partition: u32) -> Result<u64> {
        let key = group_offset_key(group, topic.id, partition);
        match self.group_offsets.get(key)? {
            Some(value) => decode_u64(&value)
                .ok_or_else(|| corrupt(format!("committed offset of group `{group}`"))),
            None => Ok(0),
        }
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let default_partitions = self.inner.options.default_partitions;
        let specs: Vec<TopicSpec> = topics
            .iter()
            .map(|spec| {
                let partitions = if spec.partitions == 0 {
                    default_partitions
                } else {
                    spec.partitions
                };
                TopicSpec::new(spec.name.clone(), partitions)
            })
            .collect();
        if let Some(spec) = specs.iter().find(|spec| spec.partitions == 0) {
            return Err(LogError::Backend(format!(
                "topic `{}` needs at least one partition",
                spec.name
            )));
        }
        // Skip the writer (and its fsync) when there is nothing to create.
        if specs
            .iter()
            .all(|spec| self.inner.shared.topic(&spec.name).is_some())
        {
            for spec in &specs {
                let existing = self.inner.shared.known_topic(&spec.name)?;
                warn_if_mismatch(&existing, spec);
            }
            return Ok(());
        }
        self.inner
            .submit(|reply| Request::EnsureTopics { specs, reply })
            .await
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.inner.shared.known_topic(topic)?.partitions)
    }

    async fn append(&self, records: Vec<OutgoingRecord>) -> Result<Vec<LogPosition>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Reject unknown topics here already; the writer checks again (a topic is never
        // removed, so this is only about answering without a round trip).
        for record in &records {
            self.inner.shared.known_topic(&record.topic)?;
        }
        self.inner
            .submit(|reply| Request::Append { records, reply })
            .await
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        start: StartPosition,
    ) -> Result<Box<dyn LogConsumer>> {
        let mut states = Vec::new();
        let mut seen = HashSet::new();
        for topic in topics {
            if seen.insert(topic.as_str()) {
                states.push(self.inner.shared.known_topic(topic)?);
            }
        }

        // Take the group before reading its committed offsets, so they cannot be moved by a
        // previous member in between.
        let lease = GroupLease::acquire(self.inner.clone(), group)?;
        let mut assigned = Vec::new();
        for state in states {
            for partition in 0..state.partitions {
                let next = match &start {
                    StartPosition::Committed => {
                        self.inner.committed_offset(group, &state, partition)?
                    }
                    StartPosition::Explicit(offsets) => offsets
                        .get(&(state.name.clone(), partition))
                        .copied()
                        .unwrap_or(0),
                };
                assigned.push(Assigned {
                    topic: state.clone(),
                    partition,
                    next,
                });
            }
        }
        // Subscribe now: an append after this point wakes the first poll.
        let appended = self.inner.shared.appended.subscribe();
        Ok(Box::new(EmbeddedConsumer {
            lease,
            assigned,
            cursor: 0,
            appended,
        }))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
        let mut lags = Vec::new();
        let mut seen = HashSet::new();
        for topic in topics {
            if !seen.insert(topic.as_str()) {
                continue;
            }
            let state = self.inner.shared.known_topic(topic)?;
            for partition in 0..state.partitions {
                lags.push(PartitionLag {
                    topic: state.name.clone(),
                    partition,
                    end_offset: state.end(partition),
                    committed: self.inner.committed_offset(group, &state, partition)?,
                });
            }
        }
        Ok(lags)
    }
}

fn warn_if_mismatch(existing: &TopicState, spec: &TopicSpec) {
    if existing.partitions != spec.partitions {
        tracing::warn!(
            topic = %spec.name,
            existing = existing.partitions,
            requested = spec.partitions,
            "topic exists with a different partition count; keeping the existing one"
        );
    }
}

/// Membership of a group; dropping it lets another consumer join the group.
struct GroupLease {
    inner: Arc<Inner>,
    group: String,
}

impl GroupLease {
    fn acquire(inner: Arc<Inner>, group: &str) -> Result<Self> {
        let fresh = inner
            .active_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group.to_owned());
        if !fresh {
            return Err(LogError::GroupBusy(group.to_owned()));
        }
        Ok(Self {
            inner,
            group: group.to_owned(),
        })
    }
}

impl Drop for GroupLease {
    fn drop(&mut self) {
        self.inner
            .active_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.group);
    }
}

struct Assigned {
    topic: Arc<TopicState>,
    partition: u32,
    /// The offset of the next record to hand out.
    next: u64,
}

/// The only member of its group: it reads every partition of its topics.
struct EmbeddedConsumer {
    lease: GroupLease,
    assigned: Vec<Assigned>,
    /// Where the next poll starts distributing, rotated so that when `max_records` is smaller
    /// than the backlog the leftover share does not always go to the same partitions.
    cursor: usize,
    appended: watch::Receiver<u64>,
}

impl EmbeddedConsumer {
    /// Reads up to `max_records` durable records, spread fairly over the partitions.
    fn read_available(&mut self, max_records: usize) -> Result<Vec<ConsumedRecord>> {
        let count = self.assigned.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let available: Vec<u64> = self
            .assigned
            .iter()
            .map(|a| a.topic.end(a.partition).saturating_sub(a.next))
            .collect();

        // Water-filling: every partition with a backlog gets an equal share of what is left,
        // rounds repeat until the budget is spent or every backlog is taken. One partition
        // with a huge backlog thus cannot starve the others.
        let mut shares = vec![0_u64; count];
        let mut remaining = max_records as u64;
        loop {
            let hungry: Vec<usize> = (0..count)
                .map(|k| (self.cursor + k) % count)
                .filter(|&i| shares[i] < available[i])
                .collect();
            if hungry.is_empty() || remaining == 0 {
                break;
            }
            let share = (remaining / hungry.len() as u64).max(1);
            for i in hungry {
                let take = share.min(available[i] - shares[i]).min(remaining);
                shares[i] += take;
                remaining -= take;
                if remaining == 0 {
                    break;
                }
            }
        }

        let mut batch = Vec::new();
        for k in 0..count {
            let i = (self.cursor + k) % count;
            if shares[i] > 0 {
                read_partition(
                    &self.lease.inner.records,
                    &mut self.assigned[i],
                    shares[i],
                    &mut batch,
                )?;
            }
        }
        self.cursor = (self.cursor + 1) % count;
        Ok(batch)
    }
}

/// Appends the `count` records from `assigned.next` to `out` and advances `assigned.next`.
fn read_partition(
    records: &Keyspace,
    assigned: &mut Assigned,
    count: u64,
    out: &mut Vec<ConsumedRecord>,
) -> Result<()> {
    let topic = &assigned.topic;
    let expected_end = assigned.next + count;
    let from = record_key(topic.id, assigned.partition, assigned.next);
    let to = record_key(topic.id, assigned.partition, expected_end);
    for guard in records.range(from..to) {
        let (key, value) = guard.into_inner()?;
        let offset = decode_record_offset(&key)
            .ok_or_else(|| corrupt(format!("record key in topic `{}`", topic.name)))?;
        if offset != assigned.next {
            return Err(corrupt(format!(
                "topic `{}` partition {} has no record at offset {}",
                topic.name, assigned.partition, assigned.next
            )));
        }
        let (timestamp_ms, key, value) = decode_record_value(&value).ok_or_else(|| {
            corrupt(format!(
                "record {offset} in topic `{}` partition {}",
                topic.name, assigned.partition
            ))
        })?;
        out.push(ConsumedRecord {
            topic: topic.name.clone(),
            partition: assigned.partition,
            offset,
            key,
            value,
            timestamp_ms,
        });
        assigned.next += 1;
    }
    // Offsets below the end are dense and durable, so a short read means lost data.
    if assigned.next != expected_end {
        return Err(corrupt(format!(
            "topic `{}` partition {} has no record at offset {}",
            topic.name, assigned.partition, assigned.next
        )));
    }
    Ok(())
}

#[async_trait]
impl LogConsumer for EmbeddedConsumer {
    async fn poll(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumedRecord>> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Mark the current version seen *before* reading: an append that lands after the
            // read then still shows up as a change below, so no wake-up is lost.
            self.appended.borrow_and_update();
            let batch = self.read_available(max_records)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            match tokio::time::timeout_at(deadline, self.appended.changed()).await {
                Ok(Ok(())) => continue,
                // The writer owns the sender and lives as long as we do; be safe anyway.
                Ok(Err(_)) => return Err(LogError::Closed),
                Err(_elapsed) => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, processed: &[LogPosition]) -> Result<()> {
        let mut next_offsets: HashMap<(u32, u32), u64> = HashMap::new();
        for position in processed {
            let topic = self.lease.inner.shared.known_topic(&position.topic)?;
            if position.partition >= topic.partitions {
                return Err(LogError::Backend(format!(
                    "topic `{}` has no partition {}",
                    position.topic, position.partition
                )));
            }
            let next = position.offset.saturating_add(1);
            let entry = next_offsets
                .entry((topic.id, position.partition))
                .or_insert(next);
            *entry = (*entry).max(next);
        }
        if next_offsets.is_empty() {
            return Ok(());
        }
        let group = self.lease.group.clone();
        let offsets = next_offsets
            .into_iter()
            .map(|((topic, partition), next)| (topic, partition, next))
            .collect();
        self.lease
            .inner
            .submit(|reply| Request::Commit {
                group,
                offsets,
                reply,
            })
            .await
    }
}

/// Work for the writer thread.
enum Request {
    Append {
        records: Vec<OutgoingRecord>,
        reply: oneshot::Sender<Result<Vec<LogPosition>>>,
    },
    /// Next offsets per `(topic id, partition)`.
    Commit {
        group: String,
        offsets: Vec<(u32, u32, u64)>,
        reply: oneshot::Sender<Result<()>>,
    },
    EnsureTopics {
        specs: Vec<TopicSpec>,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Request {
    /// Answers a request that was never written.
    fn reject(self, error: LogError) {
        match self {
            Request::Append { reply, .. } => drop(reply.send(Err(error))),
            Request::Commit { reply, .. } | Request::EnsureTopics { reply, .. } => {
                drop(reply.send(Err(error)))
            }
        }
    }
}

/// A request written to the batch, answered once the batch is durable.
enum Pending {
    Append(oneshot::Sender<Result<Vec<LogPosition>>>, Vec<LogPosition>),
    Done(oneshot::Sender<Result<()>>),
}

impl Pending {
    fn answer(self, failure: Option<&str>) {
        // A caller that gave up waiting is not an error: its write is done all the same.
        match (self, failure) {
            (Pending::Append(reply, positions), None) => drop(reply.send(Ok(positions))),
            (Pending::Append(reply, _), Some(why)) => drop(reply.send(Err(write_failed(why)))),
            (Pending::Done(reply), None) => drop(reply.send(Ok(()))),
            (Pending::Done(reply), Some(why)) => drop(reply.send(Err(write_failed(why)))),
        }
    }
}

fn write_failed(why: &str) -> LogError {
    LogError::Backend(format!("embedded log write failed: {why}"))
}

/// What one batch changes in memory, published only once the batch is durable.
#[derive(Default)]
struct Staged {
    new_topics: HashMap<String, Arc<TopicState>>,
    /// Next offsets per `(topic id, partition)`.
    ends: HashMap<(u32, u32), (Arc<TopicState>, u64)>,
    /// Committed offsets written in this batch, by `group_offsets` key.
    group_offsets: HashMap<Vec<u8>, u64>,
    records: usize,
}

/// The single writer: owns the database's write side and the assignment of offsets.
struct Writer {
    db: Database,
    records: Keyspace,
    topics: Keyspace,
    group_offsets: Keyspace,
    shared: Arc<Shared>,
    fsync: bool,
    next_topic_id: u32,
    /// Set after a failed write: what is in memory may no longer match the disk (and fjall
    /// refuses writes after a failed journal write anyway), so every later write fails.
    failure: Option<String>,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<Request>) {
        // Ends when every sender is dropped, i.e. when the last handle is.
        while let Ok(first) = requests.recv() {
            let mut drained = vec![first];
            while drained.len() < MAX_REQUESTS_PER_BATCH {
                match requests.try_recv() {
                    Ok(request) => drained.push(request),
                    Err(_) => break,
                }
            }
            self.write(drained);
        }
        tracing::debug!("embedded log writer stopped");
    }

    /// Writes all `requests` in one batch with one fsync, then answers them.
    fn write(&mut self, requests: Vec<Request>) {
        let mut batch = self.db.batch();
        let mut staged = Staged::default();
        let mut pending = Vec::with_capacity(requests.len());
        let timestamp_ms = now_ms();

        for request in requests {
            if let Some(why) = &self.failure {
                request.reject(write_failed(why));
                continue;
            }
            match request {
                Request::Append { records, reply } => {
                    match self.stage_append(&mut batch, &mut staged, records, timestamp_ms) {
                        Ok(positions) => pending.push(Pending::Append(reply, positions)),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
                Request::Commit {
                    group,
                    offsets,
                    reply,
                } => match self.stage_commit(&mut batch, &mut staged, &group, offsets) {
                    Ok(()) => pending.push(Pending::Done(reply)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Request::EnsureTopics { specs, reply } => {
                    self.stage_topics(&mut batch, &mut staged, &specs);
                    pending.push(Pending::Done(reply));
                }
            }
        }
        if pending.is_empty() {
            return;
        }

        let written = if batch.is_empty() {
            Ok(())
        } else {
            self.persist(batch)
        };
        match written {
            Ok(()) => {
                self.publish(staged);
                for request in pending {
                    request.answer(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded log write failed; refusing writes until reopened");
                let why = e.to_string();
                for request in pending {
                    request.answer(Some(&why));
                }
                self.failure = Some(why);
            }
        }
    }

    fn persist(&self, batch: fjall::OwnedWriteBatch) -> Result<(), fjall::Error> {
        batch.commit()?;
        if self.fsync {
            self.db.persist(PersistMode::SyncAll)?;
        }
        Ok(())
    }

    /// Makes a durable batch visible: new topics, new end offsets, then wakes the consumers.
    fn publish(&self, staged: Staged) {
        if !staged.new_topics.is_empty() {
            let mut topics = self
                .shared
                .topics
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            topics.extend(staged.new_topics);
        }
        for ((_, partition), (topic, end)) in staged.ends {
            topic.ends[partition as usize].store(end, Ordering::Release);
        }
        if staged.records > 0 {
            self.shared
                .appended
                .send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    fn topic(&self, staged: &Staged, name: &str) -> Result<Arc<TopicState>> {
        match staged.new_topics.get(name) {
            Some(topic) => Ok(topic.clone()),
            None => self.shared.known_topic(name),
        }
    }

    fn stage_append(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        staged: &mut Staged,
        records: Vec<OutgoingRecord>,
        timestamp_ms: i64,
    ) -> Result<Vec<LogPosition>> {
        // Resolve every topic first so that a rejected request appends nothing.
        let topics = records
            .iter()
            .map(|record| self.topic(staged, &record.topic))
            .collect::<Result<Vec<_>>>()?;
        let mut positions = Vec::with_capacity(records.len());
        for (record, topic) in records.into_iter().zip(topics) {
            let partition = partition_for_key(&record.key, topic.partitions);
            let (_, next) = staged
                .ends
                .entry((topic.id, partition))
                .or_insert_with(|| (topic.clone(), topic.end(partition)));
            let offset = *next;
            *next += 1;
            batch.insert(
                &self.records,
                record_key(topic.id, partition, offset).to_vec(),
                encode_record_value(timestamp_ms, &record.key, &record.value),
            );
            positions.push(LogPosition {
                topic: record.topic,
                partition,
                offset,
            });
        }
        staged.records += positions.len();
        Ok(positions)
    }

    fn stage_commit(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        staged: &mut Staged,
        group: &str,
        offsets: Vec<(u32, u32, u64)>,
    ) -> Result<()> {
        for (topic, partition, next) in offsets {
            let key = group_offset_key(group, topic, partition);
            let current = match staged.group_offsets.get(&key) {
                Some(&current) => current,
                None => match self.group_offsets.get(&key)? {
                    Some(value) => decode_u64(&value)
                        .ok_or_else(|| corrupt(format!("committed offset of group `{group}`")))?,
                    None => 0,
                },
            };
            // Committed offsets never move backwards, e.g. after a late, stale commit.
            if next > current {
                batch.insert(
                    &self.group_offsets,
                    key.clone(),
                    next.to_be_bytes().to_vec(),
                );
                staged.group_offsets.insert(key, next);
            }
        }
        Ok(())
    }

    fn stage_topics(
        &mut self,
        batch: &mut fjall::OwnedWriteBatch,
        staged: &mut Staged,
        specs: &[TopicSpec],
    ) {
        for spec in specs {
            if let Ok(existing) = self.topic(staged, &spec.name) {
                warn_if_mismatch(&existing, spec);
                continue;
            }
            let id = self.next_topic_id;
            self.next_topic_id += 1;
            let mut value = Vec::with_capacity(8);
            value.extend_from_slice(&id.to_be_bytes());
            value.extend_from_slice(&spec.partitions.to_be_bytes());
            batch.insert(&self.topics, spec.name.as_bytes().to_vec(), value);
            tracing::info!(topic = %spec.name, partitions = spec.partitions, "created topic");
            staged.new_topics.insert(
                spec.name.clone(),
                Arc::new(TopicState {
                    name: spec.name.clone(),
                    id,
                    partitions: spec.partitions,
                    ends: (0..spec.partitions).map(|_| AtomicU64::new(0)).collect(),
                }),
            );
        }
    }
}

/// Reads the topics and, for each partition, the next offset (one past its last record).
fn recover_topics(
    topics_ks: &Keyspace,
    records: &Keyspace,
) -> Result<(HashMap<String, Arc<TopicState>>, u32)> {
    let mut topics = HashMap::new();
    let mut next_topic_id = 0_u32;
    for guard in topics_ks.iter() {
        let (name, value) = guard.into_inner()?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("topic name".into()))?;
        let (id, partitions) =
            decode_topic(&value).ok_or_else(|| corrupt(format!("topic `{name}`")))?;
        let ends = (0..partitions)
            .map(|partition| {
                let last = records
                    .range(record_key(id, partition, 0)..=record_key(id, partition, u64::MAX))
                    .next_back();
                let next = match last {
                    Some(guard) => {
                        let key = guard.key()?;
                        decode_record_offset(&key)
                            .ok_or_else(|| corrupt(format!("record key in topic `{name}`")))?
                            + 1
                    }
                    None => 0,
                };
                Ok(AtomicU64::new(next))
            })
            .collect::<Result<Box<[_]>>>()?;
        next_topic_id = next_topic_id.max(id + 1);
        topics.insert(
            name.clone(),
            Arc::new(TopicState {
                name,
                id,
                partitions,
                ends,
            }),
        );
    }
    Ok((topics, next_topic_id))
}

fn corrupt(what: String) -> LogError {
    LogError::Backend(format!("embedded log storage is corrupt: bad {what}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn record_key(topic: u32, partition: u32, offset: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..4].copy_from_slice(&topic.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

fn decode_record_offset(key: &[u8]) -> Option<u64> {
    let offset: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    (key.len() == 16).then(|| u64::from_be_bytes(offset))
}

fn encode_record_value(timestamp_ms: i64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let key_len = u32::try_from(key.len()).expect("a record key is shorter than 4 GiB");
    let mut encoded = Vec::with_capacity(12 + key.len() + value.len());
    encoded.extend_from_slice(&timestamp_ms.to_be_bytes());
    encoded.extend_from_slice(&key_len.to_be_bytes());
    encoded.extend_from_slice(key);
    encoded.extend_from_slice(value);
    encoded
}

fn decode_record_value(encoded: &[u8]) -> Option<(i64, Vec<u8>, Vec<u8>)> {
    let timestamp_ms = i64::from_be_bytes(encoded.get(..8)?.try_into().ok()?);
    let key_len = u32::from_be_bytes(encoded.get(8..12)?.try_into().ok()?) as usize;
    let key = encoded.get(12..12usize.checked_add(key_len)?)?;
    let value = encoded.get(12 + key_len..)?;
    Some((timestamp_ms, key.to_vec(), value.to_vec()))
}

fn decode_topic(value: &[u8]) -> Option<(u32, u32)> {
    let id = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
    let partitions = u32::from_be_bytes(value.get(4..8)?.try_into().ok()?);
    (value.len() == 8 && partitions > 0).then_some((id, partitions))
}

fn decode_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

fn group_offset_key(group: &str, topic: u32, partition: u32) -> Vec<u8> {
    let group_len = u32::try_from(group.len()).expect("a group name is shorter than 4 GiB");
    let mut key = Vec::with_capacity(12 + group.len());
    key.extend_from_slice(&group_len.to_be_bytes());
    key.extend_from_slice(group.as_bytes());
    key.extend_from_slice(&topic.to_be_bytes());
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_by_offset() {
        assert!(record_key(1, 2, 255) < record_key(1, 2, 256));
        assert!(record_key(1, 2, u64::MAX) < record_key(1, 3, 0));
        assert_eq!(decode_record_offset(&record_key(7, 3, 42)), Some(42));
    }

    #[test]
    fn record_values_round_trip() {
        let encoded = encode_record_value(-5, b"key", b"value");
        assert_eq!(
            decode_record_value(&encoded),
            Some((-5, b"key".to_vec(), b"value".to_vec()))
        );
        assert_eq!(decode_record_value(&encoded[..10]), None);
        let empty = encode_record_value(1, b"", b"");
        assert_eq!(
            decode_record_value(&empty),
            Some((1, Vec::new(), Vec::new()))
        );
    }
}
