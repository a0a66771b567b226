//! When Redis goes away: producers get a clear error within their time limit (or retry and
//! succeed with `produce_retries`), and a graceful shutdown never hangs.

mod common;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("down.work")]
#[derive(Debug, Serialize, Deserialize)]
struct Work {
    sleep_ms: u64,
}

static STARTED: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn work(job: Work) {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_while_redis_is_down_fails_clearly_and_in_time() {
    let mut env = TestEnv::start_configured("down_produce", &[], |c| Config {
        command_timeout: Duration::from_millis(500),
        ..c
    })
    .await;
    env.client.produce(Work { sleep_ms: 0 }).await.unwrap();
    env.server.kill();

    let started = Instant::now();
    let err = env
        .client
        .produce(Work { sleep_ms: 0 })
        .await
        .expect_err("produce succeeded with Redis down");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the error took {took:?}");
    let text = err.to_string();
    eprintln!("produce with Redis down: {text}");
    assert!(
        text.contains(&env.server.url()) && text.contains("is redis-server running"),
        "unclear error: {text}"
    );
    assert!(
        matches!(err, rmq_runtime::Error::Disconnected { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_retries_ride_out_a_short_outage_without_duplicates() {
    let mut env = TestEnv::start_configured("down_retry", &[], |c| Config {
        command_timeout: Duration::from_millis(500),
        produce_retries: 8,
        ..c
    })
    .await;
    env.server.kill();
    let restart = {
        let started = Instant::now();
        // the outage lasts ~400 ms; the produce below is retried through it
        let produce = env.client.send(Work { sleep_ms: 0 }).id("during-outage");
        let pending = tokio::spawn(produce.into_future());
        tokio::time::sleep(Duration::from_millis(400)).await;
        env.server.restart().expect("restart redis-server");
        let sent = within("the retried produce", PATIENCE, pending)
            .await
            .expect("join")
            .expect("produce with retries failed");
        (sent, started.elapsed())
    };
    let (sent, took) = restart;
    eprintln!("produce retried through a 400 ms outage in {took:?}");
    assert_eq!(sent.id.as_str(), "during-outage");
    env.reconnect_raw().await;
    let keys = env.keys(Work::NAME);
    // stored exactly once (the server has no persistence: only the retry can have stored it)
    assert_eq!(
        env.len(&keys.pending[1]).await,
        1,
        "{}",
        env.describe().await
    );
    assert_eq!(env.len(&keys.messages).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_its_budget_when_redis_is_gone() {
    let mut env = TestEnv::start_configured("down_shutdown", &[], |c| Config {
        shutdown_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_millis(300),
        ..c
    })
    .await;
    let before = STARTED.load(Ordering::SeqCst);
    env.client.produce(Work { sleep_ms: 200 }).await.unwrap();
    env.client.produce(Work { sleep_ms: 10_000 }).await.unwrap();
    let runtime = spawn_runtime(&env.client, &[Work::NAME], 2).await;
    wait_for("both handlers to start", || {
        STARTED.load(Ordering::SeqCst) >= before + 2
    })
    .await;
    env.server.kill();

    let started = Instant::now();
    within(
        "shutdown with Redis down",
        Duration::from_secs(5),
        runtime.shutdown(),
    )
    .await
    .expect("shutdown");
    let took = started.elapsed();
    eprintln!("shutdown with Redis down took {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?} with a 500 ms budget"
    );
}

/// A produce whose first try reached Redis but whose reply came too late is retried; the
/// retry must find the messages the first try stored (the first try of generated ids skips
/// that lookup), store nothing twice, and not call the caller's own message a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_produce_whose_first_try_was_stored_is_stored_once_and_no_duplicate() {
    let env = TestEnv::start_configured("down_late", &[], |c| Config {
        command_timeout: Duration::from_millis(300),
        produce_retries: 3,
        ..c
    })
    .await;
    // writes wait 500 ms: the first try times out at 300 ms, the retry leaves at 400 ms,
    // and at 500 ms Redis runs both, in that order
    let mut raw = env.redis.clone();
    let calls_before = env.command_calls("evalsha").await;
    pause_writes(&mut raw, 500).await;
    let sent = env
        .client
        .produce_batch((0..3).map(|i| Work { sleep_ms: i }).collect::<Vec<_>>())
        .await
        .expect("the retried produce");
    assert_eq!(sent.len(), 3);
    // Redis ran the first try and at least one retry
    let calls = env.command_calls("evalsha").await - calls_before;
    assert!(calls >= 2, "{calls} produce calls: no retry");
    let keys = env.keys(Work::NAME);
    assert_eq!(
        env.len(&keys.pending[1]).await,
        3,
        "{}",
        env.describe().await
    );
    assert_eq!(env.len(&keys.messages).await, 3);
    assert_eq!(env.stat(Work::NAME, "produced").await, 3);

    // one message the same way: stored once, and not reported as a duplicate of itself
    let calls_before = env.command_calls("evalsha").await;
    pause_writes(&mut raw, 500).await;
    let sent = env
        .client
        .send(Work { sleep_ms: 3 })
        .await
        .expect("the retried send");
    let calls = env.command_calls("evalsha").await - calls_before;
    assert!(calls >= 2, "{calls} produce calls: no retry");
    assert!(!sent.duplicate, "{sent:?}");
    assert_eq!(env.len(&keys.pending[1]).await, 4);
    assert_eq!(env.stat(Work::NAME, "produced").await, 4);

    // a batch now that the client knows Redis' clock goes by MULTI (HSET, LPUSH, batch.lua);
    // its retry goes through produce.lua, which finds the ids the MULTI stored
    let (calls_before, multis_before) = (
        env.command_calls("evalsha").await,
        env.command_calls("exec").await,
    );
    pause_writes(&mut raw, 500).await;
    let sent = env
        .client
        .produce_batch((0..3).map(|i| Work { sleep_ms: i }).collect::<Vec<_>>())
        .await
        .expect("the retried batch");
    assert_eq!(sent.len(), 3);
    assert_eq!(
        env.command_calls("exec").await - multis_before,
        1,
        "no MULTI"
    );
    assert!(
        env.command_calls("evalsha").await - calls_before >= 2,
        "no retry"
    );
    assert_eq!(
        env.len(&keys.pending[1]).await,
        7,
        "{}",
        env.describe().await
    );
    assert_eq!(env.len(&keys.messages).await, 7);
    assert_eq!(env.stat(Work::NAME, "produced").await, 7);
}
