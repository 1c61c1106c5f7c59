//! `webhooks-ingest`: serve (default), `migrate`, `api-key create|list|revoke`.

mod key_commands;

use clap::{Args, Parser, Subcommand};
use shared::{
    config::{self, Config},
    crypto::SecretBox,
    db,
    models::subscription,
};

/// Shown under `--help`: where the settings come from.
const SETTINGS_HELP: &str = "\
Settings come from environment variables:
  DATABASE_URL        PostgreSQL (default postgres://postgres@127.0.0.1:5432/webhooks)
  AMQP_URL            RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/%2f)
  AMQP_PREFIX         prefix of every exchange and queue (default webhooks)
  INGEST_BIND         HTTP listener (default 127.0.0.1:8080)
  WEBHOOK_SECRET_KEY  32 bytes, base64; required by `serve` (not by `migrate` or `api-key`)
  RUST_LOG            log filter (default info)
The README's Configuration table lists every setting.";

#[derive(Parser)]
#[command(
    name = "webhooks-ingest",
    version,
    about = "Webhook REST API, event publishing (HTTP and AMQP), fan-out and outbox relay",
    after_help = SETTINGS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API, the AMQP consumer and the outbox relay (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API keys.
    #[command(name = "api-key", subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; prints the token alone on the last line.
    Create(CreateKey),
    /// List keys (never their tokens): id, kind, tenant, name, created, last used, revoked.
    List(ListKeys),
    /// Revoke a key: every running ingest refuses it within 2 seconds.
    Revoke(RevokeKey),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct KeyScope {
    /// The tenant whose webhooks the key manages.
    #[arg(long)]
    tenant: Option<String>,
    /// A publisher key, for platform modules: publishes for any tenant.
    #[arg(long)]
    publisher: bool,
}

#[derive(Args)]
struct CreateKey {
    #[command(flatten)]
    scope: KeyScope,
    /// A label for the key.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
struct ListKeys {
    /// Only this tenant's keys.
    #[arg(long, conflicts_with = "publisher")]
    tenant: Option<String>,
    /// Only publisher keys.
    #[arg(long)]
    publisher: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RevokeKey {
    /// The key's id (from `api-key list`).
    id: String,
}

#[tokio::main]
async fn main() {
    shared::telemetry::init_logging();
    // `--help` and `--version` answer here, before any configuration is read.
    let cli = Cli::parse();
    if let Err(err) = run(cli.command.unwrap_or(Command::Serve)).await {
        log::error!("webhooks-ingest failed: {err:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let applied = db::run_migrations(&config::database_url_from_env()).await?;
            println!("applied {applied} migration(s)");
            // Sealing rows stored in clear needs the key; without it ingest seals them at start.
            if let Ok(config) = Config::from_env() {
                let pool = db::pool(&config.database_url, 1, "webhooks-ingest-cli")?;
                let mut conn = db::conn(&pool).await?;
                let sealed = subscription::seal_clear_headers(&mut conn, &SecretBox::new(&config.secret_key)).await?;
                if sealed > 0 {
                    println!("sealed the custom header values of {sealed} subscription(s)");
                }
            }
        }
        Command::ApiKey(ApiKeyCommand::Create(args)) => {
            let database_url = config::database_url_from_env();
            key_commands::create(&database_url, args.scope.tenant.as_deref(), args.name.as_deref()).await?;
        }
        Command::ApiKey(ApiKeyCommand::List(args)) => {
            let database_url = config::database_url_from_env();
            key_commands::list(&database_url, args.tenant.as_deref(), args.publisher, args.json).await?;
        }
        Command::ApiKey(ApiKeyCommand::Revoke(args)) => {
            key_commands::revoke(&config::database_url_from_env(), &args.id).await?;
        }
        Command::Serve => {
            let config = Config::from_env()?;
            let workers = std::thread::available_parallelism().map_or(2, usize::from);
            let ingest = ingest::server::start(config, workers).await?;
            wait_for_shutdown().await;
            log::info!("ingest shutting down: finishing requests in flight");
            ingest.stop().await;
            log::info!("ingest stopped");
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
