//! The circuit breaker: stop sending after repeated failures, probe before resuming.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::CircuitBreakerConfig;

/// How long callers are told to wait while a probe is in flight.
const PROBE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing,
}

/// The breaker of one destination, shared by all its requests.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
}

/// Permission to send one request; report its outcome with [`Pass::finish`].
///
/// A probe dropped without an outcome (its delivery was cancelled) counts as a failure,
/// so that the circuit does not stay half-open for ever.
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    breaker: &'a Breaker,
    probe: bool,
    finished: bool,
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A pass, or how long to wait when the circuit is open or a probe is in flight.
    pub(crate) fn admit(&self) -> Result<Pass<'_>, Duration> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(until - now);
                }
                *state = State::Probing;
                true
            }
            State::Probing => return Err(PROBE_WAIT),
        };
        Ok(Pass {
            breaker: self,
            probe,
            finished: false,
        })
    }

    fn open(&self, state: &mut State) {
        *state = State::Open {
            until: Instant::now() + self.config.open_for,
        };
    }
}

impl Pass<'_> {
    /// Records the request's outcome: `healthy` is false for a retryable failure
    /// (transport error or retryable status), true otherwise.
    pub(crate) fn finish(mut self, healthy: bool) -> Option<&'static str> {
        self.finished = true;
        let breaker = self.breaker;
        let mut state = breaker.lock();
        if healthy {
            let was_closed = matches!(*state, State::Closed { .. });
            *state = State::Closed { failures: 0 };
            return (!was_closed).then_some("closed");
        }
        match &mut *state {
            State::Probing => {
                breaker.open(&mut state);
                Some("reopened")
            }
            State::Closed { failures } => {
                *failures += 1;
                if *failures >= breaker.config.failures {
                    breaker.open(&mut state);
                    return Some("opened");
                }
                None
            }
            // A request admitted before the circuit opened: the circuit stays as it is.
            State::Open { .. } => None,
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.finished {
            let mut state = self.breaker.lock();
            if matches!(*state, State::Probing) {
                self.breaker.open(&mut state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(CircuitBreakerConfig {
            failures: 2,
            open_for,
        })
    }

    #[test]
    fn opens_after_failures_in_a_row_and_probes() {
        let b = breaker(Duration::from_millis(50));
        assert_eq!(b.admit().unwrap().finish(false), None);
        assert_eq!(b.admit().unwrap().finish(true), None);
        assert_eq!(b.admit().unwrap().finish(false), None);
        assert_eq!(b.admit().unwrap().finish(false), Some("opened"));
        let wait = b.admit().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(50));

        std::thread::sleep(Duration::from_millis(60));
        let probe = b.admit().expect("a probe after open_for");
        assert_eq!(b.admit().unwrap_err(), PROBE_WAIT, "one probe at a time");
        assert_eq!(probe.finish(false), Some("reopened"));
        assert!(b.admit().is_err());

        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit().unwrap().finish(true), Some("closed"));
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_dropped_probe_reopens() {
        let b = breaker(Duration::ZERO);
        b.admit().unwrap().finish(false);
        b.admit().unwrap().finish(false);
        drop(b.admit().expect("probe"));
        assert!(matches!(*b.lock(), State::Open { .. }));
    }
}
