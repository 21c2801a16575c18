//! A scriptable HTTP/1.1 server on 127.0.0.1 for the webhook destination's tests.
//!
//! It is written on raw tokio sockets rather than a server framework, because the tests
//! need to misbehave at the byte level: cut a response body, reset a kept-alive
//! connection, or never answer.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use destination_core::testing::ReadBack;
use destination_core::{DeliveryError, Destination, EventId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server does with the next request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer with this status, headers and body, keeping the connection open.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
    },
    /// Read the request and never answer.
    Hang,
    /// Announce a 100-byte body, send 10 bytes, close.
    CloseMidBody,
    /// Read the request, then reset the connection (RST) without answering.
    Reset,
}

impl Reply {
    /// A plain answer with `status`.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Self::Status { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Sets the response body.
    pub fn body(mut self, text: &str) -> Self {
        if let Self::Status { body, .. } = &mut self {
            *body = text.to_owned();
        }
        self
    }

    /// Waits before answering.
    pub fn after(mut self, wait: Duration) -> Self {
        if let Self::Status { delay, .. } = &mut self {
            *delay = wait;
        }
        self
    }
}

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target: path and query, or authority for CONNECT.
    pub target: String,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted connection it came on, from 0.
    pub connection: usize,
    /// The status answered, if any was.
    pub answered: Option<u16>,
}

impl Received {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// How many times header `name` appears.
    pub fn header_count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).count()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The idempotency key.
    pub fn key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    /// What a receiver keeps: the accepted requests, deduplicated by idempotency key.
    stored: Mutex<BTreeMap<String, Received>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server; it stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with a free port; it answers 200 unless scripted.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = accept_state.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, id, Arc::clone(&accept_state)));
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues replies for the next requests, in arrival order.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// Every request read so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// The requests accepted (answered 2xx), one per idempotency key.
    pub fn stored(&self) -> BTreeMap<String, Received> {
        lock(&self.state.stored).clone()
    }

    /// How many requests carried idempotency key `key`.
    pub fn times_received(&self, key: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.key() == Some(key))
            .count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most requests the server was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl ReadBack for TestServer {
    async fn stored_ids(&self) -> Result<Vec<EventId>, String> {
        self.stored()
            .keys()
            .map(|key| {
                key.parse()
                    .map_err(|e| format!("key {key:?} is no event id: {e}"))
            })
            .collect()
    }
}

async fn serve(mut stream: TcpStream, connection: usize, state: Arc<State>) {
    let mut buf = Vec::new();
    while let Some(mut request) = read_request(&mut stream, &mut buf, connection).await {
        let reply = lock(&state.script)
            .pop_front()
            .unwrap_or(Reply::status(200));
        let index = {
            let mut received = lock(&state.received);
            received.push(request.clone());
            received.len() - 1
        };
        match reply {
            Reply::Status {
                status,
                headers,
                body,
                delay,
            } => {
                let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                state.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                state.in_flight.fetch_sub(1, Ordering::SeqCst);

                request.answered = Some(status);
                lock(&state.received)[index].answered = Some(status);
                if (200..300).contains(&status)
                    && let Some(key) = request.key().map(str::to_owned)
                {
                    lock(&state.stored).entry(key).or_insert(request.clone());
                }
                let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
                for (name, value) in &headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                let mut out = head.into_bytes();
                if request.method != "HEAD" {
                    out.extend_from_slice(body.as_bytes());
                }
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
            Reply::Hang => {
                // Hold the connection until the client gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Reply::CloseMidBody => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.flush().await;
                return;
            }
            Reply::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
        }
    }
}

/// Reads one request; `None` at the end of the connection.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    connection: usize,
) -> Option<Received> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < length {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf.drain(..length).collect();
    Some(Received {
        method,
        target,
        headers,
        body,
        connection,
        answered: None,
    })
}

/// Delivers `batch` until it succeeds or fails for good, as the runtime's worker would
/// (without the waiting); gives the errors seen on the way and the final result.
pub async fn deliver_until_done(
    dest: &dyn Destination,
    batch: &destination_core::Batch,
    max_attempts: usize,
) -> (Vec<DeliveryError>, Result<(), DeliveryError>) {
    let mut errors = Vec::new();
    for _ in 0..max_attempts {
        match dest.deliver(batch).await {
            Ok(()) => return (errors, Ok(())),
            Err(e) if e.is_retryable() => errors.push(e),
            Err(e) => return (errors, Err(e)),
        }
    }
    panic!("still failing after {max_attempts} attempts: {errors:?}");
}

/// Real GitHub webhook payloads from the shared data set, as events tagged with their
/// GitHub event name; falls back to the core's sample events where the data set is absent.
pub fn github_events(count: usize) -> Vec<destination_core::Event> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/github-webhooks.ndjson"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("github-webhooks.ndjson not found at {path}; using sample events");
        return destination_core::testing::sample_events(count);
    };
    text.lines()
        .take(count)
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).expect("ndjson");
            let event = record["event"].as_str().unwrap_or_default().to_owned();
            destination_core::Event::new(record["payload"].take()).with_attribute("github", event)
        })
        .collect()
}
