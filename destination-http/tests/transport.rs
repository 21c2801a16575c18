//! Transport failures: timeouts, cut-off responses, reset connections, refused ports, and
//! the in-flight limit.

mod support;

use std::time::{Duration, Instant};

use destination_core::{Batch, Destination, ErrorKind, Event};
use destination_http::{CircuitBreakerConfig, HttpConfig, HttpDestination};
use serde_json::json;
use support::{Reply, TestServer, deliver_until_done};

fn batch_of(n: usize) -> Batch {
    Batch::new(
        None,
        (0..n).map(|i| Event::new(json!({"seq": i}))).collect(),
    )
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_retryably() {
    let server = TestServer::start().await;
    server.push([Reply::Hang]);
    let config = HttpConfig::new(server.url("/slow")).with_timeout(Duration::from_millis(300));
    let dest = HttpDestination::new("hang", config).unwrap();
    let batch = batch_of(1);

    let started = Instant::now();
    let err = dest.deliver(&batch).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.kind(), &ErrorKind::Retryable);
    assert!(err.to_string().contains("timed out after 300ms"), "{err}");
    assert!(err.to_string().contains("raise timeout"), "{err}");
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3));

    let (_, result) = deliver_until_done(&dest, &batch, 3).await;
    result.unwrap();
    let key = batch.events()[0].id.to_string();
    assert_eq!(server.times_received(&key), 2);
    assert_eq!(server.stored().len(), 1);
}

#[tokio::test]
async fn a_response_cut_mid_body_is_retried() {
    let server = TestServer::start().await;
    server.push([Reply::CloseMidBody]);
    let dest = HttpDestination::new("cut", HttpConfig::new(server.url("/"))).unwrap();
    let batch = batch_of(1);
    let (errors, result) = deliver_until_done(&dest, &batch, 3).await;
    result.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind(), &ErrorKind::Retryable);
    assert!(errors[0].to_string().contains("cut off"), "{}", errors[0]);
    let key = batch.events()[0].id.to_string();
    assert_eq!(server.times_received(&key), 2);
    assert!(server.stored().contains_key(&key));
}

/// The server resets a connection the client kept alive, just as the client reuses it:
/// the event is not lost but classified retryable, and the retry delivers it.
#[tokio::test]
async fn a_reset_kept_alive_connection_is_retryable() {
    let server = TestServer::start().await;
    let dest = HttpDestination::new("reset", HttpConfig::new(server.url("/"))).unwrap();
    let first = batch_of(1);
    dest.deliver(&first).await.unwrap();

    server.push([Reply::Reset]);
    let second = batch_of(1);
    let err = dest.deliver(&second).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Retryable, "{}", err.chain());

    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].connection, received[1].connection,
        "the second request reused the first one's connection"
    );

    dest.deliver(&second).await.unwrap();
    let key = second.events()[0].id.to_string();
    assert_eq!(server.times_received(&key), 2);
    assert!(server.stored().contains_key(&key));
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dest = HttpDestination::new("closed", HttpConfig::new(format!("http://{addr}/"))).unwrap();
    let err = dest.deliver(&batch_of(1)).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Retryable);
    assert!(err.to_string().starts_with("could not connect to"), "{err}");
    assert!(
        err.chain().len() > err.to_string().len(),
        "the cause is kept"
    );
}

#[tokio::test]
async fn requests_in_flight_are_limited() {
    let server = TestServer::start().await;
    let slow = Reply::status(200).after(Duration::from_millis(100));
    server.push(std::iter::repeat_n(slow, 8));
    let config = HttpConfig::new(server.url("/")).with_max_in_flight(3);
    let dest = HttpDestination::new("limited", config).unwrap();

    let started = Instant::now();
    dest.deliver(&batch_of(8)).await.unwrap();
    assert_eq!(
        server.max_in_flight(),
        3,
        "sent concurrently, but never more than 3"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.stored().len(), 8);
}

#[tokio::test]
async fn the_limit_holds_across_concurrent_batches() {
    let server = TestServer::start().await;
    let slow = Reply::status(200).after(Duration::from_millis(50));
    server.push(std::iter::repeat_n(slow, 12));
    let config = HttpConfig::new(server.url("/")).with_max_in_flight(2);
    let dest = HttpDestination::new("limited", config).unwrap();
    let batches: Vec<Batch> = (0..4).map(|_| batch_of(3)).collect();
    let results = futures::future::join_all(batches.iter().map(|b| dest.deliver(b))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(server.max_in_flight(), 2);
    assert_eq!(server.stored().len(), 12);
}

#[tokio::test]
async fn the_circuit_breaker_opens_then_probes() {
    let server = TestServer::start().await;
    server.push([Reply::status(500), Reply::Reset]);
    let breaker = CircuitBreakerConfig {
        failures: 2,
        open_for: Duration::from_millis(300),
    };
    let config = HttpConfig::new(server.url("/")).with_circuit_breaker(breaker);
    let dest = HttpDestination::new("breaker", config).unwrap();
    let batch = batch_of(1);

    for _ in 0..2 {
        assert_eq!(
            dest.deliver(&batch).await.unwrap_err().kind(),
            &ErrorKind::Retryable
        );
    }
    let open = dest.deliver(&batch).await.unwrap_err();
    let wait = open.retry_after().expect("rate limited while open");
    assert!(wait <= Duration::from_millis(300), "{wait:?}");
    assert!(open.to_string().contains("circuit breaker open"), "{open}");
    assert_eq!(server.received().len(), 2, "nothing sent while open");

    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    server.push([Reply::status(502)]);
    assert_eq!(
        dest.deliver(&batch).await.unwrap_err().kind(),
        &ErrorKind::Retryable
    );
    assert_eq!(server.received().len(), 3, "one probe");
    assert!(
        dest.deliver(&batch)
            .await
            .unwrap_err()
            .retry_after()
            .is_some(),
        "open again"
    );

    tokio::time::sleep(Duration::from_millis(320)).await;
    dest.deliver(&batch).await.unwrap();
    dest.deliver(&batch_of(2)).await.unwrap();
    assert_eq!(server.received().len(), 6);
}
