//! What a topic holds and has done, readable from any process: depths per state and the
//! counters the scripts keep in the topic's `stats` hash; and pausing a topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rmq_core::{Priority, Topic};

use crate::client::Client;
use crate::error::Error;
use crate::producer::Produced;

/// A snapshot of one topic, read in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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
    /// How long handlers ran, over every attempt since the topic was first used.
    pub handler_time: HandlerTimes,
    /// Completed and failed attempts per minute for the last 60 minutes, oldest first;
    /// the last entry is the current (unfinished) minute.
    pub per_minute: Vec<MinuteCounts>,
}

/// Completed and failed attempts in one minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinuteCounts {
    /// The start of the minute (by Redis' clock).
    pub minute: SystemTime,
    /// Attempts that completed.
    pub completed: u64,
    /// Attempts that failed (whatever happened next: retry, dead letter, drop).
    pub failed: u64,
}

/// Upper bounds (µs) of the handler-time histogram's buckets; one more bucket holds the
/// rest (+Inf). Fixed, so the scripts keep 20 numbers per topic whatever the traffic.
const HANDLER_BOUNDS_US: [u64; 19] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Buckets of the handler-time histogram, +Inf included.
pub(crate) const HANDLER_BUCKETS: usize = HANDLER_BOUNDS_US.len() + 1;

/// The bucket a handler time of `us` microseconds falls in.
pub(crate) fn handler_bucket(us: u64) -> usize {
    HANDLER_BOUNDS_US.partition_point(|bound| *bound < us)
}

/// The handler-time histogram of a topic: how long handlers ran, per attempt (including
/// attempts that failed or timed out), as the consumers measured it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerTimes {
    /// `(upper bound, attempts that took at most that long)`, cumulative as in a
    /// Prometheus histogram; the last bound is `Duration::MAX` (+Inf) and its count is
    /// [`HandlerTimes::count`].
    pub buckets: Vec<(Duration, u64)>,
    /// Attempts measured.
    pub count: u64,
    /// Their total time.
    pub sum: Duration,
}

impl HandlerTimes {
    /// Reads the `metrics` hash's `h<bucket>` and `hs` fields.
    fn from_fields(fields: &BTreeMap<String, i64>) -> HandlerTimes {
        let get = |name: &str| fields.get(name).copied().unwrap_or(0).max(0) as u64;
        let mut cumulative = 0;
        let buckets = (0..HANDLER_BUCKETS)
            .map(|i| {
                cumulative += get(&format!("h{i}"));
                let bound = HANDLER_BOUNDS_US
                    .get(i)
                    .map_or(Duration::MAX, |us| Duration::from_micros(*us));
                (bound, cumulative)
            })
            .collect();
        HandlerTimes {
            buckets,
            // the count is the buckets' sum (a `hn` field written by earlier versions is
            // left unread)
            count: cumulative,
            sum: Duration::from_micros(get("hs")),
        }
    }

    /// The time within which a fraction `q` (0..=1) of attempts finished, interpolated
    /// within its bucket as Prometheus' `histogram_quantile` does; `None` before any
    /// attempt. Attempts beyond the last finite bound (5 min) report that bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut lower = (Duration::ZERO, 0u64);
        for &(bound, count) in &self.buckets {
            if count as f64 >= rank && count > lower.1 {
                if bound == Duration::MAX {
                    return Some(lower.0);
                }
                let within = (rank - lower.1 as f64) / (count - lower.1) as f64;
                return Some(lower.0 + (bound - lower.0).mul_f64(within.clamp(0.0, 1.0)));
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }

    /// Median handler time.
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.50)
    }

    /// 95th percentile.
    pub fn p95(&self) -> Option<Duration> {
        self.quantile(0.95)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// Mean handler time.
    pub fn mean(&self) -> Option<Duration> {
        u32::try_from(self.count)
            .ok()
            .filter(|n| *n > 0)
            .map(|n| self.sum / n)
    }
}

/// The last 60 minutes of the `metrics` hash's ring (`m<slot>` minute, `c<slot>`,
/// `f<slot>`), ending with minute `now_minute`.
fn per_minute(fields: &BTreeMap<String, i64>, now_minute: u64) -> Vec<MinuteCounts> {
    let get = |name: String| fields.get(&name).copied().unwrap_or(0).max(0) as u64;
    (now_minute.saturating_sub(59)..=now_minute)
        .map(|minute| {
            let slot = minute % 60;
            let current = fields.get(&format!("m{slot}")).copied() == Some(minute as i64);
            MinuteCounts {
                minute: UNIX_EPOCH + Duration::from_secs(minute * 60),
                completed: if current { get(format!("c{slot}")) } else { 0 },
                failed: if current { get(format!("f{slot}")) } else { 0 },
            }
        })
        .collect()
}

impl TopicStats {
    /// The counters the scripts keep, in the order tools show them.
    pub const COUNTERS: [&'static str; 12] = [
        "produced",
        "delivered",
        "completed",
        "failed",
        "retried",
        "dead",
        "expired",
        "dropped",
        "lost",
        "dead_evicted",
        "replayed",
        "purged",
    ];

    /// Every counter as `(name, value)`: [`TopicStats::COUNTERS`] first (zero when never
    /// incremented), then any other the hash holds, so tools list them all in one order.
    pub fn all_counters(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        let others = self
            .counters
            .keys()
            .map(String::as_str)
            .filter(|name| !Self::COUNTERS.contains(name));
        Self::COUNTERS
            .iter()
            .copied()
            .chain(others)
            .map(|name| (name, self.counter(name)))
    }

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
        // leases only: not lib.lua's LEASE_PIN, the one member scored +inf
        pipe.cmd("ZCOUNT").arg(&k.inflight).arg("-inf").arg("(+inf");
        pipe.cmd("ZCARD").arg(&k.dead);
        pipe.cmd("HGETALL").arg(&k.stats);
        pipe.cmd("EXISTS").arg(&k.paused);
        pipe.cmd("HGETALL").arg(&k.metrics);
        pipe.cmd("TIME");
        type Fields = BTreeMap<String, i64>;
        type Reply = (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            Fields,
            bool,
            Fields,
            (u64, u64),
        );
        let (p0, p1, p2, delayed, in_flight, dead, counters, paused, metrics, (secs, _)): Reply =
            pipe.query_async(&mut self.connection())
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
            handler_time: HandlerTimes::from_fields(&metrics),
            per_minute: per_minute(&metrics, secs / 60),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn times(per_bucket: &[(usize, i64)]) -> HandlerTimes {
        let fields: BTreeMap<String, i64> = per_bucket
            .iter()
            .map(|(i, n)| (format!("h{i}"), *n))
            .collect();
        HandlerTimes::from_fields(&fields)
    }

    #[test]
    fn buckets_hold_times_up_to_their_bound() {
        assert_eq!(handler_bucket(0), 0);
        assert_eq!(handler_bucket(100), 0);
        assert_eq!(handler_bucket(101), 1);
        assert_eq!(handler_bucket(1_000_000), 12);
        assert_eq!(handler_bucket(300_000_001), HANDLER_BUCKETS - 1);
        assert_eq!(handler_bucket(u64::MAX), HANDLER_BUCKETS - 1);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        assert_eq!(HandlerTimes::default().p50(), None);
        assert_eq!(times(&[]).p99(), None);
        // 100 attempts in (1 ms, 2.5 ms]: the median is half way
        let t = times(&[(4, 100)]);
        assert_eq!(t.buckets.last(), Some(&(Duration::MAX, 100)));
        assert_eq!(t.p50(), Some(Duration::from_micros(1_750)));
        // 90 fast and 10 slow: p50 among the fast, p95 and p99 among the slow
        let t = times(&[(0, 90), (12, 10)]);
        assert!(t.p50().unwrap() <= Duration::from_micros(100));
        let p95 = t.p95().unwrap();
        assert!(p95 > Duration::from_millis(500) && p95 <= Duration::from_secs(1));
        assert!(t.p99().unwrap() > p95);
        // beyond the last bound: that bound
        assert_eq!(times(&[(19, 3)]).p50(), Some(Duration::from_secs(300)));
    }

    #[test]
    fn the_ring_forgets_minutes_older_than_an_hour() {
        let mut fields = BTreeMap::new();
        // slot 40 holds minute 1000 (now - 50 min); slot 0 still holds minute 960, an hour
        // before minute 1020 which would reuse it
        fields.insert("m40".to_string(), 1000);
        fields.insert("c40".to_string(), 7);
        fields.insert("f40".to_string(), 2);
        fields.insert("m0".to_string(), 960);
        fields.insert("c0".to_string(), 99);
        let ring = per_minute(&fields, 1050);
        assert_eq!(ring.len(), 60);
        assert_eq!(
            ring.last().unwrap().minute,
            UNIX_EPOCH + Duration::from_secs(1050 * 60)
        );
        let busy: Vec<_> = ring.iter().filter(|m| m.completed + m.failed > 0).collect();
        assert_eq!(busy.len(), 1);
        assert_eq!((busy[0].completed, busy[0].failed), (7, 2));
        assert_eq!(busy[0].minute, UNIX_EPOCH + Duration::from_secs(1000 * 60));
    }
}
