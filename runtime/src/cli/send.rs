//! `destinations send`: the one-shot job.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use destination_core::Event;
use destinations::queue::QueueError;
use destinations::{Outcome, Receipt, Runtime, SendError, Sender};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::de::IgnoredAny;

use super::{Failure, chain, load, start};

/// Events queued per atomic append at most: enough to amortise the disk sync.
const CHUNK: usize = 512;
/// How often a full queue is tried again.
const FULL_RETRY: Duration = Duration::from_millis(50);
/// Bytes a queued event takes beyond its payload text, counted generously: its record's id,
/// time, attributes and destination name.
const EVENT_OVERHEAD: usize = 256;

pub(crate) async fn send(path: &Path, to: &str, input: &str) -> Result<ExitCode, Failure> {
    let config = load(path)?;
    if !config.destinations.contains_key(to) {
        let known: Vec<&str> = config.destinations.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown destination `{to}` (configured: {})",
            known.join(", ")
        ));
    }
    let reader: Box<dyn BufRead + Send> = if input == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(input).map_err(|e| format!("cannot open {input}: {e}"))?;
        Box::new(BufReader::new(file))
    };

    let started = Instant::now();
    let runtime = start(&config).await?;
    let sender = runtime.sender();
    let earlier = runtime.queue().stats(to).depth;
    // Flush whenever the queue runs dry rather than only at the end, so that an input
    // larger than the queue's disk cap keeps moving instead of waiting for batch ages.
    runtime.drain();
    // One append must fit in the queue's disk cap with room to spare, or it could never be
    // written; half the cap leaves the other half to what is still being delivered.
    let chunk_bytes = usize::try_from(config.queue.max_bytes / 2).unwrap_or(usize::MAX);
    let wait_for_space = config.queue.full_timeout;
    let queued = queue_lines(&sender, to, reader, chunk_bytes, wait_for_space).await;
    let (receipts, bad_lines) = match queued {
        Ok(queued) => queued,
        Err(failure) => {
            // What was queued before the failure is delivered (or kept) as on any stop.
            if let Err(e) = runtime.shutdown().await {
                eprintln!("error: {}", chain(&e));
            }
            return Err(failure);
        }
    };
    let queued = receipts.len();
    tracing::debug!(
        events = queued,
        invalid = bad_lines,
        "input read to the end and queued"
    );

    let tally = wait(&runtime, to, receipts, earlier).await;
    let elapsed = started.elapsed();
    let stopped = runtime.shutdown().await;

    println!(
        "queued {queued}, delivered {}, dead-lettered {}, invalid lines {bad_lines}, in {:.2}s",
        tally.delivered,
        tally.dead_lettered,
        elapsed.as_secs_f64()
    );
    if tally.earlier > 0 {
        println!(
            "also delivered {} event(s) left queued by an earlier run",
            tally.earlier
        );
    }
    if tally.dead_lettered > 0 {
        println!(
            "see them with: destinations dlq list --config {}",
            path.display()
        );
    }
    stopped.map_err(|e| chain(&e))?;
    let ok = tally.dead_lettered == 0 && tally.pending == 0 && bad_lines == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// serde_json's message without its trailing position, which the caller reports itself.
pub(crate) fn json_reason(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Queues every valid line, in appends of at most [`CHUNK`] events and about `chunk_bytes`
/// bytes (a single larger event goes alone); reports each invalid line with its number.
async fn queue_lines(
    sender: &Sender,
    to: &str,
    reader: Box<dyn BufRead + Send>,
    chunk_bytes: usize,
    wait_for_space: Duration,
) -> Result<(Vec<Receipt>, usize), Failure> {
    let mut receipts = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut held = 0;
    let mut bad_lines = 0;
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = match line {
            Ok(line) => line,
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                eprintln!("line {number}: not valid UTF-8; skipped");
                bad_lines += 1;
                continue;
            }
            Err(err) => return Err(format!("cannot read the input at line {number}: {err}")),
        };
        // A byte-order mark that some editors put at the start of a UTF-8 file is not part
        // of the first event.
        let line = match line.strip_prefix('\u{feff}') {
            Some(rest) if number == 1 => rest.to_owned(),
            _ => line,
        };
        // Blank by JSON's rules only: other Unicode spaces make the line invalid JSON.
        if line.trim_matches([' ', '\t', '\r']).is_empty() {
            continue;
        }
        // The line itself becomes the event's JSON text: checked, not built into a tree.
        let parsed = if line.trim_start_matches([' ', '\t', '\r']).starts_with('{') {
            Event::from_sent_json(Bytes::from(line)).map(Some)
        } else {
            serde_json::from_str::<IgnoredAny>(&line).map(|_| None)
        };
        let event = match parsed {
            Ok(Some(event)) => event,
            Ok(None) => {
                eprintln!("line {number}: not a JSON object; skipped");
                bad_lines += 1;
                continue;
            }
            Err(err) => {
                eprintln!(
                    "line {number}: invalid JSON at column {}: {}; skipped",
                    err.column(),
                    json_reason(&err)
                );
                bad_lines += 1;
                continue;
            }
        };
        let size = event.encoded_len() + EVENT_OVERHEAD;
        if !chunk.is_empty() && held + size > chunk_bytes {
            bad_lines += flush(sender, to, &mut chunk, &mut receipts, wait_for_space).await?;
            held = 0;
        }
        chunk.push((number, event));
        held += size;
        if chunk.len() == CHUNK {
            bad_lines += flush(sender, to, &mut chunk, &mut receipts, wait_for_space).await?;
            held = 0;
        }
    }
    bad_lines += flush(sender, to, &mut chunk, &mut receipts, wait_for_space).await?;
    Ok((receipts, bad_lines))
}

/// Queues a chunk; a full queue is tried again for up to `wait_for_space` whatever
/// `queue.when_full` says, since the job can simply go slower.
async fn flush(
    sender: &Sender,
    to: &str,
    chunk: &mut Vec<(usize, Event)>,
    receipts: &mut Vec<Receipt>,
    wait_for_space: Duration,
) -> Result<usize, Failure> {
    if chunk.is_empty() {
        return Ok(0);
    }
    // An oversized event is reported by line; the rest of the chunk still goes in.
    let numbers: Vec<usize> = chunk.iter().map(|(number, _)| *number).collect();
    let entries: Vec<(String, Event)> = chunk.drain(..).map(|(_, e)| (to.to_string(), e)).collect();
    let started = Instant::now();
    let (sent, rejected) = loop {
        match sender.send_valid_with_receipts(entries.clone()).await {
            Err(SendError::Queue(QueueError::Full { .. }))
                if started.elapsed() < wait_for_space =>
            {
                tokio::time::sleep(FULL_RETRY).await;
            }
            other => break other.map_err(|e| chain(&e))?,
        }
    };
    for (index, err) in &rejected {
        eprintln!("line {}: {}; skipped", numbers[*index], chain(err));
    }
    receipts.extend(sent.into_iter().map(|(_, r)| r));
    Ok(rejected.len())
}

#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) delivered: usize,
    pub(crate) dead_lettered: usize,
    pub(crate) pending: usize,
    pub(crate) earlier: u64,
}

/// Waits for every receipt, then for anything an earlier run left in the queue.
pub(crate) async fn wait(
    runtime: &Runtime,
    to: &str,
    receipts: Vec<Receipt>,
    earlier: u64,
) -> Tally {
    let total = receipts.len();
    let progress = std::io::stderr().is_terminal();
    let mut pending: FuturesUnordered<Receipt> = receipts.into_iter().collect();
    let mut tally = Tally::default();
    let mut last_draw = Instant::now();
    while let Some(outcome) = pending.next().await {
        match outcome {
            Outcome::Delivered => tally.delivered += 1,
            Outcome::DeadLettered(_) => tally.dead_lettered += 1,
            Outcome::Pending => tally.pending += 1,
        }
        if progress && last_draw.elapsed() > Duration::from_millis(100) {
            draw(&tally, total);
            last_draw = Instant::now();
        }
    }
    if progress {
        draw(&tally, total);
        eprintln!();
    }

    // Events an earlier, interrupted run queued have no receipt here: wait for the queue.
    if earlier > 0 {
        while runtime.queue().stats(to).depth > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tally.earlier = earlier;
    }
    tally
}

fn draw(tally: &Tally, total: usize) {
    let done = tally.delivered + tally.dead_lettered + tally.pending;
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r{done}/{total} done: {} delivered, {} dead-lettered",
        tally.delivered, tally.dead_lettered
    );
    let _ = err.flush();
}
