//! What a topic holds and has done, readable from any process: depths per state and the
//! counters the scripts keep in the topic's `stats` hash; and pausing a topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rmq_core::{Priority, Topic};

use crate::client::Client;
use crate::error::Error;
use crate::producer::Produced;

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
    /// What producers did through this client (and its clones) since it connected.
    pub fn producer_stats(&self) -> ProducerStats {
        self.producer_counters().snapshot()
    }

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

/// What this process's producers did through one [`Client`] (and its clones) since it
/// connected: in-process figures, like a Kafka producer's metrics. See
/// [`Client::producer_stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProducerStats {
    /// Messages stored.
    pub sent: u64,
    /// Messages not stored because their explicit id was already queued.
    pub duplicates: u64,
    /// Messages whose produce call failed (Redis unreachable, a script error, ...).
    pub failed: u64,
    /// Produce requests (one `produce()`, `send()` or `produce_batch()` each).
    pub requests: u64,
    /// Mean time of a produce request, from the call to Redis' answer.
    pub avg_latency: Duration,
    /// Longest produce request.
    pub max_latency: Duration,
    /// Messages stored per second since the client connected.
    pub rate: f64,
    /// Since when these figures count.
    pub since: Duration,
}

/// The atomics behind [`ProducerStats`]: a few relaxed additions per produce request.
#[derive(Debug)]
pub(crate) struct ProducerCounters {
    started: Instant,
    sent: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    latency_us: AtomicU64,
    max_latency_us: AtomicU64,
}

impl Default for ProducerCounters {
    fn default() -> Self {
        ProducerCounters {
            started: Instant::now(),
            sent: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            max_latency_us: AtomicU64::new(0),
        }
    }
}

impl ProducerCounters {
    pub(crate) fn record(
        &self,
        result: &Result<Vec<Produced>, Error>,
        messages: usize,
        took: Duration,
    ) {
        match result {
            Ok(produced) => {
                let duplicates = produced.iter().filter(|p| p.duplicate).count() as u64;
                self.duplicates.fetch_add(duplicates, Relaxed);
                self.sent
                    .fetch_add(produced.len() as u64 - duplicates, Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(messages as u64, Relaxed);
            }
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Relaxed);
        self.latency_us.fetch_add(us, Relaxed);
        self.max_latency_us.fetch_max(us, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ProducerStats {
        let sent = self.sent.load(Relaxed);
        let requests = self.requests.load(Relaxed);
        let since = self.started.elapsed();
        ProducerStats {
            sent,
            duplicates: self.duplicates.load(Relaxed),
            failed: self.failed.load(Relaxed),
            requests,
            avg_latency: Duration::from_micros(
                self.latency_us
                    .load(Relaxed)
                    .checked_div(requests)
                    .unwrap_or(0),
            ),
            max_latency: Duration::from_micros(self.max_latency_us.load(Relaxed)),
            rate: sent as f64 / since.as_secs_f64().max(1e-3),
            since,
        }
    }
}
