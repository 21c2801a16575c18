//! Receipts: futures that resolve when an event is delivered or dead-lettered.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use destination_core::EventId;
use tokio::sync::oneshot;

/// What finally happened to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The destination accepted the event.
    Delivered,
    /// The event was moved to the dead-letter store; the text is the last error.
    DeadLettered(String),
    /// The runtime shut down first; the event is still queued and will be delivered after
    /// the next start.
    Pending,
}

/// Resolves to the [`Outcome`] of one event.
///
/// Awaiting a receipt is optional: an event is delivered whether or not anyone waits.
#[derive(Debug)]
pub struct Receipt {
    rx: oneshot::Receiver<Outcome>,
}

impl Future for Receipt {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|result| result.unwrap_or(Outcome::Pending))
    }
}

/// Waiting receipts by event id.
#[derive(Debug, Default)]
pub(crate) struct Receipts {
    waiting: Mutex<HashMap<EventId, oneshot::Sender<Outcome>>>,
    // Read without the lock on the hot path: no receipt, no locking.
    count: AtomicUsize,
}

impl Receipts {
    pub(crate) fn register(&self, id: EventId) -> Receipt {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.insert(id, tx);
        self.count.store(waiting.len(), Ordering::Release);
        Receipt { rx }
    }

    pub(crate) fn forget(&self, ids: impl IntoIterator<Item = EventId>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            waiting.remove(&id);
        }
        self.count.store(waiting.len(), Ordering::Release);
    }

    pub(crate) fn resolve(&self, ids: impl IntoIterator<Item = EventId>, outcome: &Outcome) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(outcome.clone());
            }
        }
        self.count.store(waiting.len(), Ordering::Release);
    }
}
