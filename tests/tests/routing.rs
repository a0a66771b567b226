//! Each topic's messages reach that topic's handler only, with the context a handler
//! needs; a busy topic does not starve another.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("route_numbers")]
#[derive(Debug, Serialize, Deserialize)]
struct Number {
    n: u32,
}

#[topic("route_words")]
#[derive(Debug, Serialize, Deserialize)]
struct Word {
    text: String,
}

#[topic("route_audited")]
#[derive(Debug, Serialize, Deserialize)]
struct Audited {
    user_id: u64,
    amount: f64,
}

static NUMBERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static WORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static AUDITED: Mutex<Vec<(u64, f64, Context)>> = Mutex::new(Vec::new());

#[handler]
async fn on_number(msg: Number) -> Result<(), HandlerError> {
    NUMBERS.lock().unwrap().push(msg.n);
    Ok(())
}

#[handler(concurrency = 1)]
async fn on_word(msg: Word) {
    WORDS.lock().unwrap().push(msg.text);
}

#[handler]
async fn on_audited(msg: Audited, ctx: Context) -> anyhow::Result<()> {
    AUDITED.lock().unwrap().push((msg.user_id, msg.amount, ctx));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_topic_reaches_only_its_handler_with_its_context() {
    let env = TestEnv::start("routing_three").await;
    for n in [1, 2, 3] {
        env.client.produce(Number { n }).await.expect("produce");
    }
    for text in ["alpha", "beta"] {
        env.client
            .produce(Word { text: text.into() })
            .await
            .expect("produce");
    }
    let before = SystemTime::now();
    let sent = Audited {
        user_id: 7,
        amount: 9.99,
    }
    .send()
    .header("trace_id", "abc-123")
    .header("tenant", "eu|1")
    .via(&env.client)
    .await
    .expect("produce with headers");
    let after = SystemTime::now();

    let handle = within(
        "spawn",
        PATIENCE,
        rmq_runtime::builder()
            .client(&env.client)
            .topics([Number::NAME, Word::NAME, Audited::NAME])
            .spawn(),
    )
    .await
    .expect("spawn");
    wait_for("6 deliveries", || {
        NUMBERS.lock().unwrap().len() + WORDS.lock().unwrap().len() + AUDITED.lock().unwrap().len()
            >= 6
    })
    .await;
    env.assert_eventually_clean().await;
    tokio::time::sleep(QUIET).await;
    shutdown(handle).await;

    let mut numbers = NUMBERS.lock().unwrap().clone();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3]);
    // concurrency = 1: FIFO order is visible
    assert_eq!(*WORDS.lock().unwrap(), ["alpha", "beta"]);

    let audited = AUDITED.lock().unwrap();
    assert_eq!(audited.len(), 1);
    let (user_id, amount, ctx) = &audited[0];
    assert_eq!((*user_id, *amount), (7, 9.99));
    assert_eq!(ctx.topic(), "route_audited");
    assert_eq!(ctx.attempt(), 1);
    assert_eq!(ctx.id(), &sent.id);
    assert_eq!(ctx.header("trace_id"), Some("abc-123"));
    assert_eq!(ctx.header("tenant"), Some("eu|1"));
    assert_eq!(ctx.headers().len(), 2, "{:?}", ctx.headers());
    // Redis' clock (ms, on this machine) when stored, or up to 2 ms before when the producer
    // stamped the envelope itself (its estimate is never late: see producer.rs)
    let produced = ctx.produced_at();
    assert!(
        unix_ms(produced) + 2 >= unix_ms(before) && unix_ms(produced) <= unix_ms(after),
        "produced_at {produced:?} is not between {before:?} and {after:?}"
    );
}

#[topic("route_busy")]
#[derive(Debug, Serialize, Deserialize)]
struct Busy {
    n: u32,
}

#[topic("route_quiet")]
#[derive(Debug, Serialize, Deserialize)]
struct Quiet {
    n: u32,
}

static BUSY_DONE: AtomicU32 = AtomicU32::new(0);
static QUIET_SAW_BUSY_DONE: Mutex<Option<u32>> = Mutex::new(None);

#[handler]
async fn on_busy(_msg: Busy) {
    tokio::time::sleep(Duration::from_millis(10)).await;
    BUSY_DONE.fetch_add(1, Ordering::SeqCst);
}

#[handler]
async fn on_quiet(_msg: Quiet) {
    *QUIET_SAW_BUSY_DONE.lock().unwrap() = Some(BUSY_DONE.load(Ordering::SeqCst));
}

/// 200 slow messages of one topic (at least 1 s of work for 2 workers) must not hold back
/// a message of another topic produced once they are under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_topic_does_not_starve_another() {
    let env = TestEnv::start("routing_starve").await;
    env.client
        .produce_batch((0..200).map(|n| Busy { n }).collect::<Vec<_>>())
        .await
        .expect("produce busy");
    let handle = spawn_runtime(&env.client, &[Busy::NAME, Quiet::NAME], 2).await;
    wait_for("the busy topic to start", || {
        BUSY_DONE.load(Ordering::SeqCst) >= 4
    })
    .await;
    env.client
        .produce(Quiet { n: 1 })
        .await
        .expect("produce quiet");
    wait_for("the quiet topic's message", || {
        QUIET_SAW_BUSY_DONE.lock().unwrap().is_some()
    })
    .await;
    let busy_done_then = QUIET_SAW_BUSY_DONE.lock().unwrap().unwrap_or_default();
    shutdown(handle).await;
    eprintln!("the quiet topic ran after {busy_done_then} of 200 busy messages");
    assert!(
        busy_done_then < 100,
        "the quiet topic waited for {busy_done_then} of 200 busy messages"
    );
}
