//! SQLite: multi-row `INSERT ... ON CONFLICT DO NOTHING` in one write transaction.
//!
//! SQLite cannot change a column's type, and needs not: a column of any declared type holds
//! values of every type. A widened field keeps its column's declared type, and the wider
//! values are stored as they are (texts as text, JSON as its text). Because of type
//! affinity, a text that looks like a number stored in a numeric column becomes a number.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection, SqlitePool};

use super::statements;
use crate::config::Dialect;
use crate::error::is_duplicate_column;
use crate::rows::{Cell, Layout, Row, timestamp_text};
use crate::schema::{Columns, ID_COLUMN, Kind, Needs, SENT_AT_COLUMN};

const D: Dialect = Dialect::Sqlite;

/// Bound values one statement carries at most (SQLite's default limit is 32,766).
const MAX_PARAMS: usize = 32_000;

/// Bytes one statement carries at most.
const MAX_BYTES: usize = 8 << 20;

/// Connect options for a `sqlite://` URL: the file is created when missing, written in
/// WAL mode, and a writer waits up to 30 s for another one.
///
/// An in-memory database (`sqlite::memory:`) lives as long as its connection, so its pool
/// keeps exactly one connection open for good.
pub(super) fn options(
    url: &str,
    settings: PoolOptions<Sqlite>,
) -> Result<(SqliteConnectOptions, PoolOptions<Sqlite>), sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(30));
    if url.contains(":memory:") || url.contains("mode=memory") {
        let settings = settings
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        Ok((options, settings))
    } else {
        Ok((options.journal_mode(SqliteJournalMode::Wal), settings))
    }
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "BOOLEAN",
        Kind::Int => "INTEGER",
        Kind::Float => "REAL",
        Kind::Timestamp => "TIMESTAMP",
        Kind::Json => "JSON",
        Kind::Text => "TEXT",
    }
}

fn kind_of(declared: &str) -> Kind {
    match declared.to_ascii_uppercase().as_str() {
        "BOOLEAN" => Kind::Bool,
        "INTEGER" | "INT" | "BIGINT" => Kind::Int,
        "REAL" | "DOUBLE" | "FLOAT" => Kind::Float,
        "TIMESTAMP" | "DATETIME" => Kind::Timestamp,
        "JSON" => Kind::Json,
        _ => Kind::Text,
    }
}

pub(super) async fn read_columns(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Option<Columns>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info(?)")
        .bind(table)
        .fetch_all(conn)
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter(|(name, _)| name != ID_COLUMN && name != SENT_AT_COLUMN)
            .map(|(name, declared)| (name, kind_of(&declared)))
            .collect(),
    ))
}

pub(super) async fn evolve(
    pool: &SqlitePool,
    table: &str,
    needs: &Needs,
) -> Result<Columns, sqlx::Error> {
    // An immediate transaction takes the database's write lock first: one writer at a time.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let quoted = D.quote(table);
    match read_columns(&mut tx, table).await? {
        None => {
            let mut sql = format!(
                "CREATE TABLE IF NOT EXISTS {quoted} ({} TEXT NOT NULL PRIMARY KEY, {} TEXT NOT NULL",
                D.quote(ID_COLUMN),
                D.quote(SENT_AT_COLUMN)
            );
            for (name, kind) in needs {
                sql.push_str(&format!(", {} {}", D.quote(name), type_name(*kind)));
            }
            sql.push(')');
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            let index = format!(
                "CREATE INDEX IF NOT EXISTS {} ON {quoted} ({})",
                D.quote(&format!("{table}{SENT_AT_COLUMN}")),
                D.quote(SENT_AT_COLUMN)
            );
            sqlx::query(AssertSqlSafe(index)).execute(&mut *tx).await?;
        }
        Some(have) => {
            for (name, kind) in needs.iter().filter(|(name, _)| !have.contains_key(*name)) {
                let sql = format!(
                    "ALTER TABLE {quoted} ADD COLUMN {} {}",
                    D.quote(name),
                    type_name(*kind)
                );
                match sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await {
                    Err(e) if !is_duplicate_column(&e) => return Err(e),
                    _ => {}
                }
            }
        }
    }
    let mut columns = read_columns(&mut tx, table).await?.unwrap_or_default();
    tx.commit().await?;

    // The declared type stays; the batch's wider values are stored as they are.
    for (name, kind) in needs {
        if let Some(have) = columns.get_mut(name) {
            *have = have.join(*kind);
        }
    }
    Ok(columns)
}

fn bind<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    cell: &Cell<'_>,
) -> Query<'q, Sqlite, SqliteArguments> {
    match cell {
        Cell::Null => query.bind(None::<String>),
        Cell::Bool(b) => query.bind(*b),
        Cell::Int(i) => query.bind(*i),
        Cell::Float(f) => query.bind(*f),
        Cell::Timestamp(t) => query.bind(timestamp_text(t)),
        Cell::Text(s) => query.bind(s.to_string()),
    }
}

pub(super) async fn insert(
    pool: &SqlitePool,
    table: &str,
    layout: &Layout,
    rows: &[Row<'_>],
) -> Result<(), sqlx::Error> {
    let width = 2 + layout.columns.len();
    let mut names = vec![D.quote(ID_COLUMN), D.quote(SENT_AT_COLUMN)];
    names.extend(layout.columns.iter().map(|(name, _)| D.quote(name)));
    let names = names.join(", ");
    let tuple = format!("({})", vec!["?"; width].join(", "));

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for part in statements(rows, width, MAX_PARAMS, MAX_BYTES) {
        let sql = format!(
            "INSERT INTO {} ({names}) VALUES {} ON CONFLICT ({}) DO NOTHING",
            D.quote(table),
            vec![tuple.as_str(); part.len()].join(", "),
            D.quote(ID_COLUMN)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in part {
            query = query
                .bind(row.id.to_string())
                .bind(timestamp_text(&row.sent_at));
            for cell in &row.cells {
                query = bind(query, cell);
            }
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await
}
