//! Segment files: naming, listing and recovery.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use destination_core::Event;

use super::QueueError;
use super::Seq;
use super::cursor::{Slot, io_error, sync_dir};
use super::record::{self, HEADER_LEN, Scanned, Scanner};

/// What [`SegmentLog::open`](super::SegmentLog::open) found on disk and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments: usize,
    /// Valid records read.
    pub records: u64,
    /// Entries not yet acknowledged, which will be handed out again.
    pub pending: u64,
    /// Byte ranges that held no valid record; empty after a clean shutdown.
    pub damaged: Vec<Damage>,
}

/// A damaged byte range found on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub bytes: u64,
    /// Whether the damage ran to the end of the file (a torn write); the file was then
    /// truncated at `offset`. Otherwise the scan went on at the next valid record.
    pub torn_tail: bool,
    /// The copy of the damaged bytes kept for inspection, unless copying failed.
    pub kept_at: Option<PathBuf>,
}

/// One live segment.
#[derive(Debug)]
pub(crate) struct SegmentMeta {
    /// The file.
    pub(crate) path: PathBuf,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// For each destination with entries here, the highest seq of its entries.
    pub(crate) last_seq: HashMap<String, Seq>,
    /// A read handle, opened on first use.
    pub(crate) reader: Option<Arc<File>>,
}

impl SegmentMeta {
    /// An empty segment at `path`.
    pub(crate) fn new(path: PathBuf, size: u64) -> Self {
        Self {
            path,
            size,
            last_seq: HashMap::new(),
            reader: None,
        }
    }

    /// A shared read handle.
    ///
    /// # Errors
    ///
    /// An I/O error opening the file.
    pub(crate) fn reader(&mut self) -> Result<Arc<File>, QueueError> {
        if let Some(file) = &self.reader {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(&self.path).map_err(|e| io_error(&self.path, e))?);
        self.reader = Some(Arc::clone(&file));
        Ok(file)
    }

    /// Whether every entry here is acknowledged, given each destination's lowest
    /// unacknowledged seq.
    pub(crate) fn is_done(&self, low: impl Fn(&str) -> Option<Seq>) -> bool {
        self.last_seq
            .iter()
            .all(|(dest, last)| low(dest).is_some_and(|low| low > *last))
    }
}

/// The file of segment `id` in `dir`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

/// The segment files in `dir`, by id.
///
/// # Errors
///
/// An I/O error reading the folder.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, QueueError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            found.push((id, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Creates an empty segment file and makes its creation durable.
///
/// # Errors
///
/// An I/O error.
pub(crate) fn create(dir: &Path, id: u64) -> Result<(File, PathBuf), QueueError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// The result of scanning one segment.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The segment with its size after repair.
    pub(crate) meta: SegmentMeta,
    /// Every entry, with its destination, in seq order.
    pub(crate) entries: Vec<(String, Slot)>,
    /// Valid records.
    pub(crate) records: u64,
    /// Damaged ranges.
    pub(crate) damaged: Vec<Damage>,
}

/// Reads segment `id`, keeps damaged bytes aside and truncates a torn tail.
///
/// Records whose first seq is below `min_seq` (stale bytes that happen to be valid) are
/// treated as damage, so seqs stay increasing.
///
/// # Errors
///
/// An I/O error reading or truncating the file.
pub(crate) fn recover(path: &Path, id: u64, min_seq: Seq) -> Result<Scan, QueueError> {
    let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
    let mut meta = SegmentMeta::new(path.to_path_buf(), bytes.len() as u64);
    let mut entries = Vec::new();
    let mut damaged = Vec::new();
    let mut records = 0;
    let mut next_seq = min_seq;

    for scanned in Scanner::new(&bytes) {
        let (offset, len, tail) = match scanned {
            Scanned::Record { offset, body } => match record::decode_body(body) {
                Ok((first, decoded)) if first >= next_seq => {
                    records += 1;
                    let body_at = (offset + HEADER_LEN) as u64;
                    for (i, entry) in decoded.iter().enumerate() {
                        let seq = first + i as u64;
                        meta.last_seq.insert(entry.destination.to_string(), seq);
                        let slot = Slot {
                            seq,
                            segment: id,
                            offset: body_at + entry.event_at as u64,
                            len: entry.event_len,
                            sent_at: entry.sent_at,
                        };
                        entries.push((entry.destination.to_string(), slot));
                    }
                    next_seq = first + decoded.len() as u64;
                    continue;
                }
                _ => (offset, HEADER_LEN + body.len(), false),
            },
            Scanned::Damaged { offset, len, tail } => (offset, len, tail),
        };
        let kept_at = keep_aside(path, offset, &bytes[offset..offset + len]);
        tracing::warn!(
            path = %path.display(),
            offset,
            bytes = len,
            torn_tail = tail,
            kept_at = ?kept_at,
            "queue segment damaged; skipping bytes",
        );
        damaged.push(Damage {
            path: path.to_path_buf(),
            offset: offset as u64,
            bytes: len as u64,
            torn_tail: tail,
            kept_at,
        });
        if tail {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io_error(path, e))?;
            file.set_len(offset as u64).map_err(|e| io_error(path, e))?;
            file.sync_all().map_err(|e| io_error(path, e))?;
            meta.size = offset as u64;
        }
    }
    Ok(Scan {
        meta,
        entries,
        records,
        damaged,
    })
}

pub(crate) fn keep_aside(path: &Path, offset: usize, bytes: &[u8]) -> Option<PathBuf> {
    let name = format!("{}.{offset}.corrupt", path.file_name()?.to_string_lossy());
    let aside = path.with_file_name(name);
    match fs::write(&aside, bytes).and_then(|()| File::open(&aside)?.sync_all()) {
        Ok(()) => Some(aside),
        Err(error) => {
            tracing::warn!(path = %aside.display(), %error, "could not keep damaged bytes aside");
            None
        }
    }
}

/// Reads of adjacent entries closer than this are merged into one read.
const MERGE_GAP: u64 = 64 << 10;

/// An entry whose bytes passed the record checksum but do not decode into an event.
#[derive(Debug)]
pub(crate) struct Undecodable {
    /// Why it does not decode.
    pub(crate) reason: String,
    /// Where its bytes were copied for inspection, when that worked.
    pub(crate) kept_at: Option<PathBuf>,
}

/// Reads the events of `plan` (one destination's slots, in seq order).
///
/// An entry that does not decode is copied aside (like damaged bytes found on open) and
/// reported in its place, so that it cannot hold up the entries after it.
///
/// # Errors
///
/// An I/O error.
pub(crate) fn read_events(
    plan: &[Slot],
    files: &HashMap<u64, (Arc<File>, PathBuf)>,
) -> Result<Vec<Result<Event, Undecodable>>, QueueError> {
    let mut events = Vec::with_capacity(plan.len());
    let mut i = 0;
    while i < plan.len() {
        let start = plan[i].offset;
        let mut end = start + u64::from(plan[i].len);
        let mut j = i + 1;
        while let Some(next) = plan.get(j) {
            let adjacent = next.segment == plan[i].segment
                && next.offset >= end
                && next.offset - end <= MERGE_GAP;
            if !adjacent {
                break;
            }
            end = next.offset + u64::from(next.len);
            j += 1;
        }
        let (file, path) = &files[&plan[i].segment];
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| io_error(path, e))?;
        for slot in &plan[i..j] {
            let at = (slot.offset - start) as usize;
            let bytes = &buf[at..at + slot.len as usize];
            events.push(record::decode_event(bytes).map_err(|reason| Undecodable {
                reason,
                kept_at: keep_aside(path, slot.offset as usize, bytes),
            }));
        }
        i = j;
    }
    Ok(events)
}
