//! Helpers shared by the integration tests: each test starts its own `redis-server`, uses
//! its own key prefix, and reads Redis through its own connection to check what is left.

#![allow(dead_code)] // every test binary uses a different subset

pub mod consumer;

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use rmq_runtime::{Client, Config, TopicKeys};
use rmq_testkit::RedisServer;

/// How long a test waits for an outcome that normally takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a test watches for something that must *not* happen (a second delivery),
/// after the retries or delays involved (all ≤ 100 ms in these tests) have passed.
pub const QUIET: Duration = Duration::from_millis(400);

/// A private Redis, a unique prefix, an rmq client on both and a raw connection to check
/// the state of Redis.
pub struct TestEnv {
    pub server: RedisServer,
    pub prefix: String,
    pub client: Client,
    pub redis: MultiplexedConnection,
}

impl TestEnv {
    /// Starts everything for the test `name`.
    pub async fn start(name: &str) -> TestEnv {
        Self::start_configured(name, &[], |config| config).await
    }

    /// Like [`TestEnv::start`], passing `server_args` to `redis-server` and letting
    /// `configure` adjust the client's [`Config`] (e.g. a short `lease_duration`).
    pub async fn start_configured(
        name: &str,
        server_args: &[&str],
        configure: impl FnOnce(Config) -> Config,
    ) -> TestEnv {
        let server = start_server(server_args);
        let prefix = rmq_testkit::unique_prefix(name);
        let client = within(
            "Client::connect",
            PATIENCE,
            Client::connect(configure(config(&server, &prefix))),
        )
        .await
        .unwrap_or_else(|e| panic!("Client::connect to {}: {e}", server.url()));
        let redis = raw_connection(&server.url()).await;
        TestEnv {
            server,
            prefix,
            client,
            redis,
        }
    }

    /// Replaces the raw connection (after the server was restarted).
    pub async fn reconnect_raw(&mut self) {
        self.redis = raw_connection(&self.server.url()).await;
    }

    /// Redis' clock, in ms since 1970.
    pub async fn redis_now_ms(&self) -> u64 {
        let mut redis = self.redis.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut redis)
            .await
            .expect("TIME");
        secs * 1000 + micros / 1000
    }

    /// The ids in the pending lists of `topic`, high priority first, each list from its
    /// front (the next to be fetched) to its back.
    pub async fn pending_ids(&self, topic: &str) -> Vec<String> {
        let mut redis = self.redis.clone();
        let mut ids = Vec::new();
        for key in &self.keys(topic).pending {
            let mut list: Vec<String> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .expect("LRANGE");
            // LPUSH adds at the back, RPOP takes from the front: the front is the tail.
            list.reverse();
            ids.extend(list);
        }
        ids
    }

    /// Another client on this test's server and prefix, with an adjusted configuration.
    pub async fn client_with(&self, adjust: impl FnOnce(Config) -> Config) -> Client {
        within(
            "Client::connect",
            PATIENCE,
            Client::connect(adjust(config(&self.server, &self.prefix))),
        )
        .await
        .unwrap_or_else(|e| panic!("Client::connect: {e}"))
    }

    /// One counter of the topic's `stats` hash (0 when absent).
    pub async fn stat(&self, topic: &str, name: &str) -> i64 {
        self.stats(topic).await.get(name).copied().unwrap_or(0)
    }

    /// The keys of `topic` under this test's prefix.
    pub fn keys(&self, topic: &str) -> TopicKeys {
        self.client.keys(topic)
    }

    /// Every key under this test's prefix, sorted.
    pub async fn all_keys(&self) -> Vec<String> {
        keys_under(&self.redis, &self.prefix).await
    }

    /// Keys under this test's prefix other than the `:stats` counters and `:metrics`, i.e.
    /// what a completed message must not leave behind.
    pub async fn message_keys(&self) -> Vec<String> {
        self.all_keys()
            .await
            .into_iter()
            .filter(|key| !is_observation(key))
            .collect()
    }

    /// Waits until nothing but `:stats`, `:metrics` and `:waiting` is left under the prefix; panics
    /// with what is left.
    pub async fn assert_eventually_clean(&self) {
        let redis = self.redis.clone();
        let prefix = self.prefix.clone();
        let clean = poll(PATIENCE, || {
            let redis = redis.clone();
            let prefix = prefix.clone();
            async move {
                keys_under(&redis, &prefix)
                    .await
                    .iter()
                    .all(|key| is_observation(key))
            }
        })
        .await;
        if !clean {
            panic!(
                "after every message completed, Redis still holds per-message keys:\n{}",
                self.describe().await
            );
        }
    }

    /// Every key under the prefix with its type and size, for failure messages.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for key in self.all_keys().await {
            let mut redis = self.redis.clone();
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap_or_default();
            let size_cmd = match kind.as_str() {
                "list" => "LLEN",
                "zset" => "ZCARD",
                "hash" => "HLEN",
                "set" => "SCARD",
                _ => "STRLEN",
            };
            let size: i64 = redis::cmd(size_cmd)
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap_or(-1);
            out.push_str(&format!("  {key} ({kind}, {size})\n"));
        }
        if out.is_empty() {
            out.push_str("  (no keys)\n");
        }
        out
    }

    /// The current lease of message `id` of `topic`: its `inflight` member
    /// (`<id>|<token>|<attempt>`) and deadline (ms), while it is in flight.
    pub async fn lease(&self, topic: &str, id: &str) -> Option<(String, f64)> {
        let mut redis = self.redis.clone();
        let leases: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.keys(topic).inflight)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut redis)
            .await
            .expect("ZRANGE inflight");
        leases
            .into_iter()
            .find(|(member, _)| member.rsplitn(3, '|').nth(2) == Some(id))
    }

    /// Waits until `n` consumers of `topic` are parked in `waiting` and each listens on its
    /// push channel (`<wake>:<consumer>`): only then does a producer hand it a message (a
    /// consumer can park before its subscription is live; a message then takes the queue).
    pub async fn wait_parked(&self, topic: &str, n: usize) {
        let keys = self.keys(topic);
        let redis = self.redis.clone();
        let ready = poll(PATIENCE, || {
            let (mut redis, keys) = (redis.clone(), keys.clone());
            async move {
                let parked: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&keys.waiting)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut redis)
                    .await
                    .expect("ZRANGE waiting");
                if parked.len() != n {
                    return false;
                }
                let channels: Vec<String> = parked
                    .iter()
                    .filter_map(|m| m.split_once('|'))
                    .map(|(_, consumer)| format!("{}:{consumer}", keys.wake))
                    .collect();
                let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channels)
                    .query_async(&mut redis)
                    .await
                    .expect("PUBSUB NUMSUB");
                counts.iter().all(|(_, listeners)| *listeners > 0)
            }
        })
        .await;
        assert!(
            ready,
            "{n} consumer(s) of {topic} never parked and listened:\n{}",
            self.describe().await
        );
    }

    /// How many messages of `topic` are in flight (leases in `inflight`, without the one
    /// member lib.lua pins there, scored +inf, while any lease is).
    pub async fn in_flight(&self, topic: &str) -> usize {
        let mut redis = self.redis.clone();
        redis::cmd("ZCOUNT")
            .arg(&self.keys(topic).inflight)
            .arg("-inf")
            .arg("(+inf")
            .query_async(&mut redis)
            .await
            .expect("ZCOUNT inflight")
    }

    /// Redis' encoding of `key`, e.g. "listpack" (scanned whole on every lookup) or
    /// "hashtable".
    pub async fn encoding(&self, key: &str) -> String {
        redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
            .expect("OBJECT ENCODING")
    }

    /// How many times this test's Redis has run `command` (lower case), from `INFO
    /// commandstats`: the server is the test's own.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.redis.clone())
            .await
            .expect("INFO commandstats");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count of calls"))
    }

    /// `ZCARD`/`LLEN`/`HLEN` of `key` (0 when it does not exist).
    pub async fn len(&self, key: &str) -> usize {
        let mut redis = self.redis.clone();
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("TYPE");
        let cmd = match kind.as_str() {
            "none" => return 0,
            "list" => "LLEN",
            "zset" => "ZCARD",
            "hash" => "HLEN",
            other => panic!("{key} is a {other}"),
        };
        redis::cmd(cmd)
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("length")
    }

    /// Waits until `client.dead_letters::<T>()` lists at least `n` entries; panics with the
    /// state of Redis if it does not.
    pub async fn wait_for_dead_letters<T: rmq_runtime::Topic>(&self, n: usize) {
        let client = &self.client;
        let found = poll(PATIENCE, || async move {
            client
                .dead_letters::<T>()
                .await
                .map(|dead| dead.len() >= n)
                .unwrap_or(false)
        })
        .await;
        if !found {
            panic!(
                "expected {n} dead letter(s) of {}; Redis holds:\n{}",
                T::NAME,
                self.describe().await
            );
        }
    }

    /// The counters in the topic's `stats` hash.
    pub async fn stats(&self, topic: &str) -> std::collections::HashMap<String, i64> {
        let mut redis = self.redis.clone();
        redis::cmd("HGETALL")
            .arg(&self.keys(topic).stats)
            .query_async(&mut redis)
            .await
            .expect("HGETALL stats")
    }
}

/// The config every test uses: the private server and the test's prefix, defaults
/// otherwise.
/// A topic's counters and metrics, and its idle consumers (`waiting`): kept by design,
/// unlike anything per message.
fn is_observation(key: &str) -> bool {
    key.ends_with(":stats") || key.ends_with(":metrics") || key.ends_with(":waiting")
}

pub fn config(server: &RedisServer, prefix: &str) -> Config {
    Config {
        redis_url: server.url(),
        queue_prefix: prefix.to_string(),
        ..Config::default()
    }
}

pub const PRODUCE_LUA: &str = include_str!("../../../rmq-runtime/lua/produce.lua");
pub const FETCH_LUA: &str = include_str!("../../../rmq-runtime/lua/fetch.lua");
pub const ACK_LUA: &str = include_str!("../../../rmq-runtime/lua/ack.lua");

/// An `EVAL` of `script` (a file of `rmq-runtime/lua/`, with the `lib.lua` helpers it names)
/// on `keys`; the arguments follow.
pub fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut call = redis::cmd("EVAL");
    call.arg(rmq_runtime::__private::lua_script(script))
        .arg(keys.len())
        .arg(keys);
    call
}

/// fetch.lua at `clock` (ms, as text: it may have a fraction; "" = Redis' own) leasing up
/// to `want`, for a consumer that does not park.
pub fn fetch_at(k: &TopicKeys, clock: String, want: usize) -> redis::Cmd {
    let mut call = eval(FETCH_LUA, &k.for_fetch());
    call.arg(clock)
        .arg(want)
        .arg(30_000)
        .arg(3)
        .arg(1)
        .arg(100)
        .arg(0)
        .arg("");
    call
}

/// Starts a private redis-server or fails the test with the testkit's explanation.
pub fn start_server(extra_args: &[&str]) -> RedisServer {
    RedisServer::start_with(extra_args).unwrap_or_else(|e| panic!("{e}"))
}

/// A connection of our own, to look at Redis the way an operator would.
pub async fn raw_connection(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection to the test's redis-server")
}

/// Every key matching `prefix:*` (SCAN, not KEYS), sorted.
pub async fn keys_under(redis: &MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut redis = redis.clone();
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Polls `check` every 5 ms until it is true (→ true) or `timeout` passes (→ false).
pub async fn poll<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls a synchronous condition; panics with `what` if it does not hold within
/// [`PATIENCE`].
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    if !poll(PATIENCE, || std::future::ready(check())).await {
        panic!("timed out after {:?} waiting for {what}", started.elapsed());
    }
}

/// Awaits `future`, failing the test if it takes longer than `timeout` (so a hung
/// `shutdown()` or `spawn()` fails instead of hanging the suite).
pub async fn within<T>(what: &str, timeout: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}

/// Spawns a runtime for `topics` on `client` with `max_workers`, bounded in time.
pub async fn spawn_runtime(
    client: &Client,
    topics: &[&'static str],
    max_workers: usize,
) -> rmq_runtime::RuntimeHandle {
    within(
        "spawning the runtime",
        PATIENCE,
        rmq_runtime::builder()
            .client(client)
            .topics(topics.iter().copied())
            .max_workers(max_workers)
            .spawn(),
    )
    .await
    .unwrap_or_else(|e| panic!("spawn: {e}"))
}

/// Shuts a runtime down gracefully, bounded in time.
pub async fn shutdown(handle: rmq_runtime::RuntimeHandle) {
    within("RuntimeHandle::shutdown", PATIENCE, handle.shutdown())
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
}

/// Milliseconds since 1970.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Redis holds every write command (scripts included) for `ms`, then runs them in order.
pub async fn pause_writes(redis: &mut redis::aio::MultiplexedConnection, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async(redis)
        .await
        .expect("CLIENT PAUSE");
}

/// `CONFIG SET name value` on this Redis.
pub async fn config_set(redis: &mut redis::aio::MultiplexedConnection, name: &str, value: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async::<()>(redis)
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
}

/// `SCRIPT FLUSH` on this Redis: it forgets every loaded script, as after a restart.
pub async fn script_flush(redis: &mut redis::aio::MultiplexedConnection) {
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(redis)
        .await
        .expect("SCRIPT FLUSH");
}
