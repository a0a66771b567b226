//! Pausing a topic from any process: consumers stop leasing it, producers go on, the pause
//! outlives a consumer restart, and resuming delivers at once.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("pause.job")]
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

static DONE: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn job(_job: Job) {
    DONE.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_topic_is_not_consumed_until_resumed() {
    let env = TestEnv::start("pause").await;
    let c = &env.client;
    let runtime = spawn_runtime(c, &[Job::NAME], 4).await;
    c.produce(Job { n: 0 }).await.unwrap();
    wait_for("the first message", || DONE.load(Ordering::SeqCst) == 1).await;

    // pausing goes through another client, as an operator's tool would
    let operator = rmq_runtime::Client::connect(env.client.config().clone())
        .await
        .unwrap();
    operator.pause::<Job>().await.unwrap();
    assert!(operator.stats::<Job>().await.unwrap().paused);
    let ids = c
        .produce_batch((1..=5).map(|n| Job { n }))
        .await
        .expect("producers keep working while paused");
    assert_eq!(ids.len(), 5);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(DONE.load(Ordering::SeqCst), 1, "consumed while paused");

    // the pause lives in Redis: a new consumer does not consume either
    shutdown(runtime).await;
    let runtime = spawn_runtime(c, &[Job::NAME], 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        DONE.load(Ordering::SeqCst),
        1,
        "a restarted consumer ignored the pause"
    );
    let stats = c.stats::<Job>().await.unwrap();
    assert_eq!((stats.pending_total(), stats.in_flight), (5, 0));

    let resumed = Instant::now();
    operator.resume::<Job>().await.unwrap();
    wait_for("the backlog after resume", || {
        DONE.load(Ordering::SeqCst) == 6
    })
    .await;
    let took = resumed.elapsed();
    eprintln!("resume -> backlog drained in {took:?}");
    // woken by pub/sub, not by the 5 s safety poll
    assert!(took < Duration::from_secs(2), "resume took {took:?}");
    assert!(!c.stats::<Job>().await.unwrap().paused);
    env.assert_eventually_clean().await;
    shutdown(runtime).await;
}
