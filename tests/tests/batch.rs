//! `produce_batch` stores a whole batch at once; every message is delivered exactly once
//! and nothing is left behind.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("batch_item")]
#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: u32,
    label: String,
}

static ITEMS: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

#[handler(concurrency = 8)]
async fn record_item(item: Item, ctx: Context) {
    ITEMS
        .lock()
        .unwrap()
        .push((item.n, format!("{}@{}", item.label, ctx.id())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_is_delivered_exactly_once_each() {
    let env = TestEnv::start("batch_1000").await;
    let keys = env.keys(Item::NAME);
    let batch: Vec<Item> = (0..1000)
        .map(|n| Item {
            n,
            label: format!("item-{n}"),
        })
        .collect();
    let ids = within(
        "produce_batch(1000)",
        PATIENCE,
        env.client.produce_batch(batch),
    )
    .await
    .expect("produce_batch");
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000, "ids repeat");
    assert_eq!(env.len(&keys.messages).await, 1000, "stored envelopes");
    assert_eq!(env.len(&keys.pending[1]).await, 1000, "normal pending list");

    let handle = spawn_runtime(&env.client, &[Item::NAME], 16).await;
    wait_for("1000 deliveries", || ITEMS.lock().unwrap().len() >= 1000).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    let items = ITEMS.lock().unwrap().clone();
    assert_eq!(items.len(), 1000, "a message was delivered twice");
    let mut numbers: Vec<u32> = items.iter().map(|(n, _)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..1000).collect::<Vec<u32>>());
    // each delivery carries the id produce_batch returned for that item, in order
    for (n, seen) in &items {
        let expected = format!("item-{n}@{}", ids[*n as usize]);
        assert_eq!(seen, &expected);
    }

    let left = env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let stats = env.stats(Item::NAME).await;
    assert_eq!(stats.get("produced"), Some(&1000), "stats {stats:?}");
    assert_eq!(stats.get("completed"), Some(&1000), "stats {stats:?}");
}

#[topic("batch_empty")]
#[derive(Debug, Serialize, Deserialize)]
struct Nothing {
    n: u32,
}

#[handler]
async fn record_nothing(_msg: Nothing) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_stores_nothing() {
    let env = TestEnv::start("batch_empty").await;
    let ids = env
        .client
        .produce_batch(Vec::<Nothing>::new())
        .await
        .expect("empty batch");
    assert!(ids.is_empty());
    let left = env.message_keys().await;
    assert!(left.is_empty(), "{left:?}");
}
