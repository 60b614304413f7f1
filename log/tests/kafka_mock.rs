//! `KafkaLog` against librdkafka's in-process mock cluster: the conformance suite, one test
//! per check on a fresh cluster, and what only Kafka can get wrong: retried produce errors,
//! a broker going down, and partitions moving between the members of a group.
//!
//! Needs no broker: the mock cluster listens on loopback ports of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use herald_log::conformance::{self, unique_name};
use herald_log::kafka::{KafkaLog, KafkaOptions};
use herald_log::{
    partition_for_key, ConsumedRecord, Log, LogConsumer, LogError, LogPosition, OutgoingRecord,
    PartitionLag, Result, StartPosition, TopicSpec,
};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::watch;
use tokio::time::Instant;

/// Every test, whatever it waits for, ends within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a test waits for progress it expects before failing.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);
const BROKERS: u32 = 3;
const DEFAULT_PARTITIONS: u32 = 4;

// ---- the mock cluster ----

enum Command {
    CreateTopic { name: String, partitions: i32 },
    ProduceErrors(Vec<RDKafkaRespErr>),
    BrokerDown(i32),
    BrokerUp(i32),
}

type Reply = mpsc::Sender<Result<(), KafkaError>>;

/// A mock cluster living on a thread of its own: `MockCluster` borrows the client that owns
/// it and is neither `Send` nor `'static`, while a `Log` must be both. Handles send commands
/// to the thread; the cluster goes down when the last handle is dropped.
struct Mock {
    bootstrap: String,
    commands: Option<mpsc::Sender<(Command, Reply)>>,
    thread: Option<JoinHandle<()>>,
}

impl Mock {
    fn start() -> Arc<Mock> {
        let (commands, received) = mpsc::channel::<(Command, Reply)>();
        let (ready, bootstrap) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mock-kafka".into())
            .spawn(move || {
                // `test.mock.num.brokers` makes this client create (and own) a mock cluster.
                let owner: BaseProducer = ClientConfig::new()
                    .set("test.mock.num.brokers", BROKERS.to_string())
                    .create()
                    .expect("create the mock cluster");
                let cluster = owner
                    .client()
                    .mock_cluster()
                    .expect("the client owns a mock cluster");
                // A group's first join otherwise waits 3 s (the broker's
                // `group.initial.rebalance.delay.ms`), and rdkafka has no safe wrapper for it.
                // SAFETY: the pointer is `owner`'s live mock cluster, and the call only sets a
                // default under the cluster's own lock.
                unsafe {
                    let native = rdkafka::bindings::rd_kafka_handle_mock_cluster(
                        owner.client().native_ptr(),
                    );
                    assert!(!native.is_null(), "no mock cluster");
                    rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(native, 0);
                }
                ready
                    .send(cluster.bootstrap_servers())
                    .expect("the starter waits");
                for (command, reply) in received {
                    let result = match command {
                        CreateTopic { name, partitions } => {
                            match cluster.create_topic(&name, partitions, BROKERS as i32) {
                                Err(KafkaError::MockCluster(
                                    RDKafkaErrorCode::TopicAlreadyExists,
                                )) => Ok(()),
                                // The mock picks leaders at random: spread them evenly
                                // instead, so that every broker leads some partitions.
                                Ok(()) => (0..partitions).try_for_each(|partition| {
                                    let leader = partition % BROKERS as i32 + 1;
                                    cluster.partition_leader(&name, partition, Some(leader))
                                }),
                                result => result,
                            }
                        }
                        ProduceErrors(errors) => {
                            cluster.request_errors(RDKafkaApiKey::Produce, &errors);
                            Ok(())
                        }
                        BrokerDown(broker) => cluster.broker_down(broker),
                        BrokerUp(broker) => cluster.broker_up(broker),
                    };
                    let _ = reply.send(result);
                }
            })
            .expect("start the mock cluster thread");
        let bootstrap = bootstrap
            .recv_timeout(PROGRESS_TIMEOUT)
            .expect("the mock cluster starts");
        Arc::new(Mock {
            bootstrap,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    fn call(&self, command: Command) {
        let (reply, result) = mpsc::channel();
        self.commands
            .as_ref()
            .expect("running")
            .send((command, reply))
            .expect("the mock cluster thread runs");
        result
            .recv_timeout(PROGRESS_TIMEOUT)
            .expect("the mock cluster answers")
            .expect("mock cluster operation");
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        self.call(CreateTopic {
            name: name.to_owned(),
            partitions: partitions as i32,
        });
    }

    /// A `KafkaLog` on this cluster, with librdkafka's timeouts and back-offs made small.
    fn kafka(&self, operation_timeout: Duration, extra: &[(&str, &str)]) -> KafkaLog {
        let mut options = KafkaOptions::new(&self.bootstrap);
        options.client_id = "herald-mock-test".to_owned();
        options.default_partitions = DEFAULT_PARTITIONS;
        options.operation_timeout = operation_timeout;
        options.overrides = [
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "200"),
            ("fetch.wait.max.ms", "50"),
            ("reconnect.backoff.ms", "20"),
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.ms", "20"),
            ("retry.backoff.max.ms", "200"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ]
        .iter()
        .chain(extra)
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        KafkaLog::connect(options).expect("connect to the mock cluster")
    }

    fn log(self: &Arc<Self>) -> Arc<dyn Log> {
        self.log_with(Duration::from_secs(10), &[])
    }

    fn log_with(
        self: &Arc<Self>,
        operation_timeout: Duration,
        extra: &[(&str, &str)],
    ) -> Arc<dyn Log> {
        Arc::new(MockLog {
            kafka: self.kafka(operation_timeout, extra),
            mock: self.clone(),
        })
    }
}

use Command::*;

impl Drop for Mock {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `KafkaLog` on the mock cluster, which has no admin API for creating topics: topics are
/// created through the mock's own API first, so `ensure_topics` finds them existing (the path
/// it takes for topics another process created).
struct MockLog {
    kafka: KafkaLog,
    mock: Arc<Mock>,
}

#[async_trait]
impl Log for MockLog {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        for spec in topics {
            let partitions = match spec.partitions {
                0 => DEFAULT_PARTITIONS,
                partitions => partitions,
            };
            self.mock.create_topic(&spec.name, partitions);
        }
        self.kafka.ensure_topics(topics).await
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        self.kafka.partitions(topic)
    }

    async fn append(&self, records: Vec<OutgoingRecord>) -> Result<Vec<LogPosition>> {
        self.kafka.append(records).await
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
        start: StartPosition,
    ) -> Result<Box<dyn LogConsumer>> {
        self.kafka.consumer(group, topics, start).await
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<Vec<PartitionLag>> {
        self.kafka.lag(group, topics).await
    }
}

async fn bounded<F: Future>(what: &str, test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TEST_TIMEOUT:?}"))
}

// ---- the conformance suite ----

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let mock = Mock::start();
            bounded(stringify!($check), conformance::$check(mock.log())).await;
        }
    )*};
}

herald_log::for_each_conformance_check!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_land_once_multi_thread() {
    let mock = Mock::start();
    bounded(
        "concurrent_appends_land_once",
        conformance::concurrent_appends_land_once(mock.log()),
    )
    .await;
}

// ---- Kafka-specific behaviour ----

#[tokio::test]
async fn unknown_topics_are_rejected() {
    let mock = Mock::start();
    let log = mock.log();
    bounded("unknown_topics_are_rejected", async {
        let unknown = unique_name("unknown");
        let appended = log
            .append(vec![OutgoingRecord::new(&unknown, "k", b"v".to_vec())])
            .await;
        assert!(
            matches!(&appended, Err(LogError::UnknownTopic(topic)) if *topic == unknown),
            "{appended:?}"
        );
        let topics = [unknown.clone()];
        let consumer = log.consumer("g", &topics, StartPosition::Committed).await;
        assert!(matches!(consumer, Err(LogError::UnknownTopic(_))));
        assert!(matches!(
            log.lag("g", &topics).await,
            Err(LogError::UnknownTopic(_))
        ));
        assert!(matches!(
            log.partitions(&unknown),
            Err(LogError::UnknownTopic(_))
        ));

        // A batch with one unknown topic appends nothing at all.
        let known = unique_name("known");
        log.ensure_topics(&[TopicSpec::new(&known, 1)])
            .await
            .unwrap();
        let mixed = vec![
            OutgoingRecord::new(&known, "k", b"v".to_vec()),
            OutgoingRecord::new(&unknown, "k", b"v".to_vec()),
        ];
        assert!(log.append(mixed).await.is_err());
        let lag = log.lag("g", &[known]).await.unwrap();
        assert_eq!(lag[0].end_offset, 0);
    })
    .await;
}

#[tokio::test]
async fn commits_never_move_backwards() {
    let mock = Mock::start();
    let log = mock.log();
    bounded("commits_never_move_backwards", async {
        let topic = unique_name("backwards");
        log.ensure_topics(&[TopicSpec::new(&topic, 1)])
            .await
            .unwrap();
        let records = (0..20)
            .map(|i| OutgoingRecord::new(&topic, "k", format!("{i}").into_bytes()))
            .collect();
        log.append(records).await.unwrap();
        let group = unique_name("backwards");
        let topics = [topic.clone()];
        let mut consumer = log
            .consumer(&group, &topics, StartPosition::Committed)
            .await
            .unwrap();
        collect(consumer.as_mut(), 20).await;
        let at = |offset| LogPosition {
            topic: topic.clone(),
            partition: 0,
            offset,
        };
        consumer.commit(&[at(9)]).await.unwrap();
        consumer.commit(&[at(4)]).await.unwrap();
        consumer.commit(&[at(2), at(6)]).await.unwrap();
        let lag = log.lag(&group, &topics).await.unwrap();
        assert_eq!((lag[0].end_offset, lag[0].committed), (20, 10));
    })
    .await;
}

/// A consumer with explicit start positions reads without joining the group's balancing,
/// yet its commits go to the group, so that its lag shows.
#[tokio::test]
async fn explicit_consumer_commits_show_in_lag() {
    let mock = Mock::start();
    let log = mock.log();
    bounded("explicit_consumer_commits_show_in_lag", async {
        let topic = unique_name("explicit-lag");
        log.ensure_topics(&[TopicSpec::new(&topic, 2)])
            .await
            .unwrap();
        let records = (0..10)
            .map(|i| OutgoingRecord::new(&topic, format!("k{i}"), b"v".to_vec()))
            .collect();
        let positions = log.append(records).await.unwrap();
        let group = unique_name("explicit-lag");
        let topics = [topic.clone()];
        let start = BTreeMap::from([((topic.clone(), positions[0].partition), 1)]);
        let mut consumer = log
            .consumer(&group, &topics, StartPosition::Explicit(start))
            .await
            .unwrap();
        let consumed = collect(consumer.as_mut(), 9).await;
        let processed: Vec<LogPosition> = consumed.iter().map(ConsumedRecord::position).collect();
        consumer.commit(&processed).await.unwrap();
        let lag = log.lag(&group, &topics).await.unwrap();
        assert!(
            lag.iter()
                .all(|entry| entry.lag() == 0 && entry.end_offset > 0),
            "{lag:?}"
        );
    })
    .await;
}

/// Retriable produce errors (the leader lacking in-sync replicas, a request timing out) are
/// retried by the idempotent producer: every record lands exactly once, in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_are_retried_without_loss_or_duplicates() {
    const WRITERS: usize = 6;
    const APPENDS: usize = 60;
    let mock = Mock::start();
    // One request in flight per connection. The mock checks sequence numbers of transactional
    // producers only: with several in flight it accepts a request queued behind a failed one,
    // where a real broker answers OUT_OF_ORDER_SEQUENCE_NUMBER. librdkafka, seeing the later
    // request succeed, rightly concludes (for a real broker) that the earlier one was written
    // too and acknowledges its records without offsets, which the mock never wrote.
    let log = mock.log_with(
        Duration::from_secs(10),
        &[("max.in.flight.requests.per.connection", "1")],
    );
    bounded("produce_errors_are_retried", async {
        let topic = unique_name("produce-errors");
        log.ensure_topics(&[TopicSpec::new(&topic, 4)])
            .await
            .unwrap();
        let (progress, mut acks) = watch::channel(0_usize);
        let progress = Arc::new(progress);
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let (log, topic, progress) = (log.clone(), topic.clone(), progress.clone());
            writers.spawn(async move {
                let mut appended = Vec::new();
                for i in 0..APPENDS {
                    // Batches of 1–3 records, so that errors hit batches as well.
                    let batch: Vec<OutgoingRecord> = (0..1 + i % 3)
                        .map(|j| {
                            OutgoingRecord::new(
                                &topic,
                                format!("key-{writer}"),
                                format!("{writer}/{i}/{j}").into_bytes(),
                            )
                        })
                        .collect();
                    let values: Vec<Vec<u8>> = batch.iter().map(|r| r.value.clone()).collect();
                    let positions = log
                        .append(batch)
                        .await
                        .expect("retriable errors do not fail an append");
                    appended.extend(positions.into_iter().zip(values));
                    progress.send_modify(|acks| *acks += 1);
                }
                appended
            });
        }

        // Errors go onto the cluster's stack for produce requests: each fails the next
        // request, whichever broker gets it.
        let errors = [
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ];
        for round in 1..=5 {
            wait_for(
                &mut acks,
                round * WRITERS * APPENDS / 8,
                "appends before errors",
            )
            .await;
            mock.call(ProduceErrors(errors.to_vec()));
        }

        let mut appended: BTreeMap<LogPosition, Vec<u8>> = BTreeMap::new();
        let mut per_writer = Vec::new();
        while let Some(result) = writers.join_next().await {
            let positions = result.expect("writer");
            for pair in positions.windows(2) {
                assert!(
                    pair[0].0.partition == pair[1].0.partition
                        && pair[0].0.offset < pair[1].0.offset,
                    "one key keeps its partition and order: {pair:?}"
                );
            }
            per_writer.push(positions.len());
            for (position, value) in positions {
                assert!(
                    appended.insert(position, value).is_none(),
                    "two records got the same position"
                );
            }
        }

        let stored = read_back(log.as_ref(), &topic).await;
        assert_eq!(
            stored, appended,
            "the log holds every record once, at the position its append returned"
        );
        eprintln!(
            "produce errors: {} records appended by {WRITERS} writers, each once, in order",
            appended.len()
        );
    })
    .await;
}

/// A broker down while appends run: appends to its partitions block, then fail clearly when
/// their time is up; once it is back everything flows again. Every acknowledged record is in
/// the log exactly once; an unacknowledged one at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_loses_no_acknowledged_append() {
    const WRITERS: usize = 6;
    let mock = Mock::start();
    // A short append timeout, so that appends stuck on the dead broker fail within the test.
    let log = mock.log_with(Duration::from_secs(2), &[]);
    bounded("broker_down", async {
        let topic = unique_name("broker-down");
        log.ensure_topics(&[TopicSpec::new(&topic, WRITERS as u32)])
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (progress, mut status) = watch::channel((0_usize, 0_usize)); // (acks, failures)
        let progress = Arc::new(progress);
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let (log, topic) = (log.clone(), topic.clone());
            let (stop, progress) = (stop.clone(), progress.clone());
            // One writer per partition, so some write to the partitions the broker leads.
            let key = key_for(writer as u32, WRITERS as u32);
            writers.spawn(async move {
                let mut acked = Vec::new();
                let mut failed = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("{writer}/{i}").into_bytes();
                    let record = OutgoingRecord::new(&topic, key.as_str(), value.clone());
                    match log.append(vec![record]).await {
                        Ok(mut positions) => {
                            acked.push((positions.remove(0), value));
                            progress.send_modify(|(acks, _)| *acks += 1);
                        }
                        Err(error) => {
                            let message = error.to_string();
                            assert!(
                                matches!(error, LogError::Backend(_))
                                    && (message.contains("not acknowledged")
                                        || message.contains("did not report its offset")),
                                "an append fails with a clear error: {message}"
                            );
                            failed.push(value);
                            progress.send_modify(|(_, failures)| *failures += 1);
                        }
                    }
                    i += 1;
                }
                (acked, failed)
            });
        }

        wait_for_status(
            &mut status,
            |(acks, _)| acks >= 60,
            "appends before the fault",
        )
        .await;
        mock.call(BrokerDown(1));
        // Down until appends to its partitions have run out of time.
        wait_for_status(
            &mut status,
            |(_, failures)| failures >= 1,
            "an append failing",
        )
        .await;
        let acks_while_down = status.borrow().0;
        mock.call(BrokerUp(1));
        wait_for_status(
            &mut status,
            |(acks, _)| acks >= acks_while_down + 120,
            "appends after the broker is back",
        )
        .await;
        stop.store(true, Ordering::Relaxed);

        let mut acked: BTreeMap<LogPosition, Vec<u8>> = BTreeMap::new();
        let mut failed: BTreeSet<Vec<u8>> = BTreeSet::new();
        while let Some(result) = writers.join_next().await {
            let (writer_acked, writer_failed) = result.expect("writer");
            for (position, value) in writer_acked {
                assert!(
                    acked.insert(position, value).is_none(),
                    "two acks, one position"
                );
            }
            failed.extend(writer_failed);
        }

        let stored = read_back(log.as_ref(), &topic).await;
        for (position, value) in &acked {
            assert_eq!(
                stored.get(position),
                Some(value),
                "the acknowledged record at {position:?} is in the log"
            );
        }
        let mut seen = BTreeSet::new();
        for value in stored.values() {
            assert!(seen.insert(value), "a record is in the log twice");
            assert!(
                acked.values().any(|acked| acked == value) || failed.contains(value),
                "the log holds a record nobody appended"
            );
        }
        let failed_present = failed.iter().filter(|value| seen.contains(value)).count();
        eprintln!(
            "broker down: {} acknowledged (all present once), {} failed clearly ({} of those \
             were written anyway)",
            acked.len(),
            failed.len(),
            failed_present
        );
    })
    .await;
}

/// Two members split a group's partitions; when one leaves, the other takes its partitions
/// over from the last commit and so sees every record that was not committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surviving_member_takes_over_uncommitted_records() {
    const PARTITIONS: u32 = 4;
    let mock = Mock::start();
    let log = mock.log();
    bounded("takeover", async {
        let topic = unique_name("takeover");
        log.ensure_topics(&[TopicSpec::new(&topic, PARTITIONS)])
            .await
            .unwrap();
        let group = unique_name("takeover");
        let topics = [topic.clone()];
        let mut a = log
            .consumer(&group, &topics, StartPosition::Committed)
            .await
            .unwrap();
        let mut b = log
            .consumer(&group, &topics, StartPosition::Committed)
            .await
            .unwrap();

        // Rounds of one record per partition until a round shows the split: each record
        // reaches exactly one member, and both members get some. Members commit what they
        // process; a rebalance along the way may re-deliver a record (at-least-once), which
        // only makes that round inconclusive.
        let keys: Vec<String> = (0..PARTITIONS).map(|p| key_for(p, PARTITIONS)).collect();
        let deadline = Instant::now() + PROGRESS_TIMEOUT;
        let mut round = 0;
        let (owned_by_a, owned_by_b) = loop {
            assert!(
                Instant::now() < deadline,
                "the group never split its partitions"
            );
            let records = keys
                .iter()
                .map(|key| {
                    OutgoingRecord::new(&topic, key.as_str(), format!("split-{round}").into_bytes())
                })
                .collect();
            let positions: BTreeSet<LogPosition> =
                log.append(records).await.unwrap().into_iter().collect();
            round += 1;
            let mut by_a = BTreeSet::new();
            let mut by_b = BTreeSet::new();
            while !positions
                .iter()
                .all(|p| by_a.contains(p) || by_b.contains(p))
            {
                assert!(
                    Instant::now() < deadline,
                    "a split round was not consumed in time"
                );
                let (from_a, from_b) =
                    tokio::join!(poll_and_commit(a.as_mut()), poll_and_commit(b.as_mut()));
                by_a.extend(from_a.iter().filter(|p| positions.contains(*p)).cloned());
                by_b.extend(from_b.iter().filter(|p| positions.contains(*p)).cloned());
            }
            if !by_a.is_empty() && !by_b.is_empty() && by_a.is_disjoint(&by_b) {
                let partitions = |set: &BTreeSet<LogPosition>| -> BTreeSet<u32> {
                    set.iter().map(|p| p.partition).collect()
                };
                break (partitions(&by_a), partitions(&by_b));
            }
        };
        assert!(owned_by_a.is_disjoint(&owned_by_b));
        assert_eq!(owned_by_a.len() + owned_by_b.len(), PARTITIONS as usize);

        // Records on every partition; b processes some and commits only part of them.
        let records: Vec<OutgoingRecord> = (0..80)
            .map(|i| OutgoingRecord::new(&topic, format!("k{i}"), format!("v{i}").into_bytes()))
            .collect();
        let all: BTreeSet<LogPosition> = log.append(records).await.unwrap().into_iter().collect();
        let on_b: BTreeSet<LogPosition> = all
            .iter()
            .filter(|p| owned_by_b.contains(&p.partition))
            .cloned()
            .collect();
        assert!(!on_b.is_empty());
        let mut b_received: Vec<ConsumedRecord> = Vec::new();
        while b_received.len() < on_b.len() / 2 + 1 {
            assert!(
                Instant::now() < deadline + PROGRESS_TIMEOUT,
                "b got too little"
            );
            b_received.extend(b.poll(64, Duration::from_millis(200)).await.unwrap());
        }
        // Processed in order per partition: commit the first half of what b received.
        let b_committed: BTreeSet<LogPosition> = b_received[..b_received.len() / 2]
            .iter()
            .map(ConsumedRecord::position)
            .collect();
        b.commit(&b_committed.iter().cloned().collect::<Vec<_>>())
            .await
            .unwrap();
        drop(b);

        // a takes over b's partitions from b's last commit.
        let takeover_deadline = Instant::now() + PROGRESS_TIMEOUT;
        let mut a_seen: BTreeSet<LogPosition> = BTreeSet::new();
        while !all
            .iter()
            .all(|p| a_seen.contains(p) || b_committed.contains(p))
        {
            assert!(
                Instant::now() < takeover_deadline,
                "a never saw {} uncommitted records",
                all.iter()
                    .filter(|p| !a_seen.contains(p) && !b_committed.contains(p))
                    .count()
            );
            a_seen.extend(poll_and_commit(a.as_mut()).await);
        }
        let taken_over = on_b.iter().filter(|p| a_seen.contains(p)).count();
        assert!(
            taken_over >= on_b.len() - b_committed.len(),
            "a processes b's uncommitted records"
        );
        let redelivered = a_seen.intersection(&b_committed).count();
        eprintln!(
            "takeover: a owned {owned_by_a:?}, b {owned_by_b:?}; after b left a processed \
             {taken_over} of b's records ({redelivered} of them committed by b already)"
        );
    })
    .await;
}

// ---- helpers ----

async fn poll_and_commit(consumer: &mut dyn LogConsumer) -> Vec<LogPosition> {
    let batch = consumer
        .poll(64, Duration::from_millis(200))
        .await
        .expect("poll");
    let positions: Vec<LogPosition> = batch.iter().map(ConsumedRecord::position).collect();
    consumer.commit(&positions).await.expect("commit");
    positions
}

/// A key [`partition_for_key`] puts on `partition`.
fn key_for(partition: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| partition_for_key(key.as_bytes(), partitions) == partition)
        .expect("some key")
}

async fn collect(consumer: &mut dyn LogConsumer, count: usize) -> Vec<ConsumedRecord> {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived",
            records.len()
        );
        records.extend(
            consumer
                .poll(500, Duration::from_secs(1))
                .await
                .expect("poll"),
        );
    }
    records
}

/// Everything in `topic` by position, read by a fresh group; fails on a record read twice.
async fn read_back(log: &dyn Log, topic: &str) -> BTreeMap<LogPosition, Vec<u8>> {
    let group = unique_name("read-back");
    let topics = [topic.to_owned()];
    let total: u64 = log
        .lag(&group, &topics)
        .await
        .expect("lag")
        .iter()
        .map(|lag| lag.end_offset)
        .sum();
    let mut consumer = log
        .consumer(&group, &topics, StartPosition::Committed)
        .await
        .expect("consumer");
    let mut stored = BTreeMap::new();
    for record in collect(consumer.as_mut(), total as usize).await {
        assert!(
            stored.insert(record.position(), record.value).is_none(),
            "a record was read twice"
        );
    }
    let more = consumer
        .poll(10, Duration::from_millis(300))
        .await
        .expect("poll");
    assert!(more.is_empty(), "records beyond the end offsets: {more:?}");
    stored
}

async fn wait_for(acks: &mut watch::Receiver<usize>, at_least: usize, what: &str) {
    let reached = tokio::time::timeout(PROGRESS_TIMEOUT, acks.wait_for(|acks| *acks >= at_least))
        .await
        .map(|result| result.is_ok());
    assert_eq!(reached, Ok(true), "{what}: fewer than {at_least} in time");
}

async fn wait_for_status(
    status: &mut watch::Receiver<(usize, usize)>,
    done: impl Fn((usize, usize)) -> bool,
    what: &str,
) {
    let reached = tokio::time::timeout(PROGRESS_TIMEOUT, status.wait_for(|status| done(*status)))
        .await
        .map(|result| result.is_ok());
    let now = *status.borrow();
    assert_eq!(
        reached,
        Ok(true),
        "{what}: not in time (acks, failures) = {now:?}"
    );
}
