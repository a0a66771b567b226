//! The Redis connection shared by producers and the runtime, and the process-wide client.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisResult, Value};
use tokio::sync::OnceCell;

use rmq_core::{MessageId, Topic, TopicKeys};

use crate::admin::{DeadLetter, DeadLetterQueue};
use crate::config::{Config, ConfigError};
use crate::error::{redact, Error};
use crate::producer::RedisClock;
use crate::producer::SendBuilder;
use crate::scripts::SCRIPTS;
use crate::sends::Sends;
use crate::stats::ProducerCounters;

/// A connection to one rmq deployment (a Redis and a key prefix). Cheap to clone: clones
/// share one multiplexed connection that reconnects by itself.
///
/// Sends through one client that overlap share calls: while two sends to a topic are on
/// their way to Redis, the sends to that topic that other tasks start wait for one of
/// them, and then go together in one call, from a task the client spawns, each with its
/// own result. Should that task be stopped before Redis answers (its tokio runtime shut
/// down), each of its sends returns [`Error::Interrupted`](crate::Error::Interrupted).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    redis: redis::Client,
    conn: ConnectionManager,
    producer: ProducerCounters,
    clock: RedisClock,
    /// The topics with sends on their way, and the sends waiting to go in the next call.
    sends: Sends,
    /// `keys(topic)` of the topics produced to so far (at most [`CACHED_TOPICS`]).
    topic_keys: RwLock<HashMap<Box<str>, Arc<TopicKeys>>>,
}

/// Most topics whose keys a client keeps at hand; past that they are built per call. (A
/// topic name can come from outside, through [`Client::send_raw`].)
const CACHED_TOPICS: usize = 1024;

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("redis_url", &self.display_url())
            .field("queue_prefix", &self.inner.config.queue_prefix)
            .finish()
    }
}

impl Client {
    /// Connects and loads the scripts. Fails with [`Error::Unreachable`] or [`Error::Auth`]
    /// when Redis cannot be used, saying what to fix.
    pub async fn connect(config: Config) -> Result<Client, Error> {
        config.validate()?;
        let url = config.redis_url.clone();
        let mut info = url.as_str().into_connection_info().map_err(|e| {
            Error::Config(ConfigError {
                name: "REDIS_URL".into(),
                value: redact(&url),
                expected: format!("a URL such as redis://127.0.0.1:6379 ({e})"),
            })
        })?;
        let mut settings = info.redis_settings().clone();
        if config.redis_db != 0 {
            settings = settings.set_db(config.redis_db);
        }
        if let Some(password) = &config.redis_password {
            settings = settings.set_password(password);
        }
        info = info.set_redis_settings(settings);
        let redis = redis::Client::open(info).map_err(|e| Error::connect(&url, e))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn = redis
            .get_connection_manager_with_config(manager)
            .await
            .map_err(|e| Error::connect(&url, e))?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                redis,
                conn,
                producer: ProducerCounters::default(),
                clock: RedisClock::default(),
                sends: Sends::default(),
                topic_keys: RwLock::default(),
            }),
        };
        // One plain command first: a server that wants a password answers NOAUTH here, in
        // one clear error, rather than once per script below.
        redis::cmd("PING")
            .query_async::<()>(&mut client.connection())
            .await
            .map_err(|e| Error::connect(&url, e))?;
        client
            .load_scripts()
            .await
            .map_err(|e| Error::connect(&url, e))?;
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The Redis keys of `topic` under this client's prefix.
    pub fn keys(&self, topic: &str) -> TopicKeys {
        TopicKeys::new(&self.inner.config.queue_prefix, topic)
    }

    /// [`Client::keys`], built once per topic: formatting the fifteen names took 40 % of the
    /// client's instructions for a single send (callgrind).
    pub(crate) fn topic_keys(&self, topic: &str) -> Arc<TopicKeys> {
        let cache = &self.inner.topic_keys;
        if let Some(keys) = cache.read().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return keys.clone();
        }
        let keys = Arc::new(self.keys(topic));
        let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < CACHED_TOPICS {
            cache.insert(topic.into(), keys.clone());
        }
        keys
    }

    /// Produces one message with its topic's defaults; returns its id.
    pub async fn produce<T: Topic>(&self, message: T) -> Result<MessageId, Error> {
        self.send(message).await.map(|sent| sent.id)
    }

    /// Produces many messages in one round trip; returns their ids in order.
    pub async fn produce_batch<T: Topic>(
        &self,
        messages: impl IntoIterator<Item = T>,
    ) -> Result<Vec<MessageId>, Error> {
        crate::producer::produce_many(self, messages.into_iter().map(SendBuilder::new).collect())
            .await
            .map(|sent| sent.into_iter().map(|s| s.id).collect())
    }

    /// Starts a [`SendBuilder`] that produces through this client.
    pub fn send<T: Topic>(&self, message: T) -> SendBuilder<T> {
        SendBuilder::new(message).via(self)
    }

    /// The dead-letter queue of topic `T`, newest first (all of it; see [`Client::dlq`]
    /// for paging, replay and purge).
    pub async fn dead_letters<T: Topic>(&self) -> Result<Vec<DeadLetter>, Error> {
        self.dlq::<T>().list(0, usize::MAX).await
    }

    /// Administration of topic `T`'s dead-letter queue.
    pub fn dlq<T: Topic>(&self) -> DeadLetterQueue<T> {
        DeadLetterQueue::new(self.clone())
    }

    /// Classifies a failed command: a broken connection or a timeout becomes
    /// [`Error::Disconnected`] naming the URL; anything else stays [`Error::Redis`].
    pub(crate) fn error(&self, e: redis::RedisError) -> Error {
        if crate::error::is_transient(&e) {
            Error::Disconnected {
                url: self.display_url(),
                source: e,
            }
        } else {
            Error::Redis(e)
        }
    }

    pub(crate) fn producer_counters(&self) -> &ProducerCounters {
        &self.inner.producer
    }

    /// Redis' clock as the producer knows it (for the envelopes it writes).
    pub(crate) fn redis_clock(&self) -> &RedisClock {
        &self.inner.clock
    }

    /// This client's calls to each topic on their way, and the sends waiting for one to
    /// return (see sends.rs).
    pub(crate) fn sends(&self) -> &Sends {
        &self.inner.sends
    }

    /// A handle on the shared multiplexed connection (never used for blocking commands).
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// A dedicated pub/sub connection.
    pub(crate) async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        let timeout = self.inner.config.command_timeout;
        match tokio::time::timeout(timeout, self.inner.redis.get_async_pubsub()).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out opening the pub/sub connection",
            ))),
        }
    }

    pub(crate) async fn load_scripts(&self) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for script in SCRIPTS.all() {
            pipe.cmd("SCRIPT").arg("LOAD").arg(&script.code).ignore();
        }
        pipe.query_async::<()>(&mut self.connection()).await
    }

    /// Runs script calls in one round trip and returns each call's own result (see
    /// [`Client::run_pipeline`]).
    pub(crate) async fn run_scripts(
        &self,
        calls: Vec<redis::Cmd>,
    ) -> RedisResult<Vec<RedisResult<Value>>> {
        self.run_pipeline(&script_pipeline(calls)).await
    }

    /// Runs a [`script_pipeline`] and returns each call's own result. Calls that met
    /// `NOSCRIPT` (Redis restarted or flushed its scripts) ran nothing; they alone are
    /// repeated once after loading the scripts again. The pipeline is only borrowed, so a
    /// caller can send it again (produce retries) without copying the calls.
    pub(crate) async fn run_pipeline(
        &self,
        pipe: &redis::Pipeline,
    ) -> RedisResult<Vec<RedisResult<Value>>> {
        let mut results: Vec<RedisResult<Value>> = pipe.query_async(&mut self.connection()).await?;
        let missing: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if is_noscript(e)))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            tracing::info!(
                "Redis lost rmq's scripts (restart or SCRIPT FLUSH); loading them again"
            );
            self.load_scripts().await?;
            let again = script_pipeline(
                pipe.cmd_iter()
                    .enumerate()
                    .filter(|(i, _)| missing.contains(i))
                    .map(|(_, call)| call.clone()),
            );
            let retried: Vec<RedisResult<Value>> =
                again.query_async(&mut self.connection()).await?;
            for (slot, result) in missing.into_iter().zip(retried) {
                results[slot] = result;
            }
        }
        Ok(results)
    }
}

/// Script calls in one pipeline that reports each call's result separately.
pub(crate) fn script_pipeline(calls: impl IntoIterator<Item = redis::Cmd>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for call in calls {
        pipe.add_command(call);
    }
    pipe.ignore_errors();
    pipe
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

static GLOBAL_CONFIG: OnceLock<Config> = OnceLock::new();
static GLOBAL_CLIENT: OnceCell<Client> = OnceCell::const_new();

/// Sets the configuration of the process-wide client used by `produce()`, `send()` and
/// `run()`. Without it the client is configured from the environment
/// ([`Config::from_env`]) on first use. Call it once, before producing.
pub fn init(config: Config) -> Result<(), Error> {
    config.validate()?;
    GLOBAL_CONFIG.set(config).map_err(|_| {
        Error::InvalidOption(
            "rmq_runtime::init was called twice (or after the first produce); call it once at startup".into(),
        )
    })
}

/// The process-wide client, connected on first use.
pub async fn global_client() -> Result<Client, Error> {
    GLOBAL_CLIENT
        .get_or_try_init(|| async {
            let config = match GLOBAL_CONFIG.get() {
                Some(config) => config.clone(),
                None => {
                    let config = Config::from_env()?;
                    let _ = GLOBAL_CONFIG.set(config.clone());
                    config
                }
            };
            Client::connect(config).await
        })
        .await
        .cloned()
}
