//! The one request path for the API: every attempt, retries included, waits
//! for the limiter; 429s pause every task; 5xx, timeouts and dropped
//! connections are retried with the policy's backoff; the tenant key is
//! minted or renewed here when needed; a host that cannot be reached stops
//! the run.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{ApiClient, ApiError, GeneratedKey, TenantKey, TenantKeyLease};
use crate::limiter::Limiter;
use crate::retry::RetryPolicy;
use crate::signal::StopSignal;

/// A call's result and how many attempts it took.
#[derive(Debug)]
pub(crate) struct Attempted<T> {
    /// The last attempt's result.
    pub result: Result<T, ApiError>,
    /// Attempts made, 429s included.
    pub attempts: u32,
    /// 429s met.
    pub rate_limited: u32,
}

tokio::task_local! {
    static RETRYING: Arc<AtomicBool>;
}

/// Runs `call`, setting `retrying` when one of its API attempts reached no
/// HTTP server (no connection, a reset, a timeout) and is to be tried again
/// (see [`with_retry_until`]).
pub(crate) async fn noting_retries<F: Future>(retrying: Arc<AtomicBool>, call: F) -> F::Output {
    RETRYING.scope(retrying, call).await
}

/// Runs `attempt` until it succeeds, fails for good, or the policy gives up.
pub(crate) async fn with_retry<T, F, Fut>(
    limiter: &Arc<Limiter>,
    policy: &RetryPolicy,
    attempt: F,
) -> Attempted<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    with_retry_until(limiter, policy, &StopSignal::new(), attempt).await
}

/// [`with_retry`] for a run that may be stopped: once `stop` is raised no
/// attempt starts. A call waiting for the limiter or in a backoff gives up
/// with its last answer, or with [`ApiError::NotStarted`] when it made no
/// attempt; an attempt under way is finished.
pub(crate) async fn with_retry_until<T, F, Fut>(
    limiter: &Arc<Limiter>,
    policy: &RetryPolicy,
    stop: &StopSignal,
    mut attempt: F,
) -> Attempted<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut attempts = 0;
    let mut failures = 0;
    let mut rate_limited = 0;
    let mut last = ApiError::NotStarted;
    let error = loop {
        let permit = match stop.unless_stopping(limiter.acquire()).await {
            None => break last,
            Some(Err(e)) => break ApiError::Budget(e.to_string()),
            Some(Ok(permit)) => permit,
        };
        attempts += 1;
        let (result, connection) = crate::limiter::observing(attempt()).await;
        match &result {
            // The call may have reached the server at any moment until now.
            Err(ApiError::Timeout(_) | ApiError::Transport(_)) => drop(permit),
            Err(ApiError::Unconnected(_) | ApiError::Unreachable { .. }) => permit.not_sent(),
            _ => permit.completed_on(connection),
        }
        let error = match result {
            Ok(value) => {
                return Attempted {
                    result: Ok(value),
                    attempts,
                    rate_limited,
                }
            }
            Err(error) => error,
        };
        // A 429 has paused the limiter already: the next attempt waits there,
        // not here, and does not count against `max_attempts`.
        let wait = match &error {
            ApiError::RateLimited { retry_after, .. } => {
                limiter.pause(*retry_after);
                rate_limited += 1;
                (rate_limited < policy.max_rate_limited).then_some(Duration::ZERO)
            }
            e if e.is_retryable() => {
                failures += 1;
                policy.wait_after(failures)
            }
            _ => None,
        };
        let Some(wait) = wait else {
            break error;
        };
        // Only an attempt that reached no HTTP server keeps the run's first
        // call proving the host: a 5xx or a 429 came from one.
        if matches!(
            error,
            ApiError::Unconnected(_)
                | ApiError::Unreachable { .. }
                | ApiError::Timeout(_)
                | ApiError::Transport(_)
        ) {
            let _ = RETRYING.try_with(|retrying| retrying.store(true, Ordering::Relaxed));
        }
        tracing::debug!(
            attempt = attempts,
            "API attempt {attempts} failed ({error}); trying again in {}ms",
            wait.as_millis()
        );
        if !wait.is_zero()
            && stop
                .unless_stopping(tokio::time::sleep(wait))
                .await
                .is_none()
        {
            break error;
        }
        last = error;
    };
    Attempted {
        result: Err(error),
        attempts,
        rate_limited,
    }
}

/// Everything one API call needs: client, limiter, policy and tenant key.
#[derive(Debug)]
pub(crate) struct Caller {
    /// The HTTP client.
    pub client: ApiClient,
    /// The shared limiter.
    pub limiter: Arc<Limiter>,
    /// The retry policy.
    pub policy: RetryPolicy,
    tenant: TenantKey,
    minting: Mutex<()>,
    /// Calls in a row that could not connect.
    unconnected: std::sync::Mutex<Unconnected>,
}

/// Calls in a row that could not connect at all, across leads.
#[derive(Debug, Default)]
struct Unconnected {
    calls: u32,
    /// One of them was a retry, made after a backoff: the host stayed
    /// unreachable for a while, it did not just blink.
    retried: bool,
}

/// Calls in a row that could not connect at all, one of them a retry, before
/// the run stops: the host is down or mistyped, and trying every row would
/// take hours.
const UNREACHABLE_AFTER: u32 = 5;

impl Caller {
    /// Puts the pieces together.
    pub(crate) fn new(
        client: ApiClient,
        limiter: Arc<Limiter>,
        policy: RetryPolicy,
        tenant: TenantKey,
    ) -> Caller {
        Caller {
            client,
            limiter,
            policy,
            tenant,
            minting: Mutex::new(()),
            unconnected: std::sync::Mutex::default(),
        }
    }

    /// [`with_retry_until`] through this caller's limiter and policy, each
    /// attempt [`Caller::watching`] for a dead host.
    async fn watched_with_retry<T, F, Fut>(&self, stop: &StopSignal, mut attempt: F) -> Attempted<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut tries = 0;
        with_retry_until(&self.limiter, &self.policy, stop, || {
            tries += 1;
            self.watching(tries > 1, attempt())
        })
        .await
    }

    /// Runs one attempt (`retry` when it is not the lead's first) and counts
    /// the calls in a row that could not connect: enough of them, one a
    /// retry, make the failure fatal. Any answer from the host, or any other
    /// failure, starts the count again.
    async fn watching<T>(
        &self,
        retry: bool,
        attempt: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let result = attempt.await;
        let mut unconnected = self.unconnected.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(ApiError::Unconnected(cause)) => {
                unconnected.calls += 1;
                unconnected.retried |= retry;
                if unconnected.calls >= UNREACHABLE_AFTER && unconnected.retried {
                    return Err(ApiError::Unreachable {
                        host: self.client.origin(),
                        cause,
                    });
                }
                Err(ApiError::Unconnected(cause))
            }
            Err(ApiError::NotStarted | ApiError::Budget(_)) => result,
            other => {
                *unconnected = Unconnected::default();
                other
            }
        }
    }

    /// The tenant key to use now, minting one (once, for all tasks) when there
    /// is none or the held one is close to its end; no mint starts once `stop`
    /// is raised. Returns the attempts spent.
    pub(crate) async fn tenant_key(
        &self,
        stop: &StopSignal,
    ) -> (Result<TenantKeyLease, ApiError>, u32) {
        if let Some(lease) = self.tenant.lease().await {
            return (Ok(lease), 0);
        }
        let _one_minter = self.minting.lock().await;
        if let Some(lease) = self.tenant.lease().await {
            return (Ok(lease), 0);
        }
        let (path, method) = self.tenant.mint_endpoint();
        let minted = self
            .watched_with_retry(stop, || self.client.mint_tenant_key(path, method))
            .await;
        match minted.result {
            Ok(key) => {
                self.tenant.install(key, None).await;
                let lease = self.tenant.lease().await.ok_or_else(|| {
                    ApiError::Protocol("the new tenant key is already too old to use".into())
                });
                (lease, minted.attempts)
            }
            Err(e) => (Err(e), minted.attempts),
        }
    }

    /// Generates one lead's auth key, with retries; a 401 that may come from
    /// the tenant key's expiry re-mints it once. Once `stop` is raised no
    /// attempt starts (see [`with_retry_until`]).
    pub(crate) async fn generate(
        &self,
        lead_id: &str,
        portal_id: &str,
        stop: &StopSignal,
    ) -> Attempted<GeneratedKey> {
        let mut attempts = 0;
        let mut rate_limited = 0;
        let mut reminted = false;
        loop {
            let (lease, mint_attempts) = self.tenant_key(stop).await;
            attempts += mint_attempts;
            let lease = match lease {
                Ok(lease) => lease,
                Err(error) => {
                    return Attempted {
                        result: Err(error),
                        attempts,
                        rate_limited,
                    }
                }
            };
            let call = self
                .watched_with_retry(stop, || {
                    self.client.generate(&lease.key, lead_id, portal_id)
                })
                .await;
            attempts += call.attempts;
            rate_limited += call.rate_limited;
            if let Err(ApiError::Unauthorized { .. }) = &call.result {
                if !reminted && self.tenant.may_have_expired(&lease) {
                    reminted = true;
                    self.tenant.expire(&lease).await;
                    continue;
                }
            }
            return Attempted {
                result: call.result,
                attempts,
                rate_limited,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{LimiterSettings, Rate};
    use crate::retry::tests::failing;

    /// A 500 from the API.
    fn boom() -> ApiError {
        ApiError::Server {
            status: 500,
            message: "boom".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_server_errors_but_not_rejections() {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let policy = RetryPolicy::default();
        let boom = boom();
        let done = with_retry(&limiter, &policy, failing(2, boom)).await;
        assert!(done.result.is_ok());
        assert_eq!(done.attempts, 3);

        let mut calls = 0;
        let done = with_retry(&limiter, &policy, || {
            calls += 1;
            async {
                Err::<(), _>(ApiError::Rejected {
                    status: 400,
                    message: "bad".into(),
                })
            }
        })
        .await;
        assert_eq!((calls, done.attempts), (1, 1));

        let done = with_retry(&limiter, &policy, || async {
            Err::<(), _>(ApiError::Timeout("slow".into()))
        })
        .await;
        assert_eq!(done.attempts, policy.max_attempts);
    }

    /// The run's first call holds the burst back through a retry only when
    /// its attempt reached no HTTP server: an answer, a 5xx or a 429
    /// included, shows a server there, and the burst goes as after a slow
    /// answer instead of waiting out a backoff and a second attempt.
    #[tokio::test(start_paused = true)]
    async fn only_an_attempt_that_reached_no_server_is_noted_as_retried() {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let policy = RetryPolicy::default();
        let boom = boom();
        let limited = ApiError::RateLimited {
            retry_after: None,
            message: "API calls exceeded the limit of 25 in 5 second(s)".into(),
        };
        for (error, held) in [
            (boom, false),
            (limited, false),
            (ApiError::Unconnected("refused".into()), true),
            (ApiError::Transport("reset".into()), true),
            (ApiError::Timeout("slow".into()), true),
        ] {
            let retrying = Arc::new(AtomicBool::new(false));
            let done = noting_retries(
                Arc::clone(&retrying),
                with_retry(&limiter, &policy, failing(1, error.clone())),
            )
            .await;
            assert!(done.result.is_ok());
            assert_eq!(retrying.load(Ordering::Relaxed), held, "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_and_does_not_use_up_attempts() {
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let policy = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let limited = ApiError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            message: "API calls exceeded the limit of 25 in 5 second(s)".into(),
        };
        let done = with_retry(&limiter, &policy, failing(2, limited)).await;
        assert!(done.result.is_ok());
        assert_eq!((done.attempts, done.rate_limited), (3, 2));
        assert_eq!(limiter.paused_total(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_for_the_limiter_and_for_a_retry() {
        use crate::signal::Stop;
        let limiter = Limiter::new(LimiterSettings::new("1/5s".parse().unwrap()));
        let policy = RetryPolicy::default();
        let raise_in_a_second = |stop: StopSignal| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.raise(Stop::Finish);
        };
        let boom = boom();
        // The only slot is taken: the call waits for it, then gives up unsent.
        let held = limiter.acquire().await.unwrap();
        let stop = StopSignal::new();
        let mut calls = 0;
        let (done, ()) = tokio::join!(
            with_retry_until(&limiter, &policy, &stop, || {
                calls += 1;
                std::future::ready(Ok::<(), _>(()))
            }),
            raise_in_a_second(stop.clone()),
        );
        assert_eq!((calls, done.attempts), (0, 0));
        assert_eq!(done.result, Err(ApiError::NotStarted));
        drop(held);

        // A signal during the attempt: the 500 that follows stands, and no
        // retry starts.
        let limiter = Limiter::new(LimiterSettings::new(Rate::DEFAULT));
        let stop = StopSignal::new();
        let done = with_retry_until(&limiter, &policy, &stop, || {
            stop.raise(Stop::Finish);
            std::future::ready(Err::<(), _>(boom.clone()))
        })
        .await;
        assert_eq!(done.attempts, 1);
        assert_eq!(done.result, Err(boom));
    }
}
