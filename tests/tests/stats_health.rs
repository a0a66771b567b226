//! `client.stats::<T>()` and `client.health()` report what Redis really holds and how it
//! is configured.

mod common;

use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use rmq_runtime::TopicStats;
use serde::{Deserialize, Serialize};

#[topic("stats.job", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    fail: bool,
}

#[handler]
async fn job(job: Job) -> Result<(), HandlerError> {
    if job.fail {
        Err(HandlerError::msg("nope"))
    } else {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_state_and_outcome() {
    let env = TestEnv::start("stats").await;
    let c = &env.client;
    for _ in 0..3 {
        c.send(Job { fail: false })
            .priority(Priority::High)
            .await
            .unwrap();
    }
    c.send(Job { fail: false })
        .priority(Priority::Low)
        .await
        .unwrap();
    c.send(Job { fail: true }).await.unwrap();
    c.send(Job { fail: false })
        .delay(Duration::from_secs(60))
        .await
        .unwrap();

    let before = c.stats::<Job>().await.unwrap();
    assert_eq!(before.pending, [3, 1, 1]);
    assert_eq!(before.pending(Priority::High), 3);
    assert_eq!(before.pending_total(), 5);
    assert_eq!((before.delayed, before.in_flight, before.dead), (1, 0, 0));
    assert_eq!(before.counter("produced"), 6);
    assert_eq!(before.counter("completed"), 0);

    let runtime = spawn_runtime(c, &[Job::NAME], 2).await;
    env.wait_for_dead_letters::<Job>(1).await;
    let done = poll(PATIENCE, || async {
        c.stats::<Job>().await.unwrap().counter("completed") == 4
    })
    .await;
    assert!(done, "{:?}", c.stats::<Job>().await);
    shutdown(runtime).await;

    let after = c.topic_stats(Job::NAME).await.unwrap();
    assert_eq!(after.topic, Job::NAME);
    assert_eq!(after.pending, [0, 0, 0]);
    assert_eq!((after.delayed, after.in_flight, after.dead), (1, 0, 1));
    assert_eq!(after.counter("delivered"), 5);
    assert_eq!(after.counter("failed"), 1);
    assert_eq!(after.counter("dead"), 1);
    assert_eq!(after.counter("retried"), 0);
}

#[topic("stats.timed", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Timed {
    sleep_ms: u64,
    fail: bool,
}

#[handler]
async fn timed(job: Timed) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    if job.fail {
        Err(HandlerError::msg("slow and failed"))
    } else {
        Ok(())
    }
}

/// `fast` attempts of no time, then `slow` of 300 ms, the last attempt failing (and
/// dead-lettered: `retries = 0`), run by 4 workers until every attempt is timed; the stats
/// then.
async fn run_timed(env: &TestEnv, fast: usize, slow: usize) -> TopicStats {
    let c = &env.client;
    let total = fast + slow;
    let jobs: Vec<Timed> = (0..total)
        .map(|i| Timed {
            sleep_ms: if i < fast { 0 } else { 300 },
            fail: i + 1 == total,
        })
        .collect();
    c.produce_batch(jobs).await.unwrap();
    let runtime = spawn_runtime(c, &[Timed::NAME], 4).await;
    env.wait_for_dead_letters::<Timed>(1).await;
    let done = poll(PATIENCE, || async {
        c.stats::<Timed>().await.unwrap().handler_time.count == total as u64
    })
    .await;
    shutdown(runtime).await;
    let s = c.stats::<Timed>().await.unwrap();
    assert!(done, "{:?}", s.handler_time);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_times_and_the_current_minute_are_recorded() {
    let env = TestEnv::start("stats_timed").await;
    let c = &env.client;
    let empty = c.stats::<Timed>().await.unwrap();
    assert_eq!(
        (empty.handler_time.count, empty.handler_time.p50()),
        (0, None)
    );
    assert_eq!(empty.per_minute.len(), 60);
    assert!(empty.per_minute.iter().all(|m| m.completed + m.failed == 0));

    // 18 fast (no sleep) and 2 slow (300 ms) attempts, one of them failing
    let s = run_timed(&env, 18, 2).await;

    let t = &s.handler_time;
    assert_eq!(t.buckets.last(), Some(&(Duration::MAX, 20)));
    assert!(
        t.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {t:?}"
    );
    assert!(
        t.sum >= Duration::from_millis(600),
        "two 300 ms attempts: {t:?}"
    );
    assert!(t.p50().unwrap() < Duration::from_millis(50), "{t:?}");
    let p99 = t.p99().unwrap();
    assert!(
        p99 >= Duration::from_millis(250) && p99 <= Duration::from_millis(500),
        "p99 in the bucket holding 300 ms: {t:?}"
    );
    assert!(t.p95().unwrap() <= p99);

    // all in this minute, or split over two if the test crossed a minute boundary
    let recent: Vec<_> = s.per_minute[58..].to_vec();
    assert_eq!(
        recent.iter().map(|m| m.completed).sum::<u64>(),
        19,
        "{recent:?}"
    );
    assert_eq!(
        recent.iter().map(|m| m.failed).sum::<u64>(),
        1,
        "{recent:?}"
    );
    assert!(s.per_minute[..58]
        .iter()
        .all(|m| m.completed + m.failed == 0));
    let last = s.per_minute.last().unwrap().minute;
    let age = std::time::SystemTime::now().duration_since(last).unwrap();
    assert!(
        age < Duration::from_secs(61),
        "the last entry is the current minute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_still_holding_an_hour_old_minute_is_reset() {
    let env = TestEnv::start("stats_ring").await;
    // the slots of this minute and the next hold the same minutes an hour ago, with counts
    // of their own; and a count of handler times as earlier versions kept it, no longer
    // read (the buckets' sum is the count)
    let minute = env.redis_now_ms().await / 60_000;
    let mut stale = redis::cmd("HSET");
    stale
        .arg(&env.keys(Timed::NAME).metrics)
        .arg("hn")
        .arg(1000);
    for m in [minute, minute + 1] {
        let slot = m % 60;
        stale.arg(format!("m{slot}")).arg(m - 60);
        stale.arg(format!("c{slot}")).arg(100);
        stale.arg(format!("f{slot}")).arg(100);
    }
    stale
        .query_async::<()>(&mut env.redis.clone())
        .await
        .unwrap();

    // 3 complete, 1 fails
    let s = run_timed(&env, 4, 0).await;
    let recent = &s.per_minute[58..];
    assert_eq!(
        (
            recent.iter().map(|m| m.completed).sum::<u64>(),
            recent.iter().map(|m| m.failed).sum::<u64>()
        ),
        (3, 1),
        "{recent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_version_eviction_and_persistence() {
    // the harness' server keeps nothing on disk and has the default policy
    let env = TestEnv::start("health_plain").await;
    let h = env.client.health().await.unwrap();
    assert!(
        h.redis_version.starts_with(|c: char| c.is_ascii_digit()),
        "{h:?}"
    );
    assert_eq!(h.maxmemory_policy, "noeviction");
    assert!(!h.aof_enabled && !h.rdb_enabled, "{h:?}");
    assert!(!h.is_healthy());
    assert!(
        h.warnings.iter().any(|w| w.contains("persistence is off")),
        "{h:?}"
    );
    assert!(h.round_trip < Duration::from_secs(1));

    let env = TestEnv::start_configured(
        "health_risky",
        &["--maxmemory-policy", "allkeys-lru", "--appendonly", "yes"],
        |c| c,
    )
    .await;
    let h = env.client.health().await.unwrap();
    assert_eq!(h.maxmemory_policy, "allkeys-lru");
    assert!(h.aof_enabled);
    assert_eq!(h.warnings.len(), 1, "{h:?}");
    assert!(h.warnings[0].contains("noeviction"), "{h:?}");
}
