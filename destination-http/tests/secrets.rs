//! Secrets kept out of errors, `Debug` output and logs.
//!
//! This test sets a tracing subscriber of its own, so it lives alone in its test binary:
//! a test running beside it on another thread could register the log call sites first,
//! while no subscriber is listening, and leave nothing to capture.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use destination_core::{Batch, Destination, Event};
use destination_http::{Auth, HttpConfig, HttpDestination};
use serde_json::json;
use support::{Reply, TestServer};

fn one() -> Batch {
    Batch::new(None, vec![Event::new(json!({"hello": "world"}))])
}

/// Collects everything logged at any level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_show() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start().await;
    let port = server.addr.port();
    let signing = "whsec_U0VDUkVULXNpZ25pbmcta2V5";
    let basic = HttpConfig::new(format!(
        "http://user:url-SECRET@127.0.0.1:{port}/hooks/path-SECRET?key=query-SECRET"
    ))
    .with_header("X-Api-Key", "header-SECRET")
    .with_param("token", "param-SECRET")
    .with_auth(Auth::basic("user", "basic-SECRET"))
    .with_signing_secret(signing);
    let bearer = HttpConfig::new(format!("http://127.0.0.1:{port}/x?sig=query-SECRET"))
        .with_auth(Auth::bearer("bearer-SECRET"));
    let userinfo = HttpConfig::new(format!("http://user:url-SECRET@127.0.0.1:{port}/"));

    let mut texts = vec![
        format!("{basic:?}"),
        format!("{bearer:?}"),
        format!("{userinfo:?}"),
    ];
    let mut sent_authorizations = Vec::new();
    for config in [basic, bearer, userinfo] {
        let config = config
            .with_timeout(Duration::from_millis(200))
            .with_allow_override(true);
        let dest = HttpDestination::new("secretive", config).unwrap();
        texts.push(format!("{dest:?}"));
        server.push([
            Reply::status(500).body("oops"),
            Reply::status(404),
            Reply::status(401),
            Reply::status(429).header("Retry-After", "3"),
            Reply::Hang,
            Reply::Reset,
            Reply::CloseMidBody,
        ]);
        let bad_override = Event::new(json!({})).with_attribute("auth", json!({"token": 5}));
        for batch in [one(), one(), one(), one(), one(), one(), one()] {
            let err = dest.deliver(&batch).await.unwrap_err();
            texts.extend([err.to_string(), err.chain(), format!("{err:?}")]);
            let record = dest.last_response(&batch.events()[0].id).unwrap();
            texts.push(format!("{record:?}"));
        }
        let err = dest
            .deliver(&Batch::new(None, vec![bad_override]))
            .await
            .unwrap_err();
        texts.extend([err.chain(), format!("{err:?}")]);
        dest.deliver(&one()).await.unwrap();
        let last = server.received().pop().unwrap();
        sent_authorizations.push(last.header("authorization").unwrap().to_owned());
    }
    texts.push(String::from_utf8(capture.0.lock().unwrap().clone()).unwrap());

    // The credentials were used...
    let basic_value = format!("Basic {}", "dXNlcjpiYXNpYy1TRUNSRVQ=");
    let url_basic = "Basic dXNlcjp1cmwtU0VDUkVU";
    assert_eq!(
        sent_authorizations,
        [basic_value.as_str(), "Bearer bearer-SECRET", url_basic]
    );
    let first = &server.received()[0];
    assert_eq!(
        first.target,
        "/hooks/path-SECRET?key=query-SECRET&token=param-SECRET"
    );
    assert_eq!(first.header("x-api-key"), Some("header-SECRET"));

    // ...and shown nowhere.
    let all = texts.join("\n");
    assert!(all.contains("request failed"), "logs were captured");
    for secret in [
        "SECRET",
        "dXNlcjpiYXNpYy1TRUNSRVQ",
        "dXNlcjp1cmwtU0VDUkVU",
        "U0VDUkVULXNpZ25pbmc",
    ] {
        let at = all.find(secret);
        assert!(
            at.is_none(),
            "{secret} shows: {}",
            &all[at.unwrap().saturating_sub(200)..]
        );
    }
}
