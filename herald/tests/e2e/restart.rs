//! Everything accepted survives a restart on the same data directory.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn restart_keeps_tenants_keys_endpoints_templates_and_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    restart_keeps_everything(test_config(dir.path())).await;
}

/// Stops Herald and starts it again with the same `config`: nothing is lost or repeated.
pub async fn restart_keeps_everything(config: herald::Config) {
    let receiver = TestReceiver::start().await;
    let herald = TestHerald::start(config.clone()).await;
    let client = herald.tenant("Acme").await;
    let key = client.bearer.clone();
    endpoint_and_template(&client, &receiver).await;
    let sent = client
        .post("/v1/send", send_body(&receiver, "ORD-1"), 202)
        .await;
    let delivery_id = sent["delivery_id"].as_str().unwrap().to_owned();
    client.delivery_reaches(&delivery_id, "delivered").await;
    client
        .post(
            "/v1/events",
            json!({ "event_id": "e-1", "event_name": "order.shipped" }),
            202,
        )
        .await;
    herald.stop().await;

    let herald = TestHerald::start(config).await;
    let client = herald.client(key.as_deref());
    let delivery = client
        .get(&format!("/v1/deliveries/{delivery_id}"), 200)
        .await;
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(
        client.get("/v1/templates/order_shipped", 200).await["slug"],
        "order_shipped"
    );
    assert_eq!(
        client.get("/v1/webhooks", 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Event ids are still remembered.
    client
        .post(
            "/v1/events",
            json!({ "event_id": "e-1", "event_name": "order.shipped" }),
            200,
        )
        .await;
    // The key works, and so does sending to the same recipient, which is found, not re-created.
    let again = client
        .post("/v1/send", send_body(&receiver, "ORD-2"), 202)
        .await;
    assert_eq!(again["recipient"]["id"], sent["recipient"]["id"]);
    client
        .delivery_reaches(again["delivery_id"].as_str().unwrap(), "delivered")
        .await;
    // Nothing delivered before the restart was delivered again.
    let slack = receiver.wait_for("/slack", 2, |_| true).await;
    assert_eq!(
        slack.len(),
        2,
        "{:?}",
        slack.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    herald.stop().await;
}

#[tokio::test]
async fn work_accepted_while_stopping_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let herald = TestHerald::start(test_config(dir.path())).await;
    let client = herald.tenant("Acme").await;
    let key = client.bearer.clone();
    endpoint_and_template(&client, &receiver).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let sent = client
            .post("/v1/send", send_body(&receiver, &i.to_string()), 202)
            .await;
        ids.push(sent["delivery_id"].as_str().unwrap().to_owned());
    }
    // Stop at once: whatever was accepted but not yet delivered must survive.
    herald.stop().await;

    let herald = TestHerald::start(test_config(dir.path())).await;
    let client = herald.client(key.as_deref());
    for id in &ids {
        client.delivery_reaches(id, "delivered").await;
    }
    herald.stop().await;
}
