//! The projector role: folds the log into the store's read models.
//!
//! It reads `control`, `requests`, `deliveries` and `outcomes` from positions it keeps in the
//! store itself, and writes each batch's read-model changes together with the new positions
//! in one atomic store write. A restart resumes exactly after the last batch: nothing is
//! skipped and nothing counted twice. Records duplicated *in the log* (a dispatcher that
//! re-processed after a crash) are harmless too, because every fold is idempotent
//! (`Delivery::apply`, versioned upserts).
//!
//! **Invariant:** the projector never appends to the log; its only output is the store.

mod fold;

use std::sync::Arc;
use std::time::Duration;

use herald_log::{Log, LogPosition, StartPosition};
use herald_schemas::topics::Topics;
use herald_schemas::HeraldEvent;
use herald_store::{Checkpoint, Store};
use tokio_util::sync::CancellationToken;

pub use fold::Fold;

/// The projector's name for its checkpoint and its consumer group.
pub const PROJECTOR: &str = "herald-projector";
/// The name of a process-local projector (see [`Projector::local`]).
pub const LOCAL_PROJECTOR: &str = "herald-local-projector";

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("the log failed")]
    Log(#[from] herald_log::LogError),
    #[error("the store failed")]
    Store(#[from] herald_store::StoreError),
}

pub struct Projector {
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    topics: Topics,
    batch_size: usize,
    /// Names the checkpoint and the consumer group.
    name: &'static str,
    /// Whether positions are mirrored to the log's consumer group (for lag in health).
    mirror_positions: bool,
}

impl Projector {
    pub fn new(log: Arc<dyn Log>, store: Arc<dyn Store>, topics: Topics) -> Self {
        Self {
            log,
            store,
            topics,
            batch_size: 2048,
            name: PROJECTOR,
            mirror_positions: true,
        }
    }

    /// A projector that fills a store private to this process (an embedded store beside a
    /// shared log). Its positions are its own business, so it does not report them to the
    /// log, where they would mix with other processes' under one group.
    pub fn local(self) -> Self {
        Self {
            name: LOCAL_PROJECTOR,
            mirror_positions: false,
            ..self
        }
    }

    /// The topics whose records become read models.
    pub fn sources(topics: &Topics) -> Vec<String> {
        vec![
            topics.control.clone(),
            topics.requests.clone(),
            topics.deliveries.clone(),
            topics.outcomes.clone(),
            topics.dead_letter.clone(),
        ]
    }

    /// Projects until `shutdown`. Store failures are retried; the batch is re-read from the
    /// last checkpoint, so a retry cannot apply anything twice.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        loop {
            match self.project_until(&shutdown).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::error!(error = %err, "projection failed; resuming from the last checkpoint");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn project_until(&self, shutdown: &CancellationToken) -> Result<(), ProjectorError> {
        let start = self.store.checkpoint(self.name).await?;
        let mut consumer = self
            .log
            .consumer(
                self.name,
                &Self::sources(&self.topics),
                StartPosition::Explicit(start),
            )
            .await?;
        loop {
            let records = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                polled = consumer.poll(self.batch_size, Duration::from_millis(500)) => polled?,
            };
            if records.is_empty() {
                continue;
            }
            let mut checkpoint = Checkpoint::new();
            let mut fold = Fold::new(self.store.as_ref());
            for record in &records {
                checkpoint.insert((record.topic.clone(), record.partition), record.offset + 1);
                match herald_schemas::decode(&record.value) {
                    // A dead-lettered task is kept as written, for `POST .../retry` to re-send.
                    Ok(HeraldEvent::DeliveryTask(task))
                        if record.topic == self.topics.dead_letter =>
                    {
                        fold.dead_letter(&task, record.value.clone())
                    }
                    Ok(event) => fold.apply(&event).await?,
                    Err(err) => {
                        tracing::error!(topic = record.topic, offset = record.offset, error = %err, "skipping an undecodable record")
                    }
                }
            }
            self.store
                .apply(fold.into_writes(), Some((self.name, &checkpoint)))
                .await?;
            if !self.mirror_positions {
                continue;
            }
            // Committing to the log too is for visibility only (lag in health and metrics);
            // the checkpoint in the store is what the projector resumes from.
            let positions: Vec<LogPosition> = checkpoint
                .into_iter()
                .map(|((topic, partition), next)| LogPosition {
                    topic,
                    partition,
                    offset: next - 1,
                })
                .collect();
            if let Err(err) = consumer.commit(&positions).await {
                tracing::debug!(error = %err, "could not mirror the projector's position to the log");
            }
        }
    }
}
