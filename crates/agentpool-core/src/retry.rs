//! The retry policy: how many attempts a task gets and how long to wait between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ErrorClass;

/// Exponential backoff with jitter and a cap, plus the attempt limit.
///
/// `delay(n) = min(cap, base * factor^(n-1)) * (1 - jitter * u)` for the n-th failed attempt and
/// a uniform sample `u` in `[0, 1)`, so jitter only ever shortens the wait ("full jitter" would
/// make the first retry sometimes immediate, which defeats backoff for rate limits).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
    /// Fraction in `[0, 1]` of the delay that is randomised away.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_secs(5),
            factor: 2.0,
            cap: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Queue the task again, runnable after this delay.
    RetryAfter(Duration),
    /// The task is failed for good.
    GiveUp,
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempts + 1`, given a uniform sample `u` in `[0, 1)`.
    pub fn backoff(&self, failed_attempts: u32, u: f64) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(63) as i32;
        let raw = self.base.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let capped = raw.min(self.cap.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * u.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * (1.0 - jitter)).max(0.0))
    }

    /// Decide after the `attempt`-th attempt (1-based) failed with `class`. `retry_after` is the
    /// agent's own hint (e.g. a rate limit's retry-after); it is honoured but capped.
    pub fn decide(
        &self,
        class: ErrorClass,
        attempt: u32,
        max_attempts: u32,
        retry_after: Option<Duration>,
        u: f64,
    ) -> RetryDecision {
        if !class.is_retryable() || attempt >= max_attempts {
            return RetryDecision::GiveUp;
        }
        let backoff = self.backoff(attempt, u);
        let delay = match (class, retry_after) {
            (ErrorClass::RateLimited, Some(hint)) => hint.min(self.cap).max(backoff.min(hint)),
            _ => backoff,
        };
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_backoff_doubles() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1, 0.5), Duration::from_secs(5));
        assert_eq!(p.backoff(2, 0.5), Duration::from_secs(10));
        assert_eq!(p.backoff(3, 0.5), Duration::from_secs(20));
        assert_eq!(p.backoff(30, 0.5), Duration::from_secs(600));
    }

    #[test]
    fn non_retryable_classes_give_up_at_once() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(ErrorClass::AuthFailed, 1, 3, None, 0.0),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(ErrorClass::Canceled, 1, 3, None, 0.0),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(ErrorClass::AgentError, 3, 3, None, 0.0),
            RetryDecision::GiveUp
        );
        assert!(matches!(
            p.decide(ErrorClass::AgentError, 2, 3, None, 0.0),
            RetryDecision::RetryAfter(_)
        ));
    }

    #[test]
    fn rate_limit_honours_retry_after() {
        let p = RetryPolicy::default();
        let d = p.decide(ErrorClass::RateLimited, 1, 3, Some(Duration::from_secs(42)), 0.0);
        assert_eq!(d, RetryDecision::RetryAfter(Duration::from_secs(42)));
        let d = p.decide(
            ErrorClass::RateLimited,
            1,
            3,
            Some(Duration::from_secs(99_999)),
            0.0,
        );
        assert_eq!(d, RetryDecision::RetryAfter(p.cap));
    }

    proptest! {
        #[test]
        fn backoff_is_bounded_and_monotonic_without_jitter(
            base_ms in 1u64..10_000, factor in 1.0f64..4.0, cap_ms in 1u64..1_000_000,
            n in 1u32..100, u in 0.0f64..1.0, jitter in 0.0f64..1.0,
        ) {
            let p = RetryPolicy {
                max_attempts: 5,
                base: Duration::from_millis(base_ms),
                factor,
                cap: Duration::from_millis(cap_ms),
                jitter,
            };
            let d = p.backoff(n, u);
            // Never above the cap (allow float rounding of a nanosecond).
            prop_assert!(d <= p.cap + Duration::from_nanos(1));
            // Jitter only shortens: never below (1 - jitter) of the un-jittered delay.
            let plain = RetryPolicy { jitter: 0.0, ..p };
            let full = plain.backoff(n, u);
            prop_assert!(d <= full + Duration::from_nanos(1));
            prop_assert!(d.as_secs_f64() >= full.as_secs_f64() * (1.0 - jitter) - 1e-6);
            // Without jitter, later attempts never wait less.
            prop_assert!(plain.backoff(n + 1, u) >= full);
        }

        #[test]
        fn attempts_never_exceed_max(class_idx in 0usize..10, attempt in 1u32..20, max in 1u32..10) {
            let class = ErrorClass::ALL[class_idx];
            let p = RetryPolicy::default();
            let d = p.decide(class, attempt, max, None, 0.3);
            if attempt >= max || !class.is_retryable() {
                prop_assert_eq!(d, RetryDecision::GiveUp);
            } else {
                prop_assert!(matches!(d, RetryDecision::RetryAfter(_)));
            }
        }
    }
}
