//! One worker per destination: read from the queue, batch, deliver, retry, dead-letter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use destination_core::{
    Batch, BatchConfig, Batcher, DefaultBatcher, DeliveryError, Destination, ErrorKind, Event,
    EventId, RetryPolicy,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tracing::{Instrument, debug, error, info_span, warn};

use crate::deliveries::{DeliveryLog, DeliveryRecord};
use crate::metrics::{Counters, Metrics};
use crate::queue::{DeadLetter, DeadLetterStore, Queue, QueueError, Seq};
use crate::receipts::{Outcome, Receipts};

/// What the runtime shares with every worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) dead_letters: Arc<dyn DeadLetterStore>,
    pub(crate) receipts: Receipts,
    pub(crate) metrics: Metrics,
    pub(crate) deliveries: Option<DeliveryLog>,
}

/// A destination with the settings the runtime drives it by.
#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) name: String,
    pub(crate) destination: Arc<dyn Destination>,
    pub(crate) batch: BatchConfig,
    pub(crate) retry: RetryPolicy,
    pub(crate) concurrency: usize,
    pub(crate) attempt_timeout: Duration,
}

/// The lifecycle the runtime steers its workers through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Batch by the configured limits.
    Running,
    /// Also flush open batches as soon as the queue has nothing more to read.
    Draining,
    /// Read what is left in the queue, flush open batches, and finish by the deadline.
    Stopping(Duration),
}

/// Long enough to stand for "no deadline".
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The fewest events a worker asks the queue for at once.
const MIN_READ: usize = 64;

/// How long the queue must stay empty before a draining worker flushes its open batches,
/// and before a stopping worker stops reading.
const IDLE_FLUSH: Duration = Duration::from_millis(20);

/// Runs the worker of one destination until the state becomes `Stopping`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    handle: Arc<Handle>,
    mut state: watch::Receiver<State>,
) {
    let mut worker = Worker {
        batcher: DefaultBatcher::new(handle.batch.clone()),
        seqs: HashMap::new(),
        permits: Arc::new(Semaphore::new(handle.concurrency)),
        pause: Arc::new(Pause::default()),
        tasks: JoinSet::new(),
        phase: Phase::Running(state.clone()),
        gave_up: false,
        shared,
        handle,
    };
    // At least a few events per read even for one-event batches: a read that misses the
    // queue's memory cache goes to disk on a blocking thread, and paying that hand-off per
    // event would make the reads, not the deliveries, the limit.
    let read_max = worker.handle.batch.max_events.clamp(MIN_READ, 1000);

    // The read in progress is kept across turns of the loop: dropping it whenever a delivery
    // finishes first would throw away events already read from disk, and read them again.
    // After a failed read the next one starts after a pause, which is part of the read, so
    // that the loop keeps watching for shutdown meanwhile.
    let read_next = {
        let queue = Arc::clone(&worker.shared.queue);
        let name = worker.handle.name.clone();
        move |after: Duration| {
            let (queue, name) = (Arc::clone(&queue), name.clone());
            Box::pin(async move {
                if !after.is_zero() {
                    sleep(after).await;
                }
                queue.next(&name, read_max).await
            })
        }
    };
    let mut read = read_next(Duration::ZERO);

    let deadline = loop {
        let current = *state.borrow_and_update();
        if let State::Stopping(deadline) = current {
            break deadline;
        }
        let draining = current == State::Draining && worker.batcher.pending() > 0;
        let wake = match (worker.batcher.next_deadline(), draining) {
            (age, true) => {
                let idle = Instant::now() + IDLE_FLUSH;
                Some(age.map_or(idle, |a| Instant::from_std(a).min(idle)))
            }
            (age, false) => age.map(Instant::from_std),
        };

        tokio::select! {
            biased;
            changed = state.changed() => {
                if changed.is_err() {
                    break Duration::ZERO;
                }
            }
            _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                let now = Instant::now().into_std();
                let batches = if draining {
                    worker.batcher.flush_all()
                } else {
                    worker.batcher.flush_due(now)
                };
                for batch in batches {
                    worker.dispatch(batch).await;
                }
            }
            records = &mut read => match records {
                Ok(records) => {
                    read = read_next(Duration::ZERO);
                    for record in records {
                        worker.push(record.seq, record.event, record.size).await;
                    }
                }
                Err(QueueError::Closed) => break Duration::ZERO,
                Err(err) => {
                    error!(destination = %worker.handle.name, error = %crate::registry::chain(&err), "queue read failed; trying again in a second");
                    read = read_next(Duration::from_secs(1));
                }
            },
            Some(_) = worker.tasks.join_next(), if !worker.tasks.is_empty() => {}
        }
    };

    worker.finish(deadline, read_max).await;
}

struct Worker {
    shared: Arc<Shared>,
    handle: Arc<Handle>,
    batcher: DefaultBatcher,
    seqs: HashMap<EventId, Seq>,
    permits: Arc<Semaphore>,
    pause: Arc<Pause>,
    tasks: JoinSet<()>,
    /// Bounds each wait for a delivery slot.
    phase: Phase,
    /// A batch was left undelivered for the shutdown. Nothing after it is dispatched: the
    /// queue keeps one acknowledged-below position per destination, so a batch delivered
    /// after a gap would be delivered again on the next start, with all the rest.
    gave_up: bool,
}

/// What ends a wait for a delivery slot.
enum Phase {
    /// The runtime starting to stop, watched so that a destination whose slots are all
    /// taken by retrying batches still notices it.
    Running(watch::Receiver<State>),
    /// Shutdown's deadline: no slot is waited for past it.
    Finishing(Instant),
}

/// Resolves once the runtime starts stopping (or is gone).
async fn stopping(state: &mut watch::Receiver<State>) {
    loop {
        if matches!(*state.borrow_and_update(), State::Stopping(_)) {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

impl Worker {
    async fn push(&mut self, seq: Seq, event: Event, size: usize) {
        let partition = self.handle.destination.partition_key(&event);
        let id = event.id;
        self.seqs.insert(id, seq);
        let now = Instant::now().into_std();
        match self.batcher.push_sized(partition, event, size, now) {
            Ok(batches) => {
                for batch in batches {
                    self.dispatch(batch).await;
                }
            }
            Err(too_large) => {
                let error = too_large.to_string();
                let batch = Batch::new(None, vec![*too_large.event]);
                let seqs = self.take_seqs(&batch);
                let job = Job::new(&self.shared, &self.handle, batch, seqs);
                job.record(Rejected::All, Some(&error), 0);
                job.dead_letter(error, 0, None).await;
            }
        }
    }

    fn take_seqs(&mut self, batch: &Batch) -> Vec<Seq> {
        batch.ids().filter_map(|id| self.seqs.remove(&id)).collect()
    }

    /// Starts delivering a batch once a concurrency permit is free; during shutdown, only
    /// if one frees up by the deadline and no earlier batch was given up.
    async fn dispatch(&mut self, batch: Batch) {
        let seqs = self.take_seqs(&batch);
        if self.gave_up {
            return;
        }
        let acquire = Arc::clone(&self.permits).acquire_owned();
        let permit = match &mut self.phase {
            Phase::Running(state) => tokio::select! {
                permit = acquire => permit.ok(),
                () = stopping(state) => None,
            },
            Phase::Finishing(until) => timeout_at(*until, acquire).await.ok().and_then(Result::ok),
        };
        let Some(permit) = permit else {
            // Not delivered and not acknowledged: the events stay queued.
            self.gave_up = true;
            return;
        };
        let job = Job::new(&self.shared, &self.handle, batch, seqs);
        let pause = Arc::clone(&self.pause);
        let span = info_span!(
            "batch",
            destination = %self.handle.name,
            batch_id = %job.batch.key(),
            events = job.batch.len(),
            bytes = job.batch.bytes(),
        );
        self.tasks.spawn(
            async move {
                job.deliver(&pause).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Delivers what was queued before shutdown, for up to `deadline`: events not read yet,
    /// then every open batch; what is not delivered by then stays in the queue.
    async fn finish(mut self, deadline: Duration, read_max: usize) {
        // A deadline too long to add to the clock (`Duration::MAX`, say) is a year.
        let now = Instant::now();
        let until = now.checked_add(deadline).unwrap_or(now + FAR);
        self.phase = Phase::Finishing(until);
        // A program that sends and then shuts down expects those events to go out, even when
        // the worker had not read them yet. Intake is closed, so the queue runs dry; a
        // `send` accepted just before the stop is written within one group commit.
        while !self.gave_up && Instant::now() < until {
            let next = self.shared.queue.next(&self.handle.name, read_max);
            match timeout(IDLE_FLUSH, next).await {
                Ok(Ok(records)) if !records.is_empty() => {
                    for record in records {
                        self.push(record.seq, record.event, record.size).await;
                    }
                }
                // Dry, closed or failing: what is left stays queued.
                _ => break,
            }
        }
        for batch in self.batcher.flush_all() {
            self.dispatch(batch).await;
        }
        let wait_all = async { while self.tasks.join_next().await.is_some() {} };
        if timeout(until.saturating_duration_since(Instant::now()), wait_all)
            .await
            .is_err()
        {
            warn!(
                destination = %self.handle.name,
                batches = self.tasks.len(),
                "shutdown deadline passed; undelivered events stay queued for the next start"
            );
            self.tasks.shutdown().await;
        }
        if let Err(err) = self.handle.destination.close().await {
            warn!(destination = %self.handle.name, error = %err.chain(), "destination close failed");
        }
    }
}

/// Pauses every delivery of a destination, for rate limits.
#[derive(Debug, Default)]
struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    fn extend(&self, until: Instant) {
        let mut current = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none_or(|c| c < until) {
            *current = Some(until);
        }
    }

    async fn wait(&self) {
        loop {
            let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > Instant::now() => sleep_until(t).await,
                _ => return,
            }
        }
    }
}

/// Which events of a batch were given up.
#[derive(Clone, Copy)]
enum Rejected<'a> {
    None,
    Some(&'a [EventId]),
    All,
}

/// One batch on its way, with the queue positions to acknowledge.
struct Job {
    shared: Arc<Shared>,
    handle: Arc<Handle>,
    batch: Batch,
    seqs: Vec<Seq>,
}

impl Job {
    fn new(shared: &Arc<Shared>, handle: &Arc<Handle>, batch: Batch, seqs: Vec<Seq>) -> Self {
        Self {
            shared: Arc::clone(shared),
            handle: Arc::clone(handle),
            batch,
            seqs,
        }
    }

    fn counters(&self) -> Option<&Counters> {
        self.shared.metrics.get(&self.handle.name)
    }

    async fn deliver(self, pause: &Pause) {
        let started = Instant::now();
        let mut attempts = 0;
        let error = loop {
            pause.wait().await;
            attempts += 1;
            let attempt = timeout(
                self.handle.attempt_timeout,
                self.handle.destination.deliver(&self.batch),
            );
            let err = match attempt.await {
                Ok(Ok(())) => {
                    debug!(
                        attempt = attempts,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "batch delivered"
                    );
                    self.record(Rejected::None, None, attempts);
                    return self.delivered(None).await;
                }
                Ok(Err(err)) => err,
                Err(_) => DeliveryError::retryable(format!(
                    "delivery attempt timed out after {:?} (attempt_timeout)",
                    self.handle.attempt_timeout
                )),
            };
            if let Some(c) = self.counters() {
                Counters::add(&c.failed, 1);
            }
            let delay = self
                .handle
                .retry
                .next_delay(attempts, started.elapsed(), &err);
            let Some(delay) = delay else {
                break err;
            };
            warn!(
                attempt = attempts,
                max_attempts = self.handle.retry.max_attempts,
                backoff_ms = delay.as_millis() as u64,
                retryable = true,
                error = %err.chain(),
                "delivery failed; retry scheduled"
            );
            if let Some(c) = self.counters() {
                Counters::add(&c.retried, 1);
            }
            if matches!(err.kind(), ErrorKind::RateLimited { .. }) {
                pause.extend(Instant::now() + delay);
            }
            sleep(delay).await;
        };

        let message = error.chain();
        error!(attempts, error = %message, kind = ?error.kind(), "batch given up; moving to dead letters");
        match error.rejected() {
            Some(rejected) if matches!(error.kind(), ErrorKind::Permanent | ErrorKind::Config) => {
                let rejected = rejected.to_vec();
                self.record(Rejected::Some(&rejected), Some(&message), attempts);
                self.delivered(Some((rejected, message, attempts))).await;
            }
            _ => {
                self.record(Rejected::All, Some(&message), attempts);
                self.dead_letter(message, attempts, None).await;
            }
        }
    }

    /// Keeps the outcome with the batch's delivery record, and each event's last response
    /// when the destination recorded one.
    fn record(&self, rejected: Rejected<'_>, error: Option<&str>, attempts: u32) {
        let Some(log) = &self.shared.deliveries else {
            return;
        };
        let outcome = |id: Option<&EventId>| {
            let dead = match (rejected, id) {
                (Rejected::None, _) => false,
                (Rejected::All, _) => true,
                (Rejected::Some(ids), Some(id)) => ids.contains(id),
                (Rejected::Some(_), None) => false,
            };
            match (dead, rejected) {
                (true, _) => "dead_lettered",
                (false, Rejected::Some(_)) if id.is_none() => "partly_delivered",
                (false, _) => "delivered",
            }
        };
        let base = DeliveryRecord {
            at: Utc::now(),
            destination: self.handle.name.clone(),
            batch: self.batch.key(),
            events: self.batch.len(),
            outcome: outcome(None).to_string(),
            attempts,
            error: error.map(str::to_string),
            event: None,
            response: None,
        };
        let mut answered = false;
        for id in self.batch.ids() {
            if let Some(response) = self.handle.destination.take_response(&id) {
                answered = true;
                log.record(DeliveryRecord {
                    outcome: outcome(Some(&id)).to_string(),
                    event: Some(id),
                    response: Some(response),
                    ..base.clone()
                });
            }
        }
        if !answered {
            log.record(base);
        }
    }

    /// Acknowledges a delivered batch; `rejected` names events to dead-letter instead.
    async fn delivered(self, rejected: Option<(Vec<EventId>, String, u32)>) {
        let Some((ids, message, attempts)) = rejected else {
            if let Some(c) = self.counters() {
                Counters::add(&c.delivered, self.batch.len());
            }
            self.ack().await;
            self.shared
                .receipts
                .resolve(self.batch.ids(), &Outcome::Delivered);
            return;
        };
        let ok: Vec<EventId> = self.batch.ids().filter(|id| !ids.contains(id)).collect();
        if let Some(c) = self.counters() {
            Counters::add(&c.delivered, ok.len());
        }
        self.shared.receipts.resolve(ok, &Outcome::Delivered);
        self.dead_letter(message, attempts, Some(ids)).await;
    }

    /// Moves the batch's events (or only `only`) to the dead-letter store, then acknowledges
    /// the whole batch.
    async fn dead_letter(self, error: String, attempts: u32, only: Option<Vec<EventId>>) {
        let events: Vec<Event> = match &only {
            Some(ids) => self
                .batch
                .events()
                .iter()
                .filter(|e| ids.contains(&e.id))
                .cloned()
                .collect(),
            None => self.batch.events().to_vec(),
        };
        let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        let count = events.len();
        let letter = DeadLetter {
            id: 0,
            destination: self.handle.name.clone(),
            events,
            error: error.clone(),
            attempts,
            failed_at: Utc::now(),
        };
        if let Err(err) = self.shared.dead_letters.put(letter).await {
            // Without a durable dead letter the events must stay queued: no ack.
            error!(
                destination = %self.handle.name,
                error = %crate::registry::chain(&err),
                "dead-letter store write failed; events stay queued until the next start"
            );
            return;
        }
        if let Some(c) = self.counters() {
            Counters::add(&c.dead_lettered, count);
        }
        self.ack().await;
        self.shared
            .receipts
            .resolve(ids, &Outcome::DeadLettered(error));
    }

    async fn ack(&self) {
        if let Err(err) = self.shared.queue.ack(&self.handle.name, &self.seqs).await {
            error!(
                destination = %self.handle.name,
                error = %crate::registry::chain(&err),
                "queue acknowledgement failed; events may be delivered again after a restart"
            );
        }
    }
}
