//! Batches: the unit a destination delivers.

use crate::event::{Event, EventId};

/// A group of events delivered together, all for the same partition.
///
/// The runtime keeps a batch until it is delivered or dead-lettered, so a destination only
/// borrows it; a retry delivers the same batch, with the same events in the same order.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    partition: Option<String>,
    events: Vec<Event>,
    bytes: usize,
}

impl Batch {
    /// A batch of `events`, all of which belong to `partition`.
    pub fn new(partition: Option<String>, events: Vec<Event>) -> Self {
        let bytes = events.iter().map(Event::encoded_len).sum();
        Self::with_bytes(partition, events, bytes)
    }

    /// Like [`Batch::new`] when the encoded size is already known.
    pub fn with_bytes(partition: Option<String>, events: Vec<Event>, bytes: usize) -> Self {
        Self {
            partition,
            events,
            bytes,
        }
    }

    /// The partition key the batcher grouped these events by (an S3 prefix, a SQL table).
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }

    /// The events, in the order they were sent.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Takes the events out of the batch.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The sum of the events' [`Event::encoded_len`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A name derived only from the batch's contents: the first and last event ids.
    ///
    /// A retried or replayed batch gets the same key, so a destination that names objects
    /// or requests after it overwrites instead of duplicating.
    pub fn key(&self) -> String {
        match (self.events.first(), self.events.last()) {
            (Some(first), Some(last)) => format!("{}-{}", first.id, last.id),
            _ => String::from("empty"),
        }
    }

    /// The ids of the events, in order.
    pub fn ids(&self) -> impl Iterator<Item = EventId> + '_ {
        self.events.iter().map(|e| e.id)
    }
}
