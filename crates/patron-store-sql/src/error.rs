//! The one place where sqlx errors become [`StoreError`]s.

use patron_store::StoreError;

/// Maps a sqlx error: connection trouble is [`StoreError::Unavailable`] (retryable), anything else
/// [`StoreError::Backend`].
pub(crate) fn map(error: sqlx::Error) -> StoreError {
    if is_transient(&error) {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

/// Whether SQLite reported the database busy or locked by another connection.
pub(crate) fn is_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| sqlite_busy(code.as_ref())))
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
fn sqlite_busy(code: &str) -> bool {
    matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code = code.as_ref();
            // Postgres: connection exceptions (08…), server shutting down or starting (57P0x),
            // too many connections, serialization failure and deadlock (40…).
            code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code.starts_with("40")
                || sqlite_busy(code)
        }),
        _ => false,
    }
}

/// Maps a migration failure.
pub(crate) fn migrate(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(inner) => map(inner),
        other => StoreError::Backend(Box::new(other)),
    }
}

/// Whether the error is the `events.event_id` uniqueness constraint: an event already stored.
/// The PostgreSQL append inserts optimistically and falls back to de-duplication on this error.
pub(crate) fn is_duplicate_event(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some("events_event_id_key"))
}
