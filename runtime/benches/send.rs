//! `send` latency and sustained throughput to a no-op destination: the durable segment log
//! against the in-memory queue and a bare Tokio channel, side by side in one run.
//!
//! ```text
//! cargo bench -p destinations --bench send
//! ```

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use destination_core::{Batch, DeliveryError, Destination, Event};
use destinations::queue::QueueConfig;
use destinations::{DestinationSettings, Runtime};
use serde_json::Value;
use support::payloads;

/// Counts what it receives and does nothing else.
#[derive(Debug, Default)]
struct NoOp(AtomicU64);

#[async_trait]
impl Destination for NoOp {
    fn name(&self) -> &str {
        "noop"
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct Figures {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The throughput phase's payloads, one list per sender.
fn split(payloads: &[Value]) -> Vec<Vec<Value>> {
    (0..SENDERS)
        .map(|s| {
            (0..THROUGHPUT_EVENTS / SENDERS)
                .map(|i| payloads[(s + i * SENDERS) % payloads.len()].clone())
                .collect()
        })
        .collect()
}

const LATENCY_EVENTS: usize = 2_000;
const THROUGHPUT_EVENTS: usize = 40_000;
const SENDERS: usize = 32;

async fn measure_runtime(name: &'static str, durable: bool, payloads: &[Value]) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let noop = Arc::new(NoOp::default());
    let mut builder = Runtime::builder();
    builder = if durable {
        builder.queue(QueueConfig {
            path: dir.path().join("queue"),
            ..QueueConfig::default()
        })
    } else {
        builder.memory_queue()
    };
    let runtime = builder
        .destination_with(
            "noop",
            Arc::<NoOp>::clone(&noop),
            DestinationSettings::default(),
        )
        .build()
        .await
        .expect("runtime");
    let sender = runtime.sender();

    // Latency: one sender, one event at a time.
    let mut latencies = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..LATENCY_EVENTS {
        let payload = payloads[i % payloads.len()].clone();
        let start = Instant::now();
        sender.send("noop", payload).await.expect("send");
        latencies.push(start.elapsed());
    }
    latencies.sort();

    // Throughput: many concurrent senders, until the no-op destination has every event.
    // The payloads are cloned before the clock starts.
    let work = split(payloads);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in work {
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            for payload in mine {
                sender.send("noop", payload).await.expect("send");
            }
        }));
    }
    for task in tasks {
        task.await.expect("sender task");
    }
    let target = (LATENCY_EVENTS + THROUGHPUT_EVENTS / SENDERS * SENDERS) as u64;
    while noop.0.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    runtime.shutdown().await.expect("shutdown");
    Figures {
        name,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        throughput: (THROUGHPUT_EVENTS / SENDERS * SENDERS) as f64 / elapsed.as_secs_f64(),
    }
}

async fn measure_channel(payloads: &[Value]) -> Figures {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(10_000);
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let mut latencies = Vec::with_capacity(LATENCY_EVENTS);
    for i in 0..LATENCY_EVENTS {
        let payload = payloads[i % payloads.len()].clone();
        let start = Instant::now();
        tx.send(Event::new(payload)).await.expect("send");
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let work = split(payloads);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in work {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for payload in mine {
                tx.send(Event::new(payload)).await.expect("send");
            }
        }));
    }
    for task in tasks {
        task.await.expect("sender task");
    }
    drop(tx);
    consumer.await.expect("consumer");
    let elapsed = start.elapsed();
    Figures {
        name: "tokio mpsc channel (no queue, no batching)",
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        throughput: (THROUGHPUT_EVENTS / SENDERS * SENDERS) as f64 / elapsed.as_secs_f64(),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let payloads = payloads();
    let figures = runtime.block_on(async {
        vec![
            measure_runtime(
                "durable segment log (fsync per group commit)",
                true,
                &payloads,
            )
            .await,
            measure_runtime("in-memory queue", false, &payloads).await,
            measure_channel(&payloads).await,
        ]
    });
    let base = &figures[0];
    println!(
        "send latency over {LATENCY_EVENTS} sequential sends; throughput of {THROUGHPUT_EVENTS} \
         events from {SENDERS} concurrent senders to a no-op destination (delivered)\n"
    );
    println!("| queue | p50 | p99 | events/s | throughput vs durable |");
    println!("| --- | --- | --- | --- | --- |");
    for f in &figures {
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.0} | {:.2}x |",
            f.name,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.throughput,
            f.throughput / base.throughput
        );
    }
}
