//! Subscriptions: who wants which events at which URL. Every query takes the
//! tenant, so another tenant's row is simply not found.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::subscriptions;

/// A subscription row (secrets still encrypted).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct Subscription {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub headers: serde_json::Value,
    pub is_active: bool,
    pub retry_enabled: bool,
    pub max_retries: i32,
    pub timeout_seconds: i32,
    pub secret_encrypted: Vec<u8>,
    pub previous_secret_encrypted: Option<Vec<u8>>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Whether `headers` values are sealed ([`crate::header_values`]); false
    /// only on rows written before they were, until ingest seals them.
    pub headers_encrypted: bool,
}

/// A validated new subscription (`headers` already sealed).
#[derive(Debug, Insertable)]
#[diesel(table_name = subscriptions)]
pub struct NewSubscription {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub headers: serde_json::Value,
    pub is_active: bool,
    pub retry_enabled: bool,
    pub max_retries: i32,
    pub timeout_seconds: i32,
    pub secret_encrypted: Vec<u8>,
    pub headers_encrypted: bool,
}

/// A validated partial update (`None` leaves a column as it is).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = subscriptions)]
pub struct SubscriptionChanges {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub events: Option<Vec<String>>,
    /// Sealed values; set `headers_encrypted` with it.
    pub headers: Option<serde_json::Value>,
    pub headers_encrypted: Option<bool>,
    pub is_active: Option<bool>,
    pub retry_enabled: Option<bool>,
    pub max_retries: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub disabled_reason: Option<Option<String>>,
    pub updated_at: Option<DateTime<Utc>>,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: NewSubscription) -> QueryResult<Subscription> {
    diesel::insert_into(subscriptions::table).values(new).returning(Subscription::as_returning()).get_result(conn).await
}

/// The tenant's live subscription `id`, if any.
pub async fn find(conn: &mut AsyncPgConnection, tenant_id: &str, id: uuid::Uuid) -> QueryResult<Option<Subscription>> {
    subscriptions::table
        .filter(subscriptions::id.eq(id))
        .filter(subscriptions::tenant_id.eq(tenant_id))
        .filter(subscriptions::deleted_at.is_null())
        .select(Subscription::as_select())
        .first(conn)
        .await
        .optional()
}

/// One page of the tenant's subscriptions in creation order (ids are UUIDv7),
/// after `after`; fetches `limit + 1` so the caller knows if more follow.
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    after: Option<uuid::Uuid>,
    limit: i64,
) -> QueryResult<Vec<Subscription>> {
    let mut query = subscriptions::table
        .filter(subscriptions::tenant_id.eq(tenant_id))
        .filter(subscriptions::deleted_at.is_null())
        .select(Subscription::as_select())
        .order(subscriptions::id.asc())
        .limit(limit + 1)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(subscriptions::id.gt(after));
    }
    query.load(conn).await
}

/// Applies `changes` to the tenant's live subscription; `None` if not found.
pub async fn update(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    id: uuid::Uuid,
    mut changes: SubscriptionChanges,
) -> QueryResult<Option<Subscription>> {
    changes.updated_at = Some(Utc::now());
    diesel::update(
        subscriptions::table
            .filter(subscriptions::id.eq(id))
            .filter(subscriptions::tenant_id.eq(tenant_id))
            .filter(subscriptions::deleted_at.is_null()),
    )
    .set(changes)
    .returning(Subscription::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// The tenant's live subscription `id`, locked until the transaction ends
/// (a PATCH that keeps masked header values merges with what is stored).
pub async fn find_for_update(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    id: uuid::Uuid,
) -> QueryResult<Option<Subscription>> {
    subscriptions::table
        .filter(subscriptions::id.eq(id))
        .filter(subscriptions::tenant_id.eq(tenant_id))
        .filter(subscriptions::deleted_at.is_null())
        .select(Subscription::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Seals the header values of rows written before values were sealed, a
/// batch at a time; returns how many rows it sealed. A row changed meanwhile
/// is left for the next run (its update names the exact clear value it read).
pub async fn seal_clear_headers(
    conn: &mut AsyncPgConnection,
    secrets: &crate::crypto::SecretBox,
) -> Result<usize, crate::db::DbError> {
    let mut sealed_rows = 0;
    loop {
        let batch: Vec<(uuid::Uuid, serde_json::Value)> = subscriptions::table
            .filter(subscriptions::headers_encrypted.eq(false))
            .select((subscriptions::id, subscriptions::headers))
            .order(subscriptions::id.asc())
            .limit(500)
            .load(conn)
            .await?;
        if batch.is_empty() {
            return Ok(sealed_rows);
        }
        let mut progressed = false;
        for (id, clear) in batch {
            let headers = crate::header_values::open(secrets, &id, &clear, false)
                .map_err(|e| crate::db::DbError::Migration(e.to_string()))?;
            let sealed = crate::header_values::seal(secrets, &id, &headers)
                .map_err(|e| crate::db::DbError::Migration(e.to_string()))?;
            let updated = diesel::update(
                subscriptions::table
                    .filter(subscriptions::id.eq(id))
                    .filter(subscriptions::headers_encrypted.eq(false))
                    .filter(subscriptions::headers.eq(&clear)),
            )
            .set((subscriptions::headers.eq(sealed), subscriptions::headers_encrypted.eq(true)))
            .execute(conn)
            .await?;
            progressed |= updated == 1;
            sealed_rows += updated;
        }
        if !progressed {
            return Ok(sealed_rows);
        }
    }
}

/// Soft-deletes (the delivery log stays); returns whether a row was deleted.
pub async fn soft_delete(conn: &mut AsyncPgConnection, tenant_id: &str, id: uuid::Uuid) -> QueryResult<bool> {
    let now = Utc::now();
    let n = diesel::update(
        subscriptions::table
            .filter(subscriptions::id.eq(id))
            .filter(subscriptions::tenant_id.eq(tenant_id))
            .filter(subscriptions::deleted_at.is_null()),
    )
    .set((subscriptions::deleted_at.eq(now), subscriptions::is_active.eq(false), subscriptions::updated_at.eq(now)))
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// Replaces the secret, keeping the current one as `previous` with the rotation time.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    id: uuid::Uuid,
    new_secret_encrypted: Vec<u8>,
) -> QueryResult<Option<Subscription>> {
    let now = Utc::now();
    diesel::update(
        subscriptions::table
            .filter(subscriptions::id.eq(id))
            .filter(subscriptions::tenant_id.eq(tenant_id))
            .filter(subscriptions::deleted_at.is_null()),
    )
    .set((
        subscriptions::previous_secret_encrypted.eq(subscriptions::secret_encrypted.nullable()),
        subscriptions::secret_encrypted.eq(new_secret_encrypted),
        subscriptions::secret_rotated_at.eq(now),
        subscriptions::updated_at.eq(now),
    ))
    .returning(Subscription::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// The one way a subscription is disabled by us rather than paused by its
/// tenant (a 410 Gone, auto-disable): `is_active` false, `disabled_reason`
/// set, its deliveries waiting in the database (retries, parked behind an open
/// circuit) failed with "subscription disabled" (queued ones fail when their
/// message arrives), and — unless `notify` is false (the trigger was a
/// delivery of an operational event, which never causes another) — a
/// `webhook.subscription.disabled` event for the tenant. Run it in the
/// transaction of the change that caused it. Returns whether it was active
/// until now (a second disable does nothing and tells nobody).
pub async fn disable(
    conn: &mut AsyncPgConnection,
    id: uuid::Uuid,
    reason: &str,
    notify: bool,
) -> Result<bool, crate::operational::EmitError> {
    let disabled: Option<(String, String, DateTime<Utc>)> =
        diesel::update(subscriptions::table.filter(subscriptions::id.eq(id)).filter(subscriptions::is_active.eq(true)))
            .set((
                subscriptions::is_active.eq(false),
                subscriptions::disabled_reason.eq(reason),
                subscriptions::updated_at.eq(diesel::dsl::now),
            ))
            .returning((subscriptions::tenant_id, subscriptions::url, subscriptions::updated_at))
            .get_result(conn)
            .await
            .optional()?;
    let Some((tenant_id, url, disabled_at)) = disabled else { return Ok(false) };
    diesel::sql_query(
        "WITH w AS ( \
           SELECT id FROM deliveries \
           WHERE subscription_id = $1 AND NOT enqueued AND next_attempt_at IS NOT NULL \
             AND status IN ('pending', 'retrying') AND (claimed_until IS NULL OR claimed_until < now()) \
           ORDER BY id FOR UPDATE SKIP LOCKED) \
         UPDATE deliveries d SET status = 'failed', last_error = 'subscription disabled', \
           next_attempt_at = NULL, manual_retry = false, updated_at = now() \
         FROM w WHERE d.id = w.id",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(conn)
    .await?;
    if notify {
        let event = crate::operational::OperationalEvent::subscription_disabled(id, &url, reason, disabled_at);
        crate::operational::emit(conn, &tenant_id, &event).await?;
    }
    Ok(true)
}
