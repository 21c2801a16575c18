//! The crate's error and how database errors map to delivery outcomes.

use destination_core::DeliveryError;

/// An error of the SQL destination.
///
/// Messages never contain the database URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The URL's scheme names no supported database.
    #[error("unsupported database url scheme {scheme:?} (use postgres://, mysql:// or sqlite://)")]
    UnsupportedScheme {
        /// The scheme, the part before the first `:`.
        scheme: String,
    },
    /// The URL could not be parsed into connection options.
    #[error("invalid database url")]
    InvalidUrl {
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// A table name is not allowed.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTable {
        /// The name, cut to 80 characters.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option is out of range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's key.
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// What a database error means for the events that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Transient: connection lost, deadlock, serialization failure, lock timeout, busy.
    Retryable,
    /// The rows themselves are refused (a value out of range, a constraint): only the
    /// offending events are dead-lettered.
    Rows,
    /// The table changed under us (a column or the table was dropped): re-read the catalog.
    Stale,
    /// Credentials, permissions or a missing database: the operator must act.
    Config,
    /// Anything else the database refuses for the whole batch.
    Permanent,
}

/// Classifies a driver error.
pub(crate) fn classify(err: &sqlx::Error) -> Class {
    match err {
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return classify_sqlstate(pg.code());
            }
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return classify_mysql(my.number());
            }
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(1);
                return classify_sqlite(code, db.message());
            }
            Class::Permanent
        }
        sqlx::Error::Encode(_) => Class::Rows,
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => Class::Config,
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Retryable,
        _ => Class::Permanent,
    }
}

/// PostgreSQL SQLSTATE codes (the first two characters are the class).
fn classify_sqlstate(code: &str) -> Class {
    match code {
        // Deadlock, serialization failure, lock or statement timeout, shutdown.
        "40001" | "40P01" | "55P03" | "55006" | "57014" | "57P01" | "57P02" | "57P03" => {
            Class::Retryable
        }
        // Undefined table or column.
        "42P01" | "42703" => Class::Stale,
        // Insufficient privilege, read-only transaction, no such database or schema.
        "42501" | "25006" | "3D000" | "3F000" => Class::Config,
        _ => match &code[..2.min(code.len())] {
            // Connection exception, insufficient resources, system error.
            "08" | "53" | "58" => Class::Retryable,
            // Invalid authorization.
            "28" => Class::Config,
            // Data exception, integrity constraint violation, program limit (row too big).
            "22" | "23" | "54" => Class::Rows,
            _ => Class::Permanent,
        },
    }
}

/// MySQL and MariaDB server error numbers.
fn classify_mysql(number: u16) -> Class {
    match number {
        // Lock wait timeout, deadlock, too many connections, shutdown, connection killed,
        // query interrupted, server gone away, lost connection.
        1205 | 1213 | 1040 | 1053 | 1927 | 1317 | 2006 | 2013 => Class::Retryable,
        // Unknown column, unknown table.
        1054 | 1146 => Class::Stale,
        // Access denied, unknown database, command denied, read-only.
        1044 | 1045 | 1049 | 1142 | 1143 | 1227 | 1290 | 1698 | 1792 => Class::Config,
        // Column cannot be null, out of range, truncated, incorrect value, data too long,
        // value out of range, invalid JSON, check constraint, row too large.
        1048 | 1264 | 1265 | 1292 | 1366 | 1367 | 1406 | 1690 | 3140 | 4025 | 1118 => Class::Rows,
        _ => Class::Permanent,
    }
}

/// SQLite (extended) result codes; the primary code is the low byte.
fn classify_sqlite(code: i32, message: &str) -> Class {
    match code & 0xff {
        // BUSY, LOCKED, IOERR, FULL, PROTOCOL.
        5 | 6 | 10 | 13 | 15 => Class::Retryable,
        // PERM, READONLY, CANTOPEN, CORRUPT, AUTH, NOTADB.
        3 | 8 | 14 | 11 | 23 | 26 => Class::Config,
        // TOOBIG, CONSTRAINT, MISMATCH, RANGE.
        18 | 19 | 20 | 25 => Class::Rows,
        _ if message.contains("no such table")
            || message.contains("no such column")
            || message.contains("has no column named") =>
        {
            Class::Stale
        }
        _ => Class::Permanent,
    }
}

/// Whether adding a column failed only because another writer added it first.
pub(crate) fn is_duplicate_column(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return my.number() == 1060;
    }
    // PostgreSQL's duplicate_column, or SQLite's message.
    db.code().as_deref() == Some("42701") || db.message().contains("duplicate column name")
}

/// The database's own message (without the driver's prefix), for dead letters.
pub(crate) fn database_message(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// The delivery error for a failure that concerns a whole table's batch.
pub(crate) fn delivery_error(table: &str, operation: &str, err: sqlx::Error) -> DeliveryError {
    classified(format!("{operation} on table {table} failed"), err)
}

/// The delivery error of the class `err` belongs to, with `message`.
pub(crate) fn classified(message: String, err: sqlx::Error) -> DeliveryError {
    let delivery = match classify(&err) {
        Class::Retryable | Class::Stale => DeliveryError::retryable(message),
        Class::Config => DeliveryError::config(message),
        Class::Rows | Class::Permanent => DeliveryError::permanent(message),
    };
    delivery.with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(classify_sqlstate("40P01"), Class::Retryable);
        assert_eq!(classify_sqlstate("40001"), Class::Retryable);
        assert_eq!(classify_sqlstate("08006"), Class::Retryable);
        assert_eq!(classify_sqlstate("57P01"), Class::Retryable);
        assert_eq!(classify_sqlstate("22P02"), Class::Rows);
        assert_eq!(classify_sqlstate("23505"), Class::Rows);
        assert_eq!(classify_sqlstate("42703"), Class::Stale);
        assert_eq!(classify_sqlstate("28P01"), Class::Config);
        assert_eq!(classify_sqlstate("42601"), Class::Permanent);
    }

    #[test]
    fn mysql_and_sqlite_codes_are_classified() {
        assert_eq!(classify_mysql(1213), Class::Retryable);
        assert_eq!(classify_mysql(1292), Class::Rows);
        assert_eq!(classify_mysql(1045), Class::Config);
        assert_eq!(classify_mysql(1054), Class::Stale);
        assert_eq!(classify_sqlite(5, "database is locked"), Class::Retryable);
        assert_eq!(
            classify_sqlite(1299, "NOT NULL constraint failed"),
            Class::Rows
        );
        assert_eq!(classify_sqlite(1, "no such table: t"), Class::Stale);
        assert_eq!(
            classify_sqlite(1, "near \"x\": syntax error"),
            Class::Permanent
        );
    }

    #[test]
    fn transport_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&sqlx::Error::Io(io)), Class::Retryable);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Class::Retryable);
        let err = delivery_error("t", "insert", sqlx::Error::PoolTimedOut);
        assert!(err.is_retryable());
        assert!(err.to_string().contains("table t"));
    }
}
