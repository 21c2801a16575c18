//! The error classes a destination reports and the runtime acts on.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::event::EventId;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What the runtime should do about a failed delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A transient failure (connection lost, timeout, 5xx, deadlock): try again later.
    Retryable,
    /// The target asked us to slow down: pause the whole destination, then try again.
    RateLimited {
        /// How long the target asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The target will never accept these events as they are: dead-letter them.
    Permanent,
    /// The destination itself is misconfigured (bad credentials, missing bucket or table
    /// permissions, invalid URL): dead-letter, and tell the operator.
    Config,
}

/// A failed delivery, classified so that the runtime never has to downcast.
///
/// `Display` prints only this error's own message; the cause is returned by
/// [`source`](StdError::source). Messages must not contain secrets.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use destination_core::DeliveryError;
///
/// let err = DeliveryError::rate_limited("endpoint answered 429", Some(Duration::from_secs(2)));
/// assert!(err.is_retryable());
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
/// ```
pub struct DeliveryError {
    kind: ErrorKind,
    message: String,
    rejected: Option<Vec<EventId>>,
    source: Option<BoxError>,
}

impl DeliveryError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            rejected: None,
            source: None,
        }
    }

    /// A transient failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, message)
    }

    /// The target throttled us, optionally saying for how long.
    pub fn rate_limited(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::new(ErrorKind::RateLimited { retry_after }, message)
    }

    /// The events can never be delivered as they are.
    ///
    /// By default every event of the batch is rejected; name a subset with
    /// [`with_rejected`](Self::with_rejected) when the others were delivered.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// The destination is misconfigured.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Narrows a permanent error to these events: the rest of the batch was delivered.
    pub fn with_rejected(mut self, ids: Vec<EventId>) -> Self {
        self.rejected = Some(ids);
        self
    }

    /// The class of the error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The error's own message, without its causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same batch may succeed if delivered again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Retryable | ErrorKind::RateLimited { .. }
        )
    }

    /// How long the target asked us to wait, for rate-limited errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }

    /// The events this error rejects: `None` means the whole batch.
    pub fn rejected(&self) -> Option<&[EventId]> {
        self.rejected.as_deref()
    }

    /// The message followed by every cause, joined by `": "`, for logs and dead letters
    /// (a cause is left out when the error before it already shows its text).
    pub fn chain(&self) -> String {
        let mut text = self.message.clone();
        let source = self
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static));
        push_causes(&mut text, &self.message, source);
        text
    }
}

/// `error` followed by its causes, joined by `": "`, for logs and messages.
///
/// Many errors print their source inside their own message (object_store's and I/O
/// wrappers do); a cause whose text the error before it already shows is left out, so the
/// same words do not appear several times.
pub fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let shown = text.clone();
    push_causes(&mut text, &shown, error.source());
    text
}

fn push_causes(text: &mut String, shown: &str, mut next: Option<&(dyn StdError + 'static)>) {
    let mut previous = shown.to_owned();
    while let Some(error) = next {
        let cause = error.to_string();
        if !previous.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        previous = cause;
        next = error.source();
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("rejected", &self.rejected.as_ref().map(Vec::len))
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for DeliveryError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_omits_the_source_and_chain_includes_it() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = DeliveryError::retryable("put object failed").with_source(io);
        assert_eq!(err.to_string(), "put object failed");
        assert_eq!(err.chain(), "put object failed: reset by peer");
        assert!(err.source().is_some());
    }

    /// An error that prints its source inside its own message.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl fmt::Display for Wrapping {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "upload of an object failed: {}", self.0)
        }
    }

    impl StdError for Wrapping {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_shown_is_not_repeated() {
        let io = || std::io::Error::other("Not a directory (os error 20)");
        assert_eq!(
            error_chain(&Wrapping(io())),
            "upload of an object failed: Not a directory (os error 20)"
        );
        let err = DeliveryError::retryable("s3 destination lake").with_source(Wrapping(io()));
        assert_eq!(
            err.chain(),
            "s3 destination lake: upload of an object failed: Not a directory (os error 20)"
        );
        let plain = DeliveryError::retryable("put object failed").with_source(io());
        assert_eq!(
            plain.chain(),
            "put object failed: Not a directory (os error 20)"
        );
    }

    #[test]
    fn classes() {
        assert!(DeliveryError::retryable("x").is_retryable());
        assert!(!DeliveryError::permanent("x").is_retryable());
        assert!(!DeliveryError::config("x").is_retryable());
        assert_eq!(DeliveryError::retryable("x").retry_after(), None);
    }
}
