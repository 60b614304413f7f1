//! `EmbeddedLog` against the conformance suite, plus what only the embedded log promises:
//! one member per group, fair polling, offsets that never move back, and acknowledged appends
//! surviving `kill -9`.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use herald_log::embedded::{EmbeddedLog, EmbeddedLogOptions};
use herald_log::{
    conformance, Log, LogError, LogPosition, OutgoingRecord, StartPosition, TopicSpec,
};
use tempfile::TempDir;

fn open(dir: &Path) -> Arc<dyn Log> {
    Arc::new(EmbeddedLog::open(dir, EmbeddedLogOptions::default()).expect("open the embedded log"))
}

/// A fresh log in a fresh directory; the directory must outlive the log.
fn fresh() -> (TempDir, Arc<dyn Log>) {
    let dir = TempDir::new().expect("temp dir");
    let log = open(dir.path());
    (dir, log)
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let (_dir, log) = fresh();
            conformance::$check(log).await;
        }
    )*};
}

herald_log::for_each_conformance_check!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_land_once_multi_thread() {
    let (_dir, log) = fresh();
    conformance::concurrent_appends_land_once(log).await;
}

#[tokio::test]
async fn run_all_on_fresh_logs() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    conformance::run_all(|| {
        let dir = TempDir::new().expect("temp dir");
        let log = open(dir.path());
        dirs.lock().unwrap().push(dir);
        async move { log }
    })
    .await;
}

#[tokio::test]
async fn survives_reopen() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().to_owned();
    conformance::survives_reopen(|| {
        let log = open(&path);
        async move { log }
    })
    .await;
}

#[tokio::test]
async fn survives_reopen_without_fsync() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().to_owned();
    let options = EmbeddedLogOptions {
        fsync: false,
        ..EmbeddedLogOptions::default()
    };
    conformance::survives_reopen(|| {
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(&path, options.clone()).expect("open"));
        async move { log }
    })
    .await;
}

#[tokio::test]
async fn one_member_per_group() {
    let (_dir, log) = fresh();
    log.ensure_topics(&[TopicSpec::new("t", 2)]).await.unwrap();
    let topics = ["t".to_owned()];
    let first = log
        .consumer("g", &topics, StartPosition::Committed)
        .await
        .unwrap();
    let second = log.consumer("g", &topics, StartPosition::Committed).await;
    assert!(matches!(second, Err(LogError::GroupBusy(group)) if group == "g"));
    // Another group is not affected.
    let _other = log
        .consumer("h", &topics, StartPosition::Committed)
        .await
        .unwrap();
    drop(first);
    log.consumer("g", &topics, StartPosition::Committed)
        .await
        .expect("the group is free again");
}

#[tokio::test]
async fn unknown_topics_are_rejected() {
    let (_dir, log) = fresh();
    let unknown = ["nope".to_owned()];
    let appended = log
        .append(vec![OutgoingRecord::new("nope", "k", b"v".to_vec())])
        .await;
    assert!(matches!(appended, Err(LogError::UnknownTopic(topic)) if topic == "nope"));
    let consumer = log.consumer("g", &unknown, StartPosition::Committed).await;
    assert!(matches!(consumer, Err(LogError::UnknownTopic(_))));
    assert!(matches!(
        log.lag("g", &unknown).await,
        Err(LogError::UnknownTopic(_))
    ));
    assert!(matches!(
        log.partitions("nope"),
        Err(LogError::UnknownTopic(_))
    ));

    // A request with one unknown topic appends nothing at all.
    log.ensure_topics(&[TopicSpec::new("t", 1)]).await.unwrap();
    let mixed = vec![
        OutgoingRecord::new("t", "k", b"v".to_vec()),
        OutgoingRecord::new("nope", "k", b"v".to_vec()),
    ];
    assert!(log.append(mixed).await.is_err());
    let lag = log.lag("g", &["t".to_owned()]).await.unwrap();
    assert_eq!(lag[0].end_offset, 0);
}

#[tokio::test]
async fn zero_partitions_means_the_default() {
    let dir = TempDir::new().unwrap();
    let options = EmbeddedLogOptions {
        default_partitions: 5,
        ..EmbeddedLogOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    log.ensure_topics(&[TopicSpec::new("t", 0)]).await.unwrap();
    assert_eq!(log.partitions("t").unwrap(), 5);
}

#[tokio::test]
async fn poll_is_fair_across_partitions() {
    let (_dir, log) = fresh();
    log.ensure_topics(&[TopicSpec::new("t", 2)]).await.unwrap();
    // Two keys on different partitions: a big backlog on one, a few records on the other.
    let key_a = "a";
    let key_b = (0..)
        .map(|i| format!("b{i}"))
        .find(|key| {
            herald_log::partition_for_key(key.as_bytes(), 2)
                != herald_log::partition_for_key(b"a", 2)
        })
        .unwrap();
    let backlog = (0..200)
        .map(|i| OutgoingRecord::new("t", key_a, format!("{i}").into_bytes()))
        .collect();
    log.append(backlog).await.unwrap();
    let few = (0..5)
        .map(|i| OutgoingRecord::new("t", key_b.as_str(), format!("{i}").into_bytes()))
        .collect();
    log.append(few).await.unwrap();

    let mut consumer = log
        .consumer("g", &["t".to_owned()], StartPosition::Committed)
        .await
        .unwrap();
    let batch = consumer.poll(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.len(), 10);
    let from_b = batch
        .iter()
        .filter(|record| record.key == key_b.as_bytes())
        .count();
    assert_eq!(from_b, 5, "the small partition gets its share of one poll");
}

#[tokio::test]
async fn commits_never_move_backwards() {
    let (_dir, log) = fresh();
    log.ensure_topics(&[TopicSpec::new("t", 1)]).await.unwrap();
    let records = (0..20)
        .map(|i| OutgoingRecord::new("t", "k", format!("{i}").into_bytes()))
        .collect();
    log.append(records).await.unwrap();
    let mut consumer = log
        .consumer("g", &["t".to_owned()], StartPosition::Committed)
        .await
        .unwrap();
    let at = |offset| LogPosition {
        topic: "t".to_owned(),
        partition: 0,
        offset,
    };
    consumer.commit(&[at(9)]).await.unwrap();
    consumer.commit(&[at(4)]).await.unwrap();
    consumer.commit(&[at(2), at(6)]).await.unwrap();
    let lag = log.lag("g", &["t".to_owned()]).await.unwrap();
    assert_eq!((lag[0].end_offset, lag[0].committed), (20, 10));
}

#[tokio::test]
async fn dropping_the_log_while_consumers_wait_does_not_hang() {
    let (_dir, log) = fresh();
    log.ensure_topics(&[TopicSpec::new("t", 1)]).await.unwrap();
    let mut consumer = log
        .consumer("g", &["t".to_owned()], StartPosition::Committed)
        .await
        .unwrap();
    drop(log);
    // The consumer keeps the storage open; it still works, then closing it closes everything.
    let batch = consumer.poll(10, Duration::from_millis(50)).await.unwrap();
    assert!(batch.is_empty());
    drop(consumer);
}

// ---- kill -9 ----

const KILL_CHILD_DIR: &str = "HERALD_LOG_KILL_CHILD_DIR";
const KILL_CHILD_TEST: &str = "kill_child_appends_until_killed";
const KILL_TOPIC: &str = "kill-9";
const ACK: &str = "HERALD-ACK";
const ACKS_BEFORE_KILL: usize = 200;

fn kill_value(id: &str) -> Vec<u8> {
    // Some bulk, so that a kill is likely to land in the middle of writing a batch.
    format!("value-{id}-{}", "x".repeat(200)).into_bytes()
}

/// The child half of `acknowledged_appends_survive_kill_9`; does nothing unless started by it.
/// Appends from several tasks (so batches hold several requests) and prints every record
/// right after its append returned, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(KILL_CHILD_DIR) else {
        return;
    };
    let log = open(Path::new(&dir));
    log.ensure_topics(&[TopicSpec::new(KILL_TOPIC, 4)])
        .await
        .expect("ensure_topics");
    // Never outlive a parent that failed to kill us by much.
    let stop_at = Instant::now() + Duration::from_secs(60);
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4 {
        let log = log.clone();
        writers.spawn(async move {
            let mut i = 0_u64;
            while Instant::now() < stop_at {
                let id = format!("{writer}-{i}");
                let record =
                    OutgoingRecord::new(KILL_TOPIC, format!("key-{}", i % 16), kill_value(&id));
                let position = log.append(vec![record]).await.expect("append").remove(0);
                let mut stdout = std::io::stdout().lock();
                let line = format!("{ACK} {id} {} {}", position.partition, position.offset);
                // The parent is gone when stdout is: stop.
                if writeln!(stdout, "{line}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return;
                }
                i += 1;
            }
        });
    }
    while writers.join_next().await.is_some() {}
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = TempDir::new().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", KILL_CHILD_TEST, "--nocapture"])
        .env(KILL_CHILD_DIR, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");

    // Read on a thread so the parent can give up at a deadline instead of blocking.
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acked: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let mut record_ack = |line: &str| {
        // libtest may print its own text on the same line, so look for the marker anywhere.
        let Some(at) = line.find(ACK) else { return };
        let fields: Vec<&str> = line[at..].split_whitespace().collect();
        let [_, id, partition, offset] = fields[..] else {
            panic!("bad ack line: {line}")
        };
        let position = (partition.parse().unwrap(), offset.parse().unwrap());
        assert!(
            acked.insert(position, id.to_owned()).is_none(),
            "two acks for {position:?}"
        );
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if line.contains(ACK) {
                    seen += 1;
                }
                record_ack(&line);
            }
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "the child stopped acknowledging after {seen} records ({error}; {status:?})"
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    // Acks still in the pipe were acknowledged before the kill too.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => record_ack(&line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the child's stdout did not close after the kill")
            }
        }
    }
    assert!(acked.len() >= ACKS_BEFORE_KILL);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let log = open(dir.path());
        let topics = [KILL_TOPIC.to_owned()];
        let lag = log.lag("verify", &topics).await.expect("lag");
        let total: u64 = lag.iter().map(|entry| entry.end_offset).sum();
        let mut consumer = log
            .consumer("verify", &topics, StartPosition::Committed)
            .await
            .expect("consumer");

        let mut stored: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
        let read_deadline = Instant::now() + Duration::from_secs(30);
        while (stored.len() as u64) < total {
            assert!(
                Instant::now() < read_deadline,
                "only {} of {total} records readable",
                stored.len()
            );
            for record in consumer
                .poll(1000, Duration::from_secs(1))
                .await
                .expect("poll")
            {
                assert!(stored
                    .insert((record.partition, record.offset), record.value)
                    .is_none());
            }
        }
        assert!(consumer
            .poll(10, Duration::from_millis(100))
            .await
            .expect("poll")
            .is_empty());

        for entry in &lag {
            let offsets: Vec<u64> = stored
                .keys()
                .filter(|(p, _)| *p == entry.partition)
                .map(|(_, o)| *o)
                .collect();
            let dense: Vec<u64> = (0..entry.end_offset).collect();
            assert_eq!(offsets, dense, "partition {} is dense", entry.partition);
        }
        for (position, id) in &acked {
            let value = stored
                .get(position)
                .unwrap_or_else(|| panic!("acknowledged record {id} at {position:?} is lost"));
            assert_eq!(value, &kill_value(id), "record at {position:?}");
        }
        let distinct: HashSet<&Vec<u8>> = stored.values().collect();
        assert_eq!(distinct.len(), stored.len(), "a record was stored twice");
        eprintln!(
            "kill -9: {} acknowledged, {} stored, all acknowledged records present",
            acked.len(),
            stored.len()
        );
    });
}
