//! Refused addresses and redirects. Secrets kept out of errors and logs: `secrets.rs`.
//!
//! Refused targets here are link-local IPv6 addresses without a scope: even if a check
//! failed, the kernel would refuse to connect to them, so no test sends traffic off the
//! loopback interface. The cloud metadata address 169.254.169.254 is only used where it
//! is refused before any I/O can happen (building the destination).

mod support;

use destination_core::{Batch, Destination, ErrorKind, Event};
use destination_http::{HttpConfig, HttpDestination, HttpError};
use serde_json::json;
use support::{Reply, TestServer};

fn one() -> Batch {
    Batch::new(None, vec![Event::new(json!({"hello": "world"}))])
}

#[test]
fn refused_literal_addresses_fail_at_construction() {
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/",
        "http://100.100.100.200/",
    ] {
        let err = HttpDestination::new("r", HttpConfig::new(url)).unwrap_err();
        assert!(
            matches!(err, HttpError::RefusedTarget { .. }),
            "{url}: {err}"
        );
        assert!(err.to_string().contains("allow_link_local"), "{err}");
        let allowed = HttpConfig::new(url).with_allow_link_local(true);
        assert!(HttpDestination::new("r", allowed).is_ok(), "{url}");
    }
}

#[tokio::test]
async fn an_overridden_link_local_url_is_refused_before_connecting() {
    let server = TestServer::start().await;
    let config = HttpConfig::new(server.url("/")).with_allow_override(true);
    let dest = HttpDestination::new("r", config).unwrap();
    let bad = Event::new(json!({})).with_attribute("url", "http://[fe80::1]:9/steal");
    let bad_id = bad.id;
    let batch = Batch::new(None, vec![bad, Event::new(json!({}))]);
    let err = dest.deliver(&batch).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert_eq!(err.rejected(), Some(&[bad_id][..]));
    assert!(err.to_string().contains("link-local address"), "{err}");
    let record = dest.last_response(&bad_id).unwrap();
    assert_eq!(record.status, None);
    assert_eq!(server.received().len(), 1, "only the good event was sent");
}

#[tokio::test]
async fn host_names_are_checked_after_resolution() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let url = format!("http://hooks.test:{port}/in");
    let link_local = vec!["fe80::1".parse().unwrap()];

    let config = HttpConfig::new(&url).with_resolve("hooks.test", link_local.clone());
    let dest = HttpDestination::new("r", config).unwrap();
    let err = dest.deliver(&one()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Config, "{}", err.chain());
    assert!(
        err.to_string()
            .contains("hooks.test resolves to fe80::1, a link-local"),
        "{err}"
    );
    let health = dest.health_check().await.unwrap_err();
    assert_eq!(health.kind(), &ErrorKind::Config);

    // A refused address beside an allowed one is dropped, and the allowed one is used.
    let mixed = vec!["fe80::1".parse().unwrap(), "127.0.0.1".parse().unwrap()];
    let config = HttpConfig::new(&url).with_resolve("hooks.test", mixed);
    let dest = HttpDestination::new("r", config).unwrap();
    dest.health_check().await.unwrap();
    dest.deliver(&one()).await.unwrap();
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        server.received()[0].header("host"),
        Some(format!("hooks.test:{port}").as_str())
    );

    // With the switch on, the address is tried (and the kernel refuses a scopeless one).
    let config = HttpConfig::new(&url)
        .with_resolve("hooks.test", link_local)
        .with_allow_link_local(true);
    let dest = HttpDestination::new("r", config).unwrap();
    let err = dest.deliver(&one()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Retryable, "{}", err.chain());
    assert!(err.to_string().starts_with("could not connect"), "{err}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (server, other) = (TestServer::start().await, TestServer::start().await);
    server.push([Reply::status(307).header("Location", &other.url("/moved"))]);
    let dest = HttpDestination::new("r", HttpConfig::new(server.url("/"))).unwrap();
    let err = dest.deliver(&one()).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Permanent);
    assert!(
        err.to_string().contains("redirects are not followed"),
        "{err}"
    );
    assert!(other.received().is_empty());
}
