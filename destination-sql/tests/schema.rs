//! Schema inference and evolution against real databases: widening, writers racing to add
//! columns, and payload keys that are keywords, quotes, unicode or too long.

mod support;

use destination_core::{Batch, Destination, Event};
use destination_sql::{Dialect, SqlDestination, column_names};
use serde_json::{Value, json};
use support::{Db, assert_payloads_stored};

per_dialect!(
    fields_changing_type_widen_their_column,
    racing_writers_add_different_columns,
    awkward_keys_become_valid_columns,
);

async fn deliver(dest: &SqlDestination, events: &[Event]) {
    if let Err(e) = dest.deliver(&Batch::new(None, events.to_vec())).await {
        panic!("delivery failed: {}", e.chain());
    }
}

async fn fields_changing_type_widen_their_column(db: Db) {
    let table = db.table("widen");
    let dest = db.destination(&table);
    let first = vec![Event::new(json!({
        "a": 1, "b": true, "c": {"x": 1}, "d": "2020-01-01T00:00:00Z", "e": 1, "f": 10,
    }))];
    let second = vec![Event::new(json!({
        "a": 1.5, "b": 2, "c": "text", "d": "not a time", "e": "str", "f": 20,
    }))];
    // Both types in one batch: the column is created wide at once.
    let third = vec![Event::new(json!({"g": 1})), Event::new(json!({"g": "x"}))];
    // Narrower values still fit widened columns.
    let fourth = vec![Event::new(
        json!({"a": 7, "b": false, "c": {"y": [2]}, "g": 3}),
    )];
    for batch in [&first, &second, &third, &fourth] {
        deliver(&dest, batch).await;
    }
    // A destination with a cold cache reads the JSON column back from the catalog (on
    // MariaDB, a LONGTEXT with a json_valid check) and widens it for a plain string.
    let json_first = vec![Event::new(json!({"h": {"k": 1}}))];
    deliver(&dest, &json_first).await;
    let fresh = SqlDestination::new("fresh", db.config(&table)).expect("config");
    let then_text = vec![Event::new(json!({"h": "plain string"}))];
    deliver(&fresh, &then_text).await;

    let types = db.column_types(&table).await;
    let expected: &[(&str, &str)] = match db.dialect {
        Dialect::Postgres => &[
            ("a", "double precision"),
            ("b", "jsonb"),
            ("c", "text"),
            ("d", "text"),
            ("e", "text"),
            ("f", "bigint"),
            ("g", "text"),
            ("h", "text"),
        ],
        // MariaDB's JSON is LONGTEXT with a json_valid check.
        Dialect::MySql => &[
            ("a", "double"),
            ("b", "longtext"),
            ("c", "longtext"),
            ("d", "longtext"),
            ("e", "longtext"),
            ("f", "bigint"),
            ("g", "longtext"),
            ("h", "longtext"),
        ],
        // SQLite keeps declared types and stores the wider values as they are.
        _ => &[
            ("a", "integer"),
            ("b", "boolean"),
            ("c", "json"),
            ("d", "timestamp"),
            ("e", "integer"),
            ("f", "integer"),
            ("g", "text"),
            ("h", "json"),
        ],
    };
    for (column, ty) in expected {
        let found = types.get(*column).map(String::as_str).unwrap_or("missing");
        assert!(
            found.starts_with(ty),
            "{:?} {column}: {found}, expected {ty}",
            db.dialect
        );
    }

    let all: Vec<Event> = [first, second, third, fourth, json_first, then_text].concat();
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), all.len());
    assert_payloads_stored(db.dialect, &all, &rows);
    db.drop_table(&table).await;
}

/// Two destinations (two pools, two schema caches, as two processes would have) deliver
/// at the same time, each adding columns the other does not know, and disagreeing on the
/// type of one of them.
async fn racing_writers_add_different_columns(db: Db) {
    let table = db.table("race");
    let a = SqlDestination::new("writer-a", db.config(&table)).expect("config");
    let b = SqlDestination::new("writer-b", db.config(&table)).expect("config");
    let mut all = Vec::new();
    for round in 0..6 {
        let events = |writer: &str, clash: Value| -> Vec<Event> {
            (0..20)
                .map(|i| {
                    let mut payload = json!({"common": i, "clash": clash.clone()});
                    payload[format!("{writer}_{round}")] = json!(format!("{writer}{round}-{i}"));
                    payload[format!("{writer}_n_{round}")] = json!(i * round);
                    Event::new(payload)
                })
                .collect()
        };
        let from_a = events("a", json!(round));
        let from_b = events("b", json!(format!("text {round}")));
        let (batch_a, batch_b) = (
            Batch::new(None, from_a.clone()),
            Batch::new(None, from_b.clone()),
        );
        let (ra, rb) = tokio::join!(a.deliver(&batch_a), b.deliver(&batch_b));
        for (writer, result) in [("a", ra), ("b", rb)] {
            if let Err(e) = result {
                panic!(
                    "{:?} round {round} writer {writer}: {}",
                    db.dialect,
                    e.chain()
                );
            }
        }
        all.extend(from_a);
        all.extend(from_b);
    }

    let types = db.column_types(&table).await;
    for writer in ["a", "b"] {
        for round in 0..6 {
            let (text, number) = (format!("{writer}_{round}"), format!("{writer}_n_{round}"));
            assert!(
                types.contains_key(&text) && types.contains_key(&number),
                "{text}"
            );
        }
    }
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 240);
    assert_payloads_stored(db.dialect, &all, &rows);
    db.drop_table(&table).await;
}

async fn awkward_keys_become_valid_columns(db: Db) {
    let table = db.table("keys");
    let canary = format!("{table}_canary");
    db.exec(&format!("CREATE TABLE {} (x INTEGER)", db.quote(&canary)))
        .await;

    let long_k = "k".repeat(100);
    let long_e = "é".repeat(70);
    let long_a = format!("{}a", "p".repeat(80));
    let long_b = format!("{}b", "p".repeat(80));
    let injection = format!("x; DROP TABLE {canary};--");
    let keys: Vec<&str> = vec![
        "select",
        "from",
        "order",
        "group",
        "user",
        "table",
        "limit",
        "a\"b",
        "it's",
        &injection,
        "with space",
        "ünïcödé",
        "emoji🚀",
        "",
        "1st",
        &long_k,
        &long_e,
        &long_a,
        &long_b,
        "ID",
        "id",
        "_event_id",
        "_sent_at",
        "back`tick",
        "percent%s",
        "question?",
        "dollar$1",
        "CamelCase",
        "tab\there",
        "new\nline",
        "dot.ted",
        "back\\slash",
        "nul\u{0}byte",
    ];
    let event = |n: i64| {
        let map: serde_json::Map<String, Value> = keys
            .iter()
            .enumerate()
            .map(|(j, key)| {
                let value = if j % 2 == 0 {
                    json!(n * 100 + j as i64)
                } else {
                    json!(format!("v{n}-{j}"))
                };
                ((*key).to_owned(), value)
            })
            .collect();
        Event::new(Value::Object(map))
    };
    let events = vec![
        event(1),
        event(2),
        Event::new(json!({"select": 5, "id": 6, "ID": 7})),
    ];
    deliver(&db.destination(&table), &events).await;

    let names = column_names(db.dialect, keys.iter().copied());
    let mut distinct: Vec<&String> = names.iter().map(|(_, n)| n).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), keys.len(), "every key has its own column");
    let types = db.column_types(&table).await;
    assert_eq!(types.len(), keys.len() + 2, "{:?}", types.keys());
    for (key, column) in &names {
        assert!(
            types.contains_key(column),
            "{key:?}: column {column:?} missing"
        );
        match db.dialect {
            Dialect::MySql => assert!(column.chars().count() <= 64, "{column}"),
            _ => assert!(column.len() <= 63, "{column}"),
        }
    }
    for plain in [
        "select",
        "from",
        "order",
        "user",
        "table",
        "id",
        "camelcase",
        "ünïcödé",
    ] {
        assert!(
            types.contains_key(plain),
            "plain key {plain} keeps its name"
        );
    }

    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 3);
    assert_payloads_stored(db.dialect, &events, &rows);
    assert!(
        db.column_types(&canary).await.contains_key("x"),
        "canary table survived"
    );
    db.drop_table(&table).await;
    db.drop_table(&canary).await;
}
