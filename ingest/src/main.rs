//! `webhooks-ingest`: serve (default), `migrate`, `api-key create`.

use clap::{Args, Parser, Subcommand};
use shared::{
    config::Config,
    db,
    models::api_key::{self, Principal},
};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init_logging();
    let cli = Cli::parse();
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let applied = db::run_migrations(&config.database_url).await?;
            println!("applied {applied} migration(s)");
        }
        Command::ApiKey(ApiKeyCommand::Create(args)) => {
            let principal = match (args.scope.tenant, args.scope.publisher) {
                (Some(tenant), false) => {
                    let tenant = tenant.trim().to_owned();
                    anyhow::ensure!(!tenant.is_empty() && tenant.len() <= 128, "--tenant must be 1 to 128 characters");
                    Principal::Tenant(tenant)
                }
                _ => Principal::Publisher,
            };
            db::run_migrations(&config.database_url).await?;
            let pool = db::pool(&config.database_url, 1, "webhooks-ingest-cli")?;
            let mut conn = db::conn(&pool).await?;
            let token = api_key::create(&mut conn, &principal, args.name.as_deref()).await?;
            match &principal {
                Principal::Tenant(tenant) => eprintln!("created a tenant key for {tenant}; it is shown only once:"),
                Principal::Publisher => eprintln!("created a publisher key; it is shown only once:"),
            }
            println!("{token}");
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
