//! Bad input gets a clear error in the envelope, and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

fn assert_envelope(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["code"], code, "{}", answer.body);
    assert!(answer.body["error"].as_str().is_some_and(|e| !e.is_empty()));
    let request_id = answer.headers["x-request-id"].to_str().unwrap();
    assert!(request_id.starts_with("req_"));
    assert_eq!(
        answer.body["request_id"], request_id,
        "the body names the same request id as the header"
    );
    assert!(answer.body["details"].is_object());
}

#[tokio::test]
async fn every_error_uses_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint_and_template(&client, &receiver).await;

    let bad_json = client
        .raw(
            Method::POST,
            "/v1/send",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_envelope(&bad_json, 400, "invalid_json");

    let unknown_key = herald.client(Some("hk_0000000000000000000000000000000000000000"));
    assert_envelope(
        &unknown_key
            .request(Method::POST, "/v1/send", Some(json!({})))
            .await,
        401,
        "unauthorized",
    );
    let no_key = herald.client(None);
    assert_envelope(
        &no_key.request(Method::GET, "/v1/webhooks", None).await,
        401,
        "unauthorized",
    );
    let not_a_key = herald.client(Some("garbage"));
    assert_envelope(
        &not_a_key.request(Method::GET, "/v1/webhooks", None).await,
        401,
        "unauthorized",
    );

    let wrong_type = client
        .raw(Method::POST, "/v1/send", "text/plain", b"{}".to_vec())
        .await;
    assert_envelope(&wrong_type, 415, "unsupported_media_type");

    let huge = vec![b' '; 2 * 1024 * 1024];
    let too_large = client
        .raw(Method::POST, "/v1/events", "application/json", huge)
        .await;
    assert_envelope(&too_large, 413, "payload_too_large");

    let missing = client
        .request(
            Method::POST,
            "/v1/send",
            Some(json!({ "template": "order_shipped" })),
        )
        .await;
    assert_envelope(&missing, 422, "validation_failed");
    assert_eq!(
        missing.body["details"]["field_errors"]["recipient"][0],
        "required"
    );

    let unknown_template = client
        .request(Method::POST, "/v1/send", Some(json!({ "recipient": { "slack_webhook_url": receiver.url("/slack") }, "template": "nope" })))
        .await;
    assert_envelope(&unknown_template, 422, "template_not_found");

    let missing_var = client
        .request(Method::POST, "/v1/send", Some(json!({ "recipient": { "slack_webhook_url": receiver.url("/slack") }, "template": "order_shipped" })))
        .await;
    assert_envelope(&missing_var, 422, "validation_failed");
    assert!(
        missing_var.body["details"]["field_errors"]["vars.order_id"].is_array(),
        "{}",
        missing_var.body
    );

    let bad_template = client
        .request(
            Method::PUT,
            "/v1/templates/broken",
            Some(json!({ "channels": { "slack": { "body": "ok\n{{ oops" } } })),
        )
        .await;
    assert_envelope(&bad_template, 422, "validation_failed");
    let message = bad_template.body["details"]["field_errors"]["channels.slack.body"][0]
        .as_str()
        .unwrap();
    assert!(message.contains("line 2"), "{message}");

    let unsupported = client
        .request(Method::POST, "/v1/send", Some(json!({ "recipient": { "email": "a@example.com" }, "template": "order_shipped", "channel": "email", "vars": { "order_id": "1" } })))
        .await;
    assert_envelope(&unsupported, 422, "validation_failed");

    let unknown_field = client
        .request(
            Method::POST,
            "/v1/events",
            Some(json!({ "event_id": "1", "event_name": "a.b", "colour": "red" })),
        )
        .await;
    assert_envelope(&unknown_field, 422, "validation_failed");

    assert_envelope(
        &client.request(Method::GET, "/v1/nowhere", None).await,
        404,
        "not_found",
    );
    let bad_path = client.request(Method::GET, "/v1/templates/%FF", None).await;
    assert_envelope(&bad_path, 422, "validation_failed");
    assert_envelope(
        &client
            .request(Method::GET, "/v1/deliveries/dlv_nope", None)
            .await,
        404,
        "not_found",
    );

    let wrong_admin = herald.client(Some("not-the-token"));
    assert_envelope(
        &wrong_admin
            .request(
                Method::POST,
                "/v1/admin/tenants",
                Some(json!({ "name": "x" })),
            )
            .await,
        401,
        "unauthorized",
    );

    // None of the rejected sends was accepted: nothing reached the receiver's Slack path.
    client
        .post(
            "/v1/events",
            json!({ "event_id": "barrier", "event_name": "order.done" }),
            202,
        )
        .await;
    receiver
        .wait_for("/hooks", 1, |r| r.json()["type"] == "order.done")
        .await;
    assert!(receiver.received("/slack").is_empty());
    herald.stop().await;
}

#[tokio::test]
async fn request_ids_are_kept_when_valid() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let http = reqwest::Client::new();
    let kept = http
        .get(format!("{}/v1/health", herald.base))
        .header("x-request-id", "req_from-proxy-1")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "req_from-proxy-1");
    let replaced = http
        .get(format!("{}/v1/health", herald.base))
        .header("x-request-id", "evil\tvalue")
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "evil\tvalue");
    herald.stop().await;
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = herald::Config {
        admin_token: None,
        ..test_config(dir.path())
    };
    let herald = TestHerald::start(config).await;
    let answer = herald
        .client(Some("anything"))
        .request(
            Method::POST,
            "/v1/admin/tenants",
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(answer.status, 404);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("HERALD_ADMIN_TOKEN"));
    herald.stop().await;
}
