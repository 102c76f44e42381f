//! The tenant auth key: given or minted, leased to each call, and re-minted
//! before its lifetime (`--key-lifetime`, four hours by default) is up on a
//! long run.

use std::time::Duration;

use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::secret::Secret;

/// Where the tenant auth key comes from.
#[derive(Debug, Clone)]
pub struct TenantKeySource {
    /// A key given in LSQ_TENANT_AUTH_KEY (its age counts from the run's start).
    pub given: Option<Secret>,
    /// The mint endpoint's path and method.
    pub mint_path: String,
    /// HTTP method of the mint endpoint.
    pub mint_method: String,
    /// How long a key lives.
    pub lifetime: Duration,
}

#[derive(Debug, Clone)]
struct HeldKey {
    key: Secret,
    since: Instant,
    generation: u64,
}

/// The tenant auth key in use, re-minted before it expires on long runs.
#[derive(Debug)]
pub(crate) struct TenantKey {
    source: TenantKeySource,
    held: RwLock<Option<HeldKey>>,
}

/// Re-mint this long before a key's end of life: 15 minutes, or for a short
/// lifetime (`--key-lifetime`) a quarter of it, so a key is used for most of
/// its life however short that is.
const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);

/// A tenant key as handed to one call, with the generation to name it when
/// asking for a replacement.
#[derive(Debug, Clone)]
pub(crate) struct TenantKeyLease {
    /// The key.
    pub key: Secret,
    generation: u64,
    age: Duration,
}

impl TenantKey {
    /// Starts with the given key, if any; otherwise the first [`TenantKey::lease`]
    /// needs a mint.
    pub(crate) fn new(source: TenantKeySource) -> TenantKey {
        let held = source.given.clone().map(|key| HeldKey {
            key,
            since: Instant::now(),
            generation: 0,
        });
        TenantKey {
            source,
            held: RwLock::new(held),
        }
    }

    /// The mint endpoint (path, method).
    pub(crate) fn mint_endpoint(&self) -> (&str, &str) {
        (&self.source.mint_path, &self.source.mint_method)
    }

    /// How long before its end of life a key is re-minted.
    fn renew_before(&self) -> Duration {
        RENEW_BEFORE.min(self.source.lifetime / 4)
    }

    /// The key to use now, or `None` when one must be minted first (none yet,
    /// or the held one is within [`RENEW_BEFORE`] of its end).
    pub(crate) async fn lease(&self) -> Option<TenantKeyLease> {
        let held = self.held.read().await;
        let held = held.as_ref()?;
        let age = held.since.elapsed();
        if age + self.renew_before() >= self.source.lifetime {
            return None;
        }
        Some(TenantKeyLease {
            key: held.key.clone(),
            generation: held.generation,
            age,
        })
    }

    /// Whether a 401 seen with this lease may come from the key's expiry, and
    /// so deserves one re-mint instead of ending the run.
    pub(crate) fn may_have_expired(&self, lease: &TenantKeyLease) -> bool {
        lease.age + self.renew_before() * 2 >= self.source.lifetime
    }

    /// Installs a freshly minted key, unless another task already replaced the
    /// key `stale` named.
    pub(crate) async fn install(&self, key: Secret, stale: Option<&TenantKeyLease>) {
        let mut held = self.held.write().await;
        let current = held.as_ref().map(|h| h.generation);
        if let (Some(stale), Some(current)) = (stale, current) {
            if current != stale.generation {
                return;
            }
        }
        *held = Some(HeldKey {
            key,
            since: Instant::now(),
            generation: current.map_or(1, |g| g + 1),
        });
    }

    /// Forgets the key so the next lease mints one.
    pub(crate) async fn expire(&self, lease: &TenantKeyLease) {
        let mut held = self.held.write().await;
        if held.as_ref().map(|h| h.generation) == Some(lease.generation) {
            if let Some(h) = held.as_mut() {
                h.since = Instant::now() - self.source.lifetime;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(lifetime: Duration) -> TenantKey {
        TenantKey::new(TenantKeySource {
            given: Some(Secret::new("tenant")),
            mint_path: "/mint".into(),
            mint_method: "POST".into(),
            lifetime,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_renewed_a_quarter_hour_early_or_a_quarter_of_a_short_life_early() {
        let long = key(Duration::from_secs(4 * 3600));
        assert_eq!(long.renew_before(), Duration::from_secs(15 * 60));
        tokio::time::advance(Duration::from_secs(3 * 3600 + 44 * 60)).await;
        assert!(long.lease().await.is_some());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(long.lease().await.is_none(), "15 minutes before its end");

        let short = key(Duration::from_secs(8));
        assert_eq!(short.renew_before(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(short.lease().await.is_some(), "used for most of its life");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(short.lease().await.is_none());
    }
}
