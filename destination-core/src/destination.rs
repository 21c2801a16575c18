//! The `Destination` trait: where batches of events are delivered.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::batch::Batch;
use crate::batcher::BatchConfig;
use crate::error::DeliveryError;
use crate::event::{Event, EventId};

/// A place events are delivered to: a webhook, a mailbox, a bucket, a table, a stream.
///
/// The runtime owns queuing, batching, retries and dead-lettering; a destination only
/// turns one batch into one delivery attempt and classifies the outcome.
///
/// # Contract
///
/// - **At least once.** The runtime calls [`deliver`](Self::deliver) until it returns
///   `Ok`, a non-retryable error, or the retry policy gives up. The same batch, with the
///   same events in the same order, may therefore be delivered more than once: after a
///   timeout whose request did land, or after a crash before the acknowledgement was
///   written.
/// - **Idempotency.** Every event carries an [`EventId`](crate::EventId) that never
///   changes. Use it (or [`Batch::key`]) so that a repeated delivery has the effect of one:
///   an idempotency header, an object key, a primary key. Document what you do where the
///   target cannot deduplicate.
/// - **Ordering.** Events of a batch are in the order they were sent. Batches of one
///   destination may be delivered concurrently, so there is no order between batches.
/// - `Ok(())` means every event of the batch is durably accepted by the target.
///
/// # Errors
///
/// Return a [`DeliveryError`] of the class that tells the runtime what to do:
/// [`retryable`](DeliveryError::retryable) for transient failures,
/// [`rate_limited`](DeliveryError::rate_limited) when the target asks to slow down (the
/// runtime pauses the whole destination), [`permanent`](DeliveryError::permanent) for
/// events the target will never accept (dead-lettered, optionally only the ones named with
/// [`with_rejected`](DeliveryError::with_rejected)), and [`config`](DeliveryError::config)
/// when the destination itself is misconfigured.
///
/// # Cancel safety
///
/// The runtime may drop a `deliver` future (at shutdown, or when an attempt times out). The
/// batch is then treated as not delivered and is delivered again later, so dropping must
/// never leave a partial result visible as complete: write under a temporary name, use a
/// transaction, or rely on the idempotency key.
///
/// # Examples
///
/// ```
/// use async_trait::async_trait;
/// use destination_core::{Batch, DeliveryError, Destination, Event};
/// use serde_json::json;
///
/// #[derive(Debug)]
/// struct Stdout;
///
/// #[async_trait]
/// impl Destination for Stdout {
///     fn name(&self) -> &str {
///         "stdout"
///     }
///
///     async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
///         for event in batch.events() {
///             println!("{} {}", event.id, event.payload());
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), DeliveryError> {
/// let batch = Batch::new(None, vec![Event::new(json!({"hello": "world"}))]);
/// Stdout.deliver(&batch).await?;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Destination: Send + Sync + fmt::Debug {
    /// A short name for logs and errors, for example the configured destination name.
    fn name(&self) -> &str;

    /// Delivers one batch.
    ///
    /// # Errors
    ///
    /// See the trait's `# Errors` section.
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError>;

    /// Checks that the target is reachable and the configuration is accepted, without
    /// delivering anything.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`] describing what is wrong.
    async fn health_check(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// Releases connections and finishes background work; called once at shutdown after
    /// the last `deliver` returned.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`] describing what could not be finished.
    async fn close(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    /// The batch partition an event belongs to (an S3 prefix, a SQL table); events of
    /// different partitions are never delivered in the same batch.
    fn partition_key(&self, event: &Event) -> Option<String> {
        let _ = event;
        None
    }

    /// The batch limits used when the configuration sets none.
    fn default_batch(&self) -> BatchConfig {
        BatchConfig::default()
    }

    /// Hands over what the target last answered for `event`, for destinations that record
    /// it (an HTTP destination keeps the status, latency and start of the body), and
    /// forgets it. The runtime calls this once the event is delivered or given up, and keeps
    /// the answer with the event's delivery record.
    fn take_response(&self, event: &EventId) -> Option<serde_json::Value> {
        let _ = event;
        None
    }
}

macro_rules! forward_destination {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: Destination + ?Sized> Destination for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }

            async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
                (**self).deliver(batch).await
            }

            async fn health_check(&self) -> Result<(), DeliveryError> {
                (**self).health_check().await
            }

            async fn close(&self) -> Result<(), DeliveryError> {
                (**self).close().await
            }

            fn partition_key(&self, event: &Event) -> Option<String> {
                (**self).partition_key(event)
            }

            fn default_batch(&self) -> BatchConfig {
                (**self).default_batch()
            }

            fn take_response(&self, event: &EventId) -> Option<serde_json::Value> {
                (**self).take_response(event)
            }
        }
    };
}

forward_destination!(Arc<T>);
forward_destination!(Box<T>);

#[cfg(test)]
mod tests {
    use super::*;

    // Fails to compile if `Destination` stops being object safe.
    fn _object_safe(_: Box<dyn Destination>, _: Arc<dyn Destination>) {}
}
