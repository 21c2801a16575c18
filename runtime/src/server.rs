//! The HTTP ingest API of `destinations run`, as an axum [`Router`] that other parts can
//! extend with routes of their own.
//!
//! - `POST /v1/events/{destination}`: a JSON object, a JSON array of objects, or NDJSON.
//!   Answers `202 {"ids": [...]}` once every event is durably queued, or a `4xx` with
//!   `{"error": "..."}` naming the problem; nothing of a rejected request is queued.
//! - `GET /healthz`: `200` while the process serves.
//! - `GET /metrics`: Prometheus text.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use destination_core::{Event, Secret};
use serde_json::json;
use serde_json::value::RawValue;

use crate::config::ServerConfig;
use crate::queue::QueueError;
use crate::sender::{SendError, Sender};

#[derive(Debug, Clone)]
struct AppState {
    sender: Sender,
    token: Option<Arc<Secret>>,
    max_event_bytes: usize,
    max_body_bytes: usize,
    max_events: usize,
}

/// The ingest, health and metrics routes.
pub fn router(sender: Sender, config: &ServerConfig) -> Router {
    let state = AppState {
        sender,
        token: config.token.clone().map(Arc::new),
        max_event_bytes: config.max_event_bytes,
        max_body_bytes: config.max_body_bytes,
        max_events: config.max_events_per_request,
    };
    Router::new()
        .route("/v1/events/{destination}", post(ingest))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.sender.render_metrics();
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let Some((scheme, given)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
    else {
        return false;
    };
    // The scheme's name is case-insensitive in HTTP.
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ingest(
    State(state): State<AppState>,
    Path(destination): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&state, &headers) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if !state.sender.has_destination(&destination) {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown destination `{destination}`"),
        );
    }
    // Every header and every coding in a list counts: `identity` alone changes nothing.
    if let Some(coding) = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
            text.split(',')
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|c| !c.is_empty() && c != "identity")
    {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding `{coding}` is not supported: send the body uncompressed"),
        );
    }
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body exceeds {} bytes (server.max_body_bytes)",
                    state.max_body_bytes
                ),
            );
        }
    };
    let events = match parse_body(&bytes, state.max_event_bytes, state.max_events) {
        Ok(events) => events,
        Err((status, message)) => return error(status, message),
    };

    let entries = events
        .into_iter()
        .map(|e| (destination.clone(), e))
        .collect();
    match state.sender.send_all(entries).await {
        Ok(ids) => (StatusCode::ACCEPTED, axum::Json(json!({ "ids": ids }))).into_response(),
        Err(SendError::TooLarge { size, max }) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("event of {size} bytes exceeds the limit of {max} bytes"),
        ),
        Err(err @ SendError::Invalid(_)) => {
            error(StatusCode::BAD_REQUEST, crate::registry::chain(&err))
        }
        Err(SendError::UnknownDestination(name)) => error(
            StatusCode::NOT_FOUND,
            format!("unknown destination `{name}`"),
        ),
        Err(err @ SendError::Queue(QueueError::TooLarge { .. })) => {
            error(StatusCode::PAYLOAD_TOO_LARGE, crate::registry::chain(&err))
        }
        Err(err @ (SendError::Closed | SendError::Queue(QueueError::Full { .. }))) => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::registry::chain(&err),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        Err(err) => {
            tracing::error!(error = %crate::registry::chain(&err), "ingest failed to queue events");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::registry::chain(&err),
            )
        }
    }
}

type Rejection = (StatusCode, String);

/// Splits a body into events: a JSON object, an array of objects, or NDJSON.
///
/// Each event keeps its part of the body as its JSON text, checked but not built into a
/// tree: the queue stores that text and a destination that sends JSON sends it as
/// it came. An object written over several lines is parsed and written compactly instead,
/// since the queue keeps one event a line.
pub(crate) fn parse_body(
    bytes: &[u8],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<Vec<Event>, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    if text.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
        return Err((StatusCode::BAD_REQUEST, "request body is empty".into()));
    }

    let too_many = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request holds more than {max_events} events (server.max_events_per_request)"),
        )
    };
    let invalid = |e: serde_json::Error| (StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"));
    let mut items: Vec<&RawValue> = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
        items.push(item.map_err(invalid)?);
        if items.len() > max_events {
            return Err(too_many());
        }
    }
    if let [only] = items.as_slice()
        && only.get().starts_with('[')
    {
        items = serde_json::from_str(only.get()).map_err(invalid)?;
    }
    if items.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "request holds no event".into()));
    }
    if items.len() > max_events {
        return Err(too_many());
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let raw = item.get();
        if !raw.starts_with('{') {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("event {} is not a JSON object", index + 1),
            ));
        }
        // A copy, not a slice of the body: a slice would keep the whole request in memory
        // for as long as any one of its events is queued or cached.
        let event = Event::from_sent_json(Bytes::copy_from_slice(raw.as_bytes())).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "event {}: invalid JSON: {}",
                    index + 1,
                    in_body(&e, text, raw)
                ),
            )
        })?;
        let size = event.encoded_len();
        if size > max_event_bytes {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event {} is {size} bytes, over the limit of {max_event_bytes} bytes \
                     (server.max_event_bytes)",
                    index + 1
                ),
            ));
        }
        events.push(event);
    }
    Ok(events)
}

/// `error`, found in `event` (a slice of `body`), with its position given in the body.
fn in_body(error: &serde_json::Error, body: &str, event: &str) -> String {
    let message = error.to_string();
    if error.line() == 0 {
        return message;
    }
    let reason = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at]);
    let start = event.as_ptr() as usize - body.as_ptr() as usize;
    let before = &body[..start];
    let line = before.matches('\n').count() + error.line();
    let column = match error.line() {
        1 => start - before.rfind('\n').map_or(0, |nl| nl + 1) + error.column(),
        _ => error.column(),
    };
    format!("{reason} at line {line} column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_text_as_sent_and_multi_line_objects_are_compacted() {
        let body = b"{\"b\": 1, \"a\": [true, null]}\n{\n  \"pretty\": {\"x\": 1.5}\n}\n";
        let events = parse_body(body, 100, 10).unwrap();
        assert_eq!(
            &events[0].payload_json()[..],
            br#"{"b": 1, "a": [true, null]}"#
        );
        assert_eq!(events[0].payload(), &json!({"a": [true, null], "b": 1}));
        assert_eq!(&events[1].payload_json()[..], br#"{"pretty":{"x":1.5}}"#);
        assert_ne!(events[0].id, events[1].id);
    }

    #[test]
    fn payloads_a_value_could_not_hold_are_refused() {
        let (status, msg) = parse_body(br#"{"n": 1e400}"#, 100, 10).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains("event 1: invalid JSON"), "{msg}");
        // Positions are the body's, not the event's.
        let body = b"{\"a\":1}\n{\"b\":2}\n  {\"n\":1e400}";
        let (_, msg) = parse_body(body, 100, 10).unwrap_err();
        assert!(
            msg.ends_with("event 3: invalid JSON: number out of range at line 3 column 12"),
            "{msg}"
        );
        let (_, msg) = parse_body(b"{\"a\":1}\n{\n\"n\": 1e400}", 100, 10).unwrap_err();
        assert!(msg.ends_with("at line 3 column 10"), "{msg}");
        let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
        let (status, _) = parse_body(deep.as_bytes(), 10_000, 10).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn accepts_object_array_and_ndjson() {
        assert_eq!(parse_body(br#"{"a":1}"#, 100, 10).unwrap().len(), 1);
        assert_eq!(
            parse_body(br#"[{"a":1},{"b":2}]"#, 100, 10).unwrap().len(),
            2
        );
        let spaced = parse_body(b" [ {\"a\":1} ,\n {\"b\":2} ] ", 100, 10).unwrap();
        assert_eq!(&spaced[1].payload_json()[..], br#"{"b":2}"#);
        assert_eq!(
            parse_body(b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}\n", 100, 10)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let (status, msg) = parse_body(b"{\"a\":1}\n{\"b\":", 100, 10).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains("line 2"), "{msg}");
        let (_, msg) = parse_body(&[b'{', 0xff, b'}'], 100, 10).unwrap_err();
        assert!(msg.contains("UTF-8"), "{msg}");
        let (_, msg) = parse_body(b"[1, 2]", 100, 10).unwrap_err();
        assert!(msg.contains("event 1 is not a JSON object"), "{msg}");
        let (status, msg) = parse_body(br#"{"a":"0123456789"}"#, 10, 10).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(msg.contains("max_event_bytes"), "{msg}");
        assert!(parse_body(b"  ", 10, 10).is_err());
        let (_, msg) = parse_body("\u{a0}".as_bytes(), 10, 10).unwrap_err();
        assert!(msg.contains("invalid JSON"), "not JSON whitespace: {msg}");
        assert!(parse_body(b"[]", 10, 10).is_err());
        let (status, msg) = parse_body(b"{}\n{}\n{}\n", 10, 2).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(msg.contains("max_events_per_request"), "{msg}");
        let (status, _) = parse_body(b"[{}, {}, {}]", 10, 2).unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
