//! PostgreSQL: `COPY` into a temporary table, then `INSERT ... SELECT ... ON CONFLICT`.

use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::config::Dialect;
use crate::rows::{Layout, Row, write_csv};
use crate::schema::{Columns, ID_COLUMN, Kind, Needs, SENT_AT_COLUMN};

const D: Dialect = Dialect::Postgres;

/// The first key of the advisory lock taken around schema changes ("SQLD").
const LOCK_NAMESPACE: i32 = 0x5351_4c44;

/// The temporary table a batch is copied into; dropped at commit.
const LOAD_TABLE: &str = "_destinations_load";

/// How much CSV one `CopyData` message carries at most.
const COPY_CHUNK: usize = 1 << 20;

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Int => "bigint",
        Kind::Float => "double precision",
        Kind::Timestamp => "timestamptz",
        Kind::Json => "jsonb",
        Kind::Text => "text",
    }
}

fn kind_of(data_type: &str) -> Kind {
    match data_type {
        "boolean" => Kind::Bool,
        "bigint" | "integer" | "smallint" => Kind::Int,
        "double precision" | "real" | "numeric" => Kind::Float,
        "timestamp with time zone" | "timestamp without time zone" => Kind::Timestamp,
        "jsonb" | "json" => Kind::Json,
        _ => Kind::Text,
    }
}

pub(super) async fn read_columns(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Option<Columns>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter(|(name, _)| name != ID_COLUMN && name != SENT_AT_COLUMN)
            .map(|(name, data_type)| (name, kind_of(&data_type)))
            .collect(),
    ))
}

pub(super) async fn evolve(
    pool: &PgPool,
    table: &str,
    needs: &Needs,
) -> Result<Columns, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '30s'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_NAMESPACE)
        .bind(table)
        .execute(&mut *tx)
        .await?;

    let quoted = D.quote(table);
    match read_columns(&mut tx, table).await? {
        None => {
            let mut sql = format!(
                "CREATE TABLE IF NOT EXISTS {quoted} ({} uuid PRIMARY KEY, {} timestamptz NOT NULL",
                D.quote(ID_COLUMN),
                D.quote(SENT_AT_COLUMN)
            );
            for (name, kind) in needs {
                sql.push_str(&format!(", {} {}", D.quote(name), type_name(*kind)));
            }
            sql.push(')');
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            let index = format!("CREATE INDEX ON {quoted} ({})", D.quote(SENT_AT_COLUMN));
            sqlx::query(AssertSqlSafe(index)).execute(&mut *tx).await?;
        }
        Some(have) => {
            let mut actions = Vec::new();
            for (name, kind) in needs {
                let column = D.quote(name);
                match have.get(name) {
                    None => actions.push(format!(
                        "ADD COLUMN IF NOT EXISTS {column} {}",
                        type_name(*kind)
                    )),
                    Some(old) if !old.covers(*kind) => {
                        let wide = old.join(*kind);
                        let using = match wide {
                            Kind::Json => format!("to_jsonb({column})"),
                            other => format!("{column}::{}", type_name(other)),
                        };
                        actions.push(format!(
                            "ALTER COLUMN {column} TYPE {} USING {using}",
                            type_name(wide)
                        ));
                    }
                    Some(_) => {}
                }
            }
            if !actions.is_empty() {
                let sql = format!("ALTER TABLE {quoted} {}", actions.join(", "));
                // IF NOT EXISTS: a writer that does not take the advisory lock may have
                // added the column since we read the catalog.
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
        }
    }

    let columns = read_columns(&mut tx, table).await?.unwrap_or_default();
    tx.commit().await?;
    Ok(columns)
}

pub(super) async fn insert(
    pool: &PgPool,
    table: &str,
    layout: &Layout,
    rows: &[Row<'_>],
) -> Result<(), sqlx::Error> {
    let mut names = vec![D.quote(ID_COLUMN), D.quote(SENT_AT_COLUMN)];
    names.extend(layout.columns.iter().map(|(name, _)| D.quote(name)));
    let names = names.join(", ");
    let load = D.quote(LOAD_TABLE);

    let mut csv = String::with_capacity(rows.iter().map(Row::size).sum());
    for row in rows {
        write_csv(&mut csv, row);
    }

    let mut tx = pool.begin().await?;
    // Take the insert's lock first: taking it after the `LIKE` below (which holds a weaker
    // one) could deadlock with a concurrent `ALTER TABLE` queued in between.
    let lock = format!("LOCK TABLE {} IN ROW EXCLUSIVE MODE", D.quote(table));
    sqlx::query(AssertSqlSafe(lock)).execute(&mut *tx).await?;
    // The load table copies the target's column types, so COPY parses every value as the
    // table will store it, and a value the table refuses fails here, inside the transaction.
    let create = format!(
        "CREATE TEMPORARY TABLE {load} (LIKE {}) ON COMMIT DROP",
        D.quote(table)
    );
    sqlx::query(AssertSqlSafe(create)).execute(&mut *tx).await?;

    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {load} ({names}) FROM STDIN WITH (FORMAT csv)"
        ))
        .await?;
    for chunk in csv.as_bytes().chunks(COPY_CHUNK) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;

    let insert = format!(
        "INSERT INTO {} ({names}) SELECT {names} FROM {load} ON CONFLICT ({}) DO NOTHING",
        D.quote(table),
        D.quote(ID_COLUMN)
    );
    sqlx::query(AssertSqlSafe(insert)).execute(&mut *tx).await?;
    tx.commit().await
}
