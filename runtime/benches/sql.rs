//! SQL end to end: rows per second into PostgreSQL from `send` to committed rows, against
//! `psql`'s `\copy` of the same rows into a table of the same shape in the same run (the
//! ceiling).
//!
//! The end-to-end run sends the real GitHub webhook payloads through the durable queue to a
//! `SqlDestination` (product defaults: batches of up to 1,000 events, 4 batches in flight,
//! 4 connections); it ends when the runtime counts every event delivered, that is committed.
//! The rows it wrote are then exported (untimed) and loaded again with `psql -c '\copy …'`
//! into `CREATE TABLE … (LIKE … INCLUDING ALL)`: the same columns, types, primary key and
//! index. Every table has a name of its own and is dropped at the end.
//!
//! ```text
//! scripts/bench.sh sql
//! # or, with PostgreSQL started by scripts/peers/sql.sh:
//! DESTINATIONS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p destinations --features full --bench sql
//! ```

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use destination_sql::{SqlConfig, SqlDestination};
use destinations::queue::QueueConfig;
use destinations::{DestinationSettings, Runtime};
use serde_json::Value;
use support::{cpu_secs, load_average, machine_busy_secs, payloads};

/// Rows of each run: the 420 real payloads, repeated.
const EVENTS: usize = 20_000;
/// The end-to-end run and the copies alternate this many times; the best of each counts.
const ROUNDS: usize = 3;
/// Concurrent tasks calling `send`.
const SENDERS: usize = 8;
/// Longest a run may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(60);
const URL_VAR: &str = "DESTINATIONS_TEST_POSTGRES_URL";

/// Runs one `psql` command against `url` and returns its output, trimmed.
fn psql(url: &str, command: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            command,
        ])
        .output()
        .expect("psql is not installed (scripts/peers/sql.sh installs PostgreSQL)");
    assert!(
        output.status.success(),
        "psql -c {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn count(url: &str, table: &str) -> u64 {
    psql(url, &format!("SELECT count(*) FROM {table}"))
        .parse()
        .expect("a count")
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Run {
    rows: u64,
    secs: f64,
    /// Cores busy in this process, and in the whole machine (PostgreSQL included).
    cores: (f64, f64),
}

impl Run {
    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// Measures `f`: wall time, this process's CPU and the machine's.
async fn measure<F: Future<Output = ()>>(rows: u64, f: F) -> Run {
    let (cpu, machine) = (cpu_secs(), machine_busy_secs());
    let start = Instant::now();
    f.await;
    let secs = start.elapsed().as_secs_f64();
    let (cpu, machine) = (cpu_secs() - cpu, machine_busy_secs() - machine);
    Run {
        rows,
        secs,
        cores: (cpu / secs, machine / secs),
    }
}

/// `send` of `EVENTS` events into `table` until the runtime counts them all committed.
async fn run_end_to_end(url: &str, table: &str, payloads: &[Value]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let destination = SqlDestination::new("warehouse", SqlConfig::new(url).with_table(table))
        .expect("sql config");
    let runtime = Runtime::builder()
        .queue(QueueConfig {
            path: dir.path().to_path_buf(),
            ..QueueConfig::default()
        })
        .destination_with(
            "warehouse",
            Arc::new(destination),
            DestinationSettings::default(),
        )
        .build()
        .await
        .expect("runtime");
    let sender = runtime.sender();
    // The payloads are copied before the clock starts: the caller's cost is not measured.
    let shares: Vec<Vec<Value>> = (0..SENDERS)
        .map(|s| {
            (s..EVENTS)
                .step_by(SENDERS)
                .map(|i| payloads[i % payloads.len()].clone())
                .collect()
        })
        .collect();
    let run = measure(EVENTS as u64, async {
        let start = Instant::now();
        let tasks: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let sender = sender.clone();
                tokio::spawn(async move {
                    for payload in share {
                        sender.send("warehouse", payload).await.expect("send");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("sender");
        }
        // Flush the last, partial batch as soon as the queue is empty.
        runtime.drain();
        loop {
            let snap = runtime.metrics().snapshot("warehouse").expect("metrics");
            assert_eq!(snap.dead_lettered, 0, "events were dead-lettered");
            if snap.delivered >= EVENTS as u64 {
                break;
            }
            assert!(start.elapsed() < RUN_LIMIT, "delivery took too long");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    runtime.shutdown().await.expect("shutdown");
    assert_eq!(count(url, table), EVENTS as u64, "every event is one row");
    run
}

/// `psql -c '\copy TABLE FROM FILE'` into a new table shaped like `like`, one `psql` per
/// file, all at once.
async fn run_copy(url: &str, table: &str, like: &str, files: &[std::path::PathBuf]) -> Run {
    psql(
        url,
        &format!("CREATE TABLE {table} (LIKE {like} INCLUDING ALL)"),
    );
    let run = measure(EVENTS as u64, async {
        let children: Vec<_> = files
            .iter()
            .map(|file| {
                let command = format!("\\copy {table} FROM '{}'", file.display());
                Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", &command])
                    .spawn()
                    .expect("psql")
            })
            .collect();
        for mut child in children {
            assert!(child.wait().expect("psql").success(), "psql \\copy failed");
        }
    })
    .await;
    assert_eq!(count(url, table), EVENTS as u64, "every row copied");
    run
}

/// Splits a COPY text file (one row per line) into `parts` files of about equal rows.
fn split(file: &std::path::Path, parts: usize) -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string(file).expect("copy file");
    let lines: Vec<&str> = text.lines().collect();
    let per = lines.len().div_ceil(parts);
    lines
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let path = file.with_extension(format!("part{i}"));
            std::fs::write(&path, chunk.join("\n") + "\n").expect("write part");
            path
        })
        .collect()
}

fn main() {
    let Some(url) = destination_core::testing::peer(URL_VAR, "sql bench") else {
        return;
    };
    let payloads = payloads();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let load_before = load_average();
    let prefix = format!("bench_sql_{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tables = Vec::new();
    let (mut sends, mut copies, mut parallel) = (Vec::new(), Vec::new(), Vec::new());
    let mut files: Option<(std::path::PathBuf, Vec<std::path::PathBuf>)> = None;
    for round in 0..ROUNDS {
        let table = format!("{prefix}_send_{round}");
        tables.push(table.clone());
        sends.push(runtime.block_on(run_end_to_end(&url, &table, &payloads)));
        // The rows the destination wrote, exported once (untimed) for the copies.
        let (whole, halves) = files.get_or_insert_with(|| {
            let file = dir.path().join("rows.copy");
            psql(&url, &format!("\\copy {table} TO '{}'", file.display()));
            let halves = split(&file, 2);
            (file, halves)
        });
        let copy = format!("{prefix}_copy_{round}");
        tables.push(copy.clone());
        copies.push(runtime.block_on(run_copy(&url, &copy, &table, std::slice::from_ref(whole))));
        let copy = format!("{prefix}_copy2_{round}");
        tables.push(copy.clone());
        parallel.push(runtime.block_on(run_copy(&url, &copy, &table, halves)));
    }
    let columns = psql(
        &url,
        &format!(
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = '{}'",
            tables[0]
        ),
    );
    let file_mb = std::fs::metadata(&files.as_ref().expect("copy file").0)
        .expect("copy file")
        .len() as f64
        / 1e6;
    for table in &tables {
        psql(&url, &format!("DROP TABLE IF EXISTS {table}"));
    }
    let best = |runs: &[Run]| {
        *runs
            .iter()
            .max_by(|a, b| a.rows_per_sec().total_cmp(&b.rows_per_sec()))
            .expect("a run")
    };
    let spread = |runs: &[Run]| {
        let rates: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.rows_per_sec()))
            .collect();
        rates.join(", ")
    };
    let (send, copy, copy2) = (best(&sends), best(&copies), best(&parallel));

    println!(
        "1-minute load average before / after: {load_before} / {} (2 cores). {EVENTS} rows of \
         the real GitHub webhook payloads ({file_mb:.1} MB in COPY text format); columns: \
         {columns}. Best of {ROUNDS} alternating runs. Cores: CPU time of the bench process \
         and of the whole machine (PostgreSQL, psql), divided by wall time.\n",
        load_average()
    );
    println!("| path | rows | seconds | cores: bench / machine | rows/s (each run) | vs COPY |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, run, runs) in [
        ("`psql -c '\\copy … FROM file'` (ceiling)", copy, &copies),
        (
            "two `psql -c '\\copy …'` at once, half the rows each",
            copy2,
            &parallel,
        ),
        (
            "`send` → committed rows (SqlDestination, durable queue)",
            send,
            &sends,
        ),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} / {:.2} | {:.0} ({}) | {:.2}x |",
            run.rows,
            run.secs,
            run.cores.0,
            run.cores.1,
            run.rows_per_sec(),
            spread(runs),
            run.rows_per_sec() / copy.rows_per_sec(),
        );
    }
    let ratio = send.rows_per_sec() / copy.rows_per_sec();
    println!(
        "\n`send` → committed rows / COPY: {ratio:.2}x (target ≥ 0.50x: {}); / two COPYs at \
         once: {:.2}x.",
        if ratio >= 0.5 { "met" } else { "missed" },
        send.rows_per_sec() / copy2.rows_per_sec(),
    );
}
