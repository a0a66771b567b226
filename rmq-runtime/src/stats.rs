//! What a topic holds and has done, readable from any process: depths per state and the
//! counters the scripts keep in the topic's `stats` hash; and pausing a topic.

use std::collections::BTreeMap;

use rmq_core::{Priority, Topic};

use crate::client::Client;
use crate::error::Error;

/// A snapshot of one topic, read in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// The topic name.
    pub topic: String,
    /// Ready messages per priority (index = `Priority::index`: high, normal, low).
    pub pending: [u64; 3],
    /// Messages waiting for their delay or retry delay.
    pub delayed: u64,
    /// Messages leased to a running handler.
    pub in_flight: u64,
    /// Messages in the dead-letter queue.
    pub dead: u64,
    /// Consumers lease nothing from this topic (see [`Client::pause_topic`]).
    pub paused: bool,
    /// Counters since the topic was first used: `produced`, `delivered`, `completed`,
    /// `failed` (attempts), `retried`, `dead`, `expired`, `dropped`, `lost` (leases that
    /// lapsed), `dead_evicted`, `replayed`, `purged`. Absent counters are zero.
    pub counters: BTreeMap<String, i64>,
}

impl TopicStats {
    /// Ready messages of one priority.
    pub fn pending(&self, priority: Priority) -> u64 {
        self.pending[priority.index()]
    }

    /// Ready messages of every priority.
    pub fn pending_total(&self) -> u64 {
        self.pending.iter().sum()
    }

    /// One counter (0 when never incremented).
    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

impl Client {
    /// A snapshot of topic `T`.
    pub async fn stats<T: Topic>(&self) -> Result<TopicStats, Error> {
        self.topic_stats(T::NAME).await
    }

    /// A snapshot of a topic by name (for tools that do not have its type).
    pub async fn topic_stats(&self, topic: &str) -> Result<TopicStats, Error> {
        let k = self.keys(topic);
        let mut pipe = redis::pipe();
        for list in &k.pending {
            pipe.cmd("LLEN").arg(list);
        }
        pipe.cmd("ZCARD").arg(&k.delayed);
        pipe.cmd("ZCARD").arg(&k.inflight);
        pipe.cmd("ZCARD").arg(&k.dead);
        pipe.cmd("HGETALL").arg(&k.stats);
        pipe.cmd("EXISTS").arg(&k.paused);
        type Reply = (u64, u64, u64, u64, u64, u64, BTreeMap<String, i64>, bool);
        let (p0, p1, p2, delayed, in_flight, dead, counters, paused): Reply = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(|e| self.error(e))?;
        Ok(TopicStats {
            topic: topic.to_string(),
            pending: [p0, p1, p2],
            delayed,
            in_flight,
            dead,
            paused,
            counters,
        })
    }

    /// Pauses topic `T` for every consumer, from any process: they lease nothing more of it
    /// (running handlers finish; producing goes on) until [`Client::resume`]. Stored in
    /// Redis, so it survives restarts of consumers and of Redis (with persistence).
    pub async fn pause<T: Topic>(&self) -> Result<(), Error> {
        self.pause_topic(T::NAME).await
    }

    /// Resumes topic `T`; idle consumers are woken at once.
    pub async fn resume<T: Topic>(&self) -> Result<(), Error> {
        self.resume_topic(T::NAME).await
    }

    /// [`Client::pause`] by name.
    pub async fn pause_topic(&self, topic: &str) -> Result<(), Error> {
        let k = self.keys(topic);
        redis::cmd("SET")
            .arg(&k.paused)
            .arg(1)
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(|e| self.error(e))
    }

    /// [`Client::resume`] by name.
    pub async fn resume_topic(&self, topic: &str) -> Result<(), Error> {
        let k = self.keys(topic);
        redis::pipe()
            .cmd("DEL")
            .arg(&k.paused)
            .ignore()
            .cmd("PUBLISH")
            .arg(&k.wake)
            .arg("p")
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(|e| self.error(e))
    }
}
