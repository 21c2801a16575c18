//! The durable queue between `send` and the destination workers, and the dead-letter store.
//!
//! [`Queue`] is a small trait so that other backends (a distributed log) can stand in for
//! the embedded segment log, which is the default. [`MemoryQueue`] keeps the same contract
//! without durability, for tests and benchmarks; [`FileDeadLetters`] stores dead letters
//! next to the log.
//!
//! # The segment log
//!
//! [`SegmentLog`] is one append-only log shared by every destination, so that an `append`
//! fanning one event out to several destinations is a single record: it is durable for
//! all of them or for none. The log is cut into numbered segment files
//! (`segments/<id>.log`, [`QueueConfig::segment_bytes`] each) so that space is given back
//! a whole file at a time, without compaction.
//!
//! **Records.** Each `append` call is one record: a magic number, the body length, a
//! crc32 of the body, then the body (the first seq, then per entry the destination, the
//! `sent_at` time and the event as JSON). Seqs are consecutive inside a record, so each
//! entry's seq follows from its position.
//!
//! **Group commit.** A single writer thread owns the files. Appends from concurrent callers
//! queue up while it syncs the previous group; it then writes everything queued at once
//! and calls `sync_data` once, and only after that does each caller's `append` return. A
//! burst of callers costs one fsync rather than one each, and a returned `append` is on
//! disk.
//!
//! **Reading.** Per destination, the index in memory holds the position of each entry not
//! yet acknowledged (about 40 bytes per entry, never the payloads); `next` reads the events
//! back from the segment files, merging reads of neighbouring entries. Handed-out entries
//! stay in flight until acknowledged, which keeps `stats` cheap: depth is a length and the
//! age is the first entry's `sent_at`.
//!
//! **Progress.** Acks may come in any order (batches finish concurrently). At most every
//! 200 ms, and on `close`, the writer saves per destination the lowest seq not yet
//! acknowledged to `progress.json` (written to a temporary file, synced, renamed, folder
//! synced). After a restart everything from there is handed out again, so delivery is at
//! least once; an ack that has not been saved yet costs a redelivery, never a loss. A
//! segment other than the active one is removed once every destination with entries in it
//! has saved progress past them.
//!
//! **Recovery.** On open each segment is scanned and checked record by record. Bytes that
//! hold no valid record (a short record or a bad crc) are logged, counted in the
//! [`RecoveryReport`] and copied to a `.corrupt` file beside the segment. Damage at the end
//! of a file is a write torn by a crash (its `append` never returned): the file is cut back
//! to the last good record. Damage in the middle costs only the damaged record: the scan
//! goes on at the next magic number whose record checks out. Earlier and later records are
//! never held back. An entry whose record checks out but whose event does not decode (a
//! bug, or another writer) is copied aside the same way when it is read, logged, and
//! skipped, so it cannot hold up the entries after it.
//!
//! **Disk cap.** Appends reserve their framed size against [`QueueConfig::max_bytes`]
//! before they are written. When the cap is reached, [`FullPolicy::Reject`] fails at once
//! and [`FullPolicy::Block`] waits up to [`QueueConfig::full_timeout`] for removals to free
//! space (it rolls a fully acknowledged active segment so that it can go too); neither
//! writes part of an append. Choose `max_bytes` a few times `segment_bytes`: space comes
//! back one segment at a time.
//!
//! # Known limits
//!
//! - A destination that is removed from the configuration keeps its entries, and the
//!   segments holding them, until it is configured again and drains them.
//! - The log reads with positioned reads (`pread`), so it builds on Unix only.
//! - Damaged bytes kept aside in `.corrupt` files do not count against `max_bytes` and are
//!   never removed by the queue.

use std::fmt;
use std::time::Duration;

mod cursor;
mod dead_letters;
mod log;
mod memory;
mod record;
mod segment;
mod state;
mod writer;

#[cfg(test)]
mod tests;

pub use dead_letters::FileDeadLetters;
pub use log::SegmentLog;
pub use memory::MemoryQueue;
pub use segment::{Damage, RecoveryReport};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use destination_core::Event;
use serde::{Deserialize, Serialize};

/// A record's position in the queue: unique and increasing across the queue's life.
pub type Seq = u64;

/// An event read from the queue, with the position to acknowledge it by.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The position to pass to [`Queue::ack`].
    pub seq: Seq,
    /// The destination the event was queued for.
    pub destination: String,
    /// The event.
    pub event: Event,
    /// The event's encoded size as the queue stores it, in bytes: what batch byte limits
    /// count, so that the event need not be serialized again to be measured.
    pub size: usize,
}

/// Per-destination queue figures for metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Events queued and not yet acknowledged.
    pub depth: u64,
    /// When the oldest unacknowledged event was sent.
    pub oldest_sent_at: Option<DateTime<Utc>>,
}

/// What `append` does when the queue's disk cap is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Wait for space up to the timeout, then fail with [`QueueError::Full`].
    Block,
    /// Fail with [`QueueError::Full`] at once.
    Reject,
}

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The disk cap is reached; nothing of the append was written.
    #[error("queue is full ({used} of {cap} bytes used; raise queue.max_bytes or wait)")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The configured cap.
        cap: u64,
    },
    /// One append is larger than the whole disk cap: it can never fit.
    #[error("append of {bytes} bytes exceeds the whole queue cap of {cap} bytes (queue.max_bytes)")]
    TooLarge {
        /// The append's size on disk.
        bytes: u64,
        /// The configured cap.
        cap: u64,
    },
    /// Another process has the queue folder open.
    #[error(
        "queue folder {path} is in use by another process (stop it, or use another queue.path)"
    )]
    Locked {
        /// The folder.
        path: String,
    },
    /// Reading or writing the queue's files failed.
    #[error("queue i/o failed at {path}")]
    Io {
        /// The file or folder involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("queue record is invalid: {0}")]
    Codec(String),
    /// The queue was closed.
    #[error("queue is closed")]
    Closed,
}

/// A durable, multi-destination FIFO of events with per-destination acknowledgement.
///
/// # Contract
///
/// - [`append`](Self::append) returns `Ok` only once every entry is durable (survives a
///   crash or `kill -9`); the entries of one call become durable together or not at all.
/// - Each destination reads its own entries in append order. A record handed out by
///   [`next`](Self::next) is not handed out again in this process; after a restart, every
///   record not yet acknowledged is handed out again (at least once).
/// - [`ack`](Self::ack) marks records done (delivered or dead-lettered); acknowledged
///   records are eventually removed from disk.
#[async_trait]
pub trait Queue: Send + Sync + fmt::Debug + 'static {
    /// Appends `(destination, event)` entries atomically and durably.
    ///
    /// # Errors
    ///
    /// [`QueueError::Full`] when the disk cap is reached (after waiting, under
    /// [`FullPolicy::Block`]), or an I/O error.
    async fn append(&self, entries: Vec<(String, Event)>) -> Result<Vec<Seq>, QueueError>;

    /// Waits until at least one record for `destination` is available and returns up to
    /// `max` of them, oldest first.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes hands out nothing. The runtime's workers
    /// drop a call only when they stop, so work done for it (reading from disk) is not
    /// thrown away while deliveries finish.
    ///
    /// # Errors
    ///
    /// An I/O error, or [`QueueError::Closed`] after [`close`](Self::close).
    async fn next(&self, destination: &str, max: usize) -> Result<Vec<Record>, QueueError>;

    /// Marks records of `destination` as done.
    ///
    /// # Errors
    ///
    /// An I/O error while persisting progress.
    async fn ack(&self, destination: &str, seqs: &[Seq]) -> Result<(), QueueError>;

    /// Current figures for `destination`.
    fn stats(&self, destination: &str) -> QueueStats;

    /// Persists progress and wakes every waiting [`next`](Self::next) with `Closed`.
    ///
    /// # Errors
    ///
    /// An I/O error while persisting progress.
    async fn close(&self) -> Result<(), QueueError>;
}

/// A batch that could not be delivered, kept for inspection and replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry's id in the dead-letter store.
    pub id: u64,
    /// The destination that gave up.
    pub destination: String,
    /// The events that were not delivered.
    pub events: Vec<Event>,
    /// The last error, with its causes.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the batch was given up.
    pub failed_at: DateTime<Utc>,
}

/// A durable store of dead letters.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a dead letter durably and returns its id (the `id` field given is ignored).
    ///
    /// # Errors
    ///
    /// An I/O error.
    async fn put(&self, letter: DeadLetter) -> Result<u64, QueueError>;

    /// Every stored dead letter, oldest first, optionally for one destination.
    ///
    /// # Errors
    ///
    /// An I/O error.
    async fn list(&self, destination: Option<&str>) -> Result<Vec<DeadLetter>, QueueError>;

    /// Removes dead letters by id (after a replay queued their events again).
    ///
    /// # Errors
    ///
    /// An I/O error.
    async fn remove(&self, ids: &[u64]) -> Result<(), QueueError>;
}

/// Settings of the embedded queue, from the `[queue]` section of the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The folder holding the queue's segments, progress and dead letters.
    pub path: std::path::PathBuf,
    /// Disk space the queue's segments may use at most, in bytes (default 1 GiB).
    pub max_bytes: u64,
    /// Size at which a segment file is closed and a new one started (default 64 MiB).
    pub segment_bytes: u64,
    /// What `append` does when `max_bytes` is reached (default `block`).
    pub when_full: FullPolicy,
    /// How long `append` waits for space under `block` (default 30 s).
    #[serde(with = "destination_core::duration")]
    pub full_timeout: Duration,
    /// Encoded bytes of just-appended events kept in memory so that workers need not read
    /// them back from disk (default 32 MiB; 0 turns the cache off). Events beyond it, and
    /// every event after a restart, are read from the segments.
    pub read_cache_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            path: std::path::PathBuf::from("destinations-data"),
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            when_full: FullPolicy::Block,
            full_timeout: Duration::from_secs(30),
            read_cache_bytes: 32 << 20,
        }
    }
}
