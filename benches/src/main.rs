//! `loadgen`: measures, in one run and on one machine, a bare axum baseline, Herald's accepted
//! `POST /v1/send` per second with deliveries flowing, end-to-end latency (request sent →
//! receiver got the message), and end-to-end latency at a fixed open-loop rate.
//!
//! Servers under test (the baseline, Herald) run on their own Tokio runtime; the load
//! generator and the receiver run on another. Both share the machine's cores. All traffic
//! goes to 127.0.0.1 and every phase is bounded in time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

/// The same allocator as the `herald` binary, so Herald runs here as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN_TOKEN: &str = "bench-admin-token";
/// The end-to-end p99 target at 2,000 sends/s (DESIGN.md "Performance targets").
const P99_TARGET_MS: f64 = 25.0;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Herald load generator: baseline req/s, Herald accepted/s, end-to-end latency"
)]
struct Args {
    /// Length of each load phase, e.g. `10`, `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent connections (one HTTP/1.1 keep-alive client per worker).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Sends per second of the fixed-rate (open-loop) phase.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Longest wait, after the load stops, for deliveries to catch up.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain: Duration,
    /// Distinct recipients (Slack webhook URLs) the sends rotate over.
    #[arg(long, default_value_t = 1)]
    recipients: usize,
    /// Skip the bare-axum baseline.
    #[arg(long)]
    skip_baseline: bool,
    /// Skip the closed-loop Herald phase.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the fixed-rate Herald phase.
    #[arg(long)]
    skip_rate: bool,
    /// Skip the backlog phase (sends accepted with the dispatcher off, then drained by a
    /// dispatcher alone: the dispatcher's delivery ceiling).
    #[arg(long)]
    skip_backlog: bool,
    /// Run Herald with fsync off (default: on, as Herald's default).
    #[arg(long)]
    no_fsync: bool,
    /// Worker threads of the runtime the servers under test run on (default: nproc).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Worker threads of the load generator's and receiver's runtime (default: nproc).
    #[arg(long)]
    client_threads: Option<usize>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (try 10s, 500ms, 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?}: use ms, s or m")),
    };
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err("must be between 0 and 1h".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

// ---------------------------------------------------------------------------------------
// Clock and histograms

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds on a monotonic clock shared by the sender and the receiver (same process).
fn clock_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

fn instant_us(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

type Hist = Histogram<u64>;

/// Microseconds, 1 µs to 10 min, 3 significant digits.
fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quantiles(h: &Hist) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}

// ---------------------------------------------------------------------------------------
// Receiver: stands in for Slack, records now − sent_at_us for every message.

const PHASE_THROUGHPUT: usize = 0;
const PHASE_RATE: usize = 1;
const PHASE_BACKLOG: usize = 2;

struct PhaseReceipts {
    latency: Hist,
    received: u64,
    duplicates: u64,
    malformed: u64,
    warmups: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    seen: Vec<u64>,
}

impl PhaseReceipts {
    fn new() -> Self {
        Self {
            latency: new_hist(),
            received: 0,
            duplicates: 0,
            malformed: 0,
            warmups: 0,
            first: None,
            last: None,
            seen: Vec::new(),
        }
    }

    /// Marks `n` as seen; false if it already was.
    fn mark(&mut self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        fresh
    }
}

struct Receiver {
    phases: [Mutex<PhaseReceipts>; 3],
}

impl Receiver {
    fn new() -> Self {
        Self {
            phases: std::array::from_fn(|_| Mutex::new(PhaseReceipts::new())),
        }
    }

    fn phase(&self, phase: usize) -> std::sync::MutexGuard<'_, PhaseReceipts> {
        self.phases[phase].lock().expect("receiver lock")
    }
}

/// Parses `{"text": "<n> <sent_at_us>"}`.
fn parse_message(body: &[u8]) -> Option<(u64, u64)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut parts = value.get("text")?.as_str()?.split_whitespace();
    let n = parts.next()?.parse().ok()?;
    let sent_at_us = parts.next()?.parse().ok()?;
    Some((n, sent_at_us))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path((phase, _recipient)): Path<(usize, usize)>,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let now_us = clock_us();
    let now = Instant::now();
    if phase >= receiver.phases.len() {
        return (StatusCode::NOT_FOUND, "no such phase");
    }
    let mut r = receiver.phase(phase);
    match parse_message(&body) {
        None => r.malformed += 1,
        Some((0, _)) => r.warmups += 1,
        Some((n, sent_at_us)) => {
            if r.mark(n) {
                r.received += 1;
                r.latency
                    .saturating_record(now_us.saturating_sub(sent_at_us).max(1));
                r.first.get_or_insert(now);
                r.last = Some(now);
            } else {
                r.duplicates += 1;
            }
        }
    }
    (StatusCode::OK, "ok")
}

async fn start_receiver(receiver: Arc<Receiver>) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/slack/{phase}/{recipient}", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("receiver failed: {err}");
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------
// Baseline: a bare axum server answering 202 to a JSON POST.

async fn baseline_send(Json(_body): Json<Value>) -> (StatusCode, Json<Value>) {
    (StatusCode::ACCEPTED, Json(json!({"status": "queued"})))
}

async fn start_baseline() -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let app = Router::new().route("/v1/send", post(baseline_send));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(err) = serve.await {
            eprintln!("baseline server failed: {err}");
        }
    });
    Ok((addr, stop))
}

// ---------------------------------------------------------------------------------------
// Load

struct Target {
    url: String,
    authorization: Option<String>,
    recipients: Vec<String>,
}

impl Target {
    fn body(&self, n: u64, sent_at_us: u64) -> String {
        let recipient = &self.recipients[n as usize % self.recipients.len()];
        format!(
            r#"{{"recipient":{{"slack_webhook_url":"{recipient}"}},"template":"bench","vars":{{"n":{n},"sent_at_us":{sent_at_us}}}}}"#
        )
    }
}

struct LoadStats {
    statuses: BTreeMap<u16, u64>,
    /// First response body seen for each non-202 status.
    samples: BTreeMap<u16, String>,
    errors: u64,
    first_error: Option<String>,
    /// Client-side request latency (send → full response), µs.
    request: Hist,
    /// Open loop only: how late each send started against its timetable slot, µs.
    lag: Hist,
}

impl LoadStats {
    fn new() -> Self {
        Self {
            statuses: BTreeMap::new(),
            samples: BTreeMap::new(),
            errors: 0,
            first_error: None,
            request: new_hist(),
            lag: new_hist(),
        }
    }

    fn merge(&mut self, other: LoadStats) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (status, sample) in other.samples {
            self.samples.entry(status).or_insert(sample);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.request.add(&other.request).expect("same bounds");
        self.lag.add(&other.lag).expect("same bounds");
    }

    fn accepted(&self) -> u64 {
        self.statuses.get(&202).copied().unwrap_or(0)
    }

    fn rejected(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| **status != 202)
            .map(|(_, count)| count)
            .sum()
    }

    fn describe_failures(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != 202)
            .map(|(status, count)| {
                let sample = self.samples.get(status).map(String::as_str).unwrap_or("");
                format!("{status}×{count} (e.g. {sample})")
            })
            .collect();
        if self.errors > 0 {
            parts.push(format!(
                "transport errors×{} (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

struct LoadRun {
    stats: LoadStats,
    start: Instant,
    elapsed: Duration,
    attempted: u64,
    cpu: CpuUse,
}

impl LoadRun {
    fn accepted_per_sec(&self) -> f64 {
        self.stats.accepted() as f64 / self.elapsed.as_secs_f64()
    }
}

fn worker_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn send_one(
    client: &reqwest::Client,
    target: &Target,
    n: u64,
    sent_at_us: u64,
    stats: &mut LoadStats,
) {
    let started = Instant::now();
    let mut request = client
        .post(&target.url)
        .header(CONTENT_TYPE, "application/json")
        .body(target.body(n, sent_at_us));
    if let Some(authorization) = &target.authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            response.bytes().await.map(|body| (status, body))
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok((status, body)) => {
            *stats.statuses.entry(status).or_default() += 1;
            if status != 202 && !stats.samples.contains_key(&status) {
                let text = String::from_utf8_lossy(&body);
                stats
                    .samples
                    .insert(status, text.chars().take(200).collect());
            }
            stats
                .request
                .saturating_record(started.elapsed().as_micros().max(1) as u64);
        }
        Err(err) => {
            stats.errors += 1;
            if stats.first_error.is_none() {
                let mut message = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                stats.first_error = Some(message);
            }
        }
    }
}

/// Closed loop: `concurrency` workers each send back to back for `duration`.
async fn closed_loop(
    target: Arc<Target>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<LoadRun> {
    let next = Arc::new(AtomicU64::new(1));
    let cpu_before = CpuSnapshot::take();
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let client = worker_client()?;
        let (target, next) = (target.clone(), next.clone());
        workers.spawn(async move {
            let mut stats = LoadStats::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                send_one(&client, &target, n, clock_us(), &mut stats).await;
            }
            stats
        });
    }
    let mut stats = LoadStats::new();
    while let Some(worker) = workers.join_next().await {
        stats.merge(worker?);
    }
    Ok(LoadRun {
        stats,
        start,
        elapsed: start.elapsed(),
        attempted: next.load(Ordering::Relaxed) - 1,
        cpu: CpuSnapshot::take().since(&cpu_before),
    })
}

/// Open loop: send number i is due at start + i / rate, whatever happened to earlier ones;
/// `concurrency` workers take the next due slot when free. `sent_at_us` is the slot's time,
/// so a late start counts against latency (no coordinated omission).
async fn open_loop(
    target: Arc<Target>,
    concurrency: usize,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<LoadRun> {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = CpuSnapshot::take();
    let start = Instant::now() + Duration::from_millis(50);
    let start_us = instant_us(start);
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let client = worker_client()?;
        let (target, next) = (target.clone(), next.clone());
        workers.spawn(async move {
            let mut stats = LoadStats::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let offset = Duration::from_nanos(i * 1_000_000_000 / rate);
                let due = start + offset;
                tokio::time::sleep_until(due.into()).await;
                let lag = Instant::now().saturating_duration_since(due);
                stats.lag.saturating_record(lag.as_micros() as u64);
                let sent_at_us = start_us + offset.as_micros() as u64;
                send_one(&client, &target, i + 1, sent_at_us, &mut stats).await;
            }
            stats
        });
    }
    let mut stats = LoadStats::new();
    while let Some(worker) = workers.join_next().await {
        stats.merge(worker?);
    }
    Ok(LoadRun {
        stats,
        start,
        elapsed: start.elapsed(),
        attempted: total,
        cpu: CpuSnapshot::take().since(&cpu_before),
    })
}

// ---------------------------------------------------------------------------------------
// Herald

struct RunningHerald {
    server: herald::Server,
    base: Option<String>,
}

fn data_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("herald-bench-")
        .tempdir()
        .context("cannot create a temporary data directory")
}

async fn start_herald(
    server_rt: &Handle,
    data_dir: &std::path::Path,
    fsync: bool,
    roles: herald::Roles,
) -> anyhow::Result<RunningHerald> {
    let config = herald::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_owned(),
        admin_token: Some(ADMIN_TOKEN.into()),
        allow_private_targets: true,
        fsync,
        ..Default::default()
    };
    // Started from a task on the server runtime, so Herald's tasks live there.
    let server = server_rt
        .spawn(herald::Server::start(config, roles))
        .await??;
    let base = server.http_addr().map(|addr| format!("http://{addr}"));
    Ok(RunningHerald { server, base })
}

impl RunningHerald {
    fn base(&self) -> anyhow::Result<&str> {
        self.base.as_deref().context("Herald serves no HTTP")
    }
}

async fn stop_herald(server_rt: &Handle, herald: RunningHerald) {
    let stopping = server_rt.spawn(herald.server.stop());
    match tokio::time::timeout(Duration::from_secs(30), stopping).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => println!("  ! Herald stopped with an error: {err:#}"),
        Ok(Err(err)) => println!("  ! Herald's stop panicked: {err}"),
        Err(_) => println!("  ! Herald did not stop within 30 s"),
    }
}

async fn check(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

/// Creates a tenant and the `bench` template; returns the API key.
async fn set_up_tenant(base: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::new();
    let created = check(
        client
            .post(format!("{base}/v1/admin/tenants"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "bench", "plan": {"rate_limit_per_minute": 1_000_000}}))
            .send()
            .await?,
        "creating the tenant",
    )
    .await?;
    let api_key = created["api_key"]
        .as_str()
        .context("no api_key in the tenant response")?
        .to_owned();
    check(
        client
            .put(format!("{base}/v1/templates/bench"))
            .bearer_auth(&api_key)
            .json(&json!({"channels": {"slack": {"body": "{{ n }} {{ sent_at_us }}"}}}))
            .send()
            .await?,
        "creating the template",
    )
    .await?;
    Ok(api_key)
}

async fn set_up_target(
    base: &str,
    args: &Args,
    receiver_addr: SocketAddr,
    phase: usize,
) -> anyhow::Result<Arc<Target>> {
    let api_key = set_up_tenant(base).await?;
    Ok(Arc::new(Target {
        url: format!("{base}/v1/send"),
        authorization: Some(format!("Bearer {api_key}")),
        recipients: (0..args.recipients.max(1))
            .map(|k| format!("http://{receiver_addr}/slack/{phase}/{k}"))
            .collect(),
    }))
}

/// One send per recipient with n = 0 (creates the recipients, warms every path), then waits
/// until all arrive.
async fn warm_up(target: &Target, receiver: &Receiver, phase: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    send_warm_ups(target).await?;
    let wanted = target.recipients.len() as u64;
    while receiver.phase(phase).warmups < wanted {
        if started.elapsed() > Duration::from_secs(15) {
            bail!("warm-up deliveries did not arrive within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// Sends n = 0 to each recipient, one after the other (so recipients are created without
/// racing each other).
async fn send_warm_ups(target: &Target) -> anyhow::Result<()> {
    let client = worker_client()?;
    for recipient in &target.recipients {
        let body = format!(
            r#"{{"recipient":{{"slack_webhook_url":"{recipient}"}},"template":"bench","vars":{{"n":0,"sent_at_us":0}}}}"#
        );
        let mut request = client
            .post(&target.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(authorization) = &target.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let response = request.send().await?;
        if response.status() != StatusCode::ACCEPTED {
            let status = response.status();
            bail!("warm-up send: HTTP {status}: {}", response.text().await?);
        }
    }
    Ok(())
}

struct HeraldReport {
    run: LoadRun,
    received_at_load_end: u64,
    received: u64,
    duplicates: u64,
    malformed: u64,
    latency: Hist,
    first_send_to_last_receipt: Option<Duration>,
    drained: bool,
    drain_time: Duration,
    rss_under_load_kb: Option<u64>,
}

impl HeraldReport {
    fn delivery_rate(&self) -> Option<f64> {
        self.first_send_to_last_receipt
            .map(|span| self.received as f64 / span.as_secs_f64())
    }
}

enum Load {
    Closed { concurrency: usize },
    Open { concurrency: usize, rate: u64 },
}

async fn herald_phase(
    args: &Args,
    server_rt: &Handle,
    receiver: &Arc<Receiver>,
    receiver_addr: SocketAddr,
    phase: usize,
    load: Load,
) -> anyhow::Result<HeraldReport> {
    let dir = data_dir()?;
    let herald = start_herald(server_rt, dir.path(), !args.no_fsync, herald::Roles::ALL).await?;
    let result = async {
        let target = set_up_target(herald.base()?, args, receiver_addr, phase).await?;
        let warm = warm_up(&target, receiver, phase).await?;
        println!(
            "  warm-up: {} send(s) delivered in {:.1} ms",
            target.recipients.len(),
            warm.as_secs_f64() * 1000.0
        );
        let run = match load {
            Load::Closed { concurrency } => closed_loop(target, concurrency, args.duration).await?,
            Load::Open { concurrency, rate } => {
                open_loop(target, concurrency, rate, args.duration).await?
            }
        };
        let load_end = Instant::now();
        let rss_under_load_kb = memory().0;
        let received_at_load_end = receiver.phase(phase).received;
        let accepted = run.stats.accepted();
        let mut drained = false;
        while load_end.elapsed() < args.drain {
            if receiver.phase(phase).received >= accepted {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drain_time = load_end.elapsed();
        let r = receiver.phase(phase);
        Ok::<_, anyhow::Error>(HeraldReport {
            received_at_load_end,
            received: r.received,
            duplicates: r.duplicates,
            malformed: r.malformed,
            latency: r.latency.clone(),
            first_send_to_last_receipt: r.last.map(|last| last.duration_since(run.start)),
            drained,
            drain_time,
            rss_under_load_kb,
            run,
        })
    }
    .await;
    stop_herald(server_rt, herald).await;
    result
}

struct BacklogReport {
    run: LoadRun,
    received: u64,
    duplicates: u64,
    malformed: u64,
    /// Dispatcher start → last receipt.
    span: Option<Duration>,
    /// Time `Server::start` of the dispatcher took.
    startup: Duration,
    drained: bool,
}

/// Fills a backlog with Herald minus its dispatcher, stops it, then starts a dispatcher-only
/// Herald on the same data and times how fast the receiver gets the backlog.
async fn backlog_phase(
    args: &Args,
    server_rt: &Handle,
    receiver: &Arc<Receiver>,
    receiver_addr: SocketAddr,
) -> anyhow::Result<BacklogReport> {
    let dir = data_dir()?;
    let fsync = !args.no_fsync;
    let no_dispatcher = herald::Roles {
        dispatcher: false,
        ..herald::Roles::ALL
    };
    let herald = start_herald(server_rt, dir.path(), fsync, no_dispatcher).await?;
    let filled = async {
        let target = set_up_target(herald.base()?, args, receiver_addr, PHASE_BACKLOG).await?;
        send_warm_ups(&target).await?;
        closed_loop(target, args.concurrency, args.duration).await
    }
    .await;
    stop_herald(server_rt, herald).await;
    let run = filled?;
    print_load("fill (dispatcher off)", &run);
    let expected = run.stats.accepted() + args.recipients.max(1) as u64;

    let started = Instant::now();
    let herald = start_herald(server_rt, dir.path(), fsync, herald::Roles::DISPATCHER).await?;
    let startup = started.elapsed();
    let mut drained = false;
    while started.elapsed() < args.drain {
        let arrived = {
            let r = receiver.phase(PHASE_BACKLOG);
            r.received + r.warmups
        };
        if arrived >= expected {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_herald(server_rt, herald).await;
    let r = receiver.phase(PHASE_BACKLOG);
    Ok(BacklogReport {
        received: r.received,
        duplicates: r.duplicates,
        malformed: r.malformed,
        span: r.last.map(|last| last.duration_since(started)),
        startup,
        drained,
        run,
    })
}

impl BacklogReport {
    fn rate(&self) -> Option<f64> {
        self.span
            .map(|span| self.received as f64 / span.as_secs_f64())
    }
}

fn print_load(label: &str, run: &LoadRun) {
    let s = &run.stats;
    println!(
        "  {label}: {} requests in {:.2} s, {} accepted (202) → {:.0} accepted/s",
        run.attempted,
        run.elapsed.as_secs_f64(),
        s.accepted(),
        run.accepted_per_sec()
    );
    println!("  non-202 / errors: {}", s.describe_failures());
    println!("  request latency (client side): {}", quantiles(&s.request));
    println!("  CPU during the load: {}", run.cpu.describe(run.elapsed));
}

fn print_delivery(report: &HeraldReport) {
    let accepted = report.run.stats.accepted();
    println!(
        "  received: {} of {} accepted ({} by the time the load stopped){}",
        report.received,
        accepted,
        report.received_at_load_end,
        if report.drained {
            format!(
                "; all in by {:.2} s after the load stopped",
                report.drain_time.as_secs_f64()
            )
        } else {
            format!(
                "; NOT drained after {:.1} s: {} missing",
                report.drain_time.as_secs_f64(),
                accepted.saturating_sub(report.received)
            )
        }
    );
    if report.duplicates > 0 || report.malformed > 0 {
        println!(
            "  ! duplicates: {}, malformed bodies: {}",
            report.duplicates, report.malformed
        );
    }
    if let (Some(span), Some(rate)) = (report.first_send_to_last_receipt, report.delivery_rate()) {
        println!(
            "  delivery rate: {rate:.0}/s ({} received / {:.2} s first send → last receipt)",
            report.received,
            span.as_secs_f64()
        );
    }
    println!("  end-to-end latency: {}", quantiles(&report.latency));
}

// ---------------------------------------------------------------------------------------
// CPU: per-thread time from /proc/self/task/*/stat, grouped by thread name.

/// Linux's USER_HZ, the unit of utime/stime in /proc (100 on every mainstream platform).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

struct CpuSnapshot {
    /// Whole process (includes threads that have exited).
    process_ticks: u64,
    /// tid → (thread name, ticks).
    threads: BTreeMap<u32, (String, u64)>,
}

/// Name and utime + stime from a `stat` line: `pid (comm) state ... utime stime ...`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl CpuSnapshot {
    fn take() -> Self {
        let process_ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .map_or(0, |(_, ticks)| ticks);
        let mut threads = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
            for entry in entries.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                if let Some(parsed) = std::fs::read_to_string(entry.path().join("stat"))
                    .ok()
                    .and_then(|stat| parse_stat(&stat))
                {
                    threads.insert(tid, parsed);
                }
            }
        }
        Self {
            process_ticks,
            threads,
        }
    }

    fn since(&self, before: &CpuSnapshot) -> CpuUse {
        let mut groups: BTreeMap<String, u64> = BTreeMap::new();
        for (tid, (name, ticks)) in &self.threads {
            let earlier = before.threads.get(tid).map_or(0, |(_, t)| *t);
            let group = if name.starts_with("server") {
                "server runtime".to_owned()
            } else if name.starts_with("loadgen") {
                "loadgen runtime".to_owned()
            } else {
                format!("thread {name:?}")
            };
            *groups.entry(group).or_default() += ticks.saturating_sub(earlier);
        }
        CpuUse {
            process_secs: self.process_ticks.saturating_sub(before.process_ticks) as f64
                / CLOCK_TICKS_PER_SEC,
            groups: groups
                .into_iter()
                .map(|(group, ticks)| (group, ticks as f64 / CLOCK_TICKS_PER_SEC))
                .collect(),
        }
    }
}

struct CpuUse {
    process_secs: f64,
    groups: BTreeMap<String, f64>,
}

impl CpuUse {
    fn describe(&self, wall: Duration) -> String {
        let wall = wall.as_secs_f64().max(1e-9);
        let mut groups: Vec<(&String, &f64)> = self
            .groups
            .iter()
            .filter(|(_, secs)| **secs > 0.0)
            .collect();
        groups.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = groups
            .iter()
            .take(5)
            .map(|(group, secs)| format!("{group} {:.2}", **secs / wall))
            .collect();
        format!(
            "{:.2} cores busy; by threads: {}",
            self.process_secs / wall,
            parts.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------------------
// Memory

/// (VmRSS, VmHWM) of this process in kB.
fn memory() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0))
}

// ---------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    epoch();
    let args = Args::parse();
    if args.concurrency == 0 || args.rate == 0 {
        bail!("--concurrency and --rate must be at least 1");
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.unwrap_or(nproc))
        .thread_name("server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.unwrap_or(nproc))
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    let result = client_rt.block_on(run(&args, server_rt.handle(), nproc));
    client_rt.shutdown_timeout(Duration::from_secs(5));
    server_rt.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn run(args: &Args, server_rt: &Handle, nproc: usize) -> anyhow::Result<()> {
    println!(
        "Herald loadgen: nproc {nproc}, duration {:.1} s/phase, concurrency {}, rate {}/s, \
         drain ≤ {:.0} s, recipients {}, fsync {}, runtimes: servers {} threads, loadgen+receiver {} threads",
        args.duration.as_secs_f64(),
        args.concurrency,
        args.rate,
        args.drain.as_secs_f64(),
        args.recipients.max(1),
        if args.no_fsync { "OFF" } else { "on" },
        args.server_threads.unwrap_or(nproc),
        args.client_threads.unwrap_or(nproc),
    );
    let receiver = Arc::new(Receiver::new());
    let receiver_addr = start_receiver(receiver.clone()).await?;

    let mut baseline = None;
    if !args.skip_baseline {
        println!("\n[1] Baseline: bare axum, 202 to a JSON POST, closed loop");
        let (addr, stop) = server_rt.spawn(start_baseline()).await??;
        let target = Arc::new(Target {
            url: format!("http://{addr}/v1/send"),
            authorization: Some("Bearer hk_baseline".into()),
            recipients: vec![format!("http://{receiver_addr}/slack/9/0")],
        });
        let run = closed_loop(target, args.concurrency, args.duration).await?;
        let _ = stop.send(());
        print_load("baseline", &run);
        baseline = Some(run.accepted_per_sec());
    }

    println!("  RSS after the baseline: {}", mb(memory().0));

    let mut throughput = None;
    if !args.skip_throughput {
        println!("\n[2] Herald: POST /v1/send, closed loop, deliveries flowing");
        let report = herald_phase(
            args,
            server_rt,
            &receiver,
            receiver_addr,
            PHASE_THROUGHPUT,
            Load::Closed {
                concurrency: args.concurrency,
            },
        )
        .await?;
        print_load("Herald", &report.run);
        print_delivery(&report);
        println!(
            "  RSS when the load stopped: {}",
            mb(report.rss_under_load_kb)
        );
        throughput = Some(report);
    }

    let mut fixed = None;
    if !args.skip_rate {
        println!(
            "\n[3] Herald: open loop at {}/s for {:.1} s (fixed timetable)",
            args.rate,
            args.duration.as_secs_f64()
        );
        let report = herald_phase(
            args,
            server_rt,
            &receiver,
            receiver_addr,
            PHASE_RATE,
            Load::Open {
                concurrency: args.concurrency,
                rate: args.rate,
            },
        )
        .await?;
        print_load("Herald", &report.run);
        let lag = &report.run.stats.lag;
        println!(
            "  send start vs timetable: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms late",
            ms(lag.value_at_quantile(0.5)),
            ms(lag.value_at_quantile(0.99)),
            ms(lag.max())
        );
        print_delivery(&report);
        println!(
            "  RSS when the load stopped: {}",
            mb(report.rss_under_load_kb)
        );
        fixed = Some(report);
    }

    let mut backlog = None;
    if !args.skip_backlog {
        println!(
            "\n[4] Herald backlog: {:.1} s of closed-loop sends with the dispatcher off, then a dispatcher-only Herald drains them",
            args.duration.as_secs_f64()
        );
        let report = backlog_phase(args, server_rt, &receiver, receiver_addr).await?;
        let accepted = report.run.stats.accepted();
        println!(
            "  dispatcher started in {:.0} ms; received {} of {} accepted{}",
            report.startup.as_secs_f64() * 1000.0,
            report.received,
            accepted,
            if report.drained {
                String::new()
            } else {
                format!(
                    "; NOT drained within {:.0} s: {} missing",
                    args.drain.as_secs_f64(),
                    accepted.saturating_sub(report.received)
                )
            }
        );
        if report.duplicates > 0 || report.malformed > 0 {
            println!(
                "  ! duplicates: {}, malformed bodies: {}",
                report.duplicates, report.malformed
            );
        }
        if let (Some(span), Some(rate)) = (report.span, report.rate()) {
            println!(
                "  drain rate: {rate:.0} deliveries/s ({} in {:.2} s, dispatcher start → last receipt)",
                report.received,
                span.as_secs_f64()
            );
        }
        backlog = Some(report);
    }

    // -----------------------------------------------------------------------------------
    println!("\n== Summary (nproc {nproc}; loadgen, receiver and servers share the machine) ==");
    if let Some(base) = baseline {
        println!("baseline bare axum:           {base:>10.0} req/s");
    }
    if let Some(report) = &throughput {
        let accepted = report.run.accepted_per_sec();
        println!(
            "Herald accepted /v1/send:     {accepted:>10.0} /s  ({} non-202, {} transport errors)",
            report.run.stats.rejected(),
            report.run.stats.errors
        );
        if let Some(base) = baseline {
            let ratio = accepted / base;
            println!(
                "ratio Herald ÷ baseline:      {ratio:>10.3}     (target ≥ 0.5: {})",
                verdict(ratio >= 0.5)
            );
        }
        if let Some(rate) = report.delivery_rate() {
            println!(
                "delivery rate (closed loop):  {rate:>10.0} /s  (target ≥ 20,000: {}; received {}/{})",
                verdict(rate >= 20_000.0),
                report.received,
                report.run.stats.accepted()
            );
        }
        println!(
            "e2e latency (closed loop):    {}",
            quantiles(&report.latency)
        );
    }
    if let Some(report) = &backlog {
        if let Some(rate) = report.rate() {
            println!(
                "dispatcher drain (backlog):   {rate:>10.0} /s  (target ≥ 20,000: {}; received {}/{})",
                verdict(rate >= 20_000.0),
                report.received,
                report.run.stats.accepted()
            );
        }
    }
    if let Some(report) = &fixed {
        let lag = &report.run.stats.lag;
        let accepted = report.run.stats.accepted();
        let all_accepted = accepted == report.run.attempted && report.run.stats.errors == 0;
        let on_time = lag.value_at_quantile(0.99) <= 5_000;
        let caught_up = report.drained && report.drain_time <= Duration::from_secs(1);
        let p99 = ms(report.latency.value_at_quantile(0.99));
        println!(
            "e2e at {}/s:                 p50 {:.2} ms  p99 {p99:.2} ms  max {:.2} ms  (p99 target < {P99_TARGET_MS} ms: {})",
            args.rate,
            ms(report.latency.value_at_quantile(0.5)),
            ms(report.latency.max()),
            verdict(!report.latency.is_empty() && p99 < P99_TARGET_MS)
        );
        println!(
            "kept up at {}/s:             {}  (all {} accepted: {}; send-start lag p99 ≤ 5 ms: {}; all delivered ≤ 1 s after the load: {})",
            args.rate,
            if all_accepted && on_time && caught_up { "YES" } else { "NO" },
            report.run.attempted,
            yes_no(all_accepted),
            yes_no(on_time),
            yes_no(caught_up)
        );
    }
    let (rss, hwm) = memory();
    println!(
        "process memory at the end:    VmRSS {}  VmHWM (peak) {}  — includes the load generator, receiver and histograms, not only Herald (target ≤ 150 MB)",
        mb(rss),
        mb(hwm)
    );
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}
