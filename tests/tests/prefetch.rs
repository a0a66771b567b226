//! The prefetch buffer (`task_queue_size`) adapts to handler speed: handlers slower than a
//! round trip get no buffer, so a consumer never sits on messages another could run.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("prefetch.slow")]
#[derive(Debug, Serialize, Deserialize)]
struct Slow {
    n: u32,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

#[handler]
async fn slow(_job: Slow) -> Result<(), HandlerError> {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_leave_the_backlog_to_other_consumers() {
    let env = TestEnv::start("prefetch_slow").await;
    let c = &env.client;
    c.produce_batch((0..12).map(|n| Slow { n })).await.unwrap();
    // a prefetch allowance far above the backlog
    let consumer = env
        .client_with(|mut config| {
            config.task_queue_size = 1000;
            config
        })
        .await;
    let runtime = spawn_runtime(&consumer, &[Slow::NAME], 2).await;
    let mut most_leased = 0;
    while c.stats::<Slow>().await.unwrap().counter("completed") < 12 {
        let s = c.stats::<Slow>().await.unwrap();
        most_leased = most_leased.max(s.in_flight);
        assert!(
            s.in_flight <= 4,
            "2 workers of 100 ms handlers leased {} messages; the rest must stay pending for others ({s:?})",
            s.in_flight
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown(runtime).await;
    assert!(most_leased >= 2, "both workers were busy at some point");
    assert_eq!(STARTED.load(Ordering::SeqCst), 12);
    env.assert_eventually_clean().await;
}
