//! Standard Webhooks signatures, checked with an HMAC computed here, not by the crate.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use destination_core::{Batch, Destination};
use destination_http::{BodyMode, HttpConfig, HttpDestination};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::{Received, Reply, TestServer, github_events};

const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_bmV3LXNlY3JldC1hZnRlci1yb3RhdGlvbg==",
];

/// What a receiver does: recompute `v1` over `{id}.{timestamp}.{body}` with its secret.
fn verifies(request: &Received, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let header = request
        .header("webhook-signature")
        .expect("webhook-signature");
    header.split(' ').any(|sig| sig == expected)
}

fn fresh(request: &Received) -> bool {
    let ts: u64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    now.abs_diff(ts) <= 60
}

#[tokio::test]
async fn every_request_is_signed_with_every_secret() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/signed"))
        .with_signing_secret(SECRETS[0])
        .with_signing_secret(SECRETS[1]);
    let dest = HttpDestination::new("signed", config).unwrap();
    let batch = Batch::new(None, github_events(20));
    dest.deliver(&batch).await.unwrap();

    let received = server.received();
    assert_eq!(received.len(), 20);
    for request in &received {
        assert!(verifies(request, SECRETS[0]), "old secret");
        assert!(verifies(request, SECRETS[1]), "new secret");
        assert!(
            !verifies(request, "whsec_c29tZW9uZS1lbHNl"),
            "a stranger's secret"
        );
        assert!(fresh(request));
        assert_eq!(
            request
                .header("webhook-signature")
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        assert_eq!(request.header("webhook-id"), request.key());
    }
    let ids: Vec<String> = batch.ids().map(|id| id.to_string()).collect();
    let mut seen: Vec<String> = received
        .iter()
        .map(|r| r.key().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "webhook-id is the event id");
}

#[tokio::test]
async fn a_tampered_body_fails_verification() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/")).with_signing_secret(SECRETS[0]);
    let dest = HttpDestination::new("signed", config).unwrap();
    dest.deliver(&Batch::new(None, github_events(1)))
        .await
        .unwrap();
    let mut request = server.received().remove(0);
    assert!(verifies(&request, SECRETS[0]));
    request.body.push(b' ');
    assert!(!verifies(&request, SECRETS[0]));
}

#[tokio::test]
async fn the_id_is_stable_across_retries_and_each_attempt_is_signed() {
    let server = TestServer::start().await;
    server.push([Reply::status(503), Reply::status(500)]);
    let config = HttpConfig::new(server.url("/")).with_signing_secret(SECRETS[1]);
    let dest = HttpDestination::new("signed", config).unwrap();
    let batch = Batch::new(None, github_events(1));
    let (errors, result) = support::deliver_until_done(&dest, &batch, 5).await;
    result.unwrap();
    assert_eq!(errors.len(), 2);
    let received = server.received();
    assert_eq!(received.len(), 3);
    let want = batch.events()[0].id.to_string();
    for request in &received {
        assert_eq!(request.header("webhook-id"), Some(want.as_str()));
        assert!(verifies(request, SECRETS[1]));
    }
}

#[tokio::test]
async fn batched_bodies_are_signed_as_sent() {
    for body in [BodyMode::JsonArray, BodyMode::Ndjson] {
        let server = TestServer::start().await;
        let config = HttpConfig::new(server.url("/"))
            .with_body(body)
            .with_signing_secret(SECRETS[0]);
        let dest = HttpDestination::new("signed", config).unwrap();
        let batch = Batch::new(None, github_events(15));
        dest.deliver(&batch).await.unwrap();
        let received = server.received();
        assert_eq!(received.len(), 1);
        assert!(verifies(&received[0], SECRETS[0]), "{body:?}");
        assert_eq!(received[0].header("webhook-id"), Some(batch.key().as_str()));
    }
}

#[tokio::test]
async fn unsigned_without_secrets() {
    let server = TestServer::start().await;
    let dest = HttpDestination::new("plain", HttpConfig::new(server.url("/"))).unwrap();
    dest.deliver(&Batch::new(None, github_events(1)))
        .await
        .unwrap();
    let request = &server.received()[0];
    assert!(request.header("webhook-signature").is_none());
    assert!(request.header("webhook-id").is_none());
    assert!(request.key().is_some());
}

#[tokio::test]
async fn the_idempotency_header_is_configurable() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/"))
        .with_idempotency_header("X-Request-Id")
        .with_header("X-Request-Id", "from-config");
    let dest = HttpDestination::new("named", config).unwrap();
    let batch = Batch::new(None, github_events(1));
    dest.deliver(&batch).await.unwrap();
    let request = &server.received()[0];
    let want = batch.events()[0].id.to_string();
    assert_eq!(request.header("x-request-id"), Some(want.as_str()));
    assert_eq!(request.header_count("x-request-id"), 1);
    assert_eq!(request.key(), None);

    let config = HttpConfig::new(server.url("/")).with_idempotency_header("");
    let dest = HttpDestination::new("none", config).unwrap();
    dest.deliver(&batch).await.unwrap();
    let request = server.received().pop().unwrap();
    assert_eq!(request.key(), None);
    assert_eq!(request.header("x-request-id"), None);
}
