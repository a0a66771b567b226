//! Dead-letter administration, typed per topic: count, list (newest first, paged), get,
//! replay (one, all, or those matching a predicate) and purge.

use std::marker::PhantomData;
use std::time::SystemTime;

use redis::Value;
use rmq_core::context::system_time_from_millis;
use rmq_core::{envelope, MessageId, Priority, Topic, TopicKeys};

use crate::client::Client;
use crate::error::Error;
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

/// The dead-letter queue of topic `T` (`client.dlq::<T>()`).
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
    client: Client,
    keys: TopicKeys,
    topic: PhantomData<fn() -> T>,
}

impl<T: Topic> DeadLetterQueue<T> {
    pub(crate) fn new(client: Client) -> Self {
        DeadLetterQueue {
            keys: client.keys(T::NAME),
            client,
            topic: PhantomData,
        }
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
                .map_err(|e| Error::Protocol(format!("dead letter {id} of {}: {e}", T::NAME)))?;
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
    use super::FailureRecord;

    #[test]
    fn failure_record_keeps_pipes_in_error_text() {
        let r = FailureRecord::parse("10|20|retries exhausted|boom | bang");
        assert_eq!((r.first_ms, r.last_ms), (10, 20));
        assert_eq!(r.reason, "retries exhausted");
        assert_eq!(r.error, "boom | bang");
        assert_eq!(FailureRecord::parse("").error, "");
    }
}
