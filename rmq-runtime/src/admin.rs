//! Administration: dead letters (count, list newest first and paged, get, replay one, all
//! or those matching a predicate, purge), typed per topic ([`DeadLetterQueue`]) or by name
//! ([`DeadLetters`]); and, by name for tools such as the `rmq` command, the topics under a
//! prefix and a read-only look at the next messages ([`Client::peek`]).

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::time::SystemTime;

use redis::Value;
use rmq_core::context::system_time_from_millis;
use rmq_core::topic::validate_topic_name;
use rmq_core::{envelope, Headers, MessageId, Priority, Topic, TopicKeys};

use crate::client::Client;
use crate::error::{redact, Error};
use crate::scripts::SCRIPTS;

/// Ids per replay / purge script call: bounds the time one call holds Redis.
const IDS_PER_CALL: usize = 1000;

/// A message in a topic's dead-letter queue.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The message id.
    pub id: MessageId,
    /// The payload JSON exactly as produced (also when it does not decode).
    pub payload: String,
    /// Why it is here: "retries exhausted", "dead-lettered by handler", "consumer lost",
    /// "decode error", "expired" or "unreadable envelope".
    pub reason: String,
    /// The last error: the handler's own text, "timed out after …", "handler panicked: …",
    /// "consumer lost: …", "decode error: …".
    pub error: String,
    /// Deliveries made.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failed_at: SystemTime,
    /// When the last attempt failed.
    pub last_failed_at: SystemTime,
    /// When it was dead-lettered.
    pub dead_at: SystemTime,
    /// The priority it was produced with (kept on replay).
    pub priority: Priority,
}

impl DeadLetter {
    /// Decodes the payload as the topic's message type.
    pub fn message<T: Topic>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// The dead-letter queue of topic `T` (`client.dlq::<T>()`); the same operations as
/// [`DeadLetters`], which it wraps, for a topic known by its type.
///
/// ```no_run
/// # use rmq_runtime::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[topic("order_created")]
/// # #[derive(Serialize, Deserialize)]
/// # struct OrderCreated { order_id: String }
/// # async fn f(client: Client) -> Result<(), rmq_runtime::Error> {
/// let dlq = client.dlq::<OrderCreated>();
/// for dead in dlq.list(0, 20).await? {
///     println!("{} {} after {} attempts: {}", dead.id, dead.reason, dead.attempts, dead.error);
/// }
/// // the payment service is back: retry what failed because of it
/// dlq.replay_where(|d| d.error.contains("payment service")).await?;
/// # Ok(()) }
/// ```
pub struct DeadLetterQueue<T: Topic> {
    untyped: DeadLetters,
    topic: PhantomData<fn() -> T>,
}

impl<T: Topic> DeadLetterQueue<T> {
    pub(crate) fn new(client: Client) -> Self {
        DeadLetterQueue {
            untyped: DeadLetters::new(client, T::NAME),
            topic: PhantomData,
        }
    }

    /// How many messages are dead.
    pub async fn count(&self) -> Result<u64, Error> {
        self.untyped.count().await
    }

    /// Up to `limit` dead letters, newest first, skipping the `offset` newest.
    pub async fn list(&self, offset: usize, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        self.untyped.list(offset, limit).await
    }

    /// One dead letter, if `id` is dead.
    pub async fn get(&self, id: &str) -> Result<Option<DeadLetter>, Error> {
        self.untyped.get(id).await
    }

    /// Moves one dead letter back to pending (back of its priority level, attempts reset);
    /// false when `id` is not dead.
    pub async fn replay(&self, id: &str) -> Result<bool, Error> {
        self.untyped.replay(id).await
    }

    /// Replays every dead letter; returns how many.
    pub async fn replay_all(&self) -> Result<usize, Error> {
        self.untyped.replay_all().await
    }

    /// Replays the dead letters for which `keep` is true; returns how many.
    pub async fn replay_where(
        &self,
        keep: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<usize, Error> {
        self.untyped.replay_where(keep).await
    }

    /// Deletes every dead letter for good; returns how many.
    pub async fn purge(&self) -> Result<usize, Error> {
        self.untyped.purge().await
    }

    /// Deletes the given dead letters for good; returns how many were dead.
    pub async fn purge_ids(&self, ids: &[&str]) -> Result<usize, Error> {
        self.untyped.purge_ids(ids).await
    }
}

/// The dead-letter queue of a topic known only by its name (`client.topic_dlq("orders")`),
/// for tools such as the `rmq` command; [`Client::dlq`] is the typed form.
///
/// ```no_run
/// # async fn f(client: rmq_runtime::Client) -> Result<(), rmq_runtime::Error> {
/// let dlq = client.topic_dlq("order_created");
/// println!("{} dead", dlq.count().await?);
/// if let Some(dead) = dlq.get("ORD_2").await? {
///     println!("{}: {}", dead.reason, dead.payload);
///     dlq.replay("ORD_2").await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DeadLetters {
    client: Client,
    topic: String,
    keys: TopicKeys,
}

impl DeadLetters {
    fn new(client: Client, topic: &str) -> Self {
        DeadLetters {
            keys: client.keys(topic),
            topic: topic.to_string(),
            client,
        }
    }

    /// The topic whose dead letters these are.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many messages are dead.
    pub async fn count(&self) -> Result<u64, Error> {
        let n: u64 = redis::cmd("ZCARD")
            .arg(&self.keys.dead)
            .query_async(&mut self.client.connection())
            .await
            .map_err(|e| self.client.error(e))?;
        Ok(n)
    }

    /// Up to `limit` dead letters, newest first, skipping the `offset` newest.
    pub async fn list(&self, offset: usize, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = offset
            .checked_add(limit - 1)
            .and_then(|s| i64::try_from(s).ok())
            .unwrap_or(-1);
        let dead: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
            .arg(&self.keys.dead)
            .arg(offset)
            .arg(stop)
            .arg("WITHSCORES")
            .query_async(&mut self.client.connection())
            .await
            .map_err(|e| self.client.error(e))?;
        self.describe(dead).await
    }

    /// One dead letter, if `id` is dead.
    pub async fn get(&self, id: &str) -> Result<Option<DeadLetter>, Error> {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&self.keys.dead)
            .arg(id)
            .query_async(&mut self.client.connection())
            .await
            .map_err(|e| self.client.error(e))?;
        let Some(score) = score else { return Ok(None) };
        Ok(self.describe(vec![(id.to_string(), score)]).await?.pop())
    }

    /// Moves one dead letter back to pending (back of its priority level, attempts reset);
    /// false when `id` is not dead.
    pub async fn replay(&self, id: &str) -> Result<bool, Error> {
        Ok(self.replay_ids(&[id.to_string()]).await? == 1)
    }

    /// Replays every dead letter; returns how many.
    pub async fn replay_all(&self) -> Result<usize, Error> {
        self.replay_where(|_| true).await
    }

    /// Replays the dead letters for which `keep` is true; returns how many.
    pub async fn replay_where(
        &self,
        mut keep: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<usize, Error> {
        let mut ids = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.list(offset, IDS_PER_CALL).await?;
            if page.is_empty() {
                break;
            }
            offset += page.len();
            ids.extend(
                page.into_iter()
                    .filter(|d| keep(d))
                    .map(|d| d.id.into_string()),
            );
        }
        self.replay_ids(&ids).await
    }

    /// Deletes every dead letter for good; returns how many.
    pub async fn purge(&self) -> Result<usize, Error> {
        let mut purged = 0;
        loop {
            let n = self
                .purge_call(|call| {
                    call.arg(IDS_PER_CALL);
                })
                .await?;
            purged += n;
            if n < IDS_PER_CALL {
                return Ok(purged);
            }
        }
    }

    /// Deletes the given dead letters for good; returns how many were dead.
    pub async fn purge_ids(&self, ids: &[&str]) -> Result<usize, Error> {
        let mut purged = 0;
        for chunk in ids.chunks(IDS_PER_CALL) {
            purged += self
                .purge_call(|call| {
                    call.arg("id:").arg(chunk);
                })
                .await?;
        }
        Ok(purged)
    }

    async fn purge_call(&self, args: impl FnOnce(&mut redis::Cmd)) -> Result<usize, Error> {
        let k = &self.keys;
        let mut call = SCRIPTS.purge.call(&k.for_purge());
        call.arg("");
        args(&mut call);
        count_reply(
            self.client
                .run_scripts(vec![call])
                .await
                .map_err(|e| self.client.error(e))?
                .pop(),
            "purge.lua",
        )
    }

    async fn replay_ids(&self, ids: &[String]) -> Result<usize, Error> {
        let k = &self.keys;
        let calls: Vec<redis::Cmd> = ids
            .chunks(IDS_PER_CALL)
            .map(|chunk| {
                let mut call = SCRIPTS.replay.call(&k.for_replay());
                call.arg("").arg(chunk);
                call
            })
            .collect();
        if calls.is_empty() {
            return Ok(0);
        }
        let mut replayed = 0;
        for reply in self
            .client
            .run_scripts(calls)
            .await
            .map_err(|e| self.client.error(e))?
        {
            replayed += count_reply(Some(reply), "replay.lua")?;
        }
        Ok(replayed)
    }

    /// Reads envelope, attempts and failure record of each `(id, dead_ms)`.
    async fn describe(&self, dead: Vec<(String, f64)>) -> Result<Vec<DeadLetter>, Error> {
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.keys;
        let ids: Vec<&str> = dead.iter().map(|(id, _)| id.as_str()).collect();
        type Columns = (Vec<Option<Vec<u8>>>, Vec<Option<u32>>, Vec<Option<String>>);
        let (envelopes, attempts, errors): Columns = redis::pipe()
            .cmd("HMGET")
            .arg(&k.messages)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&k.attempts)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&k.errors)
            .arg(&ids)
            .query_async(&mut self.client.connection())
            .await
            .map_err(|e| self.client.error(e))?;
        let mut out = Vec::with_capacity(dead.len());
        for (i, (id, dead_ms)) in dead.iter().enumerate() {
            let Some(stored) = envelopes.get(i).cloned().flatten() else {
                continue; // replayed or purged between the two reads
            };
            let envelope = envelope::decode(&stored)
                .map_err(|e| Error::Protocol(format!("dead letter {id} of {}: {e}", self.topic)))?;
            let record =
                FailureRecord::parse(&errors.get(i).cloned().flatten().unwrap_or_default());
            out.push(DeadLetter {
                id: MessageId::new(id.clone()),
                payload: String::from_utf8_lossy(&envelope.payload).into_owned(),
                reason: record.reason,
                error: record.error,
                attempts: attempts.get(i).copied().flatten().unwrap_or(0),
                first_failed_at: system_time_from_millis(record.first_ms),
                last_failed_at: system_time_from_millis(record.last_ms),
                dead_at: system_time_from_millis(*dead_ms as u64),
                priority: envelope.priority,
            });
        }
        Ok(out)
    }
}

/// A message waiting in a topic, as [`Client::peek`] and [`Client::peek_delayed`] show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peeked {
    /// The message id.
    pub id: MessageId,
    /// Its priority level.
    pub priority: Priority,
    /// When it was produced (Redis' clock).
    pub produced_at: SystemTime,
    /// When its TTL ends, if it has one.
    pub expires_at: Option<SystemTime>,
    /// When it becomes ready: `None` for a ready message, the due time for a delayed one
    /// (a delay or a retry delay).
    pub due_at: Option<SystemTime>,
    /// Deliveries so far (0 for a message never delivered; a retry waits with its count).
    pub attempts: u32,
    /// Headers given at produce time.
    pub headers: Headers,
    /// The payload JSON as produced.
    pub payload: String,
}

impl Client {
    /// The dead-letter queue of a topic by name (for tools that do not have its type);
    /// [`Client::dlq`] is the typed form.
    pub fn topic_dlq(&self, topic: &str) -> DeadLetters {
        DeadLetters::new(self.clone(), topic)
    }

    /// Every topic that has keys under this client's prefix (`queue_prefix`), sorted:
    /// a topic is listed from its first produce on, also once it is empty, because its
    /// counters stay. Read with `SCAN`, so a large Redis is not blocked.
    pub async fn topics(&self) -> Result<Vec<String>, Error> {
        let base = topic_key_base(&self.config().queue_prefix);
        let pattern = format!("{}*", glob_escape(&base));
        let mut conn = self.connection();
        let mut topics = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            topics.extend(keys.iter().filter_map(|key| topic_of_key(key, &base)));
            if next == 0 {
                return Ok(topics.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// The next `n` ready messages of `topic` in the order consumers will get them (high
    /// before normal before low; within a level, the oldest first), without changing
    /// anything. Messages fetched between the two reads this takes are left out.
    pub async fn peek(&self, topic: &str, n: usize) -> Result<Vec<Peeked>, Error> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let k = self.keys(topic);
        // The front of a level is the tail of its list (LPUSH at the back, RPOP from the
        // front), so the next n are its last n, read backwards.
        let last_n = -i64::try_from(n).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for list in &k.pending {
            pipe.cmd("LRANGE").arg(list).arg(last_n).arg(-1);
        }
        let levels: Vec<Vec<String>> = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.error(e))?;
        let next: Vec<(String, Option<u64>)> = levels
            .into_iter()
            .flat_map(|level| level.into_iter().rev())
            .take(n)
            .map(|id| (id, None))
            .collect();
        self.describe_waiting(topic, &k, next).await
    }

    /// The next `n` delayed messages of `topic` (delays and retries waiting), soonest
    /// first, each with its due time, without changing anything.
    pub async fn peek_delayed(&self, topic: &str, n: usize) -> Result<Vec<Peeked>, Error> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let k = self.keys(topic);
        let stop = i64::try_from(n - 1).unwrap_or(-1);
        let due: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&k.delayed)
            .arg(0)
            .arg(stop)
            .arg("WITHSCORES")
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.error(e))?;
        let next = due
            .into_iter()
            // a due time keeps a fraction of a ms (Redis' µs): shown as the next whole ms,
            // never before it
            .map(|(id, due_ms)| (id, Some(due_ms.ceil() as u64)))
            .collect();
        self.describe_waiting(topic, &k, next).await
    }

    /// The Redis URL with its password hidden, for messages and reports.
    pub fn display_url(&self) -> String {
        redact(&self.config().redis_url)
    }

    /// Reads envelope and attempts of each `(id, due_ms)`.
    async fn describe_waiting(
        &self,
        topic: &str,
        k: &TopicKeys,
        waiting: Vec<(String, Option<u64>)>,
    ) -> Result<Vec<Peeked>, Error> {
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = waiting.iter().map(|(id, _)| id.as_str()).collect();
        let (envelopes, attempts): (Vec<Option<Vec<u8>>>, Vec<Option<u32>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&k.messages)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&k.attempts)
            .arg(&ids)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.error(e))?;
        let mut out = Vec::with_capacity(waiting.len());
        for (i, (id, due_ms)) in waiting.into_iter().enumerate() {
            let Some(stored) = envelopes.get(i).cloned().flatten() else {
                continue; // fetched (and perhaps completed) between the two reads
            };
            let envelope = envelope::decode(&stored)
                .map_err(|e| Error::Protocol(format!("message {id} of {topic}: {e}")))?;
            out.push(Peeked {
                id: MessageId::new(id),
                priority: envelope.priority,
                produced_at: envelope.produced_at(),
                expires_at: envelope.expire_ms.map(system_time_from_millis),
                due_at: due_ms.map(system_time_from_millis),
                attempts: attempts.get(i).copied().flatten().unwrap_or(0),
                headers: envelope.headers,
                payload: String::from_utf8_lossy(&envelope.payload).into_owned(),
            });
        }
        Ok(out)
    }
}

/// What every key of every topic under `prefix` starts with, up to and including the `{`
/// of the hash tag: `prefix:rmq:{` (`rmq:{` without a prefix). Taken from [`TopicKeys`],
/// which owns the layout.
fn topic_key_base(prefix: &str) -> String {
    let mut base = TopicKeys::new(prefix, "").messages;
    let open = base.rfind('{').map_or(base.len(), |i| i + 1);
    base.truncate(open);
    base
}

/// The topic of `key` if it is `<base><topic>}:...` with a valid topic name. Topic names
/// cannot hold `}`, so the first one closes the tag (names may hold `:`).
fn topic_of_key(key: &[u8], base: &str) -> Option<String> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(base)?;
    let (name, after) = rest.split_once('}')?;
    (after.starts_with(':') && validate_topic_name(name).is_ok()).then(|| name.to_string())
}

/// Escapes the characters `SCAN MATCH` treats as a pattern, so a prefix matches itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn count_reply(reply: Option<redis::RedisResult<Value>>, script: &str) -> Result<usize, Error> {
    match reply.transpose()? {
        Some(Value::Int(n)) => Ok(usize::try_from(n).unwrap_or(0)),
        _ => Err(Error::Protocol(format!("{script} did not return a count"))),
    }
}

/// "first_ms|last_ms|reason|error" as written by `record_failure` in lib.lua.
#[derive(Debug, PartialEq)]
struct FailureRecord {
    first_ms: u64,
    last_ms: u64,
    reason: String,
    error: String,
}

impl FailureRecord {
    fn parse(record: &str) -> FailureRecord {
        let mut parts = record.splitn(4, '|');
        let first_ms = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let last_ms = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(first_ms);
        FailureRecord {
            first_ms,
            last_ms,
            reason: parts.next().unwrap_or("").to_string(),
            error: parts.next().unwrap_or("").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{glob_escape, topic_key_base, topic_of_key, FailureRecord};

    #[test]
    fn topics_are_read_from_their_own_prefix_only() {
        let base = topic_key_base("");
        assert_eq!(base, "rmq:{");
        assert_eq!(
            topic_of_key(b"rmq:{orders:eu}:stats", &base).as_deref(),
            Some("orders:eu")
        );
        assert_eq!(topic_of_key(b"p:rmq:{orders}:m", &base), None);
        assert_eq!(topic_of_key(b"rmq:{orders}", &base), None);
        assert_eq!(topic_of_key(b"rmq:{bad name}:m", &base), None);
        let base = topic_key_base("prod:eu");
        assert_eq!(base, "prod:eu:rmq:{");
        assert_eq!(
            topic_of_key(b"prod:eu:rmq:{a.b-c_d}:p0", &base).as_deref(),
            Some("a.b-c_d")
        );
        assert_eq!(topic_of_key(b"rmq:{orders}:m", &base), None);
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn failure_record_keeps_pipes_in_error_text() {
        let r = FailureRecord::parse("10|20|retries exhausted|boom | bang");
        assert_eq!((r.first_ms, r.last_ms), (10, 20));
        assert_eq!(r.reason, "retries exhausted");
        assert_eq!(r.error, "boom | bang");
        assert_eq!(FailureRecord::parse("").error, "");
    }
}
