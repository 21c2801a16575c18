//! The [`Sender`]: hand events to the runtime; they are delivered later.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use destination_core::{Event, EventId};
use serde_json::Value;

use crate::queue::QueueError;
use crate::receipts::Receipt;
use crate::worker::Shared;

#[cfg(any(
    feature = "http",
    feature = "email",
    feature = "s3",
    feature = "sql",
    feature = "snowflake",
    feature = "sse"
))]
pub mod typed;

/// Why an event was not queued. Nothing of a failed call was queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No destination of that name is configured.
    #[error("unknown destination `{0}`")]
    UnknownDestination(String),
    /// The event is larger than the runtime accepts.
    #[error("event of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The event's size as compact JSON.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The event cannot be stored as it is (see [`Event::check`]).
    #[error("event refused: {0}")]
    Invalid(String),
    /// The runtime is shutting down and takes no new events.
    #[error("runtime is shutting down and takes no new events")]
    Closed,
    /// The durable queue refused the events (full, or an I/O error).
    #[error("events could not be queued")]
    Queue(#[from] QueueError),
}

/// What a sender needs of the runtime.
#[derive(Debug)]
pub(crate) struct Intake {
    pub(crate) shared: Arc<Shared>,
    pub(crate) names: HashSet<String>,
    pub(crate) accepting: AtomicBool,
    pub(crate) max_event_bytes: usize,
}

impl Intake {
    pub(crate) fn check(&self, destination: &str, event: &Event) -> Result<(), SendError> {
        if !self.names.contains(destination) {
            return Err(SendError::UnknownDestination(destination.to_string()));
        }
        // Checking first writes the payload's text on the way, which the size is read from.
        event
            .check()
            .map_err(|e| SendError::Invalid(e.to_string()))?;
        let size = event.encoded_len();
        if size > self.max_event_bytes {
            return Err(SendError::TooLarge {
                size,
                max: self.max_event_bytes,
            });
        }
        Ok(())
    }

    async fn append(&self, entries: Vec<(String, Event)>) -> Result<Vec<EventId>, SendError> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let ids: Vec<EventId> = entries.iter().map(|(_, e)| e.id).collect();
        let mut per_destination: Vec<(&str, usize)> = Vec::new();
        for (name, _) in &entries {
            match per_destination.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => per_destination.push((name, 1)),
            }
        }
        let counts: Vec<(String, usize)> = per_destination
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        self.shared.queue.append(entries).await?;
        for (name, count) in counts {
            if let Some(c) = self.shared.metrics.get(&name) {
                crate::metrics::Counters::add(&c.queued, count);
            }
        }
        Ok(ids)
    }
}

/// A cheap, cloneable handle that queues events for delivery.
///
/// Every `send` returns once the event is durably queued (with the embedded queue: written
/// and synced to disk), without any network I/O to the destination. Delivery happens later,
/// in the background.
#[derive(Debug, Clone)]
pub struct Sender {
    pub(crate) intake: Arc<Intake>,
}

impl Sender {
    /// Queues `payload` for `destination` and returns the new event's id.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    pub async fn send(&self, destination: &str, payload: Value) -> Result<EventId, SendError> {
        self.send_event(destination, Event::new(payload)).await
    }

    /// Queues a prepared event (with attributes, or an id of its own).
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    pub async fn send_event(&self, destination: &str, event: Event) -> Result<EventId, SendError> {
        self.intake.check(destination, &event)?;
        let ids = self
            .intake
            .append(vec![(destination.to_string(), event)])
            .await?;
        Ok(ids[0])
    }

    /// Queues `payload` and also returns a [`Receipt`] that resolves when the event is
    /// delivered or dead-lettered.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    pub async fn send_with_receipt(
        &self,
        destination: &str,
        payload: Value,
    ) -> Result<(EventId, Receipt), SendError> {
        let mut receipts = self
            .send_all_with_receipts(vec![(destination.to_string(), Event::new(payload))])
            .await?;
        let (id, receipt) = receipts.pop().expect("one receipt per event");
        Ok((id, receipt))
    }

    /// Queues several events at once, atomically: all of them or none.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    pub async fn send_all(&self, entries: Vec<(String, Event)>) -> Result<Vec<EventId>, SendError> {
        for (name, event) in &entries {
            self.intake.check(name, event)?;
        }
        self.intake.append(entries).await
    }

    /// Like [`send_all`](Self::send_all), with a receipt for each event.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    pub async fn send_all_with_receipts(
        &self,
        entries: Vec<(String, Event)>,
    ) -> Result<Vec<(EventId, Receipt)>, SendError> {
        for (name, event) in &entries {
            self.intake.check(name, event)?;
        }
        self.append_with_receipts(entries).await
    }

    /// Queues, atomically and with a receipt each, the entries that can be sent, and hands
    /// back the others by their index in `entries` with the reason, without queuing them.
    ///
    /// Each event is checked once: a caller that wants per-event errors (a line number, an
    /// item of a request) need not call [`check`](Self::check) first.
    ///
    /// # Errors
    ///
    /// [`SendError`] when the queue refuses the valid entries; then none was queued.
    pub async fn send_valid_with_receipts(
        &self,
        entries: Vec<(String, Event)>,
    ) -> Result<(Vec<(EventId, Receipt)>, Vec<(usize, SendError)>), SendError> {
        let mut valid = Vec::with_capacity(entries.len());
        let mut invalid = Vec::new();
        for (index, (name, event)) in entries.into_iter().enumerate() {
            match self.intake.check(&name, &event) {
                Ok(()) => valid.push((name, event)),
                Err(err) => invalid.push((index, err)),
            }
        }
        if valid.is_empty() {
            return Ok((Vec::new(), invalid));
        }
        Ok((self.append_with_receipts(valid).await?, invalid))
    }

    /// Registers a receipt for each (already checked) entry and queues them.
    async fn append_with_receipts(
        &self,
        entries: Vec<(String, Event)>,
    ) -> Result<Vec<(EventId, Receipt)>, SendError> {
        let receipts = &self.intake.shared.receipts;
        // Registered first, so that a delivery racing the append still finds its receipt.
        let registered: Vec<(EventId, Receipt)> = entries
            .iter()
            .map(|(_, e)| (e.id, receipts.register(e.id)))
            .collect();
        if let Err(err) = self.intake.append(entries).await {
            receipts.forget(registered.iter().map(|(id, _)| *id));
            return Err(err);
        }
        Ok(registered)
    }

    /// Checks that `event` could be sent to `destination` (it exists, the event is not too
    /// large or too deeply nested), without queuing it.
    ///
    /// # Errors
    ///
    /// [`SendError::UnknownDestination`], [`SendError::TooLarge`] or
    /// [`SendError::Invalid`].
    pub fn check(&self, destination: &str, event: &Event) -> Result<(), SendError> {
        self.intake.check(destination, event)
    }

    /// Whether a destination of that name is configured.
    pub fn has_destination(&self, destination: &str) -> bool {
        self.intake.names.contains(destination)
    }

    /// Prometheus text of every counter and queue gauge.
    pub fn render_metrics(&self) -> String {
        let shared = &self.intake.shared;
        shared.metrics.render(shared.queue.as_ref())
    }

    /// Starts a unit of work: events sent through the [`Scope`] are queued together when it
    /// is committed, and not at all when it is dropped (for example on an early `?` return).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use destination_core::testing::MemoryDestination;
    /// # use destinations::Runtime;
    /// use serde_json::json;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let memory = Arc::new(MemoryDestination::new("audit"));
    /// # let runtime = Runtime::builder().memory_queue().destination("audit", memory).build().await?;
    /// # let sender = runtime.sender();
    /// let mut scope = sender.scope();
    /// scope.send("audit", json!({"step": 1}))?;
    /// scope.send("audit", json!({"step": 2}))?;
    /// let ids = scope.commit().await?; // both queued, atomically
    /// assert_eq!(ids.len(), 2);
    /// # runtime.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn scope(&self) -> Scope {
        Scope {
            sender: self.clone(),
            entries: Vec::new(),
        }
    }
}

/// A unit of work: sends are held until [`commit`](Self::commit), and dropped with the
/// scope if it is never committed.
#[derive(Debug)]
#[must_use = "a scope queues nothing until it is committed"]
pub struct Scope {
    sender: Sender,
    entries: Vec<(String, Event)>,
}

impl Scope {
    /// Holds `payload` for `destination` until the scope is committed.
    ///
    /// # Errors
    ///
    /// [`SendError::UnknownDestination`], [`SendError::TooLarge`] or
    /// [`SendError::Invalid`], at once.
    pub fn send(&mut self, destination: &str, payload: Value) -> Result<EventId, SendError> {
        self.send_event(destination, Event::new(payload))
    }

    /// Holds a prepared event until the scope is committed.
    ///
    /// # Errors
    ///
    /// [`SendError::UnknownDestination`], [`SendError::TooLarge`] or
    /// [`SendError::Invalid`], at once.
    pub fn send_event(&mut self, destination: &str, event: Event) -> Result<EventId, SendError> {
        self.sender.intake.check(destination, &event)?;
        let id = event.id;
        self.entries.push((destination.to_string(), event));
        Ok(id)
    }

    /// Events held so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues every held event atomically.
    ///
    /// # Errors
    ///
    /// [`SendError`]; then none of the events was queued.
    pub async fn commit(self) -> Result<Vec<EventId>, SendError> {
        if self.entries.is_empty() {
            return Ok(Vec::new());
        }
        self.sender.intake.append(self.entries).await
    }

    /// Drops every held event; the same as dropping the scope.
    pub fn discard(self) {}
}
