//! The runtime's public behaviour, against in-memory and scripted destinations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use destination_core::testing::MemoryDestination;
use destination_core::{Batch, BatchSettings, DeliveryError, Destination, Event, RetryPolicy};
use destinations::queue::QueueConfig;
use destinations::{DestinationSettings, Outcome, Runtime, SendError};
use serde_json::json;

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

fn settings(attempts: u32) -> DestinationSettings {
    DestinationSettings {
        retry: fast_retry(attempts),
        batch: BatchSettings {
            max_age: Some(Duration::from_millis(10)),
            ..BatchSettings::default()
        },
        ..DestinationSettings::default()
    }
}

#[tokio::test]
async fn delivers_and_resolves_receipts() {
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(3))
        .build()
        .await
        .unwrap();
    let sender = runtime.sender();
    let mut receipts = Vec::new();
    for i in 0..50 {
        receipts.push(
            sender
                .send_with_receipt("m", json!({"i": i}))
                .await
                .unwrap(),
        );
    }
    for (_, receipt) in receipts {
        assert_eq!(receipt.await, Outcome::Delivered);
    }
    assert_eq!(memory.events().len(), 50);
    let snap = runtime.metrics().snapshot("m").unwrap();
    assert_eq!((snap.queued, snap.delivered), (50, 50));
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn retries_then_delivers_and_counts_retries() {
    let memory = Arc::new(MemoryDestination::new("m"));
    memory.fail_next(DeliveryError::retryable("flaky 1"));
    memory.fail_next(DeliveryError::retryable("flaky 2"));
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(5))
        .build()
        .await
        .unwrap();
    let (id, receipt) = runtime
        .sender()
        .send_with_receipt("m", json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(receipt.await, Outcome::Delivered);
    let deliveries = memory.deliveries();
    assert_eq!(deliveries.len(), 3, "two failures then a success");
    assert!(
        deliveries.iter().all(|d| d == &vec![id]),
        "same event id on every attempt"
    );
    let snap = runtime.metrics().snapshot("m").unwrap();
    assert_eq!((snap.retried, snap.failed, snap.delivered), (2, 2, 1));
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn permanent_errors_dead_letter_and_replay_delivers() {
    let memory = Arc::new(MemoryDestination::new("m"));
    memory.fail_next(DeliveryError::permanent("rejected by target"));
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(5))
        .build()
        .await
        .unwrap();
    let (id, receipt) = runtime
        .sender()
        .send_with_receipt("m", json!({"x": 1}))
        .await
        .unwrap();
    match receipt.await {
        Outcome::DeadLettered(error) => assert!(error.contains("rejected by target")),
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(
        memory.deliveries().len(),
        1,
        "permanent errors are not retried"
    );
    let letters = runtime.dead_letters().list(Some("m")).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].events[0].id, id);

    assert_eq!(runtime.replay(Some("m")).await.unwrap(), 1);
    for _ in 0..200 {
        if !memory.events().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(memory.events()[0].id, id, "the replay keeps the event id");
    assert!(runtime.dead_letters().list(None).await.unwrap().is_empty());
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let memory = Arc::new(MemoryDestination::new("m"));
    for _ in 0..3 {
        memory.fail_next(DeliveryError::retryable("down"));
    }
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(3))
        .build()
        .await
        .unwrap();
    let (_, receipt) = runtime
        .sender()
        .send_with_receipt("m", json!({}))
        .await
        .unwrap();
    assert!(matches!(receipt.await, Outcome::DeadLettered(e) if e.contains("down")));
    assert_eq!(memory.deliveries().len(), 3);
    runtime.shutdown().await.unwrap();
}

/// Rejects the events whose payload has `"bad": true`, delivers the rest.
#[derive(Debug, Default)]
struct Picky(std::sync::Mutex<Vec<serde_json::Value>>);

#[async_trait]
impl Destination for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let (bad, good): (Vec<&Event>, Vec<&Event>) = batch
            .events()
            .iter()
            .partition(|e| e.payload()["bad"] == json!(true));
        self.0
            .lock()
            .unwrap()
            .extend(good.iter().map(|e| e.payload().clone()));
        if bad.is_empty() {
            Ok(())
        } else {
            Err(DeliveryError::permanent("bad row")
                .with_rejected(bad.iter().map(|e| e.id).collect()))
        }
    }
}

#[tokio::test]
async fn partial_rejection_dead_letters_only_the_rejected() {
    let picky = Arc::new(Picky::default());
    let mut settings = settings(3);
    settings.batch.max_events = Some(4);
    settings.batch.max_age = Some(Duration::from_secs(60));
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("p", Arc::<Picky>::clone(&picky), settings)
        .build()
        .await
        .unwrap();
    let mut scope = runtime.sender().scope();
    for i in 0..4 {
        scope.send("p", json!({"i": i, "bad": i == 2})).unwrap();
    }
    let ids = scope.commit().await.unwrap();
    for _ in 0..200 {
        if runtime.metrics().snapshot("p").unwrap().dead_lettered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snap = runtime.metrics().snapshot("p").unwrap();
    assert_eq!((snap.delivered, snap.dead_lettered), (3, 1));
    let letters = runtime.dead_letters().list(None).await.unwrap();
    assert_eq!(letters[0].events.len(), 1);
    assert_eq!(letters[0].events[0].id, ids[2]);
    assert_eq!(picky.0.lock().unwrap().len(), 3);
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dropped_scope_queues_nothing() {
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(1))
        .build()
        .await
        .unwrap();
    let sender = runtime.sender();
    {
        let mut scope = sender.scope();
        scope.send("m", json!({"lost": true})).unwrap();
        assert!(matches!(
            scope.send("nope", json!({})),
            Err(SendError::UnknownDestination(_))
        ));
    }
    let (_, receipt) = sender
        .send_with_receipt("m", json!({"kept": true}))
        .await
        .unwrap();
    receipt.await;
    assert_eq!(memory.events().len(), 1);
    assert_eq!(memory.events()[0].payload(), &json!({"kept": true}));
    assert_eq!(runtime.metrics().snapshot("m").unwrap().queued, 1);
    runtime.shutdown().await.unwrap();
}

/// Never answers.
#[derive(Debug, Default)]
struct Hanging(AtomicUsize);

#[async_trait]
impl Destination for Hanging {
    fn name(&self) -> &str {
        "hanging"
    }

    async fn deliver(&self, _: &Batch) -> Result<(), DeliveryError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_hanging_destination_does_not_stall_others() {
    let memory = Arc::new(MemoryDestination::new("m"));
    let hanging = Arc::new(Hanging::default());
    let runtime = Runtime::builder()
        .memory_queue()
        .shutdown_deadline(Duration::from_millis(200))
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(1))
        .destination_with("h", Arc::<Hanging>::clone(&hanging), settings(1))
        .build()
        .await
        .unwrap();
    let sender = runtime.sender();
    for i in 0..20 {
        sender.send("h", json!({"i": i})).await.unwrap();
    }
    // Only once a delivery to `h` hangs does the event for `m` go in.
    let hung = async {
        while hanging.0.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), hung)
        .await
        .expect("a delivery to the hanging destination started");
    let (_, receipt) = sender
        .send_with_receipt("m", json!({"ok": 1}))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), receipt).await;
    assert_eq!(outcome.unwrap(), Outcome::Delivered);
    runtime.shutdown().await.unwrap();
}

/// Throttles the first attempt with a retry-after and records attempt times.
#[derive(Debug, Default)]
struct Throttled(std::sync::Mutex<Vec<std::time::Instant>>);

#[async_trait]
impl Destination for Throttled {
    fn name(&self) -> &str {
        "throttled"
    }

    async fn deliver(&self, _: &Batch) -> Result<(), DeliveryError> {
        let mut times = self.0.lock().unwrap();
        times.push(std::time::Instant::now());
        if times.len() == 1 {
            Err(DeliveryError::rate_limited(
                "429",
                Some(Duration::from_millis(300)),
            ))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn rate_limits_pause_the_whole_destination() {
    let throttled = Arc::new(Throttled::default());
    let mut settings = settings(5);
    settings.batch.max_events = Some(1);
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("t", Arc::<Throttled>::clone(&throttled), settings)
        .build()
        .await
        .unwrap();
    let sender = runtime.sender();
    let (_, first) = sender
        .send_with_receipt("t", json!({"n": 1}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, second) = sender
        .send_with_receipt("t", json!({"n": 2}))
        .await
        .unwrap();
    assert_eq!(first.await, Outcome::Delivered);
    assert_eq!(second.await, Outcome::Delivered);
    let times = throttled.0.lock().unwrap().clone();
    assert_eq!(times.len(), 3);
    // Every attempt after the 429 waited for the retry-after, the other event's included.
    for later in &times[1..] {
        assert!(
            *later - times[0] >= Duration::from_millis(290),
            "{:?}",
            *later - times[0]
        );
    }
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_delivers_what_was_sent_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryDestination::new("d"));
    let lazy = DestinationSettings {
        // Nothing would be flushed by size or age before the shutdown.
        batch: BatchSettings {
            max_events: Some(100_000),
            max_age: Some(Duration::from_secs(3600)),
            ..BatchSettings::default()
        },
        ..settings(1)
    };
    let runtime = Runtime::builder()
        .queue(QueueConfig {
            path: dir.path().join("q"),
            ..QueueConfig::default()
        })
        .destination_with("d", Arc::<MemoryDestination>::clone(&memory), lazy)
        .build()
        .await
        .unwrap();
    let entries: Vec<_> = (0..3000)
        .map(|i| ("d".to_string(), Event::new(json!({"i": i}))))
        .collect();
    let ids = runtime.sender().send_all(entries).await.unwrap();
    // At once: most of the events have not been read by the worker yet.
    runtime.shutdown().await.unwrap();
    let mut got: Vec<_> = memory.events().iter().map(|e| e.id).collect();
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got.len(), want.len(), "events delivered by the shutdown");
    assert!(got == want, "the events delivered are the ones sent");
}

#[tokio::test]
async fn a_shutdown_limit_too_long_for_the_clock_is_no_panic() {
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .memory_queue()
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(1))
        .build()
        .await
        .unwrap();
    runtime.sender().send("m", json!({"n": 1})).await.unwrap();
    runtime.shutdown_within(Duration::MAX).await.unwrap();
    assert_eq!(memory.events().len(), 1);
}

/// Fails every attempt while `failing` is set; records the ids of what it delivers.
#[derive(Debug, Default)]
struct Flaky {
    failing: std::sync::atomic::AtomicBool,
    attempts: AtomicUsize,
    delivered: std::sync::Mutex<Vec<destination_core::EventId>>,
}

#[async_trait]
impl Destination for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(DeliveryError::retryable("down"));
        }
        self.delivered.lock().unwrap().extend(batch.ids());
        Ok(())
    }
}

#[tokio::test]
async fn a_shutdown_during_retries_leaves_no_gap_to_deliver_twice() {
    let dir = tempfile::tempdir().unwrap();
    let queue = QueueConfig {
        path: dir.path().join("q"),
        ..QueueConfig::default()
    };
    let one_slot = DestinationSettings {
        batch: BatchSettings {
            max_events: Some(100),
            max_age: Some(Duration::from_millis(10)),
            ..BatchSettings::default()
        },
        retry: RetryPolicy {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        concurrency: Some(1),
        ..DestinationSettings::default()
    };
    let flaky = Arc::new(Flaky::default());
    flaky.failing.store(true, Ordering::SeqCst);
    let runtime = Runtime::builder()
        .queue(queue.clone())
        .shutdown_deadline(Duration::from_secs(5))
        .destination_with("d", Arc::<Flaky>::clone(&flaky), one_slot.clone())
        .build()
        .await
        .unwrap();
    let entries: Vec<_> = (0..1000)
        .map(|i| ("d".to_string(), Event::new(json!({"i": i}))))
        .collect();
    let ids = runtime.sender().send_all(entries).await.unwrap();
    while flaky.attempts.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first batch is retrying in the only slot; the next waits for it. The endpoint
    // recovers as the shutdown starts.
    flaky.failing.store(false, Ordering::SeqCst);
    runtime.shutdown().await.unwrap();
    let first: Vec<_> = flaky.delivered.lock().unwrap().clone();

    let memory = Arc::new(MemoryDestination::new("d"));
    let runtime = Runtime::builder()
        .queue(queue)
        .destination_with("d", Arc::<MemoryDestination>::clone(&memory), one_slot)
        .build()
        .await
        .unwrap();
    for _ in 0..500 {
        if first.len() + memory.events().len() >= ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runtime.shutdown().await.unwrap();
    let second: Vec<_> = memory.events().iter().map(|e| e.id).collect();
    let mut all: Vec<_> = first.iter().chain(&second).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), ids.len(), "every event delivered");
    assert_eq!(
        first.len() + second.len(),
        ids.len(),
        "no event delivered twice ({} in the first run)",
        first.len()
    );
}

#[tokio::test]
async fn shutdown_keeps_undelivered_events_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let queue = QueueConfig {
        path: dir.path().join("q"),
        ..QueueConfig::default()
    };
    let hanging = Arc::new(Hanging::default());
    let runtime = Runtime::builder()
        .queue(queue.clone())
        .shutdown_deadline(Duration::from_millis(100))
        .destination_with("d", Arc::<Hanging>::clone(&hanging), settings(1))
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(runtime.sender().send("d", json!({"i": i})).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    runtime.shutdown().await.unwrap();

    let memory = Arc::new(MemoryDestination::new("d"));
    let runtime = Runtime::builder()
        .queue(queue)
        .destination_with("d", Arc::<MemoryDestination>::clone(&memory), settings(1))
        .build()
        .await
        .unwrap();
    for _ in 0..2000 {
        if memory.events().len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got: Vec<_> = memory.events().iter().map(|e| e.id).collect();
    got.sort();
    assert_eq!(got, ids);
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_sends_are_clear_errors() {
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .memory_queue()
        .max_event_bytes(64)
        .destination("m", memory)
        .build()
        .await
        .unwrap();
    let sender = runtime.sender();
    let err = sender
        .send("m", json!({"big": "x".repeat(100)}))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::TooLarge { max: 64, .. }), "{err}");
    let err = sender.send("nope", json!({})).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown destination `nope`");
    sender.send("m", json!({"small": 1})).await.unwrap();
    runtime.shutdown().await.unwrap();
    assert!(matches!(
        sender.send("m", json!({})).await,
        Err(SendError::Closed)
    ));
}

#[tokio::test]
async fn shutdown_keeps_its_deadline_when_every_slot_is_retrying() {
    let memory = Arc::new(MemoryDestination::new("m"));
    for _ in 0..100 {
        memory.fail_next(DeliveryError::retryable("down"));
    }
    let mut settings = settings(100);
    settings.concurrency = Some(1);
    settings.batch.max_events = Some(1);
    settings.retry.initial_backoff = Duration::from_secs(5);
    settings.retry.max_backoff = Duration::from_secs(5);
    let runtime = Runtime::builder()
        .memory_queue()
        .shutdown_deadline(Duration::from_millis(300))
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings)
        .build()
        .await
        .unwrap();
    for i in 0..5 {
        runtime.sender().send("m", json!({"i": i})).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), runtime.shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown overran its 300 ms deadline by seconds"
    );
}

#[tokio::test]
async fn send_valid_queues_the_good_and_names_the_bad() {
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .memory_queue()
        .max_event_bytes(64)
        .destination_with("m", Arc::<MemoryDestination>::clone(&memory), settings(1))
        .build()
        .await
        .unwrap();
    let entries = vec![
        ("m".to_string(), Event::new(json!({"ok": 1}))),
        ("m".to_string(), Event::new(json!({"big": "x".repeat(100)}))),
        ("nope".to_string(), Event::new(json!({"ok": 2}))),
        ("m".to_string(), Event::new(json!({"ok": 3}))),
    ];
    let (sent, rejected) = runtime
        .sender()
        .send_valid_with_receipts(entries)
        .await
        .unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(rejected.len(), 2);
    assert!(matches!(
        rejected[0],
        (1, SendError::TooLarge { max: 64, .. })
    ));
    assert!(matches!(rejected[1], (2, SendError::UnknownDestination(_))));
    for (_, receipt) in sent {
        assert_eq!(receipt.await, Outcome::Delivered);
    }
    assert_eq!(memory.events().len(), 2);
    runtime.shutdown().await.unwrap();
}

/// A queue whose reads take a while after handing records out, counting reads that were
/// dropped before they returned; its reads can also be made to fail.
///
/// It breaks the cancel safety [`Queue::next`](destinations::queue::Queue::next) asks for,
/// on purpose: a dropped read then shows as events never delivered. The product's queues
/// are cancel safe, but for them a dropped read is work thrown away (the disk queue reads
/// the same events again on the next call).
#[derive(Debug)]
struct SlowReads {
    inner: destinations::queue::MemoryQueue,
    abandoned: Arc<AtomicUsize>,
    /// While set, every read fails; counts the failed reads.
    failing: Option<Arc<AtomicUsize>>,
}

/// Counts a read as abandoned unless it is disarmed.
struct ReadGuard(Arc<AtomicUsize>, bool);

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl destinations::queue::Queue for SlowReads {
    async fn append(
        &self,
        entries: Vec<(String, Event)>,
    ) -> Result<Vec<destinations::queue::Seq>, destinations::queue::QueueError> {
        self.inner.append(entries).await
    }

    async fn next(
        &self,
        destination: &str,
        max: usize,
    ) -> Result<Vec<destinations::queue::Record>, destinations::queue::QueueError> {
        if let Some(failed) = &self.failing {
            failed.fetch_add(1, Ordering::SeqCst);
            return Err(destinations::queue::QueueError::Codec(
                "injected read failure".into(),
            ));
        }
        let records = self.inner.next(destination, max).await?;
        let mut guard = ReadGuard(Arc::clone(&self.abandoned), false);
        tokio::time::sleep(Duration::from_millis(5)).await;
        guard.1 = true;
        Ok(records)
    }

    async fn ack(
        &self,
        destination: &str,
        seqs: &[destinations::queue::Seq],
    ) -> Result<(), destinations::queue::QueueError> {
        self.inner.ack(destination, seqs).await
    }

    fn stats(&self, destination: &str) -> destinations::queue::QueueStats {
        self.inner.stats(destination)
    }

    async fn close(&self) -> Result<(), destinations::queue::QueueError> {
        self.inner.close().await
    }
}

#[tokio::test]
async fn a_read_in_progress_is_not_dropped_when_a_delivery_finishes() {
    let abandoned = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(SlowReads {
        inner: destinations::queue::MemoryQueue::new(),
        abandoned: Arc::clone(&abandoned),
        failing: None,
    });
    let memory = Arc::new(MemoryDestination::new("m"));
    let runtime = Runtime::builder()
        .custom_queue(queue, Arc::new(destinations::MemoryDeadLetters::default()))
        .destination_with(
            "m",
            Arc::<MemoryDestination>::clone(&memory),
            DestinationSettings {
                batch: BatchSettings {
                    max_events: Some(1),
                    ..BatchSettings::default()
                },
                concurrency: Some(4),
                ..settings(3)
            },
        )
        .build()
        .await
        .unwrap();
    let sender = runtime.sender();
    for i in 0..300 {
        sender.send("m", json!({"i": i})).await.unwrap();
    }
    for _ in 0..500 {
        if memory.events().len() == 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(memory.events().len(), 300, "every event delivered");
    assert_eq!(
        abandoned.load(Ordering::SeqCst),
        0,
        "reads were dropped while deliveries finished"
    );
    runtime.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_pausing_after_a_failed_queue_read_still_stops_at_once() {
    let failed = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(SlowReads {
        inner: destinations::queue::MemoryQueue::new(),
        abandoned: Arc::new(AtomicUsize::new(0)),
        failing: Some(Arc::clone(&failed)),
    });
    let runtime = Runtime::builder()
        .custom_queue(queue, Arc::new(destinations::MemoryDeadLetters::default()))
        .destination_with("m", Arc::new(MemoryDestination::new("m")), settings(3))
        .build()
        .await
        .unwrap();
    for _ in 0..500 {
        if failed.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(failed.load(Ordering::SeqCst), 1, "one read failed");
    // The worker now waits a second before reading again; shutdown must not wait with it.
    let started = std::time::Instant::now();
    runtime.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(800),
        "shutdown waited out the pause after the failed read: {took:?}"
    );
}
