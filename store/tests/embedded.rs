//! The conformance suite against the embedded store: one test per check, each on a store of
//! its own, plus the whole suite on one shared store and a reopen test.
//!
//! Run with `cargo test -p herald-store --features conformance`.
#![cfg(feature = "conformance")]

use std::sync::Arc;

use herald_store::conformance;
use herald_store::embedded::EmbeddedStore;
use herald_store::Store;

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_dir, store) = conformance::embedded_in_tempdir();
                conformance::$check(&store).await;
            }
        )*
    };
}

conformance_tests!(
    tenant_round_trip,
    api_key_round_trip,
    template_round_trip,
    templates_are_listed_by_slug,
    endpoint_round_trip,
    optional_settings_round_trip,
    recipient_round_trip,
    delivery_round_trip,
    dead_letter_round_trip,
    tenants_are_isolated,
    versioned_upserts_keep_the_newest,
    api_key_revocation_is_sticky,
    template_deleted_respects_versions,
    endpoint_deleted_respects_versions,
    attempts_page_newest_first,
    attempt_writes_are_idempotent,
    recipients_are_found_by_contact,
    health_counts_add_up_per_minute,
    checkpoints_are_stored_with_writes,
    later_writes_in_a_batch_see_earlier_ones,
    claims_deduplicate,
);

/// Every check on one store, as a shared ScyllaDB node will run them.
#[tokio::test]
async fn run_all_on_one_store() {
    let (_dir, store) = conformance::embedded_in_tempdir();
    conformance::run_all(Arc::new(store)).await;
    // Twice: checks must not depend on running against an empty store.
    let (_dir, store) = conformance::embedded_in_tempdir();
    let store: Arc<dyn Store> = Arc::new(store);
    conformance::run_all(store.clone()).await;
    conformance::run_all(store).await;
}

/// Rows of every kind, a checkpoint and claims survive dropping the store and reopening its
/// directory.
#[tokio::test]
async fn reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_owned();
    conformance::survives_reopen(|| {
        let path = path.clone();
        async move {
            let store = EmbeddedStore::open(&path).expect("open the embedded store");
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}
