//! Herald on a real Kafka-API broker (`HERALD_TEST_KAFKA=host:port`, e.g. tansu).
//!
//! The same flows as on the embedded log, with `herald run` on Kafka and the embedded store;
//! then two dispatcher processes sharing the delivery partitions, one killed with SIGKILL
//! mid-stream, and every delivery still made. Each test uses its own topic prefix, so runs
//! never see each other's records. Without the variable every test says so and passes.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::config::LogBackend;
use herald::Config;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::*;

/// Librdkafka settings that make group changes quick enough for tests, plus whatever the
/// broker under test needs (`HERALD_TEST_KAFKA_PROPERTIES`, e.g. `batch.num.messages=1` for
/// tansu, which mishandles fetches from inside a multi-record batch).
fn test_properties() -> String {
    let fast_groups = "session.timeout.ms=6000,heartbeat.interval.ms=500";
    match std::env::var("HERALD_TEST_KAFKA_PROPERTIES") {
        Ok(extra) if !extra.trim().is_empty() => format!("{fast_groups},{extra}"),
        _ => fast_groups.to_owned(),
    }
}

fn broker() -> Option<String> {
    let broker = std::env::var("HERALD_TEST_KAFKA")
        .ok()
        .filter(|b| !b.is_empty());
    if broker.is_none() {
        // Once, straight to the process's stderr (past the harness's capture), so it shows.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(
                b"\n*** e2e kafka: skipped: HERALD_TEST_KAFKA is not set (start a Kafka-API broker, e.g. tansu, and set it to host:port) ***\n",
            );
        });
    }
    broker
}

fn unique_prefix() -> String {
    format!(
        "herald-test-{}.",
        herald_domain::ids::RequestId::generate().as_str()[4..].to_ascii_lowercase()
    )
}

fn kafka_config(data_dir: &std::path::Path, broker: &str, prefix: &str) -> Config {
    Config {
        log: LogBackend::Kafka,
        kafka_brokers: broker.to_owned(),
        topic_prefix: prefix.to_owned(),
        kafka_properties: test_properties()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..test_config(data_dir)
    }
}

#[tokio::test]
async fn walk_through_on_kafka() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::flow::walk_through(kafka_config(dir.path(), &broker, &unique_prefix())).await;
}

#[tokio::test]
async fn endpoints_are_disabled_at_the_tenth_failure_on_kafka() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::webhooks::disables_at_the_tenth_failure(kafka_config(
        dir.path(),
        &broker,
        &unique_prefix(),
    ))
    .await;
}

#[tokio::test]
async fn failed_deliveries_are_re_sent_and_windows_replayed_on_kafka() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::webhooks::re_send_and_replay(kafka_config(dir.path(), &broker, &unique_prefix())).await;
}

#[tokio::test]
async fn events_fan_out_once_on_kafka() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::flow::events_fan_out_once(kafka_config(dir.path(), &broker, &unique_prefix())).await;
}

#[tokio::test]
async fn restart_on_kafka_keeps_everything() {
    let Some(broker) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    crate::restart::restart_keeps_everything(kafka_config(dir.path(), &broker, &unique_prefix()))
        .await;
}

/// A `herald` process of this build, its stdout followed line by line.
struct HeraldProcess {
    child: Child,
    base: String,
    /// Lines of its log that record a delivery attempt.
    attempts: Arc<AtomicUsize>,
}

impl HeraldProcess {
    async fn spawn(role: &str, config: &Config, broker: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg(role)
            .env_clear()
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_DATA_DIR", &config.data_dir)
            .env("HERALD_LOG", "kafka")
            .env("HERALD_KAFKA_BROKERS", broker)
            .env("HERALD_KAFKA_PROPERTIES", test_properties())
            .env("HERALD_TOPIC_PREFIX", &config.topic_prefix)
            .env("HERALD_PARTITIONS", config.partitions.to_string())
            .env("HERALD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("HERALD_ALLOW_PRIVATE_TARGETS", "true")
            .env(
                "HERALD_LOG_LEVEL",
                "info,herald_dispatcher=debug,fjall=warn,lsm_tree=warn",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the herald binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("Herald is listening on ") {
                    return addr.trim().to_owned();
                }
            }
            panic!("herald {role} exited before listening");
        })
        .await
        .unwrap_or_else(|_| panic!("herald {role} did not start within {DEADLINE:?}"));
        let attempts = Arc::new(AtomicUsize::new(0));
        let counter = attempts.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("attempted") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            child,
            base,
            attempts,
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_share_partitions_and_survive_one_being_killed() {
    let Some(broker) = broker() else { return };
    let prefix = unique_prefix();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let receiver = TestReceiver::start().await;

    // A runs every role; B is a second dispatcher in the same consumer groups.
    let a = HeraldProcess::spawn(
        "run",
        &kafka_config(dir_a.path(), &broker, &prefix),
        &broker,
    )
    .await;
    let mut b = HeraldProcess::spawn(
        "dispatcher",
        &kafka_config(dir_b.path(), &broker, &prefix),
        &broker,
    )
    .await;

    let admin = TestClient {
        bearer: Some(ADMIN_TOKEN.into()),
        ..client_for(&a.base)
    };
    let created = admin
        .post("/v1/admin/tenants", json!({ "name": "Acme" }), 201)
        .await;
    let client = TestClient {
        bearer: Some(created["api_key"].as_str().unwrap().to_owned()),
        ..client_for(&a.base)
    };
    client
        .put(
            "/v1/templates/t",
            json!({ "channels": { "slack": { "body": "{{ n }}" } } }),
            201,
        )
        .await;

    // Many recipients spread the tasks over every partition, so both dispatchers get work.
    let total = 200;
    for n in 0..total {
        let body = json!({ "recipient": { "slack_webhook_url": receiver.url(&format!("/slack/{}", n % 20)) },
                           "template": "t", "vars": { "n": n } });
        client.post("/v1/send", body, 202).await;
    }
    eventually(
        "the second dispatcher to deliver some of the work",
        DEADLINE,
        || async { (b.attempts() > 0).then_some(()) },
    )
    .await;
    b.child.kill().await.expect("SIGKILL the second dispatcher");

    // Every send is delivered at least once; the killed dispatcher's partitions were taken over.
    let delivered = eventually(
        "every send to be delivered",
        Duration::from_secs(60),
        || {
            let received: std::collections::BTreeSet<String> = (0..20)
                .flat_map(|i| receiver.received(&format!("/slack/{i}")))
                .map(|r| r.json()["text"].as_str().unwrap().to_owned())
                .collect();
            async move { (received.len() == total).then_some(received) }
        },
    )
    .await;
    assert_eq!(delivered.len(), total);
    assert!(a.attempts() > 0, "the first dispatcher delivered too");
}

fn client_for(base: &str) -> TestClient {
    TestClient {
        http: reqwest::Client::new(),
        base: base.to_owned(),
        bearer: None,
    }
}
