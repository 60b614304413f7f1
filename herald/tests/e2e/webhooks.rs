//! Webhook subscriptions: auto-disable, retries, no head-of-line blocking, the three
//! signature schemes and rotation, sealed secrets, the attempt log, re-sends and replays.

use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::Mac as _;
use serde_json::{json, Value};

use crate::support::*;

/// Posts a business event and returns Herald's id for it (`evt_...`).
async fn event(client: &TestClient, name: &str, n: usize) -> String {
    let accepted = client
        .post(
            "/v1/events",
            json!({ "event_id": format!("{name}-{n}"), "event_name": name, "data": { "n": n } }),
            202,
        )
        .await;
    accepted["id"].as_str().unwrap().to_owned()
}

/// Creates an endpoint; returns (id, secret).
async fn endpoint(client: &TestClient, body: Value) -> (String, String) {
    let created = client.post("/v1/webhooks", body, 201).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn tenant_with_threshold(herald: &TestHerald, threshold: u32) -> TestClient {
    let created = herald
        .admin()
        .post(
            "/v1/admin/tenants",
            json!({ "name": "Acme", "endpoint_failure_threshold": threshold }),
            201,
        )
        .await;
    assert_eq!(created["tenant"]["endpoint_failure_threshold"], threshold);
    herald.client(Some(created["api_key"].as_str().unwrap()))
}

async fn endpoint_is_active(client: &TestClient, id: &str) -> Value {
    client.get(&format!("/v1/webhooks/{id}"), 200).await
}

#[tokio::test]
async fn the_tenth_consecutive_failure_disables_the_endpoint_and_nothing_more_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    disables_at_the_tenth_failure(test_config(dir.path())).await;
}

/// Also run on Kafka (`kafka.rs`).
pub async fn disables_at_the_tenth_failure(config: herald::Config) {
    let herald = TestHerald::start(config).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    // One attempt per event (no retries), so each event is one failure.
    let (failing, _) = endpoint(
        &client,
        json!({ "url": receiver.url("/failing"), "events": ["order.*"], "retry_schedule": [] }),
    )
    .await;
    endpoint(
        &client,
        json!({ "url": receiver.url("/watch"), "events": ["endpoint.disabled"] }),
    )
    .await;
    receiver.always("/failing", Reply::Status(500));

    let mut ids = Vec::new();
    for n in 0..15 {
        ids.push(event(&client, "order.paid", n).await);
    }
    // Every one of the 15 deliveries ends failed: 10 attempted, 5 never sent.
    for id in &ids {
        client
            .delivery_reaches(&webhook_delivery_id(id, &failing), "failed")
            .await;
    }
    assert_eq!(
        receiver.received("/failing").len(),
        10,
        "exactly 10 attempts"
    );
    let state = endpoint_is_active(&client, &failing).await;
    assert_eq!(state["is_active"], false);
    assert!(
        state["disabled_reason"]
            .as_str()
            .unwrap()
            .starts_with("10 consecutive failed attempts"),
        "{state}"
    );
    let notices = receiver
        .wait_for("/watch", 1, |r| r.json()["type"] == "endpoint.disabled")
        .await;
    assert_eq!(notices[0].json()["data"]["endpoint_id"], failing.as_str());
    assert_eq!(notices[0].json()["data"]["consecutive_failures"], 10);

    // The attempt log holds the 10 attempts, newest first, over pages of 4.
    let mut seen = Vec::new();
    let mut path = format!("/v1/webhooks/{failing}/attempts?limit=4");
    loop {
        let page = client.get(&path, 200).await;
        for attempt in page["data"].as_array().unwrap() {
            assert_eq!(attempt["status_code"], 500);
            assert_eq!(attempt["outcome"], "retriable");
            seen.push(attempt["attempted_at"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/webhooks/{failing}/attempts?limit=4&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 10);
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {seen:?}"
    );

    // Re-enabled, it receives again.
    receiver.always("/failing", Reply::Status(200));
    let patched = client
        .patch(
            &format!("/v1/webhooks/{failing}"),
            json!({ "is_active": true }),
            200,
        )
        .await;
    assert_eq!(patched["is_active"], true);
    assert_eq!(patched["disabled_reason"], Value::Null);
    let id = event(&client, "order.paid", 99).await;
    client
        .delivery_reaches(&webhook_delivery_id(&id, &failing), "delivered")
        .await;
    assert_eq!(receiver.received("/failing").len(), 11);
    herald.stop().await;
}

#[tokio::test]
async fn a_success_resets_the_count_and_the_threshold_is_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = tenant_with_threshold(&herald, 3).await;
    let (id, _) = endpoint(
        &client,
        json!({ "url": receiver.url("/flaky"), "retry_schedule": [] }),
    )
    .await;
    // One event at a time, so answers and attempts pair up in order.
    for (n, status) in [500, 500, 200, 500, 500].into_iter().enumerate() {
        receiver.answer_with("/flaky", &[status]);
        let evt = event(&client, "order.paid", n).await;
        let expected = if status == 200 { "delivered" } else { "failed" };
        client
            .delivery_reaches(&webhook_delivery_id(&evt, &id), expected)
            .await;
    }
    // 2 failures since the success: below the tenant's threshold of 3.
    assert_eq!(endpoint_is_active(&client, &id).await["is_active"], true);
    receiver.answer_with("/flaky", &[500]);
    event(&client, "order.paid", 5).await;
    eventually("the endpoint to be disabled", DEADLINE, || async {
        let state = endpoint_is_active(&client, &id).await;
        (state["is_active"] == false).then_some(())
    })
    .await;
    assert_eq!(receiver.received("/flaky").len(), 6);
    herald.stop().await;
}

#[tokio::test]
async fn gone_disables_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let (id, _) = endpoint(&client, json!({ "url": receiver.url("/gone") })).await;
    receiver.answer_with("/gone", &[410]);
    let evt = event(&client, "order.paid", 1).await;
    let delivery = client
        .delivery_reaches(&webhook_delivery_id(&evt, &id), "failed")
        .await;
    assert_eq!(delivery["attempts"], 1, "a 410 is not retried");
    let state = endpoint_is_active(&client, &id).await;
    assert_eq!(state["is_active"], false);
    assert!(state["disabled_reason"].as_str().unwrap().contains("410"));
    herald.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let (id, _) = endpoint(
        &client,
        json!({ "url": receiver.url("/busy"), "retry_schedule": ["50ms", "50ms"] }),
    )
    .await;
    receiver.reply_with("/busy", &[Reply::RetryAfter(429, 1)]);
    let evt = event(&client, "order.paid", 1).await;
    client
        .delivery_reaches(&webhook_delivery_id(&evt, &id), "delivered")
        .await;
    let got = receiver.received("/busy");
    assert_eq!(got.len(), 2);
    let waited = got[1].at.duration_since(got[0].at);
    assert!(
        waited >= Duration::from_secs(1),
        "the retry came after {waited:?}, before the receiver's Retry-After of 1 s"
    );
    herald.stop().await;
}

/// Measured: a hanging endpoint (every request hangs past the timeout) and a throttled one
/// are both busy while a healthy endpoint's deliveries arrive at their usual speed.
#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    endpoint(
        &client,
        json!({ "url": receiver.url("/hang"), "events": ["slow.*"], "retry_schedule": [] }),
    )
    .await;
    endpoint(
        &client,
        json!({ "url": receiver.url("/throttled"), "events": ["slow.*"], "rate_limit_per_second": 5 }),
    )
    .await;
    endpoint(
        &client,
        json!({ "url": receiver.url("/fast"), "events": ["fast.*"] }),
    )
    .await;
    receiver.always("/hang", Reply::Hang(Duration::from_secs(60)));

    // First the slow traffic, 40 events: the hanging endpoint's lane fills with tasks that
    // each wait out the 5 s timeout.
    for n in 0..40 {
        event(&client, "slow.thing", n).await;
    }
    // Near the failure threshold (10) concurrency narrows: 10 requests hang at most.
    receiver.wait_for("/hang", 10, |_| true).await;
    // Then the healthy endpoint's traffic, behind it in the log.
    let started = Instant::now();
    for n in 0..20 {
        event(&client, "fast.thing", n).await;
    }
    let fast = receiver.wait_for("/fast", 20, |_| true).await;
    let took = fast
        .iter()
        .map(|r| r.at)
        .max()
        .unwrap()
        .duration_since(started);
    println!("20 deliveries to a healthy endpoint beside a hanging one: {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "deliveries to a healthy endpoint took {took:?}, behind a hanging one (timeout 5 s)"
    );
    assert_eq!(
        receiver.received("/hang").len(),
        10,
        "a hanging endpoint gets at most as many requests as failures could disable it"
    );

    // The throttled endpoint got its 40 at no more than 5 per second (a burst of 5 first).
    let throttled = receiver.wait_for("/throttled", 40, |_| true).await;
    let spread = throttled.last().unwrap().at.duration_since(throttled[0].at);
    assert!(
        spread >= Duration::from_millis(6_800),
        "40 requests at 5/s (burst 5) need at least 7 s, took {spread:?}"
    );
    herald.stop().await;
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stripe-style: `Herald-Signature: t=<ts>,v1=<hex>[,v1=<hex>]`, keyed with the secret string.
fn verify_stripe(secret: &str, received: &Received) -> bool {
    let header = received.header("herald-signature");
    let t = header
        .split(',')
        .find_map(|part| part.strip_prefix("t="))
        .unwrap();
    let expected = hmac_hex(secret.as_bytes(), &[t.as_bytes(), b".", &received.body]);
    header
        .split(',')
        .filter_map(|part| part.strip_prefix("v1="))
        .any(|sig| sig == expected)
}

/// Hex: `X-Herald-Signature: <hex>[,<hex>]` of the body, keyed with the secret string.
fn verify_hex(secret: &str, received: &Received) -> bool {
    let expected = hmac_hex(secret.as_bytes(), &[&received.body]);
    received
        .header("x-herald-signature")
        .split(',')
        .any(|sig| sig == expected)
}

#[tokio::test]
async fn every_signature_scheme_verifies_and_rotation_signs_with_both_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    // Secrets sealed at rest: nothing below may notice.
    config.secret_key = Some(herald::config::SecretText(
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    ));
    let herald = TestHerald::start(config).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let mut endpoints = Vec::new();
    for scheme in ["standard", "stripe", "hex"] {
        let (id, secret) = endpoint(
            &client,
            json!({ "url": receiver.url(&format!("/{scheme}")), "signature_scheme": scheme }),
        )
        .await;
        endpoints.push((scheme, id, secret));
    }
    let verify = |scheme: &str, secret: &str, received: &Received| match scheme {
        "standard" => verify_standard_signature(secret, received),
        "stripe" => verify_stripe(secret, received),
        _ => verify_hex(secret, received),
    };

    event(&client, "order.paid", 1).await;
    for (scheme, _, secret) in &endpoints {
        let got = receiver.wait_for(&format!("/{scheme}"), 1, |_| true).await;
        assert!(verify(scheme, secret, &got[0]), "{scheme} signature");
        assert!(!verify(
            scheme,
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &got[0]
        ));
        assert!(got[0].header("webhook-id").starts_with("evt_"));
    }

    // Rotation: the next delivery carries signatures by the new and the old secret.
    let mut rotated = Vec::new();
    for (scheme, id, old) in &endpoints {
        let answer = client
            .post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({}), 200)
            .await;
        let new = answer["secret"].as_str().unwrap().to_owned();
        assert_ne!(&new, old);
        assert!(answer["previous_secret_expires_at"].is_string());
        rotated.push((scheme, old.clone(), new));
    }
    // Endpoints are cached for up to a second by the dispatcher: the rotation shows within it.
    let mut n = 2;
    for (scheme, old, new) in &rotated {
        let path = format!("/{scheme}");
        eventually(
            &format!("{scheme}: a delivery signed with both secrets"),
            DEADLINE,
            || {
                n += 1;
                let client = client.clone();
                let receiver = receiver.clone();
                let path = path.clone();
                async move {
                    let before = receiver.received(&path).len();
                    event(&client, "order.paid", n).await;
                    let got = receiver.wait_for(&path, before + 1, |_| true).await;
                    let latest = got.last().unwrap();
                    (verify(scheme, new, latest) && verify(scheme, old, latest)).then_some(())
                }
            },
        )
        .await;
    }

    // Sealed at rest: no secret appears in the data directory.
    herald.stop().await;
    for (_, old, new) in &rotated {
        for secret in [old, new] {
            assert!(
                !data_dir_contains(dir.path(), secret.as_bytes()),
                "a signing secret is stored in clear"
            );
        }
    }
}

fn data_dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn a_failed_delivery_can_be_re_sent_and_a_window_replayed() {
    let dir = tempfile::tempdir().unwrap();
    re_send_and_replay(test_config(dir.path())).await;
}

/// Also run on Kafka (`kafka.rs`).
pub async fn re_send_and_replay(config: herald::Config) {
    let herald = TestHerald::start(config).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let (id, _) = endpoint(
        &client,
        json!({ "url": receiver.url("/orders"), "events": ["order.*"], "retry_schedule": [] }),
    )
    .await;
    let before = chrono::Utc::now();
    receiver.answer_with("/orders", &[503]);
    let evt = event(&client, "order.paid", 1).await;
    let delivery = webhook_delivery_id(&evt, &id);
    let failed = client.delivery_reaches(&delivery, "failed").await;
    assert_eq!(failed["attempts"], 1);

    // The attempt log shows what happened.
    let log = client
        .get(&format!("/v1/webhooks/{id}/attempts"), 200)
        .await;
    let attempt = &log["data"][0];
    assert_eq!(attempt["delivery_id"], delivery.as_str());
    assert_eq!(attempt["status_code"], 503);
    assert_eq!(attempt["message_id"], evt.as_str());
    assert!(attempt["latency_ms"].is_number() && attempt["error"].is_string());

    // Re-sent now: a second attempt, delivered, with the same webhook-id. (Until the
    // projector has stored the dead letter, the answer is a 409 saying so.)
    let retried = eventually("the re-send to be accepted", DEADLINE, || async {
        let answer = client
            .request(
                reqwest::Method::POST,
                &format!("/v1/deliveries/{delivery}/retry"),
                Some(json!({})),
            )
            .await;
        (answer.status == 202).then_some(answer.body)
    })
    .await;
    assert_eq!(retried["attempt"], 2);
    let done = client.delivery_reaches(&delivery, "delivered").await;
    assert_eq!(done["attempts"], 2);
    let got = receiver.received("/orders");
    assert_eq!(got[1].header("webhook-id"), evt);
    // Only failed deliveries can be re-sent.
    let again = client
        .request(
            reqwest::Method::POST,
            &format!("/v1/deliveries/{delivery}/retry"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (409, Some("conflict"))
    );

    // Replay: two more order events and one it does not subscribe to.
    event(&client, "order.shipped", 2).await;
    event(&client, "invoice.paid", 3).await;
    receiver.wait_for("/orders", 3, |_| true).await;
    let window = json!({ "since": before, "dry_run": true });
    let dry = client
        .post(&format!("/v1/webhooks/{id}/replay"), window, 200)
        .await;
    assert_eq!(dry["events"], 2, "{dry}");
    assert_eq!(
        receiver.received("/orders").len(),
        3,
        "a dry run sends nothing"
    );
    let replayed = client
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            json!({ "since": before }),
            202,
        )
        .await;
    assert_eq!(replayed["events"], 2);
    let all = receiver.wait_for("/orders", 5, |_| true).await;
    let mut replayed_ids: Vec<&str> = all[3..].iter().map(|r| r.header("webhook-id")).collect();
    replayed_ids.sort();
    let mut original_ids: Vec<&str> =
        vec![all[0].header("webhook-id"), all[2].header("webhook-id")];
    original_ids.sort();
    assert_eq!(
        replayed_ids, original_ids,
        "replays keep each event's webhook-id"
    );
    // A window before everything holds nothing; a window that ends before it starts is refused.
    let hour = chrono::TimeDelta::hours(1);
    let empty = client
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            json!({ "since": before - hour, "until": before, "dry_run": true }),
            200,
        )
        .await;
    assert_eq!(empty["events"], 0);
    let backwards = client
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            json!({ "since": before, "until": before - hour }),
            422,
        )
        .await;
    assert_eq!(
        backwards["details"]["field_errors"]["since"][0],
        "must be before `until` and the present"
    );
    herald.stop().await;
}

#[tokio::test]
async fn endpoints_can_be_read_changed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let other = herald.tenant("Other").await;
    let (id, _) = endpoint(
        &client,
        json!({ "url": receiver.url("/a"), "events": ["order.*"], "retry_schedule": "30s,2m,10m" }),
    )
    .await;
    let shown = client.get(&format!("/v1/webhooks/{id}"), 200).await;
    assert_eq!(shown["retry_schedule"], json!(["30s", "2m", "10m"]));
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown only once"
    );

    let patched = client
        .patch(
            &format!("/v1/webhooks/{id}"),
            json!({ "url": receiver.url("/b"), "retry_schedule": ["5m", "30m", "2h", "5h", "10h"], "rate_limit_per_second": 10, "description": "orders" }),
            200,
        )
        .await;
    assert_eq!(patched["url"], receiver.url("/b"));
    assert_eq!(
        patched["retry_schedule"],
        json!(["5m", "30m", "2h", "5h", "10h"])
    );
    assert_eq!(patched["rate_limit_per_second"], 10);
    let cleared = client
        .patch(
            &format!("/v1/webhooks/{id}"),
            json!({ "retry_schedule": null, "description": null }),
            200,
        )
        .await;
    assert_eq!(cleared["retry_schedule"], Value::Null);
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["url"], receiver.url("/b"), "absent fields stay");

    let bad = client
        .patch(
            &format!("/v1/webhooks/{id}"),
            json!({ "retry_schedule": ["soon"], "rate_limit_per_second": 0 }),
            422,
        )
        .await;
    let errors = &bad["details"]["field_errors"];
    assert!(
        errors["retry_schedule"].is_array() && errors["rate_limit_per_second"].is_array(),
        "{bad}"
    );

    // Another tenant sees nothing of it.
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/webhooks/{id}")),
        (reqwest::Method::PATCH, format!("/v1/webhooks/{id}")),
        (reqwest::Method::DELETE, format!("/v1/webhooks/{id}")),
        (reqwest::Method::GET, format!("/v1/webhooks/{id}/attempts")),
        (
            reqwest::Method::POST,
            format!("/v1/webhooks/{id}/rotate-secret"),
        ),
        (reqwest::Method::POST, format!("/v1/webhooks/{id}/replay")),
    ] {
        let body = match method {
            reqwest::Method::GET | reqwest::Method::DELETE => None,
            _ if path.ends_with("replay") => Some(json!({ "since": "2020-01-01T00:00:00Z" })),
            _ => Some(json!({})),
        };
        let answer = other.request(method.clone(), &path, body).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
    }

    // Deleted: gone from reads, and events are no longer sent to it.
    client.delete(&format!("/v1/webhooks/{id}"), 204).await;
    client.get(&format!("/v1/webhooks/{id}"), 404).await;
    let list = client.get("/v1/webhooks", 200).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    let (watch, _) = endpoint(&client, json!({ "url": receiver.url("/c") })).await;
    let evt = event(&client, "order.paid", 1).await;
    client
        .delivery_reaches(&webhook_delivery_id(&evt, &watch), "delivered")
        .await;
    assert!(receiver.received("/b").is_empty());
    herald.stop().await;
}

#[tokio::test]
async fn the_threshold_can_be_changed_for_a_tenant_with_live_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let herald = TestHerald::start(test_config(dir.path())).await;
    let receiver = TestReceiver::start().await;
    let created = herald
        .admin()
        .post("/v1/admin/tenants", json!({ "name": "Acme" }), 201)
        .await;
    assert_eq!(created["tenant"]["endpoint_failure_threshold"], 10);
    let tenant_id = created["tenant"]["id"].as_str().unwrap().to_owned();
    let client = herald.client(Some(created["api_key"].as_str().unwrap()));
    let (id, _) = endpoint(
        &client,
        json!({ "url": receiver.url("/down"), "retry_schedule": [] }),
    )
    .await;
    receiver.always("/down", Reply::Status(502));
    let first = event(&client, "order.paid", 0).await;
    client
        .delivery_reaches(&webhook_delivery_id(&first, &id), "failed")
        .await;
    assert_eq!(endpoint_is_active(&client, &id).await["is_active"], true);

    let patched = herald
        .admin()
        .patch(
            &format!("/v1/admin/tenants/{tenant_id}"),
            json!({ "endpoint_failure_threshold": 2 }),
            200,
        )
        .await;
    assert_eq!(patched["endpoint_failure_threshold"], 2);
    // The dispatcher picks the new threshold up within its cache's second: keep failing.
    let mut n = 1;
    eventually(
        "the endpoint to be disabled under the new threshold",
        DEADLINE,
        || {
            n += 1;
            let client = client.clone();
            let id = id.clone();
            async move {
                let evt = event(&client, "order.paid", n).await;
                client
                    .delivery_reaches(&webhook_delivery_id(&evt, &id), "failed")
                    .await;
                (endpoint_is_active(&client, &id).await["is_active"] == false).then_some(())
            }
        },
    )
    .await;
    let errors = herald
        .admin()
        .patch(
            &format!("/v1/admin/tenants/{tenant_id}"),
            json!({ "endpoint_failure_threshold": 0 }),
            422,
        )
        .await;
    assert!(errors["details"]["field_errors"]["endpoint_failure_threshold"].is_array());
    herald.stop().await;
}

#[tokio::test]
async fn an_allowlisted_network_is_reachable_and_nothing_else_private_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = herald::Config {
        allow_private_targets: false,
        allowed_target_cidrs: "127.0.0.1/32".into(),
        ..test_config(dir.path())
    };
    let herald = TestHerald::start(config).await;
    let receiver = TestReceiver::start().await;
    let client = herald.tenant("Acme").await;
    let (id, _) = endpoint(&client, json!({ "url": receiver.url("/dev") })).await;
    let evt = event(&client, "order.paid", 1).await;
    client
        .delivery_reaches(&webhook_delivery_id(&evt, &id), "delivered")
        .await;
    for url in [
        "http://127.0.0.2/x",
        "http://[::1]/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let answer = client
            .request(
                reqwest::Method::POST,
                "/v1/webhooks",
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(answer.status, 422, "{url} must be refused: {}", answer.body);
    }
    herald.stop().await;
}
