//! Every way an attempt can end leaves the documented state in Redis: a timeout, a panic, an
//! undecodable payload, each typed `HandlerError` outcome, plain `anyhow` / `io` errors,
//! dead letters disabled, and a settlement from a consumer whose lease was taken over.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use rmq_runtime::{DeadLetter, Topic};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// helpers local to this file

/// The one dead letter of `T`; panics with the state of Redis otherwise.
async fn only_dead_letter<T: Topic>(env: &TestEnv) -> DeadLetter {
    let mut dead = env.client.dead_letters::<T>().await.expect("dead letters");
    assert_eq!(
        dead.len(),
        1,
        "expected exactly one dead letter: {dead:?}\n{}",
        env.describe().await
    );
    dead.pop().unwrap()
}

/// Asserts the message is dead and nowhere else: not pending, delayed or leased.
async fn assert_only_dead(env: &TestEnv, topic: &str) {
    let keys = env.keys(topic);
    for key in keys.pending.iter().chain([&keys.delayed, &keys.inflight]) {
        assert_eq!(env.len(key).await, 0, "{key}:\n{}", env.describe().await);
    }
    assert_eq!(env.len(&keys.dead).await, 1, "{}", env.describe().await);
}

async fn raw<T: redis::FromRedisValue>(env: &TestEnv, cmd: &mut redis::Cmd) -> T {
    let mut redis = env.redis.clone();
    cmd.query_async(&mut redis)
        .await
        .unwrap_or_else(|e| panic!("raw Redis command failed: {e}"))
}

// ---------------------------------------------------------------------------------------
// handler timeout

#[topic("outcomes_timeout", timeout = "200ms", retries = 1, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Sleepy {
    n: u32,
}

static SLEEPY_CALLS: AtomicU32 = AtomicU32::new(0);
static SLEEPY_FINISHED: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn sleepy(_msg: Sleepy) {
    SLEEPY_CALLS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    SLEEPY_FINISHED.fetch_add(1, Ordering::SeqCst);
}

/// A handler past its `timeout` is cut off; the attempt fails with "timed out after 200ms"
/// and follows the retry policy: 2 attempts, then the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_handler_is_retried_then_dead_lettered() {
    let env = TestEnv::start("outcomes_timeout").await;
    let handle = spawn_runtime(&env.client, &[Sleepy::NAME], 2).await;
    let produced = Instant::now();
    let id = env.client.produce(Sleepy { n: 1 }).await.expect("produce");

    env.wait_for_dead_letters::<Sleepy>(1).await;
    let took = produced.elapsed();
    shutdown(handle).await;

    assert_eq!(SLEEPY_CALLS.load(Ordering::SeqCst), 2, "calls");
    assert_eq!(
        SLEEPY_FINISHED.load(Ordering::SeqCst),
        0,
        "a handler ran to its end despite the 200 ms timeout"
    );
    // two 200 ms attempts and a 50 ms retry delay, far less than one 2 s sleep
    assert!(
        took < Duration::from_millis(1500),
        "dead-lettered only after {took:?}: the timeout did not cut the handler off"
    );
    let dead = only_dead_letter::<Sleepy>(&env).await;
    assert_eq!(dead.id, id);
    assert_eq!(dead.reason, "retries exhausted");
    assert!(
        dead.error.contains("timed out after 200ms"),
        "error {:?}",
        dead.error
    );
    assert_eq!(dead.attempts, 2);
    let between = dead
        .last_failed_at
        .duration_since(dead.first_failed_at)
        .unwrap_or_default();
    assert!(
        between >= Duration::from_millis(250),
        "first and last failure {between:?} apart; a 50 ms retry delay and a 200 ms attempt lie between them"
    );
    assert_only_dead(&env, Sleepy::NAME).await;
}

// ---------------------------------------------------------------------------------------
// panic

#[topic("outcomes_panic", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Explosive {
    n: u32,
    explode: bool,
}

static EXPLOSIVE_CALLS: AtomicU32 = AtomicU32::new(0);
static EXPLOSIVE_DONE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn explosive(msg: Explosive) {
    EXPLOSIVE_CALLS.fetch_add(1, Ordering::SeqCst);
    if msg.explode {
        panic!("kaboom {}", msg.n);
    }
    EXPLOSIVE_DONE.lock().unwrap().push(msg.n);
}

/// A panic fails the attempt with the panic message; the runtime (with a single worker, so
/// the worker slot must have been given back) goes on handling the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_dead_letters_with_its_message_and_the_runtime_goes_on() {
    let env = TestEnv::start("outcomes_panic").await;
    let handle = spawn_runtime(&env.client, &[Explosive::NAME], 1).await;
    let id = env
        .client
        .produce(Explosive {
            n: 41,
            explode: true,
        })
        .await
        .expect("produce");
    env.wait_for_dead_letters::<Explosive>(1).await;

    env.client
        .produce(Explosive {
            n: 42,
            explode: false,
        })
        .await
        .expect("produce");
    wait_for("the message after the panic to complete", || {
        !EXPLOSIVE_DONE.lock().unwrap().is_empty()
    })
    .await;
    let env_ref = &env;
    let completed = poll(PATIENCE, || async move {
        env_ref.stat(Explosive::NAME, "completed").await == 1
    })
    .await;
    assert!(completed, "not acked:\n{}", env.describe().await);
    shutdown(handle).await;

    assert_eq!(*EXPLOSIVE_DONE.lock().unwrap(), [42]);
    assert_eq!(EXPLOSIVE_CALLS.load(Ordering::SeqCst), 2);
    let dead = only_dead_letter::<Explosive>(&env).await;
    assert_eq!(dead.id, id);
    assert!(
        dead.error.contains("handler panicked: kaboom 41"),
        "error {:?}",
        dead.error
    );
    assert_eq!(dead.reason, "retries exhausted");
    assert_eq!(dead.attempts, 1);
    assert_only_dead(&env, Explosive::NAME).await;
}

// ---------------------------------------------------------------------------------------
// decode error

/// What the handler expects on `outcomes_decode`.
#[topic("outcomes_decode", retries = 3, retry_delays = ["10s"])]
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    order_id: String,
    amount: u64,
}

/// Another program's idea of `outcomes_decode`: same topic name, other fields. No handler.
#[topic("outcomes_decode")]
#[derive(Debug, Serialize, Deserialize)]
struct LegacyOrder {
    sku: Vec<u32>,
    note: String,
}

static ORDER_CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[handler]
async fn on_order(order: Order) {
    ORDER_CALLS.lock().unwrap().push(order.order_id);
}

/// A payload that does not decode is dead-lettered at once (no retries, handler never
/// called) with reason "decode error" and the raw JSON intact; the runtime goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_payload_is_dead_lettered_at_once_with_its_raw_json() {
    let env = TestEnv::start("outcomes_decode").await;
    let handle = spawn_runtime(&env.client, &[Order::NAME], 2).await;
    let legacy = LegacyOrder {
        sku: vec![3, 1, 4],
        note: "gift | wrap \"it\"".into(),
    };
    let raw_json = serde_json::to_string(&legacy).unwrap();
    let bad_id = env.client.produce(legacy).await.expect("produce legacy");

    env.wait_for_dead_letters::<Order>(1).await;
    env.client
        .produce(Order {
            order_id: "ORD-7".into(),
            amount: 12,
        })
        .await
        .expect("produce");
    wait_for("the good order to be handled", || {
        !ORDER_CALLS.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(
        *ORDER_CALLS.lock().unwrap(),
        ["ORD-7"],
        "the handler must only see the good order"
    );
    let dead = only_dead_letter::<Order>(&env).await;
    assert_eq!(dead.id, bad_id);
    assert_eq!(dead.attempts, 1, "retried a payload that can never decode");
    assert_eq!(dead.reason, "decode error");
    assert!(
        dead.error.starts_with("decode error:"),
        "error {:?}",
        dead.error
    );
    assert_eq!(
        dead.payload, raw_json,
        "the raw payload must be kept intact"
    );
    // the other program's type reads it back
    let back: LegacyOrder = dead
        .message::<LegacyOrder>()
        .expect("decode as LegacyOrder");
    assert_eq!(back.sku, [3, 1, 4]);
    assert!(dead.message::<Order>().is_err());
    assert_only_dead(&env, Order::NAME).await;
    assert_eq!(env.stat(Order::NAME, "completed").await, 1);
}

// ---------------------------------------------------------------------------------------
// HandlerError::retry_after

#[topic("outcomes_retry_after", retries = 3, retry_delays = ["10s"])]
#[derive(Debug, Serialize, Deserialize)]
struct Later {
    n: u32,
}

static LATER_CALLS: Mutex<Vec<(Instant, u32)>> = Mutex::new(Vec::new());

#[handler]
async fn later(_msg: Later, ctx: Context) -> Result<(), HandlerError> {
    LATER_CALLS
        .lock()
        .unwrap()
        .push((Instant::now(), ctx.attempt()));
    if ctx.attempt() == 1 {
        return Err(HandlerError::retry_after(
            Duration::from_millis(300),
            "later",
        ));
    }
    Ok(())
}

/// `retry_after(300ms)` overrides the topic's 10 s retry delay: the second call comes
/// ≥ 300 ms (and well under 10 s) after the first; then nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_uses_the_handlers_delay_not_the_topics() {
    let env = TestEnv::start("outcomes_retry_after").await;
    let handle = spawn_runtime(&env.client, &[Later::NAME], 2).await;
    env.client.produce(Later { n: 1 }).await.expect("produce");

    let second_call = poll(Duration::from_secs(3), || {
        std::future::ready(LATER_CALLS.lock().unwrap().len() >= 2)
    })
    .await;
    assert!(
        second_call,
        "no second call within 3 s (the topic's retry delay is 10 s):\n{}",
        env.describe().await
    );
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    let calls = LATER_CALLS.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "called again after success");
    assert_eq!((calls[0].1, calls[1].1), (1, 2), "ctx.attempt()");
    let gap = calls[1].0 - calls[0].0;
    eprintln!("retry_after(300ms): second call {gap:?} after the first");
    assert!(
        gap >= Duration::from_millis(300),
        "retried {gap:?} after the first call, before the 300 ms asked for"
    );
    assert!(gap < Duration::from_secs(3), "retried only after {gap:?}");
    let stats = env.stats(Later::NAME).await;
    assert_eq!(stats.get("retried"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("completed"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("dead"), None, "{stats:?}");
    assert!(env.message_keys().await.is_empty());
}

// ---------------------------------------------------------------------------------------
// HandlerError::dead_letter

#[topic("outcomes_dead_letter", retries = 5, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Invalid {
    n: u32,
}

static INVALID_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn invalid(_msg: Invalid) -> Result<(), HandlerError> {
    INVALID_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::dead_letter("invalid"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_error_skips_every_retry() {
    let env = TestEnv::start("outcomes_dead_letter").await;
    let handle = spawn_runtime(&env.client, &[Invalid::NAME], 2).await;
    let id = env.client.produce(Invalid { n: 1 }).await.expect("produce");
    env.wait_for_dead_letters::<Invalid>(1).await;
    // several 50 ms retry delays: a wrong retry would show
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(INVALID_CALLS.load(Ordering::SeqCst), 1, "calls");
    let dead = only_dead_letter::<Invalid>(&env).await;
    assert_eq!(dead.id, id);
    assert_eq!(dead.reason, "dead-lettered by handler");
    assert_eq!(dead.error, "invalid");
    assert_eq!(dead.attempts, 1);
    assert_only_dead(&env, Invalid::NAME).await;
    assert_eq!(env.stat(Invalid::NAME, "retried").await, 0);
}

// ---------------------------------------------------------------------------------------
// HandlerError::drop

#[topic("outcomes_drop", retries = 5, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Unwanted {
    n: u32,
}

static UNWANTED_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn unwanted(_msg: Unwanted) -> Result<(), HandlerError> {
    UNWANTED_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::drop("unwanted"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_error_removes_the_message_and_counts_it() {
    let env = TestEnv::start("outcomes_drop").await;
    let handle = spawn_runtime(&env.client, &[Unwanted::NAME], 2).await;
    env.client
        .produce(Unwanted { n: 1 })
        .await
        .expect("produce");
    wait_for("1 call", || UNWANTED_CALLS.load(Ordering::SeqCst) >= 1).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(UNWANTED_CALLS.load(Ordering::SeqCst), 1, "calls");
    let dead = env.client.dlq::<Unwanted>().count().await.expect("count");
    assert_eq!(dead, 0, "a dropped message must not be dead-lettered");
    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let stats = env.stats(Unwanted::NAME).await;
    assert_eq!(stats.get("dropped"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("completed"), None, "{stats:?}");
    assert_eq!(stats.get("retried"), None, "{stats:?}");
    assert_eq!(stats.get("dead"), None, "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// plain errors: anyhow and std::io

#[topic("outcomes_anyhow", retries = 1, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    order: u32,
}

static CHARGE_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn charge(msg: Charge) -> anyhow::Result<()> {
    let call = CHARGE_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    let root: anyhow::Result<()> = Err(anyhow::anyhow!("card declined (call {call})"));
    anyhow::Context::context(root, format!("charging order {}", msg.order))
}

#[topic("outcomes_io", retries = 1, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Write {
    file: String,
}

static WRITE_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn write(msg: Write) -> Result<(), std::io::Error> {
    let call = WRITE_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    Err(std::io::Error::other(format!(
        "disk full writing {} (call {call})",
        msg.file
    )))
}

/// `anyhow::Error` and `std::io::Error` are plain failures: retried per the topic, then
/// dead-lettered with "retries exhausted" and the last error's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyhow_and_io_errors_follow_the_retry_policy() {
    let env = TestEnv::start("outcomes_plain").await;
    let handle = spawn_runtime(&env.client, &[Charge::NAME, Write::NAME], 2).await;
    env.client
        .produce(Charge { order: 7 })
        .await
        .expect("produce");
    env.client
        .produce(Write {
            file: "a.log".into(),
        })
        .await
        .expect("produce");
    env.wait_for_dead_letters::<Charge>(1).await;
    env.wait_for_dead_letters::<Write>(1).await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(CHARGE_CALLS.load(Ordering::SeqCst), 2, "anyhow calls");
    assert_eq!(WRITE_CALLS.load(Ordering::SeqCst), 2, "io calls");

    let dead = only_dead_letter::<Charge>(&env).await;
    assert_eq!(dead.reason, "retries exhausted");
    assert_eq!(dead.attempts, 2);
    assert!(
        dead.error.contains("charging order 7") && dead.error.contains("card declined (call 2)"),
        "the anyhow error and its context must be kept, got {:?}",
        dead.error
    );
    assert_only_dead(&env, Charge::NAME).await;

    let dead = only_dead_letter::<Write>(&env).await;
    assert_eq!(dead.reason, "retries exhausted");
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.error, "disk full writing a.log (call 2)");
    assert_only_dead(&env, Write::NAME).await;
    for topic in [Charge::NAME, Write::NAME] {
        assert_eq!(env.stat(topic, "retried").await, 1, "{topic}");
        assert_eq!(env.stat(topic, "failed").await, 2, "{topic}");
        assert_eq!(env.stat(topic, "dead").await, 1, "{topic}");
    }
}

// ---------------------------------------------------------------------------------------
// enable_dead_letter = false

#[topic("outcomes_no_dlq", retries = 1, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Doomed {
    n: u32,
}

static DOOMED_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn doomed(_msg: Doomed) -> Result<(), HandlerError> {
    DOOMED_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::msg("always fails"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dead_letters_an_exhausted_message_is_deleted_and_counted_dropped() {
    let env = TestEnv::start("outcomes_no_dlq").await;
    let client = env
        .client_with(|c| Config {
            enable_dead_letter: false,
            ..c
        })
        .await;
    let handle = spawn_runtime(&client, &[Doomed::NAME], 2).await;
    client.produce(Doomed { n: 1 }).await.expect("produce");
    wait_for("2 calls", || DOOMED_CALLS.load(Ordering::SeqCst) >= 2).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(DOOMED_CALLS.load(Ordering::SeqCst), 2, "calls");
    assert_eq!(client.dlq::<Doomed>().count().await.expect("count"), 0);
    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let stats = env.stats(Doomed::NAME).await;
    assert_eq!(stats.get("dropped"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("dead"), None, "{stats:?}");
    assert_eq!(stats.get("retried"), Some(&1), "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// lease token: a consumer whose lease was taken over cannot settle the message

#[topic("outcomes_stale_ack")]
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    n: u32,
}

static HELD_STARTED: AtomicBool = AtomicBool::new(false);
static HELD_RELEASE: AtomicBool = AtomicBool::new(false);
static HELD_RETURNED: AtomicBool = AtomicBool::new(false);

#[handler]
async fn held(_msg: Held) {
    HELD_STARTED.store(true, Ordering::SeqCst);
    wait_released(&HELD_RELEASE).await;
    HELD_RETURNED.store(true, Ordering::SeqCst);
}

#[topic("outcomes_stale_fail", retries = 3, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct HeldFailing {
    n: u32,
}

static FAILING_STARTED: AtomicBool = AtomicBool::new(false);
static FAILING_RELEASE: AtomicBool = AtomicBool::new(false);
static FAILING_RETURNED: AtomicBool = AtomicBool::new(false);

#[handler]
async fn held_failing(_msg: HeldFailing) -> Result<(), HandlerError> {
    FAILING_STARTED.store(true, Ordering::SeqCst);
    wait_released(&FAILING_RELEASE).await;
    FAILING_RETURNED.store(true, Ordering::SeqCst);
    Err(HandlerError::dead_letter("too late to say"))
}

/// Blocks the handler until the test sets `release` (bounded, so a broken test ends).
async fn wait_released(release: &AtomicBool) {
    let deadline = Instant::now() + PATIENCE;
    while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What Redis holds about one message, to compare before and after a stale settlement.
#[derive(Debug, PartialEq)]
struct MessageState {
    envelope: Option<Vec<u8>>,
    /// From `attempts` while the message waits, from its lease while in flight.
    attempts: Option<String>,
    /// The `inflight` member `<id>|<token>|<attempt>` of its current lease.
    lease: Option<String>,
    inflight_deadline: Option<f64>,
    error_record: Option<String>,
    dead: Option<f64>,
    delayed: Option<f64>,
    pending: usize,
}

async fn message_state(env: &TestEnv, topic: &str, id: &str) -> MessageState {
    let k = env.keys(topic);
    let mut pending = 0;
    for key in &k.pending {
        pending += env.len(key).await;
    }
    let (lease, inflight_deadline) = env
        .lease(topic, id)
        .await
        .map_or((None, None), |(member, deadline)| {
            (Some(member), Some(deadline))
        });
    let waiting_attempts: Option<String> =
        raw(env, redis::cmd("HGET").arg(&k.attempts).arg(id)).await;
    MessageState {
        envelope: raw(env, redis::cmd("HGET").arg(&k.messages).arg(id)).await,
        attempts: waiting_attempts.or_else(|| {
            lease
                .as_deref()
                .and_then(|l| l.rsplit('|').next())
                .map(str::to_owned)
        }),
        lease,
        inflight_deadline,
        error_record: raw(env, redis::cmd("HGET").arg(&k.errors).arg(id)).await,
        dead: raw(env, redis::cmd("ZSCORE").arg(&k.dead).arg(id)).await,
        delayed: raw(env, redis::cmd("ZSCORE").arg(&k.delayed).arg(id)).await,
        pending,
    }
}

/// Simulates another consumer taking the message over: its lease (the token in it is
/// unique per delivery) changes while the first handler still runs.
async fn take_over(env: &TestEnv, topic: &str, id: &str) -> MessageState {
    let k = env.keys(topic);
    let before = message_state(env, topic, id).await;
    assert_eq!(
        before.attempts.as_deref(),
        Some("1"),
        "leased once: {before:?}"
    );
    assert!(before.inflight_deadline.is_some(), "leased: {before:?}");
    assert!(before.envelope.is_some(), "stored: {before:?}");
    let first = before.lease.clone().expect("a lease while in flight");
    let (rest, attempt) = first.rsplit_once('|').expect("<id>|<token>|<attempt>");
    let other = format!("{rest}0|{attempt}");
    let mut swap = redis::pipe();
    swap.atomic()
        .cmd("ZREM")
        .arg(&k.inflight)
        .arg(&first)
        .ignore()
        .cmd("ZADD")
        .arg(&k.inflight)
        .arg(before.inflight_deadline.expect("a deadline"))
        .arg(other)
        .ignore();
    let mut redis = env.redis.clone();
    let () = swap.query_async(&mut redis).await.expect("swap the lease");
    message_state(env, topic, id).await
}

/// Ack with a lease token that is no longer current changes nothing in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_with_a_taken_over_lease_changes_nothing() {
    let env = TestEnv::start("outcomes_stale_ack").await;
    let handle = spawn_runtime(&env.client, &[Held::NAME], 2).await;
    let id = env.client.produce(Held { n: 1 }).await.expect("produce");
    wait_for("the handler to start", || {
        HELD_STARTED.load(Ordering::SeqCst)
    })
    .await;

    let taken_over = take_over(&env, Held::NAME, id.as_str()).await;
    HELD_RELEASE.store(true, Ordering::SeqCst);
    wait_for("the handler to return", || {
        HELD_RETURNED.load(Ordering::SeqCst)
    })
    .await;
    // A graceful shutdown writes every finished handler's result before it returns.
    shutdown(handle).await;

    let after = message_state(&env, Held::NAME, id.as_str()).await;
    assert_eq!(
        after, taken_over,
        "a stale ack changed the message's state in Redis"
    );
    assert!(
        after.inflight_deadline.is_some(),
        "left inflight: {after:?}"
    );
    assert!(after.envelope.is_some(), "envelope kept: {after:?}");
    let stats: HashMap<String, i64> = env.stats(Held::NAME).await;
    assert_eq!(stats.get("completed"), None, "counted completed: {stats:?}");
}

/// A failure (here: dead-letter) with a stale lease token changes nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_with_a_taken_over_lease_changes_nothing() {
    let env = TestEnv::start("outcomes_stale_fail").await;
    let handle = spawn_runtime(&env.client, &[HeldFailing::NAME], 2).await;
    let id = env
        .client
        .produce(HeldFailing { n: 1 })
        .await
        .expect("produce");
    wait_for("the handler to start", || {
        FAILING_STARTED.load(Ordering::SeqCst)
    })
    .await;

    let taken_over = take_over(&env, HeldFailing::NAME, id.as_str()).await;
    FAILING_RELEASE.store(true, Ordering::SeqCst);
    wait_for("the handler to return", || {
        FAILING_RETURNED.load(Ordering::SeqCst)
    })
    .await;
    shutdown(handle).await;

    let after = message_state(&env, HeldFailing::NAME, id.as_str()).await;
    assert_eq!(
        after, taken_over,
        "a stale failure changed the message's state in Redis"
    );
    assert_eq!(after.dead, None);
    assert_eq!(after.error_record, None);
    let stats = env.stats(HeldFailing::NAME).await;
    for counter in ["failed", "dead", "retried", "dropped"] {
        assert_eq!(stats.get(counter), None, "counted {counter}: {stats:?}");
    }
}
