//! Batched bodies (JSON array, NDJSON), batch defaults, and grouping by overridden target.

mod support;

use destination_core::{Batch, BatchConfig, Destination, ErrorKind, Event};
use destination_http::{BodyMode, HttpConfig, HttpDestination, Method};
use serde_json::{Value, json};
use support::{TestServer, github_events};

#[tokio::test]
async fn json_array_sends_one_request_per_batch() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/bulk")).with_body(BodyMode::JsonArray);
    let dest = HttpDestination::new("array", config).unwrap();
    let events = github_events(40);
    let batch = Batch::new(None, events.clone());
    dest.deliver(&batch).await.unwrap();

    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.key(), Some(batch.key().as_str()));
    let payloads: Vec<Value> = events.into_iter().map(Event::into_payload).collect();
    assert_eq!(request.json(), Value::Array(payloads));
}

#[tokio::test]
async fn ndjson_sends_one_line_per_event() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/bulk"))
        .with_body(BodyMode::Ndjson)
        .with_method(Method::Put);
    let dest = HttpDestination::new("ndjson", config).unwrap();
    let events = github_events(60);
    dest.deliver(&Batch::new(None, events.clone()))
        .await
        .unwrap();

    let request = &server.received()[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
    let text = std::str::from_utf8(&request.body).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let payloads: Vec<Value> = events.into_iter().map(Event::into_payload).collect();
    assert_eq!(lines, payloads);
}

#[tokio::test]
async fn a_batched_failure_rejects_the_whole_batch() {
    let server = TestServer::start().await;
    server.push([support::Reply::status(413).body("too large")]);
    let config = HttpConfig::new(server.url("/")).with_body(BodyMode::Ndjson);
    let dest = HttpDestination::new("ndjson", config).unwrap();
    let err = dest
        .deliver(&Batch::new(None, github_events(3)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert_eq!(err.rejected(), None, "the whole batch");
    assert!(err.to_string().contains("413") && err.to_string().contains("too large"));
}

#[test]
fn default_batches_follow_the_body_mode() {
    let single = HttpDestination::new("s", HttpConfig::new("http://127.0.0.1:9/")).unwrap();
    assert_eq!(single.default_batch(), BatchConfig::unbatched());
    for body in [BodyMode::JsonArray, BodyMode::Ndjson] {
        let config = HttpConfig::new("http://127.0.0.1:9/").with_body(body);
        let dest = HttpDestination::new("b", config).unwrap();
        assert_eq!(dest.default_batch(), BatchConfig::default());
    }
}

#[test]
fn batched_bodies_need_a_method_with_a_body() {
    for method in [Method::Head, Method::Trace, Method::Connect] {
        let config = HttpConfig::new("http://127.0.0.1:9/")
            .with_body(BodyMode::JsonArray)
            .with_method(method);
        let err = HttpDestination::new("b", config).unwrap_err();
        assert!(err.to_string().starts_with("invalid setting body"), "{err}");
    }
}

/// Events whose overrides differ go in different requests, and get different partition
/// keys so that the batcher keeps them apart in the first place.
#[tokio::test]
async fn overridden_targets_are_grouped() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/default"))
        .with_body(BodyMode::JsonArray)
        .with_allow_override(true);
    let dest = HttpDestination::new("grouped", config).unwrap();
    let to =
        |path: &str, n: i32| Event::new(json!({"n": n})).with_attribute("url", server.url(path));
    let events = vec![
        to("/a", 1),
        Event::new(json!({"n": 2})),
        to("/b", 3),
        to("/a", 4),
        Event::new(json!({"n": 5})),
    ];
    let keys: Vec<Option<String>> = events.iter().map(|e| dest.partition_key(e)).collect();
    assert_eq!(keys[0], keys[3]);
    assert_ne!(keys[0], keys[2]);
    assert_eq!((keys[1].clone(), keys[4].clone()), (None, None));

    dest.deliver(&Batch::new(None, events)).await.unwrap();
    let mut bodies: Vec<(String, Value)> = server
        .received()
        .into_iter()
        .map(|r| (r.target.clone(), r.json()))
        .collect();
    bodies.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        bodies,
        [
            ("/a".to_owned(), json!([{"n": 1}, {"n": 4}])),
            ("/b".to_owned(), json!([{"n": 3}])),
            ("/default".to_owned(), json!([{"n": 2}, {"n": 5}])),
        ]
    );
}
