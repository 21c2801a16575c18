//! Failures against real databases: refused rows dead-lettered alone, invalid table
//! attributes, a connection cut in the middle of a bulk write, unreachable databases, and
//! retention.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use destination_core::{Batch, Destination, ErrorKind, Event, EventId};
use destination_sql::{Dialect, SqlConfig, SqlDestination, TABLE_ATTRIBUTE};
use serde_json::json;
use support::proxy::{Proxy, retarget};
use support::{Db, assert_payloads_stored, github_events};

per_dialect!(
    refused_rows_are_rejected_alone,
    invalid_table_attributes_reject_only_their_events,
    connection_cut_mid_batch_is_retryable_and_leaves_nothing,
    unreachable_database_fails_health_check,
    retention_deletes_old_rows_at_most_hourly,
    a_table_dropped_behind_our_back_is_recreated,
);

/// The schema cache says the table exists, but another client dropped it: the insert
/// fails as stale, the catalog is read again, the table is recreated and the batch stored.
async fn a_table_dropped_behind_our_back_is_recreated(db: Db) {
    let table = db.table("gone");
    let dest = db.destination(&table);
    let first = vec![Event::new(json!({"a": 1, "b": "x"}))];
    dest.deliver(&Batch::new(None, first))
        .await
        .expect("delivery");
    db.drop_table(&table).await;

    let second = vec![Event::new(json!({"a": 2, "b": "y"}))];
    if let Err(e) = dest.deliver(&Batch::new(None, second.clone())).await {
        panic!("{:?}: {}", db.dialect, e.chain());
    }
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 1);
    assert_payloads_stored(db.dialect, &second, &rows);
    db.drop_table(&table).await;
}

/// A table with a CHECK constraint the payloads cannot satisfy by widening: the events
/// that break it are rejected with the database's message, the others are stored, and a
/// redelivery changes nothing.
async fn refused_rows_are_rejected_alone(db: Db) {
    let table = db.table("check");
    let (id, sent, n) = match db.dialect {
        Dialect::Postgres => ("uuid PRIMARY KEY", "timestamptz NOT NULL", "bigint"),
        Dialect::MySql => ("CHAR(36) PRIMARY KEY", "DATETIME(6) NOT NULL", "BIGINT"),
        _ => ("TEXT PRIMARY KEY NOT NULL", "TEXT NOT NULL", "INTEGER"),
    };
    db.exec(
        &format!(
            "CREATE TABLE {} (\"_event_id\" {id}, \"_sent_at\" {sent}, n {n}, CHECK (n >= 0))",
            db.quote(&table)
        )
        .replace(
            '"',
            if db.dialect == Dialect::MySql {
                "`"
            } else {
                "\""
            },
        ),
    )
    .await;

    let bad = [7, 23, 41];
    let events: Vec<Event> = (0..50)
        .map(|i| {
            let n = if bad.contains(&i) { -1 } else { i };
            Event::new(json!({"n": n, "label": format!("event {i}")}))
        })
        .collect();
    let batch = Batch::new(None, events.clone());
    let expected: BTreeSet<EventId> = bad.iter().map(|i| events[*i as usize].id).collect();

    let dest = db.destination(&table);
    for attempt in 0..2 {
        let err = dest
            .deliver(&batch)
            .await
            .expect_err("three rows break the check");
        assert_eq!(err.kind(), &ErrorKind::Permanent, "{}", err.chain());
        let rejected: BTreeSet<EventId> =
            err.rejected().expect("a subset").iter().copied().collect();
        assert_eq!(rejected, expected, "attempt {attempt}");
        let message = err.chain().to_lowercase();
        assert!(
            message.contains("3 of 50") && message.contains("check"),
            "{message}"
        );
    }
    let stored: Vec<Event> = events
        .iter()
        .filter(|e| !expected.contains(&e.id))
        .cloned()
        .collect();
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 47);
    assert_payloads_stored(db.dialect, &stored, &rows);
    db.drop_table(&table).await;
}

async fn invalid_table_attributes_reject_only_their_events(db: Db) {
    let table = db.table("attr");
    let good: Vec<Event> = (0..5).map(|i| Event::new(json!({"i": i}))).collect();
    let bad = [
        Event::new(json!({"i": 10})).with_attribute(TABLE_ATTRIBUTE, "bad-name"),
        Event::new(json!({"i": 11})).with_attribute(TABLE_ATTRIBUTE, 42),
        Event::new(json!({"i": 12})).with_attribute(TABLE_ATTRIBUTE, "x".repeat(70)),
        Event::new(json!({"i": 13})).with_attribute(TABLE_ATTRIBUTE, "t; DROP TABLE x"),
    ];
    let mut all = good.clone();
    all.splice(2..2, bad.iter().cloned());

    let err = db
        .destination(&table)
        .deliver(&Batch::new(None, all))
        .await
        .expect_err("bad table names");
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    let rejected: BTreeSet<EventId> = err.rejected().expect("subset").iter().copied().collect();
    assert_eq!(rejected, bad.iter().map(|e| e.id).collect());
    assert!(
        err.message().contains("invalid table name"),
        "{}",
        err.message()
    );
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 5);
    assert_payloads_stored(db.dialect, &good, &rows);
    db.drop_table(&table).await;
}

/// The connection drops while the 420 payloads stream to the server (PostgreSQL's COPY,
/// MySQL's multi-row inserts): the delivery is retryable, nothing of the batch is visible,
/// and the retry stores every event once.
async fn connection_cut_mid_batch_is_retryable_and_leaves_nothing(db: Db) {
    if db.dialect == Dialect::Sqlite {
        return; // no connection to cut
    }
    let (target, _) = retarget(&db.url, "127.0.0.1:1".parse().expect("addr"));
    let proxy = Proxy::start(target).await;
    let (_, url) = retarget(&db.url, proxy.addr);
    let table = db.table("cut");
    let dest = SqlDestination::new("cut", SqlConfig::new(url).with_table(&table)).expect("config");

    let events = github_events();
    let batch = Batch::new(None, events.clone());
    // Create the table and most columns first, so that the cut lands in the bulk write.
    dest.deliver(&Batch::new(None, events[..100].to_vec()))
        .await
        .expect("warm-up");
    dest.deliver(&Batch::new(None, events[..5].to_vec()))
        .await
        .expect("warm-up");

    proxy.cut_after(256 * 1024);
    let err = dest
        .deliver(&batch)
        .await
        .expect_err("the connection was cut");
    assert_eq!(proxy.cuts(), 1, "the proxy cut the connections");
    assert!(err.is_retryable(), "{}", err.chain());
    assert_eq!(
        db.ids(&table).await.expect("ids").len(),
        100,
        "the cut write left nothing"
    );

    dest.deliver(&batch)
        .await
        .expect("the retry reconnects and succeeds");
    let rows = db.rows_by_id(&table).await;
    assert_eq!(rows.len(), 420);
    assert_payloads_stored(db.dialect, &events, &rows);
    db.drop_table(&table).await;
}

async fn unreachable_database_fails_health_check(db: Db) {
    let url = match db.dialect {
        Dialect::Sqlite => "sqlite:///nonexistent-destinations-dir/sub/events.db".to_owned(),
        _ => {
            // A loopback port we held a moment ago: nothing listens there now.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            drop(listener);
            retarget(&db.url, addr).1
        }
    };
    let config = SqlConfig::new(url).with_acquire_timeout(Duration::from_secs(2));
    let dest = SqlDestination::new("down", config).expect("config is valid without I/O");
    let health = dest
        .health_check()
        .await
        .expect_err("nothing to connect to");
    let delivery = dest
        .deliver(&Batch::new(None, vec![Event::new(json!({"a": 1}))]))
        .await
        .expect_err("nothing to deliver to");
    for err in [health, delivery] {
        match db.dialect {
            // The file cannot be created: an operator must fix the path.
            Dialect::Sqlite => assert_eq!(err.kind(), &ErrorKind::Config, "{}", err.chain()),
            _ => assert!(err.is_retryable(), "{}", err.chain()),
        }
    }
}

async fn retention_deletes_old_rows_at_most_hourly(db: Db) {
    let table = db.table("keep");
    let old = |i: i64| {
        Event::with_id(
            EventId::new(),
            Utc::now() - chrono::Duration::days(10) + chrono::Duration::seconds(i),
            json!({"age": "old", "i": i}),
        )
    };
    let recent: Vec<Event> = (0..5)
        .map(|i| Event::new(json!({"age": "new", "i": i})))
        .collect();
    let mut first: Vec<Event> = (0..5).map(old).collect();
    first.extend(recent.iter().cloned());

    let config = db.config(&table).with_retention_days(3);
    let dest = SqlDestination::new("retention", config.clone()).expect("config");
    dest.deliver(&Batch::new(None, first))
        .await
        .expect("delivery");
    let mut ids = db.ids(&table).await.expect("ids");
    ids.sort();
    assert_eq!(
        ids,
        recent.iter().map(|e| e.id).collect::<Vec<_>>(),
        "old rows deleted"
    );

    // Within the hour the same destination does not delete again...
    let late: Vec<Event> = (10..13).map(old).collect();
    dest.deliver(&Batch::new(None, late))
        .await
        .expect("delivery");
    assert_eq!(db.ids(&table).await.expect("ids").len(), 8);
    // ...while another one (another process) does on its first delivery.
    let other = SqlDestination::new("retention-2", config).expect("config");
    other
        .deliver(&Batch::new(None, recent.clone()))
        .await
        .expect("delivery");
    assert_eq!(db.ids(&table).await.expect("ids").len(), 5);
    db.drop_table(&table).await;
}

/// PostgreSQL text cannot hold a NUL character: that event alone is rejected.
#[tokio::test]
async fn postgres_rejects_nul_characters_alone() {
    let Some(db) = Db::postgres("postgres_rejects_nul_characters_alone").await else {
        return;
    };
    let table = db.table("nul");
    let events: Vec<Event> = (0..20)
        .map(|i| {
            let s = if i == 13 {
                "nul \u{0} inside".to_owned()
            } else {
                format!("fine {i}")
            };
            Event::new(json!({"s": s, "i": i}))
        })
        .collect();
    let err = db
        .destination(&table)
        .deliver(&Batch::new(None, events.clone()))
        .await
        .expect_err("the NUL is refused");
    assert_eq!(
        err.rejected(),
        Some(&[events[13].id][..]),
        "{}",
        err.chain()
    );
    assert!(err.chain().contains("0x00"), "{}", err.chain());
    assert_eq!(db.rows(&table).await.len(), 19);
    db.drop_table(&table).await;
}
