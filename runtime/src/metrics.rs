//! Per-destination counters, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;

use crate::queue::Queue;

/// Counters of one destination.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) queued: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A counter's name, help text, and how to read it from a snapshot.
type Counter = (&'static str, &'static str, fn(&Snapshot) -> u64);

/// The runtime's metrics, one set of counters per destination.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) destinations: BTreeMap<String, Counters>,
}

/// A snapshot of one destination's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Events durably queued.
    pub queued: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Delivery attempts that were retried.
    pub retried: u64,
    /// Delivery attempts that failed, retried or not.
    pub failed: u64,
    /// Events moved to the dead-letter store.
    pub dead_lettered: u64,
}

impl Metrics {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            destinations: names
                .into_iter()
                .map(|n| (n, Counters::default()))
                .collect(),
        }
    }

    pub(crate) fn get(&self, destination: &str) -> Option<&Counters> {
        self.destinations.get(destination)
    }

    /// The counters of `destination`, if it exists.
    pub fn snapshot(&self, destination: &str) -> Option<Snapshot> {
        let c = self.destinations.get(destination)?;
        Some(Snapshot {
            queued: c.queued.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        })
    }

    /// Renders every counter, plus the queue's depth and oldest age, as Prometheus text.
    pub fn render(&self, queue: &dyn Queue) -> String {
        let mut out = String::new();
        let counters: [Counter; 5] = [
            ("events_queued_total", "Events durably queued.", |s| {
                s.queued
            }),
            ("events_delivered_total", "Events delivered.", |s| {
                s.delivered
            }),
            (
                "delivery_retries_total",
                "Delivery attempts retried.",
                |s| s.retried,
            ),
            (
                "delivery_failures_total",
                "Delivery attempts that failed.",
                |s| s.failed,
            ),
            (
                "events_dead_lettered_total",
                "Events moved to the dead-letter store.",
                |s| s.dead_lettered,
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(out, "# HELP destinations_{name} {help}");
            let _ = writeln!(out, "# TYPE destinations_{name} counter");
            for dest in self.destinations.keys() {
                let value = self.snapshot(dest).map(|s| get(&s)).unwrap_or(0);
                let _ = writeln!(out, "destinations_{name}{{destination=\"{dest}\"}} {value}");
            }
        }

        let now = Utc::now();
        let stats: Vec<_> = self
            .destinations
            .keys()
            .map(|d| (d, queue.stats(d)))
            .collect();
        let _ = writeln!(
            out,
            "# HELP destinations_queue_depth Events queued, not yet done."
        );
        let _ = writeln!(out, "# TYPE destinations_queue_depth gauge");
        for (dest, s) in &stats {
            let _ = writeln!(
                out,
                "destinations_queue_depth{{destination=\"{dest}\"}} {}",
                s.depth
            );
        }
        let _ = writeln!(
            out,
            "# HELP destinations_queue_oldest_age_seconds Age of the oldest queued event."
        );
        let _ = writeln!(out, "# TYPE destinations_queue_oldest_age_seconds gauge");
        for (dest, s) in &stats {
            let age = s
                .oldest_sent_at
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            let _ = writeln!(
                out,
                "destinations_queue_oldest_age_seconds{{destination=\"{dest}\"}} {age}"
            );
        }
        out
    }
}
