//! The claim and record queries of [`crate::store`] behind the shared
//! micro-batcher, so hundreds of attempts in flight cost a few statements,
//! not two per attempt.

use std::{sync::Arc, time::Duration};

use shared::{
    batcher::{BatchSettings, Batcher},
    db::{self, DbError, DbPool},
    models::attempt::NewAttempt,
};

use crate::store::{self, Claim, NextState, Recorded};

/// Most requests one statement carries.
const MAX_BATCH: usize = 256;
/// How long a record batch that is not full waits for more outcomes. Nobody
/// waits on a record (the receiver has its answer and the slot is handed on
/// before it), and at a steady trickle one transaction per outcome was most
/// of the database's work; this lets a few share one, delaying only the ack.
const RECORD_LINGER: Duration = Duration::from_millis(20);
/// How long a park batch that is not full waits for more. Nobody waits on a
/// park but the message's ack: the delivery is being put off anyway. When a
/// circuit opens, the subscription's waiting messages park one by one as
/// their claims come back (in turns, see `Context::slotless_claims`); without
/// a linger each was a transaction of its own (mean batch 1.1 in `failing`).
const PARK_LINGER: Duration = Duration::from_millis(20);
/// Batches of one kind in flight at once (each on its own connection).
const LANES: usize = 2;

/// A batched query's failure, shared by every request of the batch.
pub type BatchError = Arc<DbError>;
/// Batched `(delivery, attempt)` claims.
pub type ClaimBatcher = Batcher<(uuid::Uuid, i32), Result<Claim, BatchError>>;
/// Batched parks: true if the delivery was parked (false: it had moved on).
pub type ParkBatcher = Batcher<store::Park, Result<bool, BatchError>>;
/// Batched outcome records: `(subscription, attempt row, next state)`.
pub type RecordBatcher = Batcher<(uuid::Uuid, NewAttempt, NextState), Result<Recorded, BatchError>>;

fn settings(batch: &'static str, linger: Duration) -> BatchSettings {
    BatchSettings {
        max_batch: MAX_BATCH,
        lanes: LANES,
        queue_capacity: MAX_BATCH * 4,
        linger,
        size_histogram: metrics::histogram!(crate::metric_names::BATCH_SIZE, "batch" => batch),
    }
}

/// Starts the claim batcher.
pub fn claims(pool: DbPool) -> ClaimBatcher {
    Batcher::start(settings("claim", Duration::ZERO), move |wanted: Vec<(uuid::Uuid, i32)>| {
        let pool = pool.clone();
        async move {
            let count = wanted.len();
            let claimed = async {
                let mut conn = db::conn(&pool).await?;
                match store::claim_many(&mut conn, &wanted).await {
                    Ok(claims) => Ok(claims),
                    Err(err) => Err(db::statement_failed(&mut conn, err).await),
                }
            }
            .await;
            answer_all(claimed, count)
        }
    })
}

/// Starts the park batcher.
pub fn parks(pool: DbPool) -> ParkBatcher {
    Batcher::start(settings("park", PARK_LINGER), move |parks: Vec<store::Park>| {
        let pool = pool.clone();
        async move {
            let count = parks.len();
            let parked = async {
                let mut conn = db::conn(&pool).await?;
                match store::park_many(&mut conn, &parks).await {
                    Ok(parked) => Ok(parked),
                    Err(err) => Err(db::statement_failed(&mut conn, err).await),
                }
            }
            .await;
            answer_all(parked, count)
        }
    })
}

/// Starts the record batcher.
pub fn records(pool: DbPool) -> RecordBatcher {
    Batcher::start(settings("record", RECORD_LINGER), move |outcomes: Vec<(uuid::Uuid, NewAttempt, NextState)>| {
        let pool = pool.clone();
        async move {
            let count = outcomes.len();
            let recorded = async {
                let mut conn = db::conn(&pool).await?;
                match store::record_many(&mut conn, outcomes).await {
                    Ok(recorded) => Ok(recorded),
                    Err(err) => Err(db::statement_failed(&mut conn, err).await),
                }
            }
            .await;
            answer_all(recorded, count)
        }
    })
}

/// One answer per request: the results, or the error for every request.
fn answer_all<T>(result: Result<Vec<T>, DbError>, count: usize) -> Vec<Result<T, BatchError>> {
    let err = match result {
        Ok(answers) if answers.len() == count => return answers.into_iter().map(Ok).collect(),
        Ok(answers) => Arc::new(DbError::Miscounted { asked: count, answered: answers.len() }),
        Err(err) => Arc::new(err),
    };
    (0..count).map(|_| Err(err.clone())).collect()
}
