//! The dead-letter admin API, `client.dlq::<T>()`: count, list (newest first, paged), get,
//! replay (one / where / all; attempts reset, priority kept), purge (all / ids), and the
//! `dead_letter_max` bound (oldest evicted without a trace, counted).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::*;
use rmq_runtime::prelude::*;
use rmq_runtime::{DeadLetter, MessageId, Topic};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// helpers local to this file

/// The priority message `n` is produced with: high, normal, low, high, ...
fn priority_of(n: u32) -> Priority {
    Priority::ALL[n as usize % 3]
}

/// What the test produced: id -> (n, priority).
type Produced = HashMap<MessageId, (u32, Priority)>;

/// Produces `make(n)` for every `n` in `ns`, each with `priority_of(n)`.
async fn produce_all<T: Topic>(
    client: &Client,
    ns: impl IntoIterator<Item = u32>,
    make: impl Fn(u32) -> T,
) -> Produced {
    let mut produced = HashMap::new();
    for n in ns {
        let sent = client
            .send(make(n))
            .priority(priority_of(n))
            .await
            .expect("produce");
        produced.insert(sent.id, (n, priority_of(n)));
    }
    produced
}

/// Whether `key` (a hash) has `field`.
async fn hexists(env: &TestEnv, key: &str, field: &str) -> bool {
    let mut redis = env.redis.clone();
    redis::cmd("HEXISTS")
        .arg(key)
        .arg(field)
        .query_async(&mut redis)
        .await
        .expect("HEXISTS")
}

/// Every trace of `id` in the topic's per-message keys, by key suffix (empty = no trace).
async fn traces(env: &TestEnv, topic: &str, id: &str) -> Vec<&'static str> {
    let k = env.keys(topic);
    let mut found = Vec::new();
    for (name, key) in [
        ("m", &k.messages),
        ("attempts", &k.attempts),
        ("errors", &k.errors),
    ] {
        if hexists(env, key, id).await {
            found.push(name);
        }
    }
    let mut redis = env.redis.clone();
    for (name, key) in [("dead", &k.dead), ("delayed", &k.delayed)] {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(key)
            .arg(id)
            .query_async(&mut redis)
            .await
            .expect("ZSCORE");
        if score.is_some() {
            found.push(name);
        }
    }
    if env.lease(topic, id).await.is_some() {
        found.push("inflight");
    }
    for (level, key) in k.pending.iter().enumerate() {
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .expect("LRANGE");
        if list.iter().any(|x| x == id) {
            found.push(["p0", "p1", "p2"][level]);
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// count, list, get

#[topic("dlq_list")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Listed {
    n: u32,
    sku: String,
}

fn listed(n: u32) -> Listed {
    Listed {
        n,
        sku: format!("SKU-{n:03}"),
    }
}

static LISTED_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn on_listed(msg: Listed) -> Result<(), HandlerError> {
    LISTED_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::dead_letter(format!("bad {}", msg.n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_list_pages_and_get_show_every_dead_letter_newest_first() {
    let env = TestEnv::start("dlq_list").await;
    let before = SystemTime::now();
    let produced = produce_all(&env.client, 0..25, listed).await;
    let handle = spawn_runtime(&env.client, &[Listed::NAME], 2).await;
    env.wait_for_dead_letters::<Listed>(25).await;
    shutdown(handle).await;
    let after = SystemTime::now();
    assert_eq!(LISTED_CALLS.load(Ordering::SeqCst), 25);

    let dlq = env.client.dlq::<Listed>();
    assert_eq!(dlq.count().await.expect("count"), 25);
    let pages = [
        dlq.list(0, 10).await.expect("list"),
        dlq.list(10, 10).await.expect("list"),
        dlq.list(20, 10).await.expect("list"),
    ];
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5], "page sizes");
    assert!(dlq.list(25, 10).await.expect("list").is_empty());
    assert!(dlq.list(0, 0).await.expect("list").is_empty());

    let all: Vec<DeadLetter> = pages.concat();
    assert_eq!(
        all,
        dlq.list(0, 25).await.expect("list"),
        "the pages must add up to one listing"
    );
    for pair in all.windows(2) {
        assert!(
            pair[0].dead_at >= pair[1].dead_at,
            "not newest first: {:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
    let ids: BTreeSet<&MessageId> = all.iter().map(|d| &d.id).collect();
    assert_eq!(ids.len(), 25, "an id repeated across pages");
    assert_eq!(ids, produced.keys().collect(), "the listed ids");

    let window = (before - Duration::from_millis(5))..=(after + Duration::from_millis(5));
    for entry in &all {
        let (n, priority) = produced[&entry.id];
        assert_eq!(entry.error, format!("bad {n}"));
        assert_eq!(entry.reason, "dead-lettered by handler");
        assert_eq!(entry.attempts, 1);
        assert_eq!(entry.priority, priority, "priority of {n}");
        assert_eq!(
            entry.payload,
            serde_json::to_string(&listed(n)).unwrap(),
            "payload of {n}"
        );
        assert_eq!(entry.message::<Listed>().expect("decodes"), listed(n));
        assert!(entry.first_failed_at <= entry.last_failed_at, "{entry:?}");
        assert!(entry.last_failed_at <= entry.dead_at, "{entry:?}");
        for t in [entry.first_failed_at, entry.dead_at] {
            assert!(
                window.contains(&t),
                "{t:?} outside the test's run: {entry:?}"
            );
        }
        assert_eq!(
            dlq.get(entry.id.as_str()).await.expect("get").as_ref(),
            Some(entry),
            "get({}) differs from list",
            entry.id
        );
    }
    assert_eq!(dlq.get("nope").await.expect("get"), None);
}

// ---------------------------------------------------------------------------------------
// replay

#[topic("dlq_replay", retries = 1, retry_delays = ["20ms"])]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Replayed {
    n: u32,
}

/// Once set, the handler succeeds.
static REPLAY_HEALED: AtomicBool = AtomicBool::new(false);
static REPLAY_FAILURES: AtomicU32 = AtomicU32::new(0);
/// (n, ctx.attempt()) of every successful call.
static REPLAY_DONE: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());

#[handler]
async fn on_replayed(msg: Replayed, ctx: Context) -> Result<(), HandlerError> {
    if REPLAY_HEALED.load(Ordering::SeqCst) {
        REPLAY_DONE.lock().unwrap().push((msg.n, ctx.attempt()));
        return Ok(());
    }
    REPLAY_FAILURES.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::msg(format!("bad {}", msg.n)))
}

/// The n of every message whose id the dead letters hold.
fn dead_ns(dead: &[DeadLetter]) -> BTreeSet<u32> {
    dead.iter()
        .map(|d| d.message::<Replayed>().expect("decodes").n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_one_where_and_all_run_again_with_fresh_attempts_and_their_priority() {
    let env = TestEnv::start("dlq_replay").await;
    let topic = Replayed::NAME;
    let produced = produce_all(&env.client, 0..25, |n| Replayed { n }).await;
    let id_of: HashMap<u32, MessageId> = produced
        .iter()
        .map(|(id, (n, _))| (*n, id.clone()))
        .collect();
    let handle = spawn_runtime(&env.client, &[topic], 2).await;
    env.wait_for_dead_letters::<Replayed>(25).await;
    shutdown(handle).await;
    assert_eq!(
        REPLAY_FAILURES.load(Ordering::SeqCst),
        50,
        "2 attempts each"
    );

    let dlq = env.client.dlq::<Replayed>();
    let all = dlq.list(0, 100).await.expect("list");
    assert_eq!(all.len(), 25);
    assert!(
        all.iter()
            .all(|d| d.attempts == 2 && d.reason == "retries exhausted"),
        "{all:?}"
    );

    // replay one (a low-priority message)
    let x = id_of[&5].as_str();
    assert_eq!(priority_of(5), Priority::Low);
    assert!(dlq.replay(x).await.expect("replay"), "replay({x})");
    assert!(!dlq.replay(x).await.expect("replay"), "replayed twice");
    assert!(!dlq.replay("nope").await.expect("replay"));
    assert_eq!(dlq.count().await.expect("count"), 24);
    assert_eq!(dlq.get(x).await.expect("get"), None);
    assert_eq!(
        traces(&env, topic, x).await,
        ["m", "p2"],
        "replayed: stored, pending at its own (low) level, attempts and error record reset"
    );

    // replay those matching a predicate: "bad 1" and "bad 10" ..= "bad 19"
    let matching: BTreeSet<u32> = [1].into_iter().chain(10..20).collect();
    let moved = dlq
        .replay_where(|d| d.error.contains("bad 1"))
        .await
        .expect("replay_where");
    assert_eq!(moved, matching.len());
    let still_dead = dlq.list(0, 100).await.expect("list");
    let expected_dead: BTreeSet<u32> = (0..25)
        .filter(|n| *n != 5 && !matching.contains(n))
        .collect();
    assert_eq!(dead_ns(&still_dead), expected_dead, "the ones left dead");
    for n in &matching {
        let id = id_of[n].as_str();
        let level = ["p0", "p1", "p2"][priority_of(*n).index()];
        assert_eq!(traces(&env, topic, id).await, ["m", level], "replayed {n}");
    }
    for n in &expected_dead {
        let id = id_of[n].as_str();
        assert_eq!(
            traces(&env, topic, id).await,
            ["m", "attempts", "errors", "dead"],
            "still dead {n}"
        );
    }

    // the handler is fixed: the replayed ones run once each, as first attempts
    REPLAY_HEALED.store(true, Ordering::SeqCst);
    let handle = spawn_runtime(&env.client, &[topic], 2).await;
    wait_for("the 12 replayed messages", || {
        REPLAY_DONE.lock().unwrap().len() >= 12
    })
    .await;
    let mut first_round: Vec<(u32, u32)> = REPLAY_DONE.lock().unwrap().clone();
    first_round.sort();
    let mut expected: Vec<(u32, u32)> = matching.iter().map(|n| (*n, 1)).collect();
    expected.push((5, 1));
    expected.sort();
    assert_eq!(
        first_round, expected,
        "(n, ctx.attempt()) of replayed calls"
    );
    assert_eq!(dlq.count().await.expect("count"), 13);

    // replay the rest
    assert_eq!(dlq.replay_all().await.expect("replay_all"), 13);
    wait_for("all 25 messages", || {
        REPLAY_DONE.lock().unwrap().len() >= 25
    })
    .await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    let mut done = REPLAY_DONE.lock().unwrap().clone();
    done.sort();
    assert_eq!(
        done,
        (0..25).map(|n| (n, 1)).collect::<Vec<_>>(),
        "each message once, as a first attempt"
    );
    assert_eq!(dlq.count().await.expect("count"), 0);
    assert_eq!(dlq.replay_all().await.expect("replay_all"), 0);
    let stats = env.stats(topic).await;
    assert_eq!(stats.get("replayed"), Some(&25), "{stats:?}");
    assert_eq!(stats.get("completed"), Some(&25), "{stats:?}");
    assert_eq!(stats.get("dead"), Some(&25), "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// purge

#[topic("dlq_purge")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Purged {
    n: u32,
}

static PURGED_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn on_purged(msg: Purged) -> Result<(), HandlerError> {
    PURGED_CALLS.fetch_add(1, Ordering::SeqCst);
    Err(HandlerError::dead_letter(format!("bad {}", msg.n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_ids_deletes_only_those_and_purge_deletes_every_dead_letter() {
    let env = TestEnv::start("dlq_purge").await;
    let topic = Purged::NAME;
    let produced = produce_all(&env.client, 0..6, |n| Purged { n }).await;
    let handle = spawn_runtime(&env.client, &[topic], 2).await;
    env.wait_for_dead_letters::<Purged>(6).await;
    shutdown(handle).await;
    // one live message, pending while no runtime runs: purge must never touch it
    let live = env.client.produce(Purged { n: 99 }).await.expect("produce");

    let dlq = env.client.dlq::<Purged>();
    let mut ids: Vec<&MessageId> = produced.keys().collect();
    ids.sort();
    let (gone, kept) = ids.split_at(2);
    let purged = dlq
        .purge_ids(&[gone[0].as_str(), gone[1].as_str(), "nope", live.as_str()])
        .await
        .expect("purge_ids");
    assert_eq!(purged, 2, "only dead ids are purged");
    assert_eq!(dlq.count().await.expect("count"), 4);
    for id in gone {
        assert_eq!(dlq.get(id.as_str()).await.expect("get"), None);
        assert!(
            traces(&env, topic, id.as_str()).await.is_empty(),
            "purged {id} left {:?}",
            traces(&env, topic, id.as_str()).await
        );
    }
    for id in kept {
        let entry = dlq.get(id.as_str()).await.expect("get");
        assert!(entry.is_some(), "{id} purged though not asked");
    }
    assert_eq!(traces(&env, topic, live.as_str()).await, ["m", "p1"]);

    assert_eq!(dlq.purge().await.expect("purge"), 4);
    assert_eq!(dlq.count().await.expect("count"), 0);
    assert!(dlq.list(0, 10).await.expect("list").is_empty());
    for id in ids {
        assert!(traces(&env, topic, id.as_str()).await.is_empty(), "{id}");
    }
    assert_eq!(dlq.purge().await.expect("purge"), 0);
    // nothing per-message left but the live message (its envelope and pending entry)
    let k = env.keys(topic);
    let mut left = env.message_keys().await;
    left.sort();
    let mut expected = vec![k.messages.clone(), k.pending[1].clone()];
    expected.sort();
    assert_eq!(left, expected, "{}", env.describe().await);
    assert_eq!(env.len(&k.messages).await, 1);
    assert_eq!(env.stat(topic, "purged").await, 6);
    assert_eq!(PURGED_CALLS.load(Ordering::SeqCst), 6);
}

// ---------------------------------------------------------------------------------------
// the bound: dead_letter_max

#[topic("dlq_bound")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Bounded {
    n: u32,
}

static BOUNDED_CALLS: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn on_bounded(msg: Bounded) -> Result<(), HandlerError> {
    BOUNDED_CALLS.fetch_add(1, Ordering::SeqCst);
    // distinct dead-letter times, so "newest" is well defined
    tokio::time::sleep(Duration::from_millis(3)).await;
    Err(HandlerError::dead_letter(format!("bad {}", msg.n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_keeps_the_newest_dead_letter_max_and_evicts_the_rest_without_a_trace() {
    let env = TestEnv::start("dlq_bound").await;
    let topic = Bounded::NAME;
    let client = env
        .client_with(|c| Config {
            dead_letter_max: 5,
            ..c
        })
        .await;
    let ids: Vec<String> = (0..8).map(|n| format!("bound-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        client
            .send(Bounded { n: n as u32 })
            .id(id.as_str())
            .await
            .expect("produce");
    }
    // one worker: handled, and dead-lettered, in production order
    let handle = spawn_runtime(&client, &[topic], 1).await;
    wait_for("8 calls", || BOUNDED_CALLS.load(Ordering::SeqCst) >= 8).await;
    let env_ref = &env;
    let all_dead = poll(PATIENCE, || async move {
        env_ref.stat(topic, "dead").await >= 8
    })
    .await;
    assert!(all_dead, "{:?}", env.stats(topic).await);
    shutdown(handle).await;

    let dlq = client.dlq::<Bounded>();
    assert_eq!(dlq.count().await.expect("count"), 5);
    let listed: Vec<String> = dlq
        .list(0, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id.into_string())
        .collect();
    assert_eq!(
        listed,
        ["bound-7", "bound-6", "bound-5", "bound-4", "bound-3"],
        "the 5 newest, newest first"
    );
    for id in &ids[..3] {
        assert_eq!(dlq.get(id).await.expect("get"), None);
        assert!(
            traces(&env, topic, id).await.is_empty(),
            "evicted {id} left {:?}",
            traces(&env, topic, id).await
        );
    }
    let k = env.keys(topic);
    for key in [&k.messages, &k.attempts, &k.errors] {
        assert_eq!(env.len(key).await, 5, "{key}:\n{}", env.describe().await);
    }
    let stats = env.stats(topic).await;
    assert_eq!(stats.get("dead_evicted"), Some(&3), "{stats:?}");
    assert_eq!(stats.get("dead"), Some(&8), "{stats:?}");

    // an evicted id is free again; a kept one is still taken
    let again = client
        .send(Bounded { n: 0 })
        .id("bound-0")
        .await
        .expect("produce");
    assert!(!again.duplicate, "the evicted id is still taken");
    let kept = client
        .send(Bounded { n: 7 })
        .id("bound-7")
        .await
        .expect("produce");
    assert!(kept.duplicate, "a dead-lettered id must stay taken");
}
