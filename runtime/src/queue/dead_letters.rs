//! [`FileDeadLetters`]: dead letters in a checksummed append-only file.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::cursor::{io_error, sync_dir, write_atomically};
use super::record::{self, Scanned, Scanner};
use super::segment::keep_aside;
use super::{DeadLetter, DeadLetterStore, QueueError};

/// One record of the dead-letter file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// A stored dead letter.
    Letter(DeadLetter),
    /// The next id to give out; written first when the file is rewritten, so that ids
    /// are never reused after removals.
    NextId(u64),
}

/// A [`DeadLetterStore`] in `<queue path>/dead-letters/letters.log`.
///
/// Each letter is one record framed like the queue's segments (magic, length, crc32,
/// JSON body) and synced before [`put`](DeadLetterStore::put) returns. Damaged records
/// are skipped with a warning (a torn tail is cut off and kept aside, as in the log).
/// [`remove`](DeadLetterStore::remove) rewrites the file atomically. Listing reads the file,
/// so memory use does not grow with the number of letters.
#[derive(Debug, Clone)]
pub struct FileDeadLetters {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: File,
    next_id: u64,
}

impl FileDeadLetters {
    /// Opens (or creates) the store in the `dead-letters` folder of `queue_path`.
    ///
    /// # Errors
    ///
    /// An I/O error creating, reading or repairing the file.
    pub fn open(queue_path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let dir = queue_path.as_ref().join("dead-letters");
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join("letters.log");
        let mut next_id = 1;
        if path.exists() {
            let (entries, tail) = read_entries(&path)?;
            for entry in entries {
                next_id = next_id.max(match entry {
                    Entry::Letter(letter) => letter.id + 1,
                    Entry::NextId(id) => id,
                });
            }
            if let Some(offset) = tail {
                let file = OpenOptions::new().write(true).open(&path);
                let file = file.map_err(|e| io_error(&path, e))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io_error(&path, e))?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path);
        let file = file.map_err(|e| io_error(&path, e))?;
        sync_dir(&dir)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                path,
                file,
                next_id,
            })),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Inner) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&mut lock(&inner)))
            .await
            .map_err(|e| QueueError::Io {
                path: "dead-letters".into(),
                source: std::io::Error::other(e),
            })?
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn encode(entry: &Entry, out: &mut Vec<u8>) -> Result<(), QueueError> {
    let body = serde_json::to_vec(entry).map_err(|e| QueueError::Codec(e.to_string()))?;
    record::frame_into(&body, out);
    Ok(())
}

/// Every valid entry of the file, and the offset of a torn tail if there is one.
fn read_entries(path: &Path) -> Result<(Vec<Entry>, Option<u64>), QueueError> {
    let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
    let mut entries = Vec::new();
    let mut tail = None;
    for scanned in Scanner::new(&bytes) {
        match scanned {
            Scanned::Record { offset, body } => match serde_json::from_slice(body) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    let path = path.display();
                    tracing::warn!(%path, offset, %error, "dead letter unreadable; skipped");
                }
            },
            Scanned::Damaged {
                offset,
                len,
                tail: torn,
            } => {
                let kept_at = keep_aside(path, offset, &bytes[offset..offset + len]);
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes = len,
                    torn_tail = torn,
                    kept_at = ?kept_at,
                    "dead-letter file damaged; skipping bytes",
                );
                if torn {
                    tail = Some(offset as u64);
                }
            }
        }
    }
    Ok((entries, tail))
}

#[async_trait]
impl DeadLetterStore for FileDeadLetters {
    async fn put(&self, mut letter: DeadLetter) -> Result<u64, QueueError> {
        self.blocking(move |inner| {
            letter.id = inner.next_id;
            let id = letter.id;
            let mut buf = Vec::new();
            encode(&Entry::Letter(letter), &mut buf)?;
            let written = inner
                .file
                .write_all(&buf)
                .and_then(|()| inner.file.sync_data());
            written.map_err(|e| io_error(&inner.path, e))?;
            inner.next_id += 1;
            Ok(id)
        })
        .await
    }

    async fn list(&self, destination: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        let destination = destination.map(str::to_string);
        self.blocking(move |inner| {
            let (entries, _) = read_entries(&inner.path)?;
            let letters = entries.into_iter().filter_map(|entry| match entry {
                Entry::Letter(l) if destination.as_ref().is_none_or(|d| *d == l.destination) => {
                    Some(l)
                }
                _ => None,
            });
            Ok(letters.collect())
        })
        .await
    }

    async fn remove(&self, ids: &[u64]) -> Result<(), QueueError> {
        let ids: BTreeSet<u64> = ids.iter().copied().collect();
        self.blocking(move |inner| {
            let (entries, _) = read_entries(&inner.path)?;
            let mut buf = Vec::new();
            encode(&Entry::NextId(inner.next_id), &mut buf)?;
            for entry in entries {
                if let Entry::Letter(letter) = &entry
                    && !ids.contains(&letter.id)
                {
                    encode(&entry, &mut buf)?;
                }
            }
            write_atomically(&inner.path, &buf)?;
            let file = OpenOptions::new().append(true).open(&inner.path);
            inner.file = file.map_err(|e| io_error(&inner.path, e))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use destination_core::testing::sample_events;

    use super::*;

    fn letter(destination: &str, events: usize) -> DeadLetter {
        DeadLetter {
            id: 0,
            destination: destination.into(),
            events: sample_events(events),
            error: "batch rejected by endpoint: 422".into(),
            attempts: 3,
            failed_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn put_list_remove_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDeadLetters::open(dir.path()).unwrap();
        let first = letter("hook", 2);
        let a = store.put(first.clone()).await.unwrap();
        let b = store.put(letter("mail", 1)).await.unwrap();
        let c = store.put(letter("hook", 3)).await.unwrap();
        assert!(a < b && b < c);

        let hook = store.list(Some("hook")).await.unwrap();
        assert_eq!(hook.iter().map(|l| l.id).collect::<Vec<_>>(), vec![a, c]);
        assert_eq!(hook[0], DeadLetter { id: a, ..first });
        store.remove(&[a, c]).await.unwrap();
        drop(store);

        let store = FileDeadLetters::open(dir.path()).unwrap();
        let left = store.list(None).await.unwrap();
        assert_eq!(left.iter().map(|l| l.id).collect::<Vec<_>>(), vec![b]);
        // The highest id was removed; it is still not given out again.
        let d = store.put(letter("hook", 1)).await.unwrap();
        assert!(d > c, "{d} reuses an id");
        let all: Vec<_> = store
            .list(None)
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(all, vec![b, d]);
    }

    #[tokio::test]
    async fn torn_tail_loses_only_the_torn_letter() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileDeadLetters::open(dir.path()).unwrap();
        let kept = store.put(letter("hook", 2)).await.unwrap();
        store.put(letter("hook", 2)).await.unwrap();
        drop(store);
        let path = dir.path().join("dead-letters").join("letters.log");
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();

        let store = FileDeadLetters::open(dir.path()).unwrap();
        let ids: Vec<_> = store
            .list(None)
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, vec![kept]);
        let next = store.put(letter("hook", 1)).await.unwrap();
        drop(store);
        let store = FileDeadLetters::open(dir.path()).unwrap();
        let ids: Vec<_> = store
            .list(None)
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, vec![kept, next]);
        let aside = fs::read_dir(path.parent().unwrap()).unwrap();
        assert!(
            aside
                .map(|e| e.unwrap().path())
                .any(|p| p.extension().is_some_and(|x| x == "corrupt"))
        );
    }
}
