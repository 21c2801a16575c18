//! The webhook destination: delivers events to an HTTP endpoint, in the manner of
//! Pipedream's `$send.http`.
//!
//! By default each event is one `POST` with its payload as a JSON body; with `body =
//! "json_array"` or `"ndjson"`, each batch is one request. Every request carries an
//! idempotency header that stays the same across retries and, when signing secrets are
//! set, [Standard Webhooks](https://www.standardwebhooks.com/) signatures.
//!
//! The runtime retries; this crate only classifies each outcome (see
//! [`HttpDestination`]'s `# Errors`) and parses `Retry-After`.
//!
//! # Security
//!
//! - TLS certificates are verified unless `danger_accept_invalid_certs` is set.
//! - Link-local (169.254.0.0/16, fe80::/10) and cloud metadata addresses are refused unless
//!   `allow_link_local` is set. The check runs on the address written in the URL before
//!   anything is sent, and on every address a host name resolves to, before connecting.
//!   Redirects are not followed and environment proxies are ignored, since either would
//!   escape the check.
//! - Credentials, header and parameter values never appear in logs, errors or `Debug`
//!   output; URLs show only their origin (see [`redact_url`]).
//! - Configured headers, parameters and credentials are not sent to a URL of another
//!   origin that an event's override chose.
//!
//! # Per-event overrides
//!
//! With `allow_override = true`, these event attributes change that event's request:
//! `url` (string), `method` (string), `headers` and `params` (objects of strings, merged
//! over the configured ones) and `auth` (`{username, password}` or `{token}`). Without
//! it, they are ignored.
//!
//! # Known limitations
//!
//! - HTTP/1.1 only, without response decompression, and no proxy support.
//! - Batched bodies carry the payloads only; receivers deduplicate by batch key, not by
//!   event (see [`HttpDestination`]).
//! - Response records live in memory, in the process that sent the requests.
//! - A webhook secret in the URL's path shows in no log, but neither does the path.
//!
//! # Examples
//!
//! ```
//! use destination_core::Destination;
//! use destination_http::{BodyMode, HttpConfig, HttpDestination};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: HttpConfig = serde_json::from_str(
//!     r#"{"url": "https://hooks.example.com/in", "body": "ndjson",
//!         "signing_secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}"#,
//! )?;
//! let dest = HttpDestination::new("audit", config)?;
//! assert_eq!(dest.default_batch().max_events, destination_core::BatchConfig::default().max_events);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod breaker;
mod client;
mod config;
mod destination;
mod error;
mod method;
mod outcome;
mod response;
mod retry;
mod signing;
mod target;

pub use auth::{Auth, BasicAuth, BearerAuth};
pub use config::{
    BodyMode, CircuitBreakerConfig, DEFAULT_IDEMPOTENCY_HEADER, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT, HttpConfig,
};
pub use destination::HttpDestination;
pub use error::{HttpError, redact_url};
pub use method::{Method, UnknownMethod};
pub use response::{
    DEFAULT_LOG_CAPACITY, RECORDED_BODY_LIMIT, ResponseHook, ResponseLog, ResponseRecord,
};
pub use retry::{InvalidStatusPattern, StatusPattern, parse_retry_after};
