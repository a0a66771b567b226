//! `produce_batch` stores a whole batch at once; every message is delivered exactly once
//! and nothing is left behind.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;

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

#[topic("batch_raw")]
#[derive(Debug, Serialize, Deserialize)]
struct Raw {
    n: u32,
}

static RAW: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler(concurrency = 1)]
async fn record_raw(item: Raw) {
    RAW.lock().unwrap().push(item.n);
}

/// Once the client knows Redis' clock (from its first reply), a batch of new ready
/// messages is stored by one `MULTI` (`HSET`, `LPUSH`, batch.lua) and never passes through
/// Lua one by one. An idle consumer, which here polls only once a minute, is handed the
/// first message and then fetches the rest: all are handled once each, in order, and
/// counted as produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_client_knows_redis_clock_a_batch_is_stored_in_one_transaction() {
    let env = TestEnv::start_configured("batch_raw", &[], |config| Config {
        poll_interval: Duration::from_secs(60),
        ..config
    })
    .await;
    let keys = env.keys(Raw::NAME);
    let handle = spawn_runtime(&env.client, &[Raw::NAME], 4).await;
    env.client
        .produce_batch((0..10).map(|n| Raw { n }))
        .await
        .expect("first batch");
    assert_eq!(
        env.command_calls("exec").await,
        0,
        "a first batch has no stamp: produce.lua stores it"
    );
    wait_for("the first batch", || RAW.lock().unwrap().len() == 10).await;
    assert!(
        poll(PATIENCE, || async { env.len(&keys.waiting).await == 1 }).await,
        "the consumer did not park again"
    );

    let ids = env
        .client
        .produce_batch((10..110).map(|n| Raw { n }))
        .await
        .expect("second batch");
    assert_eq!(ids.len(), 100);
    assert_eq!(
        env.command_calls("exec").await,
        1,
        "one MULTI for the batch"
    );
    wait_for("the second batch", || RAW.lock().unwrap().len() >= 110).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    assert_eq!(*RAW.lock().unwrap(), (0..110).collect::<Vec<u32>>());
    let stats = env.stats(Raw::NAME).await;
    assert_eq!(stats.get("produced"), Some(&110), "stats {stats:?}");
    assert_eq!(stats.get("completed"), Some(&110), "stats {stats:?}");
}

/// Lets the client learn Redis' clock (a send to another topic, so `keys`' queue stays
/// empty), then subscribes to `keys`' wake-up channel.
async fn knowing_the_clock_watch_wake_ups(
    env: &TestEnv,
    keys: &rmq_runtime::TopicKeys,
) -> redis::aio::PubSubStream {
    Nothing { n: 0 }
        .send()
        .via(&env.client)
        .await
        .expect("send");
    let mut pubsub = redis::Client::open(env.server.url())
        .expect("url")
        .get_async_pubsub()
        .await
        .expect("pub/sub connection");
    pubsub.subscribe(&keys.wake).await.expect("SUBSCRIBE");
    pubsub.into_on_message()
}

#[topic("batch_raw_wake")]
#[derive(Debug, Serialize, Deserialize)]
struct RawWake {
    n: u32,
}

#[handler]
async fn record_raw_wake(_msg: RawWake) {}

/// A batch stored by `MULTI` into an empty queue publishes one wake-up for idle consumers;
/// one into a queue that already holds messages publishes none (consumers were woken
/// then). The envelopes are stored as the client wrote them, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_in_one_transaction_wakes_consumers_of_an_empty_queue() {
    let env = TestEnv::start("batch_raw_wake").await;
    let keys = env.keys(RawWake::NAME);
    let mut wakes = knowing_the_clock_watch_wake_ups(&env, &keys).await;

    let first = env
        .client
        .produce_batch((1..21).map(|n| RawWake { n }))
        .await
        .expect("first batch");
    let second = env
        .client
        .produce_batch((21..41).map(|n| RawWake { n }))
        .await
        .expect("second batch");
    assert_eq!(env.command_calls("exec").await, 2);
    let wake = within("the wake-up", PATIENCE, wakes.next())
        .await
        .expect("a wake-up");
    assert_eq!(wake.get_payload::<String>().unwrap(), "p");
    assert!(
        tokio::time::timeout(QUIET, wakes.next()).await.is_err(),
        "a second wake-up for a queue that was not empty"
    );

    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(&keys.pending[1])
        .arg(0)
        .arg(-1)
        .query_async(&mut env.redis.clone())
        .await
        .expect("LRANGE");
    let expected: Vec<String> = first
        .iter()
        .chain(&second)
        .rev()
        .map(|id| id.as_str().to_string())
        .collect();
    assert_eq!(queued, expected, "the ids, oldest at the tail");
    let envelope: String = redis::cmd("HGET")
        .arg(&keys.messages)
        .arg(first[0].as_str())
        .query_async(&mut env.redis.clone())
        .await
        .expect("HGET");
    assert!(
        envelope.starts_with("1|") && envelope.ends_with(r#"{"n":1}"#),
        "{envelope}"
    );
}

#[topic("batch_raw_flushed")]
#[derive(Debug, Serialize, Deserialize)]
struct RawFlushed {
    n: u32,
}

#[handler]
async fn record_raw_flushed(_msg: RawFlushed) {}

/// Redis lost its scripts (a restart, `SCRIPT FLUSH`) just before a batch: the `MULTI`
/// stores it and its `batch.lua` meets `NOSCRIPT`. The client loads the scripts and
/// finishes the batch on its own: each message is queued once, counted as produced, and
/// idle consumers are woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_script_redis_lost_is_queued_once_and_finished() {
    let env = TestEnv::start("batch_raw_flushed").await;
    let keys = env.keys(RawFlushed::NAME);
    let mut wakes = knowing_the_clock_watch_wake_ups(&env, &keys).await;
    script_flush(&mut env.redis.clone()).await;

    let ids = env
        .client
        .produce_batch((0..20).map(|n| RawFlushed { n }))
        .await
        .expect("batch");
    assert_eq!(ids.len(), 20);
    assert_eq!(
        env.command_calls("exec").await,
        1,
        "the batch went by MULTI"
    );
    assert_eq!(env.len(&keys.pending[1]).await, 20, "each id queued once");
    assert_eq!(env.len(&keys.messages).await, 20);
    let stats = env.stats(RawFlushed::NAME).await;
    assert_eq!(stats.get("produced"), Some(&20), "stats {stats:?}");
    let wake = within("the wake-up", PATIENCE, wakes.next())
        .await
        .expect("a wake-up");
    assert_eq!(wake.get_payload::<String>().unwrap(), "p");
}

#[topic("batch_raw_unfinished")]
#[derive(Debug, Serialize, Deserialize)]
struct RawUnfinished {
    n: u32,
}

static UNFINISHED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn record_raw_unfinished(msg: RawUnfinished) {
    UNFINISHED.lock().unwrap().push(msg.n);
}

/// As above, but the client cannot load the scripts again either (here Redis refuses
/// `SCRIPT`; in life it went away again): the `MULTI` has stored and queued the batch, so
/// `produce_batch` reports it stored, with the ids it was stored under. An error would
/// have the caller produce it again, under new ids, and every message would run twice.
/// Consumers deliver each message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_batch_whose_finish_fails_is_reported_stored_and_runs_once() {
    let env = TestEnv::start("batch_raw_unfinished").await;
    let keys = env.keys(RawUnfinished::NAME);
    let _wakes = knowing_the_clock_watch_wake_ups(&env, &keys).await;
    let mut redis = env.redis.clone();
    script_flush(&mut redis).await;
    redis::cmd("ACL")
        .arg(&["SETUSER", "default", "-script"])
        .query_async::<()>(&mut redis)
        .await
        .expect("ACL SETUSER");

    let ids = env
        .client
        .produce_batch((0..20).map(|n| RawUnfinished { n }))
        .await
        .expect("a stored batch is reported stored");
    assert_eq!(
        env.command_calls("exec").await,
        1,
        "the batch went by MULTI"
    );
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(
        env.pending_ids(RawUnfinished::NAME).await,
        ids,
        "each id queued once, in order"
    );
    assert_eq!(env.len(&keys.messages).await, 20);

    redis::cmd("ACL")
        .arg(&["SETUSER", "default", "+@all"])
        .query_async::<()>(&mut redis)
        .await
        .expect("ACL SETUSER");
    let handle = spawn_runtime(&env.client, &[RawUnfinished::NAME, Nothing::NAME], 4).await;
    wait_for("20 deliveries", || UNFINISHED.lock().unwrap().len() >= 20).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    let mut delivered = UNFINISHED.lock().unwrap().clone();
    delivered.sort_unstable();
    assert_eq!(
        delivered,
        (0..20).collect::<Vec<u32>>(),
        "each message once"
    );
}

#[topic("batch_raw_full")]
#[derive(Debug, Serialize, Deserialize)]
struct RawFull {
    n: u32,
}

#[handler]
async fn record_raw_full(_msg: RawFull) {}

/// A Redis out of memory (`maxmemory`, `noeviction`) refuses a batch's `MULTI` while
/// queueing it: the caller gets Redis' own reason, not `EXECABORT`, and nothing of the
/// batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_the_whole_batch_and_says_why() {
    let env = TestEnv::start("batch_raw_full").await;
    let keys = env.keys(RawFull::NAME);
    Nothing { n: 0 }
        .send()
        .via(&env.client)
        .await
        .expect("send");
    config_set(&mut env.redis.clone(), "maxmemory", "1").await;
    let refused = env
        .client
        .produce_batch((0..20).map(|n| RawFull { n }))
        .await
        .expect_err("a full Redis stores nothing");
    let message = refused.to_string();
    assert!(message.contains("OOM"), "{message}");
    config_set(&mut env.redis.clone(), "maxmemory", "0").await;
    assert_eq!(env.len(&keys.messages).await, 0);
    assert_eq!(env.len(&keys.pending[1]).await, 0);
    assert_eq!(
        env.command_calls("exec").await,
        1,
        "the batch went by MULTI"
    );
}
