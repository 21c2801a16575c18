//! The runtime and the HTTP destination together: retries that honour `Retry-After` across
//! the whole destination, dead letters for permanent failures, and the last response of
//! each event kept with its delivery record.

mod support;

use std::collections::VecDeque;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::binary;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    key: String,
    status: u16,
}

/// A loopback HTTP server that answers with scripted statuses, then 200.
#[derive(Clone)]
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(script: Vec<(u16, &'static str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let Some(key) = read_request(&mut socket).await else {
                        return;
                    };
                    let (status, extra) = script.lock().unwrap().pop_front().unwrap_or((200, ""));
                    log.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        key,
                        status,
                    });
                    let body = format!("{{\"answer\": {status}}}");
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request; returns its idempotency key.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .map(str::trim)
                .map(String::from)
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    header("idempotency-key")
}

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = format!(
        r#"
[queue]
path = "{queue}"

[destinations.hooks]
type = "http"
url = "http://127.0.0.1:{port}/hook"
concurrency = 4

[destinations.hooks.retry]
max_attempts = 4
initial_backoff = "10ms"
max_backoff = "50ms"
"#,
        queue = dir.join("queue").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn send(config: &std::path::Path, lines: &str) -> std::process::Output {
    let input = config.with_file_name("input.ndjson");
    std::fs::write(&input, lines).unwrap();
    Command::new(binary())
        .args(["send", "--config"])
        .arg(config)
        .args(["--to", "hooks"])
        .arg(&input)
        .output()
        .unwrap()
}

fn run(config: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_pauses_the_destination_and_responses_are_kept() {
    let server = Server::start(vec![(503, "retry-after: 1\r\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), server.port);
    let output = tokio::task::spawn_blocking({
        let config = config.clone();
        move || send(&config, "{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3}\n")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("delivered 3, dead-lettered 0"), "{stdout}");

    let seen = server.seen();
    let throttled = seen
        .iter()
        .find(|s| s.status == 503)
        .expect("a 503 was served");
    // Requests already in flight when the 503 came back may still land right after it;
    // after that, nothing reaches the server for the Retry-After second, from any event.
    for later in seen.iter().filter(|s| s.at > throttled.at) {
        let gap = later.at - throttled.at;
        assert!(
            gap < Duration::from_millis(50) || gap >= Duration::from_millis(900),
            "request {gap:?} after the 503: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.at - throttled.at >= Duration::from_millis(900)),
        "the throttled event was retried after the pause: {seen:?}"
    );
    let mut delivered: Vec<&str> = seen
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.key.as_str())
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 3, "each event delivered once: {seen:?}");
    assert!(
        seen.iter().filter(|s| s.key == throttled.key).count() == 2,
        "the throttled event was retried with its key"
    );

    // The last response of each event is kept with its delivery record.
    let mut shown = String::new();
    for _ in 0..50 {
        shown = run(&config, &["deliveries", "--event", &throttled.key]);
        if shown.contains("response 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("delivered") && shown.contains("response 200"),
        "{shown}"
    );
    assert!(
        shown.contains("2 attempt(s)") && shown.contains("{\\\"answer\\\": 200}"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_failures_are_dead_lettered_with_the_response() {
    let server = Server::start(vec![(404, "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), server.port);
    let output = tokio::task::spawn_blocking({
        let config = config.clone();
        move || send(&config, "{\"n\": 1}\n")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("dead-lettered 1"), "{stdout}");
    assert_eq!(server.seen().len(), 1, "a 404 is not retried");

    let letters = run(&config, &["dlq", "list"]);
    assert!(letters.contains("404"), "{letters}");
    let key = &server.seen()[0].key;
    let mut shown = String::new();
    for _ in 0..50 {
        shown = run(&config, &["deliveries", "--event", key]);
        if shown.contains("response 404") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shown.contains("dead_lettered") && shown.contains("response 404"),
        "{shown}"
    );
    let unknown = Command::new(binary())
        .args(["deliveries", "--destination", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("unknown destination `nope`"), "{stderr}");

    // Replay once the endpoint is fixed (the script is used up: it answers 200 now).
    let replayed = run(&config, &["dlq", "replay"]);
    assert!(replayed.contains("replayed 1, delivered 1"), "{replayed}");
    assert_eq!(server.seen().iter().filter(|s| &s.key == key).count(), 2);
}
