//! The database side: connection pools, the catalog, schema changes and bulk writes, with
//! one module per dialect.

mod mysql;
mod postgres;
mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database, Pool};

use crate::config::{Dialect, SqlConfig};
use crate::error::SqlError;
use crate::rows::{Layout, Row};
use crate::schema::{Columns, Needs};

/// A pool created on first use: building a destination does no I/O and needs no runtime.
pub(crate) struct LazyPool<DB: Database> {
    options: <DB::Connection as Connection>::Options,
    settings: PoolOptions<DB>,
    pool: OnceLock<Pool<DB>>,
}

impl<DB: Database> LazyPool<DB> {
    fn new(options: <DB::Connection as Connection>::Options, settings: PoolOptions<DB>) -> Self {
        Self {
            options,
            settings,
            pool: OnceLock::new(),
        }
    }

    /// The pool; connections are opened as deliveries ask for them.
    fn get(&self) -> &Pool<DB> {
        self.pool.get_or_init(|| {
            self.settings
                .clone()
                .connect_lazy_with(self.options.clone())
        })
    }

    async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
    }
}

/// A connection pool for one of the supported databases.
pub(crate) enum Client {
    Postgres(LazyPool<sqlx::Postgres>),
    MySql(LazyPool<sqlx::MySql>, mysql::Flavor),
    Sqlite(LazyPool<sqlx::Sqlite>),
}

// The pools' own `Debug` would print the connect options, password included.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Client").field(&self.dialect()).finish()
    }
}

fn settings<DB: Database>(config: &SqlConfig) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
}

impl Client {
    /// Parses the URL into connect options; nothing is opened yet.
    pub(crate) fn new(dialect: Dialect, config: &SqlConfig) -> Result<Self, SqlError> {
        let url = config.url.expose();
        let invalid = |source| SqlError::InvalidUrl { source };
        Ok(match dialect {
            Dialect::Postgres => {
                let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(invalid)?;
                Self::Postgres(LazyPool::new(options, settings(config)))
            }
            Dialect::MySql => {
                let options = sqlx::mysql::MySqlConnectOptions::from_str(url).map_err(invalid)?;
                let settings = mysql::strict(settings(config));
                Self::MySql(LazyPool::new(options, settings), mysql::Flavor::default())
            }
            Dialect::Sqlite => {
                let (options, settings) =
                    sqlite::options(url, settings(config)).map_err(invalid)?;
                Self::Sqlite(LazyPool::new(options, settings))
            }
        })
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::MySql(..) => Dialect::MySql,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Connects and runs `SELECT 1`.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(p) => sqlx::query("SELECT 1").execute(p.get()).await.map(drop),
            Self::MySql(p, _) => sqlx::query("SELECT 1").execute(p.get()).await.map(drop),
            Self::Sqlite(p) => sqlx::query("SELECT 1").execute(p.get()).await.map(drop),
        }
    }

    /// The table's columns from the catalog, or `None` when the table does not exist.
    pub(crate) async fn read_columns(&self, table: &str) -> Result<Option<Columns>, sqlx::Error> {
        match self {
            Self::Postgres(p) => {
                postgres::read_columns(&mut *p.get().acquire().await?, table).await
            }
            Self::MySql(p, flavor) => {
                let mut conn = p.get().acquire().await?;
                let flavor = flavor.get(&mut conn).await?;
                mysql::read_columns(&mut conn, flavor, table).await
            }
            Self::Sqlite(p) => sqlite::read_columns(&mut *p.get().acquire().await?, table).await,
        }
    }

    /// Creates the table or adds and widens columns until it holds `needs`, under a
    /// database lock that serialises writers of the same table; returns the columns as
    /// the catalog has them afterwards.
    pub(crate) async fn evolve(&self, table: &str, needs: &Needs) -> Result<Columns, sqlx::Error> {
        match self {
            Self::Postgres(p) => postgres::evolve(p.get(), table, needs).await,
            Self::MySql(p, flavor) => mysql::evolve(p.get(), flavor, table, needs).await,
            Self::Sqlite(p) => sqlite::evolve(p.get(), table, needs).await,
        }
    }

    /// Writes `rows` in one transaction; rows whose id is already stored are skipped.
    pub(crate) async fn insert(
        &self,
        table: &str,
        layout: &Layout,
        rows: &[Row<'_>],
    ) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(p) => postgres::insert(p.get(), table, layout, rows).await,
            Self::MySql(p, _) => mysql::insert(p.get(), table, layout, rows).await,
            Self::Sqlite(p) => sqlite::insert(p.get(), table, layout, rows).await,
        }
    }

    /// Deletes the rows sent before `cutoff`; returns how many.
    pub(crate) async fn delete_before(
        &self,
        table: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        let sql = format!(
            "DELETE FROM {} WHERE {} < ?",
            self.dialect().quote(table),
            self.dialect().quote(crate::schema::SENT_AT_COLUMN)
        );
        match self {
            Self::Postgres(p) => {
                let sql = sql.replace('?', "$1");
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(cutoff)
                    .execute(p.get());
                Ok(done.await?.rows_affected())
            }
            Self::MySql(p, _) => {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(cutoff.naive_utc())
                    .execute(p.get());
                Ok(done.await?.rows_affected())
            }
            Self::Sqlite(p) => {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(crate::rows::timestamp_text(&cutoff))
                    .execute(p.get());
                Ok(done.await?.rows_affected())
            }
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Self::Postgres(p) => p.close().await,
            Self::MySql(p, _) => p.close().await,
            Self::Sqlite(p) => p.close().await,
        }
    }
}

/// Splits rows into statements of at most `max_params` bound values and about
/// `max_bytes` of data.
pub(crate) fn statements<'r, 'a>(
    rows: &'r [Row<'a>],
    params_per_row: usize,
    max_params: usize,
    max_bytes: usize,
) -> Vec<&'r [Row<'a>]> {
    let per_statement = (max_params / params_per_row.max(1)).max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let full = i - start >= per_statement || (i > start && bytes + row.size() > max_bytes);
        if full {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += row.size();
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use destination_core::EventId;

    use super::*;
    use crate::rows::Cell;

    fn row(text: &str) -> Row<'_> {
        Row {
            id: EventId::new(),
            sent_at: Utc::now(),
            cells: vec![Cell::Text(text.into())],
        }
    }

    #[test]
    fn statements_respect_parameter_and_byte_limits() {
        let big = "x".repeat(1000);
        let rows: Vec<Row<'_>> = (0..10).map(|_| row(&big)).collect();
        let sizes = |parts: Vec<&[Row<'_>]>| parts.iter().map(|p| p.len()).collect::<Vec<_>>();
        assert_eq!(sizes(statements(&rows, 3, 9, usize::MAX)), [3, 3, 3, 1]);
        assert_eq!(sizes(statements(&rows, 3, 300, 2500)), [2, 2, 2, 2, 2]);
        assert_eq!(sizes(statements(&rows, 3, 300, 10)), [1; 10]);
        assert!(statements(&rows[..0], 3, 9, 10).is_empty());
    }
}
