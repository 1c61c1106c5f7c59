//! `webhooks-ingest api-key create|list|revoke`.

use anyhow::Context as _;
use ingest::domain::{
    text::{self, TextKind},
    TenantId,
};
use shared::{
    db,
    models::api_key::{self, ApiKey, KeyFilter, Principal, Revoked},
};

/// Longest key name, in characters.
const MAX_NAME_CHARS: usize = 200;

async fn connect(database_url: &str) -> anyhow::Result<db::DbConn> {
    db::run_migrations(database_url).await?;
    let pool = db::pool(database_url, 1, "webhooks-ingest-cli")?;
    Ok(db::conn(&pool).await?)
}

/// A tenant id checked exactly as publishing checks it.
fn tenant_id(raw: &str) -> anyhow::Result<String> {
    TenantId::parse(raw).map(TenantId::into_string).map_err(|invalid| anyhow::anyhow!("--tenant {}", invalid.message))
}

/// Creates a tenant key (`tenant`) or a publisher key (`None`); prints the token alone on stdout.
pub async fn create(database_url: &str, tenant: Option<&str>, name: Option<&str>) -> anyhow::Result<()> {
    let principal = match tenant {
        Some(tenant) => Principal::Tenant(tenant_id(tenant)?),
        None => Principal::Publisher,
    };
    if let Some(name) = name {
        anyhow::ensure!(name.chars().count() <= MAX_NAME_CHARS, "--name must be at most {MAX_NAME_CHARS} characters");
        text::check("name", name, TextKind::Line).map_err(|invalid| anyhow::anyhow!("--name {}", invalid.message))?;
    }
    let mut conn = connect(database_url).await?;
    let token = api_key::create(&mut conn, &principal, name).await?;
    match &principal {
        Principal::Tenant(tenant) => eprintln!("created a tenant key for {tenant}; it is shown only once:"),
        Principal::Publisher => eprintln!("created a publisher key; it is shown only once:"),
    }
    println!("{token}");
    Ok(())
}

/// Prints the keys, revoked ones included: a table, or JSON lines.
pub async fn list(database_url: &str, tenant: Option<&str>, publishers_only: bool, json: bool) -> anyhow::Result<()> {
    let filter = KeyFilter { tenant_id: tenant.map(tenant_id).transpose()?, publishers_only };
    let mut conn = connect(database_url).await?;
    let keys = api_key::list(&mut conn, &filter).await?;
    if json {
        for key in &keys {
            println!("{}", json_line(key));
        }
    } else {
        print!("{}", table(&keys));
    }
    Ok(())
}

/// Revokes a key by id.
pub async fn revoke(database_url: &str, id: &str) -> anyhow::Result<()> {
    let id = uuid::Uuid::parse_str(id.trim()).context("the key id is not a UUID (see `api-key list`)")?;
    let mut conn = connect(database_url).await?;
    match api_key::revoke(&mut conn, id).await? {
        Revoked::Now(key) => {
            log::info!("API key revoked key_id={id}");
            println!("revoked {} ({} key{})", key.id, key.kind(), for_tenant(&key));
        }
        Revoked::Already(key) => {
            println!("{} was already revoked at {}", key.id, time(key.revoked_at.as_ref()));
        }
        Revoked::NotFound => anyhow::bail!("no API key has the id {id}"),
    }
    Ok(())
}

fn for_tenant(key: &ApiKey) -> String {
    key.tenant_id.as_deref().map(|tenant| format!(" for {tenant}")).unwrap_or_default()
}

fn time(at: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn json_line(key: &ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "kind": key.kind(),
        "tenant_id": key.tenant_id,
        "name": key.name,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    })
}

/// An aligned table with a header row; `-` for nothing.
fn table(keys: &[ApiKey]) -> String {
    let header = ["ID", "KIND", "TENANT", "NAME", "CREATED_AT", "LAST_USED_AT", "REVOKED_AT"].map(str::to_owned);
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|key| {
            [
                key.id.to_string(),
                key.kind().to_owned(),
                key.tenant_id.clone().unwrap_or_else(|| "-".into()),
                key.name.clone().filter(|name| !name.is_empty()).unwrap_or_else(|| "-".into()),
                time(Some(&key.created_at)),
                time(key.last_used_at.as_ref()),
                time(key.revoked_at.as_ref()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
