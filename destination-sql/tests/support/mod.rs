//! Shared helpers: the databases under test, unique tables, and reading rows back.

#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use destination_core::testing::{ReadBack, peer};
use destination_core::{Event, EventId};
use destination_sql::{Dialect, SqlConfig, SqlDestination};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Column, Connection, Row, TypeInfo, ValueRef};

/// A database to test against, with a pool of its own for checking what was stored.
pub struct Db {
    pub dialect: Dialect,
    pub url: String,
    pool: Pool,
    _dir: Option<tempfile::TempDir>,
}

enum Pool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

/// One stored row: column name to value, in JSON terms.
pub type Stored = BTreeMap<String, Value>;

impl Db {
    /// The PostgreSQL peer, or `None` (test skipped) when it is not configured.
    pub async fn postgres(test: &str) -> Option<Self> {
        let url = peer("DESTINATIONS_TEST_POSTGRES_URL", test)?;
        Some(Self::postgres_at(url).await)
    }

    /// PostgreSQL at `url`.
    pub async fn postgres_at(url: String) -> Self {
        let pool = sqlx::PgPool::connect(&url)
            .await
            .expect("connect to the PostgreSQL peer");
        Self::with(Dialect::Postgres, url, Pool::Postgres(pool), None)
    }

    /// The MySQL/MariaDB peer, or `None` (test skipped) when it is not configured.
    pub async fn mysql(test: &str) -> Option<Self> {
        let url = peer("DESTINATIONS_TEST_MYSQL_URL", test)?;
        let pool = sqlx::MySqlPool::connect(&url)
            .await
            .expect("connect to the MySQL peer");
        Some(Self::with(Dialect::MySql, url, Pool::MySql(pool), None))
    }

    /// A SQLite file in a fresh temporary directory.
    pub async fn sqlite(_test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("sqlite url");
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .expect("open the SQLite file");
        Some(Self::with(
            Dialect::Sqlite,
            url,
            Pool::Sqlite(pool),
            Some(dir),
        ))
    }

    fn with(dialect: Dialect, url: String, pool: Pool, dir: Option<tempfile::TempDir>) -> Self {
        Self {
            dialect,
            url,
            pool,
            _dir: dir,
        }
    }

    /// A table name no other test or earlier run uses.
    pub fn table(&self, tag: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_subsec_nanos();
        format!(
            "t_{tag}_{:x}{:x}{n:x}",
            std::process::id() & 0xffff,
            nanos & 0xfffff
        )
    }

    pub fn config(&self, table: &str) -> SqlConfig {
        SqlConfig::new(self.url.as_str()).with_table(table)
    }

    pub fn destination(&self, table: &str) -> SqlDestination {
        SqlDestination::new("sql-test", self.config(table)).expect("valid config")
    }

    pub fn quote(&self, name: &str) -> String {
        match self.dialect {
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// Runs a statement.
    pub async fn exec(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        let done = match &self.pool {
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Pool::MySql(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        };
        done.unwrap_or_else(|e| panic!("statement failed: {e}"));
    }

    pub async fn drop_table(&self, table: &str) {
        self.exec(&format!("DROP TABLE IF EXISTS {}", self.quote(table)))
            .await;
    }

    /// Every row, in `_event_id` order, with each cell decoded by its column type.
    pub async fn rows(&self, table: &str) -> Vec<Stored> {
        let sql = AssertSqlSafe(format!(
            "SELECT * FROM {} ORDER BY {}",
            self.quote(table),
            self.quote("_event_id")
        ));
        match &self.pool {
            Pool::Postgres(p) => {
                let rows = sqlx::query(sql).fetch_all(p).await.expect("select rows");
                rows.iter().map(|r| decode_row(r, pg_cell)).collect()
            }
            Pool::MySql(p) => {
                let rows = sqlx::query(sql).fetch_all(p).await.expect("select rows");
                rows.iter().map(|r| decode_row(r, mysql_cell)).collect()
            }
            Pool::Sqlite(_) => {
                // A fresh connection: sqlx-sqlite 0.9 panics on `SELECT *` when a pooled
                // connection prepares it against a schema another connection has changed.
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("open");
                let rows = sqlx::query(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("select rows");
                rows.iter().map(|r| decode_row(r, sqlite_cell)).collect()
            }
        }
    }

    /// Rows by event id.
    pub async fn rows_by_id(&self, table: &str) -> BTreeMap<EventId, Stored> {
        self.rows(table)
            .await
            .into_iter()
            .map(|row| {
                let id = row["_event_id"]
                    .as_str()
                    .expect("id is text")
                    .parse()
                    .expect("uuid");
                (id, row)
            })
            .collect()
    }

    /// The stored ids, one per row.
    pub async fn ids(&self, table: &str) -> Result<Vec<EventId>, String> {
        let sql = AssertSqlSafe(format!(
            "SELECT CAST({} AS {}) FROM {}",
            self.quote("_event_id"),
            if self.dialect == Dialect::MySql {
                "CHAR"
            } else {
                "TEXT"
            },
            self.quote(table)
        ));
        let ids: Vec<String> = match &self.pool {
            Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await,
            Pool::MySql(p) => sqlx::query_scalar(sql).fetch_all(p).await,
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await,
        }
        .map_err(|e| e.to_string())?;
        ids.iter()
            .map(|s| s.parse().map_err(|e| format!("{s}: {e}")))
            .collect()
    }

    /// Column name to lower-case declared type, from the catalog.
    pub async fn column_types(&self, table: &str) -> BTreeMap<String, String> {
        let rows: Vec<(String, String)> = match &self.pool {
            Pool::Postgres(p) => {
                sqlx::query_as(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1",
                )
                .bind(table)
                .fetch_all(p)
                .await
            }
            Pool::MySql(p) => {
                sqlx::query_as(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR) \
                     FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                )
                .bind(table)
                .fetch_all(p)
                .await
            }
            Pool::Sqlite(p) => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info(?)")
                    .bind(table)
                    .fetch_all(p)
                    .await
            }
        }
        .expect("read the catalog");
        rows.into_iter()
            .map(|(n, t)| (n, t.to_lowercase()))
            .collect()
    }
}

fn decode_row<R: Row>(row: &R, cell: fn(&R, usize, &str) -> Value) -> Stored
where
    usize: sqlx::ColumnIndex<R>,
{
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, col)| (col.name().to_owned(), cell(row, i, col.type_info().name())))
        .collect()
}

fn pg_cell(row: &sqlx::postgres::PgRow, i: usize, ty: &str) -> Value {
    let text = |t: Option<String>| t.map_or(Value::Null, Value::String);
    match ty {
        "BOOL" => row
            .get::<Option<bool>, _>(i)
            .map_or(Value::Null, Value::Bool),
        "INT8" => row
            .get::<Option<i64>, _>(i)
            .map_or(Value::Null, Value::from),
        "FLOAT8" => row
            .get::<Option<f64>, _>(i)
            .map_or(Value::Null, Value::from),
        "JSONB" | "JSON" => row.get::<Option<Value>, _>(i).unwrap_or(Value::Null),
        "TIMESTAMPTZ" => text(
            row.get::<Option<DateTime<Utc>>, _>(i)
                .map(|t| t.to_rfc3339()),
        ),
        "UUID" => text(row.get::<Option<uuid::Uuid>, _>(i).map(|u| u.to_string())),
        _ => text(row.get(i)),
    }
}

fn mysql_cell(row: &sqlx::mysql::MySqlRow, i: usize, ty: &str) -> Value {
    if row.try_get_raw(i).expect("cell").is_null() {
        return Value::Null;
    }
    match ty {
        "BOOLEAN" => Value::Bool(row.get(i)),
        "BIGINT" => Value::from(row.get::<i64, _>(i)),
        "DOUBLE" => Value::from(row.get::<f64, _>(i)),
        "JSON" => row.get(i),
        "DATETIME" => Value::String(row.get::<NaiveDateTime, _>(i).and_utc().to_rfc3339()),
        _ => Value::String(row.get(i)),
    }
}

fn sqlite_cell(row: &sqlx::sqlite::SqliteRow, i: usize, _declared: &str) -> Value {
    // SQLite types values, not columns: decode by the value's own type.
    let raw = row.try_get_raw(i).expect("cell");
    if raw.is_null() {
        return Value::Null;
    }
    match raw.type_info().name() {
        "NULL" => Value::Null,
        "INTEGER" => Value::from(row.get::<i64, _>(i)),
        "REAL" => Value::from(row.get::<f64, _>(i)),
        _ => Value::String(row.get(i)),
    }
}

/// Whether a stored cell holds the payload value `expected`, allowing for how each
/// dialect stores it: JSON as text, booleans as 0 and 1, timestamps in another format,
/// integers in a float column.
pub fn same(expected: &Value, stored: &Value) -> bool {
    match (expected, stored) {
        (a, b) if a == b => true,
        (Value::Bool(b), Value::Number(n)) => n.as_i64() == Some(i64::from(*b)),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => {
            a == b
                || instant(a).is_some_and(|t| instant(b) == Some(t))
                || serde_json::from_str::<Value>(b).is_ok_and(|v| v == *expected)
        }
        (e, Value::String(text)) => serde_json::from_str::<Value>(text).is_ok_and(|v| same(e, &v)),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => false,
    }
}

/// Parses RFC 3339, the `2020-01-01 00:00:00+00` form PostgreSQL prints, and MySQL's
/// zone-less `2020-01-01 00:00:00.000000` (UTC).
fn instant(text: &str) -> Option<DateTime<Utc>> {
    let mut t = text.replacen(' ', "T", 1);
    if t.len() > 3 && t.as_bytes()[t.len() - 3] == b'+' {
        t.push_str(":00");
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(&t) {
        return Some(d.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|d| d.and_utc())
}

/// Asserts that every top-level field of each event's payload is stored in its row.
pub fn assert_payloads_stored(
    dialect: Dialect,
    events: &[Event],
    rows: &BTreeMap<EventId, Stored>,
) {
    for event in events {
        let row = rows
            .get(&event.id)
            .unwrap_or_else(|| panic!("event {} has no row", event.id));
        let Value::Object(map) = event.payload() else {
            assert!(
                same(event.payload(), row.get("value").unwrap_or(&Value::Null)),
                "{}",
                event.id
            );
            continue;
        };
        let names = destination_sql::column_names(dialect, map.keys().map(String::as_str));
        for ((key, column), value) in names.into_iter().zip(map.values()) {
            let stored = row.get(&column).unwrap_or(&Value::Null);
            assert!(
                same(value, stored),
                "{dialect:?} event {} key {key:?} (column {column:?}): expected {value}, \
                 stored {stored}",
                event.id
            );
        }
        let sent = instant(row["_sent_at"].as_str().expect("sent_at"));
        let expected = event.sent_at.timestamp_micros();
        assert_eq!(
            sent.map(|t| t.timestamp_micros()),
            Some(expected),
            "{}",
            event.id
        );
    }
}

/// The 420 real GitHub webhook payloads, each with its event name as the `gh_event`
/// attribute.
pub fn github_events() -> Vec<Event> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/github-webhooks.ndjson"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("one JSON object a line");
            let name = record["event"].as_str().expect("event name").to_owned();
            Event::new(record["payload"].clone()).with_attribute("gh_event", name)
        })
        .collect()
}

/// Reads back the ids stored in one table.
pub struct Ids<'a> {
    pub db: &'a Db,
    pub table: String,
}

#[async_trait]
impl ReadBack for Ids<'_> {
    async fn stored_ids(&self) -> Result<Vec<EventId>, String> {
        self.db.ids(&self.table).await
    }
}

/// Generates one `#[tokio::test]` per dialect for each listed `async fn(Db)`.
#[macro_export]
macro_rules! per_dialect {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = $crate::support::Db::postgres(stringify!($test)).await {
                        super::$test(db).await;
                    }
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = $crate::support::Db::mysql(stringify!($test)).await {
                        super::$test(db).await;
                    }
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(db) = $crate::support::Db::sqlite(stringify!($test)).await {
                        super::$test(db).await;
                    }
                }
            )*
        }
    };
}
