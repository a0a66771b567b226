//! The Redis key layout of a topic. Every key of a topic shares the hash tag `{topic}`, so
//! a topic lives on one Redis Cluster shard and every script can touch all of it.
//!
//! ```text
//! [prefix:]rmq:{T}:m         hash  id -> envelope (payload + metadata), while the message exists
//! [prefix:]rmq:{T}:p0|p1|p2  list  ids ready to run, per priority (high, normal, low);
//!                                  LPUSH at the back, RPOP from the front
//! [prefix:]rmq:{T}:delayed   zset  id scored by the time (ms) it becomes ready; a delay given
//!                                  at produce time keeps Redis' µs as a fraction of the ms
//! [prefix:]rmq:{T}:inflight  zset  lease "<id>|<token>|<attempt>" scored by its deadline (ms);
//!                                  id and token are unique per delivery
//! [prefix:]rmq:{T}:attempts  hash  id -> deliveries so far, while not in flight (retry, DLQ)
//! [prefix:]rmq:{T}:errors    hash  id -> "first_failed_ms|last_failed_ms|last error"
//! [prefix:]rmq:{T}:dead      zset  id scored by the time (ms) it was dead-lettered
//! [prefix:]rmq:{T}:stats     hash  counters: produced, completed, failed, retried, dead, expired, ...
//! [prefix:]rmq:{T}:metrics   hash  handler-time histogram (h0..h19, whose sum is the count;
//!                                  hs sum in µs) and a ring of 60 minutes (m<slot> minute,
//!                                  c<slot> completed, f<slot> failed; slot = minute % 60):
//!                                  bounded, never per message
//! [prefix:]rmq:{T}:paused    string present while consumers must not lease (pause / resume)
//! [prefix:]rmq:{T}:waiting   zset  idle consumers "<lease_ms>|<consumer>" by when they parked:
//!                                  a new message may be pushed to one (`<wake>:<consumer>`)
//! [prefix:]rmq:{T}:wake      pub/sub channel: "work is ready or due sooner than you think"
//! ```
//!
//! Consumer groups (fan-out) will add `rmq:{T}:g:NAME:*` copies of the per-delivery keys
//! (`p*`, `delayed`, `inflight`, `attempts`, `errors`, `dead`) under the same hash tag,
//! sharing `m`.

/// The names of every key of one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicKeys {
    /// Envelopes by id.
    pub messages: String,
    /// Ready ids, one list per priority level (index = `Priority::index`).
    pub pending: [String; 3],
    /// Delayed ids by due time.
    pub delayed: String,
    /// Leases (`<id>|<token>|<attempt>`) by lease deadline.
    pub inflight: String,
    /// Delivery count by id, while not in flight.
    pub attempts: String,
    /// Failure record by id.
    pub errors: String,
    /// Dead-lettered ids by time.
    pub dead: String,
    /// Counters.
    pub stats: String,
    /// Handler-time histogram and per-minute outcome counts.
    pub metrics: String,
    /// Present while the topic is paused.
    pub paused: String,
    /// Idle consumers a new message may be handed to directly.
    pub waiting: String,
    /// Pub/sub channel that wakes idle consumers.
    pub wake: String,
}

impl TopicKeys {
    /// Keys of `topic` under `prefix` (`""` for none; MX-RMQ's `queue_prefix`).
    pub fn new(prefix: &str, topic: &str) -> Self {
        let base = if prefix.is_empty() {
            format!("rmq:{{{topic}}}")
        } else {
            format!("{prefix}:rmq:{{{topic}}}")
        };
        let key = |suffix: &str| format!("{base}:{suffix}");
        TopicKeys {
            messages: key("m"),
            pending: [key("p0"), key("p1"), key("p2")],
            delayed: key("delayed"),
            inflight: key("inflight"),
            attempts: key("attempts"),
            errors: key("errors"),
            dead: key("dead"),
            stats: key("stats"),
            metrics: key("metrics"),
            paused: key("paused"),
            waiting: key("waiting"),
            wake: key("wake"),
        }
    }

    /// `KEYS` of `produce.lua`, in its header's order. (One method per script, so the
    /// order each script expects is written once, here, for the runtime and the tests.)
    pub fn for_produce(&self) -> [&str; 10] {
        let [p0, p1, p2] = self.pending_refs();
        [
            &self.messages,
            p0,
            p1,
            p2,
            &self.delayed,
            &self.stats,
            &self.wake,
            &self.inflight,
            &self.waiting,
            &self.paused,
        ]
    }

    /// `KEYS` of `batch.lua`.
    pub fn for_batch(&self) -> [&str; 9] {
        let [p0, p1, p2] = self.pending_refs();
        [
            &self.messages,
            p0,
            p1,
            p2,
            &self.stats,
            &self.wake,
            &self.inflight,
            &self.waiting,
            &self.paused,
        ]
    }

    /// `KEYS` of `fetch.lua`.
    pub fn for_fetch(&self) -> [&str; 12] {
        let [p0, p1, p2] = self.pending_refs();
        [
            &self.messages,
            p0,
            p1,
            p2,
            &self.delayed,
            &self.inflight,
            &self.attempts,
            &self.errors,
            &self.dead,
            &self.stats,
            &self.paused,
            &self.waiting,
        ]
    }

    /// `KEYS` of `ack.lua`.
    pub fn for_ack(&self) -> [&str; 5] {
        [
            &self.messages,
            &self.inflight,
            &self.errors,
            &self.stats,
            &self.metrics,
        ]
    }

    /// `KEYS` of `fail.lua`.
    pub fn for_fail(&self) -> [&str; 9] {
        [
            &self.messages,
            &self.delayed,
            &self.inflight,
            &self.attempts,
            &self.errors,
            &self.dead,
            &self.stats,
            &self.wake,
            &self.metrics,
        ]
    }

    /// `KEYS` of `renew.lua`.
    pub fn for_renew(&self) -> [&str; 1] {
        [&self.inflight]
    }

    /// `KEYS` of `release.lua`.
    pub fn for_release(&self) -> [&str; 7] {
        let [p0, p1, p2] = self.pending_refs();
        [
            &self.messages,
            p0,
            p1,
            p2,
            &self.inflight,
            &self.attempts,
            &self.wake,
        ]
    }

    /// `KEYS` of `replay.lua`.
    pub fn for_replay(&self) -> [&str; 9] {
        let [p0, p1, p2] = self.pending_refs();
        [
            &self.messages,
            p0,
            p1,
            p2,
            &self.dead,
            &self.attempts,
            &self.errors,
            &self.stats,
            &self.wake,
        ]
    }

    /// `KEYS` of `purge.lua`.
    pub fn for_purge(&self) -> [&str; 5] {
        [
            &self.messages,
            &self.dead,
            &self.attempts,
            &self.errors,
            &self.stats,
        ]
    }

    fn pending_refs(&self) -> [&str; 3] {
        [&self.pending[0], &self.pending[1], &self.pending[2]]
    }

    /// Every data key (not the channel), e.g. to delete a topic in tests.
    pub fn all(&self) -> Vec<&str> {
        let mut keys = vec![self.messages.as_str()];
        keys.extend(self.pending.iter().map(String::as_str));
        keys.extend([
            self.delayed.as_str(),
            self.inflight.as_str(),
            self.attempts.as_str(),
            self.errors.as_str(),
            self.dead.as_str(),
            self.stats.as_str(),
            self.metrics.as_str(),
            self.paused.as_str(),
            self.waiting.as_str(),
        ]);
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = TopicKeys::new("prod", "orders");
        assert_eq!(keys.pending[0], "prod:rmq:{orders}:p0");
        for key in keys.all() {
            assert!(key.contains("{orders}"), "{key}");
        }
        assert_eq!(TopicKeys::new("", "x").messages, "rmq:{x}:m");
    }
}
