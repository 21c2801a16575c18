//! Events: what a caller hands to `send`, and what a destination delivers.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Per-event attributes: routing hints that are not part of the payload.
///
/// Destinations document the keys they read, for example `prefix` (S3), `table` (SQL),
/// `channel` (SSE) or `url` (HTTP, when overrides are allowed).
pub type Attributes = BTreeMap<String, serde_json::Value>;

/// A unique, time-ordered event id (a UUIDv7).
///
/// The id is given once, when the event is created, and stays the same through retries,
/// replays and restarts. Destinations use it as the idempotency key: delivering the same
/// event twice must have the effect of delivering it once wherever the target allows it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A new id for the current instant; ids made later in the same process sort later.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID behind the id.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl FromStr for EventId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// One event: an id, the time it was sent, a JSON payload and optional attributes.
///
/// # Examples
///
/// ```
/// use destination_core::Event;
/// use serde_json::json;
///
/// let event = Event::new(json!({"action": "opened"})).with_attribute("prefix", "github");
/// assert_eq!(event.attribute_str("prefix"), Some("github"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The idempotency key, stable across retries.
    pub id: EventId,
    /// When the event was handed to `send`, in UTC.
    pub sent_at: DateTime<Utc>,
    /// The JSON payload.
    pub payload: serde_json::Value,
    /// Routing hints for the destination.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Attributes,
}

impl Event {
    /// A new event with a fresh id, sent now.
    pub fn new(payload: serde_json::Value) -> Self {
        Self {
            id: EventId::new(),
            sent_at: Utc::now(),
            payload,
            attributes: Attributes::new(),
        }
    }

    /// Adds or replaces one attribute.
    pub fn with_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// An attribute's value when it is a string.
    pub fn attribute_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(|v| v.as_str())
    }

    /// The size of the payload encoded as compact JSON, in bytes.
    ///
    /// Batch byte limits are measured with this number: it is what an NDJSON or HTTP body
    /// carries, and an upper bound of what a compressed columnar file stores.
    pub fn encoded_len(&self) -> usize {
        let mut counter = ByteCounter(0);
        // Writing a `Value` to a counter cannot fail: it has no non-string keys.
        let _ = serde_json::to_writer(&mut counter, &self.payload);
        counter.0
    }
}

struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn round_trips_through_json() {
        let event = Event::new(json!({"a": [1, null, {"b": "c"}]})).with_attribute("table", "t");
        let text = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn encoded_len_matches_serialized_payload() {
        let event = Event::new(json!({"name": "ünïcode", "n": [1, 2, 3]}));
        assert_eq!(
            event.encoded_len(),
            serde_json::to_vec(&event.payload).unwrap().len()
        );
    }
}
