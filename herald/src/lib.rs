//! Herald composed: configuration, backends, and the roles wired into one process.
//!
//! `main.rs` only parses the command line; everything else is here so that integration
//! tests, the benchmark and `herald run` start Herald the same way ([`Server::start`]).

pub mod config;
pub mod receive;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use herald_dispatcher::{retry_tiers, Dispatcher, DispatcherConfig, HttpOptions, DELIVERER_GROUP};
use herald_domain::retry::format_delay;
use herald_domain::secret_box::SecretKey;
use herald_domain::target::TargetPolicy;
use herald_http::auth::{AdminToken, Authenticator};
use herald_http::clock::Clock;
use herald_ingest::IngestState;
use herald_log::embedded::{EmbeddedLog, EmbeddedLogOptions};
use herald_log::kafka::{KafkaLog, KafkaOptions};
use herald_log::{Log, TopicSpec};
use herald_projector::Projector;
use herald_query_api::{HealthConfig, QueryState};
use herald_schemas::topics::Topics;
use herald_store::embedded::EmbeddedStore;
use herald_store::scylla::{ScyllaOptions, ScyllaStore};
use herald_store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use config::{LogBackend, StoreBackend};

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub query_api: bool,
    pub projector: bool,
    pub dispatcher: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        ingest: true,
        query_api: true,
        projector: true,
        dispatcher: true,
    };
    pub const INGEST: Roles = Roles {
        ingest: true,
        query_api: false,
        projector: false,
        dispatcher: false,
    };
    pub const QUERY_API: Roles = Roles {
        ingest: false,
        query_api: true,
        projector: false,
        dispatcher: false,
    };
    pub const PROJECTOR: Roles = Roles {
        ingest: false,
        query_api: false,
        projector: true,
        dispatcher: false,
    };
    pub const DISPATCHER: Roles = Roles {
        ingest: false,
        query_api: false,
        projector: false,
        dispatcher: true,
    };
}

/// Whether this process must keep its own read models: its store is embedded (private to
/// the process) while the log is shared, so no other process's projector fills its store.
/// It then runs a projector of its own, like a Kafka Streams local state store.
fn needs_local_projection(config: &Config, roles: Roles) -> bool {
    config.log == LogBackend::Kafka && config.store == StoreBackend::Embedded && !roles.projector
}

/// The log and the store a process works on.
pub struct Backends {
    pub log: Arc<dyn Log>,
    pub store: Arc<dyn Store>,
    /// The time the APIs read; tests move it.
    pub clock: Clock,
}

impl Backends {
    /// Opens (or connects to) the configured backends.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            log: open_log(config).await?,
            store: open_store(config).await?,
            clock: Clock::system(),
        })
    }
}

async fn open_log(config: &Config) -> anyhow::Result<Arc<dyn Log>> {
    match config.log {
        LogBackend::Embedded => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    config.data_dir.display()
                )
            })?;
            let options = EmbeddedLogOptions {
                fsync: config.fsync,
                default_partitions: config.partitions,
            };
            let log =
                EmbeddedLog::open(config.data_dir.join("log"), options).with_context(|| {
                    format!(
                        "cannot open the log in {} (is another Herald process using it?)",
                        config.data_dir.display()
                    )
                })?;
            Ok(Arc::new(log))
        }
        LogBackend::Kafka => {
            let mut options = KafkaOptions::new(config.kafka_brokers.clone());
            options.replication_factor = i32::from(config.kafka_replication_factor);
            options.default_partitions = config.partitions;
            options.overrides = config.kafka_properties.clone();
            let log = KafkaLog::connect(options)
                .with_context(|| format!("cannot connect to Kafka at {}", config.kafka_brokers))?;
            Ok(Arc::new(log))
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.store {
        StoreBackend::Embedded => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!(
                    "cannot create the data directory {}",
                    config.data_dir.display()
                )
            })?;
            let store = EmbeddedStore::open(config.data_dir.join("store")).with_context(|| {
                format!(
                    "cannot open the store in {} (is another Herald process using it?)",
                    config.data_dir.display()
                )
            })?;
            Ok(Arc::new(store))
        }
        StoreBackend::Scylla => {
            let options = ScyllaOptions {
                nodes: config::list(&config.scylla_nodes),
                keyspace: config.scylla_keyspace.clone(),
                replication_factor: u32::from(config.scylla_replication_factor),
            };
            let store = ScyllaStore::connect(options).await.with_context(|| {
                format!("cannot connect to ScyllaDB at {}", config.scylla_nodes)
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// Every topic Herald uses, with its partition count.
pub fn topic_specs(config: &Config, topics: &Topics) -> Vec<TopicSpec> {
    // `control` holds current state (the latest record per entity), so it is compacted;
    // everything else is history the projector may need to replay.
    let mut specs = vec![TopicSpec::new(topics.control.clone(), config.partitions).compacted()];
    let history = [
        topics.requests.clone(),
        topics.deliveries.clone(),
        topics.outcomes.clone(),
        topics.dead_letter.clone(),
    ];
    let tiers = retry_tiers(topics, &config.retry_schedule)
        .into_iter()
        .map(|(_, topic)| topic);
    specs.extend(
        history
            .into_iter()
            .chain(tiers)
            .map(|name| TopicSpec::new(name, config.partitions)),
    );
    specs
}

/// The consumer groups whose lag is undelivered work, for health.
fn dispatcher_groups(config: &Config, topics: &Topics) -> Vec<(String, Vec<String>)> {
    let mut groups = vec![(DELIVERER_GROUP.to_owned(), vec![topics.deliveries.clone()])];
    for (delay, topic) in retry_tiers(topics, &config.retry_schedule) {
        groups.push((
            format!("{DELIVERER_GROUP}-retry-{}", format_delay(delay)),
            vec![topic],
        ));
    }
    groups
}

/// A running Herald process.
pub struct Server {
    http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Server {
    /// Opens the backends, creates missing topics, binds the listener (port 0 picks a free
    /// one) and starts `roles`. Returns once everything is running.
    pub async fn start(config: Config, roles: Roles) -> anyhow::Result<Self> {
        let backends = Backends::open(&config).await?;
        Self::start_with(config, roles, backends).await
    }

    pub async fn start_with(
        config: Config,
        roles: Roles,
        backends: Backends,
    ) -> anyhow::Result<Self> {
        let Backends { log, store, clock } = backends;
        let topics = Topics::new(&config.topic_prefix);
        log.ensure_topics(&topic_specs(&config, &topics))
            .await
            .context("cannot create the topics")?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let policy = TargetPolicy {
            allow_private: config.allow_private_targets,
            allowed_cidrs: TargetPolicy::parse_cidrs(&config.allowed_target_cidrs)
                .map_err(|err| anyhow::anyhow!("HERALD_ALLOWED_TARGET_CIDRS: {err}"))?,
        };
        if config.allow_private_targets {
            tracing::warn!("HERALD_ALLOW_PRIVATE_TARGETS=true: deliveries may reach loopback and private addresses");
        } else if !policy.allowed_cidrs.is_empty() {
            tracing::warn!(
                cidrs = config.allowed_target_cidrs,
                "deliveries may reach these non-public networks"
            );
        }
        let secret_key = match &config.secret_key {
            // Compose files pass an unset variable on as an empty one.
            Some(text) if !text.0.trim().is_empty() => Some(
                SecretKey::from_base64(&text.0)
                    .map_err(|err| anyhow::anyhow!("HERALD_SECRET_KEY: {err}"))?,
            ),
            _ => {
                if roles.ingest {
                    tracing::warn!(
                        "HERALD_SECRET_KEY is not set: webhook signing secrets are stored in clear"
                    );
                }
                None
            }
        };

        // Every role process serves HTTP: its routes, if any, and `/healthz` for probes.
        let mut router = Router::new().route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        );
        let auth = Authenticator::new(store.clone());
        if roles.ingest {
            router = router.merge(herald_ingest::router(IngestState {
                log: log.clone(),
                store: store.clone(),
                topics: Arc::new(topics.clone()),
                auth: auth.clone(),
                admin_token: AdminToken(config.admin_token.as_deref().map(Arc::from)),
                target_policy: policy.clone(),
                secret_key: secret_key.clone(),
                clock: clock.clone(),
            }));
        }
        if roles.query_api {
            let health = HealthConfig {
                dispatcher_groups: dispatcher_groups(&config, &topics),
                degraded_above: config.health_degraded_above,
                stale_after: config.health_stale_after,
            };
            router = router.merge(herald_query_api::router(QueryState::new(
                store.clone(),
                log.clone(),
                auth,
                health,
            )));
        }
        let app = herald_http::layers(router, config.max_body_bytes);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let http_addr = Some(listener.local_addr()?);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("the HTTP server failed")
        });
        if needs_local_projection(&config, roles) {
            tracing::info!("embedded store with a shared log: this process projects the log into its own store");
            let projector = Projector::new(log.clone(), store.clone(), topics.clone()).local();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                projector
                    .run(stop)
                    .await
                    .context("the local projector failed")
            });
        }
        if roles.projector {
            let projector = Projector::new(log.clone(), store.clone(), topics.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move { projector.run(stop).await.context("the projector failed") });
        }
        if roles.dispatcher {
            let dispatcher_config = DispatcherConfig {
                retry_schedule: config.retry_schedule.clone(),
                http: HttpOptions {
                    policy,
                    timeout: config.delivery_timeout,
                },
                secret_key,
                endpoint_concurrency: config.endpoint_concurrency.max(1),
                ..DispatcherConfig::default()
            };
            let dispatcher = Dispatcher::new(
                log.clone(),
                store.clone(),
                topics.clone(),
                dispatcher_config,
            );
            let stop = shutdown.clone();
            tasks.spawn(async move { dispatcher.run(stop).await.context("the dispatcher failed") });
        }
        Ok(Self {
            http_addr,
            shutdown,
            tasks,
        })
    }

    /// Where the HTTP listener is, if this process serves HTTP.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until shutdown is requested or a role fails, then stops every role.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.context("a role panicked").and_then(|r| r);
            if let Err(err) = outcome {
                tracing::error!(error = format!("{err:#}"), "stopping: a role failed");
                self.shutdown.cancel();
                result = result.and(Err(err));
            } else if !self.shutdown.is_cancelled() {
                // A role ending on its own is as bad as failing: stop the rest.
                self.shutdown.cancel();
            }
        }
        result
    }

    /// Stops every role gracefully and waits for them; the backends are closed on return,
    /// so the same data directory can be opened again at once.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}
