//! Producing: `msg.produce()`, `msg.send()...await`, `T::produce_batch(..)`.

use std::future::{Future, IntoFuture};
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{RedisWrite, Value};
use rmq_core::duration::millis;
use rmq_core::envelope::{body_prefix, encode_body, header};
use rmq_core::{Headers, MessageId, Priority, Topic, TopicKeys};

use crate::client::{global_client, script_pipeline, Client};
use crate::error::{is_transient, Error};
use crate::scripts::SCRIPTS;
use tracing::Instrument;

/// Messages per produce script call. Larger batches are split into several calls that
/// still travel in one pipeline (one round trip); each call is atomic on its own.
const MESSAGES_PER_CALL: usize = 1000;

/// Fewest messages a call stores with `MULTI` (see [`stored_raw`]). Redis instructions a
/// message (callgrind, 53-byte payloads), produce.lua against `MULTI`: 60k / 37k for 2,
/// 20k / 12k for 8, 8.7k / 4.7k for 100. One message keeps produce.lua's single path.
const RAW_MIN: usize = 2;

/// The reply [`finish_late`] puts in place of a stored batch whose finish failed.
const UNFINISHED: &str = "rmq: stored, not finished";

/// Bytes an envelope's header takes at most ("<prio>|<produced_ms>|<expire_ms>|").
const HEADER_ROOM: usize = 44;
/// Bytes a run's count, priority, delay and TTL take at most.
const RUN_ROOM: usize = 48;

/// The result of producing one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    /// The message id (generated, or the one given with `.id(..)`).
    pub id: MessageId,
    /// True when a message with this explicit id already existed, so nothing was stored.
    /// (Always false for a generated id: when a retry finds one, the call's own first try
    /// stored it.)
    pub duplicate: bool,
}

/// Options for producing one message; await it to produce. Created by the generated
/// `send()`:
///
/// ```no_run
/// # use rmq_runtime::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # use std::time::Duration;
/// # #[topic("order_created")]
/// # #[derive(Serialize, Deserialize)]
/// # struct OrderCreated { order_id: String }
/// # async fn f() -> Result<(), rmq_runtime::Error> {
/// let sent = OrderCreated { order_id: "ORD_2".into() }
///     .send()
///     .delay(Duration::from_secs(300))
///     .priority(Priority::Low)
///     .id("ORD_2")
///     .await?;
/// if sent.duplicate {
///     println!("ORD_2 was already queued");
/// }
/// # Ok(()) }
/// ```
#[must_use = "a SendBuilder does nothing until it is awaited"]
pub struct SendBuilder<T: Topic> {
    message: T,
    options: SendOptions,
}

/// The options a [`SendBuilder`] or a [`RawSend`] collects.
#[derive(Default)]
struct SendOptions {
    delay: Option<Duration>,
    at: Option<SystemTime>,
    priority: Option<Priority>,
    ttl: Option<Duration>,
    id: Option<String>,
    headers: Headers,
    client: Option<Client>,
}

/// The option setters shared by [`SendBuilder`] and [`RawSend`] (one definition, two types).
macro_rules! send_options {
    () => {
        /// Deliver no earlier than `delay` from now.
        pub fn delay(mut self, delay: Duration) -> Self {
            self.options.delay = Some(delay);
            self.options.at = None;
            self
        }

        /// Deliver no earlier than `time` (a time in the past means now).
        pub fn at(mut self, time: SystemTime) -> Self {
            self.options.at = Some(time);
            self.options.delay = None;
            self
        }

        /// Priority of this message (the topic's `priority` otherwise).
        pub fn priority(mut self, priority: Priority) -> Self {
            self.options.priority = Some(priority);
            self
        }

        /// Time to live: if not delivered within `ttl` of becoming ready, the message is
        /// dropped and counted as expired. `Duration::ZERO` means no expiry.
        pub fn ttl(mut self, ttl: Duration) -> Self {
            self.options.ttl = Some(ttl);
            self
        }

        /// An explicit id: producing an id that is still stored (pending, delayed, in flight
        /// or dead) stores nothing and reports `duplicate`.
        pub fn id(mut self, id: impl Into<String>) -> Self {
            self.options.id = Some(id.into());
            self
        }

        /// Adds one header, readable with `Context::header`.
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.options.headers.insert(name.into(), value.into());
            self
        }

        /// Adds headers, readable with `Context::headers`.
        pub fn headers(mut self, headers: impl IntoIterator<Item = (String, String)>) -> Self {
            self.options.headers.extend(headers);
            self
        }
    };
}

impl<T: Topic> SendBuilder<T> {
    /// Starts a builder with the topic's defaults.
    pub fn new(message: T) -> Self {
        SendBuilder {
            message,
            options: SendOptions::default(),
        }
    }

    send_options!();

    /// Produces through `client` instead of the process-wide client.
    pub fn via(mut self, client: &Client) -> Self {
        self.options.client = Some(client.clone());
        self
    }

    /// Encodes the message into what the produce script takes (the payload serialized
    /// straight into the body: one buffer per message).
    fn prepare(&self, client: &Client) -> Result<Prepared, Error> {
        let mut body = body_prefix(&self.options.headers, 64);
        serde_json::to_writer(&mut body, &self.message).map_err(|source| Error::Encode {
            topic: T::NAME,
            source,
        })?;
        self.options
            .prepare(client, body, T::OPTIONS.priority, T::OPTIONS.ttl)
    }
}

impl SendOptions {
    /// The produce script's arguments for one message, whose `body` is encoded. `priority`
    /// and `ttl` are the topic's defaults, used unless this message sets its own.
    fn prepare(
        &self,
        client: &Client,
        body: Vec<u8>,
        priority: Priority,
        ttl: Option<Duration>,
    ) -> Result<Prepared, Error> {
        let id = match &self.id {
            Some(id) => {
                let id = MessageId::new(id.clone());
                id.validate().map_err(Error::InvalidOption)?;
                id
            }
            None => MessageId::generate(),
        };
        let generated = self.id.is_none();
        let delay = match (self.delay, self.at) {
            (Some(delay), _) => delay,
            (None, Some(at)) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            (None, None) => Duration::ZERO,
        };
        let ttl = self.ttl.or(ttl).unwrap_or(client.config().message_ttl);
        Ok(Prepared {
            id,
            generated,
            priority: self.priority.unwrap_or(priority),
            // rounded up to whole µs: a message never runs before its time (produce.lua adds
            // it to Redis' µs clock and keeps the µs in the due time)
            delay_us: u64::try_from(delay.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX),
            ttl_ms: millis(ttl),
            body,
        })
    }

    async fn client(&self) -> Result<Client, Error> {
        match &self.client {
            Some(client) => Ok(client.clone()),
            None => global_client().await,
        }
    }
}

pub(crate) struct Prepared {
    pub(crate) id: MessageId,
    /// The id was made by [`MessageId::generate`] for this message, not given by the caller.
    generated: bool,
    priority: Priority,
    delay_us: u64,
    ttl_ms: u64,
    body: Vec<u8>,
}

/// Produces a message to a topic by name, without its Rust type: for tools such as the
/// `rmq` command. Created by [`Client::send_raw`]; await it to produce.
///
/// The payload must be a JSON object, since that is what every `#[topic]` struct reads. A
/// consumer whose type does not match its fields dead-letters it as a decode error. The
/// topic's own `#[topic]` defaults are unknown here: the priority is `normal` and the TTL
/// is `Config::message_ttl` unless set.
#[must_use = "a RawSend does nothing until it is awaited"]
pub struct RawSend {
    topic: String,
    payload: Vec<u8>,
    options: SendOptions,
}

impl RawSend {
    send_options!();

    fn check(&self) -> Result<(), Error> {
        rmq_core::topic::validate_topic_name(&self.topic).map_err(Error::InvalidOption)?;
        match serde_json::from_slice::<serde_json::Value>(&self.payload) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(other) => Err(Error::InvalidOption(format!(
                "the payload for `{}` must be a JSON object (the fields of the message struct), not {}",
                self.topic,
                json_kind(&other)
            ))),
            Err(e) => Err(Error::InvalidOption(format!(
                "the payload for `{}` is not valid JSON: {e}",
                self.topic
            ))),
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl IntoFuture for RawSend {
    type Output = Result<Produced, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            self.check()?;
            let client = self.options.client().await?;
            let body = encode_body(&self.options.headers, &self.payload);
            let prepared = self
                .options
                .prepare(&client, body, Priority::Normal, None)?;
            crate::sends::send(&client, &self.topic, prepared).await
        })
    }
}

impl Client {
    /// Produces `payload` (a JSON object, as bytes) to `topic` by name; see [`RawSend`].
    pub fn send_raw(&self, topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> RawSend {
        RawSend {
            topic: topic.into(),
            payload: payload.into(),
            options: SendOptions {
                client: Some(self.clone()),
                ..SendOptions::default()
            },
        }
    }
}

impl<T: Topic> IntoFuture for SendBuilder<T> {
    type Output = Result<Produced, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let client = self.options.client().await?;
            let prepared = self.prepare(&client)?;
            crate::sends::send(&client, T::NAME, prepared).await
        })
    }
}

/// Stores `builders` (all of topic `T`) in one round trip.
pub(crate) async fn produce_many<T: Topic>(
    client: &Client,
    builders: Vec<SendBuilder<T>>,
) -> Result<Vec<Produced>, Error> {
    if builders.is_empty() {
        return Ok(Vec::new());
    }
    let prepared = builders
        .iter()
        .map(|b| b.prepare(client))
        .collect::<Result<Vec<_>, _>>()?;
    produce_prepared(client, T::NAME, prepared).await
}

/// Stores prepared messages of `topic` in one round trip.
/// Every produce path ends here, so this is where the client's producer figures are kept.
pub(crate) async fn produce_prepared(
    client: &Client,
    topic: &str,
    prepared: Vec<Prepared>,
) -> Result<Vec<Produced>, Error> {
    let started = Instant::now();
    let messages = prepared.len();
    let result = store(client, topic, prepared).await;
    client
        .producer_counters()
        .record(&result, messages, started.elapsed());
    result
}

async fn store(
    client: &Client,
    topic: &str,
    prepared: Vec<Prepared>,
) -> Result<Vec<Produced>, Error> {
    let keys = client.topic_keys(topic);
    let stamp = client.redis_clock().stamp_ms();
    let calls = |first_try| produce_calls(&keys, stamp, &prepared, first_try);
    let span = tracing::debug_span!("rmq.produce", topic, messages = prepared.len());
    let results = run_with_retries(client, calls).instrument(span).await?;
    let mut out = Vec::with_capacity(prepared.len());
    let mut prepared = prepared.into_iter();
    let received = RedisClock::local_us();
    for result in results {
        // Redis' clock (µs), whether the stamp was used, the positions (from 1) of the
        // call's duplicates in order; or, for one message stored with the stamp, only the
        // clock
        let parsed = match result? {
            Value::Int(redis_us) => Some((Some(redis_us), true, Vec::new())),
            Value::Array(mut reply) => match reply.get(..2) {
                Some([Value::Int(redis_us), Value::Int(kept)]) => {
                    Some((Some(*redis_us), *kept == 1, reply.split_off(2)))
                }
                _ => None,
            },
            // a batch that is stored but whose late finish failed (see finish_late): no
            // clock was read, and its ids were new
            Value::SimpleString(marker) if marker == UNFINISHED => Some((None, false, Vec::new())),
            _ => None,
        };
        let Some((redis_us, kept, duplicates)) = parsed else {
            return Err(Error::Protocol(
                "produce.lua did not return its clock".into(),
            ));
        };
        if let Some(redis_us) = redis_us {
            client
                .redis_clock()
                .observe(stamp, redis_us, received, kept);
        }
        let mut duplicates = duplicates.into_iter().peekable();
        for position in 1..=MESSAGES_PER_CALL.min(prepared.len()) {
            let message = prepared.next().expect("a message per position");
            let found = duplicates
                .next_if_eq(&Value::Int(position as i64))
                .is_some();
            // a generated id is only ever found by a retry, stored by the call's own first
            // try: produced once, not a duplicate
            out.push(Produced {
                id: message.id,
                duplicate: found && !message.generated,
            });
        }
        if duplicates.next().is_some() {
            return Err(Error::Protocol(
                "produce.lua reported a duplicate it was not sent".into(),
            ));
        }
    }
    Ok(out)
}

/// The produce script calls that store `prepared`, chunks of at most [`MESSAGES_PER_CALL`],
/// stamped with `stamp` (Redis' clock as the client knows it); `first_try` is false for a
/// retry (see [`run_with_retries`]).
fn produce_calls(
    keys: &TopicKeys,
    stamp: Option<u64>,
    prepared: &[Prepared],
    first_try: bool,
) -> Vec<Vec<redis::Cmd>> {
    let stamp_arg = stamp.map(|ms| ms.to_string()).unwrap_or_default();
    prepared
        .chunks(MESSAGES_PER_CALL)
        .map(|chunk| {
            // ids this process generated cannot be stored before their first try, so Redis
            // need not look them up (produce.lua's ARGV[3]), nor even see them in Lua
            let unseen = first_try && chunk.iter().all(|m| m.generated);
            if let (true, Some(stamp)) = (unseen, stamp) {
                if let Some(commands) = stored_raw(keys, stamp, &stamp_arg, chunk) {
                    return commands;
                }
            }
            if let ([m], Some(stamp)) = (chunk, stamp) {
                return vec![compact_call(keys, stamp, &stamp_arg, m)];
            }
            // room for the clock and stamp, each message's id and envelope, and a run's four
            // arguments per message (at most)
            let bytes: usize = chunk
                .iter()
                .map(|m| m.id.as_str().len() + HEADER_ROOM + m.body.len() + RUN_ROOM)
                .sum();
            let mut call = SCRIPTS.produce.call_with_room(
                &keys.for_produce(),
                3 + 6 * chunk.len(),
                32 + bytes,
            );
            call.arg("")
                .arg(&stamp_arg)
                .arg(if unseen { "1" } else { "" });
            // runs of messages sharing priority, delay and TTL (see produce.lua)
            let shared = |m: &Prepared| (m.priority, m.delay_us, m.ttl_ms);
            for run in chunk.chunk_by(|a, b| shared(a) == shared(b)) {
                let (priority, delay_us, ttl_ms) = shared(&run[0]);
                call.arg(run.len())
                    .arg(priority.index())
                    .arg(delay_us)
                    .arg(ttl_ms);
                // with a stamp, the whole envelope: the run's header, then each body
                let head = stamp
                    .map(|ms| stamped_header(priority, ms, delay_us, ttl_ms))
                    .unwrap_or_default();
                for m in run {
                    call.arg(m.id.as_str());
                    arg_envelope(&mut call, &head, &m.body);
                }
            }
            vec![call]
        })
        .collect()
}

/// A stamped call of one message (a `send()`) in produce.lua's compact form: the clock,
/// the stamp, the id, the whole envelope and, for a delayed message, its delay (the
/// envelope's header carries the priority and TTL). Five arguments fewer than a run's form:
/// Redis spends about 1,600 instructions on each (see produce.lua's header).
fn compact_call(keys: &TopicKeys, stamp: u64, stamp_arg: &str, m: &Prepared) -> redis::Cmd {
    let head = stamped_header(m.priority, stamp, m.delay_us, m.ttl_ms);
    let mut call = SCRIPTS.produce.call_with_room(
        &keys.for_produce(),
        5,
        32 + m.id.as_str().len() + head.len() + m.body.len(),
    );
    call.arg("").arg(stamp_arg).arg(m.id.as_str());
    arg_envelope(&mut call, &head, &m.body);
    if m.delay_us > 0 {
        call.arg(m.delay_us);
    }
    call
}

/// `chunk` stored without passing through Lua, when it may be: [`RAW_MIN`] messages or
/// more, all ready, one priority and TTL (the caller checked that its ids are new and that
/// it has a stamp). `MULTI`, `HSET` of the whole envelopes, `LPUSH` of the ids, an
/// `EVALSHA` of `batch.lua` (which does the rest of what produce.lua would), `EXEC`; the
/// chunk's reply is then `batch.lua`'s, the last of `EXEC`'s. (An `EVAL` would spare the
/// `NOSCRIPT` case, see [`finish_late`], but Redis hashes its text twice, once to queue it:
/// 150k instructions a call, more than the rest of a batch of 25.)
fn stored_raw(
    keys: &TopicKeys,
    stamp: u64,
    stamp_arg: &str,
    chunk: &[Prepared],
) -> Option<Vec<redis::Cmd>> {
    let first = chunk.first()?;
    let (priority, ttl_ms) = (first.priority, first.ttl_ms);
    if chunk.len() < RAW_MIN
        || !chunk
            .iter()
            .all(|m| m.delay_us == 0 && m.priority == priority && m.ttl_ms == ttl_ms)
    {
        return None;
    }
    let head = stamped_header(priority, stamp, 0, ttl_ms);
    let ids: usize = chunk.iter().map(|m| m.id.as_str().len()).sum();
    let bodies: usize = chunk.iter().map(|m| m.body.len()).sum();
    let mut store = redis::Cmd::with_capacity(
        2 + 2 * chunk.len(),
        16 + keys.messages.len() + ids + head.len() * chunk.len() + bodies,
    );
    store.arg("HSET").arg(&keys.messages);
    let mut list = redis::Cmd::with_capacity(2 + chunk.len(), 16 + ids);
    list.arg("LPUSH").arg(&keys.pending[priority.index()]);
    for m in chunk {
        store.arg(m.id.as_str());
        arg_envelope(&mut store, &head, &m.body);
        list.arg(m.id.as_str());
    }
    let mut finish = SCRIPTS.batch.call_with_room(&keys.for_batch(), 6, 64);
    finish
        .arg("")
        .arg(stamp_arg)
        .arg(chunk.len())
        .arg(priority.index())
        .arg(ttl_ms);
    let block = vec![redis::cmd("MULTI"), store, list, finish, redis::cmd("EXEC")];
    debug_assert_eq!(
        block[FINISH_AT].args_iter().next(),
        Some(redis::Arg::Simple(&b"EVALSHA"[..]))
    );
    Some(block)
}

/// Where `batch.lua`'s call sits in a [`stored_raw`] block.
const FINISH_AT: usize = 3;

/// The header a client writes into the envelopes of a run stamped `ms` (produce.lua's
/// ARGV[2]): the expiry counts from when the message becomes ready (the delay rounded up to
/// whole ms), 0 without a TTL.
fn stamped_header(priority: Priority, ms: u64, delay_us: u64, ttl_ms: u64) -> String {
    let expire = if ttl_ms > 0 {
        ms + delay_us.div_ceil(1000) + ttl_ms
    } else {
        0
    };
    header(priority, ms, expire)
}

/// Writes `head` then `body` as the next argument of `cmd`, without a copy between.
fn arg_envelope(cmd: &mut redis::Cmd, head: &str, body: &[u8]) {
    let mut arg = cmd.writer_for_next_arg();
    arg.write_all(head.as_bytes())
        .and_then(|()| arg.write_all(body))
        .expect("a command's arguments are written to memory");
}

/// Redis' clock as this process can tell it, so the producer can write whole envelopes
/// (produce.lua keeps a stamp only when it lies at most 2 ms before Redis' now, never after;
/// a refused one costs Redis a rewrite, as if no stamp had been sent).
///
/// It keeps `offset` = Redis' µs clock minus the local one, from the clock every produce
/// reply carries. A reply's clock was read before the reply arrived, so every sample is at
/// most the true offset and the largest is the best estimate: stamps come out slightly
/// early, never late. A stamp that turns out to be ahead of Redis (the local clock was set
/// forward, or runs fast) makes the newest sample the estimate.
#[derive(Debug)]
pub(crate) struct RedisClock {
    /// µs; `i64::MIN` until the first reply.
    offset_us: AtomicI64,
    /// Calls whose stamped envelopes Redis kept as sent (the point of all this; a test
    /// checks it).
    kept: AtomicU64,
}

impl Default for RedisClock {
    fn default() -> Self {
        RedisClock {
            offset_us: AtomicI64::new(i64::MIN),
            kept: AtomicU64::new(0),
        }
    }
}

impl RedisClock {
    fn local_us() -> i64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
    }

    /// Redis' now in ms as far as known, to stamp envelopes with; `None` before any reply.
    pub(crate) fn stamp_ms(&self) -> Option<u64> {
        self.stamp_ms_at(Self::local_us())
    }

    fn stamp_ms_at(&self, local_us: i64) -> Option<u64> {
        let offset = self.offset_us.load(Ordering::Relaxed);
        if offset == i64::MIN {
            return None;
        }
        u64::try_from(local_us.saturating_add(offset) / 1000).ok()
    }

    /// A reply read Redis' clock at `redis_us`, and arrived at local time `received_us`; the
    /// call carried `stamp`, which Redis `kept` or not.
    pub(crate) fn observe(&self, stamp: Option<u64>, redis_us: i64, received_us: i64, kept: bool) {
        if kept {
            self.kept.fetch_add(1, Ordering::Relaxed);
        }
        let sample = redis_us.saturating_sub(received_us);
        let ahead = stamp.is_some_and(|ms| ms as i64 > redis_us / 1000);
        if ahead {
            self.offset_us.store(sample, Ordering::Relaxed);
        } else {
            self.offset_us.fetch_max(sample, Ordering::Relaxed);
        }
    }
}

/// Runs the produce calls `calls(true)`, retrying up to `Config::produce_retries` times
/// (100 ms, 200 ms, … apart, at most 5 s) when Redis cannot be reached. Repeating is safe:
/// the ids were fixed before the first try, and a retry sends `calls(false)`, whose every id
/// is looked up, so a message that did reach Redis is not stored twice (the retry reports
/// it as a duplicate).
///
/// `calls` gives each chunk's commands: one script call, or a `MULTI` block (see
/// [`stored_raw`]); the result is one reply per chunk.
///
/// A call of one script (a `send()`) goes behind a `PING` (see [`lead`]).
async fn run_with_retries(
    client: &Client,
    calls: impl Fn(bool) -> Vec<Vec<redis::Cmd>>,
) -> Result<Vec<redis::RedisResult<Value>>, Error> {
    let pipeline = |first_try| {
        let chunks = calls(first_try);
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        let lead = lead(&sizes);
        // the PING's reply stays in the pipeline's results until they come back, so a
        // repeat after NOSCRIPT (Client::run_pipeline) finds each call at its own index
        let pipe = script_pipeline(
            std::iter::repeat_n(redis::cmd("PING"), lead).chain(chunks.into_iter().flatten()),
        );
        (pipe, sizes, lead)
    };
    let (mut pipe, mut sizes, mut lead) = pipeline(true);
    let mut first_try = true;
    let mut pause = Duration::from_millis(100);
    let mut retries_left = client.config().produce_retries;
    loop {
        match client.run_pipeline(&pipe).await {
            Ok(mut results) => {
                results.drain(..lead);
                let results = per_chunk(results, &sizes);
                return Ok(finish_late(client, &pipe, lead, &sizes, results).await);
            }
            Err(e) if retries_left > 0 && is_transient(&e) => {
                tracing::warn!(error = %e, retry_in = ?pause, retries_left, "produce failed; retrying");
                if first_try {
                    (pipe, sizes, lead) = pipeline(false);
                    first_try = false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                retries_left -= 1;
            }
            Err(e) => return Err(client.error(e)),
        }
    }
}

/// How many `PING`s go ahead of a produce call's commands (their replies are dropped): one
/// when the call is a single script call, which may hand its message to a parked consumer.
/// Redis writes the replies of an event-loop turn in the reverse order of the clients'
/// first output in it (Redis 6.2-7.x queue them at the head of `clients_pending_write`).
/// Without the `PING`, the script's `PUBLISH` gave the consumer output first and the
/// producer's reply came last, so Redis wrote the producer's reply first and the push
/// waited for that write; a process that produces and consumes (the benchmark, a service
/// that feeds itself) then also read the producer's reply before the push. With it, the
/// producer has output first and is written last: the push goes out first. Latency
/// scenario, alternating: p50 133-167 -> 124-136 µs, p99 284-379 -> 235-311 µs. The `PING`
/// costs Redis about 2,300 instructions, 3 % of a send.
fn lead(sizes: &[usize]) -> usize {
    usize::from(sizes == [1])
}

/// A `MULTI` block (see [`stored_raw`]) whose `batch.lua` met `NOSCRIPT` (Redis restarted
/// or flushed its scripts) stored its messages and left them pending but did not finish
/// them: the scripts are loaded again and `batch.lua` runs on its own, "late" (it then
/// counts the messages and wakes consumers; see its header). Repeating the block would
/// push the ids twice.
///
/// When that fails too (Redis went away again, or refuses `SCRIPT LOAD`), the batch is
/// still stored and pending, and it is reported so, as an [`UNFINISHED`] reply (no script
/// returns that status, so a stray reply is never taken for it): an error would tell
/// the caller to produce it again, and a second `produce_batch` makes new ids, so each
/// message would run twice. What is lost is logged: the batch is not counted in
/// `produced`, and idle consumers find it at their next poll, not at once.
async fn finish_late(
    client: &Client,
    pipe: &redis::Pipeline,
    lead: usize,
    sizes: &[usize],
    mut results: Vec<redis::RedisResult<Value>>,
) -> Vec<redis::RedisResult<Value>> {
    let mut commands = pipe.cmd_iter().skip(lead);
    let mut late = Vec::new();
    for (chunk, &size) in sizes.iter().enumerate() {
        let block: Vec<&redis::Cmd> = commands.by_ref().take(size).collect();
        let lost = matches!(&results[chunk], Err(e) if e.code() == Some("NOSCRIPT"));
        if let (true, Some(finish)) = (lost && size > 1, block.get(FINISH_AT)) {
            let mut finish = (*finish).clone();
            finish.arg("late");
            late.push((chunk, finish));
        }
    }
    if late.is_empty() {
        return results;
    }
    tracing::info!("Redis lost rmq's scripts (restart or SCRIPT FLUSH); loading them again");
    let (chunks, calls): (Vec<usize>, Vec<redis::Cmd>) = late.into_iter().unzip();
    let finished = match client.load_scripts().await {
        Ok(()) => client.run_scripts(calls).await,
        Err(e) => Err(e),
    };
    let finished = match finished {
        Ok(finished) => finished,
        Err(e) => chunks.iter().map(|_| Err(e.clone())).collect(),
    };
    for (chunk, result) in chunks.into_iter().zip(finished) {
        results[chunk] = result.or_else(|e| {
            tracing::warn!(
                error = %e,
                "a batch is stored and pending, but finishing it failed: it is not counted \
                 as produced, and idle consumers find it at their next poll"
            );
            Ok(Value::SimpleString(UNFINISHED.into()))
        });
    }
    results
}

/// Each chunk's reply from a pipeline's replies, given how many commands each chunk sent:
/// a script call's own, or for a `MULTI` block the last of `EXEC`'s (`batch.lua`'s), unless
/// a command in it failed. A block that Redis refused while queueing ran nothing, and the
/// refusal itself (out of memory, say) is reported rather than `EXEC`'s `EXECABORT`.
fn per_chunk(
    results: Vec<redis::RedisResult<Value>>,
    sizes: &[usize],
) -> Vec<redis::RedisResult<Value>> {
    let mut results = results.into_iter();
    sizes
        .iter()
        .map(|&size| {
            let mut block: Vec<_> = results.by_ref().take(size).collect();
            let last = block.pop().unwrap_or_else(|| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a reply per command",
                )))
            });
            if size == 1 {
                return last;
            }
            if let Some(refused) = block.into_iter().find(Result::is_err) {
                return refused;
            }
            match last?.extract_error()? {
                Value::Array(mut replies) => replies.pop().ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Client, "EXEC replied nothing"))
                }),
                other => Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "EXEC did not reply with an array",
                    format!("{other:?}"),
                ))),
            }
        })
        .collect()
}

/// `msg.produce()` through the process-wide client.
pub fn produce<T: Topic>(message: T) -> impl Future<Output = Result<MessageId, Error>> + Send {
    let sent = SendBuilder::new(message).into_future();
    async move { sent.await.map(|s| s.id) }
}

/// `T::produce_batch(items)` through the process-wide client: one round trip.
pub fn produce_batch<T: Topic>(
    messages: impl IntoIterator<Item = T>,
) -> impl Future<Output = Result<Vec<MessageId>, Error>> + Send {
    let builders: Vec<SendBuilder<T>> = messages.into_iter().map(SendBuilder::new).collect();
    async move {
        let client = global_client().await?;
        produce_many(&client, builders)
            .await
            .map(|sent| sent.into_iter().map(|s| s.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::RedisClock;
    use crate::{Client, Config};

    /// The first call sends bare bodies; every later one writes whole envelopes, and Redis
    /// (a real one, with its own clock) keeps them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_the_first_reply_redis_keeps_the_envelopes_the_producer_writes() {
        let server = rmq_testkit::RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        let config = Config {
            redis_url: server.url(),
            queue_prefix: rmq_testkit::unique_prefix("stamps"),
            ..Config::default()
        };
        let client = Client::connect(config).await.unwrap();
        let clock = client.redis_clock();
        assert_eq!(clock.stamp_ms(), None);
        for n in 0..20 {
            let sent = client
                .send_raw("stamps", format!(r#"{{"n":{n}}}"#))
                .await
                .unwrap();
            assert!(!sent.duplicate);
            assert!(clock.stamp_ms().is_some());
        }
        // a stamp can miss by a hair on a loaded machine (then Redis rewrites the header)
        let kept = clock.kept.load(Ordering::Relaxed);
        assert!(kept >= 15, "Redis kept {kept} of 19 stamped calls");
    }

    #[test]
    fn no_stamp_before_the_first_reply() {
        assert_eq!(RedisClock::default().stamp_ms_at(1_000_000), None);
    }

    #[test]
    fn the_stamp_follows_the_best_sample() {
        let clock = RedisClock::default();
        // Redis read 5_000_000 µs; the reply arrived at local 1_000_300 µs (300 µs later
        // than Redis' clock was read, by the local clock): offset at most 3_999_700
        clock.observe(None, 5_000_000, 1_000_300, false);
        assert_eq!(clock.stamp_ms_at(1_001_000), Some(5_000));
        // a faster reply is a better (larger) sample; a slower one changes nothing
        clock.observe(Some(5_000), 6_000_000, 2_000_050, true);
        clock.observe(Some(5_000), 7_000_000, 3_001_000, true);
        assert_eq!(clock.stamp_ms_at(3_000_999), Some(7_000));
    }

    #[test]
    fn a_stamp_ahead_of_redis_resets_the_estimate() {
        let clock = RedisClock::default();
        clock.observe(None, 5_000_000, 1_000_000, false);
        // the local clock jumped 1 s ahead: the call stamped 6_000, Redis was at 5_000.2
        let stamp = clock.stamp_ms_at(2_000_000);
        assert_eq!(stamp, Some(6_000));
        clock.observe(stamp, 5_000_200, 2_000_300, false);
        assert_eq!(clock.stamp_ms_at(2_000_300), Some(5_000));
    }
}
