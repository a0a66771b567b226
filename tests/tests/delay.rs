//! Delayed messages run at their time: never early, and within 100 ms after it even when
//! the runtime is idle (MX-RMQ and apalis run delayed work up to a second early or 30 s
//! late; LESSONS.md §1, §7).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use futures_util::StreamExt;
use rmq_runtime::prelude::*;
use rmq_runtime::TopicKeys;
use serde::{Deserialize, Serialize};

/// A delivery as a handler saw it.
#[derive(Clone, Debug)]
struct Seen {
    label: String,
    at: SystemTime,
    instant: Instant,
}

fn seen(label: String) -> Seen {
    Seen {
        label,
        at: SystemTime::now(),
        instant: Instant::now(),
    }
}

#[topic("delay_one")]
#[derive(Debug, Serialize, Deserialize)]
struct One {
    label: String,
}

static ONE: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[handler]
async fn record_one(msg: One) {
    ONE.lock().unwrap().push(seen(msg.label));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_delay_is_never_early_and_at_most_100ms_late() {
    let env = TestEnv::start("delay_one_second").await;
    let keys = env.keys(One::NAME);
    // The runtime is already idle when the message is produced: it must wake up by itself.
    let handle = spawn_runtime(&env.client, &[One::NAME], 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = SystemTime::now();
    let before_instant = Instant::now();
    let sent = One {
        label: "late".into(),
    }
    .send()
    .delay(Duration::from_secs(1))
    .via(&env.client)
    .await
    .expect("produce delayed");
    let after_instant = Instant::now();

    // While it waits it is only in `delayed`, scored by its due time.
    let mut redis = env.redis.clone();
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&keys.delayed)
        .arg(sent.id.as_str())
        .query_async(&mut redis)
        .await
        .expect("ZSCORE");
    let Some(score) = score else {
        panic!(
            "a delayed message must wait in {}; Redis holds:\n{}",
            keys.delayed,
            env.describe().await
        )
    };
    let due_ms = score as u64;
    let earliest_due = unix_ms(before) + 1000;
    // Redis keeps the due time to the µs (a score in ms with a fraction, read here rounded
    // down): at most the delay past the moment the reply came
    let latest_due = unix_ms(SystemTime::now()) + 1000;
    assert!(
        (earliest_due..=latest_due).contains(&due_ms),
        "due {due_ms} outside {earliest_due}..={latest_due}"
    );
    for pending in &keys.pending {
        assert_eq!(env.len(pending).await, 0, "{pending} before the due time");
    }
    assert!(ONE.lock().unwrap().is_empty());

    wait_for("the delayed delivery", || !ONE.lock().unwrap().is_empty()).await;
    let got = ONE.lock().unwrap()[0].clone();
    shutdown(handle).await;

    assert_eq!(got.label, "late");
    assert!(
        unix_ms(got.at) >= due_ms,
        "delivered {} ms early",
        due_ms - unix_ms(got.at)
    );
    let lateness_max = got.instant - (before_instant + Duration::from_secs(1));
    let lateness_min = got
        .instant
        .saturating_duration_since(after_instant + Duration::from_secs(1));
    eprintln!(
        "1 s delay: delivered {lateness_min:?}..{lateness_max:?} after its due time \
         ({} ms after the stored due time)",
        unix_ms(got.at) - due_ms
    );
    assert!(
        lateness_min <= Duration::from_millis(100),
        "delivered {lateness_min:?} after its due time (bound: 100 ms)"
    );
    env.assert_eventually_clean().await;
}

#[topic("delay_at")]
#[derive(Debug, Serialize, Deserialize)]
struct At {
    label: String,
}

static AT: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[handler]
async fn record_at(msg: At) {
    AT.lock().unwrap().push(seen(msg.label));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_time_runs_at_that_time() {
    let env = TestEnv::start("delay_at").await;
    let handle = spawn_runtime(&env.client, &[At::NAME], 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let when = SystemTime::now() + Duration::from_millis(600);
    At { label: "at".into() }
        .send()
        .at(when)
        .via(&env.client)
        .await
        .expect("produce at a time");
    assert_eq!(env.len(&env.keys(At::NAME).delayed).await, 1);

    wait_for("the delivery at its time", || {
        !AT.lock().unwrap().is_empty()
    })
    .await;
    let got = AT.lock().unwrap()[0].clone();
    shutdown(handle).await;

    assert!(
        unix_ms(got.at) >= unix_ms(when),
        "delivered {} ms before the requested time",
        unix_ms(when) - unix_ms(got.at)
    );
    let late = got.at.duration_since(when).unwrap_or_default();
    eprintln!(".at(time): delivered {late:?} after the requested time");
    assert!(late <= Duration::from_millis(100), "{late:?} late");
    env.assert_eventually_clean().await;
}

#[topic("delay_many")]
#[derive(Debug, Serialize, Deserialize)]
struct Many {
    label: String,
}

static MANY: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[handler]
async fn record_many(msg: Many) {
    MANY.lock().unwrap().push(seen(msg.label));
}

/// Delays produced in reverse order run in due order, each at its own time, and do not
/// hold back a message that is ready now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_run_in_due_order_without_blocking_ready_ones() {
    let env = TestEnv::start("delay_many").await;
    let handle = spawn_runtime(&env.client, &[Many::NAME], 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let start = SystemTime::now();
    let mut due = Vec::new();
    for (label, ms) in [("c", 600u64), ("b", 400), ("a", 200)] {
        Many {
            label: label.into(),
        }
        .send()
        .delay(Duration::from_millis(ms))
        .via(&env.client)
        .await
        .expect("produce delayed");
        due.push((label, unix_ms(start) + ms));
    }
    Many {
        label: "now".into(),
    }
    .send()
    .via(&env.client)
    .await
    .expect("produce");

    wait_for("4 deliveries", || MANY.lock().unwrap().len() >= 4).await;
    shutdown(handle).await;
    let got = MANY.lock().unwrap().clone();
    let labels: Vec<&str> = got.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["now", "a", "b", "c"]);
    assert!(
        got[0].at < start + Duration::from_millis(150),
        "a ready message waited behind delayed ones"
    );
    for (label, due_ms) in due {
        let delivery = got.iter().find(|s| s.label == label).expect("delivered");
        let at = unix_ms(delivery.at);
        assert!(at >= due_ms, "{label} ran {} ms early", due_ms - at);
        assert!(at <= due_ms + 150, "{label} ran {} ms late", at - due_ms);
    }
    env.assert_eventually_clean().await;
}

#[topic("delay_busy")]
#[derive(Debug, Serialize, Deserialize)]
struct Busy {
    label: String,
}

static BUSY: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[handler]
async fn record_busy(msg: Busy) {
    BUSY.lock().unwrap().push(seen(msg.label));
}

/// While ready messages keep the runtime fetching, a delayed message is still not promoted
/// before its time (an idle runtime sleeps until the due time, so only a busy one can show
/// an early promotion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_runtime_does_not_run_delayed_messages_early() {
    let env = TestEnv::start("delay_busy").await;
    let keys = env.keys(Busy::NAME);
    let handle = spawn_runtime(&env.client, &[Busy::NAME], 2).await;
    let sent = Busy {
        label: "delayed".into(),
    }
    .send()
    .delay(Duration::from_millis(300))
    .via(&env.client)
    .await
    .expect("produce delayed");
    let mut redis = env.redis.clone();
    let due_ms: f64 = redis::cmd("ZSCORE")
        .arg(&keys.delayed)
        .arg(sent.id.as_str())
        .query_async(&mut redis)
        .await
        .expect("ZSCORE of the delayed message");
    let due_ms = due_ms as u64;

    let traffic_until = Instant::now() + Duration::from_millis(450);
    let mut n = 0;
    while Instant::now() < traffic_until {
        Busy {
            label: format!("ready-{n}"),
        }
        .send()
        .via(&env.client)
        .await
        .expect("produce ready");
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_for("the delayed delivery", || {
        BUSY.lock().unwrap().iter().any(|s| s.label == "delayed")
    })
    .await;
    shutdown(handle).await;

    let got = BUSY.lock().unwrap().clone();
    let delayed = got
        .iter()
        .find(|s| s.label == "delayed")
        .expect("delivered");
    let ready_near_due = got
        .iter()
        .filter(|s| s.label != "delayed")
        .filter(|s| (due_ms.saturating_sub(30)..due_ms).contains(&unix_ms(s.at)))
        .count();
    assert!(
        ready_near_due > 0,
        "the test needs ready traffic in the 30 ms before the due time ({n} produced)"
    );
    assert!(
        unix_ms(delayed.at) >= due_ms,
        "a busy runtime ran the delayed message {} ms early",
        due_ms - unix_ms(delayed.at)
    );
    assert!(unix_ms(delayed.at) <= due_ms + 100, "late");
}

#[topic("delay_exact")]
#[derive(Debug, Serialize, Deserialize)]
struct Exact {
    label: String,
}

static EXACT: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[handler]
async fn record_exact(msg: Exact) {
    EXACT.lock().unwrap().push(seen(msg.label));
}

/// Times that fall between two milliseconds are never run early, not even by a fraction of
/// one: the producer rounds a delay up to the µs, and Redis keeps each due time to the µs
/// and compares it with its µs clock. Each message is checked against its own time to the
/// nanosecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_times_are_never_early_even_by_a_fraction_of_a_millisecond() {
    let env = TestEnv::start("delay_exact").await;
    let handle = spawn_runtime(&env.client, &[Exact::NAME], 4).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    const N: u32 = 20;
    let start = SystemTime::now() + Duration::from_millis(300);
    let mut times = std::collections::HashMap::new();
    for i in 0..N {
        // 7.3 ms apart: every fraction of a millisecond comes up
        let when = start + Duration::from_micros(7_300 * u64::from(i));
        times.insert(i.to_string(), when);
        Exact {
            label: i.to_string(),
        }
        .send()
        .at(when)
        .via(&env.client)
        .await
        .expect("produce at a time");
    }
    wait_for("every delivery", || {
        EXACT.lock().unwrap().len() == N as usize
    })
    .await;
    shutdown(handle).await;

    let seen = EXACT.lock().unwrap().clone();
    for got in &seen {
        let when = times[&got.label];
        assert!(
            got.at >= when,
            "message {} ran {:?} before its time",
            got.label,
            when.duration_since(got.at).unwrap_or_default()
        );
    }
    env.assert_eventually_clean().await;
}

/// produce.lua at `clock` (ms) storing one message `id` as a bare body (Redis writes its
/// header), of priority `priority`, due `delay_us` later.
async fn produce_at(
    redis: &mut redis::aio::MultiplexedConnection,
    k: &TopicKeys,
    clock: u64,
    priority: u8,
    delay_us: u64,
    id: &str,
) {
    let mut call = eval(PRODUCE_LUA, &k.for_produce());
    call.arg(clock)
        .arg("")
        .arg("")
        .arg(1)
        .arg(priority)
        .arg(delay_us)
        .arg(0)
        .arg(id)
        .arg("0|{}");
    let _: redis::Value = call.query_async(redis).await.expect("produce.lua");
}

/// A delayed message is due at its microsecond, not at the next whole millisecond: the
/// scripts run here with a clock of our own (`ARGV[1]`, in ms with a fraction, as Redis'
/// TIME has one), so the test is exact. A message due 0.3 ms after a whole ms is not leased
/// 0.2 ms after it and is leased 0.5 ms after it; rounding the due time up to whole ms, or
/// comparing it with whole ms, would hold it until the next one.
#[tokio::test]
async fn a_delay_is_due_at_its_microsecond_not_at_the_next_millisecond() {
    let env = TestEnv::start("delay_micro").await;
    let k = env.keys("delay_micro.topic");
    let mut redis = env.redis.clone();
    let t0 = 1_700_000_000_000u64;

    // one message, 300 µs of delay, produced at t0
    produce_at(&mut redis, &k, t0, 1, 300, "m1").await;

    let leased = |reply: &[redis::Value]| reply.len().saturating_sub(5) / 2;
    let early: Vec<redis::Value> = fetch_at(&k, format!("{t0}.2"), 10)
        .query_async(&mut redis)
        .await
        .expect("fetch.lua at t0 + 0.2 ms");
    assert_eq!(
        leased(&early),
        0,
        "leased 0.1 ms before its time: {early:?}"
    );
    // the reply tells when it is due, in µs
    assert_eq!(
        early.get(1),
        Some(&redis::Value::Int((t0 * 1000 + 300) as i64)),
        "next due time (µs) in {early:?}"
    );
    let due: Vec<redis::Value> = fetch_at(&k, format!("{t0}.5"), 10)
        .query_async(&mut redis)
        .await
        .expect("fetch.lua at t0 + 0.5 ms");
    assert_eq!(leased(&due), 1, "not leased 0.2 ms after its time: {due:?}");
}

/// `m` of small envelopes (a listpack, scanned whole on every lookup) becomes a hashtable
/// when a fetch promotes 32 or more due messages at once (lib.lua's SPREAD_AT), before it
/// reads them, or when its promotion makes a pending list that deep; not when it does
/// neither. The scripts run on a clock of our own (`ARGV[1]`), so the messages of a group
/// fall due together. produce.lua looks at the depth itself when the topic's count of
/// produced messages is a multiple of 32; the count starts at 1 here, so its one look falls
/// on 31 stored messages, and only the fetches can convert.
#[tokio::test]
async fn small_delayed_messages_are_promoted_into_a_hashtable_once_the_queue_is_deep() {
    let env = TestEnv::start("delay_small_burst").await;
    let mut redis = env.redis.clone();
    let t0 = 1_700_000_000_000u64;
    let count_from_one = |k: &TopicKeys| {
        redis::cmd("HSET")
            .arg(&k.stats)
            .arg("produced")
            .arg(1)
            .to_owned()
    };

    // 40 due together, high and low priority: each list gets 20, so only the size of the
    // promotion can convert
    let k = env.keys("delay_small_burst.at_once");
    let _: () = count_from_one(&k).query_async(&mut redis).await.unwrap();
    for n in 0..40 {
        let priority = if n % 2 == 0 { 0 } else { 2 };
        produce_at(&mut redis, &k, t0, priority, 1_000_000, &format!("m{n}")).await;
    }
    assert_eq!(env.encoding(&k.messages).await, "listpack");
    let _: Vec<redis::Value> = fetch_at(&k, (t0 + 1000).to_string(), 0)
        .query_async(&mut redis)
        .await
        .expect("fetch.lua");
    assert_eq!(env.len(&k.pending[0]).await, 20, "{}", env.describe().await);
    assert_eq!(env.len(&k.pending[2]).await, 20, "{}", env.describe().await);
    assert_eq!(env.encoding(&k.messages).await, "hashtable");
    assert_eq!(
        env.len(&k.messages).await,
        40,
        "nothing but the 40 envelopes"
    );

    // 20 due at t0 + 1 s, 20 at t0 + 2 s, all normal priority: the second promotion takes
    // the list past 32
    let k = env.keys("delay_small_burst.in_turn");
    let _: () = count_from_one(&k).query_async(&mut redis).await.unwrap();
    for n in 0..40 {
        let delay_us = if n < 20 { 1_000_000 } else { 2_000_000 };
        produce_at(&mut redis, &k, t0, 1, delay_us, &format!("m{n}")).await;
    }
    for (at, pending, encoding) in [(1000, 20, "listpack"), (2000, 40, "hashtable")] {
        let _: Vec<redis::Value> = fetch_at(&k, (t0 + at).to_string(), 0)
            .query_async(&mut redis)
            .await
            .expect("fetch.lua");
        assert_eq!(
            env.len(&k.pending[1]).await,
            pending,
            "{}",
            env.describe().await
        );
        assert_eq!(
            env.encoding(&k.messages).await,
            encoding,
            "{pending} pending"
        );
    }
    assert_eq!(
        env.len(&k.messages).await,
        40,
        "nothing but the 40 envelopes"
    );
}

/// A batch wakes idle consumers once: 'd' when one of its delayed messages became the
/// earliest, 'p' when a pending list went from empty to non-empty, and nothing when neither
/// happened; the same whether the call says its ids are unseen (produce.lua's ARGV[3], the
/// client's first try) or not (a retry).
#[tokio::test]
async fn a_batch_wakes_consumers_when_it_brings_the_earliest_due_time_or_the_first_ready_message() {
    let env = TestEnv::start("delay_wake_batch").await;
    let k = env.keys("delay_wake_batch.topic");
    let mut redis = env.redis.clone();
    let mut listener = redis::Client::open(env.server.url())
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("pub/sub connection");
    listener.subscribe(&k.wake).await.expect("SUBSCRIBE");
    let t0 = 1_700_000_000_000u64;
    let mut messages = listener.into_on_message();
    for (round, unseen) in ["", "1"].into_iter().enumerate() {
        // two messages of a run sharing the delay (µs); bare bodies: Redis writes the header
        // whole envelopes stamped with the script's clock (kept as sent, the usual case)
        let batch = |first: usize, delay_us: u64| {
            let mut call = eval(PRODUCE_LUA, &k.for_produce());
            call.arg(t0).arg(t0).arg(unseen);
            call.arg(2).arg(1).arg(delay_us).arg(0);
            for i in first..first + 2 {
                call.arg(format!("r{round}m{i}"))
                    .arg(format!("1|{t0}|0|0|{{}}"));
            }
            call
        };
        // the earliest due time: 'd'; a later one: nothing; the first ready ones: 'p'
        let wake_ups = [(0, 5_000_000), (2, 10_000_000), (4, 0)];
        for (first, delay_us) in wake_ups {
            let reply: Vec<i64> = batch(first, delay_us)
                .query_async(&mut redis)
                .await
                .expect("produce.lua");
            assert_eq!(
                reply,
                [t0 as i64 * 1000, 1],
                "clock, stamp kept, no duplicate"
            );
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round} (unseen {unseen:?}): after {got:?}, no wake-up in 5 s")
                })
                .expect("pub/sub stream open");
            got.push(message.get_payload::<String>().expect("text"));
        }
        assert_eq!(
            got,
            ["d", "p"],
            "wake-ups of round {round} (unseen {unseen:?})"
        );
        // the next round starts from no pending and no delayed message again
        let _: () = redis::cmd("DEL")
            .arg(&k.pending[1])
            .arg(&k.delayed)
            .query_async(&mut redis)
            .await
            .expect("DEL");
    }
    assert_eq!(env.len(&k.messages).await, 12);
}
