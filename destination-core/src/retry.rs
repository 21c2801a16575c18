//! Retry policy: exponential backoff with full jitter, bounded by attempts and a deadline.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::duration;
use crate::error::DeliveryError;

/// When and how often a failed batch is tried again.
///
/// The delay before retry `n` (counting from 1) is drawn uniformly from
/// `0..=min(max_backoff, initial_backoff * multiplier^(n-1))` ("full jitter"), so that many
/// failing batches do not retry in lockstep. A rate-limited error's `retry_after` replaces
/// the drawn delay, capped at `max_retry_after`. No retry is scheduled past `max_attempts`
/// attempts in all, or when it would start after `deadline` has passed since the first
/// attempt.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use destination_core::{DeliveryError, RetryPolicy};
///
/// let policy = RetryPolicy::default();
/// let err = DeliveryError::retryable("connection reset");
/// let delay = policy.next_delay(1, Duration::ZERO, &err).expect("a retry");
/// assert!(delay <= policy.initial_backoff);
/// assert_eq!(policy.next_delay(policy.max_attempts, Duration::ZERO, &err), None);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 10).
    pub max_attempts: u32,
    /// The cap of the first retry's delay (default 100 ms).
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// The cap of any retry's delay (default 30 s).
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// How much the cap grows from one retry to the next (default 2).
    pub multiplier: f64,
    /// No retry starts later than this after the first attempt (default 15 min).
    #[serde(with = "duration")]
    pub deadline: Duration,
    /// The longest `Retry-After` we honour (default 5 min).
    #[serde(with = "duration")]
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            deadline: Duration::from_secs(15 * 60),
            max_retry_after: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Checks that the numbers make sense.
    ///
    /// # Errors
    ///
    /// A message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err("retry.multiplier must be a finite number of at least 1".into());
        }
        if self.initial_backoff > self.max_backoff {
            return Err("retry.initial_backoff must not exceed retry.max_backoff".into());
        }
        Ok(())
    }

    /// The upper bound of the delay before retry `retry` (1 for the first retry).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(64) as i32;
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exp);
        let max = self.max_backoff.as_secs_f64();
        Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
    }

    /// A random delay in `0..=backoff_cap(retry)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff_cap(retry);
        if cap.is_zero() {
            return cap;
        }
        let nanos = rand::rng().random_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }

    /// The delay before the next attempt, or `None` when the batch should be given up.
    ///
    /// `attempts` is how many attempts were made so far and `elapsed` the time since the
    /// first of them.
    pub fn next_delay(
        &self,
        attempts: u32,
        elapsed: Duration,
        error: &DeliveryError,
    ) -> Option<Duration> {
        if !error.is_retryable() || attempts >= self.max_attempts {
            return None;
        }
        let delay = match error.retry_after() {
            Some(after) => after.min(self.max_retry_after),
            None => self.backoff(attempts),
        };
        if elapsed + delay > self.deadline {
            return None;
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_then_saturate() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(200));
        assert_eq!(p.backoff_cap(4), Duration::from_millis(800));
        assert_eq!(p.backoff_cap(40), p.max_backoff);
        assert_eq!(p.backoff_cap(u32::MAX), p.max_backoff);
    }

    #[test]
    fn jitter_stays_under_the_cap_and_varies() {
        let p = RetryPolicy::default();
        let draws: Vec<Duration> = (0..200).map(|_| p.backoff(3)).collect();
        assert!(draws.iter().all(|d| *d <= p.backoff_cap(3)));
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    #[test]
    fn honours_retry_after_up_to_its_cap() {
        let p = RetryPolicy::default();
        let err = DeliveryError::rate_limited("slow down", Some(Duration::from_secs(7)));
        assert_eq!(
            p.next_delay(1, Duration::ZERO, &err),
            Some(Duration::from_secs(7))
        );
        let err = DeliveryError::rate_limited("slow down", Some(Duration::from_secs(3600)));
        assert_eq!(
            p.next_delay(1, Duration::ZERO, &err),
            Some(p.max_retry_after)
        );
    }

    #[test]
    fn stops_at_attempts_deadline_and_permanent_errors() {
        let p = RetryPolicy::default();
        let err = DeliveryError::retryable("x");
        assert!(p.next_delay(9, Duration::ZERO, &err).is_some());
        assert_eq!(p.next_delay(10, Duration::ZERO, &err), None);
        assert_eq!(p.next_delay(1, p.deadline, &err), None);
        assert_eq!(
            p.next_delay(1, Duration::ZERO, &DeliveryError::permanent("x")),
            None
        );
    }

    #[test]
    fn parses_human_durations() {
        let p: RetryPolicy =
            serde_json::from_str(r#"{"max_attempts": 3, "initial_backoff": "250ms"}"#).unwrap();
        assert_eq!(p.initial_backoff, Duration::from_millis(250));
        assert_eq!(p.max_attempts, 3);
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"max_attempt": 3}"#).is_err());
    }
}
