//! Per-event overrides (`url`, `method`, `headers`, `params`, `auth`) and the nine methods.

mod support;

use destination_core::{Batch, Destination, ErrorKind, Event};
use destination_http::{Auth, HttpConfig, HttpDestination, Method};
use serde_json::json;
use support::TestServer;

fn overriding(other: &TestServer) -> Event {
    Event::new(json!({"data": 1}))
        .with_attribute("url", other.url("/elsewhere"))
        .with_attribute("method", "put")
        .with_attribute("headers", json!({"X-Event": "yes"}))
        .with_attribute("params", json!({"page": 2}))
        .with_attribute(
            "auth",
            json!({"username": "event-user", "password": "event-pass"}),
        )
}

#[tokio::test]
async fn overrides_are_ignored_unless_allowed() {
    let (main, other) = (TestServer::start().await, TestServer::start().await);
    let config = HttpConfig::new(main.url("/configured")).with_header("X-Config", "1");
    let dest = HttpDestination::new("strict", config).unwrap();
    dest.deliver(&Batch::new(None, vec![overriding(&other)]))
        .await
        .unwrap();

    assert!(other.received().is_empty(), "the event's url was not used");
    let request = &main.received()[0];
    assert_eq!(
        (request.method.as_str(), request.target.as_str()),
        ("POST", "/configured")
    );
    assert_eq!(request.header("x-event"), None);
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.header("x-config"), Some("1"));
}

#[tokio::test]
async fn overrides_are_honoured_when_allowed() {
    let (main, other) = (TestServer::start().await, TestServer::start().await);
    let config = HttpConfig::new(main.url("/configured"))
        .with_header("X-Config", "config-only")
        .with_auth(Auth::bearer("config-token"))
        .with_allow_override(true);
    let dest = HttpDestination::new("open", config).unwrap();
    dest.deliver(&Batch::new(None, vec![overriding(&other)]))
        .await
        .unwrap();

    assert!(main.received().is_empty());
    let request = &other.received()[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.target, "/elsewhere?page=2");
    assert_eq!(request.header("x-event"), Some("yes"));
    // "event-user:event-pass" in base64.
    assert_eq!(
        request.header("authorization"),
        Some("Basic ZXZlbnQtdXNlcjpldmVudC1wYXNz")
    );
    assert_eq!(request.header_count("authorization"), 1);
    assert_eq!(
        request.header("x-config"),
        None,
        "configured headers stay with their origin"
    );
    assert_eq!(request.json(), json!({"data": 1}));
}

#[tokio::test]
async fn same_origin_overrides_keep_the_configured_credentials() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/configured?fixed=1"))
        .with_header("X-Config", "kept")
        .with_param("api", "v2")
        .with_auth(Auth::bearer("config-token"))
        .with_allow_override(true);
    let dest = HttpDestination::new("open", config).unwrap();
    let event = Event::new(json!({}))
        .with_attribute("url", server.url("/other"))
        .with_attribute(
            "headers",
            json!({"X-Config": "replaced", "X-More": "added"}),
        )
        .with_attribute("params", json!({"api": "v3"}));
    dest.deliver(&Batch::new(None, vec![event])).await.unwrap();

    let request = &server.received()[0];
    assert_eq!(request.target, "/other?api=v3");
    assert_eq!(request.header("x-config"), Some("replaced"));
    assert_eq!(request.header_count("x-config"), 1);
    assert_eq!(request.header("x-more"), Some("added"));
    assert_eq!(request.header("authorization"), Some("Bearer config-token"));
}

#[tokio::test]
async fn an_invalid_override_rejects_only_its_event() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/")).with_allow_override(true);
    let dest = HttpDestination::new("open", config).unwrap();
    let bad = Event::new(json!({})).with_attribute("method", "FETCH");
    let bad_id = bad.id;
    let batch = Batch::new(
        None,
        vec![Event::new(json!({"ok": 1})), bad, Event::new(json!({}))],
    );
    let err = dest.deliver(&batch).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert_eq!(err.rejected(), Some(&[bad_id][..]));
    assert!(err.to_string().contains("unknown http method"), "{err}");
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn an_overridden_credential_failure_is_the_events_fault() {
    let server = TestServer::start().await;
    server.push([support::Reply::status(401), support::Reply::status(401)]);
    let config = HttpConfig::new(server.url("/")).with_allow_override(true);
    let dest = HttpDestination::new("open", config).unwrap();
    let event = Event::new(json!({})).with_attribute("auth", json!({"token": "wrong"}));
    let err = dest
        .deliver(&Batch::new(None, vec![event]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    let err = dest
        .deliver(&Batch::new(None, vec![Event::new(json!({}))]))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::Config,
        "the configured credentials are at fault"
    );
}

/// All nine methods, configured and overridden; HEAD, TRACE and CONNECT carry no body.
#[tokio::test]
async fn every_method_is_sent() {
    for method in Method::ALL {
        let server = TestServer::start().await;
        let dest = HttpDestination::new("m", HttpConfig::new(server.url("/m")).with_method(method))
            .unwrap();
        let event = Event::new(json!({"method": method.as_str()}));
        dest.deliver(&Batch::new(None, vec![event])).await.unwrap();

        let open = HttpConfig::new(server.url("/o")).with_allow_override(true);
        let dest = HttpDestination::new("o", open).unwrap();
        let event = Event::new(json!({"method": method.as_str()}))
            .with_attribute("method", method.as_str().to_lowercase());
        dest.deliver(&Batch::new(None, vec![event])).await.unwrap();

        let received = server.received();
        assert_eq!(received.len(), 2, "{method}");
        for request in &received {
            assert_eq!(request.method, method.as_str());
            if method.allows_body() {
                assert_eq!(
                    request.json(),
                    json!({"method": method.as_str()}),
                    "{method}"
                );
            } else {
                assert!(request.body.is_empty(), "{method} carries no body");
            }
            if method == Method::Connect {
                assert_eq!(request.target, server.addr.to_string(), "authority form");
            }
        }
    }
}

#[tokio::test]
async fn a_null_payload_sends_no_body() {
    let server = TestServer::start().await;
    let dest = HttpDestination::new("n", HttpConfig::new(server.url("/"))).unwrap();
    dest.deliver(&Batch::new(None, vec![Event::new(serde_json::Value::Null)]))
        .await
        .unwrap();
    let request = &server.received()[0];
    assert!(request.body.is_empty());
    assert_eq!(request.header("content-type"), None);
}
