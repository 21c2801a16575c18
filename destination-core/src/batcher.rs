//! Batching: grouping events by partition and flushing by count, bytes or age.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::duration;
use crate::event::Event;

/// The limits a batcher flushes by, resolved from defaults and configuration.
///
/// A batch is flushed as soon as any of these holds: it has `max_events` events, the next
/// event would take it over `max_bytes` (as measured by [`Event::encoded_len`]), or its
/// first event has waited `max_age`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Events a batch holds at most.
    pub max_events: usize,
    /// Encoded bytes a batch holds at most; an event larger than this is rejected.
    pub max_bytes: usize,
    /// How long the first event of a batch waits at most.
    pub max_age: Duration,
    /// Partitions open at once at most; opening one more flushes the oldest.
    pub max_partitions: usize,
}

impl BatchConfig {
    /// One event a batch, sent at once: for destinations that deliver events one by one.
    pub fn unbatched() -> Self {
        Self {
            max_events: 1,
            max_bytes: 16 * 1024 * 1024,
            max_age: Duration::ZERO,
            max_partitions: 1024,
        }
    }

    /// Large batches for destinations that bill per request (object stores, warehouses).
    pub fn bulk() -> Self {
        Self {
            max_events: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(60),
            max_partitions: 64,
        }
    }

    /// Applies the settings a user wrote over these defaults.
    ///
    /// # Errors
    ///
    /// A message naming the setting that is out of range.
    pub fn with_settings(mut self, settings: &BatchSettings) -> Result<Self, String> {
        if let Some(v) = settings.max_events {
            self.max_events = v;
        }
        if let Some(v) = settings.max_bytes {
            self.max_bytes = v;
        }
        if let Some(v) = settings.max_age {
            self.max_age = v;
        }
        if let Some(v) = settings.max_partitions {
            self.max_partitions = v;
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks that every limit lets at least one event through.
    ///
    /// # Errors
    ///
    /// A message naming the setting that is zero.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("batch.max_events", self.max_events),
            ("batch.max_bytes", self.max_bytes),
            ("batch.max_partitions", self.max_partitions),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 500,
            max_bytes: 4 * 1024 * 1024,
            max_age: Duration::from_secs(1),
            max_partitions: 64,
        }
    }
}

/// Batch limits as a user writes them; unset ones keep the destination's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// See [`BatchConfig::max_events`].
    pub max_events: Option<usize>,
    /// See [`BatchConfig::max_bytes`].
    pub max_bytes: Option<usize>,
    /// See [`BatchConfig::max_age`]; written as `"250ms"`, `"60s"` or seconds.
    #[serde(default, with = "opt_duration")]
    pub max_age: Option<Duration>,
    /// See [`BatchConfig::max_partitions`].
    pub max_partitions: Option<usize>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => super::duration::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(deserializer).map(Some)
    }
}

/// An event that no batch can ever hold.
#[derive(Debug, thiserror::Error)]
#[error("event of {size} bytes exceeds the batch limit of {max_bytes} bytes (batch.max_bytes)")]
pub struct EventTooLarge {
    /// The rejected event, handed back so it can be dead-lettered.
    pub event: Box<Event>,
    /// The event's encoded size.
    pub size: usize,
    /// The limit it exceeds.
    pub max_bytes: usize,
}

/// Groups events into batches.
///
/// The caller drives time: it passes `now` to every call and wakes up at
/// [`next_deadline`](Batcher::next_deadline) to collect batches whose age limit passed, so
/// batches flush on age even when no new event arrives.
pub trait Batcher: Send + fmt::Debug {
    /// Adds an event of `size` bytes to its partition's batch and returns the batches that
    /// became ready.
    ///
    /// `size` is the event's encoded size as the caller measured it: a runtime that already
    /// holds the event's serialized form (its queue does) passes that length, so the event
    /// is not serialized again just to be counted.
    ///
    /// # Errors
    ///
    /// [`EventTooLarge`] when the event alone exceeds the byte limit; the batcher is
    /// unchanged.
    fn push_sized(
        &mut self,
        partition: Option<String>,
        event: Event,
        size: usize,
        now: Instant,
    ) -> Result<Vec<Batch>, EventTooLarge>;

    /// Like [`push_sized`](Self::push_sized), measuring the event with
    /// [`Event::encoded_len`].
    ///
    /// # Errors
    ///
    /// [`EventTooLarge`] when the event alone exceeds the byte limit.
    fn push(
        &mut self,
        partition: Option<String>,
        event: Event,
        now: Instant,
    ) -> Result<Vec<Batch>, EventTooLarge> {
        let size = event.encoded_len();
        self.push_sized(partition, event, size, now)
    }

    /// Returns the batches whose age limit has passed at `now`.
    fn flush_due(&mut self, now: Instant) -> Vec<Batch>;

    /// When the oldest open batch reaches its age limit, if any batch is open.
    fn next_deadline(&self) -> Option<Instant>;

    /// Returns every open batch, for shutdown.
    fn flush_all(&mut self) -> Vec<Batch>;

    /// Events held in open batches.
    fn pending(&self) -> usize;
}

#[derive(Debug)]
struct OpenBatch {
    events: Vec<Event>,
    bytes: usize,
    opened: Instant,
}

impl OpenBatch {
    fn into_batch(self, partition: Option<String>) -> Batch {
        Batch::with_bytes(partition, self.events, self.bytes)
    }
}

/// The limit checks, kept apart from the buffers they guard.
#[derive(Debug, Clone)]
struct Limiter {
    config: BatchConfig,
}

impl Limiter {
    fn fits(&self, open: &OpenBatch, size: usize) -> bool {
        open.events.len() < self.config.max_events && open.bytes + size <= self.config.max_bytes
    }

    fn is_full(&self, open: &OpenBatch) -> bool {
        open.events.len() >= self.config.max_events || open.bytes >= self.config.max_bytes
    }

    fn deadline(&self, open: &OpenBatch) -> Instant {
        open.opened + self.config.max_age
    }
}

/// The batcher the runtime uses unless a destination brings its own.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use destination_core::{BatchConfig, Batcher, DefaultBatcher, Event};
/// use serde_json::json;
///
/// let config = BatchConfig { max_events: 2, ..BatchConfig::default() };
/// let mut batcher = DefaultBatcher::new(config);
/// let now = Instant::now();
/// assert!(batcher.push(None, Event::new(json!(1)), now)?.is_empty());
/// let ready = batcher.push(None, Event::new(json!(2)), now)?;
/// assert_eq!(ready[0].len(), 2);
///
/// batcher.push(Some("a".into()), Event::new(json!(3)), now)?;
/// let due = batcher.flush_due(now + Duration::from_secs(1));
/// assert_eq!(due[0].partition(), Some("a"));
/// # Ok::<(), destination_core::EventTooLarge>(())
/// ```
#[derive(Debug)]
pub struct DefaultBatcher {
    limiter: Limiter,
    open: HashMap<Option<String>, OpenBatch>,
    pending: usize,
}

impl DefaultBatcher {
    /// A batcher with these limits.
    pub fn new(config: BatchConfig) -> Self {
        Self {
            limiter: Limiter { config },
            open: HashMap::new(),
            pending: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &BatchConfig {
        &self.limiter.config
    }

    fn take(&mut self, partition: &Option<String>) -> Option<Batch> {
        let open = self.open.remove(partition)?;
        self.pending -= open.events.len();
        Some(open.into_batch(partition.clone()))
    }

    fn oldest_partition(&self) -> Option<Option<String>> {
        self.open
            .iter()
            .min_by_key(|(_, open)| open.opened)
            .map(|(key, _)| key.clone())
    }
}

impl Batcher for DefaultBatcher {
    fn push_sized(
        &mut self,
        partition: Option<String>,
        event: Event,
        size: usize,
        now: Instant,
    ) -> Result<Vec<Batch>, EventTooLarge> {
        let max_bytes = self.limiter.config.max_bytes;
        if size > max_bytes {
            return Err(EventTooLarge {
                event: Box::new(event),
                size,
                max_bytes,
            });
        }

        let mut ready = Vec::new();
        let fits = self
            .open
            .get(&partition)
            .map(|open| self.limiter.fits(open, size));
        match fits {
            Some(true) => {}
            Some(false) => ready.extend(self.take(&partition)),
            None => {
                if self.open.len() >= self.limiter.config.max_partitions
                    && let Some(oldest) = self.oldest_partition()
                {
                    ready.extend(self.take(&oldest));
                }
            }
        }

        let open = self
            .open
            .entry(partition.clone())
            .or_insert_with(|| OpenBatch {
                events: Vec::new(),
                bytes: 0,
                opened: now,
            });
        open.events.push(event);
        open.bytes += size;
        self.pending += 1;
        if self.limiter.is_full(open) || self.limiter.config.max_age.is_zero() {
            ready.extend(self.take(&partition));
        }
        Ok(ready)
    }

    fn flush_due(&mut self, now: Instant) -> Vec<Batch> {
        let mut due: Vec<(Instant, Option<String>)> = self
            .open
            .iter()
            .filter(|(_, open)| self.limiter.deadline(open) <= now)
            .map(|(key, open)| (open.opened, key.clone()))
            .collect();
        due.sort_by_key(|(opened, _)| *opened);
        due.into_iter()
            .filter_map(|(_, key)| self.take(&key))
            .collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .map(|open| self.limiter.deadline(open))
            .min()
    }

    fn flush_all(&mut self) -> Vec<Batch> {
        let mut keys: Vec<(Instant, Option<String>)> = self
            .open
            .iter()
            .map(|(key, open)| (open.opened, key.clone()))
            .collect();
        keys.sort_by_key(|(opened, _)| *opened);
        keys.into_iter()
            .filter_map(|(_, key)| self.take(&key))
            .collect()
    }

    fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn config(max_events: usize, max_bytes: usize, age_ms: u64) -> BatchConfig {
        BatchConfig {
            max_events,
            max_bytes,
            max_age: Duration::from_millis(age_ms),
            max_partitions: 4,
        }
    }

    #[test]
    fn oversized_event_is_an_error_and_changes_nothing() {
        let mut b = DefaultBatcher::new(config(10, 8, 1000));
        let event = Event::new(json!("a string longer than eight bytes"));
        let id = event.id;
        let err = b.push(None, event, Instant::now()).unwrap_err();
        assert_eq!(err.event.id, id);
        assert_eq!(b.pending(), 0);
        assert!(err.to_string().contains("batch.max_bytes"));
    }

    #[test]
    fn opening_a_partition_past_the_cap_flushes_the_oldest() {
        let mut b = DefaultBatcher::new(config(100, 1 << 20, 60_000));
        let t0 = Instant::now();
        for (i, p) in ["a", "b", "c", "d"].iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64);
            assert!(
                b.push(Some(p.to_string()), Event::new(json!(i)), now)
                    .unwrap()
                    .is_empty()
            );
        }
        let out = b.push(Some("e".into()), Event::new(json!(9)), t0).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].partition(), Some("a"));
        assert_eq!(b.pending(), 4);
    }

    #[test]
    fn zero_age_flushes_every_push() {
        let mut b = DefaultBatcher::new(BatchConfig::unbatched());
        let out = b.push(None, Event::new(json!(1)), Instant::now()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn settings_override_defaults_and_are_validated() {
        let s: BatchSettings =
            serde_json::from_str(r#"{"max_events": 7, "max_age": "5s"}"#).unwrap();
        let c = BatchConfig::bulk().with_settings(&s).unwrap();
        assert_eq!(c.max_events, 7);
        assert_eq!(c.max_age, Duration::from_secs(5));
        assert_eq!(c.max_bytes, BatchConfig::bulk().max_bytes);
        let zero = BatchSettings {
            max_events: Some(0),
            ..BatchSettings::default()
        };
        assert!(
            BatchConfig::default()
                .with_settings(&zero)
                .unwrap_err()
                .contains("max_events")
        );
    }

    // Events of varied sizes pushed at increasing times; each step is (size, gap in ms).
    fn steps() -> impl Strategy<Value = Vec<(usize, u64)>> {
        prop::collection::vec((0usize..60, 0u64..40), 1..200)
    }

    proptest! {
        #[test]
        fn never_exceeds_limits_and_emits_every_event_once_in_order(
            steps in steps(),
            max_events in 1usize..20,
            max_bytes in 64usize..400,
            age in 1u64..100,
        ) {
            let mut b = DefaultBatcher::new(config(max_events, max_bytes, age));
            let t0 = Instant::now();
            let mut now = t0;
            let mut sent = Vec::new();
            let mut out = Vec::new();
            for (size, gap) in steps {
                now += Duration::from_millis(gap);
                out.extend(b.flush_due(now));
                let event = Event::new(json!("x".repeat(size)));
                sent.push(event.id);
                out.extend(b.push(None, event, now).unwrap());
            }
            out.extend(b.flush_all());
            for batch in &out {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= max_events);
                prop_assert!(batch.bytes() <= max_bytes);
            }
            let got: Vec<_> = out.iter().flat_map(|b| b.ids()).collect();
            prop_assert_eq!(got, sent);
            prop_assert_eq!(b.pending(), 0);
        }

        #[test]
        fn flushes_by_age_without_new_events(count in 1usize..10, age in 1u64..10_000) {
            let mut b = DefaultBatcher::new(config(1000, 1 << 20, age));
            let t0 = Instant::now();
            for i in 0..count {
                b.push(None, Event::new(json!(i)), t0).unwrap();
            }
            let deadline = b.next_deadline().unwrap();
            prop_assert_eq!(deadline, t0 + Duration::from_millis(age));
            prop_assert!(b.flush_due(deadline - Duration::from_millis(1)).is_empty());
            let due = b.flush_due(deadline);
            prop_assert_eq!(due.len(), 1);
            prop_assert_eq!(due[0].len(), count);
            prop_assert_eq!(b.next_deadline(), None);
        }

        #[test]
        fn partitions_keep_their_own_order(keys in prop::collection::vec(0u8..3, 1..100)) {
            let mut b = DefaultBatcher::new(config(5, 1 << 20, 1000));
            let now = Instant::now();
            let mut sent: HashMap<Option<String>, Vec<_>> = HashMap::new();
            let mut out = Vec::new();
            for k in keys {
                let key = Some(k.to_string());
                let event = Event::new(json!(k));
                sent.entry(key.clone()).or_default().push(event.id);
                out.extend(b.push(key, event, now).unwrap());
            }
            out.extend(b.flush_all());
            let mut got: HashMap<Option<String>, Vec<_>> = HashMap::new();
            for batch in out {
                got.entry(batch.partition().map(String::from)).or_default().extend(batch.ids());
            }
            prop_assert_eq!(got, sent);
        }
    }
}
