//! Events: what a caller hands to `send`, and what a destination delivers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::json::{TooDeep, write_value};

/// Per-event attributes: routing hints that are not part of the payload.
///
/// Destinations document the keys they read, for example `prefix` (S3), `table` (SQL),
/// `channel` (SSE) or `url` (HTTP, when overrides are allowed).
pub type Attributes = BTreeMap<String, Value>;

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
/// The payload is held as a parsed [`Value`], as its compact JSON text, or both, and each
/// form is made from the other the first time it is asked for, then kept. An event that
/// comes back from the queue as text and goes out as text (an HTTP body, an NDJSON line) is
/// never parsed; one made from a value is serialized once, however often it is measured,
/// stored and sent.
///
/// # Examples
///
/// ```
/// use destination_core::Event;
/// use serde_json::json;
///
/// let event = Event::new(json!({"action": "opened"})).with_attribute("prefix", "github");
/// assert_eq!(event.attribute_str("prefix"), Some("github"));
/// assert_eq!(event.payload()["action"], "opened");
/// assert_eq!(&event.payload_json()[..], br#"{"action":"opened"}"#);
/// ```
pub struct Event {
    /// The idempotency key, stable across retries.
    pub id: EventId,
    /// When the event was handed to `send`, in UTC.
    pub sent_at: DateTime<Utc>,
    /// Routing hints for the destination.
    pub attributes: Attributes,
    /// At least one of the two is set.
    value: OnceLock<Value>,
    json: OnceLock<Bytes>,
}

impl Event {
    /// A new event with a fresh id, sent now.
    pub fn new(payload: Value) -> Self {
        Self::with_id(EventId::new(), Utc::now(), payload)
    }

    /// An event with a given id and time, for events rebuilt from storage.
    pub fn with_id(id: EventId, sent_at: DateTime<Utc>, payload: Value) -> Self {
        Self {
            id,
            sent_at,
            attributes: Attributes::new(),
            value: OnceLock::from(payload),
            json: OnceLock::new(),
        }
    }

    /// An event whose payload is given as JSON text, as [`payload_json`](Self::payload_json)
    /// wrote it; the text is parsed only if a destination asks for the value.
    ///
    /// The text is kept as given: a destination that sends text sends exactly it, while one
    /// that reads the value sees what serde_json makes of it (a repeated key keeps its last
    /// value, an integer beyond 64 bits becomes a float, `-0` becomes `-0.0`). Two events
    /// are equal when their values are.
    ///
    /// The text is checked here to be exactly what [`payload`](Self::payload) can parse:
    /// one JSON value, valid UTF-8, numbers within `f64`, nested at most
    /// [`MAX_PAYLOAD_DEPTH`] levels. Whitespace around it is dropped; error positions
    /// count from the start of `json`.
    ///
    /// # Errors
    ///
    /// When the text fails that check, or holds a line break (the text must fit on one
    /// NDJSON line; [`from_sent_json`](Self::from_sent_json) compacts such text instead).
    pub fn from_json(
        id: EventId,
        sent_at: DateTime<Utc>,
        json: Bytes,
    ) -> Result<Self, serde_json::Error> {
        // Parses as a `Value` would, building nothing; the value itself is made on demand.
        serde_json::from_slice::<Checked>(&json)?;
        let json = trim_whitespace(json);
        if memchr::memchr2(b'\n', b'\r', &json).is_some() {
            return Err(serde::de::Error::custom(
                "payload JSON must be compact (no line breaks)",
            ));
        }
        Ok(Self::from_trusted_json(id, sent_at, json))
    }

    /// An event from JSON text that [`from_json`](Self::from_json) accepted before, such as
    /// text read back from storage that guards it with a checksum: not checked again.
    ///
    /// Text that is not one JSON value is not refused: [`payload`](Self::payload) reads it
    /// as a string holding the text, and destinations that send text send it as it is.
    pub fn from_trusted_json(id: EventId, sent_at: DateTime<Utc>, json: Bytes) -> Self {
        Self {
            id,
            sent_at,
            attributes: Attributes::new(),
            value: OnceLock::new(),
            json: OnceLock::from(json),
        }
    }

    /// A new event (a fresh id, sent now) from JSON text as a client sent it: kept as given
    /// when it fits on one line, else parsed and stored compactly, since stored events are
    /// kept one to a line. Error positions count from the start of `json`.
    ///
    /// # Errors
    ///
    /// When the text is not one JSON value that [`from_json`](Self::from_json) accepts.
    pub fn from_sent_json(json: Bytes) -> Result<Self, serde_json::Error> {
        if memchr::memchr2(b'\n', b'\r', &trim_whitespace(json.clone())).is_some() {
            return serde_json::from_slice(&json).map(Self::new);
        }
        Self::from_json(EventId::new(), Utc::now(), json)
    }

    /// Checks that the payload can be stored as text and read back: a payload built in code
    /// may nest deeper than a JSON parser accepts. The text is written by the check and kept,
    /// so [`payload_json`](Self::payload_json) costs nothing after it.
    ///
    /// # Errors
    ///
    /// When the payload nests more than [`MAX_PAYLOAD_DEPTH`] arrays and objects.
    pub fn check(&self) -> Result<(), serde_json::Error> {
        // A value built in code is checked while its text is written, which every queued
        // event needs anyway; text-only events were checked by `from_json`.
        let too_deep = match (self.value.get(), self.json.get()) {
            (Some(value), None) => match encode(value, MAX_PAYLOAD_DEPTH) {
                Ok(json) => {
                    // Another thread may have written the same text meanwhile.
                    let _ = self.json.set(json);
                    false
                }
                Err(TooDeep) => true,
            },
            // The text was written (or the value parsed) before the check: walk the value.
            (Some(value), Some(_)) => depth_exceeds(value, MAX_PAYLOAD_DEPTH),
            (None, _) => false,
        };
        if too_deep {
            return Err(serde::de::Error::custom(format!(
                "payload nests more than {MAX_PAYLOAD_DEPTH} levels of arrays and objects"
            )));
        }
        Ok(())
    }

    /// Adds or replaces one attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// An attribute's value when it is a string.
    pub fn attribute_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(|v| v.as_str())
    }

    /// The JSON payload.
    ///
    /// An event made with [`from_json`](Self::from_json) parses its text here, once; that
    /// constructor accepts only text that parses, so the fallback below (a string holding
    /// the text) is not reached.
    pub fn payload(&self) -> &Value {
        self.value.get_or_init(|| {
            let json = self.json.get().expect("an event holds a value or its JSON");
            serde_json::from_slice(json)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(json).into_owned()))
        })
    }

    /// The payload, to change it; the JSON text kept for it is dropped.
    pub fn payload_mut(&mut self) -> &mut Value {
        self.payload();
        self.json = OnceLock::new();
        self.value.get_mut().expect("parsed above")
    }

    /// Replaces the payload.
    pub fn set_payload(&mut self, payload: Value) {
        self.value = OnceLock::from(payload);
        self.json = OnceLock::new();
    }

    /// Takes the payload out of the event.
    pub fn into_payload(mut self) -> Value {
        self.payload();
        self.value.take().expect("parsed above")
    }

    /// Drops the parsed payload and keeps only its JSON text (made first if the event has
    /// none), which takes a fraction of the memory of the value; [`payload`](Self::payload)
    /// parses the text again when asked. For holding many events, as a queue does.
    pub fn drop_value(&mut self) {
        self.payload_json();
        self.value = OnceLock::new();
    }

    /// The payload as compact JSON text: what an HTTP body or an NDJSON line carries.
    ///
    /// Serialized on the first call and kept; cloning the returned [`Bytes`] is cheap.
    pub fn payload_json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let value = self
                .value
                .get()
                .expect("an event holds a value or its JSON");
            encode(value, usize::MAX).expect("no depth limit")
        })
    }

    /// The size of the payload encoded as compact JSON, in bytes.
    ///
    /// Batch byte limits are measured with this number: it is what an NDJSON or HTTP body
    /// carries, and an upper bound of what a compressed columnar file stores.
    pub fn encoded_len(&self) -> usize {
        self.payload_json().len()
    }
}

/// The deepest nesting of arrays and objects a payload may have: serde_json refuses to
/// parse deeper text, so a deeper payload could be stored but never read back.
pub const MAX_PAYLOAD_DEPTH: usize = 127;

/// Whether `value` nests more than `max` arrays and objects.
fn depth_exceeds(value: &Value, max: usize) -> bool {
    match value {
        Value::Array(items) => max == 0 || items.iter().any(|v| depth_exceeds(v, max - 1)),
        Value::Object(map) => max == 0 || map.values().any(|v| depth_exceeds(v, max - 1)),
        _ => false,
    }
}

/// `json` without the JSON whitespace around it.
fn trim_whitespace(json: Bytes) -> Bytes {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = json.iter().position(|b| !space(b)).unwrap_or(json.len());
    let end = json
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    json.slice(start..end)
}

/// Parses any JSON value the way a [`Value`] is parsed (same recursion limit, UTF-8 and
/// number checks) without building it.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<IgnoredKey, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// An object key, checked like any string and dropped.
struct IgnoredKey;

impl<'de> Deserialize<'de> for IgnoredKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(CheckedVisitor)
            .map(|_| IgnoredKey)
    }
}

/// The largest scratch buffer a thread keeps between encodings.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Compact JSON of `value`, in an allocation of exactly its size; refused when the value
/// nests more than `max_depth` arrays and objects.
///
/// Writing into a growing vector of its own would reallocate about log2(size) times per
/// event; a per-thread scratch buffer that has already grown is written into instead, and
/// the result copied once.
fn encode(value: &Value, max_depth: usize) -> Result<Bytes, TooDeep> {
    SCRATCH.with(|scratch| {
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            // Already borrowed further up this thread's stack: write into a vector of its own.
            let mut own = Vec::new();
            write_value(value, &mut own, max_depth)?;
            return Ok(Bytes::from(own));
        };
        buf.clear();
        let written = write_value(value, &mut buf, max_depth);
        let out = written.map(|()| Bytes::copy_from_slice(&buf));
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        out
    })
}

impl Clone for Event {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            sent_at: self.sent_at,
            attributes: self.attributes.clone(),
            value: self.value.clone(),
            json: self.json.clone(),
        }
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        // By value: two texts of one payload may differ in key order or spacing.
        self.id == other.id
            && self.sent_at == other.sent_at
            && self.attributes == other.attributes
            && self.payload() == other.payload()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("sent_at", &self.sent_at)
            .field("payload", self.payload())
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// The serialized form: `{"id", "sent_at", "payload", "attributes"}`, attributes left out
/// when there are none.
#[derive(Serialize)]
struct EventRef<'a> {
    id: EventId,
    sent_at: DateTime<Utc>,
    payload: &'a Value,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: &'a Attributes,
}

#[derive(Deserialize)]
struct EventOwned {
    id: EventId,
    sent_at: DateTime<Utc>,
    payload: Value,
    #[serde(default)]
    attributes: Attributes,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EventRef {
            id: self.id,
            sent_at: self.sent_at,
            payload: self.payload(),
            attributes: &self.attributes,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let e = EventOwned::deserialize(deserializer)?;
        let mut event = Self::with_id(e.id, e.sent_at, e.payload);
        event.attributes = e.attributes;
        Ok(event)
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
            serde_json::to_vec(event.payload()).unwrap().len()
        );
    }

    #[test]
    fn json_and_value_are_made_from_each_other() {
        let value = json!({"a": [1, null, {"b": "line\nbreak"}], "z": 1.5});
        let made = Event::new(value.clone());
        let text = made.payload_json().clone();
        let back = Event::from_json(made.id, made.sent_at, text.clone()).unwrap();
        assert_eq!(back.payload_json(), &text, "the text is kept as given");
        assert_eq!(back.payload(), &value);
        assert_eq!(back, made);
    }

    #[test]
    fn changing_the_payload_drops_the_old_text() {
        let mut event = Event::from_json(EventId::new(), Utc::now(), Bytes::from("[1]")).unwrap();
        event.payload_mut().as_array_mut().unwrap().push(json!(2));
        assert_eq!(&event.payload_json()[..], b"[1,2]");
        event.set_payload(json!("x"));
        assert_eq!(&event.payload_json()[..], b"\"x\"");
        assert_eq!(event.into_payload(), json!("x"));
    }

    #[test]
    fn from_json_refuses_what_is_not_one_compact_value() {
        for bad in ["", "{", "[1] [2]", "{\"a\":\n1}", "nul"] {
            let got = Event::from_json(EventId::new(), Utc::now(), Bytes::from(bad));
            assert!(got.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn dropping_the_value_keeps_the_text_and_the_payload() {
        let mut event = Event::new(json!({"b": [1, "x"], "a": null}));
        event.drop_value();
        assert!(event.value.get().is_none());
        assert_eq!(event.payload_json().as_ref(), br#"{"a":null,"b":[1,"x"]}"#);
        assert_eq!(event.payload(), &json!({"a": null, "b": [1, "x"]}));
    }

    #[test]
    fn trusted_text_that_does_not_parse_reads_as_a_string() {
        let event = Event::from_trusted_json(EventId::new(), Utc::now(), Bytes::from("{\"a\""));
        assert_eq!(event.payload_json().as_ref(), b"{\"a\"");
        assert_eq!(event.payload(), &json!("{\"a\""));
        let good = Event::from_trusted_json(EventId::new(), Utc::now(), Bytes::from("[1]"));
        assert_eq!(good.payload(), &json!([1]));
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn from_json_accepts_exactly_what_parses_into_a_value() {
        let mut texts: Vec<Vec<u8>> = [
            "1e400",
            "\"\\ud800\"",
            "\"ok\"",
            "-0.0",
            "18446744073709551615",
            "{\"a\":[]}",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
        texts.push(b"\"\xff\xfe\"".to_vec());
        for depth in MAX_PAYLOAD_DEPTH - 2..MAX_PAYLOAD_DEPTH + 3 {
            texts.push(serde_json::to_vec(&nested(depth)).unwrap());
        }
        for text in texts {
            let parses = serde_json::from_slice::<Value>(&text).is_ok();
            let accepted = Event::from_json(EventId::new(), Utc::now(), Bytes::from(text.clone()));
            assert_eq!(
                accepted.is_ok(),
                parses,
                "{:?}",
                String::from_utf8_lossy(&text)
            );
            if let Ok(event) = accepted {
                assert_eq!(
                    event.payload(),
                    &serde_json::from_slice::<Value>(&text).unwrap()
                );
            }
        }
    }

    #[test]
    fn check_refuses_values_too_deep_to_read_back() {
        let fits = Event::new(nested(MAX_PAYLOAD_DEPTH));
        assert!(fits.check().is_ok());
        let back = Event::from_json(fits.id, fits.sent_at, fits.payload_json().clone()).unwrap();
        assert_eq!(back.payload(), fits.payload());
        let deep = Event::new(nested(MAX_PAYLOAD_DEPTH + 1));
        let err = deep.check().unwrap_err().to_string();
        assert!(err.contains("nests more than 127 levels"), "{err}");
        // Asking for the text first does not let a deep value through.
        let deep = Event::new(nested(MAX_PAYLOAD_DEPTH + 1));
        deep.payload_json();
        assert!(deep.check().is_err());
        let fits = Event::new(nested(MAX_PAYLOAD_DEPTH));
        fits.payload_json();
        assert!(fits.check().is_ok());
        assert!(Event::new(json!({"a": [{"b": null}]})).check().is_ok());
    }

    #[test]
    fn surrounding_whitespace_is_dropped_and_equality_is_by_value() {
        let id = EventId::new();
        let at = Utc::now();
        let spaced = Event::from_json(id, at, Bytes::from("  {\"b\": 1, \"a\": 2}\t")).unwrap();
        assert_eq!(&spaced.payload_json()[..], b"{\"b\": 1, \"a\": 2}");
        let made = Event::with_id(id, at, json!({"a": 2, "b": 1}));
        assert_eq!(spaced, made);
        made.payload_json();
        assert_eq!(spaced, made, "asking for the text changes nothing");
        assert!(Event::from_json(id, at, Bytes::from("[1,\r2]")).is_err());
        let sent = Event::from_sent_json(Bytes::from("\t[1,\r2]\n")).unwrap();
        assert_eq!(&sent.payload_json()[..], b"[1,2]");
        let sent = Event::from_sent_json(Bytes::from(" {\"a\": 1} ")).unwrap();
        assert_eq!(&sent.payload_json()[..], br#"{"a": 1}"#);
        let err = Event::from_sent_json(Bytes::from("  {\"a\": tru}")).unwrap_err();
        assert_eq!(
            (err.line(), err.column()),
            (1, 12),
            "counted from the text's start"
        );
    }
}
