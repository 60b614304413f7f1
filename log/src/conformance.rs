//! The conformance suite: the behaviour every [`Log`] implementation must show.
//!
//! Each check is a public async function that panics (like a failed assertion) when the
//! implementation misbehaves, so an implementation's test file can run them one per
//! `#[tokio::test]`; [`run_all`] runs them all on fresh logs from a factory, and
//! [`survives_reopen`] checks durability across closing and reopening for persistent
//! implementations.
//!
//! Every check uses topic and group names unique to the call (process id, clock and a
//! counter), so the suite can run against a shared, non-empty broker as well. No check sleeps
//! to wait for something: consumers poll with a deadline and checks fail when it passes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{
    partition_for_key, ConsumedRecord, Log, LogConsumer, LogPosition, OutgoingRecord,
    StartPosition, TopicSpec,
};

/// How long a check waits for records it expects before failing.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a check listens to make sure no further record shows up.
const QUIET_WAIT: Duration = Duration::from_millis(300);
/// The batch size checks poll with; small so that a backlog takes several polls.
const POLL_BATCH: usize = 64;

/// A name no other check, test run or process uses: `herald-conformance-<prefix>-<pid>-<clock>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "herald-conformance-{prefix}-{}-{clock}-{n}",
        std::process::id()
    )
}

/// Runs every check except [`survives_reopen`], each on a fresh log from `factory`.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    macro_rules! run_each {
        ($($check:ident),* $(,)?) => {$(
            $check(factory().await).await;
        )*};
    }
    crate::for_each_conformance_check!(run_each);
}

/// Calls `$callback!(check, check, ...)` with the name of every check of this suite: the one
/// list, so each implementation's test file generates a test per check from it and a new
/// check cannot be forgotten by any of them.
#[macro_export]
macro_rules! for_each_conformance_check {
    ($callback:ident) => {
        $callback!(
            ensure_topics_is_idempotent,
            append_then_consume,
            same_key_keeps_partition_and_order,
            positions_are_dense_and_match_consumed,
            group_resumes_after_commit,
            append_wakes_waiting_consumer,
            groups_are_independent,
            lag_tracks_commits,
            explicit_start_positions,
            empty_poll_times_out,
            concurrent_appends_land_once,
        );
    };
}

/// `ensure_topics` creates topics, can be repeated, and leaves an existing topic's partition
/// count alone (without failing) when asked for another one.
pub async fn ensure_topics_is_idempotent(log: Arc<dyn Log>) {
    let a = unique_name("ensure-a");
    let b = unique_name("ensure-b");
    let specs = [TopicSpec::new(&a, 3), TopicSpec::new(&b, 1)];
    log.ensure_topics(&specs)
        .await
        .expect("ensure_topics creates topics");
    assert_eq!(
        log.partitions(&a).expect("partitions of a created topic"),
        3
    );
    assert_eq!(
        log.partitions(&b).expect("partitions of a created topic"),
        1
    );

    log.ensure_topics(&specs)
        .await
        .expect("ensure_topics on existing topics succeeds");
    log.ensure_topics(&[TopicSpec::new(&a, 5)])
        .await
        .expect("ensure_topics with another partition count leaves the topic and succeeds");
    assert_eq!(
        log.partitions(&a).expect("partitions"),
        3,
        "an existing topic keeps its partitions"
    );
    assert!(
        log.partitions(&unique_name("never-created")).is_err(),
        "partitions of an unknown topic is an error"
    );
}

/// Records come back exactly once, with their keys, values and timestamps, in append order
/// within each partition.
pub async fn append_then_consume(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "consume", 4).await;
    let before_ms = now_ms();
    let records: Vec<OutgoingRecord> = (0..60)
        .map(|i| {
            OutgoingRecord::new(
                &topic,
                format!("key-{}", i % 9),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    // A single record, then bigger batches: both paths must keep the order.
    let mut positions = Vec::new();
    for chunk in [&records[..1], &records[1..30], &records[30..]] {
        positions.extend(append(&log, chunk.to_vec()).await);
    }
    let after_ms = now_ms();

    let mut expected: ByPartition = BTreeMap::new();
    for (record, position) in records.iter().zip(&positions) {
        assert_eq!(position.topic, topic, "append returns the record's topic");
        expected.entry(position.partition).or_default().push((
            position.offset,
            record.key.clone(),
            record.value.clone(),
        ));
    }

    let mut consumer = consumer(
        &log,
        &unique_name("consume"),
        &topic,
        StartPosition::Committed,
    )
    .await;
    let consumed = collect(consumer.as_mut(), records.len(), "append_then_consume").await;
    let mut actual: ByPartition = BTreeMap::new();
    for record in &consumed {
        assert_eq!(record.topic, topic, "a consumer sees only its topics");
        // Clocks of a remote broker may be a little off; a minute is plenty.
        assert!(
            record.timestamp_ms >= before_ms - 60_000 && record.timestamp_ms <= after_ms + 60_000,
            "timestamp {} is not the append time (between {before_ms} and {after_ms})",
            record.timestamp_ms
        );
        actual.entry(record.partition).or_default().push((
            record.offset,
            record.key.clone(),
            record.value.clone(),
        ));
    }
    assert_eq!(
        actual, expected,
        "each partition returns exactly its records, in append order"
    );
    assert_quiet(consumer.as_mut(), "append_then_consume").await;
}

/// Records with the same key go to the partition [`partition_for_key`] picks and keep their
/// order, even across separate appends interleaved with other keys.
pub async fn same_key_keeps_partition_and_order(log: Arc<dyn Log>) {
    let partitions = 8;
    let topic = create_topic(&log, "same-key", partitions).await;
    let expected_partition = partition_for_key(b"hot", partitions);
    let mut hot_positions = Vec::new();
    for i in 0..30 {
        let positions = append(
            &log,
            vec![
                OutgoingRecord::new(&topic, "hot", format!("hot-{i}").into_bytes()),
                OutgoingRecord::new(
                    &topic,
                    format!("other-{i}"),
                    format!("other-{i}").into_bytes(),
                ),
            ],
        )
        .await;
        hot_positions.push(positions[0].clone());
        let other_partition = partition_for_key(format!("other-{i}").as_bytes(), partitions);
        assert_eq!(
            positions[1].partition, other_partition,
            "partition is partition_for_key(key)"
        );
    }
    for pair in hot_positions.windows(2) {
        assert_eq!(
            pair[0].partition, expected_partition,
            "partition is partition_for_key(key)"
        );
        assert!(
            pair[0].offset < pair[1].offset,
            "same key keeps its order: {pair:?}"
        );
    }

    let mut consumer = consumer(
        &log,
        &unique_name("same-key"),
        &topic,
        StartPosition::Committed,
    )
    .await;
    let consumed = collect(consumer.as_mut(), 60, "same_key_keeps_partition_and_order").await;
    let hot: Vec<String> = consumed
        .iter()
        .filter(|record| record.key == b"hot")
        .inspect(|record| assert_eq!(record.partition, expected_partition))
        .map(|record| String::from_utf8_lossy(&record.value).into_owned())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("hot-{i}")).collect();
    assert_eq!(
        hot, expected,
        "records of one key are consumed in append order"
    );
}

/// `append` returns positions in input order; per partition, offsets of a new topic are
/// 0, 1, 2, … without gaps; the consumer sees each record at the position append returned.
pub async fn positions_are_dense_and_match_consumed(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "dense", 3).await;
    let mut appended: BTreeMap<LogPosition, Vec<u8>> = BTreeMap::new();
    for call in 0..5 {
        let records: Vec<OutgoingRecord> = (0..10)
            .map(|i| {
                OutgoingRecord::new(
                    &topic,
                    format!("k{}", (call * 7 + i) % 13),
                    format!("{call}-{i}").into_bytes(),
                )
            })
            .collect();
        let positions = append(&log, records.clone()).await;
        assert_eq!(positions.len(), records.len(), "one position per record");
        let mut last_in_call: HashMap<u32, u64> = HashMap::new();
        for (record, position) in records.into_iter().zip(positions) {
            if let Some(last) = last_in_call.insert(position.partition, position.offset) {
                assert!(
                    last < position.offset,
                    "positions follow input order within a partition"
                );
            }
            assert!(
                appended.insert(position, record.value).is_none(),
                "a position is returned twice"
            );
        }
    }
    assert_dense(appended.keys(), "append");

    let mut consumer = consumer(
        &log,
        &unique_name("dense"),
        &topic,
        StartPosition::Committed,
    )
    .await;
    let consumed = collect(
        consumer.as_mut(),
        appended.len(),
        "positions_are_dense_and_match_consumed",
    )
    .await;
    let seen: BTreeMap<LogPosition, Vec<u8>> = consumed
        .into_iter()
        .map(|record| (record.position(), record.value))
        .collect();
    assert_eq!(
        seen, appended,
        "consumers see each record at the position append returned"
    );
}

/// A new member of a group resumes right after the group's committed offsets: it sees what
/// was not committed, and nothing that was.
pub async fn group_resumes_after_commit(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "resume", 2).await;
    let group = unique_name("resume");
    let records: Vec<OutgoingRecord> = (0..40)
        .map(|i| {
            OutgoingRecord::new(
                &topic,
                format!("k{}", i % 10),
                format!("first-{i}").into_bytes(),
            )
        })
        .collect();
    let all: BTreeSet<LogPosition> = append(&log, records).await.into_iter().collect();

    let mut first = consumer(&log, &group, &topic, StartPosition::Committed).await;
    let consumed = collect(
        first.as_mut(),
        40,
        "group_resumes_after_commit: first member",
    )
    .await;
    // Delivery order keeps the order within each partition, so the first half delivered is a
    // prefix of each partition: what a member that processed in order would commit.
    let processed: Vec<LogPosition> = consumed[..20]
        .iter()
        .map(ConsumedRecord::position)
        .collect();
    first.commit(&processed).await.expect("commit");
    drop(first);

    let mut second = consumer(&log, &group, &topic, StartPosition::Committed).await;
    let rest = collect(
        second.as_mut(),
        20,
        "group_resumes_after_commit: second member",
    )
    .await;
    let rest: BTreeSet<LogPosition> = rest.iter().map(ConsumedRecord::position).collect();
    let expected: BTreeSet<LogPosition> = all
        .iter()
        .filter(|position| !processed.contains(position))
        .cloned()
        .collect();
    assert_eq!(
        rest, expected,
        "the next member gets exactly what was not committed"
    );
    // Committing only the last position of each partition covers everything before it.
    let last_per_partition: BTreeMap<u32, LogPosition> = rest
        .iter()
        .map(|position| (position.partition, position.clone()))
        .collect();
    let last: Vec<LogPosition> = last_per_partition.into_values().collect();
    second.commit(&last).await.expect("commit");
    drop(second);

    let mut third = consumer(&log, &group, &topic, StartPosition::Committed).await;
    assert_quiet(
        third.as_mut(),
        "group_resumes_after_commit: everything committed",
    )
    .await;
    let new: Vec<OutgoingRecord> = (0..5)
        .map(|i| OutgoingRecord::new(&topic, format!("k{i}"), format!("second-{i}").into_bytes()))
        .collect();
    let new_positions: BTreeSet<LogPosition> = append(&log, new).await.into_iter().collect();
    let fresh = collect(
        third.as_mut(),
        5,
        "group_resumes_after_commit: third member",
    )
    .await;
    let fresh: BTreeSet<LogPosition> = fresh.iter().map(ConsumedRecord::position).collect();
    assert_eq!(
        fresh, new_positions,
        "after committing everything only new records arrive"
    );
}

/// A consumer waiting in `poll` gets a record appended meanwhile right away, not at the end
/// of its `max_wait`.
pub async fn append_wakes_waiting_consumer(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "wake", 2).await;
    let mut consumer = consumer(&log, &unique_name("wake"), &topic, StartPosition::Committed).await;
    // Warm up first: some implementations join their group on the first poll.
    append(
        &log,
        vec![OutgoingRecord::new(&topic, "warm", b"warm".to_vec())],
    )
    .await;
    collect(
        consumer.as_mut(),
        1,
        "append_wakes_waiting_consumer: warm-up",
    )
    .await;

    let max_wait = Duration::from_secs(10);
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let batch = consumer.poll(10, max_wait).await.expect("poll");
        (batch, started.elapsed())
    });
    // Not waiting for a result: this only makes sure the poll is parked before the append.
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(
        &log,
        vec![OutgoingRecord::new(&topic, "late", b"late".to_vec())],
    )
    .await;

    let (batch, elapsed) = tokio::time::timeout(max_wait + COLLECT_TIMEOUT, waiting)
        .await
        .expect("poll returns within its max_wait")
        .expect("poll task");
    let values: Vec<&[u8]> = batch.iter().map(|record| record.value.as_slice()).collect();
    assert_eq!(
        values,
        [b"late".as_slice()],
        "the waiting poll returns the new record"
    );
    assert!(
        elapsed < max_wait / 2,
        "poll took {elapsed:?} of its {max_wait:?}: it was not woken by the append"
    );
}

/// Two groups each get every record; one group's commits do not move the other.
pub async fn groups_are_independent(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "groups", 3).await;
    let records: Vec<OutgoingRecord> = (0..30)
        .map(|i| OutgoingRecord::new(&topic, format!("k{i}"), format!("v{i}").into_bytes()))
        .collect();
    let all: BTreeSet<LogPosition> = append(&log, records).await.into_iter().collect();

    let (group_a, group_b) = (unique_name("group-a"), unique_name("group-b"));
    let mut a = consumer(&log, &group_a, &topic, StartPosition::Committed).await;
    let mut b = consumer(&log, &group_b, &topic, StartPosition::Committed).await;
    let seen_a = collect(a.as_mut(), 30, "groups_are_independent: group a").await;
    let positions_a: Vec<LogPosition> = seen_a.iter().map(ConsumedRecord::position).collect();
    a.commit(&positions_a).await.expect("commit");
    let seen_b = collect(b.as_mut(), 30, "groups_are_independent: group b").await;
    let positions_b: BTreeSet<LogPosition> = seen_b.iter().map(ConsumedRecord::position).collect();
    assert_eq!(
        positions_a.into_iter().collect::<BTreeSet<_>>(),
        all,
        "group a sees every record"
    );
    assert_eq!(positions_b, all, "group b sees every record");

    let lag_b = log
        .lag(&group_b, std::slice::from_ref(&topic))
        .await
        .expect("lag");
    let backlog: u64 = lag_b.iter().map(|lag| lag.lag()).sum();
    assert_eq!(
        backlog, 30,
        "group a's commits do not count for group b: {lag_b:?}"
    );
}

/// `lag` lists every partition with its end offset and the group's committed offset, and
/// reaches zero once everything is committed.
pub async fn lag_tracks_commits(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "lag", 3).await;
    let group = unique_name("lag");
    let topics = std::slice::from_ref(&topic);
    let lag = sorted_lag(&log, &group, topics).await;
    assert_eq!(lag.len(), 3, "one entry per partition: {lag:?}");
    assert!(
        lag.iter().all(|l| l.1 == 0 && l.2 == 0),
        "an empty topic has no lag: {lag:?}"
    );

    let records: Vec<OutgoingRecord> = (0..30)
        .map(|i| OutgoingRecord::new(&topic, format!("k{i}"), format!("v{i}").into_bytes()))
        .collect();
    let positions = append(&log, records).await;
    let mut ends = [0_u64; 3];
    for position in &positions {
        ends[position.partition as usize] += 1;
    }
    let lag = sorted_lag(&log, &group, topics).await;
    let expected: Vec<(u32, u64, u64)> = (0..3).map(|p| (p, ends[p as usize], 0)).collect();
    assert_eq!(
        lag, expected,
        "(partition, end offset, committed) before any commit"
    );

    let mut consumer = consumer(&log, &group, &topic, StartPosition::Committed).await;
    let consumed = collect(consumer.as_mut(), 30, "lag_tracks_commits").await;
    let processed: Vec<LogPosition> = consumed[..15]
        .iter()
        .map(ConsumedRecord::position)
        .collect();
    consumer.commit(&processed).await.expect("commit");
    let mut committed = [0_u64; 3];
    for position in &processed {
        let next = &mut committed[position.partition as usize];
        *next = (*next).max(position.offset + 1);
    }
    let lag = sorted_lag(&log, &group, topics).await;
    let expected: Vec<(u32, u64, u64)> = (0..3)
        .map(|p| (p, ends[p as usize], committed[p as usize]))
        .collect();
    assert_eq!(
        lag, expected,
        "(partition, end offset, committed) after committing half"
    );
    let entries = log.lag(&group, topics).await.expect("lag");
    let total: u64 = entries.iter().map(|entry| entry.lag()).sum();
    assert_eq!(total, 15, "lag is end - committed: {entries:?}");

    let everything: Vec<LogPosition> = consumed.iter().map(ConsumedRecord::position).collect();
    consumer.commit(&everything).await.expect("commit");
    let entries = log.lag(&group, topics).await.expect("lag");
    assert!(
        entries.iter().all(|entry| entry.lag() == 0),
        "no lag after committing everything: {entries:?}"
    );
}

/// `StartPosition::Explicit` starts each listed partition at the given offset, the others at
/// their beginning, regardless of what the group committed.
pub async fn explicit_start_positions(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "explicit", 2).await;
    let group = unique_name("explicit");
    let records: Vec<OutgoingRecord> = (0..20)
        .map(|i| OutgoingRecord::new(&topic, format!("key-{i}"), format!("v{i}").into_bytes()))
        .collect();
    let positions = append(&log, records).await;

    // The group first commits everything, which an explicit start must ignore.
    let mut first = consumer(&log, &group, &topic, StartPosition::Committed).await;
    let consumed = collect(
        first.as_mut(),
        20,
        "explicit_start_positions: committing member",
    )
    .await;
    let everything: Vec<LogPosition> = consumed.iter().map(ConsumedRecord::position).collect();
    first.commit(&everything).await.expect("commit");
    drop(first);

    let mut counts = [0_u64; 2];
    for position in &positions {
        counts[position.partition as usize] += 1;
    }
    // Start the fuller partition half-way (it has at least 10 records); leave the other out.
    let busy = if counts[0] >= counts[1] { 0 } else { 1 };
    let start = counts[busy as usize] / 2;
    let explicit = BTreeMap::from([((topic.clone(), busy), start)]);
    let expected: BTreeSet<LogPosition> = positions
        .iter()
        .filter(|position| position.partition != busy || position.offset >= start)
        .cloned()
        .collect();

    let mut second = consumer(&log, &group, &topic, StartPosition::Explicit(explicit)).await;
    let consumed = collect(second.as_mut(), expected.len(), "explicit_start_positions").await;
    let seen: BTreeSet<LogPosition> = consumed.iter().map(ConsumedRecord::position).collect();
    assert_eq!(
        seen, expected,
        "partition {busy} starts at {start}, the other at 0"
    );
    assert_quiet(second.as_mut(), "explicit_start_positions").await;
}

/// A poll with nothing to read returns an empty batch once `max_wait` has passed.
pub async fn empty_poll_times_out(log: Arc<dyn Log>) {
    let topic = create_topic(&log, "empty", 1).await;
    let mut consumer = consumer(
        &log,
        &unique_name("empty"),
        &topic,
        StartPosition::Committed,
    )
    .await;
    let max_wait = Duration::from_millis(500);
    for _ in 0..2 {
        let started = Instant::now();
        let batch = tokio::time::timeout(
            max_wait + Duration::from_secs(5),
            consumer.poll(10, max_wait),
        )
        .await
        .expect("an empty poll returns after its max_wait")
        .expect("poll");
        let elapsed = started.elapsed();
        assert!(batch.is_empty(), "nothing was appended: {batch:?}");
        assert!(
            elapsed < max_wait + Duration::from_secs(2),
            "an empty poll took {elapsed:?}"
        );
    }
}

/// 50 tasks appending 40 records each, one at a time, concurrently: every record lands exactly
/// once, offsets stay dense, and each task's records keep their order.
pub async fn concurrent_appends_land_once(log: Arc<dyn Log>) {
    const TASKS: usize = 50;
    const PER_TASK: usize = 40;
    let topic = create_topic(&log, "concurrent", 8).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (log, topic) = (log.clone(), topic.clone());
        tasks.spawn(async move {
            let mut positions = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let record = OutgoingRecord::new(
                    &topic,
                    format!("task-{task}"),
                    format!("{task}/{i}").into_bytes(),
                );
                let position = log
                    .append(vec![record])
                    .await
                    .expect("append")
                    .pop()
                    .expect("one position");
                positions.push((position, format!("{task}/{i}").into_bytes()));
            }
            positions
        });
    }
    let mut appended: BTreeMap<LogPosition, Vec<u8>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + COLLECT_TIMEOUT * 2;
    while let Some(result) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .expect("concurrent appends finish in time")
    {
        let positions = result.expect("append task");
        for pair in positions.windows(2) {
            assert_eq!(
                pair[0].0.partition, pair[1].0.partition,
                "one key, one partition"
            );
            assert!(
                pair[0].0.offset < pair[1].0.offset,
                "one key keeps its order: {pair:?}"
            );
        }
        for (position, value) in positions {
            assert!(
                appended.insert(position, value).is_none(),
                "two appends got the same position"
            );
        }
    }
    assert_eq!(appended.len(), TASKS * PER_TASK);
    assert_dense(appended.keys(), "concurrent appends");

    let mut consumer = consumer(
        &log,
        &unique_name("concurrent"),
        &topic,
        StartPosition::Committed,
    )
    .await;
    let consumed = collect(
        consumer.as_mut(),
        TASKS * PER_TASK,
        "concurrent_appends_land_once",
    )
    .await;
    let seen: BTreeMap<LogPosition, Vec<u8>> = consumed
        .into_iter()
        .map(|record| (record.position(), record.value))
        .collect();
    assert_eq!(seen.len(), TASKS * PER_TASK, "a record was delivered twice");
    assert_eq!(
        seen, appended,
        "consumers see each record at the position append returned"
    );
    assert_quiet(consumer.as_mut(), "concurrent_appends_land_once").await;
}

/// Appended records, topics and committed offsets survive closing and reopening the log.
/// `open` must open the same storage every time (for the embedded log: the same directory);
/// the check drops every handle of one instance before opening the next.
pub async fn survives_reopen<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    let topic_name = unique_name("reopen");
    let group = unique_name("reopen");
    let records: Vec<OutgoingRecord> = (0..30)
        .map(|i| {
            OutgoingRecord::new(
                &topic_name,
                format!("k{i}"),
                format!("before-{i}").into_bytes(),
            )
        })
        .collect();
    let topics = std::slice::from_ref(&topic_name);

    let (appended, processed, lag_before) = {
        let log = open().await;
        log.ensure_topics(&[TopicSpec::new(&topic_name, 3)])
            .await
            .expect("ensure_topics");
        let positions = append(&log, records.clone()).await;
        let appended: BTreeMap<LogPosition, Vec<u8>> = positions
            .into_iter()
            .zip(records.into_iter().map(|record| record.value))
            .collect();
        let mut consumer = consumer(&log, &group, &topic_name, StartPosition::Committed).await;
        let consumed = collect(consumer.as_mut(), 30, "survives_reopen: before").await;
        let processed: BTreeSet<LogPosition> = consumed[..10]
            .iter()
            .map(ConsumedRecord::position)
            .collect();
        consumer
            .commit(&processed.iter().cloned().collect::<Vec<_>>())
            .await
            .expect("commit");
        drop(consumer);
        let lag_before = sorted_lag(&log, &group, topics).await;
        (appended, processed, lag_before)
    };

    let log = open().await;
    assert_eq!(log.partitions(&topic_name).expect("the topic survives"), 3);
    assert_eq!(
        sorted_lag(&log, &group, topics).await,
        lag_before,
        "end and committed offsets survive"
    );

    let mut resumed = consumer(&log, &group, &topic_name, StartPosition::Committed).await;
    let rest = collect(resumed.as_mut(), 20, "survives_reopen: resumed member").await;
    let rest: BTreeSet<LogPosition> = rest.iter().map(ConsumedRecord::position).collect();
    let expected: BTreeSet<LogPosition> = appended
        .keys()
        .filter(|position| !processed.contains(position))
        .cloned()
        .collect();
    assert_eq!(
        rest, expected,
        "the group resumes after its committed offsets"
    );
    drop(resumed);

    let mut everything = consumer(
        &log,
        &unique_name("reopen-all"),
        &topic_name,
        StartPosition::Committed,
    )
    .await;
    let all = collect(everything.as_mut(), 30, "survives_reopen: new group").await;
    let seen: BTreeMap<LogPosition, Vec<u8>> = all
        .into_iter()
        .map(|record| (record.position(), record.value))
        .collect();
    assert_eq!(seen, appended, "every record survives with its value");

    // Offsets continue where they stopped.
    let more: Vec<OutgoingRecord> = (0..9)
        .map(|i| {
            OutgoingRecord::new(
                &topic_name,
                format!("k{i}"),
                format!("after-{i}").into_bytes(),
            )
        })
        .collect();
    let new_positions = append(&log, more).await;
    assert_dense(
        appended.keys().chain(&new_positions),
        "appends after reopening",
    );
    collect(
        everything.as_mut(),
        9,
        "survives_reopen: records appended after reopening",
    )
    .await;
}

// ---- helpers ----

/// `(offset, key, value)` of records, per partition.
type ByPartition = BTreeMap<u32, Vec<(u64, Vec<u8>, Vec<u8>)>>;

async fn create_topic(log: &Arc<dyn Log>, prefix: &str, partitions: u32) -> String {
    let topic = unique_name(prefix);
    log.ensure_topics(&[TopicSpec::new(&topic, partitions)])
        .await
        .expect("ensure_topics");
    topic
}

async fn append(log: &Arc<dyn Log>, records: Vec<OutgoingRecord>) -> Vec<LogPosition> {
    let count = records.len();
    let positions = log.append(records).await.expect("append");
    assert_eq!(
        positions.len(),
        count,
        "append returns one position per record"
    );
    positions
}

async fn consumer(
    log: &Arc<dyn Log>,
    group: &str,
    topic: &str,
    start: StartPosition,
) -> Box<dyn LogConsumer> {
    log.consumer(group, &[topic.to_owned()], start)
        .await
        .expect("consumer")
}

/// Polls until exactly `expected` records arrived; fails after [`COLLECT_TIMEOUT`] or when
/// more arrive.
async fn collect(
    consumer: &mut dyn LogConsumer,
    expected: usize,
    what: &str,
) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + COLLECT_TIMEOUT;
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: only {} of {expected} records arrived within {COLLECT_TIMEOUT:?}",
            records.len()
        );
        let batch = consumer
            .poll(POLL_BATCH, left.min(Duration::from_secs(1)))
            .await;
        let batch = batch.unwrap_or_else(|e| panic!("{what}: poll failed: {e}"));
        assert!(
            batch.len() <= POLL_BATCH,
            "{what}: poll returned more than max_records"
        );
        records.extend(batch);
    }
    assert_eq!(
        records.len(),
        expected,
        "{what}: more records than appended: {:?}",
        &records[expected..]
    );
    records
}

/// Fails if a record arrives within [`QUIET_WAIT`].
async fn assert_quiet(consumer: &mut dyn LogConsumer, what: &str) {
    let batch = consumer.poll(POLL_BATCH, QUIET_WAIT).await;
    let batch = batch.unwrap_or_else(|e| panic!("{what}: poll failed: {e}"));
    assert!(batch.is_empty(), "{what}: unexpected records: {batch:?}");
}

/// Fails unless the offsets of each partition are exactly 0..n.
fn assert_dense<'a>(positions: impl IntoIterator<Item = &'a LogPosition>, what: &str) {
    let mut offsets: BTreeMap<(&str, u32), Vec<u64>> = BTreeMap::new();
    for position in positions {
        offsets
            .entry((position.topic.as_str(), position.partition))
            .or_default()
            .push(position.offset);
    }
    for ((topic, partition), mut offsets) in offsets {
        offsets.sort_unstable();
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, dense,
            "{what}: offsets of {topic}/{partition} are not dense from 0"
        );
    }
}

/// `(partition, end offset, committed)` per partition, sorted.
async fn sorted_lag(log: &Arc<dyn Log>, group: &str, topics: &[String]) -> Vec<(u32, u64, u64)> {
    let mut lag: Vec<(u32, u64, u64)> = log
        .lag(group, topics)
        .await
        .expect("lag")
        .into_iter()
        .map(|entry| (entry.partition, entry.end_offset, entry.committed))
        .collect();
    lag.sort_unstable();
    lag
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
