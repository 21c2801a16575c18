//! [`SegmentLog`]: the embedded, durable [`Queue`].

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::pin::pin;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use destination_core::Event;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::cursor::{DestState, Progress, Slot, io_error};
use super::record::{self, HEADER_LEN};
use super::segment::{self, RecoveryReport, SegmentMeta, read_events};
use super::state::{Shared, State};
use super::writer::{Command, Writer};
use super::{FullPolicy, Queue, QueueConfig, QueueError, QueueStats, Record, Seq};

/// The embedded durable queue: one append-only log shared by every destination, split into
/// segment files, with per-destination cursors.
///
/// See the [module documentation](super) for the design. Open it with
/// [`SegmentLog::open`]; call [`Queue::close`] on shutdown so that acknowledged progress
/// is saved (otherwise up to 200 ms of acknowledgements are redelivered after a restart).
///
/// # Examples
///
/// ```
/// use destination_core::Event;
/// use destinations::queue::{Queue, QueueConfig, SegmentLog};
/// use serde_json::json;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let config = QueueConfig { path: dir.path().join("queue"), ..QueueConfig::default() };
/// let log = SegmentLog::open(config).await?;
/// let seqs = log.append(vec![("webhook".into(), Event::new(json!({"a": 1})))]).await?;
/// let records = log.next("webhook", 100).await?;
/// assert_eq!(records[0].seq, seqs[0]);
/// log.ack("webhook", &seqs).await?;
/// log.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct SegmentLog {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    report: RecoveryReport,
    /// An exclusive lock on the folder's `LOCK` file, held until `close`: two processes
    /// appending to one log would interleave and damage each other's records.
    lock: std::sync::Mutex<Option<std::fs::File>>,
}

impl fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentLog")
            .field("path", &self.shared.config.path)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl SegmentLog {
    /// Opens (or creates) the log in `config.path`, recovering what is on disk.
    ///
    /// Damaged bytes are skipped, copied aside and reported in
    /// [`recovery_report`](Self::recovery_report); they never stop the open. Every entry not
    /// yet acknowledged is handed out again.
    ///
    /// # Errors
    ///
    /// An I/O error creating, reading or repairing the files, or [`QueueError::Codec`]
    /// when the progress file is not valid.
    pub async fn open(config: QueueConfig) -> Result<Self, QueueError> {
        let path = config.path.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(config))
            .await
            .map_err(|e| io_error(&path, std::io::Error::other(e)))?
    }

    fn open_blocking(config: QueueConfig) -> Result<Self, QueueError> {
        let segments_dir = config.path.join("segments");
        fs::create_dir_all(&segments_dir).map_err(|e| io_error(&segments_dir, e))?;
        let lock = lock_folder(&config.path)?;
        let progress_path = config.path.join("progress.json");
        let progress = Progress::load(&progress_path)?;

        let mut state = State {
            next_seq: progress.next_seq,
            dirty: true,
            ..State::default()
        };
        for dest in progress.acked_below.keys() {
            state.dests.insert(dest.clone(), DestState::default());
        }
        let mut report = RecoveryReport::default();
        for (id, path) in segment::list(&segments_dir)? {
            let scan = segment::recover(&path, id, 0)?;
            report.segments += 1;
            report.records += scan.records;
            report.damaged.extend(scan.damaged);
            for (dest, slot) in scan.entries {
                state.next_seq = state.next_seq.max(slot.seq + 1);
                let cursor = state.dests.entry(dest.clone()).or_default();
                if slot.seq >= progress.acked_below.get(&dest).copied().unwrap_or(0) {
                    cursor.unread.push_back(slot);
                    report.pending += 1;
                }
            }
            state.used += scan.meta.size;
            state.segments.insert(id, scan.meta);
        }

        let (file, active, size) = match state.segments.last_key_value() {
            Some((id, meta)) if meta.size < config.segment_bytes => {
                let file = OpenOptions::new().append(true).open(&meta.path);
                (file.map_err(|e| io_error(&meta.path, e))?, *id, meta.size)
            }
            last => {
                let id = last.map_or(0, |(id, _)| id + 1);
                let (file, path) = segment::create(&segments_dir, id)?;
                state.segments.insert(id, SegmentMeta::new(path, 0));
                (file, id, 0)
            }
        };
        state.active = active;
        let next_seq = state.next_seq;
        tracing::debug!(
            path = %config.path.display(),
            segments = report.segments,
            pending = report.pending,
            damaged = report.damaged.len(),
            "queue opened",
        );

        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            space: Notify::new(),
            config,
            segments_dir,
            progress_path,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            file,
            active,
            size,
            next_seq,
            persisted: progress,
            needs_roll: false,
            buf: Vec::new(),
        };
        let (commands, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error(&shared.config.path, e))?;
        Ok(Self {
            shared,
            commands,
            report,
            lock: std::sync::Mutex::new(Some(lock)),
        })
    }

    /// What the last open found on disk: records, pending entries and damaged ranges.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Bytes used by live segments (and appends being written), as counted against
    /// [`QueueConfig::max_bytes`].
    pub fn disk_usage(&self) -> u64 {
        self.shared.lock().used
    }

    /// The folder the log lives in.
    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    /// Stops the writer without persisting anything, leaving the files as a crash would.
    #[cfg(test)]
    pub(crate) async fn crash(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Crash(tx)).is_ok() {
            rx.await.ok();
        }
    }

    /// Reserves `bytes` against the disk cap, waiting under [`FullPolicy::Block`].
    async fn reserve(&self, bytes: u64) -> Result<(), QueueError> {
        let config = &self.shared.config;
        let cap = config.max_bytes;
        let deadline = Instant::now() + config.full_timeout;
        let mut waiting: Option<WaitGuard<'_>> = None;
        loop {
            let mut freed = pin!(self.shared.space.notified());
            freed.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if state.closed {
                    return Err(QueueError::Closed);
                }
                if state.used + bytes <= cap {
                    state.used += bytes;
                    return Ok(());
                }
                if bytes > cap {
                    return Err(QueueError::TooLarge { bytes, cap });
                }
                state.space_wanted = true;
                if config.when_full == FullPolicy::Reject {
                    return Err(QueueError::Full {
                        used: state.used,
                        cap,
                    });
                }
                if waiting.is_none() {
                    state.space_waiters += 1;
                    waiting = Some(WaitGuard(&self.shared));
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let used = self.shared.lock().used;
                return Err(QueueError::Full { used, cap });
            }
        }
    }

    /// Hands out up to `max` unread entries of `dest` if there are any, reading their
    /// events from disk; nothing is taken unless the whole call completes.
    async fn take(&self, dest: &str, max: usize) -> Result<Option<Vec<Record>>, QueueError> {
        let (plan, files) = {
            let mut state = self.shared.lock();
            let state = &mut *state;
            if state.closed {
                return Err(QueueError::Closed);
            }
            let Some(cursor) = state.dests.get_mut(dest) else {
                return Ok(None);
            };
            // Fast path: the oldest unread events are still in memory.
            let cached = cursor
                .unread
                .iter()
                .take(max)
                .take_while(|slot| state.cache.contains_key(&slot.seq))
                .count();
            if cached > 0 {
                let records = cursor
                    .unread
                    .drain(..cached)
                    .map(|slot| {
                        let event = state.cache.remove(&slot.seq).expect("checked above");
                        state.cache_bytes -= u64::from(slot.len);
                        cursor.inflight.insert(slot.seq, slot);
                        Record {
                            seq: slot.seq,
                            destination: dest.to_string(),
                            event,
                            size: slot.len as usize,
                        }
                    })
                    .collect();
                return Ok(Some(records));
            }
            let plan: Vec<Slot> = cursor.unread.iter().take(max).copied().collect();
            let mut files = HashMap::new();
            for slot in &plan {
                if let std::collections::hash_map::Entry::Vacant(e) = files.entry(slot.segment) {
                    let meta = state.segments.get_mut(&slot.segment).ok_or_else(|| {
                        QueueError::Codec(format!(
                            "segment {} of seq {} is gone",
                            slot.segment, slot.seq
                        ))
                    })?;
                    e.insert((meta.reader()?, meta.path.clone()));
                }
            }
            (plan, files)
        };
        if plan.is_empty() {
            return Ok(None);
        }
        let read_plan = plan.clone();
        let events = tokio::task::spawn_blocking(move || read_events(&read_plan, &files))
            .await
            .map_err(|e| io_error(&self.shared.segments_dir, std::io::Error::other(e)))??;

        let mut state = self.shared.lock();
        let state = &mut *state;
        if state.closed {
            return Err(QueueError::Closed);
        }
        let cursor = state
            .dests
            .get_mut(dest)
            .expect("destinations are never removed");
        // Another caller for the same destination may have taken these meanwhile.
        let unchanged = cursor.unread.iter().take(plan.len()).eq(plan.iter());
        if !unchanged {
            return Ok(None);
        }
        cursor.unread.drain(..plan.len());
        let cache = &mut state.cache;
        let cache_bytes = &mut state.cache_bytes;
        let mut records = Vec::with_capacity(plan.len());
        for (slot, event) in plan.into_iter().zip(events) {
            if cache.remove(&slot.seq).is_some() {
                *cache_bytes -= u64::from(slot.len);
            }
            match event {
                Ok(event) => {
                    cursor.inflight.insert(slot.seq, slot);
                    records.push(Record {
                        seq: slot.seq,
                        destination: dest.to_string(),
                        event,
                        size: slot.len as usize,
                    });
                }
                // Neither handed out nor kept in flight: counted as done, so that the
                // entries after it are delivered.
                Err(undecodable) => {
                    state.dirty = true;
                    tracing::error!(
                        destination = dest,
                        seq = slot.seq,
                        reason = %undecodable.reason,
                        kept_at = ?undecodable.kept_at,
                        "a queued event does not decode; its bytes are kept aside and it is skipped"
                    );
                }
            }
        }
        // Everything read was set aside: look again rather than hand out nothing.
        Ok((!records.is_empty()).then_some(records))
    }
}

/// Counts an append waiting for space while it lives.
struct WaitGuard<'a>(&'a Shared);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().space_waiters -= 1;
    }
}

#[async_trait]
impl Queue for SegmentLog {
    async fn append(&self, entries: Vec<(String, Event)>) -> Result<Vec<Seq>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let body = record::encode_body(&entries)?;
        let reserved = (HEADER_LEN + body.len()) as u64;
        self.reserve(reserved).await?;
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Append {
                body,
                reserved,
                // The read cache holds events as the text that was just encoded: a parsed
                // payload would take several times the bytes the cache counts, and would be
                // freed on the writer thread, which every sender waits for.
                events: entries
                    .into_iter()
                    .map(|(_, mut event)| {
                        event.drop_value();
                        event
                    })
                    .collect(),
                reply,
            })
            .is_err()
        {
            return Err(QueueError::Closed);
        }
        answer.await.unwrap_or(Err(QueueError::Closed))
    }

    async fn next(&self, destination: &str, max: usize) -> Result<Vec<Record>, QueueError> {
        let max = max.max(1);
        loop {
            let notify = {
                let mut state = self.shared.lock();
                Arc::clone(
                    &state
                        .dests
                        .entry(destination.to_string())
                        .or_default()
                        .notify,
                )
            };
            let mut arrived = pin!(notify.notified());
            arrived.as_mut().enable();
            if let Some(records) = self.take(destination, max).await? {
                return Ok(records);
            }
            let has_unread = {
                let state = self.shared.lock();
                state.closed
                    || state
                        .dests
                        .get(destination)
                        .is_some_and(|c| !c.unread.is_empty())
            };
            if !has_unread {
                arrived.await;
            }
        }
    }

    async fn ack(&self, destination: &str, seqs: &[Seq]) -> Result<(), QueueError> {
        let blocked = {
            let mut state = self.shared.lock();
            let acked = state.dests.get_mut(destination).map_or(0, |c| c.ack(seqs));
            state.dirty |= acked > 0;
            acked > 0 && (state.space_waiters > 0 || state.space_wanted)
        };
        if blocked {
            // Appends wait for space: have the writer free segments now, not at its next
            // tick. A closed writer has nothing to free.
            self.commands.send(Command::Maintain).ok();
        }
        Ok(())
    }

    fn stats(&self, destination: &str) -> QueueStats {
        let state = self.shared.lock();
        state
            .dests
            .get(destination)
            .map(DestState::stats)
            .unwrap_or_default()
    }

    async fn close(&self) -> Result<(), QueueError> {
        let (reply, answer) = oneshot::channel();
        let result = if self.commands.send(Command::Close(reply)).is_err() {
            Ok(())
        } else {
            answer.await.unwrap_or(Ok(()))
        };
        // Dropping the file releases the folder for the next process.
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        result
    }
}

/// Takes the folder's lock, or says which folder is in use.
fn lock_folder(dir: &Path) -> Result<fs::File, QueueError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(QueueError::Locked {
            path: dir.display().to_string(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_error(&path, e)),
    }
}
