//! The test harness: Herald in-process on port 0 with a temporary data dir, a typed client
//! that asserts statuses, and a receiver that records what Herald delivers and can be told
//! to fail. Nothing sleeps to wait: [`eventually`] polls with a deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use herald::{Config, Roles, Server};
use serde_json::{json, Value};

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a test waits for what it expects before failing. Generous: the full suite runs
/// Herald instances, child processes and a Kafka-API broker side by side on two cores, and
/// a passing test never waits longer than it must.
pub const DEADLINE: Duration = Duration::from_secs(45);

pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        admin_token: Some(ADMIN_TOKEN.into()),
        allow_private_targets: true,
        retry_schedule: "50ms,50ms,50ms".parse().unwrap(),
        partitions: 4,
        delivery_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// Herald running in this test process.
pub struct TestHerald {
    pub server: Server,
    pub base: String,
}

impl TestHerald {
    pub async fn start(config: Config) -> Self {
        let server = Server::start(config, Roles::ALL)
            .await
            .expect("herald starts");
        let base = format!("http://{}", server.http_addr().unwrap());
        Self { server, base }
    }

    /// Herald on a clock the test can move forward.
    pub async fn start_with_adjustable_clock(
        config: Config,
    ) -> (Self, herald_http::clock::ClockHandle) {
        let (clock, handle) = herald_http::clock::Clock::adjustable();
        let backends = herald::Backends {
            clock,
            ..herald::Backends::open(&config)
                .await
                .expect("backends open")
        };
        let server = Server::start_with(config, Roles::ALL, backends)
            .await
            .expect("herald starts");
        let base = format!("http://{}", server.http_addr().unwrap());
        (Self { server, base }, handle)
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("herald stops cleanly");
    }

    pub fn client(&self, key: Option<&str>) -> TestClient {
        TestClient {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            bearer: key.map(str::to_owned),
        }
    }

    pub fn admin(&self) -> TestClient {
        self.client(Some(ADMIN_TOKEN))
    }

    /// Creates a tenant and returns a client authenticated with its key.
    pub async fn tenant(&self, name: &str) -> TestClient {
        let created = self
            .admin()
            .post("/v1/admin/tenants", json!({ "name": name }), 201)
            .await;
        self.client(Some(created["api_key"].as_str().unwrap()))
    }
}

/// An HTTP client for Herald's API that asserts the expected status of every call.
#[derive(Clone)]
pub struct TestClient {
    pub http: reqwest::Client,
    pub base: String,
    pub bearer: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestClient {
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(bearer) = &self.bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request).await
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(bearer) = &self.bearer {
            request = request.bearer_auth(bearer);
        }
        Self::answer(request).await
    }

    async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("herald answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let answer = self.request(method.clone(), path, body).await;
        assert_eq!(
            answer.status, status,
            "{method} {path} answered {}: {}",
            answer.status, answer.body
        );
        answer.body
    }

    pub async fn post(&self, path: &str, body: Value, status: u16) -> Value {
        self.expect(reqwest::Method::POST, path, Some(body), status)
            .await
    }

    pub async fn put(&self, path: &str, body: Value, status: u16) -> Value {
        self.expect(reqwest::Method::PUT, path, Some(body), status)
            .await
    }

    pub async fn patch(&self, path: &str, body: Value, status: u16) -> Value {
        self.expect(reqwest::Method::PATCH, path, Some(body), status)
            .await
    }

    pub async fn delete(&self, path: &str, status: u16) -> Value {
        self.expect(reqwest::Method::DELETE, path, None, status)
            .await
    }

    pub async fn get(&self, path: &str, status: u16) -> Value {
        self.expect(reqwest::Method::GET, path, None, status).await
    }

    /// Waits until the delivery's status is `status` and returns it.
    pub async fn delivery_reaches(&self, id: &str, status: &str) -> Value {
        eventually(
            &format!("delivery {id} to be {status}"),
            DEADLINE,
            || async {
                let answer = self
                    .request(reqwest::Method::GET, &format!("/v1/deliveries/{id}"), None)
                    .await;
                (answer.status == 200 && answer.body["status"] == status).then_some(answer.body)
            },
        )
        .await
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// No answer for this long (longer than Herald's timeout: a timeout).
    Hang(Duration),
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Per path, replies to give in order; once used up, the path's default.
    scripts: std::collections::HashMap<String, VecDeque<Reply>>,
    /// Per path, the reply once its script is used up (200 if none).
    defaults: std::collections::HashMap<String, Reply>,
}

/// Records every request and answers as scripted (200 by default).
#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl TestReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests to `path` are answered with these statuses, in order.
    pub fn answer_with(&self, path: &str, statuses: &[u16]) {
        let replies: Vec<Reply> = statuses.iter().map(|s| Reply::Status(*s)).collect();
        self.reply_with(path, &replies);
    }

    /// Queues replies for the next requests at `path`.
    pub fn reply_with(&self, path: &str, replies: &[Reply]) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(replies.iter().copied());
    }

    /// How `path` answers once its script is used up.
    pub fn always(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .defaults
            .insert(path.to_owned(), reply);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `count` requests matching `filter` arrived at `path`; returns them.
    pub async fn wait_for(
        &self,
        path: &str,
        count: usize,
        filter: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        eventually(&format!("{count} requests at {path}"), DEADLINE, || {
            let matching: Vec<Received> = self
                .received(path)
                .into_iter()
                .filter(|r| filter(r))
                .collect();
            async move { (matching.len() >= count).then_some(matching) }
        })
        .await
    }
}

async fn record(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let reply = {
        let mut state = state.lock().unwrap();
        let path = uri.path().to_owned();
        let reply = state
            .scripts
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .or_else(|| state.defaults.get(&path).copied())
            .unwrap_or(Reply::Status(200));
        state.received.push(Received {
            path,
            headers,
            body,
            at: std::time::Instant::now(),
        });
        reply
    };
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Reply::RetryAfter(status, seconds) => (
            StatusCode::from_u16(status).unwrap(),
            [("retry-after", seconds.to_string())],
        )
            .into_response(),
        Reply::Hang(duration) => {
            tokio::time::sleep(duration).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Verifies a Standard Webhooks signature independently of Herald's own code.
pub fn verify_standard_signature(secret: &str, received: &Received) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.",
        received.header("webhook-id"),
        received.header("webhook-timestamp")
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    mac.update(&received.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    received
        .header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

/// Sets up the walk-through's resources: an endpoint subscribed to everything and a
/// Slack template. Returns the endpoint's secret.
pub async fn endpoint_and_template(client: &TestClient, receiver: &TestReceiver) -> String {
    let endpoint = client
        .post(
            "/v1/webhooks",
            json!({ "url": receiver.url("/hooks"), "events": ["order.*", "delivery.*"] }),
            201,
        )
        .await;
    client
        .put(
            "/v1/templates/order_shipped",
            json!({ "channels": { "slack": { "body": "Order {{ order_id }} shipped" } } }),
            201,
        )
        .await;
    endpoint["secret"].as_str().unwrap().to_owned()
}

pub fn send_body(receiver: &TestReceiver, order_id: &str) -> Value {
    json!({
        "recipient": { "slack_webhook_url": receiver.url("/slack") },
        "template": "order_shipped",
        "vars": { "order_id": order_id },
    })
}

/// The delivery id of a business event's webhook to an endpoint, derived the way the
/// dispatcher derives it (from the event id and the endpoint id).
pub fn webhook_delivery_id(event_id: &str, endpoint_id: &str) -> String {
    use herald_domain::ids::{DeliveryId, EventId};
    let at = EventId::from_trusted(event_id).timestamp_ms();
    DeliveryId::derive(at, format!("{event_id}/{endpoint_id}").as_bytes()).to_string()
}
