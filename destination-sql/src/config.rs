//! Configuration: where the database is, which table to write, and how to keep it.

use std::time::Duration;

use destination_core::Secret;
use serde::Deserialize;

use crate::error::SqlError;

/// The table events go to when they carry no `table` attribute.
pub const DEFAULT_TABLE: &str = "events";

/// Connections the pool opens at most, unless configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// How long a delivery waits for a pooled connection, unless configured.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a SQL destination, as written in the `[destinations.NAME]` table.
///
/// # Examples
///
/// ```
/// use destination_sql::SqlConfig;
///
/// let config: SqlConfig = serde_json::from_value(serde_json::json!({
///     "url": "postgres://loader@127.0.0.1:5432/analytics",
///     "table": "webhooks",
///     "retention_days": 30,
/// }))?;
/// assert_eq!(config.table, "webhooks");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// The database: `postgres://user:password@host:port/db`, `mysql://...` (MySQL and
    /// MariaDB) or `sqlite://path/to/file.db` (created when missing). Never logged.
    pub url: Secret,
    /// The table for events without a `table` attribute (default `events`). Table names
    /// are letters, digits and `_`, starting with a letter or `_`.
    #[serde(default = "default_table")]
    pub table: String,
    /// Delete rows whose `_sent_at` is older than this many days; checked at most once an
    /// hour per table, after a delivery. Unset (the default) keeps rows forever.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Connections the pool opens at most (default 4).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a delivery waits for a connection before it fails as retryable
    /// (default `"30s"`).
    #[serde(
        default = "default_acquire_timeout",
        with = "destination_core::duration"
    )]
    pub acquire_timeout: Duration,
}

fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

fn default_acquire_timeout() -> Duration {
    DEFAULT_ACQUIRE_TIMEOUT
}

impl SqlConfig {
    /// A configuration for `url` with every other option at its default.
    pub fn new(url: impl Into<Secret>) -> Self {
        Self {
            url: url.into(),
            table: default_table(),
            retention_days: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }

    /// Sets the default table.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Deletes rows older than `days` days.
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_days = Some(days);
        self
    }

    /// Sets the pool size.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets how long a delivery waits for a connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The dialect the URL's scheme names.
    ///
    /// # Errors
    ///
    /// [`SqlError::UnsupportedScheme`] for any scheme but `postgres`, `postgresql`,
    /// `mysql`, `mariadb` and `sqlite`.
    pub fn dialect(&self) -> Result<Dialect, SqlError> {
        let url = self.url.expose();
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            "sqlite" => Ok(Dialect::Sqlite),
            _ => Err(SqlError::UnsupportedScheme {
                // Only the scheme: the rest of the URL may hold a password.
                scheme: scheme.chars().take(20).collect(),
            }),
        }
    }

    /// Checks every option that can be checked without connecting.
    ///
    /// # Errors
    ///
    /// A [`SqlError`] naming the option that is wrong.
    pub fn validate(&self) -> Result<Dialect, SqlError> {
        let dialect = self.dialect()?;
        validate_table(dialect, &self.table)?;
        if self.max_connections == 0 {
            return Err(SqlError::InvalidOption {
                option: "max_connections",
                reason: "must be at least 1",
            });
        }
        if self.retention_days == Some(0) {
            return Err(SqlError::InvalidOption {
                option: "retention_days",
                reason: "must be at least 1 (leave it unset to keep rows forever)",
            });
        }
        Ok(dialect)
    }
}

/// The SQL dialect of a database, which decides types, quoting and the bulk-load path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL: `COPY` into a temporary table, then one `INSERT ... SELECT`.
    Postgres,
    /// MySQL or MariaDB: multi-row `INSERT` statements in one transaction.
    MySql,
    /// SQLite: multi-row `INSERT` statements in one transaction.
    Sqlite,
}

impl Dialect {
    /// The longest identifier the dialect accepts: 63 bytes on PostgreSQL, 64 characters
    /// on MySQL; SQLite has no limit and gets PostgreSQL's, so tables move between them.
    pub fn identifier_limit(self) -> usize {
        match self {
            Self::Postgres | Self::Sqlite => 63,
            Self::MySql => 64,
        }
    }

    /// `name` quoted as an identifier.
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Self::MySql => format!("`{}`", name.replace('`', "``")),
            Self::Postgres | Self::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }
}

/// Checks a table name: ASCII letters, digits and `_`, not starting with a digit, within the
/// dialect's identifier limit.
///
/// # Errors
///
/// [`SqlError::InvalidTable`] saying what is wrong.
pub fn validate_table(dialect: Dialect, name: &str) -> Result<(), SqlError> {
    let invalid = |reason| {
        Err(SqlError::InvalidTable {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return invalid("only ASCII letters, digits and `_` are allowed");
    }
    if name.as_bytes()[0].is_ascii_digit() {
        return invalid("it must not start with a digit");
    }
    if name.len() > dialect.identifier_limit() {
        return invalid("it is longer than the database allows");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let config: SqlConfig = serde_json::from_str(r#"{"url": "sqlite://x.db"}"#).unwrap();
        assert_eq!(config.table, "events");
        assert_eq!(config.retention_days, None);
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.acquire_timeout, DEFAULT_ACQUIRE_TIMEOUT);
        assert_eq!(config.validate().unwrap(), Dialect::Sqlite);
    }

    #[test]
    fn unknown_and_runtime_keys_are_refused() {
        for key in ["batch", "retry", "type", "concurrency", "tabel"] {
            let text = format!(r#"{{"url": "sqlite://x.db", "{key}": 1}}"#);
            let err = serde_json::from_str::<SqlConfig>(&text).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{key}: {err}");
        }
    }

    #[test]
    fn durations_parse_from_text() {
        let text = r#"{"url": "mysql://root@127.0.0.1/test", "acquire_timeout": "250ms"}"#;
        let config: SqlConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.acquire_timeout, Duration::from_millis(250));
        assert_eq!(config.dialect().unwrap(), Dialect::MySql);
    }

    #[test]
    fn scheme_errors_do_not_show_the_password() {
        let config = SqlConfig::new("oracle://scott:tiger@127.0.0.1/db");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("oracle"), "{err}");
        assert!(!err.contains("tiger"), "{err}");
        assert!(!format!("{config:?}").contains("tiger"));
    }

    #[test]
    fn bad_options_are_named() {
        let config = SqlConfig::new("postgres://127.0.0.1/db");
        let err = config
            .clone()
            .with_max_connections(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
        let err = config
            .clone()
            .with_retention_days(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("retention_days"), "{err}");
        let err = config.with_table("bad-name").validate().unwrap_err();
        assert!(err.to_string().contains("bad-name"), "{err}");
    }

    #[test]
    fn table_names_are_checked() {
        let d = Dialect::Postgres;
        for good in ["events", "_x", "Pull_Request_2"] {
            validate_table(d, good).unwrap();
        }
        let long = "t".repeat(64);
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a;drop",
            "ta\"ble",
            "été",
            long.as_str(),
        ] {
            assert!(validate_table(d, bad).is_err(), "{bad:?}");
        }
        validate_table(Dialect::MySql, &long).unwrap();
    }
}
