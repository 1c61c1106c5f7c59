//! API keys: bearer tokens, stored as their SHA-256 only.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::{crypto, schema::api_keys};

/// The PostgreSQL channel on which a revoked, deleted or re-scoped key's id
/// is announced (a trigger on `api_keys` sends it), so caches drop it at once.
pub const CHANGES_CHANNEL: &str = "webhooks_api_key_revoked";

/// How often `last_used_at` is written at most, per key.
pub const LAST_USED_GRANULARITY_SECONDS: i32 = 60;

/// What a bearer token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Manages one tenant's subscriptions and publishes for that tenant only.
    Tenant(String),
    /// A platform module: publishes for any tenant, manages nothing.
    Publisher,
}

/// A key as listed: never its token (which is not stored) nor its hash.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: uuid::Uuid,
    pub tenant_id: Option<String>,
    pub is_publisher: bool,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn principal(&self) -> Option<Principal> {
        match (&self.tenant_id, self.is_publisher) {
            (_, true) => Some(Principal::Publisher),
            (Some(tenant), false) => Some(Principal::Tenant(tenant.clone())),
            (None, false) => None,
        }
    }

    /// `tenant` or `publisher`.
    pub fn kind(&self) -> &'static str {
        if self.is_publisher {
            "publisher"
        } else {
            "tenant"
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
struct NewApiKey<'a> {
    id: uuid::Uuid,
    key_hash: Vec<u8>,
    tenant_id: Option<&'a str>,
    is_publisher: bool,
    name: Option<&'a str>,
}

/// Creates a key and returns its token (shown once, never stored).
pub async fn create(
    conn: &mut AsyncPgConnection,
    principal: &Principal,
    name: Option<&str>,
) -> Result<String, crate::db::DbError> {
    let token = crypto::generate_api_token().map_err(|e| crate::db::DbError::Unavailable(e.to_string()))?;
    let (tenant_id, is_publisher) = match principal {
        Principal::Tenant(tenant) => (Some(tenant.as_str()), false),
        Principal::Publisher => (None, true),
    };
    diesel::insert_into(api_keys::table)
        .values(NewApiKey {
            id: uuid::Uuid::now_v7(),
            key_hash: crypto::hash_api_token(&token),
            tenant_id,
            is_publisher,
            name,
        })
        .execute(conn)
        .await?;
    Ok(token)
}

/// Finds the live key a token belongs to.
pub async fn find_by_token(conn: &mut AsyncPgConnection, token: &str) -> Result<Option<ApiKey>, diesel::result::Error> {
    api_keys::table
        .filter(api_keys::key_hash.eq(crypto::hash_api_token(token)))
        .filter(api_keys::revoked_at.is_null())
        .select(ApiKey::as_select())
        .first(conn)
        .await
        .optional()
}

/// Finds the live key whose token hashes to `key_hash` and, in the same
/// statement, records its use when `last_used_at` is older than
/// [`LAST_USED_GRANULARITY_SECONDS`] (so a busy key costs no write per request).
pub async fn authenticate(
    conn: &mut AsyncPgConnection,
    key_hash: &[u8],
) -> Result<Option<ApiKey>, diesel::result::Error> {
    use diesel::sql_types::{Bytea, Int4};
    let query = diesel::sql_query(
        "WITH found AS ( \
           SELECT id, tenant_id, is_publisher, name, created_at, last_used_at, revoked_at \
           FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL), \
         touched AS ( \
           UPDATE api_keys k SET last_used_at = now() FROM found \
           WHERE k.id = found.id \
             AND (found.last_used_at IS NULL OR found.last_used_at < now() - make_interval(secs => $2))) \
         SELECT * FROM found",
    )
    .bind::<Bytea, _>(key_hash)
    .bind::<Int4, _>(LAST_USED_GRANULARITY_SECONDS);
    crate::db::Prepared(query).get_result::<ApiKey>(conn).await.optional()
}

/// Which keys [`list`] shows.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only this tenant's keys.
    pub tenant_id: Option<String>,
    /// Only publisher keys.
    pub publishers_only: bool,
}

/// Every key matching `filter`, revoked ones included, oldest first.
pub async fn list(conn: &mut AsyncPgConnection, filter: &KeyFilter) -> QueryResult<Vec<ApiKey>> {
    let mut query = api_keys::table.select(ApiKey::as_select()).order(api_keys::id.asc()).into_boxed();
    if let Some(tenant_id) = &filter.tenant_id {
        query = query.filter(api_keys::tenant_id.eq(tenant_id.clone()));
    }
    if filter.publishers_only {
        query = query.filter(api_keys::is_publisher.eq(true));
    }
    query.load(conn).await
}

/// What [`revoke`] did.
#[derive(Debug, Clone)]
pub enum Revoked {
    /// Revoked now; every ingest is told at once.
    Now(ApiKey),
    /// It was revoked before, at `revoked_at`.
    Already(ApiKey),
    NotFound,
}

/// Revokes key `id`: from then on its token is refused.
pub async fn revoke(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> QueryResult<Revoked> {
    let revoked = diesel::update(api_keys::table.filter(api_keys::id.eq(id)).filter(api_keys::revoked_at.is_null()))
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .returning(ApiKey::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    if let Some(key) = revoked {
        return Ok(Revoked::Now(key));
    }
    let existing =
        api_keys::table.filter(api_keys::id.eq(id)).select(ApiKey::as_select()).first(conn).await.optional()?;
    Ok(existing.map_or(Revoked::NotFound, Revoked::Already))
}
