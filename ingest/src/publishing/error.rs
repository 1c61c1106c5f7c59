//! Why a publish could not be stored, and which database failures mean
//! "try again later".

use shared::db::DbError;

/// Why a publish could not be stored. Cloned to every waiter of a failed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The database could not be reached or went away mid-batch: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the batch for another reason.
    #[error("storing the event failed: {0}")]
    Failed(String),
    /// The batcher is gone (the service is stopping).
    #[error("the publishing pipeline has stopped")]
    Stopped,
}

impl PublishError {
    /// Whether the caller should simply try again later (503, requeue).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Stopped)
    }

    pub(super) fn from_db(err: DbError, connection_broken: bool) -> Self {
        if connection_broken || is_transient(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Failed(err.to_string())
        }
    }
}

/// Server messages (their SQLSTATE is not exposed) of failures that say
/// "not now" rather than "never": the server shut the connection (57P01-03),
/// cancelled the statement (57014, e.g. `statement_timeout`) or broke a
/// deadlock (40P01). Whatever the batch held was rolled back.
const TRANSIENT_MESSAGES: [&str; 4] =
    ["terminating connection", "the database system is", "canceling statement due to", "deadlock detected"];

/// Whether a database error means "try again later" (503, requeue).
fn is_transient(err: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match err {
        DbError::Query(Error::DatabaseError(kind, info)) => {
            matches!(kind, Kind::UnableToSendCommand | Kind::ClosedConnection | Kind::SerializationFailure)
                || TRANSIENT_MESSAGES.iter().any(|m| info.message().starts_with(m))
        }
        other => other.is_unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_failures_ask_the_caller_to_retry_later() {
        let closed = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        ));
        assert!(PublishError::from_db(closed, false).is_unavailable());
        assert!(PublishError::from_db(DbError::Unavailable("pool".into()), false).is_unavailable());
        let refused = DbError::Query(diesel::result::Error::NotFound);
        assert!(
            PublishError::from_db(refused, true).is_unavailable(),
            "a broken connection means the database went away"
        );
        assert!(!PublishError::from_db(DbError::Query(diesel::result::Error::NotFound), false).is_unavailable());
        let shut_down = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new("terminating connection due to administrator command".to_owned()),
        ));
        assert!(PublishError::from_db(shut_down, false).is_unavailable());
        let refused = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::CheckViolation,
            Box::new("new row violates check constraint".to_owned()),
        ));
        assert!(!PublishError::from_db(refused, false).is_unavailable());
    }
}
