//! Failed attempts are retried on the schedule; permanent failures and exhausted schedules
//! end in `failed`; every attempt is counted.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn transient_failures_are_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;

    receiver.answer_with("/slack", &[503, 500]);
    let sent = client
        .post("/v1/send", send_body(&receiver, "1"), 202)
        .await;
    let delivery = client
        .delivery_reaches(sent["delivery_id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(delivery["attempts"], 3);
    assert_eq!(receiver.received("/slack").len(), 3);
    herald.stop().await;
}

#[tokio::test]
async fn permanent_failures_are_not_retried_and_are_announced() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;

    receiver.answer_with("/slack", &[404]);
    let sent = client
        .post("/v1/send", send_body(&receiver, "1"), 202)
        .await;
    let id = sent["delivery_id"].as_str().unwrap();
    let delivery = client.delivery_reaches(id, "failed").await;
    assert_eq!(delivery["attempts"], 1);
    assert!(
        delivery["last_error"].as_str().unwrap().contains("404"),
        "{delivery}"
    );
    let failed = receiver
        .wait_for("/hooks", 1, |r| r.json()["type"] == "delivery.failed")
        .await;
    assert_eq!(failed[0].json()["data"]["delivery_id"], id);
    herald.stop().await;
}

#[tokio::test]
async fn an_exhausted_schedule_fails_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;

    // The test schedule has three retries: four attempts in all.
    receiver.answer_with("/slack", &[503, 503, 503, 503]);
    let sent = client
        .post("/v1/send", send_body(&receiver, "1"), 202)
        .await;
    let delivery = client
        .delivery_reaches(sent["delivery_id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(delivery["attempts"], 4);
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{delivery}"
    );
    herald.stop().await;
}

#[tokio::test]
async fn webhook_deliveries_are_retried_with_a_stable_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    client
        .post(
            "/v1/webhooks",
            json!({ "url": receiver.url("/flaky"), "events": ["order.*"] }),
            201,
        )
        .await;

    receiver.answer_with("/flaky", &[500, 429]);
    client
        .post(
            "/v1/events",
            json!({ "event_id": "e1", "event_name": "order.paid", "data": { "n": 1 } }),
            202,
        )
        .await;
    let attempts = receiver.wait_for("/flaky", 3, |_| true).await;
    let ids: Vec<&str> = attempts.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "webhook-id must be stable across retries: {ids:?}"
    );
    herald.stop().await;
}
