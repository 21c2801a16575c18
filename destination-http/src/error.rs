//! The crate's error, its mapping to the core error classes, and redaction of URLs.

use destination_core::DeliveryError;
use reqwest::Url;

/// Why an [`HttpDestination`](crate::HttpDestination) could not be built.
///
/// Messages name the offending setting but never show a secret, a header value or more of
/// a URL than its scheme, host and port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// `url` is not a valid URL.
    #[error("invalid url {url}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        #[source]
        source: url::ParseError,
    },
    /// `url` uses a scheme other than `http` or `https`.
    #[error("unsupported url scheme {scheme:?}; use http or https")]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// The target's address is refused (link-local or cloud metadata).
    #[error("refused target {target}: {reason} (set allow_link_local to allow it)")]
    RefusedTarget {
        /// The redacted URL or the address.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A header name or value is not valid HTTP.
    #[error("invalid header {name:?}")]
    InvalidHeader {
        /// The header's name (its value is never shown).
        name: String,
    },
    /// A signing secret is not `whsec_` followed by base64.
    #[error("signing secret #{index} is not \"whsec_\" followed by base64")]
    InvalidSigningSecret {
        /// The secret's position in `signing_secrets`, from 0.
        index: usize,
    },
    /// A setting is out of range or inconsistent with another one.
    #[error("invalid setting {key}: {reason}")]
    InvalidSetting {
        /// The configuration key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (for example, no TLS root certificates).
    #[error("could not build the http client")]
    Client {
        /// The client's error, without any URL.
        #[source]
        source: reqwest::Error,
    },
}

impl From<HttpError> for DeliveryError {
    fn from(err: HttpError) -> Self {
        let message = err.to_string();
        match err {
            HttpError::InvalidUrl { source, .. } => Self::config(message).with_source(source),
            HttpError::Client { source } => Self::config(message).with_source(source),
            _ => Self::config(message),
        }
    }
}

/// The part of a URL that is safe to show: scheme, host and port.
///
/// Webhook URLs often carry their secret in the user info, the query or the path (a chat
/// service's incoming webhook), so everything after the authority is replaced by `/…`.
///
/// # Examples
///
/// ```
/// use destination_http::redact_url;
///
/// let url = "https://user:pw@hooks.example.com:8443/T01/secret?token=x".parse()?;
/// assert_eq!(redact_url(&url), "https://hooks.example.com:8443/…");
/// # Ok::<(), url::ParseError>(())
/// ```
pub fn redact_url(url: &Url) -> String {
    let host = match url.host_str() {
        Some(host) => host,
        None => return format!("{}:…", url.scheme()),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        "/"
    } else {
        "/…"
    };
    format!("{}://{host}{port}{rest}", url.scheme())
}

/// [`redact_url`] for a string that may not even parse.
pub(crate) fn redact_url_str(url: &str) -> String {
    match Url::parse(url) {
        Ok(url) => redact_url(&url),
        Err(_) => String::from("(unparsable url)"),
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_only_the_origin() {
        let cases = [
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
            ("https://a:b@example.com/x?y=z", "https://example.com/…"),
            ("https://example.com/?token=1", "https://example.com/…"),
            ("http://[::1]:9/p", "http://[::1]:9/…"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(&url.parse().unwrap()), want);
        }
        assert_eq!(redact_url_str("not a url"), "(unparsable url)");
    }

    #[test]
    fn truncates_at_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ééé", 3), "é…");
    }

    #[test]
    fn maps_to_config_errors() {
        let err: DeliveryError = HttpError::InvalidSigningSecret { index: 1 }.into();
        assert_eq!(err.kind(), &destination_core::ErrorKind::Config);
        assert_eq!(
            err.to_string(),
            "signing secret #1 is not \"whsec_\" followed by base64"
        );
    }
}
