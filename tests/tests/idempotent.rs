//! An explicit id makes producing idempotent: while a message with that id exists
//! (pending, delayed or in flight), producing it again stores nothing and says so. Once it
//! has completed, the id is free again.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("idem_order")]
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    amount: u32,
}

/// (id, amount)
static ORDERS: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

#[handler]
async fn record_order(order: Order, ctx: Context) {
    ORDERS
        .lock()
        .unwrap()
        .push((ctx.id().to_string(), order.amount));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_twice_is_stored_and_delivered_once_then_free_again() {
    let env = TestEnv::start("idem_pending").await;
    let keys = env.keys(Order::NAME);

    let first = Order { amount: 1 }
        .send()
        .id("ORD_2")
        .via(&env.client)
        .await
        .expect("produce");
    let second = Order { amount: 2 }
        .send()
        .id("ORD_2")
        .via(&env.client)
        .await
        .expect("produce again");
    assert_eq!(first.id, "ORD_2");
    assert!(!first.duplicate);
    assert_eq!(second.id, "ORD_2");
    assert!(
        second.duplicate,
        "the second produce must report a duplicate"
    );
    assert_eq!(env.len(&keys.messages).await, 1);
    assert_eq!(env.len(&keys.pending[1]).await, 1, "queued once");

    let handle = spawn_runtime(&env.client, &[Order::NAME], 2).await;
    wait_for("the delivery", || !ORDERS.lock().unwrap().is_empty()).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        *ORDERS.lock().unwrap(),
        [("ORD_2".to_string(), 1)],
        "delivered once, with the first payload"
    );

    // Completed: the id can be used again.
    let third = Order { amount: 3 }
        .send()
        .id("ORD_2")
        .via(&env.client)
        .await
        .expect("produce after completion");
    assert!(!third.duplicate, "a completed id must be free again");
    wait_for("the second delivery", || ORDERS.lock().unwrap().len() >= 2).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    assert_eq!(
        *ORDERS.lock().unwrap(),
        [("ORD_2".to_string(), 1), ("ORD_2".to_string(), 3)]
    );
}

#[topic("idem_delayed")]
#[derive(Debug, Serialize, Deserialize)]
struct Later {
    amount: u32,
}

static LATER: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn record_later(msg: Later) {
    LATER.lock().unwrap().push(msg.amount);
}

/// A delayed message with an id also blocks a second, immediate produce of that id: the
/// duplicate neither runs now nor moves the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_id_is_a_duplicate_too() {
    let env = TestEnv::start("idem_delayed").await;
    let keys = env.keys(Later::NAME);
    let handle = spawn_runtime(&env.client, &[Later::NAME], 2).await;
    let first = Later { amount: 1 }
        .send()
        .id("job-7")
        .delay(Duration::from_millis(300))
        .via(&env.client)
        .await
        .expect("produce delayed");
    let second = Later { amount: 2 }
        .send()
        .id("job-7")
        .via(&env.client)
        .await
        .expect("produce now");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(env.len(&keys.delayed).await, 1);
    assert_eq!(env.len(&keys.pending[1]).await, 0);

    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(LATER.lock().unwrap().is_empty(), "the duplicate ran early");
    wait_for("the delayed delivery", || !LATER.lock().unwrap().is_empty()).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    assert_eq!(*LATER.lock().unwrap(), [1]);
}

#[topic("idem_inflight")]
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    amount: u32,
}

static SLOW: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static SLOW_RELEASE: AtomicBool = AtomicBool::new(false);

#[handler]
async fn slow(msg: Slow) {
    SLOW.lock().unwrap().push(msg.amount);
    for _ in 0..1000 {
        if SLOW_RELEASE.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// While the handler runs, the message still exists: producing its id is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_in_flight_is_a_duplicate() {
    let env = TestEnv::start("idem_inflight").await;
    let handle = spawn_runtime(&env.client, &[Slow::NAME], 2).await;
    Slow { amount: 1 }
        .send()
        .id("pay-1")
        .via(&env.client)
        .await
        .expect("produce");
    wait_for("the handler to start", || !SLOW.lock().unwrap().is_empty()).await;
    assert_eq!(env.in_flight(Slow::NAME).await, 1, "leased while it runs");

    let again = Slow { amount: 2 }
        .send()
        .id("pay-1")
        .via(&env.client)
        .await
        .expect("produce while in flight");
    assert!(again.duplicate, "the message is still in flight");

    SLOW_RELEASE.store(true, Ordering::SeqCst);
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    assert_eq!(*SLOW.lock().unwrap(), [1]);
}
