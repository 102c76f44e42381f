//! The key cache: each lead's key (per portal) minted on a click, kept until
//! shortly before it dies so that repeated clicks cost no second call. In
//! memory always; with a Redis budget store also in Redis, so that several
//! `serve` processes share it. A Redis value is the key sealed as a link
//! token (the link secret's AEAD) naming its lead and portal, stored under a
//! hash of tenant, lead and portal with a TTL equal to the key's remaining
//! life: Redis never holds a readable key or lead id.
//!
//! Concurrent clicks for one lead share one mint: [`KeyCache::one_at_a_time`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisUrl;
use crate::redirect::{LinkClaims, LinkSecrets};
use crate::secret::Secret;
use crate::tenant::Tenant;

/// Longest wait for Redis on a click; past it the click goes on without.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// A lead at a portal: whom a key logs in where.
pub(crate) type LeadAt = (String, String);

/// The keys minted by this service (and, through Redis, its peers).
pub(crate) struct KeyCache {
    memory: Mutex<HashMap<LeadAt, (Secret, u64)>>,
    redis: Option<RedisCache>,
    flights: Mutex<HashMap<LeadAt, Arc<tokio::sync::Mutex<()>>>>,
}

struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
    secrets: Arc<LinkSecrets>,
}

/// Held while one click mints a lead's key; the others for that lead wait.
pub(crate) struct Flight<'a> {
    cache: &'a KeyCache,
    lead: LeadAt,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = lock(&self.cache.flights);
        // The map's copy, ours and our guard's: no other click waits for
        // this lead.
        if Arc::strong_count(&self.lock) <= 3 {
            flights.remove(&self.lead);
        }
    }
}

impl KeyCache {
    /// A cache in this process's memory only.
    pub(crate) fn local() -> KeyCache {
        KeyCache {
            memory: Mutex::default(),
            redis: None,
            flights: Mutex::default(),
        }
    }

    /// A cache shared through the Redis server at `url`.
    pub(crate) async fn shared(
        url: &RedisUrl,
        tenant: &Tenant,
        secrets: Arc<LinkSecrets>,
    ) -> anyhow::Result<KeyCache> {
        let failed = |e: redis::RedisError| {
            anyhow::anyhow!("cannot use the Redis server {url} for the key cache: {e}")
        };
        let client = redis::Client::open(url.expose().as_str()).map_err(failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let connection = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the Redis server {url} did not answer in time"))?
        .map_err(failed)?;
        Ok(KeyCache {
            redis: Some(RedisCache {
                connection,
                prefix: format!("lsq-dispatch:key:{}:", &tenant.fingerprint()[..16]),
                secrets,
            }),
            ..KeyCache::local()
        })
    }

    /// The key of `lead` that lives past `usable_after` (Unix seconds), with
    /// its expiry, from memory or else from Redis.
    pub(crate) async fn get(&self, lead: &LeadAt, usable_after: u64) -> Option<(Secret, u64)> {
        if let Some((key, expires)) = lock(&self.memory).get(lead) {
            if *expires > usable_after {
                return Some((key.clone(), *expires));
            }
        }
        let redis = self.redis.as_ref()?;
        let mut connection = redis.connection.clone();
        let name = redis.name(lead);
        let value: Option<String> = match tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("GET").arg(&name).query_async(&mut connection),
        )
        .await
        {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                tracing::warn!(
                    "key cache: Redis GET failed ({:?}); minting instead",
                    e.kind()
                );
                None
            }
            Err(_) => {
                tracing::warn!("key cache: Redis did not answer in time; minting instead");
                None
            }
        };
        let claims = redis.secrets.open(&value?, usable_after).ok()?;
        // A value is only good for the lead and portal it was sealed for.
        if (&claims.lead_id, &claims.portal_id) != (&lead.0, &lead.1) {
            return None;
        }
        let (key, expires) = claims.key?;
        lock(&self.memory).insert(lead.clone(), (key.clone(), expires));
        Some((key, expires))
    }

    /// Keeps `key` for `lead` until `expires` (Unix seconds); `now` is the
    /// time it was minted.
    pub(crate) async fn put(&self, lead: &LeadAt, key: &Secret, expires: u64, now: u64) {
        {
            let mut memory = lock(&self.memory);
            if memory.len() >= 4096 && memory.len().is_power_of_two() {
                memory.retain(|_, (_, at)| *at > now);
            }
            memory.insert(lead.clone(), (key.clone(), expires));
        }
        let Some(redis) = &self.redis else { return };
        let sealed = redis.secrets.seal(&LinkClaims {
            lead_id: lead.0.clone(),
            portal_id: lead.1.clone(),
            campaign: String::new(),
            issued: now,
            expires,
            key: Some((key.clone(), expires)),
        });
        let ttl_ms = expires.saturating_sub(now).saturating_mul(1000).max(1);
        let mut connection = redis.connection.clone();
        let mut set = redis::cmd("SET");
        set.arg(redis.name(lead)).arg(sealed).arg("PX").arg(ttl_ms);
        match tokio::time::timeout(REDIS_TIMEOUT, set.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("key cache: Redis SET failed ({:?})", e.kind()),
            Err(_) => tracing::warn!("key cache: Redis did not answer in time"),
        }
    }

    /// Waits until no other click of this process is minting `lead`'s key,
    /// and holds that place until the returned flight is dropped.
    pub(crate) async fn one_at_a_time(&self, lead: &LeadAt) -> Flight<'_> {
        let lock_of_lead = Arc::clone(lock(&self.flights).entry(lead.clone()).or_default());
        let guard = Arc::clone(&lock_of_lead).lock_owned().await;
        Flight {
            cache: self,
            lead: lead.clone(),
            lock: lock_of_lead,
            _guard: guard,
        }
    }

    /// Whether the shared cache answers (always, for one in memory).
    pub(crate) async fn ready(&self) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let mut connection = redis.connection.clone();
        let ping = redis::cmd("PING");
        let answer = ping.query_async::<String>(&mut connection);
        matches!(tokio::time::timeout(REDIS_TIMEOUT, answer).await, Ok(Ok(_)))
    }
}

impl RedisCache {
    fn name(&self, lead: &LeadAt) -> String {
        let mut text = Vec::with_capacity(80);
        text.extend_from_slice(self.prefix.as_bytes());
        text.extend_from_slice(lead.0.as_bytes());
        text.push(0);
        text.extend_from_slice(lead.1.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &text);
        format!(
            "{}{}",
            self.prefix,
            crate::tenant::hex(&digest.as_ref()[..16])
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(n: u8) -> LeadAt {
        (format!("lead-{n}"), "portal".into())
    }

    #[tokio::test]
    async fn a_key_is_handed_out_only_while_it_lives_past_the_margin() {
        let cache = KeyCache::local();
        assert!(cache.get(&lead(1), 100).await.is_none());
        cache.put(&lead(1), &Secret::new("k+/="), 200, 100).await;
        let (key, expires) = cache.get(&lead(1), 150).await.unwrap();
        assert_eq!((key.expose(), expires), ("k+/=", 200));
        assert!(cache.get(&lead(1), 200).await.is_none());
        assert!(cache.get(&lead(2), 150).await.is_none());
    }

    #[tokio::test]
    async fn clicks_for_one_lead_take_turns_and_others_do_not_wait() {
        let cache = KeyCache::local();
        let (one, two) = (lead(1), lead(2));
        let soon = Duration::from_millis(50);
        let first = cache.one_at_a_time(&one).await;
        let other = tokio::time::timeout(soon, cache.one_at_a_time(&two)).await;
        assert!(other.is_ok(), "another lead does not wait");
        let same = tokio::time::timeout(soon, cache.one_at_a_time(&one)).await;
        assert!(same.is_err(), "the same lead waits");
        drop((first, other));
        assert!(lock(&cache.flights).is_empty(), "no flight is left behind");
        let again = tokio::time::timeout(soon, cache.one_at_a_time(&one)).await;
        assert!(again.is_ok());
    }
}
