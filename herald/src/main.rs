//! The `herald` command: parses the command line and starts the chosen roles.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use herald::config::LogFormat;
use herald::{Config, Roles, Server};
use herald_domain::signing::EndpointSecret;
use tracing_subscriber::EnvFilter;

/// Herald: notification and webhook delivery, event-sourced.
/// mimalloc rather than the system allocator: Herald's hot paths allocate many small,
/// short-lived buffers across threads, where glibc's malloc showed as the top cost in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file; `HERALD_*` variables override it.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every role in one process, one HTTP listener (the embedded default).
    Run,
    /// The write API only.
    Ingest,
    /// The read API only.
    QueryApi,
    /// The projector only: builds the read models from the log.
    Projector,
    /// The dispatcher only: routes and delivers.
    Dispatcher,
    /// A local receiver that prints what Herald delivers (for trying Herald out).
    Receive {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// The endpoint's `whsec_...` secret, to check signatures.
        #[arg(long)]
        secret: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let roles = match &cli.command {
        Command::Run => Roles::ALL,
        Command::Ingest => Roles::INGEST,
        Command::QueryApi => Roles::QUERY_API,
        Command::Projector => Roles::PROJECTOR,
        Command::Dispatcher => Roles::DISPATCHER,
        Command::Receive { listen, secret } => {
            let secret = secret
                .as_deref()
                .map(EndpointSecret::parse)
                .transpose()
                .context("--secret")?;
            return herald::receive::run(*listen, secret).await;
        }
    };
    let config = Config::load(cli.config.as_deref()).context("invalid configuration")?;
    init_tracing(config.log_format);

    let server = Server::start(config.clone(), roles).await?;
    if let Some(addr) = server.http_addr() {
        println!("Herald is listening on http://{addr}");
        if roles.ingest {
            print_welcome(addr, &config);
        }
    }
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    server.wait().await
}

/// Herald's own events at `info`; the storage engine's routine maintenance only when it warns.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HERALD_LOG_LEVEL")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn print_welcome(addr: SocketAddr, config: &Config) {
    println!(
        "Herald is listening on http://{addr} (data in {})",
        config.data_dir.display()
    );
    match &config.admin_token {
        Some(_) => println!(
            "Create a tenant:\n  curl -s -X POST http://{addr}/v1/admin/tenants \\\n    -H \"Authorization: Bearer $HERALD_ADMIN_TOKEN\" -H 'Content-Type: application/json' \\\n    -d '{{\"name\": \"Acme\"}}'"
        ),
        None => println!(
            "The admin API is off. To create a tenant, restart with an admin token:\n  HERALD_ADMIN_TOKEN=change-me herald run\nthen:\n  curl -s -X POST http://{addr}/v1/admin/tenants -H 'Authorization: Bearer change-me' \\\n    -H 'Content-Type: application/json' -d '{{\"name\": \"Acme\"}}'"
        ),
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
