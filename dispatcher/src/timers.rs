//! Retry timers: tasks waiting for their next attempt, held in the log.
//!
//! Each retry tier (`retry.<delay>`) is a topic whose records all wait the tier's delay from
//! when they were appended, so a tier's partitions are in due order and its loop only ever
//! waits for the head. A task is held until `min(not_before, appended + delay)`; then it
//! either goes back to `deliveries` (due: its lane makes the attempt) or hops to the tier of
//! the time it still has to wait. Any wait — a per-endpoint schedule, jitter, a
//! `Retry-After` — thus needs no tier of its own, and a task is late by at most the shortest
//! tier's delay.
//!
//! Timers make no attempts: every attempt at a target is made by the deliverer that owns the
//! target's partition, which keeps the endpoint's failure count in one place.

use std::sync::Arc;
use std::time::Duration;

use herald_log::{ConsumedRecord, LogPosition, OutgoingRecord, StartPosition};
use herald_schemas::{DeliveryTask, HeraldEvent};
use tokio_util::sync::CancellationToken;

use crate::offsets::OffsetTracker;
use crate::plan::Outgoing;
use crate::{append_until_done, now_ms, pause, DispatchError, Shared};

/// What to do with a task held in a tier of `tier_delay`, at `now_ms`.
#[derive(Debug, PartialEq)]
pub(crate) enum TimerStep {
    /// Hold it this much longer.
    Wait(Duration),
    /// Due: back to `deliveries`.
    Due,
    /// Its tier's delay is over but the task is not due: on to the tier of the rest.
    Hop(Duration),
}

/// The pure rule of a tier.
pub(crate) fn step(
    not_before_ms: i64,
    appended_ms: i64,
    tier_delay: Duration,
    now_ms: i64,
) -> TimerStep {
    let tier_end = appended_ms.saturating_add(tier_delay.as_millis() as i64);
    let release = not_before_ms.min(tier_end);
    if release > now_ms {
        return TimerStep::Wait(Duration::from_millis((release - now_ms) as u64));
    }
    if not_before_ms <= now_ms {
        TimerStep::Due
    } else {
        TimerStep::Hop(Duration::from_millis((not_before_ms - now_ms) as u64))
    }
}

/// One tier's loop: poll, hold each task until released, append it onwards, commit.
pub(crate) async fn run(
    shared: Arc<Shared>,
    group: String,
    topic: String,
    tier_delay: Duration,
    shutdown: CancellationToken,
) -> Result<(), DispatchError> {
    let mut consumer = shared
        .log
        .consumer(
            &group,
            std::slice::from_ref(&topic),
            StartPosition::Committed,
        )
        .await?;
    tracing::info!(group, topic, "retry timer started");
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            polled = consumer.poll(shared.config.batch_size, Duration::from_millis(500)) => polled,
        };
        let records = match polled {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(group, error = %err, "poll failed; retrying");
                if pause(&shutdown, Duration::from_secs(1)).await {
                    return Ok(());
                }
                continue;
            }
        };
        // A batch spans partitions: release in order of release time, not of partition, so
        // no partition's head waits behind another partition's tail. Commits then cover only
        // the done prefix of each partition (`OffsetTracker`), never a record still held.
        let mut batch = Releases::default();
        let mut held: Vec<Held> = records
            .iter()
            .map(|record| {
                batch.progress.begin(&record.position());
                let task = decode_task(record);
                let release = task.as_ref().map_or(i64::MIN, |task| {
                    let tier_end = record
                        .timestamp_ms
                        .saturating_add(tier_delay.as_millis() as i64);
                    task.not_before.min(tier_end)
                });
                (
                    release,
                    record.position(),
                    task.map(|task| (task, record.timestamp_ms)),
                )
            })
            .collect();
        held.sort_by_key(|(release, _, _)| *release);
        // Released tasks are appended before the loop waits for the next one, so a task is
        // never held back by a later one.
        for (_, position, task) in held {
            let Some((task, appended)) = task else {
                batch.done.push(position);
                continue;
            };
            let outgoing = loop {
                match step(task.not_before, appended, tier_delay, now_ms()) {
                    TimerStep::Wait(wait) => {
                        if !batch.flush(&shared, &mut consumer, &shutdown).await
                            || pause(&shutdown, wait).await
                        {
                            return Ok(());
                        }
                    }
                    TimerStep::Due => break Outgoing::Event(HeraldEvent::DeliveryTask(task)),
                    TimerStep::Hop(rest) => break Outgoing::Retry { task, delay: rest },
                }
            };
            batch.released.push(shared.to_record(outgoing));
            batch.done.push(position);
        }
        if !batch.flush(&shared, &mut consumer, &shutdown).await {
            return Ok(());
        }
    }
}

/// A record of a tier: its release time, its position, and its task with the time it was
/// appended to the tier (`None`: undecodable, released at once).
type Held = (i64, LogPosition, Option<(DeliveryTask, i64)>);

/// A batch's progress: what it read, what it released and has yet to append, and the records
/// those came from.
#[derive(Default)]
struct Releases {
    progress: OffsetTracker,
    released: Vec<OutgoingRecord>,
    done: Vec<LogPosition>,
}

impl Releases {
    /// Appends the released tasks, then commits what is done; false if shut down.
    async fn flush(
        &mut self,
        shared: &Shared,
        consumer: &mut Box<dyn herald_log::LogConsumer>,
        shutdown: &CancellationToken,
    ) -> bool {
        if !append_until_done(&shared.log, std::mem::take(&mut self.released), shutdown).await {
            return false;
        }
        for position in self.done.drain(..) {
            self.progress.finish(&position);
        }
        let positions = self.progress.take_committable();
        if !positions.is_empty() {
            if let Err(err) = consumer.commit(&positions).await {
                // Released tasks may be released again after a restart: at most a repeated
                // attempt.
                tracing::warn!(error = %err, "commit failed; some tasks may be released twice");
            }
        }
        true
    }
}

fn decode_task(record: &ConsumedRecord) -> Option<DeliveryTask> {
    match herald_schemas::decode(&record.value) {
        Ok(HeraldEvent::DeliveryTask(task)) => Some(task),
        Ok(other) => {
            tracing::warn!(record = other.name(), "unexpected record in a retry tier");
            None
        }
        Err(err) => {
            tracing::error!(topic = record.topic, partition = record.partition, offset = record.offset, error = %err, "skipping an undecodable record");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_task_is_held_for_its_tier_then_hops_or_is_due() {
        // Appended at 0 to the 1 min tier, due at 5 min: held 1 min, then hops with 4 min left.
        assert_eq!(step(300_000, 0, MIN, 0), TimerStep::Wait(MIN));
        assert_eq!(step(300_000, 0, MIN, 60_000), TimerStep::Hop(4 * MIN));
        // Due within the tier's delay: released at its own time.
        assert_eq!(
            step(30_000, 0, MIN, 10_000),
            TimerStep::Wait(Duration::from_secs(20))
        );
        assert_eq!(step(30_000, 0, MIN, 30_000), TimerStep::Due);
        // Read late (after a restart): due at once.
        assert_eq!(step(30_000, 0, MIN, 999_000), TimerStep::Due);
    }
}
