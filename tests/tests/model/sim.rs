//! The model: what the documented rules (script headers, ARCHITECTURE.md, PRODUCT.md's
//! invariants) say each script call does, on plain Rust structures.
//!
//! One entry per stored message, in exactly one state; the pending lists are queues whose
//! front is the next message a fetch takes. Every delivery draws the next value of the
//! topic's `delivered` counter (1, 2, 3, ...); the leases of one fetch call all carry the
//! first value it drew as their token, so id and token name one delivery. "The holder of
//! the current lease" is whoever was handed the delivery the message is in now.
//!
//! Where the documents leave a detail open, the model takes the script headers' more
//! precise reading:
//! - a lease is held until a fetch reclaims it: after its deadline but before the next
//!   fetch, its holder can still ack, fail, renew or release it;
//! - messages reclaimed by one fetch or released by one call go to the front of their
//!   level keeping their order (deadline order, argument order): the first is next;
//! - the TTL has passed when `now >= expire`; a lease has lapsed when `now >= deadline`; a
//!   delayed message is due when `now >= due`, compared in µs (a delay given at produce time
//!   keeps Redis' µs; a retry's due time is whole ms);
//! - `fail.lua` answers 3 ("dropped") when a message would be dead-lettered but dead
//!   letters are disabled;
//! - an expired message is kept in the DLQ only when both `keep_expired` and `keep_dead`
//!   are set; otherwise it is deleted and counted as expired only;
//! - an id is a duplicate only while its message is stored: producing it again once the
//!   message is gone stores a new message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    lease_member, lease_pin, Action, Call, FailItem, Lease, NewMsg, Params, Sent, Snapshot,
    DEAD_REASON, R,
};

#[derive(Clone, Debug, PartialEq)]
enum State {
    Pending,
    /// Due time in µs.
    Delayed(u64),
    InFlight {
        deadline: u64,
        token: u64,
    },
    Dead(u64),
}

#[derive(Clone, Debug)]
struct Failure {
    first: u64,
    last: u64,
    reason: String,
    error: String,
}

#[derive(Clone, Debug)]
struct Msg {
    prio: usize,
    produced: u64,
    expire: u64,
    body: String,
    state: State,
    /// Deliveries so far (in the lease while in flight, else in `attempts`; 0 = no field).
    attempts: u64,
    error: Option<Failure>,
}

impl Msg {
    fn envelope(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.prio, self.produced, self.expire, self.body
        )
    }

    fn record_failure(&mut self, now: u64, reason: &str, error: String) {
        let first = self.error.as_ref().map_or(now, |f| f.first);
        self.error = Some(Failure {
            first,
            last: now,
            reason: reason.to_string(),
            error,
        });
    }
}

pub struct Model {
    p: Params,
    pub now: u64,
    /// Every message that is not gone.
    msgs: BTreeMap<String, Msg>,
    /// Per level, front (next to fetch) first.
    pending: [VecDeque<String>; 3],
    stats: BTreeMap<&'static str, i64>,
    /// `waiting`: parked consumers' members (`<lease>|c<n>`) and when they parked.
    parked: BTreeMap<String, u64>,
    /// Leases the last produce handed to parked consumers, with the consumer.
    pub pushed: Vec<(usize, Lease)>,
}

/// Which consumers listen on their push channel (the runner subscribes to theirs); the
/// others are gone as far as pub/sub knows, so a producer skips them.
pub const LISTENING: [bool; super::CONSUMERS] = [true, true, false];

/// A consumer's member of `waiting` (what the runner sends as fetch.lua's ARGV[8]).
pub fn park_member(p: &Params, consumer: usize) -> String {
    format!("{}|c{consumer}", p.lease)
}

impl Model {
    pub fn new(p: Params, now: u64) -> Model {
        Model {
            p,
            now,
            msgs: BTreeMap::new(),
            pending: Default::default(),
            stats: BTreeMap::new(),
            parked: BTreeMap::new(),
            pushed: Vec::new(),
        }
    }

    // ---- queries used to resolve abstract operations -------------------------------------

    pub fn next_deadline(&self) -> Option<u64> {
        self.msgs
            .values()
            .filter_map(|m| match m.state {
                State::InFlight { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// In µs.
    pub fn next_due(&self) -> Option<u64> {
        self.msgs
            .values()
            .filter_map(|m| match m.state {
                State::Delayed(due) => Some(due),
                _ => None,
            })
            .min()
    }

    /// A TTL end still ahead: of the next message a fetch would take when it has a TTL
    /// (so the boundary is actually tested), else the earliest of any waiting message.
    pub fn next_expiry(&self) -> Option<u64> {
        let ahead = |m: &&Msg| m.expire > self.now;
        let next_popped = self.pending.iter().flatten().take(2);
        next_popped
            .filter_map(|id| self.msgs.get(id))
            .find(ahead)
            .or_else(|| {
                self.msgs
                    .values()
                    .filter(|m| matches!(m.state, State::Pending | State::Delayed(_)))
                    .filter(ahead)
                    .min_by_key(|m| m.expire)
            })
            .map(|m| m.expire)
    }

    pub fn dead_ids(&self) -> Vec<String> {
        self.sorted_dead().into_iter().map(|(_, id)| id).collect()
    }

    pub fn live_ids(&self) -> Vec<String> {
        self.msgs.keys().cloned().collect()
    }

    /// True when `sent` names the current lease of its message: its token and attempt.
    pub fn holds(&self, sent: &Sent) -> bool {
        match self.msgs.get(&sent.lease.id) {
            Some(m) => {
                matches!(m.state, State::InFlight { token, .. } if token == sent.token)
                    && m.attempts == sent.lease.attempt
            }
            None => false,
        }
    }

    fn lease_of(&self, id: &str) -> Option<String> {
        let m = self.msgs.get(id)?;
        match m.state {
            State::InFlight { token, .. } => Some(lease_member(id, token, m.attempts)),
            _ => None,
        }
    }

    // ---- transitions ----------------------------------------------------------------------

    /// The reply the script should give, and the leases a fetch hands out.
    pub fn apply(&mut self, call: &Call) -> (R, Vec<Lease>) {
        match call {
            // `unseen` only spares Redis a lookup that would find nothing
            Call::Produce {
                items, stamp, raw, ..
            } => {
                let reply = self.produce(items, *stamp);
                // batch.lua answers as produce.lua does for one message: its clock alone when
                // it kept the stamp, else { clock, 0 } (there are no duplicates)
                let reply = match reply {
                    R::List(mut items) if *raw => match items.get(1) {
                        Some(R::Int(1)) => items.swap_remove(0),
                        _ => R::List(items),
                    },
                    reply => reply,
                };
                (reply, Vec::new())
            }
            Call::Fetch { n, consumer } => {
                let (reply, leased) = self.fetch(*n);
                // 4. fewer than asked: parks; else (busy) leaves `waiting`
                let member = park_member(&self.p, *consumer);
                if (leased.len() as u64) < *n {
                    self.parked.insert(member, self.now);
                } else {
                    self.parked.remove(&member);
                }
                (reply, leased)
            }
            Call::Ack { sent, .. } => (self.ack(sent), Vec::new()),
            Call::Fail { items, .. } => (self.fail(items), Vec::new()),
            Call::Renew { sent, .. } => (self.renew(sent), Vec::new()),
            Call::Release { sent, .. } => (self.release(sent), Vec::new()),
            Call::Crash { .. } => (R::Nil, Vec::new()),
            Call::Advance { to } => {
                self.now = *to;
                (R::Nil, Vec::new())
            }
            Call::Replay(ids) => (self.replay(ids), Vec::new()),
            Call::PurgeCount(n) => (self.purge_count(*n), Vec::new()),
            Call::PurgeIds(ids) => (self.purge_ids(ids), Vec::new()),
        }
    }

    fn count(&mut self, stat: &'static str, n: i64) {
        if n > 0 {
            *self.stats.entry(stat).or_default() += n;
        }
    }

    fn sorted_dead(&self) -> Vec<(u64, String)> {
        let mut dead: Vec<(u64, String)> = self
            .msgs
            .iter()
            .filter_map(|(id, m)| match m.state {
                State::Dead(at) => Some((at, id.clone())),
                _ => None,
            })
            .collect();
        dead.sort();
        dead
    }

    /// lib.lua `dead_letter`: into the DLQ (bounded, oldest evicted) or dropped; true when
    /// kept.
    fn dead_letter(&mut self, id: &str) -> bool {
        if !self.p.keep_dead {
            self.msgs.remove(id);
            self.count("dropped", 1);
            return false;
        }
        self.msgs
            .get_mut(id)
            .expect("dead-lettering a stored message")
            .state = State::Dead(self.now);
        self.count("dead", 1);
        let dead = self.sorted_dead();
        let excess = dead.len().saturating_sub(self.p.max_dead as usize);
        for (_, id) in dead.iter().take(excess) {
            self.msgs.remove(id);
        }
        self.count("dead_evicted", excess as i64);
        true
    }

    fn produce(&mut self, items: &[NewMsg], stamp: Option<i64>) -> R {
        let now = self.now;
        // a stamp from 2 ms before now up to now is the produced time; any other, or none,
        // and Redis' now is
        let kept = stamp.filter(|d| (-2..=0).contains(d));
        let produced = kept.map_or(now, |d| (now as i64 + d) as u64);
        // the reply: the clock in µs, whether the stamp was kept, positions (from 1) of the
        // duplicates
        let mut duplicates = vec![R::Int(now as i64 * 1000), R::Int(i64::from(kept.is_some()))];
        let mut stored = 0;
        let mut push_tried = false;
        self.pushed.clear();
        for (position, item) in items.iter().enumerate() {
            if self.msgs.contains_key(&item.id) {
                duplicates.push(R::Int(position as i64 + 1));
                continue;
            }
            // TTL counts from the moment the message becomes ready; the delay in whole ms,
            // rounded up (the due time: now is whole ms here)
            let delay = item.delay_us.div_ceil(1000);
            let expire = if item.ttl > 0 {
                produced + delay + item.ttl
            } else {
                0
            };
            let handed = if delay == 0 && !push_tried {
                push_tried = true;
                self.push_to_parked()
            } else {
                None
            };
            let state = if delay > 0 {
                State::Delayed(now * 1000 + item.delay_us)
            } else if let Some((consumer, deadline, token)) = handed {
                self.pushed.push((
                    consumer,
                    Lease {
                        id: item.id.clone(),
                        token,
                        attempt: 1,
                    },
                ));
                State::InFlight { deadline, token }
            } else {
                self.pending[item.prio].push_back(item.id.clone());
                State::Pending
            };
            self.msgs.insert(
                item.id.clone(),
                Msg {
                    prio: item.prio,
                    produced,
                    expire,
                    body: item.body.clone(),
                    attempts: u64::from(matches!(state, State::InFlight { .. })),
                    state,
                    error: None,
                },
            );
            stored += 1;
        }
        self.count("produced", stored);
        // one message stored with its stamp: only the clock
        if items.len() == 1 && stored == 1 && kept.is_some() {
            return duplicates.swap_remove(0);
        }
        R::List(duplicates)
    }

    /// lib.lua `push_to_parked` for a new ready message, when nothing else is ready: the
    /// consumer that parked last (ZPOPMAX: highest score, then highest member) takes it if
    /// it listens; the ones that do not are dropped from `waiting` on the way. Returns the
    /// consumer, the lease deadline and the token.
    fn push_to_parked(&mut self) -> Option<(usize, u64, u64)> {
        if self.pending.iter().any(|level| !level.is_empty()) {
            return None;
        }
        loop {
            let (member, _) = self
                .parked
                .iter()
                .max_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
                .map(|(m, at)| (m.clone(), *at))?;
            self.parked.remove(&member);
            let (lease_ms, name) = member.split_once('|').expect("<lease>|c<n>");
            let consumer: usize = name.trim_start_matches('c').parse().expect("c<n>");
            if LISTENING[consumer] {
                let token = self.stats.get("delivered").copied().unwrap_or(0) as u64 + 1;
                self.count("delivered", 1);
                let deadline = self.now + lease_ms.parse::<u64>().expect("lease ms");
                return Some((consumer, deadline, token));
            }
        }
    }

    fn fetch(&mut self, want: u64) -> (R, Vec<Lease>) {
        let now = self.now;
        // 1. lapsed leases: the delivery counted; front of the level, or DLQ when used up.
        //    (Several keep their deadline order at the front: the earliest is next.)
        //    (Equal deadlines: in the order of their `inflight` members, as ZRANGEBYSCORE.)
        let mut lapsed: Vec<(u64, String, String)> = self
            .msgs
            .iter()
            .filter_map(|(id, m)| match m.state {
                State::InFlight { deadline, .. } if deadline <= now => {
                    Some((deadline, self.lease_of(id)?, id.clone()))
                }
                _ => None,
            })
            .collect();
        lapsed.sort();
        let lost = lapsed.len() as i64;
        for (_, _, id) in lapsed.into_iter().rev() {
            let max = self.p.max_attempts;
            let m = self.msgs.get_mut(&id).unwrap();
            let attempts = m.attempts;
            let exhausted = attempts >= max;
            m.record_failure(
                now,
                if exhausted { "consumer lost" } else { "" },
                format!("consumer lost: lease expired during attempt {attempts}"),
            );
            if !exhausted {
                m.state = State::Pending;
                let prio = m.prio;
                self.pending[prio].push_front(id.clone());
            }
            self.count("lost", 1);
            if exhausted {
                self.dead_letter(&id);
            }
        }
        // 2. due delayed messages: back of their level, in due order.
        let mut due: Vec<(u64, String)> = self
            .msgs
            .iter()
            .filter_map(|(id, m)| match m.state {
                State::Delayed(at) if at <= now * 1000 => Some((at, id.clone())),
                _ => None,
            })
            .collect();
        due.sort();
        for (_, id) in due {
            let m = self.msgs.get_mut(&id).unwrap();
            m.state = State::Pending;
            let prio = m.prio;
            self.pending[prio].push_back(id);
        }
        // 3. lease up to `want`, high before normal before low, FIFO within a level;
        //    expired ones are never delivered.
        let mut reply = vec![
            R::Int(now as i64 * 1000),
            R::Int(-1),
            R::Int(-1),
            R::Int(0),
            R::Int(lost),
        ];
        let mut leases = Vec::new();
        let mut expired = 0;
        // one token for the whole call: with the id, unique per delivery
        let token = self.stats.get("delivered").copied().unwrap_or(0) as u64 + 1;
        for level in 0..3 {
            while (leases.len() as u64) < want {
                let Some(id) = self.pending[level].pop_front() else {
                    break;
                };
                let m = self.msgs.get_mut(&id).unwrap();
                if m.expire > 0 && now >= m.expire {
                    expired += 1;
                    if self.p.keep_expired && self.p.keep_dead {
                        let text = format!("expired before delivery (TTL ended at {})", m.expire);
                        m.record_failure(now, "expired", text);
                        self.dead_letter(&id);
                    } else {
                        self.msgs.remove(&id);
                    }
                    continue;
                }
                m.attempts += 1;
                m.state = State::InFlight {
                    deadline: now + self.p.lease,
                    token,
                };
                reply.push(R::Str(lease_member(&id, token, m.attempts)));
                reply.push(R::Str(m.envelope()));
                leases.push(Lease {
                    id,
                    token,
                    attempt: m.attempts,
                });
                self.count("delivered", 1);
            }
        }
        self.count("expired", expired);
        reply[3] = R::Int(expired);
        if let Some(due) = self.next_due() {
            reply[1] = R::Int(due as i64);
        }
        if let Some(deadline) = self.next_deadline() {
            reply[2] = R::Int(deadline as i64 * 1000);
        }
        (R::List(reply), leases)
    }

    fn ack(&mut self, sent: &[Sent]) -> R {
        let mut reply = vec![R::Int(0)];
        let mut completed = 0;
        for s in sent {
            if self.holds(s) {
                self.msgs.remove(&s.lease.id);
                completed += 1;
            } else {
                reply.push(R::Str(s.lease.id.clone()));
            }
        }
        self.count("completed", completed);
        reply[0] = R::Int(completed);
        R::List(reply)
    }

    fn fail(&mut self, items: &[FailItem]) -> R {
        let now = self.now;
        let mut codes = Vec::new();
        let mut failed = 0;
        for item in items {
            if !self.holds(&item.sent) {
                codes.push(R::Int(0));
                continue;
            }
            failed += 1;
            let id = item.sent.lease.id.clone();
            let max = self.p.max_attempts;
            let m = self.msgs.get_mut(&id).unwrap();
            let code = match item.action {
                Action::Retry if m.attempts < max => {
                    m.record_failure(now, "", item.error.clone());
                    m.state = State::Delayed((now + item.delay) * 1000);
                    self.count("retried", 1);
                    1
                }
                Action::Drop => {
                    self.msgs.remove(&id);
                    self.count("dropped", 1);
                    3
                }
                Action::Retry | Action::Dead => {
                    let reason = if item.action == Action::Retry {
                        "retries exhausted"
                    } else {
                        DEAD_REASON
                    };
                    m.record_failure(now, reason, item.error.clone());
                    if self.dead_letter(&id) {
                        2
                    } else {
                        3
                    }
                }
            };
            codes.push(R::Int(code));
        }
        self.count("failed", failed);
        R::List(codes)
    }

    fn renew(&mut self, sent: &[Sent]) -> R {
        let deadline = self.now + self.p.lease;
        let mut reply = vec![R::Int(0)];
        let mut renewed = 0;
        for s in sent {
            if self.holds(s) {
                let m = self.msgs.get_mut(&s.lease.id).unwrap();
                if let State::InFlight { token, .. } = m.state {
                    m.state = State::InFlight { deadline, token };
                }
                renewed += 1;
            } else {
                reply.push(R::Str(s.lease.id.clone()));
            }
        }
        reply[0] = R::Int(renewed);
        R::List(reply)
    }

    fn release(&mut self, sent: &[Sent]) -> R {
        let mut released = 0;
        for s in sent.iter().rev() {
            if self.holds(s) {
                let m = self.msgs.get_mut(&s.lease.id).unwrap();
                m.attempts = m.attempts.saturating_sub(1);
                m.state = State::Pending;
                let prio = m.prio;
                self.pending[prio].push_front(s.lease.id.clone());
                released += 1;
            }
        }
        R::Int(released)
    }

    fn replay(&mut self, ids: &[String]) -> R {
        let mut replayed = 0;
        for id in ids {
            let Some(m) = self.msgs.get_mut(id) else {
                continue;
            };
            if !matches!(m.state, State::Dead(_)) {
                continue;
            }
            m.expire = 0;
            m.attempts = 0;
            m.error = None;
            m.state = State::Pending;
            let prio = m.prio;
            self.pending[prio].push_back(id.clone());
            replayed += 1;
        }
        self.count("replayed", replayed);
        R::Int(replayed)
    }

    fn purge_count(&mut self, n: u64) -> R {
        let victims: Vec<String> = self
            .sorted_dead()
            .into_iter()
            .take(n as usize)
            .map(|(_, id)| id)
            .collect();
        for id in &victims {
            self.msgs.remove(id);
        }
        self.count("purged", victims.len() as i64);
        R::Int(victims.len() as i64)
    }

    fn purge_ids(&mut self, ids: &[String]) -> R {
        let mut purged = 0;
        for id in ids {
            if matches!(self.msgs.get(id), Some(m) if matches!(m.state, State::Dead(_))) {
                self.msgs.remove(id);
                purged += 1;
            }
        }
        self.count("purged", purged);
        R::Int(purged)
    }

    // ---- what Redis should hold ----------------------------------------------------------

    pub fn snapshot(&self) -> Snapshot {
        // (member, score) in ZRANGE order: by score, then member
        let zrange = |mut members: Vec<(u64, String)>| -> Vec<(String, u64)> {
            members.sort();
            members.into_iter().map(|(score, m)| (m, score)).collect()
        };
        let zset = |pick: &dyn Fn(&State) -> Option<u64>| {
            zrange(
                self.msgs
                    .iter()
                    .filter_map(|(id, m)| pick(&m.state).map(|score| (score, id.clone())))
                    .collect(),
            )
        };
        let delayed = zset(&|s| match s {
            State::Delayed(due) => Some(*due),
            _ => None,
        });
        let mut inflight = zrange(
            self.msgs
                .keys()
                .filter_map(|id| match self.msgs[id].state {
                    State::InFlight { deadline, .. } => Some((deadline, self.lease_of(id)?)),
                    _ => None,
                })
                .collect(),
        );
        if !inflight.is_empty() {
            inflight.push((lease_pin(), u64::MAX));
        }
        let dead = zset(&|s| match s {
            State::Dead(at) => Some(*at),
            _ => None,
        });
        let pending: [Vec<String>; 3] =
            std::array::from_fn(|level| self.pending[level].iter().cloned().collect());
        let messages: BTreeMap<String, String> = self
            .msgs
            .iter()
            .map(|(id, m)| (id.clone(), m.envelope()))
            .collect();
        let attempts: BTreeMap<String, String> = self
            .msgs
            .iter()
            .filter(|(_, m)| m.attempts > 0 && !matches!(m.state, State::InFlight { .. }))
            .map(|(id, m)| (id.clone(), m.attempts.to_string()))
            .collect();
        let errors: BTreeMap<String, String> = self
            .msgs
            .iter()
            .filter_map(|(id, m)| {
                m.error.as_ref().map(|f| {
                    let text = format!("{}|{}|{}|{}", f.first, f.last, f.reason, f.error);
                    (id.clone(), text)
                })
            })
            .collect();
        let stats: BTreeMap<String, i64> = self
            .stats
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let mut keys = BTreeSet::new();
        let mut key_if = |name: &str, present: bool| {
            if present {
                keys.insert(name.to_string());
            }
        };
        key_if("m", !messages.is_empty());
        for (level, list) in pending.iter().enumerate() {
            key_if(&format!("p{level}"), !list.is_empty());
        }
        key_if("delayed", !delayed.is_empty());
        key_if("inflight", !inflight.is_empty());
        key_if("dead", !dead.is_empty());
        key_if("attempts", !attempts.is_empty());
        key_if("errors", !errors.is_empty());
        key_if("stats", !stats.is_empty());
        let waiting = zrange(self.parked.iter().map(|(m, at)| (*at, m.clone())).collect());
        key_if("waiting", !waiting.is_empty());
        Snapshot {
            keys,
            pending,
            delayed,
            inflight,
            dead,
            messages,
            attempts,
            errors,
            stats,
            waiting,
        }
    }
}
