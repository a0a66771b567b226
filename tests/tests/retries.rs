//! `retries = N` means N retries after the first attempt (N + 1 calls); a message that
//! keeps failing ends in the dead-letter queue with the handler's own last error and the
//! attempt count (MX-RMQ gives N calls and overwrites the error; LESSONS.md §1).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("retry_flaky", retries = 2, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Flaky {
    order: String,
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);
static FLAKY_ATTEMPTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn flaky(msg: Flaky, ctx: Context) -> Result<(), HandlerError> {
    if msg.order != "ORD-1" {
        return Err(HandlerError::dead_letter(format!("wrong payload {msg:?}")));
    }
    FLAKY_ATTEMPTS.lock().unwrap().push(ctx.attempt());
    let call = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if call <= 2 {
        return Err(HandlerError::new(format!("flaky failure #{call}")));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_twice_then_succeeding_is_called_three_times_and_leaves_nothing() {
    let env = TestEnv::start("retry_flaky").await;
    let handle = spawn_runtime(&env.client, &[Flaky::NAME], 2).await;
    env.client
        .produce(Flaky {
            order: "ORD-1".into(),
        })
        .await
        .expect("produce");

    wait_for("3 calls", || FLAKY_CALLS.load(Ordering::SeqCst) >= 3).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(
        FLAKY_CALLS.load(Ordering::SeqCst),
        3,
        "called again after success"
    );
    assert_eq!(*FLAKY_ATTEMPTS.lock().unwrap(), [1, 2, 3], "ctx.attempt()");
    let dead = env
        .client
        .dead_letters::<Flaky>()
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");
    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[topic("retry_doomed", retries = 2, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Doomed {
    order: String,
}

static DOOMED_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn doomed(msg: Doomed) -> anyhow::Result<()> {
    let call = DOOMED_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    anyhow::bail!("card declined for {} (call {call})", msg.order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_is_called_three_times_then_dead_lettered_with_the_real_error() {
    let env = TestEnv::start("retry_doomed").await;
    let keys = env.keys(Doomed::NAME);
    let handle = spawn_runtime(&env.client, &[Doomed::NAME], 2).await;
    let before = SystemTime::now();
    let id = env
        .client
        .produce(Doomed {
            order: "ORD-9".into(),
        })
        .await
        .expect("produce");

    wait_for("3 calls", || DOOMED_CALLS.load(Ordering::SeqCst) >= 3).await;
    env.wait_for_dead_letters::<Doomed>(1).await;
    // Nothing may deliver it again: wait several retry delays.
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    let after = SystemTime::now();

    assert_eq!(DOOMED_CALLS.load(Ordering::SeqCst), 3, "calls");
    let dead = env
        .client
        .dead_letters::<Doomed>()
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let entry = &dead[0];
    assert_eq!(entry.id, id);
    assert_eq!(entry.attempts, 3);
    assert!(
        entry.error.contains("card declined for ORD-9 (call 3)"),
        "the DLQ must keep the handler's last error, got {:?}",
        entry.error
    );
    assert!(
        entry.payload.contains("ORD-9"),
        "payload {:?}",
        entry.payload
    );
    assert_eq!(entry.priority, Priority::Normal);
    let window = (before - Duration::from_millis(5))..=(after + Duration::from_millis(5));
    for (name, t) in [
        ("first_failed_at", entry.first_failed_at),
        ("last_failed_at", entry.last_failed_at),
        ("dead_at", entry.dead_at),
    ] {
        assert!(window.contains(&t), "{name} {t:?} outside the test's run");
    }
    assert!(entry.first_failed_at <= entry.last_failed_at);
    assert!(entry.last_failed_at <= entry.dead_at);
    assert!(
        entry
            .last_failed_at
            .duration_since(entry.first_failed_at)
            .unwrap_or_default()
            >= Duration::from_millis(100),
        "two 50 ms retry delays lie between the first and the last failure"
    );

    // Dead, not pending, delayed or leased. (Its envelope, attempt count and error stay in
    // `m`, `attempts` and `errors`: they are the dead letter's record.)
    for key in keys.pending.iter().chain([&keys.delayed, &keys.inflight]) {
        assert_eq!(env.len(key).await, 0, "{key}:\n{}", env.describe().await);
    }
    assert_eq!(env.len(&keys.dead).await, 1);
}

#[topic("retry_hopeless", retries = 5, retry_delays = ["50ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Hopeless {
    amount: i64,
}

static HOPELESS_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn hopeless(msg: Hopeless) -> Result<(), HandlerError> {
    HOPELESS_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::dead_letter(format!(
        "negative amount {}",
        msg.amount
    )))
}

/// `HandlerError::dead_letter` skips the remaining retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_error_skips_the_retries() {
    let env = TestEnv::start("retry_hopeless").await;
    let handle = spawn_runtime(&env.client, &[Hopeless::NAME], 2).await;
    env.client
        .produce(Hopeless { amount: -5 })
        .await
        .expect("produce");
    wait_for("1 call", || HOPELESS_CALLS.load(Ordering::SeqCst) >= 1).await;
    env.wait_for_dead_letters::<Hopeless>(1).await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(HOPELESS_CALLS.load(Ordering::SeqCst), 1);
    let dead = env
        .client
        .dead_letters::<Hopeless>()
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].error.contains("negative amount -5"),
        "{:?}",
        dead[0].error
    );
}

#[topic("retry_panics", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Panics {
    n: u32,
}

static PANIC_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn panics(msg: Panics) {
    PANIC_CALLS.fetch_add(1, Ordering::SeqCst);
    panic!("index {} out of range", msg.n);
}

/// A panicking handler is a failed attempt (the runtime survives it); with `retries = 0`
/// the message goes to the DLQ after one call, keeping the panic message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_failed_attempt() {
    let env = TestEnv::start("retry_panics").await;
    let handle = spawn_runtime(&env.client, &[Panics::NAME], 2).await;
    env.client.produce(Panics { n: 7 }).await.expect("produce");
    env.client.produce(Panics { n: 8 }).await.expect("produce");
    wait_for("2 calls", || PANIC_CALLS.load(Ordering::SeqCst) >= 2).await;
    env.wait_for_dead_letters::<Panics>(2).await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(PANIC_CALLS.load(Ordering::SeqCst), 2);
    let dead = env
        .client
        .dead_letters::<Panics>()
        .await
        .expect("dead letters");
    let mut errors: Vec<&str> = dead.iter().map(|d| d.error.as_str()).collect();
    errors.sort();
    assert!(errors[0].contains("index 7 out of range"), "{errors:?}");
    assert!(errors[1].contains("index 8 out of range"), "{errors:?}");
    assert!(dead.iter().all(|d| d.attempts == 1));
    // newest first
    assert!(dead[0].dead_at >= dead[1].dead_at);
}
