//! Retrying: the [`RetryPolicy`] and its backoff (exponential, full jitter)
//! that API calls and SMTP sends share. The API's request path, which also
//! waits for the limiter and handles 429s, is `crate::api::caller`.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::signal::StopSignal;

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call for 5xx, timeouts and connection failures.
    pub max_attempts: u32,
    /// 429s one call may meet before it gives up (each pauses every task).
    pub max_rate_limited: u32,
    /// First backoff ceiling; doubles each attempt.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_rate_limited: 20,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a random wait up to `min(cap, base * 2^(failures-1))`, so
    /// concurrent callers spread out instead of retrying in step.
    pub fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.cap);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }

    /// After the `failures`-th retryable failure: how long to wait before the
    /// next attempt, or `None` when `max_attempts` are spent.
    pub fn wait_after(&self, failures: u32) -> Option<Duration> {
        (failures < self.max_attempts).then(|| self.backoff(failures))
    }
}

/// Calls `attempt` until it succeeds, fails with an error `retryable` turns
/// down, or the policy's attempts are spent, waiting the policy's backoff
/// between attempts. Once `stop` is raised no retry starts, and the last
/// error stands (the first attempt is the caller's to decide). Returns the
/// last result and the attempts made.
///
/// For calls that share no rate budget (SMTP); API calls go through
/// `crate::api::caller`, which also waits for the limiter and handles 429s.
pub(crate) async fn with_backoff<T, E, F, Fut>(
    policy: &RetryPolicy,
    retryable: impl Fn(&E) -> bool,
    stop: &StopSignal,
    mut attempt: F,
) -> (Result<T, E>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Err(error) if retryable(&error) => {
                let waited = match policy.wait_after(attempts) {
                    Some(wait) => stop.unless_stopping(tokio::time::sleep(wait)).await,
                    None => None,
                };
                if waited.is_none() {
                    return (Err(error), attempts);
                }
            }
            outcome => return (outcome, attempts),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An attempt that fails with `error` `failures` times, then succeeds.
    pub(crate) fn failing<E: Clone>(
        mut failures: u32,
        error: E,
    ) -> impl FnMut() -> std::future::Ready<Result<(), E>> {
        move || {
            let result = match failures.checked_sub(1) {
                Some(left) => {
                    failures = left;
                    Err(error.clone())
                }
                None => Ok(()),
            };
            std::future::ready(result)
        }
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy::default();
        for failures in 1..10 {
            let ceiling = (policy.base * (1 << (failures - 1))).min(policy.cap);
            assert!(policy.backoff(failures) <= ceiling);
        }
    }

    #[test]
    fn wait_after_gives_up_when_the_attempts_are_spent() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(policy.wait_after(1).is_some());
        assert!(policy.wait_after(2).is_some());
        assert_eq!(policy.wait_after(3), None);
    }

    #[tokio::test(start_paused = true)]
    async fn with_backoff_retries_only_what_it_is_told_to() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let only_again = |e: &&str| *e == "again";
        let stop = StopSignal::new();
        let done = with_backoff(&policy, only_again, &stop, failing(10, "again")).await;
        assert_eq!(done, (Err("again"), 3));
        let done = with_backoff(&policy, only_again, &stop, failing(10, "no")).await;
        assert_eq!(done, (Err("no"), 1));
        let done = with_backoff(&policy, only_again, &stop, failing(1, "again")).await;
        assert_eq!(done, (Ok(()), 2));
    }
}
