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
use crate::limiter::{BudgetError, SharedBudget, Taken};
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
/// entry's life (ms), ARGV[3] its token. `{1, 0}`: a slot; `{0, ms}`: wait.
const TAKE: &str = "
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {0, paused} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local life = tonumber(ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + life, ARGV[3])
  if redis.call('PTTL', KEYS[1]) < life then redis.call('PEXPIRE', KEYS[1], life) end
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(first[2]) - now)}
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

/// The budget of one tenant in one Redis server.
pub(crate) struct RedisBudget {
    /// The URL without its password, for messages.
    name: String,
    url: RedisUrl,
    client: redis::Client,
    connection: ConnectionManager,
    log_key: String,
    pause_key: String,
    take: Script,
    release: Script,
    pause: Script,
    held: Held,
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
            take: Script::new(&format!("{NOW}{TAKE}")),
            release: Script::new(&format!("{NOW}{RELEASE}")),
            pause: Script::new(PAUSE),
            held: Held::default(),
        };
        for script in [&budget.take, &budget.release, &budget.pause] {
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
                .arg(token);
            let (slot, wait): (i64, i64) = self.invoke(invocation).await?;
            if slot == 1 {
                self.held.add(token, window);
                return Ok(Taken::Slot(token));
            }
            let wait = u64::try_from(wait).unwrap_or(1).max(1);
            Ok(Taken::Wait(Duration::from_millis(wait)))
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
