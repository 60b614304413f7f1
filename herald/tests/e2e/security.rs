//! Tenants are walls; private targets are refused unless allowed.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn another_tenants_resources_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let acme = herald.tenant("Acme").await;
    endpoint_and_template(&acme, &receiver).await;
    let sent = acme.post("/v1/send", send_body(&receiver, "1"), 202).await;
    let id = sent["delivery_id"].as_str().unwrap();
    acme.delivery_reaches(id, "delivered").await;

    let globex = herald.tenant("Globex").await;
    globex.get(&format!("/v1/deliveries/{id}"), 404).await;
    globex.get("/v1/templates/order_shipped", 404).await;
    assert_eq!(globex.get("/v1/webhooks", 200).await["data"], json!([]));
    // Sending with another tenant's recipient id fails as if it did not exist.
    let answer = globex
        .request(Method::POST, "/v1/send", Some(json!({ "recipient": { "id": sent["recipient"]["id"] }, "template": "order_shipped", "vars": { "order_id": "1" } })))
        .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(answer.body["details"]["field_errors"]["recipient.id"].is_array());
    herald.stop().await;
}

#[tokio::test]
async fn private_targets_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = herald::Config {
        allow_private_targets: false,
        ..test_config(dir.path())
    };
    let herald = TestHerald::start(config).await;
    let client = herald.tenant("Acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "ftp://example.com/",
    ] {
        let answer = client
            .request(Method::POST, "/v1/webhooks", Some(json!({ "url": url })))
            .await;
        assert_eq!(answer.status, 422, "{url}: {}", answer.body);
        assert!(answer.body["details"]["field_errors"]["url"].is_array());
    }
    client
        .put(
            "/v1/templates/t",
            json!({ "channels": { "slack": { "body": "hi" } } }),
            201,
        )
        .await;
    let answer = client
        .request(Method::POST, "/v1/send", Some(json!({ "recipient": { "slack_webhook_url": "http://192.168.1.1/x" }, "template": "t" })))
        .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    herald.stop().await;
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let client = herald.tenant("Acme").await;
    let key = client.bearer.clone().unwrap();
    herald.stop().await;
    // Neither the log nor the store holds the key itself anywhere on disk.
    let needle = key.as_bytes();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the API key is in clear in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
