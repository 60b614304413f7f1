//! Templates: listed by slug with cursor pages, deleted, and strict about syntax.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn templates_are_listed_paged_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let client = herald.tenant("Acme").await;
    let other = herald.tenant("Other").await;
    for slug in ["welcome", "alpha", "receipt"] {
        client
            .put(
                &format!("/v1/templates/{slug}"),
                json!({ "channels": { "slack": { "body": "Hi {{ name }}" } } }),
                201,
            )
            .await;
    }
    let first = client.get("/v1/templates?limit=2", 200).await;
    let slugs: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["alpha", "receipt"]);
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = client
        .get(&format!("/v1/templates?limit=2&cursor={cursor}"), 200)
        .await;
    assert_eq!(second["data"][0]["slug"], "welcome");
    assert_eq!(
        (second["has_more"].clone(), second["next_cursor"].clone()),
        (json!(false), json!(null))
    );
    assert!(other.get("/v1/templates", 200).await["data"]
        .as_array()
        .unwrap()
        .is_empty());

    // Another tenant cannot delete it; the owner can, once.
    other.delete("/v1/templates/alpha", 404).await;
    client.delete("/v1/templates/alpha", 204).await;
    client.get("/v1/templates/alpha", 404).await;
    client.delete("/v1/templates/alpha", 404).await;
    let listed = client.get("/v1/templates", 200).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    let refused = client
        .post(
            "/v1/send",
            json!({ "recipient": { "slack_webhook_url": "https://hooks.slack.com/services/x" },
                    "template": "alpha", "vars": { "name": "Ana" } }),
            422,
        )
        .await;
    assert_eq!(refused["code"], "template_not_found");

    // A syntax error is refused at PUT, naming the line.
    let bad = client
        .put(
            "/v1/templates/broken",
            json!({ "channels": { "slack": { "body": "line one\n{{ name " } } }),
            422,
        )
        .await;
    let message = bad["details"]["field_errors"]["channels.slack.body"][0]
        .as_str()
        .unwrap();
    assert!(message.contains("line 2"), "{message}");
    herald.stop().await;
}
