//! Graceful shutdown lets running handlers finish and acknowledges them; it neither cuts
//! them off nor leaves their messages leased (MX-RMQ cancels handlers mid-run and leaves
//! its local buffer in `processing`; LESSONS.md §1).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("shutdown_slow")]
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

static SLOW_STARTED: AtomicU32 = AtomicU32::new(0);
static SLOW_FINISHED: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn slow(_msg: Slow) {
    SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    SLOW_FINISHED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_handlers_and_acks_them() {
    let env = TestEnv::start("shutdown_running").await;
    let keys = env.keys(Slow::NAME);
    for n in 0..3 {
        env.client.produce(Slow { n }).await.expect("produce");
    }
    let handle = spawn_runtime(&env.client, &[Slow::NAME], 3).await;
    wait_for("3 running handlers", || {
        SLOW_STARTED.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(SLOW_FINISHED.load(Ordering::SeqCst), 0);
    assert_eq!(env.in_flight(Slow::NAME).await, 3, "leased while running");

    let asked = Instant::now();
    shutdown(handle).await;
    let took = asked.elapsed();

    assert_eq!(
        SLOW_FINISHED.load(Ordering::SeqCst),
        3,
        "shutdown returned after {took:?}, before its handlers finished"
    );
    assert_eq!(SLOW_STARTED.load(Ordering::SeqCst), 3);
    // acked, not left leased
    for key in [&keys.inflight, &keys.messages, &keys.attempts] {
        assert_eq!(env.len(key).await, 0, "{key}:\n{}", env.describe().await);
    }
    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");

    // counted once: a new runtime finds nothing to redo
    let handle = spawn_runtime(&env.client, &[Slow::NAME], 3).await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    assert_eq!(SLOW_STARTED.load(Ordering::SeqCst), 3, "delivered again");
}

#[topic("shutdown_backlog")]
#[derive(Debug, Serialize, Deserialize)]
struct Backlog {
    n: u32,
}

static BACKLOG_STARTED: AtomicU32 = AtomicU32::new(0);
static BACKLOG_FINISHED: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn backlog(_msg: Backlog) {
    BACKLOG_STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    BACKLOG_FINISHED.fetch_add(1, Ordering::SeqCst);
}

/// More messages than workers: those not started when shutdown is asked stay in Redis,
/// ready (not leased to a runtime that is gone), and a later runtime handles each of them
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_started_stay_ready_for_the_next_runtime() {
    let env = TestEnv::start("shutdown_backlog").await;
    let keys = env.keys(Backlog::NAME);
    env.client
        .produce_batch((0..8).map(|n| Backlog { n }).collect::<Vec<_>>())
        .await
        .expect("produce");
    let handle = spawn_runtime(&env.client, &[Backlog::NAME], 2).await;
    wait_for("2 running handlers", || {
        BACKLOG_STARTED.load(Ordering::SeqCst) >= 2
    })
    .await;
    shutdown(handle).await;

    let finished = BACKLOG_FINISHED.load(Ordering::SeqCst);
    assert_eq!(
        finished,
        BACKLOG_STARTED.load(Ordering::SeqCst),
        "cut off mid-run"
    );
    assert!(
        finished < 8,
        "shutdown drained the whole backlog ({finished})"
    );
    let state = env.describe().await;
    assert_eq!(
        env.in_flight(Backlog::NAME).await,
        0,
        "still leased:\n{state}"
    );
    assert_eq!(
        env.len(&keys.messages).await,
        8 - finished as usize,
        "every unfinished message is still stored:\n{state}"
    );
    assert_eq!(
        env.len(&keys.pending[1]).await,
        8 - finished as usize,
        "every unfinished message is ready again:\n{state}"
    );

    let handle = spawn_runtime(&env.client, &[Backlog::NAME], 2).await;
    wait_for("all 8 finished", || {
        BACKLOG_FINISHED.load(Ordering::SeqCst) >= 8
    })
    .await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    assert_eq!(
        BACKLOG_STARTED.load(Ordering::SeqCst),
        8,
        "a message ran twice"
    );
}

#[topic("shutdown_idle")]
#[derive(Debug, Serialize, Deserialize)]
struct Idle {
    n: u32,
}

#[handler]
async fn idle(_msg: Idle) {}

/// An idle runtime (blocked waiting for work) stops promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runtime_stops_promptly() {
    let env = TestEnv::start("shutdown_idle").await;
    let handle = spawn_runtime(&env.client, &[Idle::NAME], 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    within("idle shutdown", Duration::from_secs(2), handle.shutdown())
        .await
        .expect("shutdown");
    eprintln!("idle shutdown took {:?}", asked.elapsed());
}
