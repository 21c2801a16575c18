//! The [`Destination`] implementation: plan requests, send them, classify the outcome.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use destination_core::{Batch, BatchConfig, DeliveryError, Destination, Event, EventId};
use futures::future::join_all;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, warn};
use url::Host;

use crate::breaker::Breaker;
use crate::client::{self, GuardedResolver, find_refusal};
use crate::config::{BodyMode, HttpConfig};
use crate::error::{HttpError, redact_url};
use crate::outcome::{combine, judge};
use crate::response::{DEFAULT_LOG_CAPACITY, ResponseHook, ResponseLog, ResponseRecord};
use crate::retry::StatusPattern;
use crate::signing::{self, Signer};
use crate::target::{Target, Targets};

/// Delivers events to a webhook: one request per event, or one per batch with a JSON array
/// or NDJSON body.
///
/// # Delivery
///
/// - In `single` mode, each event of a batch is its own request; they are sent
///   concurrently, at most `max_in_flight` at once over the whole destination. If some
///   fail for good while the others succeed, the error names only the failed events (see
///   [`DeliveryError::rejected`]); if any fails retryably, the whole batch is retried, and
///   the idempotency header makes resending the others safe.
/// - In the batched modes, events whose overrides differ go in separate requests (the
///   destination's [`partition_key`](Destination::partition_key) keeps them apart when it
///   can).
/// - The idempotency header carries the event id (`single`) or the first and last event
///   ids (batched); the Standard Webhooks `webhook-id` carries the same value. Both stay
///   the same across retries; `webhook-timestamp` and the signatures are made afresh for
///   every attempt.
/// - A batched request's key names its first and last events, so a receiver deduplicates
///   whole batches only: if the runtime groups the same events differently after a
///   restart, the receiver sees new keys and may store some events twice.
///
/// # Errors
///
/// Connection errors, timeouts, a response cut off and the `retry_statuses` are retryable;
/// 429, and a retryable status with a `Retry-After`, are rate limited. Redirects (not
/// followed) and other 4xx are permanent, with the status and the start of the body in the
/// message. 401 and 407, and a refused address, are configuration errors unless the
/// event's overrides caused them.
///
/// # Responses
///
/// The last response of each event (status, latency, start of the body) is kept in a
/// bounded [`ResponseLog`] ([`last_response`](Self::last_response)), and handed to a hook
/// if one is set ([`with_response_hook`](Self::with_response_hook)).
pub struct HttpDestination {
    name: String,
    body: BodyMode,
    timeout: Duration,
    targets: Targets,
    client: reqwest::Client,
    resolver: GuardedResolver,
    signer: Signer,
    idempotency_header: Option<HeaderName>,
    retry_statuses: Vec<StatusPattern>,
    limit: Semaphore,
    max_in_flight: usize,
    breaker: Option<Breaker>,
    responses: ResponseLog,
    hook: Option<ResponseHook>,
}

/// Events that go in one request.
struct Planned<'a> {
    events: Vec<&'a Event>,
    target: Result<Target, String>,
}

impl HttpDestination {
    /// Validates `config` and builds the destination; nothing is sent or resolved yet.
    ///
    /// # Errors
    ///
    /// An [`HttpError`] naming the invalid setting: a bad URL or scheme, a refused address
    /// written in the URL, an invalid header, a malformed signing secret, a zero timeout or
    /// limit, a batched body with a method that carries none.
    ///
    /// # Examples
    ///
    /// ```
    /// use destination_core::Destination;
    /// use destination_http::{HttpConfig, HttpDestination};
    ///
    /// # fn main() -> Result<(), destination_http::HttpError> {
    /// let config = HttpConfig::new("https://hooks.example.com/in").with_header("X-Team", "ops");
    /// let dest = HttpDestination::new("ops-hook", config)?;
    /// assert_eq!(dest.name(), "ops-hook");
    /// assert_eq!(dest.default_batch().max_events, 1);
    ///
    /// let refused = HttpDestination::new("bad", HttpConfig::new("http://169.254.169.254/"));
    /// assert!(refused.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(name: impl Into<String>, config: HttpConfig) -> Result<Self, HttpError> {
        config.validate()?;
        let name = name.into();
        if config.danger_accept_invalid_certs {
            warn!(destination = %name, "tls certificate verification is off");
        }
        let idempotency_header = match config.idempotency_header.trim() {
            "" => None,
            name => Some(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                HttpError::InvalidHeader {
                    name: name.chars().take(64).collect(),
                }
            })?),
        };
        Ok(Self {
            name,
            body: config.body,
            timeout: config.timeout,
            targets: Targets::new(&config)?,
            client: client::build_client(&config)?,
            resolver: GuardedResolver::new(&config),
            signer: Signer::new(&config.signing_secrets)?,
            idempotency_header,
            retry_statuses: config.retry_statuses.clone(),
            limit: Semaphore::new(config.max_in_flight),
            max_in_flight: config.max_in_flight,
            breaker: config.circuit_breaker.clone().map(Breaker::new),
            responses: ResponseLog::new(DEFAULT_LOG_CAPACITY),
            hook: None,
        })
    }

    /// Calls `hook` with every new [`ResponseRecord`], inside `deliver`.
    pub fn with_response_hook(
        mut self,
        hook: impl Fn(&ResponseRecord) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Keeps at most `capacity` response records (default 4096).
    pub fn with_response_log_capacity(mut self, capacity: usize) -> Self {
        self.responses = ResponseLog::new(capacity);
        self
    }

    /// The last response of recent events.
    pub fn responses(&self) -> &ResponseLog {
        &self.responses
    }

    /// The last response to a request that carried `id`, if still kept.
    pub fn last_response(&self, id: &EventId) -> Option<ResponseRecord> {
        self.responses.get(id)
    }

    /// Groups the batch's events into requests.
    fn plan<'a>(&self, batch: &'a Batch) -> Vec<Planned<'a>> {
        let mut planned: Vec<Planned<'a>> = Vec::new();
        for event in batch.events() {
            let target = self.targets.for_event(event);
            if self.body != BodyMode::Single
                && let Ok(t) = &target
                && let Some(group) = planned.iter_mut().find(|p| p.target.as_ref() == Ok(t))
            {
                group.events.push(event);
                continue;
            }
            planned.push(Planned {
                events: vec![event],
                target,
            });
        }
        planned
    }

    /// The request body, or the reason the events cannot be sent.
    ///
    /// Bodies are assembled from each event's JSON text as the queue kept it, so an event
    /// is not serialized again for every attempt.
    fn body(&self, target: &Target, events: &[&Event]) -> Result<Option<Bytes>, String> {
        match self.body {
            BodyMode::Single => match events.first() {
                Some(e) if target.method.allows_body() && &e.payload_json()[..] != b"null" => {
                    Ok(Some(e.payload_json().clone()))
                }
                _ => Ok(None),
            },
            _ if !target.method.allows_body() => Err(format!(
                "method {} carries no body, which batched bodies need",
                target.method
            )),
            BodyMode::JsonArray => Ok(Some(joined(events, b"[", b",", b"]"))),
            BodyMode::Ndjson => Ok(Some(joined(events, b"", b"\n", b"\n"))),
        }
    }

    fn request(&self, target: &Target, body: Option<Bytes>, key: &str) -> reqwest::RequestBuilder {
        let mut headers = target.headers.clone();
        let key_value = HeaderValue::from_str(key).expect("event ids are ascii");
        if body.is_some() && !headers.contains_key(CONTENT_TYPE) {
            let content_type = match self.body {
                BodyMode::Ndjson => "application/x-ndjson",
                _ => "application/json",
            };
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if let Some(name) = &self.idempotency_header {
            headers.insert(name.clone(), key_value.clone());
        }
        if !self.signer.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let signature = self
                .signer
                .sign(key, now.as_secs(), body.as_deref().unwrap_or(b""));
            headers.insert(signing::ID_HEADER, key_value);
            headers.insert(signing::TIMESTAMP_HEADER, HeaderValue::from(now.as_secs()));
            headers.insert(
                signing::SIGNATURE_HEADER,
                HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
            );
        }
        let method = reqwest::Method::from_bytes(target.method.as_str().as_bytes())
            .expect("the nine methods are valid");
        let request = self
            .client
            .request(method, target.url.clone())
            .headers(headers)
            .timeout(self.timeout);
        match body {
            Some(body) => request.body(body),
            None => request,
        }
    }

    /// Sends one planned request and classifies its outcome.
    async fn send(&self, planned: Planned<'_>) -> (Vec<EventId>, Result<(), DeliveryError>) {
        let ids: Vec<EventId> = planned.events.iter().map(|e| e.id).collect();
        let key = match (planned.events.first(), planned.events.last()) {
            (Some(first), Some(last)) if ids.len() > 1 => format!("{}-{}", first.id, last.id),
            (Some(first), _) => first.id.to_string(),
            _ => return (ids, Ok(())),
        };
        let prepared = planned.target.and_then(|target| {
            let body = self.body(&target, &planned.events)?;
            Ok((target, body))
        });
        let (target, body) = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                let err = DeliveryError::permanent(format!("event rejected: {reason}"));
                self.record(&ids, None, Duration::ZERO, String::new(), Some(err.chain()));
                return (ids, Err(err));
            }
        };

        let _permit = self
            .limit
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let pass = match self.breaker.as_ref().map(Breaker::admit) {
            Some(Err(wait)) => {
                let err = DeliveryError::rate_limited(
                    "circuit breaker open after repeated failures; waiting before a probe",
                    Some(wait),
                );
                self.record(&ids, None, Duration::ZERO, String::new(), Some(err.chain()));
                return (ids, Err(err));
            }
            Some(Ok(pass)) => Some(pass),
            None => None,
        };

        let exchange = client::exchange(self.request(&target, body, &key)).await;
        let (status, latency) = (exchange.status, exchange.latency);
        let (outcome, body) = judge(&target, exchange, &self.retry_statuses, self.timeout);
        let retryable = matches!(&outcome, Err(e) if e.is_retryable());
        if let Some(change) = pass.and_then(|p| p.finish(!retryable)) {
            warn!(destination = %self.name, change, "circuit breaker");
        }
        match &outcome {
            Ok(()) => debug!(
                destination = %self.name,
                status,
                latency_ms = latency.as_millis() as u64,
                events = ids.len(),
                "request delivered"
            ),
            Err(e) => debug!(
                destination = %self.name,
                status,
                latency_ms = latency.as_millis() as u64,
                events = ids.len(),
                retryable,
                error = %e.chain(),
                "request failed"
            ),
        }
        let error = outcome.as_ref().err().map(DeliveryError::chain);
        self.record(&ids, status, latency, body, error);
        (ids, outcome)
    }

    fn record(
        &self,
        ids: &[EventId],
        status: Option<u16>,
        latency: Duration,
        body: String,
        error: Option<String>,
    ) {
        let at = SystemTime::now();
        for id in ids {
            let record = ResponseRecord {
                event_id: *id,
                status,
                latency,
                body: body.clone(),
                error: error.clone(),
                at,
            };
            if let Some(hook) = &self.hook {
                hook(&record);
            }
            self.responses.insert(record);
        }
    }
}

/// The events' JSON texts between `open` and `close`, separated by `between`.
fn joined(events: &[&Event], open: &[u8], between: &[u8], close: &[u8]) -> Bytes {
    let len: usize = events.iter().map(|e| e.encoded_len() + between.len()).sum();
    let mut body = Vec::with_capacity(open.len() + len + close.len());
    body.extend_from_slice(open);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(between);
        }
        body.extend_from_slice(event.payload_json());
    }
    body.extend_from_slice(close);
    Bytes::from(body)
}

#[async_trait]
impl Destination for HttpDestination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let span = tracing::debug_span!(
            "http_deliver",
            destination = %self.name,
            batch_id = %batch.key(),
            events = batch.len(),
            bytes = batch.bytes(),
        );
        async move {
            let planned = self.plan(batch);
            let outcomes = join_all(planned.into_iter().map(|p| self.send(p))).await;
            combine(batch.len(), outcomes)
        }
        .instrument(span)
        .await
    }

    /// Resolves the configured host and checks its addresses; sends nothing.
    async fn health_check(&self) -> Result<(), DeliveryError> {
        let url = &self.targets.base().url;
        let Some(Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        match self.resolver.lookup(host).await {
            Ok(addrs) if !addrs.is_empty() => Ok(()),
            Ok(_) => Err(DeliveryError::retryable(format!(
                "{} resolves to no address",
                redact_url(url)
            ))),
            Err(e) => match find_refusal(e.as_ref()) {
                Some(refused) => Err(DeliveryError::config(format!(
                    "refused target {}: {refused}; set allow_link_local to allow it",
                    redact_url(url)
                ))),
                None => Err(DeliveryError::retryable(format!(
                    "could not resolve {}",
                    redact_url(url)
                ))
                .with_source(e)),
            },
        }
    }

    fn partition_key(&self, event: &Event) -> Option<String> {
        match self.body {
            BodyMode::Single => None,
            _ => self.targets.partition_key(event),
        }
    }

    fn default_batch(&self) -> BatchConfig {
        match self.body {
            BodyMode::Single => BatchConfig::unbatched(),
            _ => BatchConfig::default(),
        }
    }

    fn take_response(&self, event: &EventId) -> Option<serde_json::Value> {
        self.responses.take(event).map(|r| r.to_json())
    }
}

impl fmt::Debug for HttpDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDestination")
            .field("name", &self.name)
            .field("target", self.targets.base())
            .field("body", &self.body)
            .field("timeout", &self.timeout)
            .field("signer", &self.signer)
            .field("max_in_flight", &self.max_in_flight)
            .field("breaker", &self.breaker.is_some())
            .field("responses", &self.responses)
            .finish_non_exhaustive()
    }
}
