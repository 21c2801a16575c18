//! [`MemoryQueue`]: the [`Queue`] contract without durability.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use destination_core::Event;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{FullPolicy, Queue, QueueError, QueueStats, Record, Seq};

/// Bytes counted per entry besides the payload and the destination name.
const ENTRY_OVERHEAD: u64 = 64;

/// A [`Queue`] kept in memory: same ordering, hand-out, ack and cap rules as
/// [`SegmentLog`](super::SegmentLog), but everything is lost when the process ends.
///
/// For tests and as the baseline in benchmarks. Its byte count is the payload size plus the
/// destination name plus a fixed overhead per entry.
#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<State>,
    space: Notify,
    max_bytes: u64,
    when_full: FullPolicy,
    full_timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    dests: HashMap<String, Cursor>,
    next_seq: Seq,
    used: u64,
    closed: bool,
}

#[derive(Debug, Default)]
struct Cursor {
    unread: VecDeque<(Seq, Event, u64)>,
    inflight: BTreeMap<Seq, (DateTime<Utc>, u64)>,
    notify: Arc<Notify>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// A queue without a size cap.
    pub fn new() -> Self {
        Self::with_limits(u64::MAX, FullPolicy::Reject, Duration::ZERO)
    }

    /// A queue holding at most `max_bytes` (as counted above), with the given full policy.
    pub fn with_limits(max_bytes: u64, when_full: FullPolicy, full_timeout: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            space: Notify::new(),
            max_bytes,
            when_full,
            full_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn append(&self, mut entries: Vec<(String, Event)>) -> Result<Vec<Seq>, QueueError> {
        let sizes: Vec<u64> = (entries.iter())
            .map(|(d, e)| e.encoded_len() as u64 + d.len() as u64 + ENTRY_OVERHEAD)
            .collect();
        let bytes: u64 = sizes.iter().sum();
        let deadline = Instant::now() + self.full_timeout;
        loop {
            let mut freed = pin!(self.space.notified());
            freed.as_mut().enable();
            let notifies = {
                let mut state = self.lock();
                let state = &mut *state;
                if state.closed {
                    return Err(QueueError::Closed);
                }
                if bytes > self.max_bytes {
                    return Err(QueueError::TooLarge {
                        bytes,
                        cap: self.max_bytes,
                    });
                }
                if state.used.saturating_add(bytes) > self.max_bytes {
                    let full = QueueError::Full {
                        used: state.used,
                        cap: self.max_bytes,
                    };
                    if self.when_full == FullPolicy::Reject {
                        return Err(full);
                    }
                    None
                } else {
                    state.used += bytes;
                    let mut seqs = Vec::with_capacity(entries.len());
                    let mut notifies = Vec::new();
                    // Taken only on the way out of the loop: the events move, uncopied.
                    for ((dest, event), size) in
                        std::mem::take(&mut entries).into_iter().zip(&sizes)
                    {
                        let seq = state.next_seq;
                        state.next_seq += 1;
                        let cursor = state.dests.entry(dest).or_default();
                        cursor.unread.push_back((seq, event, *size));
                        notifies.push(Arc::clone(&cursor.notify));
                        seqs.push(seq);
                    }
                    Some((seqs, notifies))
                }
            };
            if let Some((seqs, notifies)) = notifies {
                for notify in notifies {
                    notify.notify_waiters();
                }
                return Ok(seqs);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let used = self.lock().used;
                return Err(QueueError::Full {
                    used,
                    cap: self.max_bytes,
                });
            }
        }
    }

    async fn next(&self, destination: &str, max: usize) -> Result<Vec<Record>, QueueError> {
        let max = max.max(1);
        loop {
            let notify = {
                let mut state = self.lock();
                if state.closed {
                    return Err(QueueError::Closed);
                }
                let cursor = state.dests.entry(destination.to_string()).or_default();
                if !cursor.unread.is_empty() {
                    let n = max.min(cursor.unread.len());
                    let taken: Vec<_> = cursor.unread.drain(..n).collect();
                    let records = taken
                        .into_iter()
                        .map(|(seq, event, size)| {
                            cursor.inflight.insert(seq, (event.sent_at, size));
                            Record {
                                seq,
                                destination: destination.to_string(),
                                event,
                                size: size as usize,
                            }
                        })
                        .collect();
                    return Ok(records);
                }
                Arc::clone(&cursor.notify)
            };
            let mut arrived = pin!(notify.notified());
            arrived.as_mut().enable();
            let ready = {
                let state = self.lock();
                state.closed
                    || state
                        .dests
                        .get(destination)
                        .is_some_and(|c| !c.unread.is_empty())
            };
            if !ready {
                arrived.await;
            }
        }
    }

    async fn ack(&self, destination: &str, seqs: &[Seq]) -> Result<(), QueueError> {
        let freed = {
            let mut state = self.lock();
            let Some(cursor) = state.dests.get_mut(destination) else {
                return Ok(());
            };
            let freed: u64 = seqs
                .iter()
                .filter_map(|s| cursor.inflight.remove(s))
                .map(|e| e.1)
                .sum();
            state.used -= freed;
            freed
        };
        if freed > 0 {
            self.space.notify_waiters();
        }
        Ok(())
    }

    fn stats(&self, destination: &str) -> QueueStats {
        let state = self.lock();
        let Some(cursor) = state.dests.get(destination) else {
            return QueueStats::default();
        };
        let inflight = cursor.inflight.iter().next().map(|(seq, e)| (*seq, e.0));
        let unread = cursor.unread.front().map(|(seq, e, _)| (*seq, e.sent_at));
        let oldest = match (inflight, unread) {
            (Some(a), Some(b)) => Some(a.min(b).1),
            (a, b) => a.or(b).map(|x| x.1),
        };
        QueueStats {
            depth: (cursor.unread.len() + cursor.inflight.len()) as u64,
            oldest_sent_at: oldest,
        }
    }

    async fn close(&self) -> Result<(), QueueError> {
        let notifies: Vec<_> = {
            let mut state = self.lock();
            state.closed = true;
            state
                .dests
                .values()
                .map(|c| Arc::clone(&c.notify))
                .collect()
        };
        for notify in notifies {
            notify.notify_waiters();
        }
        self.space.notify_waiters();
        Ok(())
    }
}
