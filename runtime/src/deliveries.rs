//! Delivery records: what happened to each batch, and what the target answered for each
//! event when the destination records it, kept in the queue folder for
//! `destinations deliveries`.
//!
//! Records are appended as JSON lines to `deliveries.ndjson`, which is rotated to
//! `deliveries.1.ndjson` at 16 MiB, so at most about 32 MiB are kept. They are written in
//! the background and not synced: they are a log for people, not part of the delivery
//! guarantee, and the newest records may be lost in a crash.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use destination_core::EventId;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

/// Size at which the current file is rotated.
const ROTATE_BYTES: u64 = 16 << 20;
const CURRENT: &str = "deliveries.ndjson";
const PREVIOUS: &str = "deliveries.1.ndjson";

/// The outcome of one batch, or of one event when the target answered it separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// When the outcome was known.
    pub at: DateTime<Utc>,
    /// The destination.
    pub destination: String,
    /// The first and last event ids of the batch (`Batch::key`).
    pub batch: String,
    /// Events in the batch.
    pub events: usize,
    /// `delivered` or `dead_lettered`.
    pub outcome: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, when the batch (or some of its events) failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event this record is about, when it is about one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventId>,
    /// What the target last answered for `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

impl DeliveryRecord {
    /// Whether this record is about `id`: it names the event, or it is the record of a
    /// batch whose id range holds it (ids sort by time, so a batch's events lie between its
    /// first and last id).
    pub fn concerns(&self, id: &EventId) -> bool {
        if let Some(event) = &self.event {
            return event == id;
        }
        let text = id.to_string();
        match self.batch.split_at_checked(36) {
            Some((first, rest)) => {
                let last = rest.trim_start_matches('-');
                first <= text.as_str() && text.as_str() <= last
            }
            None => false,
        }
    }
}

/// Appends records in the background.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryLog {
    tx: mpsc::UnboundedSender<DeliveryRecord>,
}

impl DeliveryLog {
    /// Starts the writer for the folder `dir`.
    pub(crate) fn start(dir: &Path) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || write_loop(&dir, rx));
        Self { tx }
    }

    pub(crate) fn record(&self, record: DeliveryRecord) {
        let _ = self.tx.send(record);
    }
}

fn write_loop(dir: &Path, mut rx: mpsc::UnboundedReceiver<DeliveryRecord>) {
    let path = dir.join(CURRENT);
    let mut writer: Option<(BufWriter<File>, u64)> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        if let Err(error) = write(dir, &path, &mut writer, &batch) {
            warn!(path = %path.display(), %error, "delivery records not written");
            writer = None;
        }
    }
}

fn write(
    dir: &Path,
    path: &Path,
    writer: &mut Option<(BufWriter<File>, u64)>,
    records: &[DeliveryRecord],
) -> std::io::Result<()> {
    if writer.is_none() {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        *writer = Some((BufWriter::new(file), size));
    }
    let (out, size) = writer.as_mut().expect("opened above");
    for record in records {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)?;
        *size += line.len() as u64;
    }
    out.flush()?;
    if *size >= ROTATE_BYTES {
        *writer = None;
        std::fs::rename(path, dir.join(PREVIOUS))?;
    }
    Ok(())
}

/// Reads every kept record, oldest first; damaged lines are skipped.
///
/// # Errors
///
/// An I/O error other than a missing file.
pub fn read_records(dir: &Path) -> std::io::Result<Vec<DeliveryRecord>> {
    let mut records = Vec::new();
    for name in [PREVIOUS, CURRENT] {
        let path: PathBuf = dir.join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut damaged = 0;
        // Split on bytes, not text: a line that is not UTF-8 is damaged like any other.
        for line in BufReader::new(file).split(b'\n') {
            match serde_json::from_slice(&line?) {
                Ok(record) => records.push(record),
                Err(_) => damaged += 1,
            }
        }
        if damaged > 0 {
            warn!(path = %path.display(), lines = damaged, "damaged delivery records skipped");
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_records_concern_the_ids_in_their_range() {
        let ids: Vec<EventId> = (0..3).map(|_| EventId::new()).collect();
        let record = DeliveryRecord {
            at: Utc::now(),
            destination: "d".into(),
            batch: format!("{}-{}", ids[0], ids[1]),
            events: 2,
            outcome: "delivered".into(),
            attempts: 1,
            error: None,
            event: None,
            response: None,
        };
        assert!(record.concerns(&ids[0]));
        assert!(record.concerns(&ids[1]));
        assert!(!record.concerns(&ids[2]));
        let one = DeliveryRecord {
            event: Some(ids[2]),
            ..record
        };
        assert!(one.concerns(&ids[2]));
        assert!(!one.concerns(&ids[0]));
    }

    #[tokio::test]
    async fn records_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::start(dir.path());
        let id = EventId::new();
        log.record(DeliveryRecord {
            at: Utc::now(),
            destination: "hooks".into(),
            batch: format!("{id}-{id}"),
            events: 1,
            outcome: "delivered".into(),
            attempts: 2,
            error: None,
            event: Some(id),
            response: Some(serde_json::json!({"status": 200})),
        });
        drop(log);
        for _ in 0..100 {
            if !read_records(dir.path()).unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let records = read_records(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].response.as_ref().unwrap()["status"], 200);

        // Damaged lines, bytes that are not UTF-8 among them, are skipped.
        let line = std::fs::read(dir.path().join(CURRENT)).unwrap();
        let mut damaged = b"\xff\xfe\n{\"not\": \"a record\"}\n".to_vec();
        damaged.extend_from_slice(&line);
        damaged.extend_from_slice(b"{\"torn");
        std::fs::write(dir.path().join(CURRENT), damaged).unwrap();
        let records = read_records(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].event, Some(id));
    }
}
