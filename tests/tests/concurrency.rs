//! Bounded concurrency: `max_workers` bounds a runtime, `#[handler(concurrency = N)]` and
//! `builder().concurrency(topic, N)` bound one handler, and both limits are actually used.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// Counts handlers running at once and remembers the peak.
struct Gauge {
    running: AtomicU32,
    peak: AtomicU32,
    done: AtomicU32,
}

impl Gauge {
    const fn new() -> Self {
        Gauge {
            running: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            done: AtomicU32::new(0),
        }
    }

    async fn run(&self) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) -> u32 {
        self.done.load(Ordering::SeqCst)
    }

    fn peak(&self) -> u32 {
        self.peak.load(Ordering::SeqCst)
    }
}

#[topic("conc_attr")]
#[derive(Debug, Serialize, Deserialize)]
struct Attr {
    n: u32,
}

static ATTR: Gauge = Gauge::new();

#[handler(concurrency = 2)]
async fn attr(_msg: Attr) {
    ATTR.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_concurrency_attribute_bounds_the_handler() {
    let env = TestEnv::start("conc_attr").await;
    env.client
        .produce_batch((0..8).map(|n| Attr { n }).collect::<Vec<_>>())
        .await
        .expect("produce");
    let handle = spawn_runtime(&env.client, &[Attr::NAME], 8).await;
    wait_for("8 handled", || ATTR.done() >= 8).await;
    shutdown(handle).await;
    assert_eq!(
        ATTR.peak(),
        2,
        "peak concurrency of a `concurrency = 2` handler"
    );
    env.assert_eventually_clean().await;
}

#[topic("conc_builder")]
#[derive(Debug, Serialize, Deserialize)]
struct Built {
    n: u32,
}

static BUILT: Gauge = Gauge::new();

#[handler]
async fn built(_msg: Built) {
    BUILT.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_concurrency_bounds_the_handler() {
    let env = TestEnv::start("conc_builder").await;
    env.client
        .produce_batch((0..9).map(|n| Built { n }).collect::<Vec<_>>())
        .await
        .expect("produce");
    let handle = within(
        "spawn",
        PATIENCE,
        rmq_runtime::builder()
            .client(&env.client)
            .topics([Built::NAME])
            .max_workers(8)
            .concurrency(Built::NAME, 3)
            .spawn(),
    )
    .await
    .expect("spawn");
    wait_for("9 handled", || BUILT.done() >= 9).await;
    shutdown(handle).await;
    assert_eq!(
        BUILT.peak(),
        3,
        "peak concurrency with .concurrency(topic, 3)"
    );
    env.assert_eventually_clean().await;
}

#[topic("conc_left")]
#[derive(Debug, Serialize, Deserialize)]
struct Left {
    n: u32,
}

#[topic("conc_right")]
#[derive(Debug, Serialize, Deserialize)]
struct Right {
    n: u32,
}

/// Shared by both topics: the runtime-wide bound.
static BOTH: Gauge = Gauge::new();

#[handler]
async fn left(_msg: Left) {
    BOTH.run().await;
}

#[handler]
async fn right(_msg: Right) {
    BOTH.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_workers_bounds_the_whole_runtime() {
    let env = TestEnv::start("conc_runtime").await;
    env.client
        .produce_batch((0..6).map(|n| Left { n }).collect::<Vec<_>>())
        .await
        .expect("produce");
    env.client
        .produce_batch((0..6).map(|n| Right { n }).collect::<Vec<_>>())
        .await
        .expect("produce");
    let handle = spawn_runtime(&env.client, &[Left::NAME, Right::NAME], 3).await;
    wait_for("12 handled", || BOTH.done() >= 12).await;
    shutdown(handle).await;
    assert_eq!(
        BOTH.peak(),
        3,
        "peak concurrency with max_workers(3) over two topics"
    );
    env.assert_eventually_clean().await;
}
