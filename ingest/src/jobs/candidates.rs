//! The rows a job walks, in `(created_at, id)` order after its cursor: the
//! failed deliveries its filters select, and the tenant's events (for
//! `include_missed`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::{
    models::{delivery::DeliveryStatus, job::Job},
    schema::{deliveries, events},
};

/// A row passed by a step: its keyset position.
pub type Position = (DateTime<Utc>, uuid::Uuid);

/// Which failed deliveries a job retries.
#[derive(Debug, Clone)]
pub struct FailedFilter {
    pub tenant_id: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub subscription_id: Option<uuid::Uuid>,
    pub event_type: Option<String>,
}

impl FailedFilter {
    /// The filter a job row was made with.
    pub fn of(job: &Job) -> Self {
        Self {
            tenant_id: job.tenant_id.clone(),
            since: job.since,
            until: job.until,
            subscription_id: job.subscription_id,
            event_type: job.event_type.clone(),
        }
    }

    fn query(&self) -> deliveries::BoxedQuery<'static, diesel::pg::Pg> {
        use deliveries::dsl as d;
        let mut query = d::deliveries
            .filter(d::tenant_id.eq(self.tenant_id.clone()))
            .filter(d::status.eq(DeliveryStatus::Failed.as_str()))
            .filter(d::created_at.ge(self.since))
            .filter(d::created_at.lt(self.until))
            .into_boxed();
        if let Some(subscription_id) = self.subscription_id {
            query = query.filter(d::subscription_id.eq(subscription_id));
        }
        if let Some(event_type) = &self.event_type {
            query = query.filter(d::event_type.eq(event_type.clone()));
        }
        query
    }
}

/// How many deliveries the filter selects now.
pub async fn count_failed(conn: &mut AsyncPgConnection, filter: &FailedFilter) -> QueryResult<i64> {
    filter.query().count().get_result(conn).await
}

/// The next `limit` failed deliveries after `after`.
pub async fn next_failed(
    conn: &mut AsyncPgConnection,
    filter: &FailedFilter,
    after: Option<Position>,
    limit: i64,
) -> QueryResult<Vec<Position>> {
    use deliveries::dsl as d;
    let mut query = filter.query();
    if let Some((created_at, id)) = after {
        query = query.filter(d::created_at.gt(created_at).or(d::created_at.eq(created_at).and(d::id.gt(id))));
    }
    query.select((d::created_at, d::id)).order((d::created_at.asc(), d::id.asc())).limit(limit).load(conn).await
}

/// The tenant's next `limit` events in `[since, until)` after `after`.
pub async fn next_events(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
    after: Option<Position>,
    limit: i64,
) -> QueryResult<Vec<Position>> {
    use events::dsl as e;
    let mut query = e::events
        .filter(e::tenant_id.eq(tenant_id.to_owned()))
        .filter(e::created_at.ge(window.0))
        .filter(e::created_at.lt(window.1))
        .into_boxed();
    if let Some((created_at, id)) = after {
        query = query.filter(e::created_at.gt(created_at).or(e::created_at.eq(created_at).and(e::id.gt(id))));
    }
    query.select((e::created_at, e::id)).order((e::created_at.asc(), e::id.asc())).limit(limit).load(conn).await
}
