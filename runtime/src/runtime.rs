//! The [`Runtime`]: the queue, one worker per destination, and their lifecycle.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use destination_core::{BatchConfig, DeliveryError, Destination};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{Config, ConfigError, DestinationSettings};
use crate::dead_letters::MemoryDeadLetters;
use crate::deliveries::DeliveryLog;
use crate::metrics::Metrics;
use crate::queue::{
    DeadLetterStore, FileDeadLetters, MemoryQueue, Queue, QueueConfig, QueueError, SegmentLog,
};
use crate::receipts::Receipts;
use crate::sender::{Intake, Sender};
use crate::worker::{self, Handle, Shared, State};

/// Why the runtime could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The queue or dead-letter store failed.
    #[error("queue failed")]
    Queue(#[from] QueueError),
}

enum QueueChoice {
    Embedded(QueueConfig),
    Memory,
    Custom(Arc<dyn Queue>, Arc<dyn DeadLetterStore>),
}

/// Builds a [`Runtime`] from code.
///
/// # Examples
///
/// ```
/// # use std::sync::Arc;
/// # use destination_core::testing::MemoryDestination;
/// use destinations::{DestinationSettings, Runtime};
/// use destinations::queue::QueueConfig;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let runtime = Runtime::builder()
///     .queue(QueueConfig { path: dir.path().join("queue"), ..QueueConfig::default() })
///     .destination("audit", Arc::new(MemoryDestination::new("audit")))
///     .build()
///     .await?;
/// runtime.sender().send("audit", serde_json::json!({"ok": true})).await?;
/// runtime.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RuntimeBuilder {
    queue: QueueChoice,
    destinations: Vec<(String, Arc<dyn Destination>, DestinationSettings)>,
    shutdown_deadline: Duration,
    max_event_bytes: usize,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("destinations", &self.destinations.len())
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// Uses the embedded durable queue (the default) with these settings.
    pub fn queue(mut self, config: QueueConfig) -> Self {
        self.queue = QueueChoice::Embedded(config);
        self
    }

    /// Uses an in-memory queue: nothing survives a restart. For tests and examples.
    pub fn memory_queue(mut self) -> Self {
        self.queue = QueueChoice::Memory;
        self
    }

    /// Uses another queue backend and dead-letter store.
    pub fn custom_queue(mut self, queue: Arc<dyn Queue>, dead: Arc<dyn DeadLetterStore>) -> Self {
        self.queue = QueueChoice::Custom(queue, dead);
        self
    }

    /// Adds a destination with default settings.
    pub fn destination(self, name: impl Into<String>, destination: Arc<dyn Destination>) -> Self {
        self.destination_with(name, destination, DestinationSettings::default())
    }

    /// Adds a destination with batch, retry and concurrency settings.
    pub fn destination_with(
        mut self,
        name: impl Into<String>,
        destination: Arc<dyn Destination>,
        settings: DestinationSettings,
    ) -> Self {
        self.destinations.push((name.into(), destination, settings));
        self
    }

    /// How long shutdown waits for open batches (default 30 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// The largest event `send` accepts, in bytes of JSON (default 1 MiB).
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_event_bytes = max;
        self
    }

    /// Opens the queue and starts one worker per destination.
    ///
    /// # Errors
    ///
    /// [`RuntimeError`] when a name repeats, settings are invalid, or the queue cannot be
    /// opened.
    pub async fn build(self) -> Result<Runtime, RuntimeError> {
        let mut handles = Vec::new();
        let mut names = HashSet::new();
        for (name, destination, settings) in self.destinations {
            if !names.insert(name.clone()) {
                return Err(
                    ConfigError::invalid(format!("destination `{name}` is defined twice")).into(),
                );
            }
            let batch = resolve_batch(&name, destination.default_batch(), &settings)?;
            handles.push(Arc::new(Handle {
                batch,
                retry: settings.retry,
                concurrency: settings.concurrency.unwrap_or(4).max(1),
                attempt_timeout: settings.attempt_timeout.unwrap_or(Duration::from_secs(60)),
                destination,
                name,
            }));
        }

        let mut deliveries = None;
        let (queue, dead_letters): (Arc<dyn Queue>, Arc<dyn DeadLetterStore>) = match self.queue {
            QueueChoice::Embedded(config) => {
                let dead = FileDeadLetters::open(&config.path)?;
                let log = SegmentLog::open(config.clone()).await?;
                deliveries = Some(DeliveryLog::start(&config.path));
                (Arc::new(log), Arc::new(dead))
            }
            QueueChoice::Memory => (
                Arc::new(MemoryQueue::new()),
                Arc::new(MemoryDeadLetters::default()),
            ),
            QueueChoice::Custom(queue, dead) => (queue, dead),
        };

        let shared = Arc::new(Shared {
            queue,
            dead_letters,
            receipts: Receipts::default(),
            metrics: Metrics::new(handles.iter().map(|h| h.name.clone())),
            deliveries,
        });
        let (state, watcher) = watch::channel(State::Running);
        let workers = handles
            .iter()
            .map(|handle| {
                info!(destination = %handle.name, "destination started");
                tokio::spawn(worker::run(
                    Arc::clone(&shared),
                    Arc::clone(handle),
                    watcher.clone(),
                ))
            })
            .collect();
        let intake = Arc::new(Intake {
            shared,
            names,
            accepting: AtomicBool::new(true),
            max_event_bytes: self.max_event_bytes,
        });
        Ok(Runtime {
            intake,
            handles: handles.into_iter().map(|h| (h.name.clone(), h)).collect(),
            state,
            workers,
            shutdown_deadline: self.shutdown_deadline,
        })
    }
}

fn resolve_batch(
    name: &str,
    defaults: BatchConfig,
    settings: &DestinationSettings,
) -> Result<BatchConfig, ConfigError> {
    defaults
        .with_settings(&settings.batch)
        .map_err(|e| ConfigError::invalid(format!("destinations.{name}: {e}")))
}

/// The running delivery engine: a durable queue and one worker per destination.
///
/// Dropping a runtime without [`shutdown`](Self::shutdown) stops nothing at once: workers
/// keep running until the Tokio runtime ends. Queued events are safe either way.
#[derive(Debug)]
pub struct Runtime {
    intake: Arc<Intake>,
    handles: BTreeMap<String, Arc<Handle>>,
    state: watch::Sender<State>,
    workers: Vec<JoinHandle<()>>,
    shutdown_deadline: Duration,
}

impl Runtime {
    /// A builder with the embedded queue in `./destinations-data` and no destination.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            queue: QueueChoice::Embedded(QueueConfig::default()),
            destinations: Vec::new(),
            shutdown_deadline: Duration::from_secs(30),
            max_event_bytes: 1 << 20,
        }
    }

    /// Builds every configured destination and starts the runtime.
    ///
    /// # Errors
    ///
    /// [`RuntimeError`] when a destination's options are invalid, its type is not compiled
    /// in, or the queue cannot be opened.
    pub async fn from_config(config: &Config) -> Result<Self, RuntimeError> {
        let mut builder = Self::builder()
            .queue(config.queue.clone())
            .shutdown_deadline(config.shutdown.deadline)
            .max_event_bytes(config.server.max_event_bytes);
        for (name, dest) in &config.destinations {
            let built = crate::registry::build(name, dest)?;
            builder = builder.destination_with(name.clone(), built, dest.settings.clone());
        }
        builder.build().await
    }

    /// A handle to queue events with.
    pub fn sender(&self) -> Sender {
        Sender {
            intake: Arc::clone(&self.intake),
        }
    }

    /// The delivery counters.
    pub fn metrics(&self) -> &Metrics {
        &self.intake.shared.metrics
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.intake.shared.queue
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> &Arc<dyn DeadLetterStore> {
        &self.intake.shared.dead_letters
    }

    /// The names of the destinations, sorted.
    pub fn destination_names(&self) -> impl Iterator<Item = &str> {
        self.handles.keys().map(String::as_str)
    }

    /// Prometheus text of every counter and queue gauge.
    pub fn render_metrics(&self) -> String {
        self.metrics().render(self.queue().as_ref())
    }

    /// Runs every destination's health check.
    pub async fn health_check(&self) -> Vec<(String, Result<(), DeliveryError>)> {
        let mut results = Vec::new();
        for (name, handle) in &self.handles {
            results.push((name.clone(), handle.destination.health_check().await));
        }
        results
    }

    /// From now on, workers flush open batches as soon as the queue has nothing more to
    /// read instead of waiting for the age limit: for one-shot jobs.
    pub fn drain(&self) {
        self.state.send_if_modified(|s| {
            let change = *s == State::Running;
            if change {
                *s = State::Draining;
            }
            change
        });
    }

    /// Queues the events of dead letters again and removes those letters; returns how many
    /// events were queued.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Queue`]; letters whose events could not be queued are kept.
    pub async fn replay(&self, destination: Option<&str>) -> Result<usize, RuntimeError> {
        let store = self.dead_letters();
        let mut count = 0;
        for letter in store.list(destination).await? {
            if !self.handles.contains_key(&letter.destination) {
                continue;
            }
            let entries: Vec<_> = letter
                .events
                .into_iter()
                .map(|e| (letter.destination.clone(), e))
                .collect();
            count += entries.len();
            self.sender().send_all(entries).await.map_err(|e| match e {
                crate::SendError::Queue(q) => RuntimeError::Queue(q),
                other => RuntimeError::Config(ConfigError::invalid(other.to_string())),
            })?;
            store.remove(&[letter.id]).await?;
        }
        Ok(count)
    }

    /// Stops intake: every `send` fails with [`SendError::Closed`](crate::SendError::Closed)
    /// from now on, while workers go on delivering. [`shutdown`](Self::shutdown) does this
    /// too.
    pub fn stop_intake(&self) {
        self.intake.accepting.store(false, Ordering::Release);
    }

    /// Stops intake, then delivers what was queued before it (events not read yet, and open
    /// batches) for up to the shutdown deadline, and closes the queue. Everything not
    /// delivered by then stays queued for the next start.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Queue`] when the queue's progress could not be saved.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        let deadline = self.shutdown_deadline;
        self.shutdown_within(deadline).await
    }

    /// Like [`shutdown`](Self::shutdown), with `limit` instead of the configured deadline:
    /// for a caller that spent part of the deadline already.
    ///
    /// # Errors
    ///
    /// [`RuntimeError::Queue`] when the queue's progress could not be saved.
    pub async fn shutdown_within(self, limit: Duration) -> Result<(), RuntimeError> {
        self.intake.accepting.store(false, Ordering::Release);
        let _ = self.state.send(State::Stopping(limit));
        for worker in self.workers {
            let _ = worker.await;
        }
        self.intake.shared.queue.close().await?;
        info!("runtime stopped");
        Ok(())
    }
}
