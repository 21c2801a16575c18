//! A test kit for destination authors: an in-memory destination and a conformance suite.
//!
//! The suite is a set of async functions that take any [`Destination`] plus a
//! [`ReadBack`] that reads what the target really stored (rows, objects, messages). Each
//! panics with a message naming the broken rule, so it fits in a `#[tokio::test]`.
//!
//! # Optional
//!
//! This module needs the `testing` feature.
//!
//! # Examples
//!
//! ```
//! use destination_core::testing::{self, MemoryDestination};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dest = MemoryDestination::new("memory");
//! testing::run_all(&dest, &dest).await;
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::json;

use crate::{Batch, DeliveryError, Destination, Event, EventId};

/// Reads back what a destination's target stored.
#[async_trait]
pub trait ReadBack: Send + Sync {
    /// The ids of the stored events, one entry per stored copy (so duplicates show).
    ///
    /// # Errors
    ///
    /// A message saying why the target could not be read.
    async fn stored_ids(&self) -> Result<Vec<EventId>, String>;
}

/// A destination that keeps what it receives in memory, keyed by event id.
///
/// It can be told to fail its next deliveries, to test retry and dead-letter paths.
#[derive(Debug)]
pub struct MemoryDestination {
    name: String,
    stored: Mutex<BTreeMap<EventId, Event>>,
    deliveries: Mutex<Vec<Vec<EventId>>>,
    failures: Mutex<VecDeque<DeliveryError>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryDestination {
    /// An empty destination called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            stored: Mutex::new(BTreeMap::new()),
            deliveries: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::new()),
        }
    }

    /// Makes the next delivery fail with `error` (queued after earlier ones).
    pub fn fail_next(&self, error: DeliveryError) {
        lock(&self.failures).push_back(error);
    }

    /// Every stored event, in id order.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.stored).values().cloned().collect()
    }

    /// The ids of every attempted delivery, failed ones included, in call order.
    pub fn deliveries(&self) -> Vec<Vec<EventId>> {
        lock(&self.deliveries).clone()
    }
}

#[async_trait]
impl Destination for MemoryDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        lock(&self.deliveries).push(batch.ids().collect());
        if let Some(err) = lock(&self.failures).pop_front() {
            return Err(err);
        }
        let mut stored = lock(&self.stored);
        for event in batch.events() {
            stored.insert(event.id, event.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl ReadBack for MemoryDestination {
    async fn stored_ids(&self) -> Result<Vec<EventId>, String> {
        Ok(lock(&self.stored).keys().copied().collect())
    }
}

/// Events shaped like real webhook payloads: nested objects, arrays, nulls, unicode,
/// empty objects and a field whose type changes from one event to the next.
pub fn sample_events(count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let drift = match i % 4 {
                0 => json!("a string"),
                1 => json!(42),
                2 => json!({"nested": [1, 2, {"deep": null}]}),
                _ => json!(null),
            };
            Event::new(json!({
                "seq": i,
                "action": if i % 2 == 0 { "opened" } else { "closed" },
                "title": format!("événement №{i} \"quoted\" 🚀"),
                "draft": i % 3 == 0,
                "score": i as f64 / 3.0,
                "labels": ["bug", "help wanted"],
                "user": {"login": "octocat", "id": 1, "site_admin": false, "email": null},
                "empty": {},
                "drift": drift,
            }))
        })
        .collect()
}

async fn stored_counts(read: &dyn ReadBack, ids: &[EventId]) -> HashMap<EventId, usize> {
    let wanted: HashSet<EventId> = ids.iter().copied().collect();
    let mut counts = HashMap::new();
    let stored = read
        .stored_ids()
        .await
        .unwrap_or_else(|e| panic!("conformance: reading the target back failed: {e}"));
    for id in stored.into_iter().filter(|id| wanted.contains(id)) {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

async fn assert_each_once(read: &dyn ReadBack, ids: &[EventId], rule: &str) {
    let counts = stored_counts(read, ids).await;
    let missing = ids.iter().filter(|id| !counts.contains_key(id)).count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    assert!(
        missing == 0 && duplicated == 0,
        "conformance ({rule}): of {} events, {missing} missing and {duplicated} stored more \
         than once",
        ids.len()
    );
}

/// A delivered batch leaves every one of its events in the target exactly once.
pub async fn delivers_every_event_once(dest: &dyn Destination, read: &dyn ReadBack) {
    let events = sample_events(25);
    let batch = Batch::new(dest.partition_key(&events[0]), events);
    let ids: Vec<EventId> = batch.ids().collect();
    if let Err(e) = dest.deliver(&batch).await {
        panic!(
            "conformance (delivers every event once): delivery failed: {}",
            e.chain()
        );
    }
    assert_each_once(read, &ids, "delivers every event once").await;
}

/// Delivering the same batch again, as a retry or a replay does, stores nothing twice.
pub async fn redelivery_is_idempotent(dest: &dyn Destination, read: &dyn ReadBack) {
    let events = sample_events(10);
    let batch = Batch::new(dest.partition_key(&events[0]), events);
    let ids: Vec<EventId> = batch.ids().collect();
    for attempt in 1..=2 {
        if let Err(e) = dest.deliver(&batch).await {
            panic!(
                "conformance (redelivery): attempt {attempt} failed: {}",
                e.chain()
            );
        }
    }
    assert_each_once(read, &ids, "redelivery is idempotent").await;
}

/// A batch of one event is delivered like any other.
pub async fn delivers_a_single_event(dest: &dyn Destination, read: &dyn ReadBack) {
    let event = Event::new(json!({"only": true, "nothing": null}));
    let batch = Batch::new(dest.partition_key(&event), vec![event]);
    let ids: Vec<EventId> = batch.ids().collect();
    if let Err(e) = dest.deliver(&batch).await {
        panic!("conformance (single event): delivery failed: {}", e.chain());
    }
    assert_each_once(read, &ids, "single event").await;
}

/// The health check of a working destination passes.
pub async fn health_check_passes(dest: &dyn Destination) {
    if let Err(e) = dest.health_check().await {
        panic!("conformance (health check): {}", e.chain());
    }
}

/// The default batch limits are valid and the name is not empty.
pub fn describes_itself(dest: &dyn Destination) {
    assert!(
        !dest.name().is_empty(),
        "conformance: the destination's name is empty"
    );
    if let Err(e) = dest.default_batch().validate() {
        panic!("conformance: default batch limits are invalid: {e}");
    }
}

/// Runs every check above.
pub async fn run_all(dest: &dyn Destination, read: &dyn ReadBack) {
    describes_itself(dest);
    health_check_passes(dest).await;
    delivers_a_single_event(dest, read).await;
    delivers_every_event_once(dest, read).await;
    redelivery_is_idempotent(dest, read).await;
}

/// The address of a test peer (a server the test scripts started), read from `var`.
///
/// When the variable is unset, a plain `cargo test` skips the test and says so on stderr,
/// while a run with `DESTINATIONS_REQUIRE_PEERS` set (the project's test script and CI)
/// fails it: there a missing service is a broken set-up, never a silent skip.
///
/// # Panics
///
/// When `var` is unset and `DESTINATIONS_REQUIRE_PEERS` is set.
pub fn peer(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("DESTINATIONS_REQUIRE_PEERS").is_some() => panic!(
            "{test}: {var} is not set, but DESTINATIONS_REQUIRE_PEERS is: the test peer was \
             not started (run scripts/test.sh)"
        ),
        _ => {
            eprintln!("SKIPPED {test}: {var} is not set (scripts/test.sh starts the peer)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_destination_conforms() {
        let dest = MemoryDestination::new("memory");
        run_all(&dest, &dest).await;
    }

    /// A destination that stores every delivery again must be caught by the suite.
    #[derive(Debug)]
    struct Duplicating(Mutex<Vec<EventId>>);

    #[async_trait]
    impl Destination for Duplicating {
        fn name(&self) -> &str {
            "duplicating"
        }

        async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
            lock(&self.0).extend(batch.ids());
            Ok(())
        }
    }

    #[async_trait]
    impl ReadBack for Duplicating {
        async fn stored_ids(&self) -> Result<Vec<EventId>, String> {
            Ok(lock(&self.0).clone())
        }
    }

    #[tokio::test]
    #[should_panic(expected = "stored more than once")]
    async fn suite_catches_duplicates() {
        let dest = Duplicating(Mutex::new(Vec::new()));
        redelivery_is_idempotent(&dest, &dest).await;
    }

    #[tokio::test]
    async fn scripted_failures_come_first() {
        let dest = MemoryDestination::new("memory");
        dest.fail_next(DeliveryError::retryable("boom"));
        let batch = Batch::new(None, sample_events(2));
        assert!(dest.deliver(&batch).await.unwrap_err().is_retryable());
        dest.deliver(&batch).await.unwrap();
        assert_eq!(dest.events().len(), 2);
        assert_eq!(dest.deliveries().len(), 2);
    }
}
