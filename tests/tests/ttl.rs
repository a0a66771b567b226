//! TTL: a message not delivered within its TTL of becoming ready is never delivered; it is
//! removed (or dead-lettered with reason "expired" when configured) and counted once as
//! expired — whether it waited pending, delayed, or for a retry. MX-RMQ delivers expired
//! messages and can deliver them twice (LESSONS.md §1).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use rmq_runtime::Topic;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// helpers local to this file

/// Waits until the topic's `expired` counter reaches `n`; panics with the state of Redis.
async fn wait_for_expired(env: &TestEnv, topic: &str, n: i64) {
    let found = poll(
        PATIENCE,
        || async move { env.stat(topic, "expired").await >= n },
    )
    .await;
    if !found {
        panic!(
            "expected {n} expired message(s) of {topic}; stats {:?}; Redis holds:\n{}",
            env.stats(topic).await,
            env.describe().await
        );
    }
}

/// Waits until `calls` holds at least `n` entries.
async fn wait_for_calls(what: &str, calls: &Mutex<Vec<u32>>, n: usize) {
    wait_for(what, || calls.lock().unwrap().len() >= n).await;
}

fn calls_of(calls: &Mutex<Vec<u32>>) -> Vec<u32> {
    let mut seen = calls.lock().unwrap().clone();
    seen.sort();
    seen
}

// ---------------------------------------------------------------------------------------
// expired while pending

#[topic("ttl_pending")]
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    n: u32,
}

static PENDING_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_pending(msg: Pending) {
    PENDING_CALLS.lock().unwrap().push(msg.n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_while_pending_is_never_delivered_and_counted_once() {
    let env = TestEnv::start("ttl_pending").await;
    env.client
        .send(Pending { n: 1 })
        .ttl(Duration::from_millis(100))
        .await
        .expect("produce");
    env.client
        .send(Pending { n: 2 })
        .ttl(Duration::from_secs(30))
        .await
        .expect("produce");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let handle = spawn_runtime(&env.client, &[Pending::NAME], 2).await;
    wait_for_calls("the live message", &PENDING_CALLS, 1).await;
    wait_for_expired(&env, Pending::NAME, 1).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(calls_of(&PENDING_CALLS), [2], "delivered after its TTL");
    let stats = env.stats(Pending::NAME).await;
    assert_eq!(stats.get("expired"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("completed"), Some(&1), "{stats:?}");
    assert_eq!(env.client.dlq::<Pending>().count().await.unwrap(), 0);
    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------
// delayed: the TTL counts from when the message becomes ready

#[topic("ttl_delayed_live")]
#[derive(Debug, Serialize, Deserialize)]
struct DelayedLive {
    n: u32,
}

static DELAYED_LIVE_CALLS: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());

#[handler]
async fn on_delayed_live(msg: DelayedLive) {
    DELAYED_LIVE_CALLS
        .lock()
        .unwrap()
        .push((msg.n, Instant::now()));
}

/// `.delay(600ms).ttl(400ms)`: the delay does not use up the TTL, so it is delivered once
/// the delay has passed. (Were the TTL counted from produce time it would expire 200 ms
/// before it is due; the 400 ms window after the due time keeps a loaded CI machine from
/// expiring it by accident.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_longer_than_the_ttl_does_not_expire_the_message() {
    let env = TestEnv::start("ttl_delayed_live").await;
    let handle = spawn_runtime(&env.client, &[DelayedLive::NAME], 2).await;
    let produced = Instant::now();
    env.client
        .send(DelayedLive { n: 1 })
        .delay(Duration::from_millis(600))
        .ttl(Duration::from_millis(400))
        .await
        .expect("produce");

    wait_for("the delayed message", || {
        !DELAYED_LIVE_CALLS.lock().unwrap().is_empty()
    })
    .await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    let calls = DELAYED_LIVE_CALLS.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "delivered {} times", calls.len());
    let after = calls[0].1 - produced;
    assert!(
        after >= Duration::from_millis(600),
        "delivered {after:?} after produce, before its delay"
    );
    let stats = env.stats(DelayedLive::NAME).await;
    assert_eq!(stats.get("expired"), None, "{stats:?}");
    assert_eq!(stats.get("completed"), Some(&1), "{stats:?}");
}

#[topic("ttl_delayed_stale")]
#[derive(Debug, Serialize, Deserialize)]
struct DelayedStale {
    n: u32,
}

static DELAYED_STALE_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_delayed_stale(msg: DelayedStale) {
    DELAYED_STALE_CALLS.lock().unwrap().push(msg.n);
}

/// `.delay(100ms).ttl(100ms)` with nobody consuming until 400 ms later: it became ready at
/// 100 ms and expired at 200 ms, so it is never delivered (a message with the same delay
/// and no short TTL is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_that_waits_past_its_ttl_once_ready_expires() {
    let env = TestEnv::start("ttl_delayed_stale").await;
    env.client
        .send(DelayedStale { n: 1 })
        .delay(Duration::from_millis(100))
        .ttl(Duration::from_millis(100))
        .await
        .expect("produce");
    env.client
        .send(DelayedStale { n: 2 })
        .delay(Duration::from_millis(100))
        .await
        .expect("produce");
    tokio::time::sleep(Duration::from_millis(400)).await;

    let handle = spawn_runtime(&env.client, &[DelayedStale::NAME], 2).await;
    wait_for_calls("the message without a short TTL", &DELAYED_STALE_CALLS, 1).await;
    wait_for_expired(&env, DelayedStale::NAME, 1).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(
        calls_of(&DELAYED_STALE_CALLS),
        [2],
        "delivered after its TTL"
    );
    let stats = env.stats(DelayedStale::NAME).await;
    assert_eq!(stats.get("expired"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("completed"), Some(&1), "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// expired while waiting for a retry

#[topic("ttl_retry", retries = 3, retry_delays = ["400ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Retried {
    n: u32,
}

static RETRIED_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_retried(_msg: Retried, ctx: Context) -> Result<(), HandlerError> {
    RETRIED_CALLS.lock().unwrap().push(ctx.attempt());
    if ctx.attempt() == 1 {
        return Err(HandlerError::msg("first attempt fails"));
    }
    Ok(())
}

/// TTL 200 ms, first attempt fails, retry due 400 ms later: the retry would come after the
/// TTL, so it never happens; the message is counted expired once and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_while_waiting_for_a_retry_is_not_retried() {
    let env = TestEnv::start("ttl_retry").await;
    let handle = spawn_runtime(&env.client, &[Retried::NAME], 2).await;
    env.client
        .send(Retried { n: 1 })
        .ttl(Duration::from_millis(200))
        .await
        .expect("produce");

    wait_for_calls("the first attempt", &RETRIED_CALLS, 1).await;
    wait_for_expired(&env, Retried::NAME, 1).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(
        *RETRIED_CALLS.lock().unwrap(),
        [1],
        "retried after the TTL ran out"
    );
    let stats = env.stats(Retried::NAME).await;
    assert_eq!(stats.get("expired"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("retried"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("completed"), None, "{stats:?}");
    assert_eq!(stats.get("dead"), None, "{stats:?}");
    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------
// dead_letter_expired

#[topic("ttl_to_dlq")]
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    n: u32,
    note: String,
}

static KEPT_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_kept(msg: Kept) {
    KEPT_CALLS.lock().unwrap().push(msg.n);
}

/// With `dead_letter_expired`, an expired message is kept in the DLQ with reason "expired"
/// and its payload intact, counted expired once; replaying it runs it (the TTL is cleared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_expired_keeps_the_expired_message_in_the_dlq() {
    let env = TestEnv::start("ttl_to_dlq").await;
    let client = env
        .client_with(|c| Config {
            dead_letter_expired: true,
            ..c
        })
        .await;
    let message = Kept {
        n: 5,
        note: "keep | me".into(),
    };
    let json = serde_json::to_string(&message).unwrap();
    let id = client
        .send(message)
        .ttl(Duration::from_millis(100))
        .await
        .expect("produce")
        .id;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let handle = spawn_runtime(&client, &[Kept::NAME], 2).await;
    env.wait_for_dead_letters::<Kept>(1).await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert!(KEPT_CALLS.lock().unwrap().is_empty(), "delivered after TTL");
    let dlq = client.dlq::<Kept>();
    let dead = dlq.list(0, 10).await.expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let entry = &dead[0];
    assert_eq!(entry.id, id);
    assert_eq!(entry.reason, "expired");
    assert_eq!(entry.payload, json, "payload intact");
    assert_eq!(entry.attempts, 0, "never delivered");
    assert_eq!(entry.message::<Kept>().expect("decodes").n, 5);
    let keys = env.keys(Kept::NAME);
    for key in keys.pending.iter().chain([&keys.delayed, &keys.inflight]) {
        assert_eq!(env.len(key).await, 0, "{key}:\n{}", env.describe().await);
    }
    let stats = env.stats(Kept::NAME).await;
    assert_eq!(stats.get("expired"), Some(&1), "{stats:?}");

    // Replayed by an operator, it runs: replay clears the TTL.
    assert!(dlq.replay(id.as_str()).await.expect("replay"));
    let handle = spawn_runtime(&client, &[Kept::NAME], 2).await;
    wait_for_calls("the replayed message", &KEPT_CALLS, 1).await;
    env.assert_eventually_clean().await;
    shutdown(handle).await;
    assert_eq!(*KEPT_CALLS.lock().unwrap(), [5]);
    assert_eq!(env.stat(Kept::NAME, "expired").await, 1, "counted again");
}

// ---------------------------------------------------------------------------------------
// where the TTL comes from: the message, the topic, the config

#[topic("ttl_topic_level", ttl = "100ms")]
#[derive(Debug, Serialize, Deserialize)]
struct Short {
    n: u32,
}

static SHORT_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_short(msg: Short) {
    SHORT_CALLS.lock().unwrap().push(msg.n);
}

/// The topic's `ttl = "100ms"` applies by default; a message's own `.ttl(..)` overrides it,
/// and `.ttl(Duration::ZERO)` means it never expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_ttl_applies_and_a_zero_message_ttl_never_expires() {
    let env = TestEnv::start("ttl_topic_level").await;
    env.client.produce(Short { n: 1 }).await.expect("produce");
    env.client
        .send(Short { n: 2 })
        .ttl(Duration::ZERO)
        .await
        .expect("produce");
    env.client
        .send(Short { n: 3 })
        .ttl(Duration::from_secs(30))
        .await
        .expect("produce");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let handle = spawn_runtime(&env.client, &[Short::NAME], 2).await;
    wait_for_calls("the two messages without a short TTL", &SHORT_CALLS, 2).await;
    wait_for_expired(&env, Short::NAME, 1).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(calls_of(&SHORT_CALLS), [2, 3]);
    let stats = env.stats(Short::NAME).await;
    assert_eq!(stats.get("expired"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("completed"), Some(&2), "{stats:?}");
}

#[topic("ttl_config_default")]
#[derive(Debug, Serialize, Deserialize)]
struct Plain {
    n: u32,
}

static PLAIN_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_plain(msg: Plain) {
    PLAIN_CALLS.lock().unwrap().push(msg.n);
}

#[topic("ttl_config_override", ttl = "1h")]
#[derive(Debug, Serialize, Deserialize)]
struct LongLived {
    n: u32,
}

static LONG_LIVED_CALLS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn on_long_lived(msg: LongLived) {
    LONG_LIVED_CALLS.lock().unwrap().push(msg.n);
}

/// `Config::message_ttl` is the default for topics without `ttl`; a topic's own `ttl`
/// and a message's `.ttl(Duration::ZERO)` override it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_message_ttl_is_the_default() {
    let env = TestEnv::start("ttl_config").await;
    let client = env
        .client_with(|c| Config {
            message_ttl: Duration::from_millis(100),
            ..c
        })
        .await;
    client.produce(Plain { n: 1 }).await.expect("produce");
    client
        .send(Plain { n: 2 })
        .ttl(Duration::ZERO)
        .await
        .expect("produce");
    client.produce(LongLived { n: 3 }).await.expect("produce");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let handle = spawn_runtime(&client, &[Plain::NAME, LongLived::NAME], 2).await;
    wait_for_calls("the never-expiring message", &PLAIN_CALLS, 1).await;
    wait_for_calls("the topic with ttl = 1h", &LONG_LIVED_CALLS, 1).await;
    wait_for_expired(&env, Plain::NAME, 1).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(
        calls_of(&PLAIN_CALLS),
        [2],
        "the config's 100 ms TTL was ignored"
    );
    assert_eq!(calls_of(&LONG_LIVED_CALLS), [3]);
    assert_eq!(env.stat(Plain::NAME, "expired").await, 1);
    assert_eq!(env.stat(LongLived::NAME, "expired").await, 0);
}

/// `fetch.lua` reads an expiry once for messages whose header bytes 16-30 are the same as
/// the last ones it read, which is right only where those bytes alone give the expiry (a
/// 13-digit clock). On a clock of 7 digits (the test's own), two messages with the same body
/// and different TTLs share those bytes, and each still expires at its own time.
#[tokio::test]
async fn each_message_expires_at_its_own_time_whatever_its_header_shares() {
    let env = TestEnv::start("ttl_shape").await;
    let k = env.keys("ttl.shape");
    let mut redis = env.redis.clone();
    for (id, ttl) in [("a", 100), ("b", 200)] {
        let mut call = eval(PRODUCE_LUA, &k.for_produce());
        call.arg(1_000_000)
            .arg("")
            .arg("")
            .arg(1)
            .arg(1)
            .arg(0)
            .arg(ttl)
            .arg(id)
            .arg(r#"0|{"n":1}"#);
        let _: redis::Value = call.query_async(&mut redis).await.expect("produce.lua");
    }
    // at 1_000_150, a's TTL (to 1_000_100) has passed and b's (to 1_000_200) has not
    let reply: Vec<redis::Value> = fetch_at(&k, "1000150".into(), 10)
        .query_async(&mut redis)
        .await
        .expect("fetch.lua");
    assert_eq!(
        reply.get(3),
        Some(&redis::Value::Int(1)),
        "one expired: {reply:?}"
    );
    let leased: Vec<String> = reply
        .iter()
        .skip(5)
        .step_by(2)
        .map(|v| match v {
            redis::Value::BulkString(lease) => String::from_utf8_lossy(lease).into_owned(),
            other => panic!("a lease, not {other:?}"),
        })
        .collect();
    assert_eq!(leased.len(), 1, "{leased:?}");
    assert!(leased[0].starts_with("b|"), "{leased:?}");
}
