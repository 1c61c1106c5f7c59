//! Why a publish could not be stored.

use std::sync::Arc;

use shared::db::DbError;

/// Why a publish could not be stored. Cloned to every waiter of a failed batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The database could not be reached or went away mid-batch: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(Arc<DbError>),
    /// The database refused the batch for another reason.
    #[error("storing the event failed: {0}")]
    Failed(Arc<DbError>),
    /// The envelope could not be serialized.
    #[error("serializing the event failed: {0}")]
    Envelope(Arc<serde_json::Error>),
    /// The `event_id` was published before with a different body.
    #[error(
        "event_id {event_id:?} was already published with a different body (event_type, event_data or metadata); \
         a repeat must send the same body, a new event needs a new event_id"
    )]
    EventIdReused { event_id: String },
    /// The batcher is gone (the service is stopping).
    #[error("the publishing pipeline has stopped")]
    Stopped,
}

impl PublishError {
    /// Whether the caller should simply try again later (503, requeue).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Stopped)
    }
}

impl From<DbError> for PublishError {
    fn from(err: DbError) -> Self {
        if err.is_transient() {
            Self::Unavailable(Arc::new(err))
        } else {
            Self::Failed(Arc::new(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_database_failures_ask_the_caller_to_retry_later() {
        let closed = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        ));
        assert!(PublishError::from(closed).is_unavailable());
        assert!(PublishError::from(DbError::Unavailable("pool".into())).is_unavailable());
        assert!(
            PublishError::from(DbError::ConnectionLost(diesel::result::Error::NotFound)).is_unavailable(),
            "a broken connection means the database went away"
        );
        assert!(!PublishError::from(DbError::Query(diesel::result::Error::NotFound)).is_unavailable());
        let refused = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::CheckViolation,
            Box::new("new row violates check constraint".to_owned()),
        ));
        assert!(!PublishError::from(refused).is_unavailable());
    }
}
