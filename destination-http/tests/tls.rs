//! TLS certificates are verified by default, against a real TLS server: `openssl s_server`
//! with a self-signed certificate, started on 127.0.0.1 by the test itself.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use destination_core::{Batch, Destination, ErrorKind, Event};
use destination_http::{HttpConfig, HttpDestination, Method};

/// The `openssl` server process; killed when dropped.
struct SServer(Child);

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("DESTINATIONS_REQUIRE_PEERS").is_none(),
            "the openssl command is missing, but DESTINATIONS_REQUIRE_PEERS is set"
        );
        eprintln!("SKIPPED tls tests: the openssl command is missing");
    }
    found
}

fn self_signed(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/O=destinations-http tests/CN=self-signed",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(status.success(), "openssl req failed");
}

fn start(dir: &Path) -> (SServer, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(dir.join("cert.pem"))
        .arg("-key")
        .arg(dir.join("key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = SServer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not listen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[tokio::test]
async fn certificates_are_verified_unless_told_otherwise() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let (_server, port) = start(dir.path());
    let url = format!("https://127.0.0.1:{port}/");
    let batch = Batch::new(None, vec![Event::new(serde_json::Value::Null)]);

    let strict = HttpDestination::new("tls", HttpConfig::new(&url).with_method(Method::Get));
    let err = strict.unwrap().deliver(&batch).await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Retryable);
    let chain = err.chain().to_lowercase();
    assert!(
        chain.contains("invalid peer certificate: unknownissuer"),
        "{chain}"
    );

    let mut config = HttpConfig::new(&url).with_method(Method::Get);
    config.danger_accept_invalid_certs = true;
    let lax = HttpDestination::new("tls", config).unwrap();
    lax.deliver(&batch).await.unwrap();
    let record = lax.last_response(&batch.events()[0].id).unwrap();
    assert_eq!(record.status, Some(200));
    assert!(record.body.contains("s_server"), "{}", record.body);
}
