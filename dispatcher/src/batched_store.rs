//! The claim and record queries of [`crate::store`] behind micro-batchers, so
//! hundreds of attempts in flight cost a few statements, not two per attempt.

use shared::{
    db::{self, DbError, DbPool},
    models::attempt::NewAttempt,
};

use crate::{
    batcher::Batcher,
    store::{self, Claim, NextState, Recorded},
};

/// Most requests one statement carries.
const MAX_BATCH: usize = 256;
/// Batches of one kind in flight at once (each on its own connection).
const LANES: usize = 2;

/// Batched `(delivery, attempt)` claims.
pub type ClaimBatcher = Batcher<(uuid::Uuid, i32), Result<Claim, String>>;
/// Batched parks: true if the delivery was parked (false: it had moved on).
pub type ParkBatcher = Batcher<store::Park, Result<bool, String>>;
/// Batched outcome records: `(subscription, attempt row, next state)`.
pub type RecordBatcher = Batcher<(uuid::Uuid, NewAttempt, NextState), Result<Recorded, String>>;

/// Starts the claim batcher.
pub fn claims(pool: DbPool) -> ClaimBatcher {
    Batcher::start("claim", MAX_BATCH, LANES, move |wanted: Vec<(uuid::Uuid, i32)>| {
        let pool = pool.clone();
        async move {
            let count = wanted.len();
            let claimed = async {
                let mut conn = db::conn(&pool).await?;
                Ok::<_, DbError>(store::claim_many(&mut conn, &wanted).await?)
            }
            .await;
            answer_all(claimed, count)
        }
    })
}

/// Starts the park batcher.
pub fn parks(pool: DbPool) -> ParkBatcher {
    Batcher::start("park", MAX_BATCH, LANES, move |parks: Vec<store::Park>| {
        let pool = pool.clone();
        async move {
            let count = parks.len();
            let parked = async {
                let mut conn = db::conn(&pool).await?;
                Ok::<_, DbError>(store::park_many(&mut conn, &parks).await?)
            }
            .await;
            answer_all(parked, count)
        }
    })
}

/// Starts the record batcher.
pub fn records(pool: DbPool) -> RecordBatcher {
    Batcher::start("record", MAX_BATCH, LANES, move |outcomes: Vec<(uuid::Uuid, NewAttempt, NextState)>| {
        let pool = pool.clone();
        async move {
            let count = outcomes.len();
            let recorded = async {
                let mut conn = db::conn(&pool).await?;
                Ok::<_, DbError>(store::record_many(&mut conn, outcomes).await?)
            }
            .await;
            answer_all(recorded, count)
        }
    })
}

/// One answer per request: the results, or the error for every request.
fn answer_all<T>(result: Result<Vec<T>, DbError>, count: usize) -> Vec<Result<T, String>> {
    match result {
        Ok(answers) if answers.len() == count => answers.into_iter().map(Ok).collect(),
        Ok(_) => (0..count).map(|_| Err("batch answered the wrong number of requests".to_owned())).collect(),
        Err(err) => {
            let message = err.to_string();
            (0..count).map(|_| Err(message.clone())).collect()
        }
    }
}
