//! Statements that create deliveries for events already stored. (Fan-out at
//! publish time stores the event and its deliveries in one statement, in
//! ingest's batcher.)

use diesel::{
    sql_types::{Array, Text, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct Created {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
}

/// Gives subscription `subscription_id` a delivery of each event in
/// `event_refs` whose type is in `event_types` (the catalog types its
/// `events` match) and that has no delivery for it yet; counts them on their
/// events. New deliveries are `pending` with `enqueued = false` (the outbox):
/// queue attempt 1 of each after commit. The caller serializes calls per
/// subscription (nothing else stops two deliveries of one event to one
/// subscription).
pub async fn deliver_missed(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    event_refs: &[uuid::Uuid],
    event_types: &[String],
) -> diesel::QueryResult<Vec<uuid::Uuid>> {
    if event_refs.is_empty() || event_types.is_empty() {
        return Ok(Vec::new());
    }
    let created: Vec<Created> = diesel::sql_query(
        "WITH created AS ( \
           INSERT INTO deliveries (id, tenant_id, subscription_id, event_ref, event_id, event_type) \
           SELECT gen_random_uuid(), e.tenant_id, s.id, e.id, e.event_id, e.event_type \
           FROM events e JOIN subscriptions s ON s.id = $2 AND s.tenant_id = e.tenant_id \
           WHERE e.id = ANY($1) AND e.event_type = ANY($3) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_ref = e.id AND d.subscription_id = s.id) \
           RETURNING id, event_ref), \
         counted AS ( \
           UPDATE events e SET delivery_count = e.delivery_count + 1 FROM created c WHERE e.id = c.event_ref) \
         SELECT id FROM created",
    )
    .bind::<Array<SqlUuid>, _>(event_refs)
    .bind::<SqlUuid, _>(subscription_id)
    .bind::<Array<Text>, _>(event_types)
    .load(conn)
    .await?;
    Ok(created.into_iter().map(|c| c.id).collect())
}

/// How many events among the tenant's in `[since, until)` of `event_types`
/// have no delivery for the subscription (what [`deliver_missed`] would create).
pub async fn count_missed(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    subscription_id: uuid::Uuid,
    window: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    event_types: &[String],
) -> diesel::QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    if event_types.is_empty() {
        return Ok(0);
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM events e \
         WHERE e.tenant_id = $1 AND e.created_at >= $2 AND e.created_at < $3 AND e.event_type = ANY($4) \
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_ref = e.id AND d.subscription_id = $5)",
    )
    .bind::<Text, _>(tenant_id)
    .bind::<diesel::sql_types::Timestamptz, _>(window.0)
    .bind::<diesel::sql_types::Timestamptz, _>(window.1)
    .bind::<Array<Text>, _>(event_types)
    .bind::<SqlUuid, _>(subscription_id)
    .get_result(conn)
    .await?;
    Ok(count.n)
}
