//! API keys: bearer tokens, stored as their SHA-256 only.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::{crypto, schema::api_keys};

/// What a bearer token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Manages one tenant's subscriptions and publishes for that tenant only.
    Tenant(String),
    /// A platform module: publishes for any tenant, manages nothing.
    Publisher,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: uuid::Uuid,
    pub tenant_id: Option<String>,
    pub is_publisher: bool,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl ApiKey {
    pub fn principal(&self) -> Option<Principal> {
        match (&self.tenant_id, self.is_publisher) {
            (_, true) => Some(Principal::Publisher),
            (Some(tenant), false) => Some(Principal::Tenant(tenant.clone())),
            (None, false) => None,
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
