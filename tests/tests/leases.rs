//! Leases while a consumer lives: renewed even when the consumer is busy, and given back
//! without counting an attempt when a shutdown cancels the handler.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("lease.mixed", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Mixed {
    sleep_ms: u64,
}

static LONG_CALLS: AtomicU32 = AtomicU32::new(0);
static SHORT_DONE: AtomicU32 = AtomicU32::new(0);

#[handler]
async fn mixed(job: Mixed) {
    if job.sleep_ms > 0 {
        LONG_CALLS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    } else {
        SHORT_DONE.fetch_add(1, Ordering::SeqCst);
    }
}

/// A handler running 4× the lease beside a steady stream of instant ones in the same
/// topic: the driver is never idle, yet the long handler's lease must be renewed, so it
/// is delivered once and no delivery is counted as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_consumer_still_renews_a_long_handlers_lease() {
    let env = TestEnv::start_configured("lease_busy", &[], |c| Config {
        lease_duration: Duration::from_millis(300),
        ..c
    })
    .await;
    let runtime = spawn_runtime(&env.client, &[Mixed::NAME], 4).await;
    env.client.produce(Mixed { sleep_ms: 1200 }).await.unwrap();

    // keep the topic busy for longer than the long handler runs
    let started = Instant::now();
    let mut produced = 0u32;
    while started.elapsed() < Duration::from_millis(1600) {
        let batch: Vec<Mixed> = (0..20).map(|_| Mixed { sleep_ms: 0 }).collect();
        env.client.produce_batch(batch).await.unwrap();
        produced += 20;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_for("every short message", || {
        SHORT_DONE.load(Ordering::SeqCst) == produced
    })
    .await;
    env.assert_eventually_clean().await;
    shutdown(runtime).await;

    assert_eq!(
        LONG_CALLS.load(Ordering::SeqCst),
        1,
        "the long message ran twice"
    );
    let stats = env.stats(Mixed::NAME).await;
    assert_eq!(stats.get("lost").copied().unwrap_or(0), 0, "{stats:?}");
    assert_eq!(
        stats.get("completed").copied().unwrap_or(0),
        i64::from(produced) + 1
    );
}

#[topic("lease.cancelled", retries = 3, retry_delays = ["10s"])]
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

static SLOW_ATTEMPTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[handler]
async fn slow(_job: Slow, ctx: Context) {
    let first = {
        let mut attempts = SLOW_ATTEMPTS.lock().unwrap();
        attempts.push(ctx.attempt());
        attempts.len() == 1
    };
    if first {
        // far beyond the shutdown budget: cancelled
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// At the shutdown deadline a running handler is cancelled and its message goes back to
/// the front of its level at once, without counting an attempt, so the next consumer runs
/// it as attempt 1 rather than waiting for the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_puts_a_running_message_back_uncounted() {
    let env = TestEnv::start_configured("lease_release", &[], |c| Config {
        shutdown_timeout: Duration::from_millis(300),
        lease_duration: Duration::from_secs(30),
        ..c
    })
    .await;
    let queued = env.client.produce(Slow { n: 1 }).await.unwrap();
    let first = env.client.produce(Slow { n: 0 }).await.unwrap();
    // `first` must be the one running: put it ahead of `queued` with a higher priority
    let running = env
        .client
        .send(Slow { n: 2 })
        .priority(Priority::High)
        .await
        .unwrap()
        .id;
    let runtime = rmq_runtime::builder()
        .client(&env.client)
        .topics([Slow::NAME])
        .max_workers(1)
        .spawn()
        .await
        .unwrap();
    wait_for("the slow handler to start", || {
        !SLOW_ATTEMPTS.lock().unwrap().is_empty()
    })
    .await;

    let stopping = Instant::now();
    shutdown(runtime).await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");

    let keys = env.keys(Slow::NAME);
    assert_eq!(
        env.in_flight(Slow::NAME).await,
        0,
        "{}",
        env.describe().await
    );
    // back at the front of the high level, not counted
    assert_eq!(
        env.pending_ids(Slow::NAME).await.first(),
        Some(&running.to_string())
    );
    let attempts: Option<u32> = redis::cmd("HGET")
        .arg(&keys.attempts)
        .arg(running.as_str())
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(attempts, None, "the cancelled attempt was counted");
    let stats = env.stats(Slow::NAME).await;
    assert_eq!(stats.get("lost").copied().unwrap_or(0), 0);
    assert_eq!(stats.get("failed").copied().unwrap_or(0), 0);

    // the next consumer runs it first, as attempt 1, then the others
    let runtime = spawn_runtime(&env.client, &[Slow::NAME], 1).await;
    wait_for("the cancelled one again, then the other two", || {
        SLOW_ATTEMPTS.lock().unwrap().len() == 4
    })
    .await;
    env.assert_eventually_clean().await;
    shutdown(runtime).await;
    assert_eq!(*SLOW_ATTEMPTS.lock().unwrap(), vec![1, 1, 1, 1]);
    let _ = (queued, first);
}

#[topic("lease.barred", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Barred {
    n: u32,
}

static BARRED_RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[handler]
async fn barred(_job: Barred, ctx: Context) {
    BARRED_RAN.lock().unwrap().push(ctx.id().to_string());
}

/// A lease is "<id>|<token>|<attempt>" and an explicit id may itself hold '|' and digits:
/// the ack must complete the whole id, not a shorter one that another message has. "a"
/// waits, delayed; "a|1" and "q|3|4" (which reads like a lease of "q") run and are
/// acked, which must delete their envelopes and leave "a"'s alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_bars_and_digits_is_completed_whole() {
    let env = TestEnv::start("lease_barred").await;
    let keys = env.keys(Barred::NAME);
    for (id, n, delay) in [
        ("a", 0, Some(3600)),
        ("q", 1, Some(3600)),
        ("a|1", 2, None),
        ("q|3|4", 3, None),
    ] {
        let send = Barred { n }.send().id(id);
        let send = match delay {
            Some(secs) => send.delay(Duration::from_secs(secs)),
            None => send,
        };
        send.via(&env.client).await.expect("produce");
    }
    let runtime = spawn_runtime(&env.client, &[Barred::NAME], 2).await;
    wait_for("both ready messages", || {
        BARRED_RAN.lock().unwrap().len() == 2
    })
    .await;
    // shutdown settles what finished
    shutdown(runtime).await;
    assert_eq!(env.stat(Barred::NAME, "completed").await, 2);

    let mut ran = BARRED_RAN.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["a|1", "q|3|4"]);
    let mut stored: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.messages)
        .query_async(&mut env.redis.clone())
        .await
        .unwrap();
    stored.sort();
    assert_eq!(stored, ["a", "q"], "{}", env.describe().await);
    assert_eq!(env.len(&keys.delayed).await, 2);
}

/// ack.lua takes each lease's id beside it, as the client read it. An id that does not
/// begin its lease completes nothing: it is reported back, and the message keeps its
/// envelope and its lease; with its own id the same lease completes.
#[tokio::test]
async fn an_ack_whose_id_does_not_begin_its_lease_completes_nothing() {
    let env = TestEnv::start("lease_ack_id").await;
    let topic = "lease.ack_id";
    let k = env.keys(topic);
    let mut redis = env.redis.clone();
    env.client
        .send_raw(topic, r#"{"n":1}"#)
        .await
        .expect("send");
    let reply: Vec<redis::Value> = fetch_at(&k, String::new(), 1)
        .query_async(&mut redis)
        .await
        .expect("fetch.lua");
    let Some(redis::Value::BulkString(lease)) = reply.get(5) else {
        panic!("no lease in {reply:?}");
    };
    let lease = String::from_utf8(lease.clone()).expect("a text lease");
    let id = lease.rsplitn(3, '|').last().expect("an id").to_string();

    let ack = |id: &str| {
        let mut call = eval(ACK_LUA, &k.for_ack());
        call.arg("").arg("").arg(&lease).arg(id);
        call
    };
    for wrong in [&id[..id.len() - 1], "another-id"] {
        let (done, stale): (i64, String) =
            ack(wrong).query_async(&mut redis).await.expect("ack.lua");
        assert_eq!((done, stale.as_str()), (0, wrong));
        assert_eq!(env.len(&k.messages).await, 1, "the envelope stays");
        assert_eq!(
            env.len(&k.inflight).await,
            2,
            "the lease (and its pin) stay"
        );
    }
    let (done,): (i64,) = ack(&id).query_async(&mut redis).await.expect("ack.lua");
    assert_eq!(done, 1);
    let left = env.message_keys().await;
    assert!(
        left.iter()
            .all(|key| key.ends_with(":stats") || key.ends_with(":metrics")),
        "{left:?}"
    );
}
