//! One topic's conversation with Redis: settle finished attempts and lease new messages,
//! all in one round trip (`ack.lua`, `fail.lua` and `fetch.lua` pipelined).

use std::time::{Duration, Instant};

use redis::Value;
use rmq_core::duration::millis;
use rmq_core::envelope;
use rmq_core::{Backoff, Context, Delivery, HandlerAction, HandlerError, MessageId, TopicKeys};

use crate::client::Client;
use crate::config::Config;
use crate::error::Error;
use crate::scripts::SCRIPTS;
use crate::stats::{handler_bucket, HANDLER_BUCKETS};

/// Most ids in one script call: the scripts `unpack` them, and Lua's stack holds about
/// 8000 values.
pub(crate) const MAX_IDS_PER_CALL: usize = 1000;

/// A topic's delivery rules, resolved from its `#[topic]` options and the `Config`.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) max_attempts: u32,
    /// The topic's own backoff; `None` uses `retry_delays`.
    pub(crate) backoff: Option<Backoff>,
    pub(crate) retry_delays: Vec<Duration>,
    pub(crate) timeout: Duration,
    /// How long a fetched message stays leased; renewed every third of it while its
    /// handler runs.
    pub(crate) lease: Duration,
    pub(crate) keep_dead: bool,
    pub(crate) max_dead: usize,
    pub(crate) keep_expired: bool,
}

impl Policy {
    pub(crate) fn resolve(options: &rmq_core::TopicOptions, config: &Config) -> Policy {
        let timeout = options.timeout.unwrap_or(config.processing_timeout);
        Policy {
            max_attempts: options
                .retries
                .unwrap_or(config.max_retries)
                .saturating_add(1),
            backoff: options.backoff,
            retry_delays: config.retry_delays.clone(),
            timeout,
            lease: config.lease_duration,
            keep_dead: config.enable_dead_letter,
            max_dead: config.dead_letter_max,
            keep_expired: config.dead_letter_expired,
        }
    }

    /// The wait before retrying after failed attempt number `attempt`.
    pub(crate) fn retry_delay(&self, attempt: u32) -> Duration {
        match &self.backoff {
            Some(backoff) => backoff.delay(attempt),
            None => {
                let delays = &self.retry_delays;
                let index = (attempt.max(1) as usize - 1).min(delays.len().saturating_sub(1));
                delays.get(index).copied().unwrap_or_default()
            }
        }
    }
}

/// How one delivery ended, waiting to be written to Redis.
pub(crate) struct Settlement {
    pub(crate) id: MessageId,
    pub(crate) attempt: u32,
    /// The lease fetch.lua handed out with this delivery (`<id>|<token>|<attempt>`).
    pub(crate) lease: String,
    pub(crate) outcome: Result<(), HandlerError>,
    /// Why the message is dead-lettered when the error asks for it ("decode error", ...);
    /// `None` = the handler asked.
    pub(crate) dead_reason: Option<&'static str>,
    /// How long the handler ran (`None` when it never ran: an unreadable envelope).
    pub(crate) took: Option<Duration>,
}

impl Settlement {
    pub(crate) fn new(lease: Lease, outcome: Result<(), HandlerError>) -> Self {
        Settlement {
            id: lease.id,
            attempt: lease.attempt,
            lease: lease.lease,
            outcome,
            dead_reason: None,
            took: None,
        }
    }
}

/// The handler times of `settled` as `record_metrics` (lib.lua) takes them: the sum in µs
/// (`hs`) and one `h<bucket>` per non-empty histogram bucket (their sum is the count: no
/// field of its own, which cost Redis another `HINCRBY` a settle call).
fn handler_timings(settled: &[Settlement]) -> String {
    let mut buckets = [0u64; HANDLER_BUCKETS];
    let (mut count, mut sum_us) = (0u64, 0u64);
    for took in settled.iter().filter_map(|s| s.took) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        buckets[handler_bucket(us)] += 1;
        count += 1;
        sum_us = sum_us.saturating_add(us);
    }
    if count == 0 {
        return String::new();
    }
    let mut out = format!("hs:{sum_us}");
    for (i, n) in buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
        out.push_str(&format!(" h{i}:{n}"));
    }
    out
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// One delivery's lease: the message, its attempt number and the lease itself, the
/// `inflight` member `<id>|<token>|<attempt>` the scripts take back (id and token are
/// unique per delivery in the topic; see `lease_of` in lib.lua).
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) id: MessageId,
    pub(crate) attempt: u32,
    pub(crate) lease: String,
}

impl Lease {
    /// Reads a lease as fetch.lua returns it; the id may itself contain `|`.
    fn parse(lease: String) -> Option<Lease> {
        let mut fields = lease.rsplitn(3, '|');
        let attempt = fields.next()?.parse().ok()?;
        fields.next()?.parse::<u64>().ok()?;
        let id = MessageId::new(fields.next()?.to_owned());
        Some(Lease { id, attempt, lease })
    }
}

/// What a round trip brought back.
#[derive(Default)]
pub(crate) struct RoundTrip {
    /// Newly leased deliveries.
    pub(crate) deliveries: Vec<(Delivery, Lease)>,
    /// Leased messages whose envelope is unreadable: already failed, to be dead-lettered.
    pub(crate) unreadable: Vec<Settlement>,
    /// When this topic next has something to do (earliest delayed message or lease
    /// deadline), if it fetched.
    pub(crate) next_event: Option<Instant>,
}

pub(crate) struct TopicQueue {
    pub(crate) topic: &'static str,
    pub(crate) keys: TopicKeys,
    pub(crate) policy: Policy,
    /// This consumer's member of `waiting` (`<lease_ms>|<consumer>`), see fetch.lua.
    park: String,
    client: Client,
}

impl TopicQueue {
    /// The queue of `topic` as seen by consumer `consumer` (unique per runtime).
    pub(crate) fn new(client: Client, topic: &'static str, policy: Policy, consumer: &str) -> Self {
        TopicQueue {
            keys: client.keys(topic),
            topic,
            park: format!("{}|{consumer}", millis(policy.lease)),
            policy,
            client,
        }
    }

    /// Takes this consumer out of `waiting`: no producer hands it a message any more.
    pub(crate) async fn unpark(&self) -> Result<(), Error> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&self.keys.waiting).arg(&self.park);
        self.client
            .run_scripts(vec![cmd])
            .await?
            .pop()
            .transpose()?;
        Ok(())
    }

    /// The channel on which producers hand this consumer a message directly.
    pub(crate) fn push_channel(&self) -> String {
        let consumer = self.park.split_once('|').map_or("", |(_, c)| c);
        format!("{}:{consumer}", self.keys.wake)
    }

    /// Writes `settled` and leases up to `want` messages, in one round trip.
    pub(crate) async fn round_trip(
        &self,
        settled: &[Settlement],
        want: usize,
    ) -> Result<RoundTrip, Error> {
        let mut calls = Vec::with_capacity(3);
        let acks: Vec<&Settlement> = settled.iter().filter(|s| s.outcome.is_ok()).collect();
        let fails: Vec<&Settlement> = settled.iter().filter(|s| s.outcome.is_err()).collect();
        // the handler times of every settled attempt ride along with the first settle call
        let mut timings = handler_timings(settled);
        for chunk in acks.chunks(MAX_IDS_PER_CALL) {
            calls.push(self.ack_call(chunk, std::mem::take(&mut timings)));
        }
        for chunk in fails.chunks(MAX_IDS_PER_CALL) {
            calls.push(self.fail_call(chunk, std::mem::take(&mut timings)));
        }
        if want > 0 {
            calls.push(self.fetch_call(want));
        }
        if calls.is_empty() {
            return Ok(RoundTrip::default());
        }
        let mut results = self.client.run_scripts(calls).await?.into_iter();
        let received_at = Instant::now();
        for _ in acks.chunks(MAX_IDS_PER_CALL) {
            self.report_stale(results.next())?;
        }
        for chunk in fails.chunks(MAX_IDS_PER_CALL) {
            self.report_failed(chunk, results.next())?;
        }
        if want > 0 {
            let reply = results.next().unwrap_or(Ok(Value::Nil))?;
            return self.parse_fetch(reply, received_at);
        }
        Ok(RoundTrip::default())
    }

    fn ack_call(&self, acks: &[&Settlement], timings: String) -> redis::Cmd {
        let k = &self.keys;
        let mut call = SCRIPTS.ack.call(&k.for_ack());
        call.arg("").arg(timings);
        // the leases, then their ids (see ack.lua)
        for s in acks {
            call.arg(&s.lease);
        }
        for s in acks {
            call.arg(s.id.as_str());
        }
        call
    }

    fn fail_call(&self, fails: &[&Settlement], timings: String) -> redis::Cmd {
        let k = &self.keys;
        let mut call = SCRIPTS.fail.call(&k.for_fail());
        call.arg("")
            .arg(timings)
            .arg(self.policy.max_attempts)
            .arg(flag(self.policy.keep_dead))
            .arg(self.policy.max_dead);
        for s in fails {
            let Err(error) = &s.outcome else { continue };
            let (action, delay) = match error.action() {
                HandlerAction::Retry => ("retry", self.policy.retry_delay(s.attempt)),
                HandlerAction::RetryAfter(delay) => ("retry", delay),
                HandlerAction::DeadLetter => ("dead", Duration::ZERO),
                HandlerAction::Drop => ("drop", Duration::ZERO),
            };
            call.arg(&s.lease)
                .arg(action)
                .arg(millis(delay))
                .arg(s.dead_reason.unwrap_or("dead-lettered by handler"))
                .arg(error.describe());
        }
        call
    }

    fn fetch_call(&self, want: usize) -> redis::Cmd {
        let k = &self.keys;
        let mut call = SCRIPTS.fetch.call(&k.for_fetch());
        call.arg("")
            .arg(want)
            .arg(millis(self.policy.lease))
            .arg(self.policy.max_attempts)
            .arg(flag(self.policy.keep_dead))
            .arg(self.policy.max_dead)
            .arg(flag(self.policy.keep_expired))
            .arg(&self.park);
        call
    }

    /// Extends the leases of running handlers in one round trip; returns the ids whose
    /// lease was already lost.
    pub(crate) async fn renew(&self, running: &[Lease]) -> Result<Vec<String>, Error> {
        let k = &self.keys;
        let mut call = SCRIPTS.renew.call(&k.for_renew());
        call.arg("").arg(millis(self.policy.lease));
        for lease in running {
            call.arg(&lease.lease);
        }
        let reply = self.client.run_scripts(vec![call]).await?.pop();
        let Some(Value::Array(items)) = reply.transpose()? else {
            return Err(Error::Protocol("renew.lua did not return a list".into()));
        };
        Ok(items
            .iter()
            .skip(1)
            .filter_map(|v| match v {
                Value::BulkString(id) => Some(String::from_utf8_lossy(id).into_owned()),
                _ => None,
            })
            .collect())
    }

    /// Puts leased messages back at the front of their level without counting the attempt.
    pub(crate) async fn release(&self, leased: &[Lease]) -> Result<usize, Error> {
        let k = &self.keys;
        let mut call = SCRIPTS.release.call(&k.for_release());
        call.arg("");
        for lease in leased {
            call.arg(&lease.lease);
        }
        match self
            .client
            .run_scripts(vec![call])
            .await?
            .pop()
            .transpose()?
        {
            Some(Value::Int(n)) => Ok(usize::try_from(n).unwrap_or(0)),
            _ => Err(Error::Protocol("release.lua did not return a count".into())),
        }
    }

    fn report_stale(&self, reply: Option<redis::RedisResult<Value>>) -> Result<(), Error> {
        let Some(reply) = reply else { return Ok(()) };
        if let Value::Array(items) = reply? {
            for stale in items.iter().skip(1) {
                if let Value::BulkString(id) = stale {
                    tracing::warn!(
                        topic = self.topic,
                        id = %String::from_utf8_lossy(id),
                        "ack ignored: the lease had lapsed and the message belongs to another delivery now"
                    );
                }
            }
        }
        Ok(())
    }

    fn report_failed(
        &self,
        fails: &[&Settlement],
        reply: Option<redis::RedisResult<Value>>,
    ) -> Result<(), Error> {
        let Some(reply) = reply else { return Ok(()) };
        let Value::Array(codes) = reply? else {
            return Err(Error::Protocol("fail.lua did not return a list".into()));
        };
        for (s, code) in fails.iter().zip(codes) {
            let error = s
                .outcome
                .as_ref()
                .err()
                .map(HandlerError::describe)
                .unwrap_or_default();
            match code {
                Value::Int(1) => {
                    tracing::info!(topic = self.topic, id = %s.id, attempt = s.attempt, %error, "attempt failed; retry scheduled")
                }
                Value::Int(2) => {
                    tracing::warn!(topic = self.topic, id = %s.id, attempt = s.attempt, %error, "attempt failed; message dead-lettered")
                }
                Value::Int(3) => {
                    tracing::info!(topic = self.topic, id = %s.id, attempt = s.attempt, %error, "attempt failed; message dropped (the handler asked, or dead letters are disabled)")
                }
                _ => {
                    tracing::warn!(topic = self.topic, id = %s.id, attempt = s.attempt, "failure ignored: the lease had lapsed and the message belongs to another delivery now")
                }
            }
        }
        Ok(())
    }

    /// A leased message ready for its handler, or (an envelope rmq did not write: never
    /// deliverable, kept for a human) the failure that dead-letters it.
    fn delivery(&self, lease: Lease, stored: &[u8]) -> Result<(Delivery, Lease), Settlement> {
        let env = match envelope::decode(stored) {
            Ok(env) => env,
            Err(e) => {
                return Err(Settlement {
                    dead_reason: Some("unreadable envelope"),
                    ..Settlement::new(
                        lease,
                        Err(HandlerError::dead_letter(format!(
                            "unreadable envelope: {e}"
                        ))),
                    )
                })
            }
        };
        let context = Context::new(
            lease.id.clone(),
            self.topic,
            lease.attempt,
            env.produced_at(),
            env.headers,
        );
        let delivery = Delivery {
            payload: env.payload,
            context,
        };
        Ok((delivery, lease))
    }

    /// Reads a message push_to_parked (lib.lua) handed to this consumer:
    /// `<lease length>:<lease><envelope>`. `None` when it is not one (logged).
    pub(crate) fn pushed(&self, message: &[u8]) -> Option<Result<(Delivery, Lease), Settlement>> {
        let parsed = (|| {
            let colon = message.iter().position(|b| *b == b':')?;
            let len: usize = std::str::from_utf8(&message[..colon]).ok()?.parse().ok()?;
            let rest = &message[colon + 1..];
            let lease = std::str::from_utf8(rest.get(..len)?).ok()?;
            Some((Lease::parse(lease.to_owned())?, &rest[len..]))
        })();
        match parsed {
            Some((lease, stored)) => Some(self.delivery(lease, stored)),
            None => {
                tracing::warn!(
                    topic = self.topic,
                    bytes = message.len(),
                    "ignored a malformed message on this consumer's push channel (its lease, if any, lapses and the message is delivered again)"
                );
                None
            }
        }
    }

    /// Reads fetch.lua's reply. `received_at` anchors its clock: Redis ran the script
    /// before the reply arrived, so a wake-up timed from there is never early, and late by
    /// at most half a round trip.
    fn parse_fetch(&self, reply: Value, received_at: Instant) -> Result<RoundTrip, Error> {
        let bad =
            |what: &str| Error::Protocol(format!("fetch.lua reply for `{}`: {what}", self.topic));
        let Value::Array(items) = reply else {
            return Err(bad("not a list"));
        };
        let int = |v: &Value| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        };
        let now_us = items.first().and_then(int).ok_or_else(|| bad("no clock"))?;
        let next = [items.get(1).and_then(int), items.get(2).and_then(int)]
            .into_iter()
            .flatten()
            .filter(|t| *t >= 0)
            .min()
            // in µs, as the scripts compare them: a delayed message is due from its µs, a
            // lease deadline from its whole ms
            .map(|t| {
                let wait_us = t.saturating_sub(now_us).max(0);
                received_at + Duration::from_micros(wait_us as u64)
            });
        let mut deliveries = Vec::with_capacity(items.len().saturating_sub(5) / 2);
        let mut unreadable = Vec::new();
        let count = |i: usize| items.get(i).and_then(int).unwrap_or(0);
        let (expired, lost) = (count(3), count(4));
        if expired > 0 {
            tracing::info!(
                topic = self.topic,
                expired,
                "messages expired before delivery (their TTL passed); counted as expired"
            );
        }
        if lost > 0 {
            tracing::warn!(
                topic = self.topic,
                lost,
                "leases lapsed (a consumer died or stalled); messages reclaimed: retried, or dead-lettered as \"consumer lost\" when out of attempts"
            );
        }
        let mut rest = items.into_iter().skip(5);
        while let Some(lease) = rest.next() {
            let (Value::BulkString(lease), Some(Value::BulkString(stored))) = (lease, rest.next())
            else {
                return Err(bad("malformed delivery"));
            };
            let lease = String::from_utf8(lease)
                .ok()
                .and_then(Lease::parse)
                .ok_or_else(|| bad("malformed lease"))?;
            match self.delivery(lease, &stored) {
                Ok(delivery) => deliveries.push(delivery),
                Err(settlement) => unreadable.push(settlement),
            }
        }
        Ok(RoundTrip {
            deliveries,
            unreadable,
            next_event: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Lease;

    #[test]
    fn a_lease_keeps_ids_that_contain_the_separator() {
        let lease = Lease::parse("order|7|x|42|3".to_string()).expect("a lease");
        assert_eq!(lease.id.as_str(), "order|7|x");
        assert_eq!(lease.attempt, 3);
        assert_eq!(lease.lease, "order|7|x|42|3");
    }

    #[test]
    fn a_malformed_lease_is_refused() {
        for bad in ["", "id", "id|7", "id|x|1", "id|7|", "|7|1x"] {
            assert!(Lease::parse(bad.to_string()).is_none(), "{bad:?}");
        }
    }
}
