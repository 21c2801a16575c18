//! The last response of each event, for the runtime's delivery records.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use destination_core::{Batch, Destination, Event};
use destination_http::{
    BodyMode, HttpConfig, HttpDestination, RECORDED_BODY_LIMIT, ResponseRecord,
};
use serde_json::json;
use support::{Reply, TestServer};

#[tokio::test]
async fn records_status_latency_and_the_start_of_the_body() {
    let server = TestServer::start().await;
    let long = "é".repeat(RECORDED_BODY_LIMIT);
    server.push([
        Reply::status(202)
            .body("queued")
            .after(Duration::from_millis(50)),
        Reply::status(500).body(&long),
    ]);
    let config = HttpConfig::new(server.url("/")).with_max_in_flight(1);
    let dest = HttpDestination::new("records", config).unwrap();
    let batch = Batch::new(None, vec![Event::new(json!(1)), Event::new(json!(2))]);
    dest.deliver(&batch).await.unwrap_err();

    let ok = dest.last_response(&batch.events()[0].id).unwrap();
    assert_eq!(
        (ok.status, ok.body.as_str(), ok.error.as_deref()),
        (Some(202), "queued", None)
    );
    assert!(ok.latency >= Duration::from_millis(50), "{:?}", ok.latency);

    let failed = dest.last_response(&batch.events()[1].id).unwrap();
    assert_eq!(failed.status, Some(500));
    assert!(failed.body.len() <= RECORDED_BODY_LIMIT && failed.body.len() > 1000);
    assert!(failed.body.chars().all(|c| c == 'é' || c == '\u{fffd}'));
    assert!(failed.error.as_deref().unwrap().contains("answered 500"));

    // A later attempt replaces the record; taking it removes it.
    dest.deliver(&batch).await.unwrap();
    assert_eq!(
        dest.last_response(&batch.events()[1].id).unwrap().status,
        Some(200)
    );
    assert!(dest.responses().take(&batch.events()[1].id).is_some());
    assert!(dest.last_response(&batch.events()[1].id).is_none());
}

#[tokio::test]
async fn records_transport_failures_without_a_status() {
    let server = TestServer::start().await;
    server.push([Reply::Reset]);
    let dest = HttpDestination::new("records", HttpConfig::new(server.url("/"))).unwrap();
    let batch = Batch::new(None, vec![Event::new(json!(1))]);
    dest.deliver(&batch).await.unwrap_err();
    let record = dest.last_response(&batch.events()[0].id).unwrap();
    assert_eq!(record.status, None);
    assert!(
        record
            .error
            .unwrap()
            .contains("failed before a complete response")
    );
}

#[tokio::test]
async fn the_hook_sees_every_event_of_a_batched_request() {
    let server = TestServer::start().await;
    server.push([Reply::status(201).body("{\"accepted\":3}")]);
    let seen: Arc<Mutex<Vec<ResponseRecord>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let config = HttpConfig::new(server.url("/")).with_body(BodyMode::JsonArray);
    let dest = HttpDestination::new("hooked", config)
        .unwrap()
        .with_response_hook(move |r| sink.lock().unwrap().push(r.clone()));
    let batch = Batch::new(None, (0..3).map(|i| Event::new(json!(i))).collect());
    dest.deliver(&batch).await.unwrap();

    let seen = seen.lock().unwrap();
    let ids: Vec<_> = seen.iter().map(|r| r.event_id).collect();
    assert_eq!(ids, batch.ids().collect::<Vec<_>>());
    assert!(
        seen.iter()
            .all(|r| r.status == Some(201) && r.body == "{\"accepted\":3}")
    );
}

#[tokio::test]
async fn the_log_is_bounded() {
    let server = TestServer::start().await;
    let dest = HttpDestination::new("bounded", HttpConfig::new(server.url("/")))
        .unwrap()
        .with_response_log_capacity(3);
    let batch = Batch::new(None, (0..5).map(|i| Event::new(json!(i))).collect());
    dest.deliver(&batch).await.unwrap();
    assert_eq!(dest.responses().len(), 3);
}
