//! The core conformance suite, against the in-process test server.

mod support;

use destination_core::testing;
use destination_http::{Auth, HttpConfig, HttpDestination};
use support::TestServer;

#[tokio::test]
async fn conforms_in_single_mode() {
    let server = TestServer::start().await;
    let dest = HttpDestination::new("conformance", HttpConfig::new(server.url("/hook"))).unwrap();
    testing::run_all(&dest, &server).await;

    // Every request reached the server on the configured path, with an idempotency key.
    let received = server.received();
    assert!(received.len() >= 1 + 25 + 2 * 10);
    assert!(
        received
            .iter()
            .all(|r| r.target == "/hook" && r.key().is_some())
    );
}

#[tokio::test]
async fn conforms_with_signing_auth_and_a_small_in_flight_limit() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/signed"))
        .with_auth(Auth::basic("user", "pass"))
        .with_signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .with_max_in_flight(2);
    let dest = HttpDestination::new("conformance-signed", config).unwrap();
    testing::run_all(&dest, &server).await;
    assert!(server.max_in_flight() <= 2);
    for request in server.received() {
        assert_eq!(request.header("authorization"), Some("Basic dXNlcjpwYXNz"));
        assert_eq!(request.header("webhook-id"), request.key());
    }
}
