//! `webhooks-ingest`: serve (default), `migrate`, `api-key create|list|revoke`.

mod key_commands;

use clap::{Args, Parser, Subcommand};
use shared::{config::Config, crypto::SecretBox, db, models::subscription};

#[derive(Parser)]
#[command(name = "webhooks-ingest", version, about = "Webhook REST API, publishing and fan-out")]
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
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init_logging();
    let cli = Cli::parse();
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let applied = db::run_migrations(&config.database_url).await?;
            println!("applied {applied} migration(s)");
            let pool = db::pool(&config.database_url, 1, "webhooks-ingest-cli")?;
            let mut conn = db::conn(&pool).await?;
            let sealed = subscription::seal_clear_headers(&mut conn, &SecretBox::new(&config.secret_key)).await?;
            if sealed > 0 {
                println!("sealed the custom header values of {sealed} subscription(s)");
            }
        }
        Command::ApiKey(ApiKeyCommand::Create(args)) => {
            key_commands::create(&config, args.scope.tenant.as_deref(), args.name.as_deref()).await?;
        }
        Command::ApiKey(ApiKeyCommand::List(args)) => {
            key_commands::list(&config, args.tenant.as_deref(), args.publisher, args.json).await?;
        }
        Command::ApiKey(ApiKeyCommand::Revoke(args)) => {
            key_commands::revoke(&config, &args.id).await?;
        }
        Command::Serve => {
            let workers = std::thread::available_parallelism().map_or(2, usize::from);
            let ingest = ingest::server::start(config, workers).await?;
            wait_for_shutdown().await;
            log::info!("shutting down");
            ingest.stop().await;
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
