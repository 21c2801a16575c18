//! The core of Destinations: events, batches, the [`Destination`] and [`Batcher`] traits,
//! error classes and the retry policy.
//!
//! A destination crate depends on this crate alone. It implements [`Destination`] for its
//! target and classifies failures with [`DeliveryError`]; the runtime (the `destinations`
//! crate) queues events durably, batches them with a [`Batcher`], retries per the
//! [`RetryPolicy`] and dead-letters what cannot be delivered.
//!
//! With the `testing` feature, the [`testing`] module offers an in-memory destination and a
//! conformance suite that any destination, including a third party's, runs against itself.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod batcher;
mod destination;
pub mod duration;
mod error;
mod event;
mod json;
mod retry;
mod secret;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use batch::Batch;
pub use batcher::{BatchConfig, BatchSettings, Batcher, DefaultBatcher, EventTooLarge};
pub use destination::Destination;
pub use error::{DeliveryError, ErrorKind, error_chain};
pub use event::{Attributes, Event, EventId, MAX_PAYLOAD_DEPTH};
pub use retry::RetryPolicy;
pub use secret::Secret;
