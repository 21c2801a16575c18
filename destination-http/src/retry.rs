//! Classification of response statuses, and `Retry-After` parsing.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, de};

/// A response status, or a class of them, that is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPattern {
    /// One status code, such as `503`.
    Code(u16),
    /// Every status of a class, such as `5` for `"5xx"`.
    Class(u8),
}

impl StatusPattern {
    /// Whether `status` matches.
    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Code(code) => code == status,
            Self::Class(class) => status / 100 == u16::from(class),
        }
    }
}

impl fmt::Display for StatusPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "{code}"),
            Self::Class(class) => write!(f, "{class}xx"),
        }
    }
}

/// The error of parsing a [`StatusPattern`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry status {0:?}; write a code from 300 to 599 or a class such as \"5xx\"")]
pub struct InvalidStatusPattern(String);

impl FromStr for StatusPattern {
    type Err = InvalidStatusPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidStatusPattern(s.chars().take(16).collect());
        let text = s.trim();
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            return match class.parse::<u8>() {
                Ok(class @ 3..=5) => Ok(Self::Class(class)),
                _ => Err(invalid()),
            };
        }
        match text.parse::<u16>() {
            Ok(code @ 300..=599) => Ok(Self::Code(code)),
            _ => Err(invalid()),
        }
    }
}

impl<'de> Deserialize<'de> for StatusPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Code(code) => code.to_string(),
            Raw::Text(text) => text,
        };
        text.parse().map_err(de::Error::custom)
    }
}

/// What a response status means for the events the request carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// 2xx: accepted.
    Success,
    /// A retryable status without a usable `Retry-After`.
    Retry,
    /// 429, or a retryable status with a `Retry-After`: slow down.
    RateLimited(Option<Duration>),
    /// 3xx: redirects are not followed.
    Redirect,
    /// 401 or 407: the credentials are wrong.
    Unauthorized,
    /// Any other status: the events are rejected.
    Rejected,
}

/// Classifies `status`, given the `Retry-After` header's value if the response had one.
pub(crate) fn classify(
    status: u16,
    retry_after: Option<&str>,
    retry_statuses: &[StatusPattern],
    now: SystemTime,
) -> StatusClass {
    if (200..300).contains(&status) {
        return StatusClass::Success;
    }
    if retry_statuses.iter().any(|p| p.matches(status)) {
        let delay = retry_after.and_then(|v| parse_retry_after(v, now));
        return match (status, delay) {
            (429, delay) => StatusClass::RateLimited(delay),
            (_, Some(delay)) => StatusClass::RateLimited(Some(delay)),
            (_, None) => StatusClass::Retry,
        };
    }
    match status {
        300..=399 => StatusClass::Redirect,
        401 | 407 => StatusClass::Unauthorized,
        _ => StatusClass::Rejected,
    }
}

/// Parses a `Retry-After` value: a number of seconds or an HTTP date, as of `now`.
///
/// A date in the past gives zero; anything else unparsable gives `None`.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use destination_http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
///     Some(Duration::from_secs(30))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate rather than being ignored.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn defaults() -> Vec<StatusPattern> {
        vec![
            StatusPattern::Code(408),
            StatusPattern::Code(429),
            StatusPattern::Class(5),
        ]
    }

    #[test]
    fn statuses() {
        let now = SystemTime::now();
        let c = |status, ra| classify(status, ra, &defaults(), now);
        assert_eq!(c(200, None), StatusClass::Success);
        assert_eq!(c(204, Some("5")), StatusClass::Success);
        assert_eq!(c(500, None), StatusClass::Retry);
        assert_eq!(c(408, None), StatusClass::Retry);
        assert_eq!(c(503, Some("bogus")), StatusClass::Retry);
        assert_eq!(
            c(503, Some("7")),
            StatusClass::RateLimited(Some(Duration::from_secs(7)))
        );
        assert_eq!(c(429, None), StatusClass::RateLimited(None));
        assert_eq!(c(301, None), StatusClass::Redirect);
        assert_eq!(c(401, None), StatusClass::Unauthorized);
        assert_eq!(c(404, Some("3")), StatusClass::Rejected);
        assert_eq!(c(422, None), StatusClass::Rejected);
    }

    #[test]
    fn retry_statuses_are_configurable() {
        let only_502 = [StatusPattern::Code(502)];
        let now = SystemTime::now();
        assert_eq!(classify(502, None, &only_502, now), StatusClass::Retry);
        assert_eq!(classify(500, None, &only_502, now), StatusClass::Rejected);
        assert_eq!(classify(429, None, &only_502, now), StatusClass::Rejected);
        let client = [StatusPattern::Class(4)];
        assert_eq!(classify(409, None, &client, now), StatusClass::Retry);
    }

    #[test]
    fn status_patterns_parse() {
        let parse = |v: serde_json::Value| serde_json::from_value::<StatusPattern>(v);
        assert_eq!(
            parse(serde_json::json!(503)).unwrap(),
            StatusPattern::Code(503)
        );
        assert_eq!(
            parse(serde_json::json!("4xx")).unwrap(),
            StatusPattern::Class(4)
        );
        assert_eq!(
            parse(serde_json::json!("418")).unwrap(),
            StatusPattern::Code(418)
        );
        for bad in ["200", "2xx", "6xx", "99", "abc", ""] {
            assert!(bad.parse::<StatusPattern>().is_err(), "{bad}");
        }
        assert_eq!(StatusPattern::Class(5).to_string(), "5xx");
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let p = |v| parse_retry_after(v, now);
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            p("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        // The three date forms HTTP recipients must accept.
        let later = Some(Duration::from_secs(60));
        assert_eq!(p("Sun, 06 Nov 1994 08:50:37 GMT"), later);
        assert_eq!(p("Sunday, 06-Nov-94 08:50:37 GMT"), later);
        assert_eq!(p("Sun Nov  6 08:50:37 1994"), later);
        assert_eq!(p("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(p(""), None);
        assert_eq!(p("-5"), None);
        assert_eq!(p("1.5"), None);
    }
}
