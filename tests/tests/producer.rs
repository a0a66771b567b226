//! Producing without the message type (`Client::send_raw`, what the `rmq` command uses),
//! the envelope's times whoever writes it, and the client's in-process producer figures
//! (`Client::producer_stats`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use rmq_runtime::{Error, TopicKeys};
use serde::{Deserialize, Serialize};

#[topic("producer.order")]
#[derive(Debug, Serialize, Deserialize)]
struct Order {
    order_id: String,
    amount: f64,
}

static SEEN: AtomicUsize = AtomicUsize::new(0);
static WITH_HEADER: AtomicUsize = AtomicUsize::new(0);

#[handler]
async fn order(order: Order, ctx: Context) -> Result<(), HandlerError> {
    assert_eq!(order.order_id, "ORD_raw");
    if ctx.header("source") == Some("ops") {
        WITH_HEADER.fetch_add(1, Ordering::SeqCst);
    }
    SEEN.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_json_reaches_the_typed_handler_with_its_options() {
    let env = TestEnv::start("raw_produce").await;
    let c = &env.client;
    let sent = c
        .send_raw(Order::NAME, r#"{"order_id":"ORD_raw","amount":9.99}"#)
        .priority(Priority::High)
        .header("source", "ops")
        .id("raw-1")
        .await
        .unwrap();
    assert_eq!((sent.id.as_str(), sent.duplicate), ("raw-1", false));
    let again = c
        .send_raw(Order::NAME, r#"{"order_id":"ORD_raw","amount":9.99}"#)
        .id("raw-1")
        .await
        .unwrap();
    assert!(again.duplicate, "the same id is not stored twice");
    c.send_raw(Order::NAME, r#"{"order_id":"ORD_raw","amount":1}"#)
        .delay(Duration::from_millis(300))
        .await
        .unwrap();
    let stats = c.stats::<Order>().await.unwrap();
    assert_eq!((stats.pending(Priority::High), stats.delayed), (1, 1));

    let runtime = spawn_runtime(c, &[Order::NAME], 2).await;
    wait_for("both raw messages handled", || {
        SEEN.load(Ordering::SeqCst) == 2
    })
    .await;
    shutdown(runtime).await;
    assert_eq!(
        WITH_HEADER.load(Ordering::SeqCst),
        1,
        "the header travelled"
    );
    env.assert_eventually_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_payload_must_be_a_json_object_and_nothing_is_stored_otherwise() {
    let env = TestEnv::start("raw_reject").await;
    let c = &env.client;
    for (payload, says) in [
        ("[1,2]", "must be a JSON object"),
        ("\"text\"", "must be a JSON object"),
        ("{\"order_id\":", "not valid JSON"),
    ] {
        let err = c.send_raw(Order::NAME, payload).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption(m) if m.contains(says)),
            "{payload}: {err}"
        );
    }
    let err = c.send_raw("bad topic name", "{}").await.unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert_eq!(c.stats::<Order>().await.unwrap().counter("produced"), 0);
    assert!(env.message_keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_stats_count_sent_duplicates_failures_and_latency() {
    let mut server = start_server(&[]);
    let prefix = rmq_testkit::unique_prefix("producer_stats");
    let c = Client::connect(config(&server, &prefix)).await.unwrap();
    let fresh = c.producer_stats();
    assert_eq!((fresh.sent, fresh.failed, fresh.requests), (0, 0, 0));

    c.produce_batch((0..10).map(|i| Order {
        order_id: format!("ORD_{i}"),
        amount: 1.0,
    }))
    .await
    .unwrap();
    for _ in 0..2 {
        c.send(Order {
            order_id: "ORD_x".into(),
            amount: 1.0,
        })
        .id("same")
        .await
        .unwrap();
    }
    let ok = c.producer_stats();
    assert_eq!(
        (ok.sent, ok.duplicates, ok.failed, ok.requests),
        (11, 1, 0, 3)
    );
    assert!(
        ok.max_latency >= ok.avg_latency && ok.avg_latency > Duration::ZERO,
        "{ok:?}"
    );
    assert!(ok.rate > 0.0);

    server.kill();
    let err = c
        .produce(Order {
            order_id: "ORD_lost".into(),
            amount: 1.0,
        })
        .await;
    assert!(err.is_err());
    let down = c.producer_stats();
    assert_eq!((down.sent, down.failed, down.requests), (11, 1, 4));
}

/// A client writes whole envelopes once a reply has told it Redis' clock (the first call
/// sends bare bodies): the times in them must still be Redis' -- produced at most 2 ms before
/// Redis stored the message, never after it, and the TTL counted from there -- and every
/// payload must arrive whole, batched or not, delayed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_redis_clock_whoever_writes_them() {
    let env = TestEnv::start("stamped").await;
    let c = &env.client;
    let keys = env.keys(Order::NAME);
    let ttl = Duration::from_secs(60);
    for round in 0..30u64 {
        let before = env.redis_now_ms().await;
        let delay = Duration::from_millis(round % 3 * 1000);
        let single = c
            .send(Order {
                order_id: format!("ORD_{round}"),
                amount: round as f64,
            })
            .delay(delay)
            .ttl(ttl)
            .await
            .unwrap();
        let batch = c
            .produce_batch((0..3).map(|i| Order {
                order_id: format!("ORD_{round}_{i}"),
                amount: 0.5,
            }))
            .await
            .unwrap();
        let after = env.redis_now_ms().await;

        let mut redis = env.redis.clone();
        let check = |stored: String, order_id: String, delay_ms: u64, ttl_ms: u64| {
            let fields: Vec<&str> = stored.splitn(4, '|').collect();
            let produced: u64 = fields[1].parse().unwrap();
            let expire: u64 = fields[2].parse().unwrap();
            assert!(
                before.saturating_sub(2) <= produced && produced <= after,
                "round {round}: produced at {produced}, stored between {before} and {after}"
            );
            let want_expire = if ttl_ms > 0 {
                produced + delay_ms + ttl_ms
            } else {
                0
            };
            assert_eq!(expire, want_expire, "round {round}: {stored}");
            let body = fields[3];
            assert!(
                body.starts_with(&format!("0|{{\"order_id\":\"{order_id}\",\"amount\":"))
                    && body.ends_with('}'),
                "round {round}: {stored}"
            );
        };
        let stored: String = redis::cmd("HGET")
            .arg(&keys.messages)
            .arg(single.id.as_str())
            .query_async(&mut redis)
            .await
            .unwrap();
        check(
            stored,
            format!("ORD_{round}"),
            delay.as_millis() as u64,
            60_000,
        );
        for (i, id) in batch.iter().enumerate() {
            let stored: String = redis::cmd("HGET")
                .arg(&keys.messages)
                .arg(id.as_str())
                .query_async(&mut redis)
                .await
                .unwrap();
            // the batch has the configured default TTL
            let ttl_ms = c.config().message_ttl.as_millis() as u64;
            check(stored, format!("ORD_{round}_{i}"), 0, ttl_ms);
        }
    }
}

#[topic("producer.small_one")]
#[derive(Debug, Serialize, Deserialize)]
struct SmallOne {
    n: u32,
}

#[handler]
async fn small_one(_m: SmallOne) {}

#[topic("producer.small_batch")]
#[derive(Debug, Serialize, Deserialize)]
struct SmallBatch {
    n: u32,
}

#[handler]
async fn small_batch(_m: SmallBatch) {}

/// Checks that `queue` (a list or a zset: `range` is LRANGE or ZRANGE) holds `n` ids and `m`
/// holds exactly their envelopes (the field that converts the hash is gone again).
async fn assert_holds_exactly(env: &TestEnv, keys: &TopicKeys, range: &str, queue: &str, n: usize) {
    let mut queued: Vec<String> = redis::cmd(range)
        .arg(queue)
        .arg(0)
        .arg(-1)
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    let mut stored: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.messages)
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    queued.sort();
    stored.sort();
    assert_eq!(queued.len(), n);
    assert_eq!(stored, queued, "the hash holds exactly the queued messages");
}

/// Small envelopes would keep the hash of a topic's messages a listpack up to 512 of them,
/// and every store, fetch and ack would scan it whole. Once a pending list reaches 32 (one
/// send at a time) or a batch takes the hash past 32, it is a hashtable, and it holds the
/// messages and nothing else.
#[tokio::test]
async fn a_deep_queue_of_small_messages_keeps_them_in_a_hashtable() {
    let env = TestEnv::start("small_spread").await;
    let one = env.keys(SmallOne::NAME);
    for n in 0..31 {
        SmallOne { n }.send().via(&env.client).await.expect("send");
    }
    assert_eq!(env.encoding(&one.messages).await, "listpack");
    SmallOne { n: 31 }
        .send()
        .via(&env.client)
        .await
        .expect("send");
    assert_eq!(env.encoding(&one.messages).await, "hashtable");

    let batch = env.keys(SmallBatch::NAME);
    let first: Vec<SmallBatch> = (0..20).map(|n| SmallBatch { n }).collect();
    env.client.produce_batch(first).await.expect("batch");
    assert_eq!(env.encoding(&batch.messages).await, "listpack");
    let second: Vec<SmallBatch> = (20..40).map(|n| SmallBatch { n }).collect();
    env.client.produce_batch(second).await.expect("batch");
    assert_eq!(env.encoding(&batch.messages).await, "hashtable");

    for (keys, n) in [(&one, 32), (&batch, 40)] {
        assert_holds_exactly(&env, keys, "LRANGE", &keys.pending[1], n).await;
    }
}

#[topic("producer.small_later")]
#[derive(Debug, Serialize, Deserialize)]
struct SmallLater {
    n: u32,
}

/// Small delayed messages sent one at a time: a delayed send has no free measure of the
/// queue's depth, so every 32nd message produced to a topic, if delayed, looks at `m`; the
/// 32nd of these finds 32 envelopes and makes it a hashtable, which then holds exactly the
/// delayed messages.
#[tokio::test]
async fn small_delayed_sends_keep_them_in_a_hashtable_once_the_queue_is_deep() {
    let env = TestEnv::start("small_later").await;
    let keys = env.keys(SmallLater::NAME);
    for n in 0..32 {
        if n == 31 {
            assert_eq!(env.encoding(&keys.messages).await, "listpack");
        }
        SmallLater { n }
            .send()
            .delay(Duration::from_secs(60))
            .via(&env.client)
            .await
            .expect("send");
    }
    assert_eq!(env.encoding(&keys.messages).await, "hashtable");
    assert_holds_exactly(&env, &keys, "ZRANGE", &keys.delayed, 32).await;
}

/// produce.lua's compact form (a stamped `send()`: clock, stamp, id, envelope, delay). A
/// stamp Redis refuses (here one from 2001) is rewritten from Redis' clock with the
/// envelope's own priority, delay and TTL; a call whose envelope has no header is refused
/// with a clear error, and nothing of it is stored.
#[tokio::test]
async fn a_compact_send_keeps_its_header_fields_and_a_malformed_one_stores_nothing() {
    let env = TestEnv::start("producer_compact").await;
    let k = env.keys("producer.compact");
    let mut redis = env.redis.clone();
    // priority low (2), stamped at 1_000_000_000_000 ms, due 1.5 s later, TTL 60 s: the
    // client's expiry is the stamp + 1_500 (the delay in whole ms, rounded up) + 60_000
    let mut call = eval(PRODUCE_LUA, &k.for_produce());
    call.arg("")
        .arg(1_000_000_000_000u64)
        .arg("c1")
        .arg(r#"2|1000000000000|1000000061500|0|{"n":1}"#)
        .arg(1_500_000);
    let reply: Vec<redis::Value> = call.query_async(&mut redis).await.expect("produce.lua");
    assert_eq!(
        reply.get(1),
        Some(&redis::Value::Int(0)),
        "the stamp is refused: {reply:?}"
    );
    let envelope: String = redis::cmd("HGET")
        .arg(&k.messages)
        .arg("c1")
        .query_async(&mut redis)
        .await
        .expect("HGET");
    let fields: Vec<&str> = envelope.splitn(5, '|').collect();
    let produced: u64 = fields[1].parse().expect("produced_ms");
    let now = env.redis_now_ms().await;
    assert!(produced <= now && produced + 5_000 > now, "{envelope}");
    assert_eq!(fields[0], "2", "priority kept: {envelope}");
    assert_eq!(
        fields[2].parse::<u64>().expect("expire_ms"),
        produced + 1_500 + 60_000,
        "TTL counted from when it falls due: {envelope}"
    );
    assert_eq!(&fields[3..], ["0", r#"{"n":1}"#]);
    assert_eq!(env.len(&k.delayed).await, 1, "delayed, not ready");

    let mut bad = eval(PRODUCE_LUA, &k.for_produce());
    bad.arg("")
        .arg(1_000_000_000_000u64)
        .arg("c2")
        .arg(r#"{"n":2}"#);
    let err = bad
        .query_async::<redis::Value>(&mut redis)
        .await
        .expect_err("an envelope without its header");
    assert!(err.to_string().contains("malformed compact call"), "{err}");
    let stored: bool = redis::cmd("HEXISTS")
        .arg(&k.messages)
        .arg("c2")
        .query_async(&mut redis)
        .await
        .expect("HEXISTS");
    assert!(!stored, "nothing of a refused call is stored");
}

#[topic("producer.many")]
#[derive(Debug, Serialize, Deserialize)]
struct Many {
    n: u32,
}

/// (n, id) of each delivered `Many`.
static MANY: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

#[handler(concurrency = 8)]
async fn many(m: Many, ctx: Context) {
    MANY.lock().unwrap().push((m.n, ctx.id().to_string()));
}

/// Sends that tasks start while two sends to the topic are on their way go together, in
/// shared calls, and each keeps its own outcome: its own generated id, or of ten sends with
/// one explicit id, one stored and nine duplicates. Each message is stored once, in its
/// priority's list, and delivered once under the id its send returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_at_the_same_time_share_calls_and_each_keeps_its_outcome() {
    let env = TestEnv::start("producer_many").await;
    let keys = env.keys(Many::NAME);
    // Redis holds the first two sends' calls, so the other sends wait for them
    pause_writes(&mut env.redis.clone(), 200).await;
    let sends: Vec<_> = (0..100u32)
        .map(|n| {
            let client = env.client.clone();
            tokio::spawn(async move {
                let mut send = Many { n }.send().via(&client);
                if n % 2 == 0 {
                    send = send.priority(Priority::High);
                }
                if n < 10 {
                    send = send.id("same");
                }
                (n, send.await)
            })
        })
        .collect();
    let (mut stored, mut duplicates) = (Vec::new(), 0);
    for send in sends {
        let (n, produced) = within("a send", PATIENCE, send).await.unwrap();
        let produced = produced.expect("send");
        if produced.duplicate {
            assert!(n < 10, "send {n} reported a duplicate");
            duplicates += 1;
        } else {
            stored.push((n, produced.id.to_string()));
        }
    }
    assert_eq!(duplicates, 9);
    assert_eq!(stored.len(), 91);
    let calls = env.command_calls("evalsha").await;
    assert!(calls < 10, "100 sends took {calls} script calls");
    let high = stored.iter().filter(|(n, _)| n % 2 == 0).count();
    assert_eq!(env.len(&keys.pending[0]).await, high);
    assert_eq!(env.len(&keys.pending[1]).await, 91 - high);
    assert_eq!(env.stat(Many::NAME, "produced").await, 91);

    let handle = spawn_runtime(&env.client, &[Many::NAME], 8).await;
    wait_for("91 deliveries", || MANY.lock().unwrap().len() >= 91).await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;
    let mut delivered = MANY.lock().unwrap().clone();
    delivered.sort_unstable();
    stored.sort_unstable();
    assert_eq!(
        delivered, stored,
        "each stored message once, under its send's id"
    );
}

#[topic("producer.handed")]
#[derive(Debug, Serialize, Deserialize)]
struct Handed {
    n: u32,
}

#[handler]
async fn handed(_m: Handed) {}

/// The sends whose calls are on their way may be dropped (their tasks aborted, a timeout
/// around them): the sends that waited for those calls go all the same, each stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_dropped_on_their_way_still_hand_over_the_sends_waiting_for_them() {
    let env = TestEnv::start("producer_handed").await;
    pause_writes(&mut env.redis.clone(), 300).await;
    // as many sends as a client has calls on their way to a topic at most
    let first: Vec<_> = (0..2u32)
        .map(|n| {
            let client = env.client.clone();
            tokio::spawn(async move { Handed { n }.send().via(&client).await })
        })
        .collect();
    // their calls are on their way, held by Redis
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting: Vec<_> = (2..7u32)
        .map(|n| {
            let client = env.client.clone();
            tokio::spawn(async move { Handed { n }.send().via(&client).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for send in &first {
        send.abort();
    }
    let mut ids = Vec::new();
    for send in waiting {
        let produced = within("a waiting send", PATIENCE, send)
            .await
            .unwrap()
            .expect("send");
        ids.push(produced.id.to_string());
    }
    let pending = env.pending_ids(Handed::NAME).await;
    for id in &ids {
        assert_eq!(
            pending.iter().filter(|p| *p == id).count(),
            1,
            "{id} in {pending:?}"
        );
    }
    // the dropped sends' calls had reached Redis, which ran them after the pause
    assert_eq!(pending.len(), 7, "{pending:?}");
}

#[topic("producer.refused")]
#[derive(Debug, Serialize, Deserialize)]
struct Refused {
    n: u32,
}

#[handler]
async fn refused(_m: Refused) {}

/// A Redis out of memory refuses the calls that sends at the same time share: each send
/// gets Redis' own reason, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_sharing_a_refused_call_each_get_redis_reason() {
    let env = TestEnv::start("producer_refused").await;
    let mut redis = env.redis.clone();
    pause_writes(&mut redis, 200).await;
    config_set(&mut redis, "maxmemory", "1").await;
    let sends: Vec<_> = (0..10u32)
        .map(|n| {
            let client = env.client.clone();
            tokio::spawn(async move { Refused { n }.send().via(&client).await })
        })
        .collect();
    for send in sends {
        let refused = within("a send", PATIENCE, send)
            .await
            .unwrap()
            .expect_err("a full Redis stores nothing");
        let message = refused.to_string();
        assert!(message.contains("OOM"), "{message}");
    }
    config_set(&mut redis, "maxmemory", "0").await;
    assert!(env.message_keys().await.is_empty());
}

#[topic("producer.stranded")]
#[derive(Debug, Serialize, Deserialize)]
struct Stranded {
    n: u32,
}

#[handler]
async fn stranded(_m: Stranded) {}

/// A send waiting for the calls on their way is told that it was interrupted, with its id,
/// when the runtime that would carry it shuts down before Redis answered: it does not hang.
#[test]
fn a_waiting_send_whose_runtime_shuts_down_is_told_it_was_interrupted() {
    let server = start_server(&[]);
    let prefix = rmq_testkit::unique_prefix("producer_stranded");
    let carrier = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let waiter = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = carrier
        .block_on(Client::connect(config(&server, &prefix)))
        .expect("connect");
    carrier.block_on(async {
        pause_writes(&mut raw_connection(&server.url()).await, 2000).await;
    });
    // two sends on their way (Redis holds them) on the carrier runtime ...
    for n in 0..2u32 {
        let client = client.clone();
        carrier.spawn(async move { Stranded { n }.send().via(&client).await });
    }
    std::thread::sleep(Duration::from_millis(100));
    // ... a third waits for them, on another runtime
    let client3 = client.clone();
    let waiting = waiter.spawn(async move { Stranded { n: 2 }.send().via(&client3).await });
    std::thread::sleep(Duration::from_millis(100));
    drop(carrier);
    let outcome = waiter
        .block_on(async { tokio::time::timeout(PATIENCE, waiting).await })
        .expect("the waiting send returned")
        .unwrap();
    match outcome {
        Err(Error::Interrupted { id }) => assert!(!id.is_empty()),
        other => panic!("expected Error::Interrupted, got {other:?}"),
    }
}
