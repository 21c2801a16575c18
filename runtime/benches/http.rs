//! HTTP end to end: delivered events per second and `send`-to-server latency to a local
//! webhook server, one request per event and batched (NDJSON), against the same server
//! driven by `wrk` in the same run (the ceiling, at the same number of connections).
//!
//! The server is an axum app on 127.0.0.1 in this process, on a Tokio runtime of its own: it
//! counts requests, events (NDJSON lines) and bytes, and records when each idempotency key
//! arrived. `wrk` runs as a child process for a bounded time and posts one real payload of
//! average size.
//!
//! ```text
//! scripts/bench.sh http
//! # or, with wrk installed:
//! cargo bench -p destinations --features full --bench http
//! ```
//!
//! With `HTTP_BENCH_PROFILE=durable` (or `memory`, `json`, `many`, `reqwest`) it runs only
//! that unbatched path, four times, for a profiler.

mod support;

// The allocator of the `destinations` binary, so the figures are the binary's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use destination_core::{BatchSettings, Event, EventId};
use destination_http::{BodyMode, HttpConfig, HttpDestination};
use destinations::queue::QueueConfig;
use destinations::{DestinationSettings, Runtime};
use serde_json::Value;
use support::{cpu_secs, load_average, machine_busy_secs, payloads};

/// Events of each throughput run.
const EVENTS: usize = 10_000;
/// Requests in flight: the runtime's batches in flight, the destination's `max_in_flight`,
/// and wrk's connections.
const CONNECTIONS: usize = 8;
/// Events per request in the batched runs.
const BATCH_EVENTS: usize = 100;
/// The batched runs' `max_age`.
const BATCH_AGE: Duration = Duration::from_millis(20);
/// How long wrk runs.
const WRK_SECS: u64 = 5;
/// The moderate rate of the latency runs, events per second, and their length.
const RATE: u64 = 250;
const LATENCY_EVENTS: usize = 1_000;
/// Throughput runs alternate this many times; the best run of each counts.
const ROUNDS: usize = 3;
/// Concurrent tasks calling `send` in the throughput runs.
const SENDERS: usize = 8;
/// Concurrent tasks calling `send` in the run that shows what the durable queue's group
/// commit does with more callers.
const MANY_SENDERS: usize = 64;
/// Longest a run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(60);
const KEY_HEADER: &str = "idempotency-key";

/// What the webhook server saw.
#[derive(Debug, Default)]
struct Seen {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    arrivals: Mutex<Vec<(String, Instant)>>,
}

impl Seen {
    fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn take_arrivals(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *self.arrivals.lock().expect("lock"))
    }
}

async fn hook(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let ndjson = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    let events = if ndjson {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    } else {
        1
    };
    if let Some(key) = headers.get(KEY_HEADER).and_then(|v| v.to_str().ok()) {
        let key = key.to_owned();
        seen.arrivals.lock().expect("lock").push((key, at));
    }
    seen.requests.fetch_add(1, Ordering::Relaxed);
    seen.events.fetch_add(events as u64, Ordering::Relaxed);
    seen.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    StatusCode::OK
}

/// Starts the server on 127.0.0.1 on a runtime of its own; returns its port.
fn start_server(seen: Arc<Seen>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server")
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = Router::new().route("/hook", post(hook)).with_state(seen);
            axum::serve(listener, app).await.expect("serve");
        });
    });
    port
}

/// One throughput figure.
#[derive(Debug, Default)]
struct Run {
    requests: u64,
    events: u64,
    bytes: u64,
    secs: f64,
    /// Cores busy in this process, and in the whole machine.
    cores: (f64, f64),
    /// Latency percentiles reported by wrk (p50, p99), when it is wrk.
    wrk_latency: Option<(Duration, Duration)>,
    /// When the last `send` returned, for the runtime's runs.
    sends_done: Option<f64>,
}

impl Run {
    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

/// A duration as wrk prints it: `812.00us`, `1.52ms`, `1.01s`.
fn wrk_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

/// Drives the server with wrk: POSTs of one real payload of average size, `CONNECTIONS`
/// connections, for `WRK_SECS` seconds.
fn run_wrk(port: u16, seen: &Seen, payloads: &[Value]) -> Run {
    let texts: Vec<String> = payloads.iter().map(Value::to_string).collect();
    let mean = texts.iter().map(String::len).sum::<usize>() / texts.len();
    let body = texts
        .iter()
        .min_by_key(|t| t.len().abs_diff(mean))
        .expect("a payload");
    let dir = tempfile::tempdir().expect("tempdir");
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, body).expect("write body");
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Idempotency-Key\"] = \"wrk\"\n\
             local f = io.open(\"{}\", \"rb\")\n\
             wrk.body = f:read(\"*a\")\n\
             f:close()\n",
            body_path.display()
        ),
    )
    .expect("write script");
    let (requests, bytes) = (seen.requests(), seen.bytes.load(Ordering::Relaxed));
    let (cpu, machine) = (cpu_secs(), machine_busy_secs());
    let output = std::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{WRK_SECS}s"),
        ])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/hook"))
        .output()
        .expect("wrk is not installed (scripts/bench.sh installs it with apt-get)");
    let (cpu, machine) = (cpu_secs() - cpu, machine_busy_secs() - machine);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let per_sec: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .expect("wrk's Requests/sec");
    let p50 = field("50%").and_then(wrk_duration).expect("wrk's p50");
    let p99 = field("99%").and_then(wrk_duration).expect("wrk's p99");
    let served = seen.requests() - requests;
    // wrk's own count and duration; the server's count is checked against it.
    let secs = served as f64 / per_sec;
    seen.take_arrivals();
    Run {
        requests: served,
        events: served,
        bytes: seen.bytes.load(Ordering::Relaxed) - bytes,
        secs,
        cores: (cpu / secs, machine / secs),
        wrk_latency: Some((p50, p99)),
        sends_done: None,
    }
}

/// A runtime with one HTTP destination, `hook`, and a durable queue in `dir` (or, without
/// `dir`, the in-memory queue).
async fn runtime_for(port: u16, batched: bool, dir: Option<&std::path::Path>) -> Runtime {
    let mut config =
        HttpConfig::new(format!("http://127.0.0.1:{port}/hook")).with_max_in_flight(CONNECTIONS);
    let mut batch = BatchSettings::default();
    if batched {
        config = config.with_body(BodyMode::Ndjson);
        batch.max_events = Some(BATCH_EVENTS);
        batch.max_age = Some(BATCH_AGE);
    }
    let destination = HttpDestination::new("hook", config).expect("http config");
    let builder = match dir {
        Some(dir) => Runtime::builder().queue(QueueConfig {
            path: dir.to_path_buf(),
            ..QueueConfig::default()
        }),
        None => Runtime::builder().memory_queue(),
    };
    builder
        .destination_with(
            "hook",
            Arc::new(destination),
            DestinationSettings {
                batch,
                concurrency: Some(CONNECTIONS),
                ..DestinationSettings::default()
            },
        )
        .build()
        .await
        .expect("runtime")
}

/// Waits until the server has seen `target` events and the runtime counts `events`
/// delivered.
async fn wait_for(seen: &Seen, target: u64, runtime: &Runtime, events: usize, since: Instant) {
    loop {
        let snap = runtime.metrics().snapshot("hook").expect("metrics");
        assert_eq!(snap.dead_lettered, 0, "events were dead-lettered");
        if seen.events() >= target && snap.delivered >= events as u64 {
            return;
        }
        assert!(since.elapsed() < RUN_LIMIT, "delivery took too long");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One way of running the runtime against the server.
#[derive(Debug, Clone, Copy)]
struct Path {
    /// NDJSON batches instead of one request per event.
    batched: bool,
    /// The disk queue instead of the in-memory one.
    durable: bool,
    /// Concurrent tasks calling `send`.
    senders: usize,
    /// Events given as JSON text (`Event::from_json`, as a relay receives them) instead of
    /// `serde_json::Value`s.
    json: bool,
}

impl Path {
    const DURABLE: Self = Self {
        batched: false,
        durable: true,
        senders: SENDERS,
        json: false,
    };
    const BATCHED: Self = Self {
        batched: true,
        ..Self::DURABLE
    };
    const MEMORY: Self = Self {
        durable: false,
        ..Self::DURABLE
    };
    const MEMORY_JSON: Self = Self {
        json: true,
        ..Self::MEMORY
    };
    const DURABLE_JSON: Self = Self {
        json: true,
        ..Self::DURABLE
    };
    const MANY: Self = Self {
        senders: MANY_SENDERS,
        ..Self::DURABLE
    };
}

/// What a sender task hands to `send`.
enum Input {
    Value(Value),
    Json(Bytes),
}

/// `send` of `EVENTS` events from the path's sender tasks until the server has them all.
async fn run_throughput(port: u16, seen: &Seen, payloads: &[Value], path: Path) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime_for(port, path.batched, path.durable.then_some(dir.path())).await;
    let sender = runtime.sender();
    // The payloads are copied before the clock starts: the caller's cost is not measured.
    let shares = shares(path.senders, payloads, |payload| {
        if path.json {
            Input::Json(Bytes::from(payload.to_string()))
        } else {
            Input::Value(payload.clone())
        }
    });
    let mark = Mark::now(seen);
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for input in share {
                    match input {
                        Input::Value(payload) => sender.send("hook", payload).await,
                        Input::Json(text) => {
                            let event = Event::from_json(EventId::new(), Utc::now(), text)
                                .expect("valid JSON");
                            sender.send_event("hook", event).await
                        }
                    }
                    .expect("send");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("sender");
    }
    let sends_done = mark.start.elapsed().as_secs_f64();
    runtime.drain();
    wait_for(
        seen,
        mark.events + EVENTS as u64,
        &runtime,
        EVENTS,
        mark.start,
    )
    .await;
    let mut run = mark.run(seen);
    run.sends_done = Some(sends_done);
    runtime.shutdown().await.expect("shutdown");
    let arrivals = seen.take_arrivals();
    let keys: std::collections::HashSet<&str> = arrivals.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(run.events, EVENTS as u64, "the server saw every event once");
    assert_eq!(
        keys.len() as u64,
        run.requests,
        "one idempotency key per request"
    );
    run
}

/// The same events posted by `CONNECTIONS` tasks, each looping over reqwest's client with
/// bodies serialised before the clock: the client stack alone, without the runtime.
async fn run_reqwest(port: u16, seen: &Seen, payloads: &[Value]) -> Run {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/hook");
    let shares = shares(CONNECTIONS, payloads, |p| Bytes::from(p.to_string()));
    let mark = Mark::now(seen);
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for body in share {
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header(KEY_HEADER, EventId::new().to_string())
                        .body(body)
                        .send()
                        .await
                        .expect("post");
                    assert!(response.status().is_success());
                    response.bytes().await.expect("body");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("poster");
    }
    let run = mark.run(seen);
    seen.take_arrivals();
    run
}

/// `EVENTS` events split among `tasks` (event `i` goes to task `i % tasks`), each made
/// from its real payload by `make`.
fn shares<T>(tasks: usize, payloads: &[Value], make: impl Fn(&Value) -> T) -> Vec<Vec<T>> {
    (0..tasks)
        .map(|t| {
            (t..EVENTS)
                .step_by(tasks)
                .map(|i| make(&payloads[i % payloads.len()]))
                .collect()
        })
        .collect()
}

/// The server's counters and the CPU clocks when a run starts.
struct Mark {
    requests: u64,
    events: u64,
    bytes: u64,
    cpu: f64,
    machine: f64,
    start: Instant,
}

impl Mark {
    fn now(seen: &Seen) -> Self {
        Self {
            requests: seen.requests(),
            events: seen.events(),
            bytes: seen.bytes.load(Ordering::Relaxed),
            cpu: cpu_secs(),
            machine: machine_busy_secs(),
            start: Instant::now(),
        }
    }

    /// What the server saw and the cores spent since the mark, until now.
    fn run(&self, seen: &Seen) -> Run {
        let secs = self.start.elapsed().as_secs_f64();
        let (cpu, machine) = (cpu_secs() - self.cpu, machine_busy_secs() - self.machine);
        Run {
            requests: seen.requests() - self.requests,
            events: seen.events() - self.events,
            bytes: seen.bytes.load(Ordering::Relaxed) - self.bytes,
            secs,
            cores: (cpu / secs, machine / secs),
            wrk_latency: None,
            sends_done: None,
        }
    }
}

/// Runs one path (`durable`, `memory`, `json`, `many` or `reqwest`) four times and prints
/// its rates,
/// for a profiler to watch: `HTTP_BENCH_PROFILE=durable perf record … --bench`.
fn profile(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    seen: &Seen,
    payloads: &[Value],
    path: &str,
) {
    let chosen = match path {
        "durable" => Some(Path::DURABLE),
        "memory" => Some(Path::MEMORY),
        "json" => Some(Path::MEMORY_JSON),
        "many" => Some(Path::MANY),
        "reqwest" => None,
        other => {
            panic!("HTTP_BENCH_PROFILE={other}: expected durable, memory, json, many or reqwest")
        }
    };
    for _ in 0..4 {
        let run = match chosen {
            Some(chosen) => runtime.block_on(run_throughput(port, seen, payloads, chosen)),
            None => runtime.block_on(run_reqwest(port, seen, payloads)),
        };
        let sends = run.sends_done.map_or(String::new(), |s| {
            format!(", last send returned at {s:.2} s")
        });
        println!("{path}: {:.0} events/s{sends}", run.events_per_sec());
    }
}

/// Latency percentiles of one paced run.
struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    events: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One sender at `RATE` events per second; latency from just before `send` to the server's
/// receipt of the request that carried the event.
async fn run_latency(port: u16, seen: &Seen, payloads: &[Value], batched: bool) -> Latency {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime_for(port, batched, Some(dir.path())).await;
    let sender = runtime.sender();
    let events = seen.events();
    seen.take_arrivals();
    let start = tokio::time::Instant::now();
    let mut sent: Vec<(EventId, Instant)> = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..LATENCY_EVENTS {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / RATE);
        tokio::time::sleep_until(due).await;
        let payload = payloads[i % payloads.len()].clone();
        let at = Instant::now();
        let id = sender.send("hook", payload).await.expect("send");
        sent.push((id, at));
    }
    wait_for(
        seen,
        events + LATENCY_EVENTS as u64,
        &runtime,
        LATENCY_EVENTS,
        start.into_std(),
    )
    .await;
    runtime.shutdown().await.expect("shutdown");

    // A batched request's key is "{first id}-{last id}"; ids of one sender sort in order.
    let mut arrivals: Vec<(EventId, EventId, Instant)> = seen
        .take_arrivals()
        .into_iter()
        .map(|(key, at)| {
            let (first, last) = key.split_at_checked(36).unwrap_or((&key, ""));
            let first: EventId = first.parse().expect("an event id in the key");
            let last = last.trim_start_matches('-').parse().unwrap_or(first);
            (first, last, at)
        })
        .collect();
    arrivals.sort_by_key(|(first, _, _)| *first);
    let mut first_arrival: HashMap<EventId, Instant> = HashMap::new();
    for (first, _, at) in &arrivals {
        let slot = first_arrival.entry(*first).or_insert(*at);
        *slot = (*slot).min(*at);
    }
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(id, at)| {
            let i = arrivals.partition_point(|(first, _, _)| first <= id);
            let (first, last, _) = arrivals[i.checked_sub(1).expect("a request for the event")];
            assert!(
                first <= *id && *id <= last,
                "event {id} arrived in no request"
            );
            first_arrival[&first].saturating_duration_since(*at)
        })
        .collect();
    latencies.sort();
    Latency {
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().expect("latencies"),
        events: latencies.len(),
    }
}

/// The run with the most events per second.
fn best(runs: Vec<Run>) -> Run {
    runs.into_iter()
        .max_by(|a, b| a.events_per_sec().total_cmp(&b.events_per_sec()))
        .expect("a run")
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let payloads = payloads();
    let seen = Arc::new(Seen::default());
    let port = start_server(Arc::clone(&seen));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let load_before = load_average();
    // wrk and the runtime alternate, ROUNDS times; the best run of each counts.
    if let Ok(path) = std::env::var("HTTP_BENCH_PROFILE") {
        profile(&runtime, port, &seen, &payloads, &path);
        return;
    }
    let paths = [
        Path::DURABLE,
        Path::BATCHED,
        Path::MEMORY,
        Path::MEMORY_JSON,
        Path::DURABLE_JSON,
        Path::MANY,
    ];
    let (mut wrks, mut reqwests) = (Vec::new(), Vec::new());
    let mut runs: Vec<Vec<Run>> = paths.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        wrks.push(run_wrk(port, &seen, &payloads));
        runtime.block_on(async {
            reqwests.push(run_reqwest(port, &seen, &payloads).await);
            for (path, runs) in paths.iter().zip(&mut runs) {
                runs.push(run_throughput(port, &seen, &payloads, *path).await);
            }
        });
    }
    let (single_latency, batched_latency) = runtime.block_on(async {
        let single = run_latency(port, &seen, &payloads, false).await;
        let batched = run_latency(port, &seen, &payloads, true).await;
        (single, batched)
    });
    let spread = |runs: &[Run]| {
        let rates: Vec<f64> = runs.iter().map(Run::events_per_sec).collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        format!("{min:.0}–{max:.0}")
    };
    let names = [
        "`send` → server, one request per event".to_string(),
        format!("`send` → server, NDJSON batches of {BATCH_EVENTS}"),
        "in-memory queue instead: `send` → server, one request per event".to_string(),
        "in-memory queue, events given as JSON text (`Event::from_json`)".to_string(),
        "durable queue, events given as JSON text (`Event::from_json`)".to_string(),
        format!(
            "{MANY_SENDERS} senders instead of {SENDERS}: `send` → server, one request per event"
        ),
    ];
    let mut rows = vec![
        (
            format!("wrk -t1 -c{CONNECTIONS} -d{WRK_SECS}s, one average payload (ceiling)"),
            spread(&wrks),
            best(wrks),
        ),
        (
            format!("reqwest alone: {CONNECTIONS} tasks posting prepared bodies, no runtime"),
            spread(&reqwests),
            best(reqwests),
        ),
    ];
    for (name, runs) in names.into_iter().zip(runs) {
        rows.push((name, spread(&runs), best(runs)));
    }
    let ceiling_rate = rows[0].2.events_per_sec();
    let wrk_latency = rows[0].2.wrk_latency.map(|l| (rows[0].2.requests, l));

    println!(
        "1-minute load average before / after: {load_before} / {} (2 cores). Server: axum on \
         127.0.0.1 in the bench process, 2 threads of its own. {CONNECTIONS} requests in flight \
         everywhere. {EVENTS} events per runtime run, {SENDERS} concurrent senders (unless said), durable queue; best \
         of {ROUNDS} alternating runs. Cores: CPU time of the bench process (server and \
         runtime) and of the whole machine (wrk included), divided by wall time.\n",
        load_average()
    );
    println!(
        "| path | requests | events | body MB | seconds (last `send` returned) | cores: bench / \
         machine | requests/s | events/s (range of {ROUNDS} runs) | vs wrk (events/s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, spread, run) in &rows {
        println!(
            "| {name} | {} | {} | {:.1} | {:.2}{} | {:.2} / {:.2} | {:.0} | {:.0} ({spread}) | \
             {:.2}x |",
            run.requests,
            run.events,
            run.bytes as f64 / 1e6,
            run.secs,
            run.sends_done
                .map_or(String::new(), |s| format!(" ({s:.2})")),
            run.cores.0,
            run.cores.1,
            run.requests as f64 / run.secs,
            run.events_per_sec(),
            run.events_per_sec() / ceiling_rate,
        );
    }
    println!(
        "\nLatency from just before `send` to the server's receipt, one sender at {RATE} \
         events/s ({LATENCY_EVENTS} events); wrk's own request latency at full load for \
         reference.\n"
    );
    println!("| path | events | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, l) in [
        (
            "`send` → server, one request per event".to_string(),
            &single_latency,
        ),
        (
            format!(
                "`send` → server, NDJSON batches (max {BATCH_EVENTS} events, max_age {} ms)",
                BATCH_AGE.as_millis()
            ),
            &batched_latency,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            l.events,
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    if let Some((requests, (p50, p99))) = wrk_latency {
        println!(
            "| wrk, request latency at full load (ceiling run) | {} | {} | {} | — |",
            requests,
            ms(p50),
            ms(p99)
        );
    }
    // rows[2] is the default path: durable queue, one request per event.
    let ratio = rows[2].2.events_per_sec() / ceiling_rate;
    let p99 = single_latency.p99;
    println!(
        "\nunbatched / wrk: {ratio:.2}x (target ≥ 0.50x: {}); unbatched p99 at {RATE}/s: {} \
         (target < 50 ms: {}).",
        if ratio >= 0.5 { "met" } else { "missed" },
        ms(p99),
        if p99 < Duration::from_millis(50) {
            "met"
        } else {
            "missed"
        },
    );
}
