//! The `Destination` implementation: group by table, evolve the schema, write, and narrow
//! failures down to the events that caused them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use destination_core::{Batch, BatchConfig, DeliveryError, Destination, Event, EventId};
use serde_json::Value;
use tracing::{debug, warn};

use crate::client::Client;
use crate::config::{Dialect, SqlConfig, validate_table};
use crate::error::{Class, SqlError, classified, classify, database_message, delivery_error};
use crate::rows::{Fields, Layout, Row, fields, needs};
use crate::schema::{Columns, Needs, satisfies};

/// The attribute that names an event's table.
pub const TABLE_ATTRIBUTE: &str = "table";

/// How often retention runs per table at most.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Delivers events as rows of PostgreSQL, MySQL/MariaDB or SQLite tables, creating the
/// tables and their columns from the payloads.
///
/// Each event becomes one row of the table its `table` attribute names (else the
/// configured default table): the `_event_id` primary key, the `_sent_at` time, and one
/// column per top-level payload field (see [`column_names`](crate::column_names) and the
/// crate docs for names and types). A redelivered event is skipped by its id, so retries
/// never duplicate rows.
///
/// # Errors
///
/// [`deliver`](Destination::deliver) reports connection loss, deadlocks, serialization
/// failures and lock timeouts as retryable; credentials, permissions and missing
/// databases as config errors; and events whose values the table refuses (or whose
/// `table` attribute is invalid) as permanent, naming only those events while the rest of
/// the batch is stored.
///
/// # Examples
///
/// ```
/// use destination_core::Destination;
/// use destination_sql::{SqlConfig, SqlDestination};
///
/// let config = SqlConfig::new("sqlite://events.db").with_table("webhooks");
/// let dest = SqlDestination::new("warehouse", config)?;
/// assert_eq!(dest.name(), "warehouse");
/// # Ok::<(), destination_sql::SqlError>(())
/// ```
#[derive(Debug)]
pub struct SqlDestination {
    name: String,
    dialect: Dialect,
    table: String,
    retention_days: Option<u32>,
    client: Client,
    /// The columns of each table as last read from the catalog.
    tables: Mutex<HashMap<String, Arc<Columns>>>,
    /// One schema change at a time from this process; the database lock covers others.
    ddl: tokio::sync::Mutex<()>,
    /// When retention last ran, per table.
    retention_runs: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Events the database refused, and its message for the first of them.
struct Refused {
    ids: Vec<EventId>,
    first: Option<String>,
}

impl SqlDestination {
    /// Builds the destination; connections are opened on first use, not here.
    ///
    /// # Errors
    ///
    /// A [`SqlError`] when the URL, the default table or another option is invalid.
    pub fn new(name: impl Into<String>, config: SqlConfig) -> Result<Self, SqlError> {
        let dialect = config.validate()?;
        let client = Client::new(dialect, &config)?;
        Ok(Self {
            name: name.into(),
            dialect,
            table: config.table,
            retention_days: config.retention_days,
            client,
            tables: Mutex::new(HashMap::new()),
            ddl: tokio::sync::Mutex::new(()),
            retention_runs: Mutex::new(HashMap::new()),
        })
    }

    /// The dialect of the configured database.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The table an event goes to, or why it cannot go anywhere.
    fn table_of(&self, event: &Event) -> Result<String, String> {
        match event.attributes.get(TABLE_ATTRIBUTE) {
            None | Some(Value::Null) => Ok(self.table.clone()),
            Some(Value::String(table)) => match validate_table(self.dialect, table) {
                Ok(()) => Ok(table.clone()),
                Err(e) => Err(e.to_string()),
            },
            Some(_) => Err("the table attribute must be a string".to_owned()),
        }
    }

    fn cached(&self, table: &str) -> Option<Arc<Columns>> {
        lock(&self.tables).get(table).cloned()
    }

    fn remember(&self, table: &str, columns: Columns) -> Arc<Columns> {
        let columns = Arc::new(columns);
        lock(&self.tables).insert(table.to_owned(), Arc::clone(&columns));
        columns
    }

    /// The table's columns, after creating or evolving it so that it holds `needs`.
    async fn ensure(&self, table: &str, needs: &Needs) -> Result<Arc<Columns>, sqlx::Error> {
        if let Some(have) = self.cached(table).filter(|c| satisfies(c, needs)) {
            return Ok(have);
        }
        let _guard = self.ddl.lock().await;
        let mut have = self.cached(table);
        if have.is_none() {
            // Cold cache: the table often exists and fits already, and reading the
            // catalog takes no lock.
            if let Some(columns) = self.client.read_columns(table).await? {
                have = Some(self.remember(table, columns));
            }
        }
        if let Some(have) = have.filter(|c| satisfies(c, needs)) {
            return Ok(have);
        }
        debug!(destination = %self.name, table, "evolving table schema");
        let columns = self.client.evolve(table, needs).await?;
        Ok(self.remember(table, columns))
    }

    /// Writes `rows`, splitting a refused write in halves until the refused rows are
    /// alone; returns them. Any other failure ends the attempt.
    async fn insert(
        &self,
        table: &str,
        layout: &Layout,
        rows: &[Row<'_>],
    ) -> Result<Refused, sqlx::Error> {
        let mut refused = Refused {
            ids: Vec::new(),
            first: None,
        };
        let mut pending = vec![rows];
        while let Some(part) = pending.pop() {
            let Err(err) = self.client.insert(table, layout, part).await else {
                continue;
            };
            if classify(&err) != Class::Rows {
                return Err(err);
            }
            if let [row] = part {
                debug!(destination = %self.name, table, event = %row.id, error = %err, "row refused");
                refused.ids.push(row.id);
                refused.first.get_or_insert_with(|| database_message(&err));
            } else {
                let (left, right) = part.split_at(part.len() / 2);
                pending.push(right);
                pending.push(left);
            }
        }
        Ok(refused)
    }

    /// Delivers the events of one table.
    async fn deliver_table(
        &self,
        table: &str,
        events: &[&Event],
    ) -> Result<Refused, DeliveryError> {
        let all: Vec<Fields<'_>> = events
            .iter()
            .map(|e| fields(self.dialect, e.payload()))
            .collect();
        let needs = needs(&all);
        let mut retried = false;
        loop {
            let columns = self
                .ensure(table, &needs)
                .await
                .map_err(|e| delivery_error(table, "schema change", e))?;
            let layout = Layout::new(&needs, &columns);
            let rows: Vec<Row<'_>> = events
                .iter()
                .zip(&all)
                .map(|(event, fields)| layout.row(event, fields))
                .collect();
            match self.insert(table, &layout, &rows).await {
                Ok(refused) => return Ok(refused),
                // Someone dropped or changed the table since we read it: read it again.
                Err(e) if classify(&e) == Class::Stale && !retried => {
                    debug!(destination = %self.name, table, error = %e, "table changed, rereading");
                    lock(&self.tables).remove(table);
                    retried = true;
                }
                Err(e) => {
                    lock(&self.tables).remove(table);
                    return Err(delivery_error(table, "insert", e));
                }
            }
        }
    }

    /// Deletes rows older than the retention period, at most once an hour per table.
    async fn apply_retention(&self, table: &str) {
        let Some(days) = self.retention_days else {
            return;
        };
        {
            let mut runs = lock(&self.retention_runs);
            let due = runs
                .get(table)
                .is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL);
            if !due {
                return;
            }
            runs.insert(table.to_owned(), Instant::now());
        }
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        match self.client.delete_before(table, cutoff).await {
            Ok(deleted) => debug!(destination = %self.name, table, deleted, "retention applied"),
            Err(error) => {
                // Try again on the next delivery rather than in an hour.
                lock(&self.retention_runs).remove(table);
                warn!(destination = %self.name, table, %error, "retention delete failed");
            }
        }
    }
}

#[async_trait]
impl Destination for SqlDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let mut groups: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
        let mut rejected = Vec::new();
        let mut reason: Option<String> = None;
        for event in batch.events() {
            match self.table_of(event) {
                Ok(table) => groups.entry(table).or_default().push(event),
                Err(why) => {
                    rejected.push(event.id);
                    reason.get_or_insert(why);
                }
            }
        }

        for (table, events) in &groups {
            match self.deliver_table(table, events).await {
                Ok(refused) => {
                    if let Some(message) = refused.first {
                        let n = refused.ids.len();
                        reason.get_or_insert(format!(
                            "{n} of {} events refused by table {table}: {message}",
                            events.len()
                        ));
                        rejected.extend(refused.ids);
                    }
                }
                Err(err) if err.kind() == &destination_core::ErrorKind::Permanent => {
                    reason.get_or_insert(err.chain());
                    rejected.extend(events.iter().map(|e| e.id));
                }
                Err(err) => return Err(err),
            }
            self.apply_retention(table).await;
        }

        if rejected.is_empty() {
            debug!(destination = %self.name, events = batch.len(), "batch stored");
            return Ok(());
        }
        // The message already carries the database's own message: no source, whose
        // chain would repeat it.
        let message = reason.unwrap_or_else(|| "events refused".to_owned());
        Err(DeliveryError::permanent(message).with_rejected(rejected))
    }

    async fn health_check(&self) -> Result<(), DeliveryError> {
        self.client
            .ping()
            .await
            .map_err(|e| classified("health check failed".to_owned(), e))
    }

    async fn close(&self) -> Result<(), DeliveryError> {
        self.client.close().await;
        Ok(())
    }

    fn partition_key(&self, event: &Event) -> Option<String> {
        match event.attributes.get(TABLE_ATTRIBUTE)? {
            Value::Null => None,
            Value::String(table) => Some(table.clone()),
            other => Some(other.to_string()),
        }
    }

    fn default_batch(&self) -> BatchConfig {
        BatchConfig {
            max_events: 1000,
            max_bytes: 16 * 1024 * 1024,
            max_age: Duration::from_secs(5),
            ..BatchConfig::bulk()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dest() -> SqlDestination {
        // Building does no I/O: the file is never opened by these tests.
        let config = SqlConfig::new("sqlite://never-opened.db").with_table("fallback");
        SqlDestination::new("unit", config).unwrap()
    }

    #[test]
    fn tables_come_from_the_attribute_or_the_default() {
        let dest = dest();
        let plain = Event::new(json!({}));
        let routed = Event::new(json!({})).with_attribute(TABLE_ATTRIBUTE, "pushes");
        assert_eq!(dest.table_of(&plain).unwrap(), "fallback");
        assert_eq!(dest.table_of(&routed).unwrap(), "pushes");
        assert_eq!(dest.partition_key(&plain), None);
        assert_eq!(dest.partition_key(&routed).as_deref(), Some("pushes"));

        let bad = Event::new(json!({})).with_attribute(TABLE_ATTRIBUTE, "no spaces");
        assert!(
            dest.table_of(&bad)
                .unwrap_err()
                .contains("invalid table name")
        );
        let number = Event::new(json!({})).with_attribute(TABLE_ATTRIBUTE, 7);
        assert!(
            dest.table_of(&number)
                .unwrap_err()
                .contains("must be a string")
        );
        assert_eq!(dest.partition_key(&number).as_deref(), Some("7"));
    }

    #[test]
    fn default_batches_are_bulk_but_prompt() {
        let batch = dest().default_batch();
        assert_eq!(batch.max_events, 1000);
        assert_eq!(batch.max_age, Duration::from_secs(5));
        batch.validate().unwrap();
    }

    #[test]
    fn debug_output_hides_the_url() {
        let config = SqlConfig::new("postgres://loader:s3cret@127.0.0.1/db");
        let dest = SqlDestination::new("unit", config).unwrap();
        let text = format!("{dest:?}");
        assert!(
            !text.contains("s3cret") && text.contains("Postgres"),
            "{text}"
        );
    }
}
