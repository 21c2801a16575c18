//! The SQL destination: events as rows of PostgreSQL, MySQL/MariaDB and SQLite tables,
//! with the tables created and evolved from the payloads.
//!
//! # Tables
//!
//! An event goes to the table its `table` attribute names (ASCII letters, digits and `_`),
//! else to the configured default table. A table is created on its first event with two
//! fixed columns, `_event_id` (primary key) and `_sent_at` (indexed, used by retention),
//! and one column per top-level payload field. A payload that is not a JSON object is
//! stored in a column named `value`.
//!
//! # Columns
//!
//! Names come from the payload keys, as [`column_names`] documents: plain keys keep their
//! lower-case name, other keys and keys longer than the dialect's identifier limit get a
//! sanitized name with a hash of the key appended. Names are always quoted, so SQL
//! keywords such as `select` or `order` are valid column names (quote them in queries).
//!
//! Types come from the values: integers `bigint`, other numbers `double precision`,
//! booleans, RFC 3339 strings `timestamptz` (`DATETIME(6)` in UTC on MySQL), other strings
//! `text`, objects and arrays `jsonb` (`JSON` on MySQL). A field that is always `null` gets
//! no column until it has a value.
//!
//! A field that later shows a value its column cannot hold widens the column rather than
//! failing: integers to floats; booleans and numbers to JSON; anything else to text (JSON
//! values then stored as their JSON text). New fields add columns. Several writers may
//! evolve the same table at once: schema changes take a database lock (an advisory lock on
//! PostgreSQL, `GET_LOCK` on MySQL, the write lock on SQLite), use `ADD COLUMN IF NOT
//! EXISTS` where the dialect has it and ignore duplicate-column errors where it has not,
//! and the columns are read back from the catalog afterwards. SQLite keeps a column's
//! declared type and stores wider values as they are.
//!
//! # Writes
//!
//! PostgreSQL batches are streamed with `COPY` into a temporary table shaped like the
//! target, then moved with one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`. MySQL,
//! MariaDB and SQLite batches are multi-row inserts in one transaction that skip ids
//! already stored. Either way a retried batch never duplicates a row. When the database
//! refuses a value (out of range, a NUL byte in PostgreSQL text, a constraint), the batch
//! is split in halves until the refused events are alone: those are reported as permanent
//! failures with the database's message, and the others are stored.
//!
//! # Retention
//!
//! With `retention_days` set, rows sent longer ago than that are deleted after a delivery
//! to their table, at most once an hour per table (per process).
//!
//! # Cancel safety
//!
//! A dropped delivery leaves nothing half-written: bulk writes run in one transaction,
//! PostgreSQL's schema lock ends with its transaction, and the MySQL connection holding a
//! `GET_LOCK` is closed rather than pooled again.
//!
//! # Known limitations
//!
//! - Only MariaDB is tested on the MySQL side; MySQL 8 paths (no `ADD COLUMN IF NOT
//!   EXISTS`, a native JSON type) are written to its documentation but untested.
//! - Widening a PostgreSQL or MySQL column rewrites the table under an exclusive lock:
//!   cheap on young tables, slow on large ones.
//! - SQLite keeps declared types, and type affinity turns a text that looks like a number
//!   into a number in numeric columns.
//! - Tables are created in the connection's default schema (PostgreSQL `search_path`,
//!   the MySQL database of the URL).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod config;
mod destination;
mod error;
mod rows;
mod schema;

pub use config::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_TABLE, Dialect, SqlConfig,
    validate_table,
};
pub use destination::{SqlDestination, TABLE_ATTRIBUTE};
pub use error::SqlError;
pub use schema::{ID_COLUMN, SENT_AT_COLUMN, column_names};
