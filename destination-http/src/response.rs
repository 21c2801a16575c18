//! What the endpoint answered, kept per event for the runtime's delivery records.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use destination_core::EventId;

/// How many bytes of a response body a [`ResponseRecord`] keeps at most.
pub const RECORDED_BODY_LIMIT: usize = 1024;

/// How many records a [`ResponseLog`] keeps when not told otherwise.
pub const DEFAULT_LOG_CAPACITY: usize = 4096;

/// The outcome of the last attempt that carried an event.
///
/// In the batched body modes, every event of a request gets the same record.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResponseRecord {
    /// The event.
    pub event_id: EventId,
    /// The response status, or `None` when no response came (connection error, timeout,
    /// refused address, circuit open).
    pub status: Option<u16>,
    /// From sending the request to the end of reading the (possibly cut) response body.
    pub latency: Duration,
    /// The start of the response body, at most [`RECORDED_BODY_LIMIT`] bytes, decoded as
    /// UTF-8 with invalid sequences replaced.
    pub body: String,
    /// What went wrong, when something did: the status's meaning or the transport error.
    /// Never contains a secret or more of the URL than its origin.
    pub error: Option<String>,
    /// When the attempt finished.
    pub at: SystemTime,
}

impl ResponseRecord {
    /// The record as JSON, for delivery records: `status`, `latency_ms`, `body`, `error`
    /// and `at` (RFC 3339, UTC).
    pub fn to_json(&self) -> serde_json::Value {
        let at: chrono::DateTime<chrono::Utc> = self.at.into();
        serde_json::json!({
            "status": self.status,
            "latency_ms": self.latency.as_secs_f64() * 1000.0,
            "body": self.body,
            "error": self.error,
            "at": at.to_rfc3339(),
        })
    }
}

/// A function called with each new [`ResponseRecord`], for example to store it with the
/// delivery record. It runs inside `deliver`, so it must be quick and must not block.
pub type ResponseHook = Arc<dyn Fn(&ResponseRecord) + Send + Sync>;

/// The latest [`ResponseRecord`] of recent events, bounded: when full, the record stored
/// longest ago is dropped.
pub struct ResponseLog {
    capacity: usize,
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    records: HashMap<EventId, ResponseRecord>,
    order: VecDeque<EventId>,
}

impl ResponseLog {
    /// An empty log keeping at most `capacity` records (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(LogInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `record`, replacing an older one of the same event.
    pub fn insert(&self, record: ResponseRecord) {
        let mut inner = self.lock();
        let id = record.event_id;
        if inner.records.insert(id, record).is_some() {
            return;
        }
        inner.order.push_back(id);
        while inner.records.len() > self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.records.remove(&old);
                }
                None => break,
            }
        }
        // Ids taken out with `take` linger in `order`; drop them now and then.
        if inner.order.len() > 2 * self.capacity {
            let LogInner { records, order } = &mut *inner;
            order.retain(|id| records.contains_key(id));
        }
    }

    /// The latest record of `id`.
    pub fn get(&self, id: &EventId) -> Option<ResponseRecord> {
        self.lock().records.get(id).cloned()
    }

    /// Removes and returns the latest record of `id`, once the runtime has stored it.
    pub fn take(&self, id: &EventId) -> Option<ResponseRecord> {
        self.lock().records.remove(id)
    }

    /// How many records are kept.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ResponseLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseLog")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: EventId, status: u16) -> ResponseRecord {
        ResponseRecord {
            event_id: id,
            status: Some(status),
            latency: Duration::from_millis(1),
            body: String::new(),
            error: None,
            at: SystemTime::now(),
        }
    }

    #[test]
    fn keeps_the_latest_and_evicts_the_oldest() {
        let log = ResponseLog::new(2);
        let ids: Vec<EventId> = (0..3).map(|_| EventId::new()).collect();
        log.insert(record(ids[0], 500));
        log.insert(record(ids[0], 200));
        assert_eq!(log.get(&ids[0]).unwrap().status, Some(200));
        log.insert(record(ids[1], 201));
        log.insert(record(ids[2], 202));
        assert_eq!(log.len(), 2);
        assert!(log.get(&ids[0]).is_none());
        assert_eq!(log.take(&ids[1]).unwrap().status, Some(201));
        assert!(log.get(&ids[1]).is_none());
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn taken_ids_do_not_grow_the_queue() {
        let log = ResponseLog::new(3);
        for _ in 0..100 {
            let id = EventId::new();
            log.insert(record(id, 200));
            log.take(&id);
        }
        assert!(log.lock().order.len() <= 6);
        assert!(log.is_empty());
    }
}
