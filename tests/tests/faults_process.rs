//! Consumer processes that die, stall or are stopped: a SIGKILLed consumer's message is
//! completed by another once its lease lapses; a message that kills every consumer ends in
//! the dead-letter queue after retries + 1 attempts ("consumer lost"); a handler running
//! three leases long keeps its lease; SIGTERM under load loses nothing and completes
//! nothing twice (MX-RMQ needs 30 min to recover and abandons work on shutdown;
//! LESSONS.md §1).
//!
//! Each test starts its own redis-server and `rmq-test-consumer` processes
//! (`src/bin/rmq-test-consumer.rs`), which append `start|done <id> <attempt> <pid>` to one
//! shared log, so deliveries are counted exactly across processes.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::consumer::*;
use common::*;
use rmq_runtime::prelude::*;
use rmq_tests::fault::{Action, Work, SLEEP_CAP_ENV};

/// The lease of every consumer in these tests.
const LEASE: Duration = Duration::from_secs(1);
const LEASE_ENV: (&str, &str) = ("MQ_LEASE_DURATION", "1s");

/// How long a consumer may take to exit after SIGTERM when nothing is running.
const EXIT_PATIENCE: Duration = Duration::from_secs(10);

async fn lease_deadline(env: &TestEnv, id: &str) -> Option<u64> {
    env.lease(Work::NAME, id)
        .await
        .map(|(_, deadline)| deadline as u64)
}

/// Produces `Work { n: 1, action }`; its id.
async fn produce_one(f: &FaultEnv, action: Action) -> String {
    f.env
        .client
        .produce(Work { n: 1, action })
        .await
        .expect("produce")
        .into_string()
}

fn stat(stats: &std::collections::HashMap<String, i64>, name: &str) -> i64 {
    stats.get(name).copied().unwrap_or(0)
}

/// A consumer process is SIGKILLed in the middle of a handler. An idle second consumer
/// (no new traffic reaches it) picks the message up once the lease lapses and completes
/// it: exactly two deliveries, the first never finished, the second finished, nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_consumer_message_is_completed_by_another_after_the_lease() {
    let mut f = FaultEnv::start("fault_sigkill", &[]).await;
    // No safety-net poll within the test: only the timer armed for the lease deadline can
    // bring the message back.
    let no_poll = ("MQ_POLL_INTERVAL", "60s");
    let mut a = f
        .consumer("a", &[LEASE_ENV, no_poll, ("MQ_MAX_WORKERS", "2")])
        .await;
    let id = produce_one(&f, Action::Sleep { ms: 30_000 }).await;
    let a_pid = a.pid;
    f.wait_log("consumer a to start the message", PATIENCE, |d| {
        d.starts(&id).iter().any(|l| l.pid == a_pid)
    })
    .await;
    // b sleeps at most 50 ms per message, so its delivery finishes.
    let b = f
        .consumer(
            "b",
            &[
                LEASE_ENV,
                ("MQ_MAX_WORKERS", "2"),
                no_poll,
                (SLEEP_CAP_ENV, "50"),
            ],
        )
        .await;
    // let b make its first fetch and go idle, then kill a mid-handler
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    a.sigkill();

    let b_pid = b.pid;
    let recovered = f
        .wait_log(
            "consumer b to start the message after a was killed",
            LEASE + Duration::from_secs(9),
            |d| d.starts(&id).iter().any(|l| l.pid == b_pid),
        )
        .await;
    f.wait_log("consumer b to finish the message", PATIENCE, |d| {
        !d.dones(&id).is_empty()
    })
    .await;
    let recovered_total = killed.elapsed();
    f.env.assert_eventually_clean().await;
    // watch for a third delivery for longer than a lease
    tokio::time::sleep(LEASE + QUIET).await;
    let d = f.deliveries();
    eprintln!(
        "SIGKILL recovery: second delivery started {recovered:?} after the kill (lease {LEASE:?}), \
         finished {recovered_total:?} after it"
    );
    assert_eq!(
        d.summary(&id),
        vec![
            ("start".to_string(), 1, a_pid),
            ("start".to_string(), 2, b_pid),
            ("done".to_string(), 2, b_pid),
        ],
        "deliveries of {id}: (event, attempt, pid)"
    );
    assert_eq!(d.by_id.len(), 1, "unexpected messages: {:?}", d.by_id);
    assert!(
        recovered < LEASE + Duration::from_secs(3),
        "recovery took {recovered:?} with a {LEASE:?} lease"
    );
    let left = f.env.message_keys().await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let stats = f.env.stats(Work::NAME).await;
    assert_eq!(stat(&stats, "completed"), 1, "stats: {stats:?}");
    assert_eq!(stat(&stats, "lost"), 1, "stats: {stats:?}");
    assert_eq!(stat(&stats, "dead"), 0, "stats: {stats:?}");

    let mut b = b;
    let took = b.stop_gracefully(EXIT_PATIENCE).await;
    eprintln!("idle consumer b exited {took:?} after SIGTERM");
}

/// A message whose handler aborts the process, every time. Consumers are restarted as
/// they die (one at a time, one worker each, so the poison message is the only one in
/// flight when it kills its consumer). After retries + 1 = 3 starts the message is in the
/// dead-letter queue with reason "consumer lost"; every other message completed exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_every_consumer_is_dead_lettered_after_three_attempts() {
    let mut f = FaultEnv::start("fault_poison", &[]).await;
    let vars = [LEASE_ENV, ("MQ_MAX_WORKERS", "1")];
    let client = f.env.client.clone();
    let poison = client
        .produce(Work {
            n: 0,
            action: Action::Abort,
        })
        .await
        .expect("produce poison")
        .into_string();
    let others: Vec<String> = client
        .produce_batch((1..=30).map(|n| Work {
            n,
            action: Action::Sleep { ms: 10 },
        }))
        .await
        .expect("produce others")
        .into_iter()
        .map(MessageId::into_string)
        .collect();

    let began = Instant::now();
    let deadline = began + Duration::from_secs(40);
    let mut deaths = Vec::new();
    let mut consumer = f.consumer("c1", &vars).await;
    let mut restarts = 1;
    loop {
        if let Some(status) = consumer.try_exit() {
            deaths.push((status, began.elapsed(), consumer.stderr()));
            assert!(
                deaths.len() <= 3,
                "the poison message killed a 4th consumer: {deaths:?}\nlog: {:?}",
                f.deliveries().summary(&poison)
            );
            restarts += 1;
            consumer = f.consumer(&format!("c{restarts}"), &vars).await;
        }
        let dead = client.dlq::<Work>().count().await.expect("dlq count");
        let d = f.deliveries();
        if dead >= 1 && others.iter().all(|id| !d.dones(id).is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "after {:?}: {} death(s), {dead} dead letter(s), {}/{} others done; \
                 poison: {:?}\nRedis:\n{}",
                began.elapsed(),
                deaths.len(),
                others.iter().filter(|id| !d.dones(id).is_empty()).count(),
                others.len(),
                d.summary(&poison),
                f.env.describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_dlq = began.elapsed();
    // the last consumer is alive and idle: no more starts of anything for over a lease
    tokio::time::sleep(LEASE + QUIET).await;
    let took = consumer.stop_gracefully(EXIT_PATIENCE).await;

    let d = f.deliveries();
    let death_times: Vec<Duration> = deaths.iter().map(|(_, at, _)| *at).collect();
    eprintln!(
        "poison message: consumers died at {death_times:?}; dead-lettered {to_dlq:?} after the \
         first start; last consumer exited {took:?} after SIGTERM"
    );
    for (status, _, stderr) in &deaths {
        assert_eq!(
            signal_of(status),
            Some(6),
            "a consumer died of something other than SIGABRT: {status}; stderr:\n{stderr}"
        );
    }
    assert_eq!(deaths.len(), 3, "consumers killed by the poison message");
    let starts: Vec<u32> = d.starts(&poison).iter().map(|l| l.attempt).collect();
    assert_eq!(starts, [1, 2, 3], "attempts of the poison message");
    let pids: HashSet<u32> = d.starts(&poison).iter().map(|l| l.pid).collect();
    assert_eq!(pids.len(), 3, "each attempt in its own process");
    assert!(d.dones(&poison).is_empty());

    let dead = client.dead_letters::<Work>().await.expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id.as_str(), poison);
    assert_eq!(dead[0].reason, "consumer lost", "{:?}", dead[0]);
    assert_eq!(dead[0].attempts, 3, "{:?}", dead[0]);
    assert!(
        dead[0].error.contains("consumer lost") || dead[0].error.contains("lease"),
        "error of a lost consumer: {:?}",
        dead[0].error
    );
    assert_eq!(client.dlq::<Work>().count().await.expect("count"), 1);

    for id in &others {
        assert_eq!(
            d.summary(id)
                .iter()
                .map(|(e, a, _)| (e.as_str(), *a))
                .collect::<Vec<_>>(),
            [("start", 1), ("done", 1)],
            "message {id} was affected by the poison message"
        );
    }
    let keys = f.env.keys(Work::NAME);
    let state = f.env.describe().await;
    assert_eq!(f.env.in_flight(Work::NAME).await, 0, "{state}");
    assert_eq!(f.env.len(&keys.delayed).await, 0, "{state}");
    assert!(f.env.pending_ids(Work::NAME).await.is_empty(), "{state}");
    assert_eq!(
        f.env.len(&keys.messages).await,
        1,
        "only the dead letter's envelope stays:\n{state}"
    );
    let stats = f.env.stats(Work::NAME).await;
    assert_eq!(stat(&stats, "completed"), 30, "stats: {stats:?}");
    assert_eq!(stat(&stats, "dead"), 1, "stats: {stats:?}");
    assert_eq!(stat(&stats, "lost"), 3, "stats: {stats:?}");
}

/// A handler that runs three leases long keeps its lease (renewed while it runs): it is
/// delivered once, to one consumer, while a second idle consumer would take the message
/// the moment the lease lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_three_leases_long_is_delivered_once() {
    let mut f = FaultEnv::start("fault_renew", &[]).await;
    let vars = [LEASE_ENV, ("MQ_MAX_WORKERS", "2")];
    let mut a = f.consumer("a", &vars).await;
    let mut b = f.consumer("b", &vars).await;
    let run = LEASE * 3;
    let id = produce_one(
        &f,
        Action::Sleep {
            ms: run.as_millis() as u64,
        },
    )
    .await;
    f.wait_log("a consumer to start the message", PATIENCE, |d| {
        !d.starts(&id).is_empty()
    })
    .await;
    let started = Instant::now();
    // While it runs, the lease must always lie in the future and move forward.
    let mut deadlines = Vec::new();
    while started.elapsed() < run - Duration::from_millis(300) {
        let now = f.env.redis_now_ms().await;
        match lease_deadline(&f.env, &id).await {
            Some(deadline) => {
                assert!(
                    deadline > now,
                    "lease lapsed {} ms ago while the handler ran ({:?} in)",
                    now - deadline,
                    started.elapsed()
                );
                deadlines.push(deadline);
            }
            None => panic!(
                "{id} not in flight {:?} into its handler; Redis:\n{}",
                started.elapsed(),
                f.env.describe().await
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.wait_log("the message to finish", PATIENCE, |d| {
        !d.dones(&id).is_empty()
    })
    .await;
    tokio::time::sleep(LEASE + QUIET).await;

    let renewals = deadlines.windows(2).filter(|w| w[1] > w[0]).count();
    eprintln!(
        "lease renewal: {renewals} renewals seen in {} samples over {:?} (lease {LEASE:?})",
        deadlines.len(),
        run
    );
    assert!(
        renewals >= 2,
        "the lease deadline never moved forward: {deadlines:?}"
    );
    let d = f.deliveries();
    let summary = d.summary(&id);
    assert_eq!(summary.len(), 2, "deliveries of {id}: {summary:?}");
    assert_eq!((summary[0].0.as_str(), summary[0].1), ("start", 1));
    assert_eq!((summary[1].0.as_str(), summary[1].1), ("done", 1));
    assert_eq!(summary[0].2, summary[1].2, "finished by another process");
    let stats = f.env.stats(Work::NAME).await;
    assert_eq!(stat(&stats, "lost"), 0, "consumer lost: {stats:?}");
    assert_eq!(stat(&stats, "completed"), 1, "stats: {stats:?}");
    f.env.assert_eventually_clean().await;

    a.stop_gracefully(EXIT_PATIENCE).await;
    b.stop_gracefully(EXIT_PATIENCE).await;
}

/// The same, beside a stream of instant messages that keeps the consumer busy with round
/// trips the whole time: renewal must not be starved by the fetch loop, or the consumer
/// reclaims its own long handler's lapsed lease and runs the message a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handler_beside_a_busy_stream_keeps_its_lease() {
    const SHORT: u64 = 20_000;
    let mut f = FaultEnv::start("fault_renew_busy", &[]).await;
    let client = f.env.client.clone();
    let run = LEASE * 3;
    let long = client
        .produce(Work {
            n: 0,
            action: Action::Sleep {
                ms: run.as_millis() as u64,
            },
        })
        .await
        .expect("produce")
        .into_string();
    let mut short = Vec::new();
    for start in (1..=SHORT).step_by(1000) {
        short.extend(
            client
                .produce_batch((start..start + 1000).map(|n| Work {
                    n,
                    action: Action::Sleep { ms: 0 },
                }))
                .await
                .expect("produce"),
        );
    }
    let mut c = f
        .consumer("busy", &[LEASE_ENV, ("MQ_MAX_WORKERS", "4")])
        .await;
    f.wait_log("the long message to finish", Duration::from_secs(20), |d| {
        !d.dones(&long).is_empty()
    })
    .await;
    let short_done_then = f.deliveries().done_count() - 1;
    f.wait_log("every message to finish", Duration::from_secs(40), |d| {
        d.done_count() as u64 > SHORT
    })
    .await;
    tokio::time::sleep(QUIET).await;
    c.stop_gracefully(EXIT_PATIENCE).await;

    eprintln!(
        "busy renewal: {short_done_then} short messages completed while the {run:?} handler ran"
    );
    assert!(
        short_done_then as u64 >= SHORT / 10,
        "the consumer was not busy while the long handler ran ({short_done_then} completions)"
    );
    let d = f.deliveries();
    let summary: Vec<(String, u32)> = d
        .summary(&long)
        .into_iter()
        .map(|(e, a, _)| (e, a))
        .collect();
    assert_eq!(
        summary,
        [("start".to_string(), 1), ("done".to_string(), 1)],
        "deliveries of the long message"
    );
    let stats = f.env.stats(Work::NAME).await;
    assert_eq!(stat(&stats, "lost"), 0, "consumer lost: {stats:?}");
    assert_eq!(
        stat(&stats, "completed"),
        SHORT as i64 + 1,
        "stats: {stats:?}"
    );
    f.env.assert_eventually_clean().await;
}

/// SIGTERM to a consumer process working through a backlog (8 workers, handlers of
/// 5–20 ms, plus 4 handlers that would run a minute): it exits with status 0 within its
/// shutdown budget plus slack; every message has either completed exactly once or is back
/// in pending (the cancelled ones at the front, their attempt not counted); nothing is in
/// flight, nothing is lost. A fresh consumer then completes the rest exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_completes_nothing_twice() {
    const N: u64 = 2000;
    const STUCK: u64 = 4;
    const BUDGET: Duration = Duration::from_secs(2);
    let mut f = FaultEnv::start("fault_sigterm", &[]).await;
    let client = f.env.client.clone();
    let mut produced: Vec<String> = Vec::new();
    // first the handlers that outlive the budget, so they are running at SIGTERM
    produced.extend(
        client
            .produce_batch((0..STUCK).map(|n| Work {
                n,
                action: Action::Sleep { ms: 60_000 },
            }))
            .await
            .expect("produce")
            .into_iter()
            .map(MessageId::into_string),
    );
    let stuck: Vec<String> = produced.clone();
    for chunk in (STUCK..STUCK + N).collect::<Vec<_>>().chunks(500) {
        produced.extend(
            client
                .produce_batch(chunk.iter().map(|&n| Work {
                    n,
                    action: Action::Sleep { ms: 5 + n % 16 },
                }))
                .await
                .expect("produce")
                .into_iter()
                .map(MessageId::into_string),
        );
    }
    let total = produced.len();

    let vars = [
        ("MQ_MAX_WORKERS", "8"),
        ("MQ_SHUTDOWN_TIMEOUT", "2s"),
        ("MQ_LEASE_DURATION", "30s"),
    ];
    let mut c = f.consumer("loaded", &vars).await;
    f.wait_log("300 completions", Duration::from_secs(30), |d| {
        d.done_count() >= 300
    })
    .await;
    let done_at_signal = f.deliveries().done_count();
    let asked = Instant::now();
    c.sigterm();
    let status = c.wait_exit(BUDGET + Duration::from_secs(8)).await;
    let took = asked.elapsed();
    let Some(status) = status else {
        panic!(
            "still running {took:?} after SIGTERM (budget {BUDGET:?}); stderr:\n{}",
            c.stderr()
        );
    };
    eprintln!(
        "SIGTERM under load: exited {took:?} after the signal (budget {BUDGET:?}), \
         {done_at_signal} of {total} completed at the signal"
    );
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        c.stderr()
    );
    assert!(
        took >= BUDGET - Duration::from_millis(300),
        "exited after {took:?}: it did not give running handlers their {BUDGET:?}"
    );

    // The state after the shutdown.
    let d = f.deliveries();
    let keys = f.env.keys(Work::NAME);
    let state = f.env.describe().await;
    assert_eq!(
        f.env.in_flight(Work::NAME).await,
        0,
        "left in flight:\n{state}"
    );
    assert_eq!(f.env.len(&keys.delayed).await, 0, "{state}");
    assert_eq!(f.env.len(&keys.dead).await, 0, "{state}");
    let done: BTreeSet<&str> = d.done_ids().into_iter().collect();
    for id in &done {
        assert_eq!(
            d.dones(id).len(),
            1,
            "{id} completed twice: {:?}",
            d.summary(id)
        );
        assert_eq!(d.starts(id).len(), 1, "{id}: {:?}", d.summary(id));
    }
    let pending = f.env.pending_ids(Work::NAME).await;
    let pending_set: BTreeSet<&str> = pending.iter().map(String::as_str).collect();
    assert_eq!(pending.len(), pending_set.len(), "an id is pending twice");
    let produced_set: BTreeSet<&str> = produced.iter().map(String::as_str).collect();
    let not_done: BTreeSet<&str> = produced_set.difference(&done).copied().collect();
    assert_eq!(
        pending_set,
        not_done,
        "pending ({}) must be exactly the produced messages not completed ({}); \
         completed {}, produced {total}",
        pending_set.len(),
        not_done.len(),
        done.len()
    );
    assert!(done.len() < total, "the shutdown drained everything");
    assert_eq!(
        f.env.len(&keys.messages).await,
        pending.len(),
        "envelopes stored vs pending:\n{state}"
    );
    // the 4 cancelled handlers are back, at the front of their level
    for id in &stuck {
        assert_eq!(d.starts(id).len(), 1, "{id}: {:?}", d.summary(id));
        assert!(d.dones(id).is_empty());
    }
    let front: BTreeSet<&str> = pending
        .iter()
        .take(STUCK as usize)
        .map(String::as_str)
        .collect();
    let stuck_set: BTreeSet<&str> = stuck.iter().map(String::as_str).collect();
    assert_eq!(
        front, stuck_set,
        "the cancelled messages must be next in line"
    );

    // A fresh consumer drains the rest, exactly once each; the cancelled messages were put
    // back without counting an attempt.
    let drain_started = Instant::now();
    let mut c2 = f
        .consumer("drain", &[vars[0], vars[1], vars[2], (SLEEP_CAP_ENV, "10")])
        .await;
    f.wait_log("every message completed", Duration::from_secs(40), |d| {
        d.done_count() >= total
    })
    .await;
    let drain_took = drain_started.elapsed();
    f.env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    c2.stop_gracefully(EXIT_PATIENCE).await;
    eprintln!(
        "drained the remaining {} messages in {drain_took:?}",
        total - done_at_signal.min(total)
    );

    let d = f.deliveries();
    for id in &produced {
        let dones = d.dones(id);
        assert_eq!(dones.len(), 1, "{id}: {:?}", d.summary(id));
    }
    assert_eq!(d.by_id.len(), total, "unknown ids in the log");
    for id in &stuck {
        let attempts: Vec<u32> = d.starts(id).iter().map(|l| l.attempt).collect();
        assert_eq!(
            attempts,
            [1, 1],
            "{id}: a message cancelled by shutdown must come back without an attempt counted"
        );
    }
    for id in not_done.iter().filter(|id| !stuck_set.contains(*id)) {
        assert_eq!(d.starts(id).len(), 1, "{id}: {:?}", d.summary(id));
    }
    let stats = f.env.stats(Work::NAME).await;
    assert_eq!(stat(&stats, "completed"), total as i64, "stats: {stats:?}");
    assert_eq!(stat(&stats, "lost"), 0, "stats: {stats:?}");
}

/// A message produced while the only consumer is idle is handed to it directly (pushed on
/// its channel, leased to it in the same script). If that consumer is stalled (its process
/// stopped, its connection still open) the push is not lost: the lease lapses and another
/// consumer runs the message, as after a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_pushed_to_a_stalled_consumer_is_run_by_another_after_the_lease() {
    let mut f = FaultEnv::start("fault_push_stall", &[]).await;
    let no_poll = ("MQ_POLL_INTERVAL", "60s");
    let mut a = f.consumer("a", &[LEASE_ENV, no_poll]).await;
    f.env.wait_parked(Work::NAME, 1).await;
    a.sigstop().await;
    let id = produce_one(&f, Action::Sleep { ms: 10 }).await;
    // a cannot have fetched it: the producer leased it to a and nothing is pending
    assert_eq!(
        f.env.in_flight(Work::NAME).await,
        1,
        "{}",
        f.env.describe().await
    );
    assert!(f.env.pending_ids(Work::NAME).await.is_empty());
    assert_eq!(f.env.len(&f.env.keys(Work::NAME).waiting).await, 0);

    let b = f.consumer("b", &[LEASE_ENV, no_poll]).await;
    let b_pid = b.pid;
    f.wait_log(
        "consumer b to run the message after a's lease lapsed",
        PATIENCE,
        |d| d.dones(&id).iter().any(|l| l.pid == b_pid),
    )
    .await;
    a.sigkill();
    f.env.assert_eventually_clean().await;
    assert_eq!(
        f.deliveries().summary(&id),
        vec![
            ("start".to_string(), 2, b_pid),
            ("done".to_string(), 2, b_pid)
        ],
        "the pushed delivery (attempt 1) never ran; b ran the second"
    );
    assert_eq!(f.env.stat(Work::NAME, "lost").await, 1);
    assert_eq!(f.env.stat(Work::NAME, "completed").await, 1);
}

/// A consumer killed while parked leaves a member in `waiting`, but its connection is
/// gone: a producer finds nobody listening on its channel and queues the message as usual,
/// so another consumer runs it at once, not after a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_parked_consumer_takes_no_message() {
    let mut f = FaultEnv::start("fault_push_dead", &[]).await;
    let no_poll = ("MQ_POLL_INTERVAL", "60s");
    // the default 30 s lease: waiting for one would fail the test
    let mut a = f.consumer("a", &[no_poll]).await;
    f.env.wait_parked(Work::NAME, 1).await;
    let mut redis = f.env.redis.clone();
    let waiting = f.env.keys(Work::NAME).waiting;
    let parked = |mut redis: redis::aio::MultiplexedConnection| {
        let waiting = waiting.clone();
        async move {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(&waiting)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .expect("ZRANGE waiting");
            members
        }
    };
    let a_member = parked(redis.clone()).await.remove(0);
    let mut b = f.consumer("b", &[no_poll]).await;
    f.env.wait_parked(Work::NAME, 2).await;
    // a dies parked: its member stays until a producer meets it; make it the one a
    // producer tries first (the highest score)
    a.sigkill();
    let _: i64 = redis::cmd("ZADD")
        .arg(&waiting)
        .arg(2_000_000_000_000u64)
        .arg(&a_member)
        .query_async(&mut redis)
        .await
        .expect("ZADD");
    assert_eq!(parked(redis.clone()).await.last(), Some(&a_member));
    let started = Instant::now();
    let id = produce_one(&f, Action::Sleep { ms: 10 }).await;
    let b_pid = b.pid;
    f.wait_log(
        "consumer b to run the message",
        Duration::from_secs(5),
        |d| d.dones(&id).iter().any(|l| l.pid == b_pid),
    )
    .await;
    eprintln!(
        "message run by b {:?} after it was produced",
        started.elapsed()
    );
    assert_eq!(
        f.deliveries().summary(&id),
        vec![
            ("start".to_string(), 1, b_pid),
            ("done".to_string(), 1, b_pid)
        ],
        "one delivery, first attempt"
    );
    assert_eq!(f.env.stat(Work::NAME, "lost").await, 0);
    b.stop_gracefully(EXIT_PATIENCE).await;
    f.env.assert_eventually_clean().await;
}
