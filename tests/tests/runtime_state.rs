//! `health()` and `RuntimeHandle::state()` report what this process's runtime is doing.
//! (One test in its own binary: the state is process-wide.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[topic("state.slow")]
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

static GATE: Semaphore = Semaphore::const_new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);

#[handler]
async fn slow(_job: Slow) -> Result<(), HandlerError> {
    STARTED.fetch_add(1, Ordering::SeqCst);
    GATE.acquire().await.expect("gate open").forget();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_running_and_busy_workers() {
    let env = TestEnv::start("runtime_state").await;
    let c = &env.client;
    assert_eq!(rmq_runtime::runtime_state(), None, "no runtime yet");
    assert_eq!(c.health().await.unwrap().runtime, None);

    c.produce_batch((0..2).map(|n| Slow { n })).await.unwrap();
    let runtime = spawn_runtime(c, &[Slow::NAME], 3).await;
    wait_for("both handlers running", || {
        STARTED.load(Ordering::SeqCst) == 2
    })
    .await;

    let state = c.health().await.unwrap().runtime.expect("a runtime runs");
    assert!(state.running);
    assert_eq!(state.topics, vec![Slow::NAME.to_string()]);
    assert_eq!((state.max_workers, state.busy, state.buffered), (3, 2, 0));
    assert_eq!(runtime.state(), state);

    GATE.add_permits(1);
    let one_left = poll(PATIENCE, || async {
        rmq_runtime::runtime_state().is_some_and(|s| s.busy == 1)
    })
    .await;
    assert!(one_left, "{:?}", rmq_runtime::runtime_state());

    GATE.add_permits(1);
    within("shutdown", Duration::from_secs(10), shutdown(runtime)).await;
    assert_eq!(
        rmq_runtime::runtime_state(),
        None,
        "a stopped runtime is not reported"
    );
}
