//! What writing a payload's JSON text costs on `send`: destination-core's writer (the text
//! and the nesting check in one walk, as `Event::check` does it) against a separate walk
//! for the depth followed by `serde_json::to_writer`, which is what `send` did before, on
//! the 420 real GitHub webhook payloads of `testdata/`.
//!
//! ```text
//! cargo bench -p destination-core --bench payload_json
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use destination_core::{Event, MAX_PAYLOAD_DEPTH};
use serde_json::Value;

/// Passes over the 420 payloads per measurement.
const PASSES: usize = 20;
/// Measurements of each writer, alternating; the best counts.
const ROUNDS: usize = 5;

fn payloads() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/github-webhooks.ndjson"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|line| {
            let mut record: Value = serde_json::from_str(line).expect("one JSON object a line");
            record["payload"].take()
        })
        .collect()
}

fn depth_exceeds(value: &Value, max: usize) -> bool {
    match value {
        Value::Array(items) => max == 0 || items.iter().any(|v| depth_exceeds(v, max - 1)),
        Value::Object(map) => max == 0 || map.values().any(|v| depth_exceeds(v, max - 1)),
        _ => false,
    }
}

/// Fresh events holding the payloads as values, made before the clock: a real `send` writes
/// each value once, so nothing is warm in the cache from a previous pass.
fn events(payloads: &[Value]) -> Vec<Event> {
    (0..PASSES)
        .flat_map(|_| payloads.iter().cloned().map(Event::new))
        .collect()
}

/// Checks and writes every event's text (`Event::check`).
fn ours(events: &[Event]) -> (Duration, usize) {
    let started = Instant::now();
    let mut bytes = 0;
    for event in events {
        event.check().expect("shallow enough");
        bytes += event.payload_json().len();
    }
    (started.elapsed(), black_box(bytes))
}

/// A depth walk, then `serde_json::to_writer` into a reused buffer and one copy out.
fn serde_json_writer(events: &[Event]) -> (Duration, usize) {
    let mut buf = Vec::new();
    let started = Instant::now();
    let mut bytes = 0;
    for event in events {
        let value = event.payload();
        assert!(!depth_exceeds(value, MAX_PAYLOAD_DEPTH));
        buf.clear();
        serde_json::to_writer(&mut buf, value).expect("to memory");
        bytes += black_box(Bytes::copy_from_slice(&buf)).len();
    }
    (started.elapsed(), bytes)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let payloads = payloads();
    let count = PASSES * payloads.len();
    let (mut best_ours, mut best_serde) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let (t, a) = ours(&events(&payloads));
        let (u, b) = serde_json_writer(&events(&payloads));
        assert_eq!(a, b, "both write the same number of bytes");
        best_ours = best_ours.min(t);
        best_serde = best_serde.min(u);
    }
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    println!(
        "payload JSON of {count} real events, best of {ROUNDS}: \
         depth walk + serde_json::to_writer {:.2} µs an event, \
         destination-core (Event::check) {:.2} µs an event: {:.2}x",
        per_event(best_serde),
        per_event(best_ours),
        best_serde.as_secs_f64() / best_ours.as_secs_f64()
    );
}
