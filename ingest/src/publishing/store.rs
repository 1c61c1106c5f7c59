//! The batch statement of [`super::batcher`]: stores many published events,
//! their deliveries and delivery counts in one statement (one commit), the
//! fan-out statement of [`shared::fanout`].

use std::collections::{HashMap, HashSet};

use diesel::{
    sql_types::{Array, Bytea, Integer, Text},
    QueryableByName,
};
use diesel_async::RunQueryDsl;
pub(super) use shared::fanout::PATTERN_SEPARATOR;
use shared::{
    db::{self, DbError, DbPool},
    fanout::{self, EventRow},
    models::delivery::QueuedAttempt,
};

use super::{batcher::FanoutResult, error::PublishError};

/// An event ready for the batch statement: envelope serialized, patterns listed.
pub(super) type PreparedEvent = EventRow;

#[derive(QueryableByName)]
struct FirstResult {
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Integer)]
    delivery_count: i32,
    /// The stored body hash equals this publish's (or none was stored).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    same_body: bool,
}

/// The deliveries one new event got.
#[derive(Default)]
struct Created {
    /// To queue for attempt 1.
    queued: Vec<QueuedAttempt>,
    /// Parked behind an open circuit, in the database.
    parked: Vec<QueuedAttempt>,
}

/// The first publish of each repeated `(tenant_id, event_id)`: its delivery
/// count, and whether the repeat's body is the same.
type FirstResults = HashMap<(String, String), (i32, bool)>;

/// The first result of events that were published before (committed by
/// another transaction, which the insert waited for, so this statement sees
/// it), and whether this publish's body is the same.
const FIRST_RESULTS_SQL: &str = "\
SELECT e.tenant_id, e.event_id, e.delivery_count, \
  (e.body_hash IS NULL OR e.body_hash = k.body_hash) AS same_body FROM events e \
JOIN unnest($1::text[], $2::text[], $3::bytea[]) AS k(tenant_id, event_id, body_hash) \
  ON e.tenant_id = k.tenant_id AND e.event_id = k.event_id";

/// Stores events with distinct keys, sorted by key; returns their results in order.
pub(super) async fn store(
    pool: &DbPool,
    events: &[&PreparedEvent],
) -> Result<Vec<Result<FanoutResult, PublishError>>, PublishError> {
    let mut conn = db::conn(pool).await?;
    let rows = fanout::store_events(&mut conn, events).await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => return Err(db::statement_failed(&mut conn, err).await.into()),
    };

    let mut inserted = HashSet::with_capacity(events.len());
    let mut created: HashMap<uuid::Uuid, Created> = HashMap::new();
    for row in rows {
        match (row.delivery_id, row.subscription_id) {
            (Some(delivery_id), Some(subscription_id)) => {
                let attempt = QueuedAttempt { delivery_id, attempt: 1, subscription_id };
                let of_event = created.entry(row.event_ref).or_default();
                if row.parked == Some(true) { &mut of_event.parked } else { &mut of_event.queued }.push(attempt);
            }
            _ => {
                inserted.insert(row.event_ref);
            }
        }
    }

    // Published before: answer with the first result. The new events of the
    // batch are committed already, so a failure here fails only the repeats.
    let repeats: Vec<&&PreparedEvent> = events.iter().filter(|e| !inserted.contains(&e.event_ref)).collect();
    let mut first_results: Result<FirstResults, PublishError> = Ok(HashMap::new());
    if !repeats.is_empty() {
        let found: Result<Vec<FirstResult>, _> = shared::db::Prepared(
            diesel::sql_query(FIRST_RESULTS_SQL)
                .bind::<Array<Text>, _>(repeats.iter().map(|e| e.tenant_id.clone()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(repeats.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
                .bind::<Array<Bytea>, _>(repeats.iter().map(|e| e.body_hash.as_slice()).collect::<Vec<_>>()),
        )
        .load(&mut conn)
        .await;
        first_results = match found {
            Ok(found) => {
                Ok(found.into_iter().map(|f| ((f.tenant_id, f.event_id), (f.delivery_count, f.same_body))).collect())
            }
            Err(err) => Err(db::statement_failed(&mut conn, err).await.into()),
        };
    }

    Ok(events
        .iter()
        .map(|event| {
            if inserted.contains(&event.event_ref) {
                let Created { queued, parked } = created.remove(&event.event_ref).unwrap_or_default();
                return Ok(FanoutResult {
                    event_id: event.event_id.clone(),
                    delivery_count: (queued.len() + parked.len()) as i32,
                    created: queued,
                    parked,
                    is_new: true,
                });
            }
            let firsts = first_results.as_ref().map_err(Clone::clone)?;
            let key = (event.tenant_id.clone(), event.event_id.clone());
            let (delivery_count, same_body) = *firsts
                .get(&key)
                .ok_or_else(|| PublishError::Failed(DbError::Query(diesel::result::Error::NotFound).into()))?;
            if !same_body {
                return Err(PublishError::EventIdReused { event_id: event.event_id.clone() });
            }
            Ok(FanoutResult {
                event_id: event.event_id.clone(),
                delivery_count,
                created: Vec::new(),
                parked: Vec::new(),
                is_new: false,
            })
        })
        .collect())
}
