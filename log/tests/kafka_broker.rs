//! `KafkaLog` against a real broker: the conformance suite, one test per check, when
//! `HERALD_TEST_KAFKA=host:port` names one (any Kafka-API broker: Apache Kafka, Redpanda,
//! tansu, ...). Without it every test says so loudly and passes.
//!
//! Every check uses topic and group names of its own, so the broker may be shared and need
//! not be empty. Topics are created with replication factor 1, which any cluster accepts.
//!
//! ```sh
//! HERALD_TEST_KAFKA=127.0.0.1:9092 cargo test -p herald-log --features kafka --test kafka_broker
//! ```

use std::sync::Arc;
use std::time::Duration;

use herald_log::conformance;
use herald_log::kafka::{KafkaLog, KafkaOptions};
use herald_log::Log;

const BROKER_VAR: &str = "HERALD_TEST_KAFKA";
/// Every test ends within this, whatever the broker does.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// A log on the broker named by `HERALD_TEST_KAFKA`, or `None` (after saying so) without one.
fn broker_log() -> Option<Arc<dyn Log>> {
    let Some(brokers) = std::env::var(BROKER_VAR)
        .ok()
        .filter(|value| !value.is_empty())
    else {
        // Once per test binary, straight to the process's stderr (past the harness's output
        // capture), so the skip shows in a plain `cargo test` run.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            use std::io::Write as _;
            let _ = std::io::stderr().write_all(
                format!("\n*** kafka_broker: skipped: {BROKER_VAR} is not set (start a Kafka-API broker, e.g. tansu, and set it to host:port) ***\n").as_bytes(),
            );
        });
        return None;
    };
    let mut options = KafkaOptions::new(brokers);
    options.client_id = "herald-broker-test".to_owned();
    options.replication_factor = 1;
    options.operation_timeout = Duration::from_secs(20);
    // Rebalances and leaving members settle quickly, so group checks do not wait long.
    options.overrides = [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    // Settings a particular broker needs (`key=value,...`), e.g. for tansu, which mishandles
    // fetches from inside a multi-record batch: `batch.num.messages=1`.
    if let Ok(extra) = std::env::var("HERALD_TEST_KAFKA_PROPERTIES") {
        for pair in extra.split(',').filter(|pair| !pair.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .expect("HERALD_TEST_KAFKA_PROPERTIES holds key=value pairs");
            options
                .overrides
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    Some(Arc::new(
        KafkaLog::connect(options).expect("connect to HERALD_TEST_KAFKA"),
    ))
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let Some(log) = broker_log() else { return };
            let check = stringify!($check);
            tokio::time::timeout(TEST_TIMEOUT, conformance::$check(log))
                .await
                .unwrap_or_else(|_| panic!("{check} did not finish within {TEST_TIMEOUT:?}"));
        }
    )*};
}

herald_log::for_each_conformance_check!(conformance_tests);
