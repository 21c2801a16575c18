//! S3 end to end: events per second and MB per second from `send` to Parquet objects on the
//! local S3 server (moto), against a JSON-to-Parquet ceiling measured in the same run, and
//! peak memory while a queued backlog of 1x and 10x events drains at the same batch size.
//!
//! The ceiling is arrow-json's reader (schema inferred per batch) writing Snappy Parquet when
//! it can convert the events; it cannot infer a schema for the real GitHub payloads (a field
//! is an object in one event and a scalar in another), so destination-s3's own encoder,
//! called directly through `deliver` to a `memory://` store on events holding their JSON
//! text, is the ceiling then.
//!
//! Every phase runs in a child process of its own (this binary, run again with
//! `S3_BENCH_PHASE` set), so each peak resident set (`VmHWM`) is that phase's alone. The
//! bench creates its buckets on moto and deletes them afterwards. With the default
//! `mimalloc` feature the bench allocates as the `destinations` binary does; built without
//! it, the memory phases run with glibc's default allocator and with one malloc arena.
//!
//! ```text
//! scripts/bench.sh s3
//! # or, with the peer already started (scripts/peers/s3.sh):
//! DESTINATIONS_TEST_S3_ENDPOINT=http://127.0.0.1:47321 \
//!   cargo bench -p destinations --features full --bench s3
//! ```

mod support;

// The allocator of the `destinations` binary, so the figures are the binary's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use destination_core::{Batch, BatchSettings, Destination, Event};
use destination_s3::{S3Config, S3Destination};
use destinations::queue::QueueConfig;
use destinations::{DestinationSettings, Runtime};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{Value, json};
use support::{cpu_secs, load_average, machine_busy_secs, payloads};

/// Events per object in the throughput phases (about 5 MB of JSON).
const BATCH_EVENTS: usize = 500;
/// Events the encoder phase converts: twenty passes over the 420 real events.
const ENCODER_EVENTS: usize = 8_400;
/// Events of the end-to-end phase: long enough that filling the first batch and draining
/// the last are a small part of the run.
const E2E_EVENTS: usize = 21_000;
/// Throughput phases run this many times, alternately; the best run of each counts, and
/// each round's end-to-end run is also compared with that round's ceiling.
const ROUNDS: usize = 5;
/// Events per object in the memory phases.
const MEMORY_BATCH_EVENTS: usize = 250;
/// The 1x backlog of the memory phases (8.4 batches of 250).
const BASE_EVENTS: usize = 2_100;
/// The large backlog is this many times the 1x one.
const BACKLOG_FACTOR: usize = 10;
/// Concurrent tasks calling `send`.
const SENDERS: usize = 8;
/// Batches in flight (the runtime's default).
const CONCURRENCY: usize = 4;
/// Longest a phase may take before the bench gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(90);
const ENDPOINT_VAR: &str = "DESTINATIONS_TEST_S3_ENDPOINT";
const PHASE_VAR: &str = "S3_BENCH_PHASE";

/// A field of `/proc/self/status`, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The batches every phase converts: event `i` is real event `i % 420`.
fn batches(payloads: &[Value], events: usize) -> Vec<Vec<Value>> {
    let all: Vec<Value> = (0..events)
        .map(|i| payloads[i % payloads.len()].clone())
        .collect();
    all.chunks(BATCH_EVENTS).map(<[Value]>::to_vec).collect()
}

fn json_bytes(batches: &[Vec<Value>]) -> u64 {
    batches
        .iter()
        .flatten()
        .map(|v| serde_json::to_vec(v).expect("json").len() as u64)
        .sum()
}

/// arrow-json: infer each batch's schema, decode its NDJSON text, write Snappy Parquet.
fn arrow_convert(values: &[Value], ndjson: &[u8]) -> Result<(usize, u64), String> {
    let schema = arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
        .map_err(|e| format!("schema inference: {e}"))?;
    let schema = Arc::new(schema);
    let mut decoder = arrow_json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(1024)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).expect("writer");
    let mut rest = ndjson;
    let mut rows = 0;
    while !rest.is_empty() {
        let read = decoder.decode(rest).map_err(|e| format!("decode: {e}"))?;
        rest = &rest[read..];
        if let Some(batch) = decoder.flush().map_err(|e| format!("decode: {e}"))? {
            rows += batch.num_rows();
            writer.write(&batch).map_err(|e| e.to_string())?;
        }
    }
    if let Some(batch) = decoder.flush().map_err(|e| format!("decode: {e}"))? {
        rows += batch.num_rows();
        writer.write(&batch).map_err(|e| e.to_string())?;
    }
    let out = writer.into_inner().map_err(|e| e.to_string())?;
    Ok((rows, out.len() as u64))
}

/// The ceiling: arrow-json's conversion of the same batches on `threads` threads.
fn phase_arrow(threads: usize) -> Value {
    let batches = batches(&payloads(), ENCODER_EVENTS);
    let bytes = json_bytes(&batches);
    let texts: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| {
            let mut text = Vec::new();
            for v in b {
                serde_json::to_writer(&mut text, v).expect("json");
                text.push(b'\n');
            }
            text
        })
        .collect();
    let next = AtomicU64::new(0);
    let clock = Clock::start();
    let results: Vec<Result<(usize, u64), String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut rows, mut out) = (0, 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if i >= batches.len() {
                            return Ok((rows, out));
                        }
                        let (r, o) = arrow_convert(&batches[i], &texts[i])?;
                        rows += r;
                        out += o;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("thread"))
            .collect()
    });
    let timing = clock.stop();
    let mut rows = 0;
    let mut out = 0;
    for result in results {
        match result {
            Ok((r, o)) => {
                rows += r;
                out += o;
            }
            Err(error) => return json!({ "error": error }),
        }
    }
    let result = json!({
        "events": rows, "bytes": bytes, "out_bytes": out, "objects": batches.len(),
    });
    merge(result, timing)
}

/// destination-s3's own encoder and Parquet writer, called directly (`deliver` to an
/// in-memory object store): no queue, no network. Each event holds its JSON text, as the
/// events the runtime reads back from its queue do, so the encoder reads that text inside
/// the measured time, as any JSON-to-Parquet conversion must.
async fn phase_encoder(concurrency: usize) -> Value {
    let batches = batches(&payloads(), ENCODER_EVENTS);
    let bytes = json_bytes(&batches);
    let dest = Arc::new(
        S3Destination::new("memory", S3Config::new("memory:///bench")).expect("memory store"),
    );
    let ready: Vec<Batch> = batches
        .iter()
        .map(|b| {
            let events = b
                .iter()
                .map(|v| {
                    let text = serde_json::to_vec(v).expect("json");
                    Event::from_sent_json(Bytes::from(text)).expect("one-line JSON")
                })
                .collect();
            Batch::new(None, events)
        })
        .collect();
    let ready = Arc::new(ready);
    let next = Arc::new(AtomicU64::new(0));
    let clock = Clock::start();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (dest, next, ready) = (Arc::clone(&dest), Arc::clone(&next), Arc::clone(&ready));
            tokio::spawn(async move {
                while let Some(batch) = ready.get(next.fetch_add(1, Ordering::Relaxed) as usize) {
                    dest.deliver(batch).await.expect("deliver to memory");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let timing = clock.stop();
    let (objects, out, rows) = read_back(dest.store(), dest.root()).await;
    let result = json!({
        "events": rows, "bytes": bytes, "out_bytes": out, "objects": objects,
    });
    merge(result, timing)
}

/// Counts the objects under `root`, their bytes and their Parquet rows.
async fn read_back(
    store: Arc<dyn ObjectStore>,
    root: &object_store::path::Path,
) -> (usize, u64, i64) {
    let metas: Vec<_> = store.list(Some(root)).try_collect().await.expect("list");
    let mut rows = 0;
    let mut size = 0;
    for meta in &metas {
        let data: Bytes = store
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        size += data.len() as u64;
        let reader = SerializedFileReader::new(data).expect("parquet footer");
        rows += reader.metadata().file_metadata().num_rows();
    }
    (metas.len(), size, rows)
}

/// One raw HTTP/1.1 request to moto (which checks no signatures); returns the status.
fn moto_request(endpoint: &str, method: &str, target: &str) -> u16 {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the s3 peer");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A destination that never finishes a delivery: the queue keeps every event.
#[derive(Debug)]
struct Stalled;

#[async_trait::async_trait]
impl Destination for Stalled {
    fn name(&self) -> &str {
        "stalled"
    }

    async fn deliver(&self, _batch: &Batch) -> Result<(), destination_core::DeliveryError> {
        std::future::pending().await
    }
}

fn lake_settings(batch_events: usize) -> DestinationSettings {
    DestinationSettings {
        batch: BatchSettings {
            max_events: Some(batch_events),
            ..BatchSettings::default()
        },
        concurrency: Some(CONCURRENCY),
        ..DestinationSettings::default()
    }
}

fn queue_at(dir: &std::path::Path) -> QueueConfig {
    QueueConfig {
        path: dir.to_path_buf(),
        ..QueueConfig::default()
    }
}

/// The payloads of `events` events, one share per sender task, copied before any clock
/// starts: the caller's cost is not measured.
fn shares(payloads: &[Value], events: usize) -> Vec<Vec<Value>> {
    (0..SENDERS)
        .map(|s| {
            (s..events)
                .step_by(SENDERS)
                .map(|i| payloads[i % payloads.len()].clone())
                .collect()
        })
        .collect()
}

/// Calls `send` for every payload of `shares`, one task per share.
fn spawn_senders(
    sender: &destinations::Sender,
    shares: Shares,
) -> Vec<tokio::task::JoinHandle<()>> {
    let send = |sender: destinations::Sender, payload: Payload| async move {
        match payload {
            Payload::Value(value) => sender.send("lake", value).await,
            Payload::Text(text) => {
                let event = Event::from_sent_json(text).expect("one-line JSON");
                sender.send_event("lake", event).await
            }
        }
        .expect("send");
    };
    shares
        .0
        .into_iter()
        .map(|share| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for payload in share {
                    send(sender.clone(), payload).await;
                }
            })
        })
        .collect()
}

/// What one sender task hands to the runtime, per event.
enum Payload {
    /// A `serde_json::Value`, given to `Sender::send` (which serialises it).
    Value(Value),
    /// JSON text, read as the ingest API and `destinations send` read a client's text
    /// (`Event::from_sent_json`, which checks it) and given to `Sender::send_event`.
    Text(Bytes),
}

/// The payloads of every sender task.
struct Shares(Vec<Vec<Payload>>);

impl Shares {
    fn new(shares: Vec<Vec<Value>>, text: bool) -> Self {
        let payload = |value: Value| {
            if text {
                Payload::Text(Bytes::from(serde_json::to_vec(&value).expect("json")))
            } else {
                Payload::Value(value)
            }
        };
        Self(
            shares
                .into_iter()
                .map(|share| share.into_iter().map(payload).collect())
                .collect(),
        )
    }
}

/// An S3 destination writing to a new bucket on moto.
fn moto_destination(tag: &str) -> (Arc<S3Destination>, String) {
    let endpoint = std::env::var(ENDPOINT_VAR).expect("endpoint");
    let bucket = format!("bench-s3-{}-{tag}", std::process::id());
    assert_eq!(moto_request(&endpoint, "PUT", &format!("/{bucket}")), 200);
    let config = S3Config::new(format!("s3://{bucket}/events"))
        .with_endpoint(&endpoint, true)
        .with_region("us-east-1")
        .with_credentials("bench-key", "bench-secret");
    let dest = S3Destination::new("lake", config).expect("s3 config");
    (Arc::new(dest), bucket)
}

/// Reads back what was written, then empties and deletes the bucket.
async fn read_back_and_remove(dest: &S3Destination, bucket: &str, result: &mut Value) {
    let store = dest.store();
    let (objects, out, rows) = read_back(Arc::clone(&store), dest.root()).await;
    let metas: Vec<_> = store.list(None).try_collect().await.expect("list");
    for meta in metas {
        store.delete(&meta.location).await.expect("delete");
    }
    let endpoint = std::env::var(ENDPOINT_VAR).expect("endpoint");
    assert_eq!(
        moto_request(&endpoint, "DELETE", &format!("/{bucket}")),
        204
    );
    result["events"] = json!(rows);
    result["objects"] = json!(objects);
    result["out_bytes"] = json!(out);
}

/// What [`wait_delivered`] saw.
struct Watched {
    /// The largest number of events queued and not yet delivered.
    max_backlog: u64,
    /// The largest resident set (KiB) seen by the time 25, 50, 75 and 100 % were delivered.
    rss_by_quarter: [u64; 4],
}

/// Waits until `events` events are delivered, sampling the backlog and the resident set.
async fn wait_delivered(
    runtime: &Runtime,
    events: usize,
    start: Instant,
    mut senders: Option<Vec<tokio::task::JoinHandle<()>>>,
) -> Watched {
    let mut watched = Watched {
        max_backlog: 0,
        rss_by_quarter: [0; 4],
    };
    let mut rss_max = 0;
    loop {
        let snap = runtime.metrics().snapshot("lake").expect("metrics");
        watched.max_backlog = watched
            .max_backlog
            .max(snap.queued.saturating_sub(snap.delivered));
        assert_eq!(snap.dead_lettered, 0, "events were dead-lettered");
        rss_max = rss_max.max(proc_status_kib("VmRSS:"));
        let quarter = (snap.delivered as usize * 4 / events).min(4);
        for q in &mut watched.rss_by_quarter[..quarter] {
            if *q == 0 {
                *q = rss_max;
            }
        }
        if snap.delivered >= events as u64 {
            return watched;
        }
        if senders
            .as_ref()
            .is_none_or(|t| t.iter().all(|t| t.is_finished()))
        {
            for task in senders.take().unwrap_or_default() {
                task.await.expect("sender task");
            }
            runtime.drain();
        }
        assert!(start.elapsed() < PHASE_LIMIT, "delivery took too long");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn total_bytes(payloads: &[Value], events: usize) -> u64 {
    let sizes: Vec<u64> = payloads
        .iter()
        .map(|v| serde_json::to_vec(v).expect("json").len() as u64)
        .collect();
    (0..events).map(|i| sizes[i % sizes.len()]).sum()
}

/// `send` to Parquet objects on moto, through a new durable queue, until all are delivered;
/// with `text`, the senders hand over JSON text instead of `Value`s.
async fn phase_end_to_end(events: usize, text: bool) -> Value {
    let payloads = payloads();
    let (dest, bucket) = moto_destination("e2e");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::builder()
        .queue(queue_at(dir.path()))
        .destination_with(
            "lake",
            Arc::<S3Destination>::clone(&dest),
            lake_settings(BATCH_EVENTS),
        )
        .build()
        .await
        .expect("runtime");
    let shares = Shares::new(shares(&payloads, events), text);
    let baseline = proc_status_kib("VmRSS:");
    let clock = Clock::start();
    let senders = spawn_senders(&runtime.sender(), shares);
    let watched = wait_delivered(&runtime, events, clock.started, Some(senders)).await;
    let timing = clock.stop();
    let peak = proc_status_kib("VmHWM:");
    runtime.shutdown().await.expect("shutdown");
    let result = json!({
        "bytes": total_bytes(&payloads, events), "peak_kib": peak, "baseline_kib": baseline,
        "max_backlog": watched.max_backlog, "rss_by_quarter": watched.rss_by_quarter,
    });
    let mut result = merge(result, timing);
    read_back_and_remove(&dest, &bucket, &mut result).await;
    result
}

/// Queues `events` events in the queue at `dir` while nothing is delivered, then ends the
/// process at once, as a crash would: every event `send` returned for is on disk.
///
/// (A graceful `shutdown` would hang here: the worker waits for a concurrency permit that
/// the stalled deliveries hold, without watching for the stop.)
async fn phase_fill(events: usize, batch_events: usize, dir: &str) -> ! {
    let payloads = payloads();
    let runtime = Runtime::builder()
        .queue(queue_at(dir.as_ref()))
        .destination_with("lake", Arc::new(Stalled), lake_settings(batch_events))
        .build()
        .await
        .expect("runtime");
    let shares = Shares::new(shares(&payloads, events), false);
    let clock = Clock::start();
    for task in spawn_senders(&runtime.sender(), shares) {
        task.await.expect("sender task");
    }
    let timing = clock.stop();
    let result = json!({
        "events": events, "bytes": total_bytes(&payloads, events),
        "peak_kib": proc_status_kib("VmHWM:"),
    });
    let result = merge(result, timing);
    println!("RESULT {result}");
    std::process::exit(0)
}

/// Delivers the backlog queued at `dir` to moto; the peak is measured from after start-up.
async fn phase_drain(events: usize, batch_events: usize, dir: &str) -> Value {
    let payloads = payloads();
    let (dest, bucket) = moto_destination(&format!("drain{events}"));
    let before = proc_status_kib("VmRSS:");
    let runtime = Runtime::builder()
        .queue(queue_at(dir.as_ref()))
        .destination_with(
            "lake",
            Arc::<S3Destination>::clone(&dest),
            lake_settings(batch_events),
        )
        .build()
        .await
        .expect("runtime");
    let open_peak = proc_status_kib("VmHWM:");
    // Resets VmHWM to the current resident set (Linux 4.0 and later).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let baseline = proc_status_kib("VmRSS:");
    let clock = Clock::start();
    let watched = wait_delivered(&runtime, events, clock.started, None).await;
    let timing = clock.stop();
    let peak = proc_status_kib("VmHWM:");
    runtime.shutdown().await.expect("shutdown");
    let result = json!({
        "bytes": total_bytes(&payloads, events),
        "peak_kib": if reset { peak } else { peak.max(open_peak) },
        "baseline_kib": baseline, "before_open_kib": before, "open_peak_kib": open_peak,
        "max_backlog": watched.max_backlog, "rss_by_quarter": watched.rss_by_quarter,
    });
    let mut result = merge(result, timing);
    read_back_and_remove(&dest, &bucket, &mut result).await;
    result
}

/// Wall time, this process's CPU time and the machine's busy time of a measured span.
struct Clock {
    started: Instant,
    cpu: f64,
    machine: f64,
}

impl Clock {
    fn start() -> Self {
        Self {
            cpu: cpu_secs(),
            machine: machine_busy_secs(),
            started: Instant::now(),
        }
    }

    /// `secs`, `cpu` (seconds of this process) and `machine` (busy seconds of all cores).
    fn stop(&self) -> Value {
        let secs = self.started.elapsed().as_secs_f64();
        json!({
            "secs": secs,
            "cpu": cpu_secs() - self.cpu,
            "machine": machine_busy_secs() - self.machine,
        })
    }
}

/// Adds the fields of `more` to `result`.
fn merge(mut result: Value, more: Value) -> Value {
    if let (Some(r), Value::Object(m)) = (result.as_object_mut(), more) {
        r.extend(m);
    }
    result
}

fn run_phase(phase: &str) -> Value {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let parts: Vec<&str> = phase.split(':').collect();
    let n = |i: usize| -> usize { parts[i].parse().expect("a number") };
    let mut result = match parts[0] {
        "arrow" => phase_arrow(n(1)),
        "encoder" => runtime.block_on(phase_encoder(n(1))),
        "e2e" => runtime.block_on(phase_end_to_end(n(1), parts.get(2) == Some(&"text"))),
        "fill" => runtime.block_on(phase_fill(n(1), n(2), parts[3])),
        "drain" => runtime.block_on(phase_drain(n(1), n(2), parts[3])),
        _ => panic!("unknown phase {phase}"),
    };
    if result.get("peak_kib").is_none() {
        result["peak_kib"] = json!(proc_status_kib("VmHWM:"));
    }
    result
}

/// Runs a phase in a child process and returns what it printed.
fn child(phase: &str) -> Value {
    child_with(phase, &[])
}

/// Runs a phase in a child process with more environment variables.
fn child_with(phase: &str, env: &[(&str, &str)]) -> Value {
    eprintln!("s3 bench: {phase} {env:?}");
    let exe = std::env::current_exe().expect("current exe");
    let output = std::process::Command::new(exe)
        .env(PHASE_VAR, phase)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run phase");
    assert!(output.status.success(), "phase {phase} failed");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("phase result");
    serde_json::from_str(line).expect("result json")
}

fn f(r: &Value, key: &str) -> f64 {
    let value = match key.parse::<usize>() {
        Ok(i) => &r[i],
        Err(_) => &r[key],
    };
    value.as_f64().unwrap_or(f64::NAN)
}

fn eps(r: &Value) -> f64 {
    f(r, "events") / f(r, "secs")
}

fn mib(r: &Value, key: &str) -> f64 {
    f(r, key) / 1024.0
}

/// Copies a queue folder (its files and subfolders), without its lock file.
fn copy_queue(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read queue dir") {
        let entry = entry.expect("entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("type").is_dir() {
            copy_queue(&src, &dst);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// The run with the most events per second.
fn best(runs: Vec<Value>) -> Value {
    runs.into_iter()
        .max_by(|a, b| eps(a).total_cmp(&eps(b)))
        .expect("a run")
}

fn print_throughput(rows: &[(String, &Value)], ceiling: &Value) {
    println!(
        "| path | events | JSON MB | objects | Parquet MB | seconds | cores: bench / machine | \
         events/s | JSON MB/s | vs ceiling |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in rows {
        if r.get("error").is_some() {
            println!("| {name} | — | — | — | — | — | — | failed | — | — |");
            continue;
        }
        let objects = r.get("objects").map_or("—".to_string(), Value::to_string);
        let out = r.get("out_bytes").map_or("—".to_string(), |_| {
            format!("{:.1}", f(r, "out_bytes") / 1e6)
        });
        println!(
            "| {name} | {} | {:.1} | {objects} | {out} | {:.2} | {:.2} / {:.2} | {:.0} | {:.1} | \
             {:.2}x |",
            f(r, "events"),
            f(r, "bytes") / 1e6,
            f(r, "secs"),
            f(r, "cpu") / f(r, "secs"),
            f(r, "machine") / f(r, "secs"),
            eps(r),
            f(r, "bytes") / 1e6 / f(r, "secs"),
            eps(r) / eps(ceiling),
        );
    }
}

fn print_memory(rows: &[(&str, &Value)]) {
    println!(
        "| allocator | backlog | events | resident after opening | peak while delivering | \
         peak − resident | peak by 25 / 50 / 75 % delivered | peak while opening | seconds |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in rows {
        let quarters: Vec<String> = (0..3)
            .map(|q| format!("{:.0}", f(&r["rss_by_quarter"], &q.to_string()) / 1024.0))
            .collect();
        println!(
            "| {name} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {} MiB | {:.0} MiB | {:.1} |",
            f(r, "events"),
            mib(r, "baseline_kib"),
            mib(r, "peak_kib"),
            mib(r, "peak_kib") - mib(r, "baseline_kib"),
            quarters.join(" / "),
            mib(r, "open_peak_kib"),
            f(r, "secs"),
        );
    }
}

fn growth(one: &Value, ten: &Value) -> f64 {
    (f(ten, "peak_kib") - f(ten, "baseline_kib")) / (f(one, "peak_kib") - f(one, "baseline_kib"))
}

fn main() {
    if let Ok(phase) = std::env::var(PHASE_VAR) {
        println!("RESULT {}", run_phase(&phase));
        return;
    }
    if destination_core::testing::peer(ENDPOINT_VAR, "s3 bench").is_none() {
        return;
    }
    let load_before = load_average();

    // Throughput: the ceiling and the end-to-end run alternate, best of ROUNDS each. The
    // first process of a run pays more for fresh memory than later ones (the kernel's, not
    // the process's, work), so one ceiling run is made and discarded first.
    let arrow = child("arrow:2");
    child("encoder:2");
    let (mut encoders, mut e2es, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        encoders.push(child("encoder:2"));
        e2es.push(child(&format!("e2e:{E2E_EVENTS}")));
        texts.push(child(&format!("e2e:{E2E_EVENTS}:text")));
    }
    let mut paired: Vec<f64> = e2es
        .iter()
        .zip(&encoders)
        .map(|(e2e, encoder)| eps(e2e) / eps(encoder))
        .collect();
    paired.sort_by(f64::total_cmp);
    let (encoder, e2e, text) = (best(encoders), best(e2es), best(texts));

    // Memory: the same queued backlogs drained with the default allocator and, under
    // glibc, with one malloc arena.
    let allocators: &[(&str, &[(&str, &str)])] = if cfg!(feature = "mimalloc") {
        &[("mimalloc (the binary's)", &[])]
    } else {
        &[
            ("glibc default", &[]),
            ("MALLOC_ARENA_MAX=1", &[("MALLOC_ARENA_MAX", "1")]),
        ]
    };
    let large = BASE_EVENTS * BACKLOG_FACTOR;
    let queues = tempfile::tempdir().expect("tempdir");
    let mut drains = Vec::new();
    let mut fills = Vec::new();
    for events in [BASE_EVENTS, large] {
        let dir = queues.path().join(format!("q{events}"));
        let copy = queues.path().join(format!("q{events}-copy"));
        fills.push(child(&format!(
            "fill:{events}:{MEMORY_BATCH_EVENTS}:{}",
            dir.display()
        )));
        for (_, env) in allocators {
            // Each allocator drains its own copy of the same backlog.
            copy_queue(&dir, &copy);
            let phase = format!("drain:{events}:{MEMORY_BATCH_EVENTS}:{}", copy.display());
            drains.push(child_with(&phase, env));
            std::fs::remove_dir_all(&copy).expect("remove queue");
        }
    }
    let load_after = load_average();

    let arrow_ok = arrow.get("error").is_none();
    let ceiling = if arrow_ok { &arrow } else { &encoder };
    println!(
        "1-minute load average before / after: {load_before} / {load_after} (2 cores). \
         Events: the 420 real GitHub webhook payloads repeated (10 KB of JSON on average). \
         Ceiling: {}. Cores: CPU time of the measured process, and of the whole machine \
         (moto, other work), divided by wall time.\n",
        if arrow_ok {
            "arrow-json, 2 threads"
        } else {
            "destination-s3's encoder, 2 tasks"
        }
    );
    if let Some(error) = arrow.get("error").and_then(Value::as_str) {
        let short: String = error.chars().take(150).collect();
        println!("arrow-json could not convert the real events: {short}…\n");
    }
    println!(
        "Throughput: {BATCH_EVENTS} events per Parquet object (Snappy), {SENDERS} concurrent \
         senders, {CONCURRENCY} batches in flight, durable queue; best of {ROUNDS} alternating \
         runs for rows 2 to 4 (after one discarded ceiling run), one run for the last two \
         ({large} events, {MEMORY_BATCH_EVENTS} per object).\n"
    );
    print_throughput(
        &[
            ("arrow-json → Parquet in memory, 2 threads".into(), &arrow),
            (
                "JSON text → destination-s3 encoder → `memory://`, 2 tasks (no queue, no network)"
                    .into(),
                &encoder,
            ),
            ("`send` → objects on moto".into(), &e2e),
            (
                "`send_event` of JSON text → objects on moto (as the ingest API sends)".into(),
                &text,
            ),
            ("`send` only, into the durable queue".into(), &fills[1]),
            (
                "queued backlog → objects on moto".into(),
                &drains[allocators.len()],
            ),
        ],
        ceiling,
    );
    println!(
        "\nMemory: queued backlogs of {BASE_EVENTS} (1x) and {large} (10x) events delivered at \
         {MEMORY_BATCH_EVENTS} events per object, each in its own process. Peaks are VmHWM, \
         reset after the queue is opened; the peak while opening (recovering the queue) is \
         shown apart.\n"
    );
    // `drains` holds the 1x backlog under each allocator, then the 10x one.
    let n = allocators.len();
    let labels: Vec<String> = ["1x", "10x"]
        .iter()
        .flat_map(|size| {
            allocators
                .iter()
                .map(move |(name, _)| format!("{name}, {size}"))
        })
        .collect();
    let rows: Vec<(&str, &Value)> = labels.iter().map(String::as_str).zip(&drains).collect();
    print_memory(&rows);
    let ratio = eps(&e2e) / eps(ceiling);
    let listed: Vec<String> = paired.iter().map(|r| format!("{r:.2}x")).collect();
    println!(
        "\n`send` → objects / ceiling, best against best: {ratio:.2}x (target ≥ 0.50x: {}); \
         each round against its own ceiling: {} (median {:.2}x). With JSON text handed to \
         `send_event`, best against best: {:.2}x.",
        if ratio >= 0.5 { "met" } else { "missed" },
        listed.join(", "),
        paired[paired.len() / 2],
        eps(&text) / eps(ceiling),
    );
    for (i, (name, _)) in allocators.iter().enumerate() {
        println!(
            "Delivery peak above resident, 10x / 1x backlog, {name}: {:.2}x.",
            growth(&drains[i], &drains[n + i])
        );
    }
}
