//! An idle consumer is handed new messages directly: produce.lua leases the message to the
//! consumer parked in `waiting` and publishes it on that consumer's channel, so it starts
//! without a fetch round trip. Here every message of a sparse stream takes that path (none
//! is ever pushed onto a pending list), each runs once, and nothing is left behind.

mod common;

use std::sync::Mutex;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("push_sparse")]
#[derive(Debug, Serialize, Deserialize)]
struct Sparse {
    n: u32,
}

static HANDLED: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());

#[handler]
async fn handle_sparse(msg: Sparse, ctx: Context) {
    HANDLED.lock().unwrap().push((msg.n, ctx.attempt()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_of_a_sparse_stream_is_handed_to_the_idle_consumer() {
    let env = TestEnv::start("push_sparse").await;
    let handle = spawn_runtime(&env.client, &[Sparse::NAME], 4).await;
    let waiting = env.keys(Sparse::NAME).waiting;
    const N: u32 = 20;
    for n in 0..N {
        // the consumer parks again once it settled the previous message
        env.wait_parked(Sparse::NAME, 1).await;
        env.client.produce(Sparse { n }).await.expect("produce");
        wait_for("the message to be handled", || {
            HANDLED.lock().unwrap().len() == n as usize + 1
        })
        .await;
    }
    assert_eq!(
        env.command_calls("lpush").await,
        0,
        "a message went through a pending list instead of straight to the idle consumer"
    );
    assert!(env.command_calls("publish").await >= u64::from(N));
    let handled = HANDLED.lock().unwrap().clone();
    assert_eq!(
        handled,
        (0..N).map(|n| (n, 1)).collect::<Vec<_>>(),
        "each message once, in order, first attempt"
    );
    shutdown(handle).await;
    assert_eq!(env.stat(Sparse::NAME, "completed").await, i64::from(N));
    assert_eq!(env.stat(Sparse::NAME, "delivered").await, i64::from(N));
    env.assert_eventually_clean().await;
    assert_eq!(
        env.len(&waiting).await,
        0,
        "a consumer that stopped leaves `waiting`"
    );
}

#[topic("push_flushed")]
#[derive(Debug, Serialize, Deserialize)]
struct Flushed {
    n: u32,
}

static FLUSHED: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());

#[handler]
async fn handle_flushed(msg: Flushed, ctx: Context) {
    FLUSHED.lock().unwrap().push((msg.n, ctx.attempt()));
}

/// A `send()` goes behind a `PING` (so Redis writes the push to the consumer before the
/// producer's reply); when its script meets `NOSCRIPT` (Redis lost its scripts just
/// before), the client loads them and repeats the script alone: the send returns its id,
/// the message is handed to the idle consumer once, and the next send goes the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_script_redis_lost_is_handed_over_once() {
    let env = TestEnv::start("push_flushed").await;
    let handle = spawn_runtime(&env.client, &[Flushed::NAME], 4).await;
    for n in 0..2 {
        env.wait_parked(Flushed::NAME, 1).await;
        script_flush(&mut env.redis.clone()).await;
        let id = env.client.produce(Flushed { n }).await.expect("produce");
        assert!(!id.as_str().is_empty());
        wait_for("the message to be handled", || {
            FLUSHED.lock().unwrap().len() == n as usize + 1
        })
        .await;
    }
    assert_eq!(env.command_calls("lpush").await, 0, "both were handed over");
    shutdown(handle).await;
    assert_eq!(
        FLUSHED.lock().unwrap().clone(),
        vec![(0, 1), (1, 1)],
        "each once, first attempt"
    );
    assert_eq!(env.stat(Flushed::NAME, "produced").await, 2);
    env.assert_eventually_clean().await;
}
