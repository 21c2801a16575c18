//! Delivery against real databases: the conformance suite, the 420 real GitHub payloads
//! read back field by field, one table per event type, and idempotent redelivery.

mod support;

use std::collections::{BTreeMap, HashMap};

use destination_core::testing::{run_all, sample_events};
use destination_core::{Batch, Destination, Event};
use destination_sql::{Dialect, SqlDestination, TABLE_ATTRIBUTE};
use serde_json::json;
use support::{Db, Ids, assert_payloads_stored, github_events};

per_dialect!(
    conformance,
    github_payloads_round_trip,
    github_event_names_as_tables,
    redelivery_never_duplicates,
    non_object_payloads_use_the_value_column,
);

async fn conformance(db: Db) {
    let table = db.table("conf");
    let dest = db.destination(&table);
    let read = Ids {
        db: &db,
        table: table.clone(),
    };
    run_all(&dest, &read).await;
    db.drop_table(&table).await;
}

/// All 420 payloads into one table, in batches of 60 so the schema grows between batches,
/// then every top-level field of every event compared with its stored cell.
async fn github_payloads_round_trip(db: Db) {
    let table = db.table("gh");
    let dest = db.destination(&table);
    let events = github_events();
    assert_eq!(events.len(), 420);

    for chunk in events.chunks(60) {
        let batch = Batch::new(None, chunk.to_vec());
        if let Err(e) = dest.deliver(&batch).await {
            panic!("{:?}: delivery failed: {}", db.dialect, e.chain());
        }
    }

    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 420, "one row per event");
    assert_payloads_stored(db.dialect, &events, &rows);

    // Spot checks on column types inferred from real payloads.
    let types = db.column_types(&table).await;
    let expect = |column: &str, pg: &str, my: &str| {
        let wanted = match db.dialect {
            Dialect::Postgres => pg,
            Dialect::MySql => my,
            _ => return,
        };
        // MariaDB prints display widths (`bigint(20)`), MySQL 8 does not.
        let found = types.get(column).map(String::as_str).unwrap_or("missing");
        assert!(
            found.starts_with(wanted),
            "{column}: {found}, expected {wanted}"
        );
    };
    expect("action", "text", "longtext");
    expect("number", "bigint", "bigint");
    expect("sender", "jsonb", "longtext");
    expect("forced", "boolean", "tinyint(1)");
    expect("_sent_at", "timestamp with time zone", "datetime(6)");
    // "workflow" is a string in some payloads and an object in others: widened to text.
    expect("workflow", "text", "longtext");
    db.drop_table(&table).await;
}

/// The `event` of each payload names its table, through the `table` attribute: batches
/// grouped by partition key as the runtime does, plus one mixed batch.
async fn github_event_names_as_tables(db: Db) {
    let prefix = db.table("ev");
    let events: Vec<Event> = github_events()
        .into_iter()
        .map(|e| {
            let name = e.attribute_str("gh_event").expect("event name").to_owned();
            e.with_attribute(TABLE_ATTRIBUTE, format!("{prefix}_{name}"))
        })
        .collect();
    let dest = db.destination(&format!("{prefix}_default"));

    let (mixed, rest) = events.split_at(40);
    let mut batches: BTreeMap<Option<String>, Vec<Event>> = BTreeMap::new();
    for event in rest {
        batches
            .entry(dest.partition_key(event))
            .or_default()
            .push(event.clone());
    }
    for (partition, events) in batches {
        dest.deliver(&Batch::new(partition, events))
            .await
            .expect("partitioned batch");
    }
    dest.deliver(&Batch::new(None, mixed.to_vec()))
        .await
        .expect("mixed batch");

    let mut expected: HashMap<String, Vec<Event>> = HashMap::new();
    for event in &events {
        let table = event
            .attribute_str(TABLE_ATTRIBUTE)
            .expect("table")
            .to_owned();
        expected.entry(table).or_default().push(event.clone());
    }
    assert!(expected.len() > 50, "many event types");
    for (table, events) in &expected {
        let rows = db.rows_by_id(table).await;
        assert_eq!(rows.len(), events.len(), "{table}");
        assert_payloads_stored(db.dialect, events, &rows);
        db.drop_table(table).await;
    }
    db.drop_table(&format!("{prefix}_default")).await;
}

/// The same batch delivered three times, then once more by a fresh destination with a
/// cold schema cache: every event stored once.
async fn redelivery_never_duplicates(db: Db) {
    let table = db.table("redo");
    let events = sample_events(120);
    let batch = Batch::new(None, events.clone());
    let dest = db.destination(&table);
    for _ in 0..3 {
        dest.deliver(&batch).await.expect("delivery");
    }
    let fresh = SqlDestination::new("again", db.config(&table)).expect("config");
    fresh
        .deliver(&batch)
        .await
        .expect("redelivery by a new destination");
    // A batch that overlaps the first one: only the new half adds rows.
    let mut overlap = events[60..].to_vec();
    overlap.extend(sample_events(30));
    fresh
        .deliver(&Batch::new(None, overlap.clone()))
        .await
        .expect("overlap");

    let mut ids = db.ids(&table).await.expect("ids");
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "no id stored twice");
    assert_eq!(ids.len(), 150);
    let mut all = events;
    all.extend_from_slice(&overlap[60..]);
    assert_payloads_stored(db.dialect, &all, &db.rows_by_id(&table).await);
    db.drop_table(&table).await;
}

async fn non_object_payloads_use_the_value_column(db: Db) {
    let table = db.table("scalar");
    let events = vec![
        Event::new(json!(42)),
        Event::new(json!([1, "two", null])),
        Event::new(json!("plain")),
        Event::new(json!(null)),
    ];
    let dest = db.destination(&table);
    dest.deliver(&Batch::new(None, events.clone()))
        .await
        .expect("delivery");
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 4);
    assert_payloads_stored(db.dialect, &events, &rows);
    db.drop_table(&table).await;
}
