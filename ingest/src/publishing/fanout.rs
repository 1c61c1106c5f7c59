//! Fan-out: one published event becomes one delivery per matching
//! subscription, written in a single transaction.
//!
//! The event row is unique per tenant and `event_id`, so publishing the same
//! `event_id` again returns the first result and creates nothing.

use chrono::Utc;
use diesel::{
    sql_types::{Array, Text, Uuid as SqlUuid},
    OptionalExtension, QueryableByName,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use shared::{catalog::Catalog, envelope::Envelope, models::event::NewEvent};

/// An event accepted for fan-out (already validated).
#[derive(Debug, Clone)]
pub struct EventToPublish {
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub data: Value,
    pub metadata: Value,
    /// `http`, `amqp` or `test`, for the record and metrics.
    pub source: &'static str,
}

/// Which subscriptions receive the event.
#[derive(Debug, Clone, Copy)]
pub enum Audience {
    /// Every active subscription of the tenant whose `events` match.
    Matching,
    /// Exactly this subscription (the test endpoint), whatever its `events`.
    Subscription(uuid::Uuid),
}

/// What fan-out did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutResult {
    pub event_id: String,
    /// Deliveries of this event (on a repeat: of the first publish).
    pub delivery_count: i32,
    /// Deliveries created now, each to be queued for attempt 1 (empty on a repeat).
    pub created: Vec<uuid::Uuid>,
    /// False when the `event_id` was already published.
    pub is_new: bool,
}

#[derive(QueryableByName)]
struct CreatedDelivery {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
}

/// The envelope every subscriber of `event` receives, stamped now.
pub fn envelope_body(event: &EventToPublish) -> Result<String, serde_json::Error> {
    let timestamp = shared::envelope::format_timestamp(Utc::now());
    Envelope {
        id: &event.event_id,
        event_type: &event.event_type,
        timestamp: &timestamp,
        tenant_id: &event.tenant_id,
        data: &event.data,
        metadata: &event.metadata,
    }
    .to_body()
}

/// Stores the event and its deliveries in one transaction. Publishing goes
/// through [`super::batcher::FanoutBatcher`], which does the same for
/// many events at once; this serves the test endpoint (one subscription).
pub async fn fan_out(
    conn: &mut AsyncPgConnection,
    catalog: &Catalog,
    event: &EventToPublish,
    audience: Audience,
) -> Result<FanoutResult, diesel::result::Error> {
    let payload = envelope_body(event).map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let patterns = catalog.matching_patterns(&event.event_type);
    let event = event.clone();
    conn.transaction(async move |conn| {
        {
            use shared::schema::events::dsl as ev;
            let event_ref = uuid::Uuid::now_v7();
            let inserted: Option<uuid::Uuid> = diesel::insert_into(ev::events)
                .values(NewEvent {
                    id: event_ref,
                    tenant_id: event.tenant_id.clone(),
                    event_id: event.event_id.clone(),
                    event_type: event.event_type.clone(),
                    payload,
                    source: event.source.to_owned(),
                })
                .on_conflict((ev::tenant_id, ev::event_id))
                .do_nothing()
                .returning(ev::id)
                .get_result(conn)
                .await
                .optional()?;
            let Some(event_ref) = inserted else {
                use diesel::{ExpressionMethods, QueryDsl};
                let delivery_count: i32 = ev::events
                    .filter(ev::tenant_id.eq(&event.tenant_id))
                    .filter(ev::event_id.eq(&event.event_id))
                    .select(ev::delivery_count)
                    .first(conn)
                    .await?;
                return Ok(FanoutResult {
                    event_id: event.event_id,
                    delivery_count,
                    created: Vec::new(),
                    is_new: false,
                });
            };
            // One statement: insert a delivery per matching subscription (the
            // GIN index on `events` finds them) and record the count on the event.
            let audience_filter = match audience {
                Audience::Matching => "s.is_active AND s.events && $5",
                Audience::Subscription(_) => "s.id = $6",
            };
            let sql = format!(
                "WITH created AS ( \
                   INSERT INTO deliveries (id, tenant_id, subscription_id, event_ref, event_id, event_type) \
                   SELECT gen_random_uuid(), s.tenant_id, s.id, $1, $2, $3 \
                   FROM subscriptions s \
                   WHERE s.tenant_id = $4 AND s.deleted_at IS NULL AND {audience_filter} \
                   RETURNING id), \
                 counted AS ( \
                   UPDATE events SET delivery_count = (SELECT count(*) FROM created) WHERE id = $1) \
                 SELECT id FROM created"
            );
            let only = match audience {
                Audience::Subscription(id) => id,
                Audience::Matching => uuid::Uuid::nil(),
            };
            let created: Vec<CreatedDelivery> = diesel::sql_query(sql)
                .bind::<SqlUuid, _>(event_ref)
                .bind::<Text, _>(&event.event_id)
                .bind::<Text, _>(&event.event_type)
                .bind::<Text, _>(&event.tenant_id)
                .bind::<Array<Text>, _>(&patterns)
                .bind::<SqlUuid, _>(only)
                .load(conn)
                .await?;
            let created: Vec<uuid::Uuid> = created.into_iter().map(|d| d.id).collect();
            Ok(FanoutResult { event_id: event.event_id, delivery_count: created.len() as i32, created, is_new: true })
        }
    })
    .await
}
