//! The real side: the scripts of `rmq-runtime/lua/`, loaded exactly as
//! `rmq-runtime/src/scripts.rs` does (the `lib.lua` helpers each uses, then the script),
//! called with the keys and arguments in the order `fetcher.rs`, `producer.rs` and
//! `admin.rs` use, and Redis read back in full.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;
use rmq_runtime::TopicKeys;

use super::sim::{park_member, LISTENING};
use super::{Call, NewMsg, Params, Sent, Snapshot, DEAD_REASON, R};

const PRODUCE: &str = include_str!("../../../rmq-runtime/lua/produce.lua");
const BATCH: &str = include_str!("../../../rmq-runtime/lua/batch.lua");
const FETCH: &str = include_str!("../../../rmq-runtime/lua/fetch.lua");
const ACK: &str = include_str!("../../../rmq-runtime/lua/ack.lua");
const FAIL: &str = include_str!("../../../rmq-runtime/lua/fail.lua");
const RENEW: &str = include_str!("../../../rmq-runtime/lua/renew.lua");
const RELEASE: &str = include_str!("../../../rmq-runtime/lua/release.lua");
const REPLAY: &str = include_str!("../../../rmq-runtime/lua/replay.lua");
const PURGE: &str = include_str!("../../../rmq-runtime/lua/purge.lua");

/// Read-only: everything the topic holds, as one string (one line per structure, items
/// separated by tabs), so a step costs one round trip and little parsing.
/// KEYS: p0, p1, p2, delayed, inflight, dead, waiting, m, attempts, errors, stats, then
/// `metrics` (observations, not state: the model does not follow it);
/// ARGV: their short names. The first line is DBSIZE (keys outside the topic show there).
const DUMP: &str = r#"
local out = {}
local function line(items) out[#out + 1] = table.concat(items, '\t') end
local present = {}
for i = 1, 11 do
  if redis.call('EXISTS', KEYS[i]) == 1 then present[#present + 1] = ARGV[i] end
end
line({ redis.call('DBSIZE') - redis.call('EXISTS', KEYS[12]) })
line(present)
for i = 1, 3 do line(redis.call('LRANGE', KEYS[i], 0, -1)) end
for i = 4, 7 do line(redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')) end
for i = 8, 11 do line(redis.call('HGETALL', KEYS[i])) end
return table.concat(out, '\n')
"#;

/// The prefix and topic of every case (the database is flushed between cases).
pub const PREFIX: &str = "model";
pub const TOPIC: &str = "t";

struct Shas {
    produce: String,
    batch: String,
    fetch: String,
    ack: String,
    fail: String,
    renew: String,
    release: String,
    replay: String,
    purge: String,
    dump: String,
}

pub struct Real {
    con: redis::Connection,
    url: String,
    /// Subscribed to the push channels of the consumers that listen (`sim::LISTENING`),
    /// never read: only so that PUBLISH counts a listener there, as for a live consumer.
    listener: Option<std::net::TcpStream>,
    keys: TopicKeys,
    base: String,
    sha: Shas,
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

fn normalize(value: Value) -> R {
    match value {
        Value::Nil => R::Nil,
        Value::Int(n) => R::Int(n),
        Value::BulkString(bytes) => R::Str(String::from_utf8_lossy(&bytes).into_owned()),
        Value::Array(items) => R::List(items.into_iter().map(normalize).collect()),
        other => R::Str(format!("unexpected reply {other:?}")),
    }
}

fn zset(flat: Vec<String>) -> Result<Vec<(String, u64)>, String> {
    zset_scaled(flat, 1.0)
}

/// A ZRANGE WITHSCORES reply with each score times `scale`, to the nearest integer
/// (`delayed` holds ms with a fraction: read in µs with a scale of 1000).
fn zset_scaled(flat: Vec<String>, scale: f64) -> Result<Vec<(String, u64)>, String> {
    flat.chunks(2)
        .map(|pair| match pair {
            [id, score] => score
                .parse::<f64>()
                .map(|s| (id.clone(), (s * scale).round() as u64))
                .map_err(|e| format!("score {score:?} of {id}: {e}")),
            _ => Err("odd ZRANGE WITHSCORES reply".to_string()),
        })
        .collect()
}

impl Real {
    pub fn connect(url: &str) -> Real {
        let mut con = redis::Client::open(url)
            .expect("redis url")
            .get_connection()
            .expect("connection to the private redis-server");
        let mut load_code = |code: String| -> String {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(code)
                .query(&mut con)
                .expect("SCRIPT LOAD")
        };
        let mut load = |body: &str| load_code(rmq_runtime::__private::lua_script(body));
        let sha = Shas {
            produce: load(PRODUCE),
            batch: load(BATCH),
            fetch: load(FETCH),
            ack: load(ACK),
            fail: load(FAIL),
            renew: load(RENEW),
            release: load(RELEASE),
            replay: load(REPLAY),
            purge: load(PURGE),
            dump: load_code(DUMP.to_string()),
        };
        let keys = TopicKeys::new(PREFIX, TOPIC);
        let base = keys.messages.trim_end_matches('m').to_string();
        let mut real = Real {
            con,
            url: url.to_string(),
            listener: None,
            keys,
            base,
            sha,
        };
        real.subscribe();
        real
    }

    pub fn reset(&mut self) {
        redis::cmd("FLUSHDB")
            .query::<()>(&mut self.con)
            .expect("FLUSHDB");
        // what was pushed to the listener is read and thrown away, so it never piles up
        if let Some(listener) = self.listener.as_mut() {
            let mut buf = [0u8; 65536];
            while let Ok(n) = std::io::Read::read(listener, &mut buf) {
                if n == 0 {
                    panic!("the listener connection closed");
                }
            }
        }
    }

    /// Subscribes the listener (once per run: a connection closing while a new one
    /// subscribes would let PUBSUB NUMSUB count the old one).
    fn subscribe(&mut self) {
        let channels: Vec<String> = (0..LISTENING.len())
            .filter(|c| LISTENING[*c])
            .map(|c| format!("{}:c{c}", self.keys.wake))
            .collect();
        let addr = self
            .url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let mut stream = std::net::TcpStream::connect(&addr).expect("listener connection");
        let mut command = format!("*{}\r\n$9\r\nSUBSCRIBE\r\n", channels.len() + 1);
        for channel in &channels {
            command += &format!("${}\r\n{channel}\r\n", channel.len());
        }
        std::io::Write::write_all(&mut stream, command.as_bytes()).expect("SUBSCRIBE");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut numsub = redis::cmd("PUBSUB");
            numsub.arg("NUMSUB").arg(&channels);
            let counts: Vec<(String, i64)> = numsub.query(&mut self.con).expect("PUBSUB NUMSUB");
            if counts.iter().all(|(_, n)| *n == 1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "listener never subscribed"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        stream.set_nonblocking(true).expect("non-blocking listener");
        self.listener = Some(stream);
    }

    fn script(sha: &str, keys: &[&str], args: Vec<String>) -> Vec<redis::Cmd> {
        vec![Self::command("EVALSHA", sha, keys, args)]
    }

    fn command(verb: &str, script: &str, keys: &[&str], args: Vec<String>) -> redis::Cmd {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        for arg in args {
            cmd.arg(arg);
        }
        cmd
    }

    /// The commands `call` sends at `now`: a script call, a `MULTI` block whose `EXEC`
    /// ends with the script's reply, or nothing (a clock move or a crash).
    fn script_call(&self, call: &Call, p: &Params, now: u64) -> Vec<redis::Cmd> {
        let k = &self.keys;
        let at = now;
        let now = now.to_string();
        match call {
            Call::Produce {
                items,
                stamp: Some(d),
                raw: true,
                ..
            } => {
                // producer.rs `stored_raw`: the whole envelopes, the ids, then batch.lua
                let (prio, ttl) = (items[0].prio, items[0].ttl);
                let stamp = (at as i64 + d) as u64;
                let mut store = redis::cmd("HSET");
                store.arg(&k.messages);
                let mut list = redis::cmd("LPUSH");
                list.arg(&k.pending[prio]);
                for m in items {
                    store.arg(&m.id).arg(envelope(m, stamp));
                    list.arg(&m.id);
                }
                let args = vec![
                    now,
                    stamp.to_string(),
                    items.len().to_string(),
                    prio.to_string(),
                    ttl.to_string(),
                ];
                let finish = Self::command("EVALSHA", &self.sha.batch, &k.for_batch(), args);
                vec![redis::cmd("MULTI"), store, list, finish, redis::cmd("EXEC")]
            }
            Call::Produce {
                items,
                stamp: Some(d),
                compact: true,
                ..
            } => {
                // one message: clock, stamp, id, envelope, and its delay if it has one
                let m = &items[0];
                let stamp = (at as i64 + d) as u64;
                let mut args = vec![now, stamp.to_string(), m.id.clone(), envelope(m, stamp)];
                if m.delay_us > 0 {
                    args.push(m.delay_us.to_string());
                }
                Self::script(&self.sha.produce, &k.for_produce(), args)
            }
            Call::Produce {
                items,
                stamp,
                unseen,
                ..
            } => {
                // runs of messages sharing priority, delay and TTL, as producer.rs sends them;
                // stamped: whole envelopes
                let stamp = stamp.map(|d| (at as i64 + d) as u64);
                let mut args = vec![
                    now,
                    stamp.map(|s| s.to_string()).unwrap_or_default(),
                    if *unseen { "1" } else { "" }.to_string(),
                ];
                let shared = |m: &NewMsg| (m.prio, m.delay_us, m.ttl);
                for run in items.chunk_by(|a, b| shared(a) == shared(b)) {
                    let (prio, delay, ttl) = shared(&run[0]);
                    args.extend(
                        [run.len(), prio, delay as usize, ttl as usize].map(|n| n.to_string()),
                    );
                    for m in run {
                        let body = match stamp {
                            Some(s) => envelope(m, s),
                            None => m.body.clone(),
                        };
                        args.extend([m.id.clone(), body]);
                    }
                }
                let sha = &self.sha.produce;
                let keys = k.for_produce();
                Self::script(sha, &keys, args)
            }
            Call::Fetch { n, consumer } => {
                let args = vec![
                    now,
                    n.to_string(),
                    p.lease.to_string(),
                    p.max_attempts.to_string(),
                    flag(p.keep_dead).to_string(),
                    p.max_dead.to_string(),
                    flag(p.keep_expired).to_string(),
                    park_member(p, *consumer),
                ];
                let sha = &self.sha.fetch;
                let keys = k.for_fetch();
                Self::script(sha, &keys, args)
            }
            Call::Ack { sent, .. } => {
                let mut args = vec![now, String::new()];
                args.extend(sent.iter().map(Sent::member));
                args.extend(sent.iter().map(|s| s.lease.id.clone()));
                let sha = &self.sha.ack;
                let keys = k.for_ack();
                Self::script(sha, &keys, args)
            }
            Call::Fail { items, .. } => {
                let mut args = vec![
                    now,
                    String::new(),
                    p.max_attempts.to_string(),
                    flag(p.keep_dead).to_string(),
                    p.max_dead.to_string(),
                ];
                for item in items {
                    args.extend([
                        item.sent.member(),
                        item.action.as_str().to_string(),
                        item.delay.to_string(),
                        DEAD_REASON.to_string(),
                        item.error.clone(),
                    ]);
                }
                let sha = &self.sha.fail;
                let keys = k.for_fail();
                Self::script(sha, &keys, args)
            }
            Call::Renew { sent, .. } => {
                let mut args = vec![now, p.lease.to_string()];
                args.extend(sent.iter().map(Sent::member));
                let sha = &self.sha.renew.clone();
                Self::script(sha, &k.for_renew(), args)
            }
            Call::Release { sent, .. } => {
                let mut args = vec![now];
                args.extend(sent.iter().map(Sent::member));
                let sha = &self.sha.release;
                let keys = k.for_release();
                Self::script(sha, &keys, args)
            }
            Call::Replay(ids) => {
                let mut args = vec![now];
                args.extend(ids.iter().cloned());
                let sha = &self.sha.replay;
                let keys = k.for_replay();
                Self::script(sha, &keys, args)
            }
            Call::PurgeCount(n) => {
                let sha = &self.sha.purge;
                let keys = k.for_purge();
                Self::script(sha, &keys, vec![now, n.to_string()])
            }
            Call::PurgeIds(ids) => {
                let mut args = vec![now, "id:".to_string()];
                args.extend(ids.iter().cloned());
                let sha = &self.sha.purge;
                let keys = k.for_purge();
                Self::script(sha, &keys, args)
            }
            Call::Crash { .. } | Call::Advance { .. } => Vec::new(),
        }
    }

    /// Runs every step of a case — each `(call, now)` followed by a read-back of everything
    /// the topic holds — in one pipeline (Redis runs it in order, so each read sees the
    /// state right after its step): per step, what the script returned (`Nil` for a clock
    /// move or a crash) and the state after it.
    pub fn run(
        &mut self,
        steps: &[(&Call, u64)],
        p: &Params,
    ) -> Vec<Result<(R, Snapshot), String>> {
        let k = &self.keys;
        let all = [
            &k.pending[0],
            &k.pending[1],
            &k.pending[2],
            &k.delayed,
            &k.inflight,
            &k.dead,
            &k.waiting,
            &k.messages,
            &k.attempts,
            &k.errors,
            &k.stats,
            &k.metrics,
        ];
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::with_capacity(steps.len());
        for (call, now) in steps {
            let commands = self.script_call(call, p, *now);
            sent.push(commands.len());
            for command in commands {
                pipe.add_command(command);
            }
            pipe.cmd("EVALSHA").arg(&self.sha.dump).arg(all.len());
            for key in all {
                pipe.arg(key);
            }
            for key in all {
                pipe.arg(key.strip_prefix(self.base.as_str()).unwrap_or(key));
            }
        }
        let replies: Vec<Value> = match pipe.query(&mut self.con) {
            Ok(replies) => replies,
            Err(e) => return vec![Err(format!("pipeline failed: {e}"))],
        };
        let mut replies = replies.into_iter();
        sent.into_iter()
            .map(|commands| {
                // a MULTI block: OK, QUEUED..., then EXEC's replies, the script's last
                let last = replies.by_ref().take(commands).last();
                let reply = match (commands, last) {
                    (0, _) => Value::Nil,
                    (_, None) => return Err("pipeline reply too short".into()),
                    (1, Some(value)) => value,
                    (_, Some(Value::Array(mut exec))) => {
                        match exec.iter().find(|v| matches!(v, Value::ServerError(_))) {
                            Some(error) => return Err(format!("MULTI block error: {error:?}")),
                            None => exec.pop().unwrap_or(Value::Nil),
                        }
                    }
                    (_, Some(other)) => return Err(format!("EXEC replied {other:?}")),
                };
                let reply = match reply {
                    Value::ServerError(e) => return Err(format!("script error: {e:?}")),
                    value => normalize(value),
                };
                match replies.next() {
                    Some(Value::BulkString(bytes)) => {
                        let dump = String::from_utf8(bytes).map_err(|e| e.to_string())?;
                        Ok((reply, parse_dump(&dump)?))
                    }
                    other => Err(format!("dump script returned {other:?}")),
                }
            })
            .collect()
    }
}

/// The read-back of `DUMP`.
fn parse_dump(dump: &str) -> Result<Snapshot, String> {
    let mut lines = dump.split('\n').map(|line| {
        if line.is_empty() {
            Vec::new()
        } else {
            line.split('\t').map(str::to_string).collect()
        }
    });
    let mut next = || lines.next().ok_or("short dump".to_string());
    let db_size: usize = next()?.concat().parse().map_err(|_| "dump: DBSIZE")?;
    let mut keys: BTreeSet<String> = next()?.into_iter().collect();
    if db_size != keys.len() {
        keys.insert(format!("<{} keys outside the topic>", db_size - keys.len()));
    }
    // LPUSH adds at the back, RPOP takes from the front: the front is the tail.
    let mut front_first = || -> Result<Vec<String>, String> {
        let mut list = next()?;
        list.reverse();
        Ok(list)
    };
    let pending = [front_first()?, front_first()?, front_first()?];
    let delayed = zset_scaled(next()?, 1000.0)?;
    let inflight = zset(next()?)?;
    let dead = zset(next()?)?;
    let waiting = zset(next()?)?;
    let hash = |flat: Vec<String>| -> BTreeMap<String, String> {
        flat.chunks(2)
            .map(|pair| (pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
            .collect()
    };
    let messages = hash(next()?);
    let attempts = hash(next()?);
    let errors = hash(next()?);
    let stats = hash(next()?)
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap_or(i64::MIN)))
        .collect();
    Ok(Snapshot {
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
    })
}

/// The whole envelope the producer writes for `m` stamped `stamp` (producer.rs
/// `stamped_header`): the TTL counts from when the message falls due, its delay in whole ms
/// rounded up.
fn envelope(m: &NewMsg, stamp: u64) -> String {
    let expire = if m.ttl > 0 {
        stamp + m.delay_us.div_ceil(1000) + m.ttl
    } else {
        0
    };
    format!("{}|{stamp}|{expire}|{}", m.prio, m.body)
}
