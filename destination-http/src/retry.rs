//! Classification of response statuses, and `Retry-After` parsing.

use std::time::{Duration, SystemTime};

use crate::config::StatusPattern;

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
