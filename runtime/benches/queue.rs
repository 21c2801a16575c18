//! Why the embedded queue is a segment log with group commit: durable appends measured side
//! by side in one run against redb (a well-kept embedded database, one durable write
//! transaction per append) and a plain file synced after every append.
//!
//! ```text
//! cargo bench -p destinations --bench queue
//! ```

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use destination_core::Event;
use destinations::queue::{Queue, QueueConfig, SegmentLog};
use serde_json::Value;

const SEQUENTIAL: usize = 500;
const CONCURRENT: usize = 4_000;
const APPENDERS: usize = 32;

fn events() -> Vec<Event> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/github-webhooks.ndjson"
    );
    std::fs::read_to_string(path)
        .expect("testdata")
        .lines()
        .map(|l| Event::new(serde_json::from_str::<Value>(l).expect("json")))
        .collect()
}

/// One durable append of one event; returns once it is on disk.
trait Store: Send + Sync + 'static {
    fn append(&self, event: &Event);
}

struct Log {
    log: SegmentLog,
    rt: tokio::runtime::Handle,
}

impl Store for Log {
    fn append(&self, event: &Event) {
        let entry = vec![("bench".to_string(), event.clone())];
        self.rt.block_on(self.log.append(entry)).expect("append");
    }
}

const TABLE: redb::TableDefinition<'_, u128, &[u8]> = redb::TableDefinition::new("events");

struct Redb(redb::Database);

impl Store for Redb {
    fn append(&self, event: &Event) {
        let bytes = serde_json::to_vec(event).expect("json");
        let txn = self.0.begin_write().expect("begin");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            table
                .insert(event.id.as_uuid().as_u128(), bytes.as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
}

struct SyncedFile(Mutex<File>);

impl Store for SyncedFile {
    fn append(&self, event: &Event) {
        let mut bytes = serde_json::to_vec(event).expect("json");
        bytes.push(b'\n');
        let mut file = self.0.lock().expect("lock");
        file.write_all(&bytes).expect("write");
        file.sync_data().expect("sync");
    }
}

struct Figures {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

fn measure(name: &'static str, store: Arc<dyn Store>, events: &[Event]) -> Figures {
    let mut latencies: Vec<Duration> = events
        .iter()
        .cycle()
        .take(SEQUENTIAL)
        .map(|event| {
            let start = Instant::now();
            store.append(event);
            start.elapsed()
        })
        .collect();
    latencies.sort();

    let per = CONCURRENT / APPENDERS;
    let start = Instant::now();
    let threads: Vec<_> = (0..APPENDERS)
        .map(|t| {
            let store = Arc::clone(&store);
            let mine: Vec<Event> = (0..per)
                .map(|i| events[(t + i * APPENDERS) % events.len()].clone())
                .collect();
            std::thread::spawn(move || {
                for event in &mine {
                    store.append(event);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("appender");
    }
    let elapsed = start.elapsed();
    Figures {
        name,
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        throughput: (per * APPENDERS) as f64 / elapsed.as_secs_f64(),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let events = events();
    let dir = tempfile::tempdir().expect("tempdir");

    let log = rt
        .block_on(SegmentLog::open(QueueConfig {
            path: dir.path().join("log"),
            ..QueueConfig::default()
        }))
        .expect("open log");
    let figures = vec![
        measure(
            "segment log, group commit (ours)",
            Arc::new(Log {
                log,
                rt: rt.handle().clone(),
            }),
            &events,
        ),
        measure(
            "redb, one durable transaction per append",
            Arc::new(Redb(
                redb::Database::create(dir.path().join("redb")).expect("redb"),
            )),
            &events,
        ),
        measure(
            "plain file, write + fdatasync per append",
            Arc::new(SyncedFile(Mutex::new(
                File::create(dir.path().join("file")).expect("file"),
            ))),
            &events,
        ),
    ];

    let base = figures[0].throughput;
    println!(
        "durable appends of one real GitHub webhook event each: latency of {SEQUENTIAL} \
         sequential appends; throughput of {CONCURRENT} appends from {APPENDERS} threads\n"
    );
    println!("| store | p50 | p99 | appends/s | throughput vs segment log |");
    println!("| --- | --- | --- | --- | --- |");
    for f in &figures {
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} | {:.2}x |",
            f.name,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.throughput,
            f.throughput / base
        );
    }
}
