//! The store conformance suite against a live ScyllaDB (or Cassandra) node.
//!
//! Runs only when `HERALD_TEST_SCYLLA=host:port` names a node; each test works in a fresh
//! keyspace `herald_test_<ulid>` and drops it at the end, also when the suite fails. Without
//! the variable each test says so loudly and passes: ScyllaDB cannot run on the machine this
//! repository is built on, so these tests have not been run there.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use herald_store::conformance;
use herald_store::scylla::{ScyllaOptions, ScyllaStore};
use herald_store::Store;
use scylla::client::session_builder::SessionBuilder;

const VARIABLE: &str = "HERALD_TEST_SCYLLA";

/// The node to test against, or `None` after saying loudly that the test is skipped.
fn node(test: &str) -> Option<String> {
    match std::env::var(VARIABLE) {
        Ok(node) if !node.trim().is_empty() => Some(node.trim().to_owned()),
        _ => {
            // Straight to the process's stderr, past the test harness's output capture, so the
            // skip shows in a plain `cargo test` run.
            let message = format!(
                "\n*** {test}: skipped: {VARIABLE} is not set (ScyllaDB cannot run on this machine) ***\n"
            );
            let _ = std::io::stderr().write_all(message.as_bytes());
            None
        }
    }
}

fn options(node: &str, keyspace: &str) -> ScyllaOptions {
    ScyllaOptions {
        nodes: vec![node.to_owned()],
        keyspace: keyspace.to_owned(),
        replication_factor: 1,
    }
}

async fn connect(node: &str, keyspace: &str) -> Arc<dyn Store> {
    let store = ScyllaStore::connect(options(node, keyspace))
        .await
        .unwrap_or_else(|err| panic!("cannot connect to scylladb at {node}: {err:?}"));
    Arc::new(store)
}

/// Runs `check` in a fresh keyspace, then drops the keyspace, then reports the check's panic.
async fn in_fresh_keyspace<F, Fut>(node: String, check: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let keyspace = format!(
        "herald_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let outcome = tokio::spawn(check(node.clone(), keyspace.clone())).await;
    let session = SessionBuilder::new()
        .known_node(&node)
        .build()
        .await
        .unwrap_or_else(|err| panic!("cannot connect to scylladb at {node}: {err:?}"));
    if let Err(err) = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
    {
        eprintln!("could not drop the test keyspace {keyspace}: {err}");
    }
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_passes_the_conformance_suite() {
    let Some(node) = node("scylla_store_passes_the_conformance_suite") else {
        return;
    };
    in_fresh_keyspace(node, |node, keyspace| async move {
        let store = connect(&node, &keyspace).await;
        conformance::run_all(store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_survives_reopen() {
    let Some(node) = node("scylla_store_survives_reopen") else {
        return;
    };
    in_fresh_keyspace(node, |node, keyspace| async move {
        conformance::survives_reopen(|| connect(&node, &keyspace)).await;
    })
    .await;
}

/// Connecting twice applies the schema twice: every statement must be idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_schema_applies_twice() {
    let Some(node) = node("scylla_schema_applies_twice") else {
        return;
    };
    in_fresh_keyspace(node, |node, keyspace| async move {
        let first = connect(&node, &keyspace).await;
        let second = connect(&node, &keyspace).await;
        drop((first, second));
    })
    .await;
}

#[tokio::test]
async fn connect_refuses_bad_options_before_touching_the_network() {
    let bad_keyspace = ScyllaStore::connect(options("127.0.0.1:9042", "herald; drop")).await;
    assert!(bad_keyspace.is_err());
    let no_nodes = ScyllaStore::connect(ScyllaOptions {
        nodes: Vec::new(),
        keyspace: "herald".to_owned(),
        replication_factor: 1,
    })
    .await;
    assert!(no_nodes.is_err());
    let no_replicas = ScyllaStore::connect(ScyllaOptions {
        replication_factor: 0,
        ..options("127.0.0.1:9042", "herald")
    })
    .await;
    assert!(no_replicas.is_err());
}
