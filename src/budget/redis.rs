//! [`RedisBudget`]: a tenant's window log in Redis, shared by every process
//! on every machine that names the server.
//!
//! The log is a sorted set of tokens scored by expiry, and the pause a key
//! that expires by itself. Each take and release is one Lua script, so it is
//! atomic, and reads the time from the server (`TIME`): the one clock all
//! the machines share. Both keys carry the tenant's name in one hash tag, so
//! a Redis Cluster keeps them on one node.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{log_name, ms, Held};
use crate::config::RedisUrl;
use crate::limiter::{
    BudgetError, LearntShare, Memory, SharedBudget, Taken, ACCEPTED_FOR, MAX_PAUSE,
    SHARE_REMEMBERED,
};
use crate::tenant::Tenant;

/// Longest wait to connect, or for an answer: a server slower than this is
/// not one to pace calls by.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The server's time in ms, in every script that needs it.
const NOW: &str = "\
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS[1] the log, KEYS[2] the pause; ARGV[1] calls allowed, ARGV[2] a new
/// entry's life (ms), ARGV[3] its token, ARGV[4] the longest pause (ms),
/// ARGV[5] the budget's window (ms).
///
/// Gives `{got, ms, kind, entries, pause}`: `got` 1 for a slot, else wait
/// `ms`; `kind` 1 when a pause holds, 2 when that pause was longer than
/// the longest (or never ended) and was cut to a window; `entries` the log
/// entries that expired implausibly far ahead (more than the longest pause
/// beyond a new entry's life); `pause` the pause's time to live as found.
/// No entry outlives a new entry's life: a clock that ran ahead, or an
/// edit, cannot block the budget longer.
const TAKE: &str = "
local life = tonumber(ARGV[2])
local longest = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local implausible = 0
for _, token in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now + life), '+inf')) do
  if tonumber(redis.call('ZSCORE', KEYS[1], token)) > now + life + longest then
    implausible = implausible + 1
  end
  redis.call('ZADD', KEYS[1], now + life, token)
end
local paused = redis.call('PTTL', KEYS[2])
if paused > longest or paused == -1 then
  redis.call('PEXPIRE', KEYS[2], window)
  return {0, window, 2, implausible, paused}
end
if paused > 0 then return {0, paused, 1, implausible, paused} end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + life, ARGV[3])
  if redis.call('PTTL', KEYS[1]) < life then redis.call('PEXPIRE', KEYS[1], life) end
  return {1, 0, 0, implausible, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(first[2]) - now), 0, implausible, 0}
";

/// KEYS[1] the log; ARGV[1] the token, ARGV[2] how long (ms) its slot stays
/// blocked from now. An entry that is gone is put back.
const RELEASE: &str = "
local blocked = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + blocked, ARGV[1])
if redis.call('PTTL', KEYS[1]) < blocked then redis.call('PEXPIRE', KEYS[1], blocked) end
return 1
";

/// KEYS[1] the pause; ARGV[1] how long (ms) every process holds its calls.
const PAUSE: &str = "
local wait = tonumber(ARGV[1])
if wait > 0 and redis.call('PTTL', KEYS[1]) < wait then
  redis.call('SET', KEYS[1], '1', 'PX', wait)
end
return 1
";

/// KEYS[1] a key to remember; ARGV[1] what, to which the server's now is
/// added; ARGV[2] how long (ms) it is kept.
const REMEMBER: &str = "
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. now, 'PX', tonumber(ARGV[2]))
return 1
";

/// KEYS[1] the learnt share, KEYS[2] the last acceptance: their values
/// (`''` when absent) and the server's now.
const RECALL: &str = "
return {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or '', tostring(now)}
";

/// The budget of one tenant in one Redis server.
pub(crate) struct RedisBudget {
    /// The URL without its password, for messages.
    name: String,
    url: RedisUrl,
    client: redis::Client,
    connection: ConnectionManager,
    log_key: String,
    pause_key: String,
    share_key: String,
    accepted_key: String,
    take: Script,
    release: Script,
    pause: Script,
    remember: Script,
    recall: Script,
    held: Held,
    /// The budget's window: an implausible pause is cut to one.
    window: Duration,
}

impl std::fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisBudget({} {})", self.name, self.log_key)
    }
}

impl RedisBudget {
    /// Connects and loads the scripts, so that a server that cannot be
    /// reached, or refuses them, stops the process before its first call.
    pub(crate) async fn connect(
        url: &RedisUrl,
        tenant: &Tenant,
        window: Duration,
    ) -> Result<RedisBudget, BudgetError> {
        let client = redis::Client::open(url.expose().as_str()).map_err(|e| error(url, &e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| error(url, &e))?;
        let tag = format!("lsq-dispatch:{{{}}}", log_name(tenant));
        let budget = RedisBudget {
            name: url.to_string(),
            url: url.clone(),
            client,
            connection,
            log_key: format!("{tag}:log"),
            pause_key: format!("{tag}:pause"),
            share_key: format!("{tag}:share"),
            accepted_key: format!("{tag}:accepted"),
            take: Script::new(&format!("{NOW}{TAKE}")),
            release: Script::new(&format!("{NOW}{RELEASE}")),
            pause: Script::new(PAUSE),
            remember: Script::new(&format!("{NOW}{REMEMBER}")),
            recall: Script::new(&format!("{NOW}{RECALL}")),
            held: Held::default(),
            window,
        };
        for script in [
            &budget.take,
            &budget.release,
            &budget.pause,
            &budget.remember,
            &budget.recall,
        ] {
            let mut connection = budget.connection.clone();
            script
                .prepare_invoke()
                .load_async(&mut connection)
                .await
                .map_err(|e| error(url, &e))?;
        }
        Ok(budget)
    }

    /// Runs a script; a connection found dropped is opened again once, as a
    /// restarted server or a proxy's idle timeout needs.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, BudgetError> {
        let mut connection = self.connection.clone();
        match invocation.invoke_async(&mut connection).await {
            Err(e) if e.is_connection_dropped() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                invocation.invoke_async(&mut connection).await
            }
            answer => answer,
        }
        .map_err(|e| error(&self.url, &e))
    }
}

impl SharedBudget for RedisBudget {
    fn describe(&self) -> String {
        format!("the shared API budget {}", self.name)
    }

    fn take(
        &self,
        allowed: u32,
        window: Duration,
        hold: Duration,
    ) -> BoxFuture<'_, Result<Taken, BudgetError>> {
        Box::pin(async move {
            let token = rand::random::<u64>();
            let mut invocation = self.take.key(&self.log_key);
            invocation
                .key(&self.pause_key)
                .arg(allowed)
                .arg(ms(hold + window))
                .arg(token)
                .arg(ms(MAX_PAUSE))
                .arg(ms(self.window));
            let (slot, wait, kind, entries, pause): (i64, i64, i64, i64, i64) =
                self.invoke(invocation).await?;
            if entries > 0 {
                tracing::warn!(
                    "{}: {}",
                    self.describe(),
                    super::implausible_entries(entries as usize, hold + window)
                );
            }
            if kind == 2 {
                let what = match pause {
                    -1 => "it held a pause that never ends".to_owned(),
                    ms => format!("it held a pause of {}s", ms / 1000),
                };
                tracing::warn!(
                    "{}: {}",
                    self.describe(),
                    super::implausible_pause(&what, self.window)
                );
            }
            if slot == 1 {
                self.held.add(token, window);
                return Ok(Taken::Slot(token));
            }
            let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(1).max(1));
            Ok(match kind {
                0 => Taken::Wait(wait),
                _ => Taken::Paused(wait),
            })
        })
    }

    fn release(&self, token: u64, blocked_for: Duration) -> BoxFuture<'_, Result<(), BudgetError>> {
        Box::pin(async move {
            let mut invocation = self.release.key(&self.log_key);
            invocation.arg(token).arg(ms(blocked_for));
            let _: i64 = self.invoke(invocation).await?;
            self.held.remove(token);
            Ok(())
        })
    }

    fn pause(&self, wait: Duration) -> BoxFuture<'_, Result<(), BudgetError>> {
        Box::pin(async move {
            let mut invocation = self.pause.key(&self.pause_key);
            invocation.arg(ms(wait));
            let _: i64 = self.invoke(invocation).await?;
            Ok(())
        })
    }

    fn recall(&self) -> BoxFuture<'_, Result<Memory, BudgetError>> {
        Box::pin(async move {
            let mut invocation = self.recall.key(&self.share_key);
            invocation.key(&self.accepted_key);
            let (share, accepted, now): (String, String, String) = self.invoke(invocation).await?;
            let now: u64 = now.parse().unwrap_or(0);
            let mut capped = false;
            // A value dated ahead of the server's clock (one set back) is
            // taken as learnt now.
            let mut age = |at: &str| {
                let at: u64 = at.parse().ok()?;
                capped |= at > now;
                Some(Duration::from_millis(now.saturating_sub(at)))
            };
            let share = match share.split_whitespace().collect::<Vec<_>>().as_slice() {
                [allowed, probes, at] => match (allowed.parse(), probes.parse(), age(at)) {
                    (Ok(allowed), Ok(failed_probes), Some(age)) => Some(LearntShare {
                        allowed,
                        failed_probes,
                        age,
                    }),
                    _ => None,
                },
                _ => None,
            };
            let accepted = match accepted.split_whitespace().collect::<Vec<_>>().as_slice() {
                [mark, at] => age(at).map(|age| ((*mark).to_owned(), age)),
                _ => None,
            };
            if capped {
                tracing::warn!(
                    "the shared API budget {} holds times ahead of its server's clock; taken \
                     as learnt now",
                    self.name
                );
            }
            Ok(Memory { share, accepted })
        })
    }

    fn remember_share(
        &self,
        allowed: u32,
        failed_probes: u32,
    ) -> BoxFuture<'_, Result<(), BudgetError>> {
        let value = format!("{allowed} {failed_probes}");
        self.remember_value(&self.share_key, value, SHARE_REMEMBERED)
    }

    fn remember_accepted(&self, mark: String) -> BoxFuture<'_, Result<(), BudgetError>> {
        self.remember_value(&self.accepted_key, mark, ACCEPTED_FOR)
    }
}

impl RedisBudget {
    /// Keeps `value`, with the server's now, under `key` for `kept`.
    fn remember_value<'a>(
        &'a self,
        key: &'a str,
        value: String,
        kept: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>> {
        Box::pin(async move {
            let mut invocation = self.remember.key(key);
            invocation.arg(value).arg(ms(kept));
            let _: i64 = self.invoke(invocation).await?;
            Ok(())
        })
    }
}

impl Drop for RedisBudget {
    /// Settles the slots never given back (see [`Held`]) over a connection
    /// of its own: the runtime may be gone. Best effort, briefly: an entry
    /// left behind expires by itself.
    fn drop(&mut self) {
        let held = self.held.drain();
        if held.is_empty() {
            return;
        }
        let Ok(mut connection) = self.client.get_connection_with_timeout(TIMEOUT) else {
            return;
        };
        let _ = connection.set_read_timeout(Some(TIMEOUT));
        let _ = connection.set_write_timeout(Some(TIMEOUT));
        for (token, window) in held {
            let mut invocation = self.release.key(&self.log_key);
            invocation.arg(token).arg(ms(window) + 1);
            let _: Result<i64, _> = invocation.invoke(&mut connection);
        }
    }
}

/// What went wrong with the server at `url`, and what to check; no password
/// in it, even one the server's message repeats.
fn error(url: &RedisUrl, e: &RedisError) -> BudgetError {
    let mut reason = format!(
        "{e}; check --budget-store (or LSQ_BUDGET_STORE) and that the Redis server is up and \
         reachable from here"
    );
    if let Some(password) = url.expose().password().filter(|p| !p.is_empty()) {
        reason = reason.replace(password, "***");
    }
    BudgetError {
        store: url.to_string(),
        reason,
    }
}

// The tests' real Redis server, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/it/support/installed.rs"]
#[allow(unreachable_pub)]
mod installed;
#[cfg(test)]
#[path = "../../tests/it/support/redis_server.rs"]
#[allow(unreachable_pub, dead_code)]
mod redis_server;
#[cfg(test)]
use installed::installed_or_skip;

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes' stores on one real Redis server.
    async fn two_stores(server: &redis_server::RedisServer) -> (RedisBudget, RedisBudget) {
        let url = RedisUrl::parse(&server.url()).unwrap();
        let tenant = Tenant::new(
            &url::Url::parse("https://portalapi.leadsquared.com").unwrap(),
            &crate::secret::Secret::new("access".to_owned()),
        );
        let window = Duration::from_secs(5);
        (
            RedisBudget::connect(&url, &tenant, window).await.unwrap(),
            RedisBudget::connect(&url, &tenant, window).await.unwrap(),
        )
    }

    #[tokio::test]
    async fn the_learnt_share_and_the_acceptance_are_remembered_for_the_next_run() {
        let Some(server) = redis_server::RedisServer::start(
            "the_learnt_share_and_the_acceptance_are_remembered_for_the_next_run",
        ) else {
            return;
        };
        let (a, b) = two_stores(&server).await;
        assert_eq!(a.recall().await.unwrap(), Memory::default());
        a.remember_share(15, 2).await.unwrap();
        a.remember_accepted("abc123".into()).await.unwrap();
        let memory = b.recall().await.unwrap();
        let share = memory.share.unwrap();
        assert_eq!((share.allowed, share.failed_probes), (15, 2));
        assert!(share.age < Duration::from_secs(5), "{share:?}");
        let (mark, age) = memory.accepted.unwrap();
        assert_eq!(mark, "abc123");
        assert!(age < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn values_ahead_of_the_servers_clock_and_endless_pauses_block_no_run() {
        let Some(server) = redis_server::RedisServer::start(
            "values_ahead_of_the_servers_clock_and_endless_pauses_block_no_run",
        ) else {
            return;
        };
        let (a, b) = two_stores(&server).await;
        let mut connection = a.connection.clone();
        let far = "99999999999999";
        let _: () = redis::cmd("SET")
            .arg(&a.share_key)
            .arg(format!("10 0 {far}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(&a.accepted_key)
            .arg(format!("m {far}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        // A pause that never ends, as a hand-set key would be.
        let _: () = redis::cmd("SET")
            .arg(&a.pause_key)
            .arg("1")
            .query_async(&mut connection)
            .await
            .unwrap();
        let memory = b.recall().await.unwrap();
        assert_eq!(memory.share.unwrap().age, Duration::ZERO);
        assert_eq!(memory.accepted, Some(("m".into(), Duration::ZERO)));
        assert_eq!(
            b.take(5, Duration::from_secs(5), Duration::from_secs(30))
                .await
                .unwrap(),
            Taken::Paused(Duration::from_secs(5)),
            "cut to a window"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&a.pause_key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 5_000, "{ttl}");
    }
}
