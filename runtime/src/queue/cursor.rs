//! Per-destination read cursors and the persisted progress file.
//!
//! In memory each destination has the slots it has not read yet and the slots handed out
//! and not acknowledged. On disk, `progress.json` keeps, per destination, the lowest seq
//! that is not acknowledged: everything below it is done. Acks may come out of order, so
//! a record acked above a still-pending one is handed out again after a restart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{QueueError, QueueStats, Seq};

/// Where one entry's event lives on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The entry's seq.
    pub(crate) seq: Seq,
    /// The segment holding it.
    pub(crate) segment: u64,
    /// The file offset of the event's JSON.
    pub(crate) offset: u64,
    /// The length of the event's JSON.
    pub(crate) len: u32,
    /// When the event was sent, in nanoseconds since the Unix epoch.
    pub(crate) sent_at: i64,
}

/// One destination's cursor.
#[derive(Debug, Default)]
pub(crate) struct DestState {
    /// Entries not handed out yet, by seq.
    pub(crate) unread: VecDeque<Slot>,
    /// Entries handed out and not acknowledged.
    pub(crate) inflight: BTreeMap<Seq, Slot>,
    /// Woken when entries arrive or the queue closes.
    pub(crate) notify: Arc<Notify>,
}

impl DestState {
    /// The lowest seq not acknowledged, or `next_seq` when everything is.
    pub(crate) fn low(&self, next_seq: Seq) -> Seq {
        let inflight = self.inflight.keys().next().copied();
        let unread = self.unread.front().map(|s| s.seq);
        match (inflight, unread) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(next_seq),
        }
    }

    /// Forgets handed-out entries; returns how many of `seqs` were in flight.
    pub(crate) fn ack(&mut self, seqs: &[Seq]) -> usize {
        seqs.iter()
            .filter(|seq| self.inflight.remove(seq).is_some())
            .count()
    }

    /// Depth and oldest `sent_at` of the unacknowledged entries.
    ///
    /// The age is that of the lowest-seq entry, which is the oldest unless callers hand
    /// `append` events with `sent_at` out of order.
    pub(crate) fn stats(&self) -> QueueStats {
        let first = match (self.inflight.values().next(), self.unread.front()) {
            (Some(a), Some(b)) => Some(if a.seq < b.seq { a } else { b }),
            (a, b) => a.or(b),
        };
        QueueStats {
            depth: (self.unread.len() + self.inflight.len()) as u64,
            oldest_sent_at: first.map(|s| DateTime::<Utc>::from_timestamp_nanos(s.sent_at)),
        }
    }
}

/// The content of `progress.json`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The next seq the log would give out when this was written.
    pub(crate) next_seq: Seq,
    /// Per destination, the lowest seq not acknowledged.
    pub(crate) acked_below: HashMap<String, Seq>,
}

impl Progress {
    /// Reads the progress file, or an empty progress when there is none.
    ///
    /// # Errors
    ///
    /// An I/O error, or [`QueueError::Codec`] when the file is not valid progress.
    pub(crate) fn load(path: &Path) -> Result<Self, QueueError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                QueueError::Codec(format!("progress file {} is invalid: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(io_error(path, source)),
        }
    }

    /// Writes the progress file atomically: temporary file, fsync, rename, fsync folder.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub(crate) fn store(&self, path: &Path) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(self).map_err(|e| QueueError::Codec(e.to_string()))?;
        write_atomically(path, &bytes)
    }
}

/// Replaces `path` by a file holding `bytes` so that a crash leaves the old or new content.
///
/// # Errors
///
/// An I/O error.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), QueueError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Fsyncs a folder so that file creations, renames and removals in it are durable.
///
/// # Errors
///
/// An I/O error.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// A [`QueueError::Io`] naming `path`.
pub(crate) fn io_error(path: &Path, source: std::io::Error) -> QueueError {
    QueueError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: Seq) -> Slot {
        Slot {
            seq,
            segment: 0,
            offset: 0,
            len: 0,
            sent_at: seq as i64 * 1000,
        }
    }

    #[test]
    fn low_is_the_lowest_unacknowledged_seq() {
        let mut dest = DestState::default();
        assert_eq!(dest.low(9), 9);
        dest.unread.extend([slot(5), slot(7)]);
        dest.inflight.insert(3, slot(3));
        dest.inflight.insert(4, slot(4));
        assert_eq!(dest.low(9), 3);
        assert_eq!(dest.ack(&[4, 100]), 1);
        assert_eq!(dest.low(9), 3);
        assert_eq!(dest.stats().depth, 3);
        dest.ack(&[3]);
        assert_eq!(dest.low(9), 5);
        assert_eq!(dest.stats().oldest_sent_at.unwrap().timestamp_micros(), 5);
    }

    #[test]
    fn progress_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        assert_eq!(Progress::load(&path).unwrap(), Progress::default());
        let progress = Progress {
            next_seq: 12,
            acked_below: HashMap::from([("a".into(), 4)]),
        };
        progress.store(&path).unwrap();
        assert_eq!(Progress::load(&path).unwrap(), progress);
        assert!(!path.with_extension("tmp").exists());
    }
}
