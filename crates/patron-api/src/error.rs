//! The crate's one error type and its one mapping to a gRPC [`Status`].
//!
//! Callers get a precise message for what they got wrong and a generic one for what went wrong on
//! our side: database and internal details are logged here, never sent.

use tonic::Status;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A request field is invalid; the message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The request field, e.g. `page_size`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database cannot be reached now; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The read models did not reach the position a read-your-writes query asked for in time.
    #[error(
        "min_position: the read models reached position {reached}, not {wanted}, within {waited_ms} ms"
    )]
    NotReached {
        /// The position asked for.
        wanted: u64,
        /// The position the read models had applied when the wait ended.
        reached: u64,
        /// How long the query waited.
        waited_ms: u128,
    },
    /// The system is not in a state the call can succeed in (e.g. a rejected model fit); the
    /// message says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// This server does not offer the call.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else: corrupt rows, bugs.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server cannot start or stopped with an error (bad configuration, address in use).
    #[error("cannot serve the API: {0}")]
    Serve(String),
}

impl ApiError {
    /// An invalid request field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<patron_projector::ReadModelError> for ApiError {
    fn from(error: patron_projector::ReadModelError) -> Self {
        if error.is_transient() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<patron_store::StoreError> for ApiError {
    fn from(error: patron_store::StoreError) -> Self {
        match error {
            patron_store::StoreError::Unavailable(_) => Self::Unavailable(error.to_string()),
            patron_store::StoreError::Conflict { .. }
            | patron_store::StoreError::DuplicateEventIds(_)
            | patron_store::StoreError::InvalidAppend(_)
            | patron_store::StoreError::Corrupt { .. }
            | patron_store::StoreError::Backend(_) => Self::Internal(error.to_string()),
        }
    }
}

/// Whether a database error means "cannot reach or use the database now" (as opposed to a bug or
/// corrupt data).
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (08…), operator intervention such as shutdown
            // (57P…), insufficient resources (53…). SQLite: BUSY (5) and LOCKED (6).
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "5"
                || code == "6"
        }),
        _ => false,
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("{field}: {reason}"))
            }
            error @ ApiError::NotReached { .. } => Status::deadline_exceeded(error.to_string()),
            ApiError::FailedPrecondition(why) => Status::failed_precondition(why),
            ApiError::Unimplemented(why) => Status::unimplemented(why),
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "read models unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            ApiError::Internal(detail) | ApiError::Serve(detail) => {
                tracing::error!(error = %detail, "internal error serving a request");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_no_internal_detail() {
        let status = Status::from(ApiError::Unavailable("password=hunter2 refused".into()));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("hunter2"), "{status:?}");
        let status = Status::from(ApiError::Internal("relation customers missing".into()));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("customers"), "{status:?}");
    }

    #[test]
    fn caller_errors_name_the_field() {
        let status = Status::from(ApiError::invalid("page_size", "at most 500, got 501"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "page_size: at most 500, got 501");
        let status = Status::from(ApiError::NotFound("customer \"c-1\"".into()));
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        assert!(matches!(
            ApiError::from(sqlx::Error::PoolTimedOut),
            ApiError::Unavailable(_)
        ));
        assert!(matches!(
            ApiError::from(sqlx::Error::RowNotFound),
            ApiError::Internal(_)
        ));
    }
}
