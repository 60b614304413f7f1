//! The log port: Herald's source of truth.
//!
//! The trait is shaped after Kafka's semantics so that the embedded implementation
//! ([`embedded::EmbeddedLog`], on local disk) and the Kafka one are interchangeable:
//!
//! * a log holds named **topics**, each split into a fixed number of **partitions**;
//! * a record goes to the partition chosen by hashing its **key**, so records with the same
//!   key keep their order;
//! * [`Log::append`] returns only once every record is **durable**;
//! * consumers join a **group**; the group's partitions are read by its members and a member
//!   **commits** the offsets of records only after it has processed them (at-least-once).
//!
//! This crate knows nothing of Herald's events: keys and values are bytes.
//!
//! With the `kafka` feature, [`kafka::KafkaLog`] implements the port on Apache Kafka.

pub mod embedded;
#[cfg(feature = "kafka")]
pub mod kafka;
mod partitioner;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub use partitioner::partition_for_key;

/// A topic and how it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Keep only the latest record per key (Kafka's `cleanup.policy=compact`), for topics
    /// that hold current state rather than history. Implementations without compaction keep
    /// every record, which is a superset.
    pub compacted: bool,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            compacted: false,
        }
    }

    /// The same topic, compacted.
    pub fn compacted(self) -> Self {
        Self {
            compacted: true,
            ..self
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub topic: String,
    /// Chooses the partition; records with equal keys stay in order.
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl OutgoingRecord {
    pub fn new(topic: impl Into<String>, key: impl Into<Vec<u8>>, value: Vec<u8>) -> Self {
        Self {
            topic: topic.into(),
            key: key.into(),
            value,
        }
    }
}

/// Where a record sits in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPosition {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// A record read by a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// When the log accepted the record, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl ConsumedRecord {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Where a new consumer starts reading each of its partitions.
#[derive(Debug, Clone, Default)]
pub enum StartPosition {
    /// The group's committed offsets; the beginning of a partition that has none.
    #[default]
    Committed,
    /// Explicit next offsets per `(topic, partition)`, for consumers that keep their own
    /// checkpoints (the projector stores them with its read models). A partition not listed
    /// starts at its beginning.
    Explicit(BTreeMap<(String, u32), u64>),
}

/// How far a group is behind the end of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The offset the next appended record will get.
    pub end_offset: u64,
    /// The group's next offset to read (0 if it never committed).
    pub committed: u64,
}

impl PartitionLag {
    pub fn lag(&self) -> u64 {
        self.end_offset.saturating_sub(self.committed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("unknown topic `{0}`: create it with `ensure_topics` first")]
    UnknownTopic(String),
    #[error("topic `{topic}` exists with {existing} partitions, not {requested}")]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    #[error("consumer group `{0}` already has an active member in this process")]
    GroupBusy(String),
    #[error("the log is shutting down")]
    Closed,
    #[error("embedded log storage failed")]
    Storage(#[from] fjall::Error),
    #[error("log backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Durable, partitioned, append-only topics.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Creates the topics that do not exist yet. Existing topics are left as they are.
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()>;

    /// The number of partitions of a topic.
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// Appends records and returns their positions, in input order, once all of them are
    /// durable. Records with the same topic and key keep their relative order. There is no
    /// atomicity across partitions: after an error some records may have been appended.
    async fn append(&self, records: Vec<OutgoingRecord>) -> Result<Vec<LogPosition>>;

    /// Joins `group` as a consumer of `topics`.
    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        start: StartPosition,
    ) -> Result<Box<dyn LogConsumer>>;

    /// The backlog of `group` on every partition of `topics`.
    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>>;
}

/// A member of a consumer group.
#[async_trait]
pub trait LogConsumer: Send {
    /// Returns up to `max_records` records, waiting up to `max_wait` for the first one.
    /// An empty batch means nothing arrived in time.
    async fn poll(&mut self, max_records: usize, max_wait: Duration)
        -> Result<Vec<ConsumedRecord>>;

    /// Marks every record up to and including each position as processed; a restarted
    /// member of the group resumes after them. Commit only after processing.
    async fn commit(&mut self, processed: &[LogPosition]) -> Result<()>;
}
