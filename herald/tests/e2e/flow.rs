//! The walk-through's flow: tenant → endpoint → template → send → event → delivery.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn send_is_delivered_to_slack_and_announced_to_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    walk_through(test_config(dir.path())).await;
}

/// The README's walk-through as a test, on whatever backends `config` names.
pub async fn walk_through(config: herald::Config) {
    let herald = TestHerald::start(config).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let secret = endpoint_and_template(&client, &receiver).await;

    let sent = client
        .post("/v1/send", send_body(&receiver, "ORD-1"), 202)
        .await;
    assert_eq!(sent["status"], "queued");
    assert_eq!(sent["channel"], "slack");
    assert_eq!(sent["template"], "order_shipped");
    assert!(sent["recipient"]["id"]
        .as_str()
        .unwrap()
        .starts_with("rcp_"));
    let delivery_id = sent["delivery_id"].as_str().unwrap();

    let slack = receiver.wait_for("/slack", 1, |_| true).await;
    assert_eq!(slack[0].json(), json!({ "text": "Order ORD-1 shipped" }));

    let delivery = client.delivery_reaches(delivery_id, "delivered").await;
    assert_eq!(delivery["channel"], "slack");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["template"], "order_shipped");
    assert_eq!(delivery["recipient_id"], sent["recipient"]["id"]);
    assert_eq!(delivery["last_error"], serde_json::Value::Null);

    // Subscribers hear about the delivery's progress, signed.
    for status in ["queued", "delivered"] {
        let event_type = format!("delivery.{status}");
        let announced = receiver
            .wait_for("/hooks", 1, |r| r.json()["type"] == event_type)
            .await;
        let payload = announced[0].json();
        assert_eq!(payload["data"]["delivery_id"], delivery_id);
        assert_eq!(payload["id"], announced[0].header("webhook-id"));
        assert!(
            verify_standard_signature(&secret, &announced[0]),
            "{event_type} signature must verify"
        );
    }
    herald.stop().await;
}

#[tokio::test]
async fn business_events_fan_out_signed_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    events_fan_out_once(test_config(dir.path())).await;
}

/// Business events reach subscribers, signed, once per `event_id`.
pub async fn events_fan_out_once(config: herald::Config) {
    let herald = TestHerald::start(config).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let secret = endpoint_and_template(&client, &receiver).await;

    let event = json!({ "event_id": "ord-1-shipped", "event_name": "order.shipped", "source": "erp",
                        "actor": { "type": "system", "id": "42" }, "data": { "order_id": "ORD-1" } });
    let first = client.post("/v1/events", event.clone(), 202).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("evt_"), "{first}");
    assert_eq!(
        first,
        json!({ "status": "accepted", "id": id, "event_id": "ord-1-shipped" })
    );
    let again = client.post("/v1/events", event.clone(), 200).await;
    assert_eq!(
        again,
        json!({ "status": "duplicate", "id": id, "event_id": "ord-1-shipped" })
    );
    // The first copy arrives. Events are keyed by their id in `requests`, so two events may
    // be routed in either order: the barrier below is posted only after the first delivery,
    // and its webhook (same endpoint → same `deliveries` partition) comes after anything the
    // duplicate could have produced by then.
    receiver
        .wait_for("/hooks", 1, |r| r.json()["type"] == "order.shipped")
        .await;
    // Unsubscribed event names reach nobody.
    client
        .post(
            "/v1/events",
            json!({ "event_id": "x", "event_name": "invoice.paid" }),
            202,
        )
        .await;
    client
        .post(
            "/v1/events",
            json!({ "event_id": "barrier", "event_name": "order.closed" }),
            202,
        )
        .await;
    receiver
        .wait_for("/hooks", 1, |r| r.json()["type"] == "order.closed")
        .await;

    let shipped: Vec<_> = receiver
        .received("/hooks")
        .into_iter()
        .filter(|r| r.json()["type"] == "order.shipped")
        .collect();
    assert_eq!(shipped.len(), 1, "a duplicate event_id is delivered once");
    let payload = shipped[0].json();
    assert_eq!(payload["data"], json!({ "order_id": "ORD-1" }));
    assert!(payload["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(payload["id"], shipped[0].header("webhook-id"));
    assert!(verify_standard_signature(&secret, &shipped[0]));
    assert!(receiver
        .received("/hooks")
        .iter()
        .all(|r| r.json()["type"] != "invoice.paid"));

    // Another tenant may use the same event_id: dedupe is per tenant.
    let other = herald.tenant("Globex").await;
    other.post("/v1/events", event, 202).await;
    herald.stop().await;
}

#[tokio::test]
async fn templates_and_endpoints_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;

    let template = client.get("/v1/templates/order_shipped", 200).await;
    assert_eq!(
        template["channels"]["slack"]["body"],
        "Order {{ order_id }} shipped"
    );
    assert!(template["id"].as_str().unwrap().starts_with("tpl_"));
    // Replacing keeps the id and answers 200.
    let replaced = client
        .put(
            "/v1/templates/order_shipped",
            json!({ "channels": { "slack": { "body": "v2 {{ order_id }}" } } }),
            200,
        )
        .await;
    assert_eq!(replaced["id"], template["id"]);

    let endpoints = client.get("/v1/webhooks", 200).await;
    assert_eq!(endpoints["has_more"], false);
    assert_eq!(endpoints["data"].as_array().unwrap().len(), 1);
    assert_eq!(endpoints["data"][0]["is_active"], true);
    assert!(
        endpoints["data"][0].get("secret").is_none(),
        "secrets are shown only at creation"
    );
    herald.stop().await;
}

#[tokio::test]
async fn health_reports_the_last_hour() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;
    let sent = client
        .post("/v1/send", send_body(&receiver, "1"), 202)
        .await;
    client
        .delivery_reaches(sent["delivery_id"].as_str().unwrap(), "delivered")
        .await;

    let anonymous = herald.client(None);
    let health = eventually("health to count the delivery", DEADLINE, || async {
        let health = anonymous.get("/v1/health", 200).await;
        (health["last_hour"]["delivered"].as_u64() >= Some(1) && health["queue_depth"] == 0)
            .then_some(health)
    })
    .await;
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["worker"], "active");
    assert!(health["timestamp"].is_string());
    herald.stop().await;
}
