//! Typed sends that mirror Pipedream's `$send.http`, `$send.s3`, `$send.sql`, `$send.email`,
//! `$send.snowflake` and `$send.sse`.
//!
//! Each builds an [`Event`] whose payload and attributes are what that destination type
//! reads, and queues it like [`Sender::send_event`]. Each is behind its destination's
//! Cargo feature.

#[cfg(feature = "http")]
use std::collections::BTreeMap;

use destination_core::{Event, EventId};
use serde_json::Value;

use super::{SendError, Sender};

/// An HTTP request, as `$send.http({method, url, headers, params, auth, data})`.
///
/// Fields left `None` or empty use the destination's configured defaults. The destination
/// honours `url`, `method`, `headers`, `params` and `auth` only when its config sets
/// `allow_override = true`.
///
/// # Optional
///
/// This requires the `http` feature.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// The HTTP method, for example `POST`.
    pub method: Option<String>,
    /// The URL.
    pub url: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Query parameters.
    pub params: BTreeMap<String, String>,
    /// `{"username": .., "password": ..}` or `{"token": ..}`.
    pub auth: Option<Value>,
    /// The JSON body.
    pub data: Value,
}

#[cfg(feature = "http")]
impl HttpRequest {
    fn into_event(self) -> Event {
        let mut event = Event::new(self.data);
        if let Some(method) = self.method {
            event = event.with_attribute("method", method);
        }
        if let Some(url) = self.url {
            event = event.with_attribute("url", url);
        }
        if !self.headers.is_empty() {
            event = event.with_attribute("headers", serde_json::json!(self.headers));
        }
        if !self.params.is_empty() {
            event = event.with_attribute("params", serde_json::json!(self.params));
        }
        if let Some(auth) = self.auth {
            event = event.with_attribute("auth", auth);
        }
        event
    }
}

/// An email, as `$send.email({subject, text, html})`; recipients come from the config.
///
/// # Optional
///
/// This requires the `email` feature.
#[cfg(feature = "email")]
#[cfg_attr(docsrs, doc(cfg(feature = "email")))]
#[derive(Debug, Clone, Default)]
pub struct Email {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The HTML body.
    pub html: Option<String>,
}

#[cfg(any(
    feature = "s3",
    feature = "sql",
    feature = "snowflake",
    feature = "sse"
))]
fn with_optional(event: Event, key: &str, value: Option<String>) -> Event {
    match value {
        Some(v) => event.with_attribute(key, v),
        None => event,
    }
}

impl Sender {
    /// Queues an HTTP request, as `$send.http`.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    ///
    /// # Optional
    ///
    /// This requires the `http` feature.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub async fn http(
        &self,
        destination: &str,
        request: HttpRequest,
    ) -> Result<EventId, SendError> {
        self.send_event(destination, request.into_event()).await
    }

    /// Queues a payload for an object store, as `$send.s3({prefix, payload})`; the bucket
    /// comes from the destination's config, and events are batched by prefix.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    ///
    /// # Optional
    ///
    /// This requires the `s3` feature.
    #[cfg(feature = "s3")]
    #[cfg_attr(docsrs, doc(cfg(feature = "s3")))]
    pub async fn s3(
        &self,
        destination: &str,
        prefix: Option<String>,
        payload: Value,
    ) -> Result<EventId, SendError> {
        let event = with_optional(Event::new(payload), "prefix", prefix);
        self.send_event(destination, event).await
    }

    /// Queues a row, as `$send.sql({table, payload})`; without a table, the destination's
    /// default table is used.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    ///
    /// # Optional
    ///
    /// This requires the `sql` feature.
    #[cfg(feature = "sql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
    pub async fn sql(
        &self,
        destination: &str,
        table: Option<String>,
        payload: Value,
    ) -> Result<EventId, SendError> {
        let event = with_optional(Event::new(payload), "table", table);
        self.send_event(destination, event).await
    }

    /// Queues a row for Snowflake, as `$send.snowflake({table, payload})`.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    ///
    /// # Optional
    ///
    /// This requires the `snowflake` feature.
    #[cfg(feature = "snowflake")]
    #[cfg_attr(docsrs, doc(cfg(feature = "snowflake")))]
    pub async fn snowflake(
        &self,
        destination: &str,
        table: Option<String>,
        payload: Value,
    ) -> Result<EventId, SendError> {
        let event = with_optional(Event::new(payload), "table", table);
        self.send_event(destination, event).await
    }

    /// Queues an email, as `$send.email`.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    ///
    /// # Optional
    ///
    /// This requires the `email` feature.
    #[cfg(feature = "email")]
    #[cfg_attr(docsrs, doc(cfg(feature = "email")))]
    pub async fn email(&self, destination: &str, email: Email) -> Result<EventId, SendError> {
        let payload = serde_json::json!({
            "subject": email.subject,
            "text": email.text,
            "html": email.html,
        });
        self.send_event(destination, Event::new(payload)).await
    }

    /// Queues a message for the live stream, as `$send.sse({channel, payload})`.
    ///
    /// # Errors
    ///
    /// [`SendError`]; nothing was queued.
    ///
    /// # Optional
    ///
    /// This requires the `sse` feature.
    #[cfg(feature = "sse")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sse")))]
    pub async fn sse(
        &self,
        destination: &str,
        channel: Option<String>,
        payload: Value,
    ) -> Result<EventId, SendError> {
        let event = with_optional(Event::new(payload), "channel", channel);
        self.send_event(destination, event).await
    }
}
