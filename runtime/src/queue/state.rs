//! The log's in-memory index, shared by callers and the writer thread.

use destination_core::Event;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::cursor::DestState;
use super::segment::SegmentMeta;
use super::{QueueConfig, Seq};

/// State shared by callers and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Woken when disk space is freed or the log closes.
    pub(crate) space: Notify,
    pub(crate) config: QueueConfig,
    pub(crate) segments_dir: PathBuf,
    pub(crate) progress_path: PathBuf,
}

/// The in-memory index, behind the mutex.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) dests: HashMap<String, DestState>,
    pub(crate) segments: BTreeMap<u64, SegmentMeta>,
    pub(crate) active: u64,
    /// Bytes of live segments plus bytes reserved by appends in progress.
    pub(crate) used: u64,
    pub(crate) next_seq: Seq,
    pub(crate) closed: bool,
    /// Acks happened since progress was last persisted.
    pub(crate) dirty: bool,
    /// Appends waiting for space.
    pub(crate) space_waiters: usize,
    /// An append was refused for space since the active segment was last rolled: roll it
    /// as soon as it is fully acknowledged, so that its space can be freed.
    pub(crate) space_wanted: bool,
    /// Events appended by this process and not yet handed out, so that `next` can skip
    /// reading and decoding them from disk; bounded by `QueueConfig::read_cache_bytes`.
    pub(crate) cache: HashMap<Seq, Event>,
    /// Encoded bytes of the events in `cache`.
    pub(crate) cache_bytes: u64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock with the index half-updated.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the log closed and wakes every waiter.
    pub(crate) fn close(&self) {
        let notifies: Vec<_> = {
            let mut state = self.lock();
            state.closed = true;
            state
                .dests
                .values()
                .map(|d| Arc::clone(&d.notify))
                .collect()
        };
        for notify in notifies {
            notify.notify_waiters();
        }
        self.space.notify_waiters();
    }
}
