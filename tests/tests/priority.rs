//! Three priority levels, FIFO within a level, kept across delays and retries.
//! (MX-RMQ delivers HIGH newest-first and treats LOW as NORMAL; LESSONS.md §1.)

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("prio_order")]
#[derive(Debug, Serialize, Deserialize)]
struct Ordered {
    label: String,
}

static ORDERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[handler]
async fn record_ordered(msg: Ordered) {
    ORDERED.lock().unwrap().push(msg.label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_consumes_high_then_normal_then_low_each_fifo() {
    let env = TestEnv::start("priority_order").await;
    for (label, priority) in [
        ("low1", Priority::Low),
        ("norm1", Priority::Normal),
        ("high1", Priority::High),
        ("norm2", Priority::Normal),
        ("high2", Priority::High),
        ("low2", Priority::Low),
    ] {
        let sent = Ordered {
            label: label.into(),
        }
        .send()
        .priority(priority)
        .via(&env.client)
        .await
        .expect("produce");
        assert!(!sent.duplicate);
    }
    let keys = env.keys(Ordered::NAME);
    assert_eq!(
        [
            env.len(&keys.pending[0]).await,
            env.len(&keys.pending[1]).await,
            env.len(&keys.pending[2]).await
        ],
        [2, 2, 2],
        "each level has its own pending list:\n{}",
        env.describe().await
    );

    let handle = spawn_runtime(&env.client, &[Ordered::NAME], 1).await;
    wait_for("6 deliveries", || ORDERED.lock().unwrap().len() >= 6).await;
    shutdown(handle).await;

    assert_eq!(
        *ORDERED.lock().unwrap(),
        ["high1", "high2", "norm1", "norm2", "low1", "low2"]
    );
    env.assert_eventually_clean().await;
}

#[topic("prio_retry", retries = 1, retry_delays = ["300ms"])]
#[derive(Debug, Serialize, Deserialize)]
struct Retried {
    label: String,
}

/// (label, attempt)
static RETRIED: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

#[handler]
async fn fail_high_once(msg: Retried, ctx: Context) -> Result<(), HandlerError> {
    RETRIED
        .lock()
        .unwrap()
        .push((msg.label.clone(), ctx.attempt()));
    if msg.label == "high" && ctx.attempt() == 1 {
        return Err(HandlerError::new("first attempt of the high message fails"));
    }
    Ok(())
}

/// A retried HIGH message goes back to the HIGH level: once its retry is due it is fetched
/// before NORMAL messages that were produced earlier than the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_message_keeps_its_priority() {
    let env = TestEnv::start("priority_retry").await;
    let keys = env.keys(Retried::NAME);
    Retried {
        label: "high".into(),
    }
    .send()
    .priority(Priority::High)
    .via(&env.client)
    .await
    .expect("produce");

    // First attempt fails; stop the runtime while the retry waits for its delay.
    let handle = spawn_runtime(&env.client, &[Retried::NAME], 1).await;
    wait_for("the first attempt", || !RETRIED.lock().unwrap().is_empty()).await;
    shutdown(handle).await;
    assert_eq!(*RETRIED.lock().unwrap(), [("high".to_string(), 1)]);
    assert_eq!(
        env.len(&keys.delayed).await,
        1,
        "the failed message waits for its retry delay:\n{}",
        env.describe().await
    );

    for label in ["norm1", "norm2", "norm3"] {
        Retried {
            label: label.into(),
        }
        .send()
        .via(&env.client)
        .await
        .expect("produce");
    }
    // Let the 300 ms retry delay pass while no runtime runs.
    tokio::time::sleep(Duration::from_millis(350)).await;

    let handle = spawn_runtime(&env.client, &[Retried::NAME], 1).await;
    wait_for("4 more deliveries", || RETRIED.lock().unwrap().len() >= 5).await;
    shutdown(handle).await;

    let order: Vec<(String, u32)> = RETRIED.lock().unwrap().clone();
    let expected: Vec<(String, u32)> = [
        ("high", 1),
        ("high", 2),
        ("norm1", 1),
        ("norm2", 1),
        ("norm3", 1),
    ]
    .iter()
    .map(|(l, a)| (l.to_string(), *a))
    .collect();
    assert_eq!(order, expected, "the retry lost its HIGH priority");
    env.assert_eventually_clean().await;
}

#[topic("prio_delay")]
#[derive(Debug, Serialize, Deserialize)]
struct Delayed {
    label: String,
}

static DELAYED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[handler]
async fn record_delayed(msg: Delayed) {
    DELAYED.lock().unwrap().push(msg.label);
}

/// A delayed HIGH message, once due, overtakes NORMAL messages produced before it was due;
/// a delayed LOW one stays behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_keeps_its_priority() {
    let env = TestEnv::start("priority_delay").await;
    for (label, priority) in [("high", Priority::High), ("low", Priority::Low)] {
        Delayed {
            label: label.into(),
        }
        .send()
        .delay(Duration::from_millis(100))
        .priority(priority)
        .via(&env.client)
        .await
        .expect("produce delayed");
    }
    for label in ["norm1", "norm2"] {
        Delayed {
            label: label.into(),
        }
        .send()
        .via(&env.client)
        .await
        .expect("produce");
    }
    assert_eq!(env.len(&env.keys(Delayed::NAME).delayed).await, 2);
    tokio::time::sleep(Duration::from_millis(150)).await;

    let handle = spawn_runtime(&env.client, &[Delayed::NAME], 1).await;
    wait_for("4 deliveries", || DELAYED.lock().unwrap().len() >= 4).await;
    shutdown(handle).await;

    assert_eq!(*DELAYED.lock().unwrap(), ["high", "norm1", "norm2", "low"]);
    env.assert_eventually_clean().await;
}
