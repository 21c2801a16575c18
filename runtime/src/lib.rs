//! Destinations: hand an event to a [`Sender`] and move on; the runtime delivers it later,
//! durably, to a webhook, a mailbox, an object store, a SQL warehouse, Snowflake or a live
//! SSE stream.
//!
//! `send` returns once the event is in the durable [queue] (an embedded segment log by
//! default). One worker per destination reads its events, groups them with a
//! [`Batcher`](destination_core::Batcher), delivers batches with a concurrency limit, retries
//! per the destination's [`RetryPolicy`](destination_core::RetryPolicy) and moves what cannot
//! be delivered to the dead-letter store, from which it can be listed and replayed.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use destination_core::testing::MemoryDestination;
//! use destinations::{Outcome, Runtime};
//! use serde_json::json;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let memory = Arc::new(MemoryDestination::new("memory"));
//! let runtime = Runtime::builder()
//!     .memory_queue()
//!     .destination("memory", memory.clone())
//!     .build()
//!     .await?;
//!
//! let sender = runtime.sender();
//! let (id, receipt) = sender.send_with_receipt("memory", json!({"hello": "world"})).await?;
//! assert_eq!(receipt.await, Outcome::Delivered);
//! assert_eq!(memory.events()[0].id, id);
//!
//! runtime.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! One Cargo feature per destination: `http`, `email`, `s3` (default), `sql`, `snowflake`,
//! `sse`, and `full` for all of them. A build only links the destinations it names.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod dead_letters;
pub mod deliveries;
mod metrics;
pub mod queue;
mod receipts;
mod registry;
mod runtime;
mod sender;
pub mod server;
mod worker;

pub use config::{
    Config, ConfigError, DestinationConfig, DestinationSettings, ServerConfig, ShutdownConfig,
};
pub use dead_letters::MemoryDeadLetters;
pub use metrics::{Metrics, Snapshot};
pub use receipts::{Outcome, Receipt};
pub use registry::build as build_destination;
pub use runtime::{Runtime, RuntimeBuilder, RuntimeError};
#[cfg(any(
    feature = "http",
    feature = "email",
    feature = "s3",
    feature = "sql",
    feature = "snowflake",
    feature = "sse"
))]
pub use sender::typed;
pub use sender::{Scope, SendError, Sender};
