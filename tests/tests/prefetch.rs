//! The prefetch buffer (`task_queue_size`) adapts to handler speed: handlers slower than a
//! round trip get no buffer, so a consumer never sits on messages another could run; fast
//! ones get one, never deeper than `task_queue_size` (beside the free workers' messages),
//! even with two round trips in flight.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("prefetch.slow")]
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

#[topic("prefetch.fast")]
#[derive(Debug, Serialize, Deserialize)]
struct Fast {
    n: u32,
}

static FAST_DONE: AtomicUsize = AtomicUsize::new(0);

#[handler]
async fn fast(_job: Fast) {
    FAST_DONE.fetch_add(1, Ordering::SeqCst);
}

#[handler]
async fn slow(_job: Slow) -> Result<(), HandlerError> {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_leave_the_backlog_to_other_consumers() {
    let env = TestEnv::start("prefetch_slow").await;
    let c = &env.client;
    c.produce_batch((0..12).map(|n| Slow { n })).await.unwrap();
    // a prefetch allowance far above the backlog
    let consumer = env
        .client_with(|mut config| {
            config.task_queue_size = 1000;
            config
        })
        .await;
    let runtime = spawn_runtime(&consumer, &[Slow::NAME], 2).await;
    let mut most_leased = 0;
    while c.stats::<Slow>().await.unwrap().counter("completed") < 12 {
        let s = c.stats::<Slow>().await.unwrap();
        most_leased = most_leased.max(s.in_flight);
        assert!(
            s.in_flight <= 4,
            "2 workers of 100 ms handlers leased {} messages; the rest must stay pending for others ({s:?})",
            s.in_flight
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown(runtime).await;
    assert!(most_leased >= 2, "both workers were busy at some point");
    assert_eq!(STARTED.load(Ordering::SeqCst), 12);
    env.assert_eventually_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_handlers_get_a_buffer_no_deeper_than_task_queue_size() {
    const N: usize = 6000;
    const QUEUE: usize = 40;
    const WORKERS: usize = 4;
    let env = TestEnv::start("prefetch_fast").await;
    let c = &env.client;
    c.produce_batch((0..N as u32).map(|n| Fast { n }))
        .await
        .unwrap();
    let consumer = env
        .client_with(|mut config| {
            config.task_queue_size = QUEUE;
            config
        })
        .await;
    let runtime = spawn_runtime(&consumer, &[Fast::NAME], WORKERS).await;
    let mut deepest = 0;
    let drained = within("the drain", PATIENCE, async {
        while FAST_DONE.load(Ordering::SeqCst) < N {
            deepest = deepest.max(runtime.state().buffered);
            tokio::task::yield_now().await;
        }
    });
    drained.await;
    shutdown(runtime).await;
    assert!(
        deepest <= QUEUE + WORKERS,
        "{deepest} messages buffered: task_queue_size {QUEUE} and {WORKERS} workers allow {}",
        QUEUE + WORKERS
    );
    assert!(
        deepest > WORKERS,
        "no-op handlers never had more than {deepest} messages buffered: prefetch did not work"
    );
    env.assert_eventually_clean().await;
}
