//! MySQL and MariaDB: multi-row `INSERT ... ON DUPLICATE KEY UPDATE` in one transaction.
//!
//! Not `INSERT IGNORE`: it would also turn values the column refuses (out of range, bad
//! dates, invalid JSON) into warnings and store mangled values instead of failing the row.

use std::sync::OnceLock;

use sqlx::mysql::MySqlArguments;
use sqlx::pool::PoolOptions;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, MySql, MySqlConnection, MySqlPool};

use super::statements;
use crate::config::Dialect;
use crate::error::is_duplicate_column;
use crate::rows::{Cell, Layout, Row};
use crate::schema::{Columns, ID_COLUMN, Kind, Needs, SENT_AT_COLUMN};

const D: Dialect = Dialect::MySql;

/// Bound values one statement carries at most (the protocol's limit is 65,535).
const MAX_PARAMS: usize = 60_000;

/// Bytes one statement carries at most, well under the default `max_allowed_packet`.
const MAX_BYTES: usize = 4 << 20;

/// The name of the lock taken around schema changes: per database and table, hashed to
/// stay within `GET_LOCK`'s 64 characters.
const LOCK_NAME: &str = "CONCAT('destinations:', SHA1(CONCAT(DATABASE(), '.', ?)))";

/// Makes every connection strict, so that a value a column cannot hold fails its row
/// instead of being truncated, whatever the server's default `sql_mode` is.
pub(super) fn strict(settings: PoolOptions<MySql>) -> PoolOptions<MySql> {
    settings.after_connect(|conn, _| {
        Box::pin(async move {
            sqlx::query(
                "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), \
                 'STRICT_ALL_TABLES'), SESSION lock_wait_timeout = 30",
            )
            .execute(conn)
            .await
            .map(drop)
        })
    })
}

/// MariaDB or MySQL, found out on first use.
#[derive(Debug, Default)]
pub(crate) struct Flavor(OnceLock<bool>);

impl Flavor {
    /// Whether the server is MariaDB.
    pub(super) async fn get(&self, conn: &mut MySqlConnection) -> Result<bool, sqlx::Error> {
        if let Some(maria) = self.0.get() {
            return Ok(*maria);
        }
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(conn)
            .await?;
        let maria = version.to_ascii_lowercase().contains("mariadb");
        Ok(*self.0.get_or_init(|| maria))
    }
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "BOOLEAN",
        Kind::Int => "BIGINT",
        Kind::Float => "DOUBLE",
        Kind::Timestamp => "DATETIME(6)",
        Kind::Json => "JSON",
        Kind::Text => "LONGTEXT",
    }
}

fn kind_of(data_type: &str, column_type: &str, json: bool) -> Kind {
    match data_type {
        _ if json => Kind::Json,
        "tinyint" if column_type.starts_with("tinyint(1)") => Kind::Bool,
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => Kind::Int,
        "double" | "float" | "decimal" => Kind::Float,
        "datetime" | "timestamp" => Kind::Timestamp,
        "json" => Kind::Json,
        _ => Kind::Text,
    }
}

pub(super) async fn read_columns(
    conn: &mut MySqlConnection,
    maria: bool,
    table: &str,
) -> Result<Option<Columns>, sqlx::Error> {
    // MariaDB's JSON is LONGTEXT with a `json_valid` check named after the column.
    let json = if maria {
        "EXISTS(SELECT 1 FROM information_schema.CHECK_CONSTRAINTS k \
         WHERE k.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME \
         AND k.CONSTRAINT_NAME = c.COLUMN_NAME AND k.CHECK_CLAUSE LIKE 'json_valid(%')"
    } else {
        "0"
    };
    let sql = format!(
        "SELECT CAST(c.COLUMN_NAME AS CHAR), CAST(c.DATA_TYPE AS CHAR), \
         CAST(c.COLUMN_TYPE AS CHAR), CAST({json} AS SIGNED) \
         FROM information_schema.COLUMNS c \
         WHERE c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = ?"
    );
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(table)
        .fetch_all(conn)
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter(|(name, ..)| name != ID_COLUMN && name != SENT_AT_COLUMN)
            .map(|(name, data_type, column_type, json)| {
                let kind = kind_of(&data_type, &column_type, json != 0);
                (name, kind)
            })
            .collect(),
    ))
}

pub(super) async fn evolve(
    pool: &MySqlPool,
    flavor: &Flavor,
    table: &str,
    needs: &Needs,
) -> Result<Columns, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // `GET_LOCK` belongs to the session: if this future is dropped half-way, the connection
    // must not go back to the pool still holding it. Closing it releases the lock.
    conn.close_on_drop();
    let maria = flavor.get(&mut conn).await?;

    let locked: Option<i64> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT GET_LOCK({LOCK_NAME}, 30)")))
            .bind(table)
            .fetch_one(&mut *conn)
            .await?;
    if locked != Some(1) {
        return Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out waiting for the schema lock of the table",
        )));
    }

    let result = evolve_locked(&mut conn, maria, table, needs).await;

    let release = sqlx::query(AssertSqlSafe(format!("SELECT RELEASE_LOCK({LOCK_NAME})")))
        .bind(table)
        .execute(&mut *conn)
        .await;
    if let Err(error) = release {
        tracing::debug!(table, %error, "schema lock release failed; closing the connection");
    }
    result
}

async fn evolve_locked(
    conn: &mut MySqlConnection,
    maria: bool,
    table: &str,
    needs: &Needs,
) -> Result<Columns, sqlx::Error> {
    let quoted = D.quote(table);
    match read_columns(conn, maria, table).await? {
        None => {
            let mut sql = format!(
                "CREATE TABLE IF NOT EXISTS {quoted} (\
                 {} CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY, \
                 {} DATETIME(6) NOT NULL",
                D.quote(ID_COLUMN),
                D.quote(SENT_AT_COLUMN)
            );
            for (name, kind) in needs {
                sql.push_str(&format!(", {} {}", D.quote(name), type_name(*kind)));
            }
            sql.push_str(&format!(
                ", INDEX ({})) DEFAULT CHARSET = utf8mb4",
                D.quote(SENT_AT_COLUMN)
            ));
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
        Some(have) => {
            let mut actions = Vec::new();
            for (name, kind) in needs {
                let column = D.quote(name);
                match have.get(name) {
                    None if maria => actions.push(format!(
                        "ADD COLUMN IF NOT EXISTS {column} {}",
                        type_name(*kind)
                    )),
                    None => actions.push(format!("ADD COLUMN {column} {}", type_name(*kind))),
                    Some(old) if !old.covers(*kind) => actions.push(format!(
                        "MODIFY COLUMN {column} {} NULL",
                        type_name(old.join(*kind))
                    )),
                    Some(_) => {}
                }
            }
            // MariaDB takes every change in one statement; MySQL has no
            // `ADD COLUMN IF NOT EXISTS`, so each change runs alone and a column another
            // writer added first is not an error.
            let statements = if maria && !actions.is_empty() {
                vec![actions.join(", ")]
            } else {
                actions
            };
            for action in statements {
                let sql = format!("ALTER TABLE {quoted} {action}");
                match sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await {
                    Err(e) if !is_duplicate_column(&e) => return Err(e),
                    _ => {}
                }
            }
        }
    }
    Ok(read_columns(conn, maria, table).await?.unwrap_or_default())
}

fn bind<'q>(
    query: Query<'q, MySql, MySqlArguments>,
    cell: &Cell<'_>,
) -> Query<'q, MySql, MySqlArguments> {
    match cell {
        Cell::Null => query.bind(None::<String>),
        Cell::Bool(b) => query.bind(*b),
        Cell::Int(i) => query.bind(*i),
        Cell::Float(f) => query.bind(*f),
        Cell::Timestamp(t) => query.bind(t.naive_utc()),
        Cell::Text(s) => query.bind(s.as_ref()),
    }
}

pub(super) async fn insert(
    pool: &MySqlPool,
    table: &str,
    layout: &Layout,
    rows: &[Row<'_>],
) -> Result<(), sqlx::Error> {
    let width = 2 + layout.columns.len();
    let mut names = vec![D.quote(ID_COLUMN), D.quote(SENT_AT_COLUMN)];
    names.extend(layout.columns.iter().map(|(name, _)| D.quote(name)));
    let names = names.join(", ");
    let tuple = format!("({})", vec!["?"; width].join(", "));
    let id = D.quote(ID_COLUMN);

    let mut tx = pool.begin().await?;
    for part in statements(rows, width, MAX_PARAMS, MAX_BYTES) {
        let sql = format!(
            "INSERT INTO {} ({names}) VALUES {} ON DUPLICATE KEY UPDATE {id} = {id}",
            D.quote(table),
            vec![tuple.as_str(); part.len()].join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in part {
            query = query.bind(row.id.to_string()).bind(row.sent_at.naive_utc());
            for cell in &row.cells {
                query = bind(query, cell);
            }
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await
}
