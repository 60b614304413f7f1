//! Configuration: defaults, then an optional TOML file, then `HERALD_*` variables (which
//! always win). Every field is documented here; README.md lists the same table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use herald_domain::retry::{format_delay, parse_delay, RetrySchedule};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Scylla,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `HERALD_LISTEN`: address of the HTTP listener.
    pub listen: SocketAddr,
    /// `HERALD_DATA_DIR`: where the embedded log and store live.
    pub data_dir: PathBuf,
    /// `HERALD_ADMIN_TOKEN`: bearer token for `/v1/admin/*`; unset turns the admin API off.
    #[serde(default, deserialize_with = "text_or_number")]
    pub admin_token: Option<String>,
    /// `HERALD_ALLOW_PRIVATE_TARGETS`: let deliveries reach loopback and private addresses.
    pub allow_private_targets: bool,
    /// `HERALD_ALLOWED_TARGET_CIDRS`: networks deliveries may reach although they are not
    /// public, comma-separated (`10.1.0.0/16,192.168.5.7`), for development.
    pub allowed_target_cidrs: String,
    /// `HERALD_SECRET_KEY`: base64 of 32 random bytes (`openssl rand -base64 32`); endpoint
    /// signing secrets are encrypted with it in the log and the store. Unset: stored in clear.
    #[serde(default)]
    pub secret_key: Option<SecretText>,
    /// `HERALD_ENDPOINT_CONCURRENCY`: attempts in flight at once per delivery target.
    pub endpoint_concurrency: usize,
    /// `HERALD_RETRY_SCHEDULE`: delays between attempts, e.g. `5s,5m,30m,2h,5h,10h,10h`.
    pub retry_schedule: RetrySchedule,
    /// `HERALD_LOG`: `embedded` (default) or `kafka`.
    pub log: LogBackend,
    /// `HERALD_STORE`: `embedded` (default) or `scylla`.
    pub store: StoreBackend,
    /// `HERALD_KAFKA_BROKERS`: bootstrap servers, comma-separated (with `HERALD_LOG=kafka`).
    pub kafka_brokers: String,
    /// `HERALD_KAFKA_REPLICATION_FACTOR`: replication of the topics Herald creates.
    pub kafka_replication_factor: u16,
    /// `HERALD_KAFKA_PROPERTIES`: extra librdkafka settings, `key=value` pairs separated by
    /// commas (security, timeouts), e.g. `security.protocol=SASL_SSL,sasl.mechanism=PLAIN`.
    #[serde(
        default,
        deserialize_with = "properties",
        serialize_with = "write_properties"
    )]
    pub kafka_properties: BTreeMap<String, String>,
    /// `HERALD_SCYLLA_NODES`: contact points, comma-separated (with `HERALD_STORE=scylla`).
    pub scylla_nodes: String,
    /// `HERALD_SCYLLA_KEYSPACE`: the keyspace Herald creates and uses.
    pub scylla_keyspace: String,
    /// `HERALD_SCYLLA_REPLICATION_FACTOR`: replication of that keyspace.
    pub scylla_replication_factor: u16,
    /// `HERALD_TOPIC_PREFIX`: prefix of every topic name.
    pub topic_prefix: String,
    /// `HERALD_PARTITIONS`: partitions of each topic created by Herald.
    pub partitions: u32,
    /// `HERALD_FSYNC`: fsync every group of appends (the embedded log's durability).
    pub fsync: bool,
    /// `HERALD_MAX_BODY_BYTES`: largest accepted request body.
    pub max_body_bytes: usize,
    /// `HERALD_DELIVERY_TIMEOUT`: per-attempt HTTP timeout, e.g. `15s`.
    #[serde(serialize_with = "write_duration", deserialize_with = "read_duration")]
    pub delivery_timeout: Duration,
    /// `HERALD_HEALTH_DEGRADED_ABOVE`: queue depth above which health says `degraded`.
    pub health_degraded_above: u64,
    /// `HERALD_HEALTH_STALE_AFTER`: a backlog without progress this long makes the worker `stale`.
    #[serde(serialize_with = "write_duration", deserialize_with = "read_duration")]
    pub health_stale_after: Duration,
    /// `HERALD_LOG_FORMAT`: `text` or `json` log lines.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: PathBuf::from("./herald-data"),
            admin_token: None,
            allow_private_targets: false,
            allowed_target_cidrs: String::new(),
            secret_key: None,
            endpoint_concurrency: 16,
            retry_schedule: RetrySchedule::default(),
            log: LogBackend::Embedded,
            store: StoreBackend::Embedded,
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_replication_factor: 1,
            kafka_properties: BTreeMap::new(),
            scylla_nodes: "127.0.0.1:9042".into(),
            scylla_keyspace: "herald".into(),
            scylla_replication_factor: 1,
            topic_prefix: "herald.".into(),
            partitions: 8,
            fsync: true,
            max_body_bytes: herald_http::DEFAULT_MAX_BODY_BYTES,
            delivery_timeout: Duration::from_secs(15),
            health_degraded_above: 100,
            health_stale_after: Duration::from_secs(60),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // Not settings: HERALD_CONFIG names the file, HERALD_LOG_LEVEL is read by the logger
        // before configuration loads, HERALD_TEST_* configure the test suite. Anything else
        // unknown is an error, so a typo never goes unnoticed.
        let env = Env::prefixed("HERALD_").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            !matches!(key.as_str(), "config" | "log_level") && !key.starts_with("test_")
        });
        figment.merge(env).extract().map_err(Box::new)
    }
}

/// A setting that is a secret: never shown by `Debug`, so never in a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

fn text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
        Float(f64),
    }
    Ok(match Option::<Raw>::deserialize(deserializer)? {
        None => None,
        Some(Raw::Text(text)) if text.is_empty() => None,
        Some(Raw::Text(text)) => Some(text),
        Some(Raw::Int(n)) => Some(n.to_string()),
        Some(Raw::Float(n)) => Some(n.to_string()),
    })
}

/// Reads `key=value,key=value` (or a TOML table) into a map.
fn properties<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Table(BTreeMap<String, String>),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Table(table) => Ok(table),
        Raw::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => Err(serde::de::Error::custom(format!(
                    "`{pair}` is not `key=value`"
                ))),
            })
            .collect(),
    }
}

fn write_properties<S: Serializer>(
    properties: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
    serializer.collect_str(&text.join(","))
}

/// Splits a comma-separated list, dropping blanks.
pub fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn write_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_delay(*duration))
}

fn read_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    parse_delay(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

#[cfg(test)]
// figment's `Jail` fixes the closures' error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_environment() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).map_err(|e| *e)?;
            assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(config.admin_token, None);

            jail.create_file(
                "herald.toml",
                "partitions = 4\nlisten = \"127.0.0.1:9000\"\n",
            )?;
            jail.set_env("HERALD_LISTEN", "0.0.0.0:7000");
            jail.set_env("HERALD_ADMIN_TOKEN", "12345");
            jail.set_env("HERALD_RETRY_SCHEDULE", "30s,2m,10m");
            jail.set_env("HERALD_DELIVERY_TIMEOUT", "3s");
            jail.set_env("HERALD_TEST_KAFKA", "127.0.0.1:9092");
            jail.set_env("HERALD_LOG_LEVEL", "debug");
            jail.set_env("HERALD_CONFIG", "herald.toml");
            jail.set_env(
                "HERALD_KAFKA_PROPERTIES",
                "session.timeout.ms=6000, heartbeat.interval.ms=1000",
            );
            let config = Config::load(Some(Path::new("herald.toml"))).map_err(|e| *e)?;
            assert_eq!(config.partitions, 4);
            assert_eq!(config.listen.to_string(), "0.0.0.0:7000");
            assert_eq!(config.admin_token.as_deref(), Some("12345"));
            assert_eq!(config.retry_schedule.to_string(), "30s,2m,10m");
            assert_eq!(config.delivery_timeout, Duration::from_secs(3));
            assert_eq!(config.kafka_properties["session.timeout.ms"], "6000");
            assert_eq!(config.kafka_properties.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn the_secret_key_never_shows_in_debug_output() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "HERALD_SECRET_KEY",
                "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwMTIzNA==",
            );
            let config = Config::load(None).map_err(|e| *e)?;
            assert!(config.secret_key.is_some());
            assert!(!format!("{config:?}").contains("c2VjcmV0"));
            Ok(())
        });
    }

    #[test]
    fn typos_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_LISTNE", "0.0.0.0:1");
            let err = Config::load(None).unwrap_err();
            assert!(err.to_string().contains("listne"), "{err}");
            Ok(())
        });
    }
}
