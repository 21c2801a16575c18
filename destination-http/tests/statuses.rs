//! Response statuses: which are retried, which rate limit, which reject for good.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use destination_core::{Batch, Destination, ErrorKind, Event, EventId};
use destination_http::{HttpConfig, HttpDestination, StatusPattern};
use serde_json::json;
use support::{Reply, TestServer, deliver_until_done};

fn one_event() -> (Batch, EventId) {
    let event = Event::new(json!({"action": "opened", "n": 1}));
    let id = event.id;
    (Batch::new(None, vec![event]), id)
}

async fn outcome_of(reply: Reply) -> (ErrorKind, String, Option<Duration>) {
    let server = TestServer::start().await;
    server.push([reply]);
    let dest = HttpDestination::new("statuses", HttpConfig::new(server.url("/s"))).unwrap();
    let (batch, _) = one_event();
    let err = dest.deliver(&batch).await.expect_err("a failure");
    assert_eq!(server.received().len(), 1);
    (err.kind().clone(), err.to_string(), err.retry_after())
}

#[tokio::test]
async fn statuses_are_classified() {
    let rate_limited = |d| ErrorKind::RateLimited { retry_after: d };
    let cases = [
        (Reply::status(500), ErrorKind::Retryable),
        (Reply::status(502), ErrorKind::Retryable),
        (Reply::status(408), ErrorKind::Retryable),
        (
            Reply::status(503).header("Retry-After", "7"),
            rate_limited(Some(Duration::from_secs(7))),
        ),
        (
            Reply::status(503).header("Retry-After", "whenever"),
            ErrorKind::Retryable,
        ),
        (Reply::status(429), rate_limited(None)),
        (
            Reply::status(429).header("Retry-After", "0"),
            rate_limited(Some(Duration::ZERO)),
        ),
        (Reply::status(404), ErrorKind::Permanent),
        (Reply::status(400), ErrorKind::Permanent),
        (Reply::status(422), ErrorKind::Permanent),
        (
            Reply::status(404).header("Retry-After", "5"),
            ErrorKind::Permanent,
        ),
        (
            Reply::status(301).header("Location", "http://127.0.0.1:1/"),
            ErrorKind::Permanent,
        ),
        (Reply::status(401), ErrorKind::Config),
    ];
    for (reply, want) in cases {
        let label = format!("{reply:?}");
        let (kind, message, _) = outcome_of(reply).await;
        assert_eq!(kind, want, "{label}: {message}");
    }
}

#[tokio::test]
async fn success_statuses_deliver() {
    for status in [200, 201, 202, 204] {
        let server = TestServer::start().await;
        server.push([Reply::status(status)]);
        let dest = HttpDestination::new("ok", HttpConfig::new(server.url("/"))).unwrap();
        let (batch, id) = one_event();
        dest.deliver(&batch).await.unwrap();
        assert!(server.stored().contains_key(&id.to_string()));
    }
}

#[tokio::test]
async fn retry_after_as_an_http_date() {
    let at = SystemTime::now() + Duration::from_secs(120);
    let reply = Reply::status(429).header("Retry-After", &httpdate::fmt_http_date(at));
    let (kind, _, retry_after) = outcome_of(reply).await;
    assert!(matches!(kind, ErrorKind::RateLimited { .. }));
    let wait = retry_after.expect("a parsed date");
    assert!(
        wait > Duration::from_secs(115) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[tokio::test]
async fn permanent_errors_quote_status_and_a_truncated_body() {
    let body = format!("unknown repository {}", "x".repeat(10_000));
    let (kind, message, _) = outcome_of(Reply::status(404).body(&body)).await;
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(
        message.contains("404") && message.contains("not found"),
        "{message}"
    );
    assert!(message.contains("unknown repository xxx"), "{message}");
    assert!(message.len() < 600, "{} bytes", message.len());
    assert!(
        message.starts_with("endpoint http://127.0.0.1:"),
        "{message}"
    );
    assert!(!message.contains("/s"), "the path is not shown: {message}");
}

#[tokio::test]
async fn retry_statuses_are_configurable() {
    let server = TestServer::start().await;
    server.push([Reply::status(409), Reply::status(500)]);
    let config =
        HttpConfig::new(server.url("/")).with_retry_statuses(vec![StatusPattern::Code(409)]);
    let dest = HttpDestination::new("custom", config).unwrap();
    let (batch, _) = one_event();
    assert_eq!(
        dest.deliver(&batch).await.unwrap_err().kind(),
        &ErrorKind::Retryable
    );
    assert_eq!(
        dest.deliver(&batch).await.unwrap_err().kind(),
        &ErrorKind::Permanent
    );
}

/// Retryable failures, then success: each event ends up stored exactly once, and every
/// copy the server saw carried the same key.
#[tokio::test]
async fn each_event_exactly_once_after_retries() {
    let server = TestServer::start().await;
    server.push([
        Reply::status(500),
        Reply::status(200),
        Reply::status(503).header("Retry-After", "1"),
        Reply::status(200),
        Reply::status(429),
    ]);
    let dest = HttpDestination::new("retries", HttpConfig::new(server.url("/"))).unwrap();
    let events: Vec<Event> = (0..4).map(|i| Event::new(json!({"seq": i}))).collect();
    let batch = Batch::new(None, events);
    let (errors, result) = deliver_until_done(&dest, &batch, 10).await;
    result.unwrap();
    assert!(!errors.is_empty(), "the script forces at least one retry");

    let ids: BTreeSet<String> = batch.ids().map(|id| id.to_string()).collect();
    let stored: BTreeSet<String> = server.stored().into_keys().collect();
    assert_eq!(stored, ids);
    let resent = ids
        .iter()
        .filter(|id| server.times_received(id) > 1)
        .count();
    assert!(resent >= 1);
    for (key, request) in server.stored() {
        let seq = request.json()["seq"].as_u64().unwrap() as usize;
        assert_eq!(
            batch.events()[seq].id.to_string(),
            key,
            "the key matches the payload"
        );
    }
}

/// Some events rejected for good, the others delivered: only the rejected are named.
#[tokio::test]
async fn partial_permanent_failure_names_the_rejected_events() {
    let server = TestServer::start().await;
    server.push([Reply::status(200), Reply::status(404), Reply::status(200)]);
    let dest = HttpDestination::new("partial", HttpConfig::new(server.url("/"))).unwrap();
    let batch = Batch::new(None, (0..3).map(|i| Event::new(json!({"i": i}))).collect());
    let err = dest.deliver(&batch).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);

    let refused: Vec<String> = server
        .received()
        .iter()
        .filter(|r| r.answered == Some(404))
        .filter_map(|r| r.key().map(str::to_owned))
        .collect();
    let named: Vec<String> = err
        .rejected()
        .expect("a subset")
        .iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(named, refused);
    assert_eq!(server.stored().len(), 2);
}

/// A retryable failure beside a permanent one retries the whole batch, which then names
/// only the permanently rejected event.
#[tokio::test]
async fn retryable_failures_take_precedence_over_permanent_ones() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/")).with_max_in_flight(1);
    let dest = HttpDestination::new("mixed", config).unwrap();
    server.push([Reply::status(400), Reply::status(503)]);
    let batch = Batch::new(None, vec![Event::new(json!(1)), Event::new(json!(2))]);
    assert_eq!(
        dest.deliver(&batch).await.unwrap_err().kind(),
        &ErrorKind::Retryable
    );
    server.push([Reply::status(400), Reply::status(200)]);
    let err = dest.deliver(&batch).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert_eq!(err.rejected().map(<[_]>::len), Some(1));
}
