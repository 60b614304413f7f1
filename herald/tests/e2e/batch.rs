//! `POST /v1/send/batch`: each message accepted or refused on its own.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_batch_accepts_the_valid_messages_and_explains_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;
    let slack = receiver.url("/slack");
    let answer = client
        .post(
            "/v1/send/batch",
            json!({ "messages": [
                { "recipient": { "name": "Ana", "slack_webhook_url": slack }, "template": "order_shipped", "vars": { "order_id": "A" } },
                { "recipient": { "slack_webhook_url": slack }, "template": "order_shipped", "vars": {} },
                { "recipient": { "slack_webhook_url": slack }, "template": "order_shipped", "vars": { "order_id": "C" } },
                { "recipient": { "slack_webhook_url": slack }, "template": "no_such_template" },
                { "bogus": true },
            ]}),
            202,
        )
        .await;
    assert_eq!(
        (
            answer["total"].clone(),
            answer["queued"].clone(),
            answer["failed"].clone()
        ),
        (json!(5), json!(2), json!(3)),
        "{answer}"
    );
    let results = answer["results"].as_array().unwrap();
    assert_eq!(
        results
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(results[2]["status"], "queued");
    // The recipient created by the first message is the one the third finds.
    assert_eq!(results[0]["recipient"]["id"], results[2]["recipient"]["id"]);
    assert_eq!(results[1]["status"], "failed");
    assert_eq!(results[1]["error"]["code"], "validation_failed");
    assert!(results[1]["error"]["details"]["field_errors"]["vars.order_id"].is_array());
    assert_eq!(results[3]["error"]["code"], "template_not_found");
    assert!(results[4]["error"]["details"]["field_errors"]["messages[4]"].is_array());

    for index in [0, 2] {
        client
            .delivery_reaches(results[index]["delivery_id"].as_str().unwrap(), "delivered")
            .await;
    }
    let texts: Vec<String> = receiver
        .received("/slack")
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts.len(),
        2,
        "only the accepted messages are sent: {texts:?}"
    );

    // The batch itself must hold 1 to 100 messages.
    for messages in [json!([]), json!(vec![json!({}); 101])] {
        let refused = client
            .post("/v1/send/batch", json!({ "messages": messages }), 422)
            .await;
        assert!(refused["details"]["field_errors"]["messages"].is_array());
    }
    herald.stop().await;
}

/// `idempotency_key`: the same key within an hour replays the first answer and sends nothing;
/// a refused request leaves the key free; after the hour the key makes a new delivery.
#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_for_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let (herald, clock) = TestHerald::start_with_adjustable_clock(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;
    let body = |key: &str, vars: serde_json::Value| {
        json!({ "recipient": { "slack_webhook_url": receiver.url("/slack") },
                "template": "order_shipped", "vars": vars, "idempotency_key": key })
    };

    let first = client
        .post("/v1/send", body("k1", json!({ "order_id": "1" })), 202)
        .await;
    let again = client
        .post("/v1/send", body("k1", json!({ "order_id": "1" })), 200)
        .await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["delivery_id"], first["delivery_id"]);
    let id = first["delivery_id"].as_str().unwrap();
    client.delivery_reaches(id, "delivered").await;
    assert_eq!(receiver.received("/slack").len(), 1, "nothing new was sent");

    // A refused request does not use the key up.
    client.post("/v1/send", body("k2", json!({})), 422).await;
    client
        .post("/v1/send", body("k2", json!({ "order_id": "2" })), 202)
        .await;
    let too_long = client
        .post(
            "/v1/send",
            body(&"k".repeat(129), json!({ "order_id": "3" })),
            422,
        )
        .await;
    assert!(too_long["details"]["field_errors"]["idempotency_key"].is_array());

    // An hour later the key is free again.
    clock.advance(chrono::TimeDelta::minutes(61));
    let later = client
        .post("/v1/send", body("k1", json!({ "order_id": "1" })), 202)
        .await;
    assert_ne!(later["delivery_id"], first["delivery_id"]);
    assert!(later.get("replayed").is_none());
    herald.stop().await;
}
