//! What an exchange means for its events, and what a batch's requests mean together.

use std::time::{Duration, SystemTime};

use destination_core::{DeliveryError, ErrorKind, EventId};
use tracing::debug;

use crate::client::{Exchange, find_refusal};
use crate::error::{redact_url, truncate};
use crate::retry::{StatusClass, StatusPattern, classify};
use crate::target::Target;

/// How many bytes of a response body an error message quotes at most.
const ERROR_BODY_LIMIT: usize = 256;

/// Classifies an exchange; also gives back the body for the record.
pub(crate) fn judge(
    target: &Target,
    exchange: Exchange,
    retry_statuses: &[StatusPattern],
    timeout: Duration,
) -> (Result<(), DeliveryError>, String) {
    let origin = redact_url(&target.url);
    let Exchange {
        status,
        retry_after,
        body,
        error,
        ..
    } = exchange;
    let Some(status) = status else {
        let err = error.expect("an exchange without a status has an error");
        return (Err(transport_error(target, &origin, err, timeout)), body);
    };
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unknown")
        .to_ascii_lowercase();
    let answered = format!("endpoint {origin} answered {status} ({reason})");
    let quoted = match truncate(body.trim(), ERROR_BODY_LIMIT) {
        snippet if snippet.is_empty() => answered.clone(),
        snippet => format!("{answered}: {snippet}"),
    };
    let now = SystemTime::now();
    let outcome = match classify(status, retry_after.as_deref(), retry_statuses, now) {
        StatusClass::Success => match error {
            None => Ok(()),
            // NOTE: a 2xx head followed by a broken body may come from a proxy that
            // answered before the upstream failed, so it is not taken as delivery.
            Some(e) => Err(DeliveryError::retryable(format!(
                "{answered} but the response was cut off"
            ))
            .with_source(e)),
        },
        StatusClass::Retry => Err(DeliveryError::retryable(quoted)),
        StatusClass::RateLimited(delay) => Err(DeliveryError::rate_limited(quoted, delay)),
        StatusClass::Redirect => Err(DeliveryError::permanent(format!(
            "{answered}; redirects are not followed, set url to the final address"
        ))),
        StatusClass::Unauthorized if !target.overridden => Err(DeliveryError::config(format!(
            "{quoted} (check the auth and headers settings)"
        ))),
        StatusClass::Unauthorized | StatusClass::Rejected => Err(DeliveryError::permanent(quoted)),
    };
    (outcome, body)
}

fn transport_error(
    target: &Target,
    origin: &str,
    err: reqwest::Error,
    timeout: Duration,
) -> DeliveryError {
    if let Some(refused) = find_refusal(&err) {
        let message =
            format!("refused target {origin}: {refused}; set allow_link_local to allow it");
        return match target.overridden {
            true => DeliveryError::permanent(message),
            false => DeliveryError::config(message),
        };
    }
    let message = if err.is_timeout() {
        format!(
            "request to {origin} timed out after {:?}; raise timeout if the endpoint is slow",
            timeout
        )
    } else if err.is_connect() {
        format!("could not connect to {origin}")
    } else if err.is_builder() {
        return DeliveryError::permanent(format!("could not build the request to {origin}"))
            .with_source(err);
    } else {
        // Includes a kept-alive connection that the server closed as it was reused.
        format!("connection to {origin} failed before a complete response")
    };
    DeliveryError::retryable(message).with_source(err)
}

/// Merges per-request outcomes into the batch's outcome.
pub(crate) fn combine(
    total: usize,
    outcomes: Vec<(Vec<EventId>, Result<(), DeliveryError>)>,
) -> Result<(), DeliveryError> {
    let mut failures: Vec<(Vec<EventId>, DeliveryError)> = outcomes
        .into_iter()
        .filter_map(|(ids, result)| result.err().map(|e| (ids, e)))
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    let failed: usize = failures.iter().map(|(ids, _)| ids.len()).sum();
    debug!(failed, total, "some requests of the batch failed");

    if failures.iter().any(|(_, e)| e.is_retryable()) {
        // The whole batch is retried; the idempotency key makes resending the rest safe.
        let longest = failures.iter().filter_map(|(_, e)| e.retry_after()).max();
        let rate_limited = |e: &DeliveryError| matches!(e.kind(), ErrorKind::RateLimited { .. });
        let pos = (failures.iter().position(|(_, e)| rate_limited(e)))
            .or_else(|| failures.iter().position(|(_, e)| e.is_retryable()))
            .expect("a retryable failure");
        let (_, err) = failures.swap_remove(pos);
        if rate_limited(&err) && err.retry_after() != longest {
            return Err(DeliveryError::rate_limited(err.message(), longest));
        }
        return Err(err);
    }

    let rejected: Vec<EventId> = failures
        .iter()
        .flat_map(|(ids, _)| ids.iter().copied())
        .collect();
    let pos = (failures.iter())
        .position(|(_, e)| e.kind() == &ErrorKind::Config)
        .unwrap_or(0);
    let (_, err) = failures.swap_remove(pos);
    Err(if failed < total {
        err.with_rejected(rejected)
    } else {
        err
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_outcomes() {
        let ids: Vec<EventId> = (0..3).map(|_| EventId::new()).collect();
        let ok = |i: usize| (vec![ids[i]], Ok(()));
        let err = |i: usize, e: DeliveryError| (vec![ids[i]], Err(e));
        assert!(combine(3, vec![ok(0), ok(1), ok(2)]).is_ok());

        let partial = combine(3, vec![ok(0), err(1, DeliveryError::permanent("p")), ok(2)]);
        assert_eq!(partial.unwrap_err().rejected(), Some(&ids[1..2]));

        let all = combine(
            2,
            vec![
                err(0, DeliveryError::permanent("a")),
                err(1, DeliveryError::permanent("b")),
            ],
        );
        assert_eq!(all.unwrap_err().rejected(), None);

        let retry = combine(
            3,
            vec![
                err(0, DeliveryError::permanent("p")),
                err(
                    1,
                    DeliveryError::rate_limited("r1", Some(Duration::from_secs(2))),
                ),
                err(
                    2,
                    DeliveryError::rate_limited("r2", Some(Duration::from_secs(9))),
                ),
            ],
        )
        .unwrap_err();
        assert_eq!(
            retry.retry_after(),
            Some(Duration::from_secs(9)),
            "the longest wait"
        );
        assert_eq!(retry.rejected(), None);

        let config = combine(
            3,
            vec![
                ok(0),
                err(1, DeliveryError::permanent("p")),
                err(2, DeliveryError::config("c")),
            ],
        )
        .unwrap_err();
        assert_eq!(config.kind(), &ErrorKind::Config);
        assert_eq!(config.rejected(), Some(&ids[1..3]));
    }
}
