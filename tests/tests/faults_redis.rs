//! Redis trouble under a running consumer: `redis-server` killed and restarted (AOF with
//! `appendfsync always`) in the middle of 10,000 messages, and `SCRIPT FLUSH` in the middle
//! of a run. The runtime must resume by itself, lose nothing and show no error to handlers
//! (LESSONS.md §4: a pipeline of scripts does not reload them on NOSCRIPT by itself).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// Completions of one topic, by message id: the attempt of each call.
struct Seen {
    calls: AtomicUsize,
    by_id: Mutex<BTreeMap<String, Vec<u32>>>,
}

impl Seen {
    const fn new() -> Seen {
        Seen {
            calls: AtomicUsize::new(0),
            by_id: Mutex::new(BTreeMap::new()),
        }
    }

    fn record(&self, ctx: &Context) {
        self.by_id
            .lock()
            .unwrap()
            .entry(ctx.id().as_str().to_string())
            .or_default()
            .push(ctx.attempt());
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn distinct(&self) -> usize {
        self.by_id.lock().unwrap().len()
    }

    fn snapshot(&self) -> BTreeMap<String, Vec<u32>> {
        self.by_id.lock().unwrap().clone()
    }
}

fn stat(stats: &HashMap<String, i64>, name: &str) -> i64 {
    stats.get(name).copied().unwrap_or(0)
}

/// Produces `n` messages built by `make` in batches of 1000; returns their ids.
async fn produce_many<T: Topic>(client: &Client, n: u64, make: impl Fn(u64) -> T) -> Vec<String> {
    let mut ids = Vec::new();
    for start in (0..n).step_by(1000) {
        let batch: Vec<T> = (start..(start + 1000).min(n)).map(&make).collect();
        ids.extend(
            client
                .produce_batch(batch)
                .await
                .expect("produce")
                .into_iter()
                .map(MessageId::into_string),
        );
    }
    ids
}

/// Waits until `seen.distinct() >= n`; panics with `what` and the Redis state after
/// `timeout`.
async fn wait_distinct(env: &TestEnv, seen: &Seen, n: usize, timeout: Duration, what: &str) {
    let started = Instant::now();
    while seen.distinct() < n {
        if started.elapsed() > timeout {
            panic!(
                "{what}: {} of {n} messages completed after {:?}; Redis holds:\n{}",
                seen.distinct(),
                started.elapsed(),
                env.describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[topic("fault.restart")]
#[derive(Debug, Serialize, Deserialize)]
struct Restart {
    n: u64,
}

static RESTART: Seen = Seen::new();

#[handler]
async fn restart_handler(_msg: Restart, ctx: Context) {
    RESTART.record(&ctx);
}

/// `redis-server` is SIGKILLed, left down for a second and started again (same port, AOF
/// `appendfsync always`) while a runtime works through 10,000 messages. Without any help
/// the runtime reconnects and finishes: 10,000 distinct ids complete, Redis is left clean,
/// the counters agree, and once idle the runtime still hears wake-ups. A message may run
/// twice (at-least-once: its ack or lease may have been lost with the connection); the
/// duplicates are counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_nothing_and_the_runtime_resumes_by_itself() {
    const N: usize = 10_000;
    const DOWN: Duration = Duration::from_secs(1);
    let lease = Duration::from_secs(2);
    let mut env = TestEnv::start_configured(
        "fault_redis_restart",
        &["--appendonly", "yes", "--appendfsync", "always"],
        |config| Config {
            lease_duration: lease,
            ..config
        },
    )
    .await;
    let ids = produce_many(&env.client, N as u64, |n| Restart { n }).await;
    assert_eq!(ids.len(), N);

    let started = Instant::now();
    let handle = spawn_runtime(&env.client, &[Restart::NAME], 8).await;
    while RESTART.distinct() < N / 4 {
        if started.elapsed() > Duration::from_secs(30) {
            panic!("only {} completed before the restart", RESTART.distinct());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before = RESTART.distinct();
    let killed = Instant::now();
    // SIGKILL, one second with nothing listening, then the same port and AOF again
    env.server.kill();
    tokio::time::sleep(DOWN).await;
    tokio::task::block_in_place(|| env.server.restart()).expect("restart redis-server");
    let back = Instant::now();
    let at_restart = RESTART.calls();
    env.reconnect_raw().await;
    assert!(
        before < N,
        "the run finished before the restart; make it longer"
    );

    // resumed: completions move again without anyone touching the runtime
    let resumed = loop {
        if RESTART.calls() > at_restart {
            break back.elapsed();
        }
        if back.elapsed() > Duration::from_secs(20) {
            panic!(
                "no completion within {:?} of Redis coming back; Redis holds:\n{}",
                back.elapsed(),
                env.describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    wait_distinct(
        &env,
        &RESTART,
        N,
        Duration::from_secs(60),
        "after the restart",
    )
    .await;
    let finished = started.elapsed();
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;

    // Idle now: one more message must arrive by the wake-up channel (re-subscribed after
    // the restart), not by the 5 s safety-net poll.
    let produced_at = Instant::now();
    let extra = env
        .client
        .produce(Restart { n: N as u64 })
        .await
        .expect("produce after the restart")
        .into_string();
    wait_distinct(
        &env,
        &RESTART,
        N + 1,
        Duration::from_secs(20),
        "the message produced after the restart",
    )
    .await;
    let idle_latency = produced_at.elapsed();
    env.assert_eventually_clean().await;
    shutdown(handle).await;

    let seen = RESTART.snapshot();
    // leased by a fetch whose reply was lost with the connection: reclaimed after the
    // lease, so their only call has attempt 2
    let late = seen.values().filter(|a| a.len() == 1 && a[0] > 1).count();
    let duplicates: Vec<(&String, &Vec<u32>)> = seen.iter().filter(|(_, a)| a.len() > 1).collect();
    eprintln!(
        "redis restart: {before} of {N} completed when killed; server down for {:?}; first \
         completion {resumed:?} after it was back; all {N} done {finished:?} after the start; \
         {} handler calls, {} message(s) delivered more than once: {:?}; {late} delivered \
         once but on a later attempt",
        back - killed,
        RESTART.calls(),
        duplicates.len(),
        duplicates.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!(
        "a message produced to the idle runtime after the restart completed in {idle_latency:?}"
    );
    assert_eq!(seen.len(), N + 1, "distinct completions");
    assert!(seen.contains_key(&extra));
    for id in &ids {
        assert!(seen.contains_key(id), "{id} never completed");
    }
    let stats = env.stats(Restart::NAME).await;
    eprintln!("stats after the restart run: {stats:?}");
    assert_eq!(stat(&stats, "produced"), N as i64 + 1, "stats: {stats:?}");
    assert_eq!(stat(&stats, "completed"), N as i64 + 1, "stats: {stats:?}");
    assert_eq!(stat(&stats, "dead"), 0, "stats: {stats:?}");
    assert!(
        resumed < Duration::from_secs(10),
        "resumed {resumed:?} after Redis came back"
    );
    assert!(
        idle_latency < Duration::from_secs(2),
        "an idle runtime took {idle_latency:?} to see a new message after the restart \
         (wake-ups lost; only the poll found it?)"
    );
}

#[topic("fault.flush")]
#[derive(Debug, Serialize, Deserialize)]
struct Flush {
    n: u64,
}

static FLUSH: Seen = Seen::new();

#[handler]
async fn flush_handler(_msg: Flush, ctx: Context) {
    FLUSH.record(&ctx);
}

/// `SCRIPT FLUSH` three times while a runtime consumes and once right before a producer
/// produces: nothing fails, nothing is retried, every message runs exactly once on its
/// first attempt, and the producer's batch after a flush succeeds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_is_invisible_to_handlers_and_producers() {
    const FIRST: u64 = 6_000;
    const SECOND: u64 = 1_000;
    let env = TestEnv::start("fault_script_flush").await;
    let mut ids = produce_many(&env.client, FIRST, |n| Flush { n }).await;
    let handle = spawn_runtime(&env.client, &[Flush::NAME], 8).await;

    let flush = |env: &TestEnv| {
        let mut redis = env.redis.clone();
        async move {
            script_flush(&mut redis).await;
        }
    };
    let mut flushed_at = Vec::new();
    for (i, threshold) in [1_000, 3_000, 5_000].into_iter().enumerate() {
        wait_distinct(
            &env,
            &FLUSH,
            threshold,
            Duration::from_secs(30),
            "before a flush",
        )
        .await;
        flush(&env).await;
        flushed_at.push(FLUSH.distinct());
        if i == 0 {
            // the producer meets NOSCRIPT too
            let more = env
                .client
                .produce_batch((FIRST..FIRST + SECOND).map(|n| Flush { n }))
                .await
                .unwrap_or_else(|e| panic!("produce right after SCRIPT FLUSH: {e}"));
            ids.extend(more.into_iter().map(MessageId::into_string));
        }
    }
    let total = (FIRST + SECOND) as usize;
    wait_distinct(
        &env,
        &FLUSH,
        total,
        Duration::from_secs(40),
        "after the flushes",
    )
    .await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    eprintln!("SCRIPT FLUSH with {flushed_at:?} of {total} messages completed");
    assert!(
        flushed_at.iter().all(|&n| n < total),
        "the run finished before the flushes: {flushed_at:?}"
    );
    let seen = FLUSH.snapshot();
    assert_eq!(seen.len(), total);
    for id in &ids {
        assert_eq!(
            seen.get(id).map(Vec::as_slice),
            Some(&[1][..]),
            "{id}: attempts of each call"
        );
    }
    assert_eq!(FLUSH.calls(), total, "handler calls");
    let stats = env.stats(Flush::NAME).await;
    assert_eq!(stat(&stats, "completed"), total as i64, "stats: {stats:?}");
    assert_eq!(stat(&stats, "failed"), 0, "stats: {stats:?}");
    assert_eq!(stat(&stats, "retried"), 0, "stats: {stats:?}");
    assert_eq!(stat(&stats, "dead"), 0, "stats: {stats:?}");
}
