//! The crate's error type and its mapping to the runtime's error classes.

use std::error::Error as StdError;
use std::time::Duration;

use destination_core::DeliveryError;

/// Something the S3 destination could not do.
///
/// `Display` prints this error's own message only; the cause (an object store, Parquet or
/// I/O error) is returned by [`source`](StdError::source). No message carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The configuration is invalid.
    #[error("invalid s3 destination config: {message}")]
    Config {
        /// What is wrong, naming the key.
        message: String,
    },
    /// The object store client could not be built from the configuration.
    #[error("cannot open the object store at {url}")]
    Open {
        /// The configured URL.
        url: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// A request to the object store failed.
    #[error("{operation} failed for bucket {bucket}")]
    Store {
        /// What was being done, for example `upload of an object`.
        operation: &'static str,
        /// The bucket (or local directory) the request went to.
        bucket: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// The batch could not be encoded.
    #[error("encoding the batch as {format} failed")]
    Encode {
        /// `parquet` or `ndjson`.
        format: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// An event's `prefix` attribute cannot be part of an object key.
    #[error("the event attribute `prefix` is not a valid key prefix: {reason}")]
    BadPrefix {
        /// Why it was refused.
        reason: String,
    },
}

/// How the runtime should treat a failed object store request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Transient: try again.
    Retryable,
    /// The service asked us to slow down.
    Throttled,
    /// The destination is misconfigured (credentials, permissions, bucket).
    Config(&'static str),
    /// The request can never succeed as it is.
    Permanent,
}

const THROTTLE_CODES: [&str; 5] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
];
const CREDENTIAL_CODES: [&str; 6] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
];

/// Classifies an object store error.
///
/// object_store keeps its HTTP error type private, so besides the public variants this
/// reads the S3 error code and the status from the rendered cause chain.
pub(crate) fn classify(err: &object_store::Error) -> Class {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Class::Config("the bucket does not exist"),
        E::PermissionDenied { .. } => Class::Config("access denied"),
        E::Unauthenticated { .. } => Class::Config("the credentials were rejected"),
        E::InvalidPath { .. } => Class::Permanent,
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            Class::Config("the store does not support this operation")
        }
        E::UnknownConfigurationKey { .. } => Class::Config("unknown configuration key"),
        E::Generic { .. } => classify_chain(err),
        _ => Class::Retryable,
    }
}

fn classify_chain(err: &(dyn StdError + 'static)) -> Class {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return Class::Retryable;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::PermissionDenied => return Class::Config("permission denied"),
                // A key segment longer than the file system allows (a long `prefix` on
                // `file://`): the same key fails every time.
                std::io::ErrorKind::InvalidFilename => return Class::Permanent,
                _ => {}
            }
        }
        text.push_str(&e.to_string());
        text.push('\n');
        next = e.source();
    }
    classify_text(&text)
}

/// Classifies a rendered error by the S3 error code or HTTP status it mentions.
pub(crate) fn classify_text(text: &str) -> Class {
    let has_code = |code: &str| text.contains(&format!("<Code>{code}</Code>"));
    if THROTTLE_CODES.iter().any(|c| has_code(c)) {
        return Class::Throttled;
    }
    if has_code("NoSuchBucket") {
        return Class::Config("the bucket does not exist");
    }
    if has_code("AccessDenied") {
        return Class::Config("access denied");
    }
    if CREDENTIAL_CODES.iter().any(|c| has_code(c)) {
        return Class::Config("the credentials were rejected");
    }
    match status_in(text) {
        Some(429 | 503) => Class::Throttled,
        Some(401) => Class::Config("the credentials were rejected"),
        Some(403) => Class::Config("access denied"),
        Some(404) => Class::Config("the bucket does not exist"),
        Some(408 | 409) => Class::Retryable,
        Some(400..=499) => Class::Permanent,
        _ => Class::Retryable,
    }
}

fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

impl S3Error {
    /// The runtime's view of this error: its class, a message naming the bucket, and this
    /// error's cause as the source.
    pub fn into_delivery_error(self) -> DeliveryError {
        let message = self.to_string();
        let err = match &self {
            Self::Config { .. } => DeliveryError::config(message),
            Self::Open { .. } => DeliveryError::config(message),
            Self::BadPrefix { .. } | Self::Encode { .. } => DeliveryError::permanent(message),
            Self::Store { source, bucket, .. } => match classify(source) {
                Class::Retryable => DeliveryError::retryable(message),
                Class::Throttled => DeliveryError::rate_limited(message, None::<Duration>),
                Class::Permanent => DeliveryError::permanent(message),
                Class::Config(why) => DeliveryError::config(format!("{message}: {why}: {bucket}")),
            },
        };
        // The message already is this error's text: keep only its cause as the source, so
        // that the chain names each cause once.
        match self {
            Self::Open { source, .. } | Self::Store { source, .. } => err.with_source(source),
            Self::Encode { source, .. } => err.with_source(source),
            Self::Config { .. } | Self::BadPrefix { .. } => err,
        }
    }
}

impl From<S3Error> for DeliveryError {
    fn from(err: S3Error) -> Self {
        err.into_delivery_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use destination_core::ErrorKind;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        }
    }

    fn store_error(source: object_store::Error) -> DeliveryError {
        S3Error::Store {
            operation: "upload",
            bucket: "my-bucket".into(),
            source,
        }
        .into_delivery_error()
    }

    #[test]
    fn throttling_is_rate_limited() {
        let slow = "Server returned non-2xx status code: 503 Service Unavailable: \
                    <Error><Code>SlowDown</Code></Error>";
        assert_eq!(classify(&generic(slow)), Class::Throttled);
        let e = store_error(generic("Server returned non-2xx status code: 429 Too Many"));
        assert!(matches!(e.kind(), ErrorKind::RateLimited { .. }));
    }

    #[test]
    fn server_errors_and_unknowns_are_retryable() {
        let e = store_error(generic("Server returned non-2xx status code: 500 Internal"));
        assert_eq!(e.kind(), &ErrorKind::Retryable);
        assert_eq!(classify(&generic("connection reset")), Class::Retryable);
    }

    #[test]
    fn missing_bucket_and_bad_credentials_are_config_errors_naming_the_bucket() {
        let missing = object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        };
        let e = store_error(missing);
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(e.message().contains("my-bucket"), "{}", e.message());
        let denied = "status code: 403 Forbidden: <Code>InvalidAccessKeyId</Code>";
        assert_eq!(
            classify(&generic(denied)),
            Class::Config("the credentials were rejected")
        );
        let e = store_error(object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        });
        assert_eq!(e.kind(), &ErrorKind::Config);
    }

    #[test]
    fn other_client_errors_are_permanent() {
        let small = "status code: 400 Bad Request: <Code>EntityTooSmall</Code>";
        assert_eq!(classify(&generic(small)), Class::Permanent);
    }

    #[test]
    fn display_has_no_source_and_no_secret() {
        let e = S3Error::Store {
            operation: "upload",
            bucket: "b".into(),
            source: generic("inner detail"),
        };
        assert_eq!(e.to_string(), "upload failed for bucket b");
        assert!(e.into_delivery_error().chain().contains("inner detail"));
    }
}
