//! Events that are awkward to store: they must come back from the disk queue as they went
//! in, or be refused at `send` with a clear error, and never hold up the events after them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Timelike, Utc};
use destination_core::testing::MemoryDestination;
use destination_core::{BatchSettings, Event, EventId, MAX_PAYLOAD_DEPTH, RetryPolicy};
use destinations::queue::{Queue, QueueConfig, SegmentLog};
use destinations::{DestinationSettings, Runtime, SendError};
use serde_json::{Value, json};

/// A queue that reads every event back from disk (as after a restart).
fn from_disk(dir: &std::path::Path) -> QueueConfig {
    QueueConfig {
        path: dir.to_path_buf(),
        read_cache_bytes: 0,
        ..QueueConfig::default()
    }
}

fn settings() -> DestinationSettings {
    DestinationSettings {
        retry: RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        batch: BatchSettings {
            max_age: Some(Duration::from_millis(10)),
            ..BatchSettings::default()
        },
        ..DestinationSettings::default()
    }
}

/// A runtime whose queue reads every event back from disk, with one memory destination.
async fn runtime_from_disk(dir: &std::path::Path) -> (Runtime, Arc<MemoryDestination>) {
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .queue(from_disk(&dir.join("q")))
        .shutdown_deadline(Duration::from_millis(200))
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings())
        .build()
        .await
        .unwrap();
    (runtime, memory)
}

/// Waits up to 3 s for `memory` to hold `count` events.
async fn wait_for(memory: &MemoryDestination, count: usize) {
    for _ in 0..300 {
        if memory.events().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// chrono lets any second carry nanoseconds past 1e9 (a leap second); such a time must be
/// read back from disk as it was stored.
#[tokio::test]
async fn an_event_whose_sent_at_has_leap_nanoseconds_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(from_disk(dir.path())).await.unwrap();
    let sent_at = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 30)
        .unwrap()
        .with_nanosecond(1_500_000_000)
        .expect("chrono accepts it");
    let odd = Event::with_id(EventId::new(), sent_at, json!({"a": 1}));
    let plain = Event::new(json!({"b": 2}));
    log.append(vec![("d".into(), odd), ("d".into(), plain)])
        .await
        .expect("append accepts the event");
    let read = tokio::time::timeout(Duration::from_secs(5), log.next("d", 10))
        .await
        .unwrap();
    let records = read.expect("the appended events read back");
    assert_eq!(records.len(), 2);
    log.close().await.unwrap();
}

/// The same end to end: a time the queue could not read back would fail every read of the
/// destination, and the event after it would never be delivered either.
#[tokio::test]
async fn an_event_with_leap_nanoseconds_does_not_wedge_its_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, memory) = runtime_from_disk(dir.path()).await;
    let sent_at = Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 30)
        .unwrap()
        .with_nanosecond(1_500_000_000)
        .unwrap();
    let sender = runtime.sender();
    sender
        .send_event(
            "m",
            Event::with_id(EventId::new(), sent_at, json!({"odd": 1})),
        )
        .await
        .unwrap();
    sender.send("m", json!({"after": 1})).await.unwrap();
    wait_for(&memory, 2).await;
    let delivered = memory.events().len();
    runtime.shutdown().await.unwrap();
    assert_eq!(delivered, 2, "events delivered within 3 s");
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// A payload built in code may nest deeper than JSON text can be parsed back; it is refused
/// at `send`, naming why, and the events after it are delivered.
#[tokio::test]
async fn a_payload_too_deep_to_read_back_is_refused_at_send() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, memory) = runtime_from_disk(dir.path()).await;
    let sender = runtime.sender();
    let deepest = json!({"deep": nested(MAX_PAYLOAD_DEPTH - 1)});
    let too_deep = json!({"deep": nested(MAX_PAYLOAD_DEPTH)});
    let err = sender.send("m", too_deep).await.unwrap_err();
    assert!(matches!(err, SendError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("nests more than"), "{err}");
    sender.send("m", deepest.clone()).await.unwrap();
    wait_for(&memory, 1).await;
    let got = memory.events();
    runtime.shutdown().await.unwrap();
    assert_eq!(got.len(), 1, "the event after the refused one is delivered");
    assert_eq!(got[0].payload(), &deepest, "read back from disk unchanged");
}
