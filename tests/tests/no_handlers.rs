//! A binary with topics but no `#[handler]` linked in (the usual cause: the crate holding
//! the handlers is never named, LESSONS.md §5) must be told how to fix it.

mod common;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("no_handlers_topic")]
#[derive(Debug, Serialize, Deserialize)]
struct Unhandled {
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_without_handlers_explains_use_as_underscore() {
    let env = TestEnv::start("no_handlers").await;
    // producing needs no handler
    env.client
        .produce(Unhandled { n: 1 })
        .await
        .expect("produce");

    let result = within(
        "spawn without handlers",
        PATIENCE,
        rmq_runtime::builder().client(&env.client).spawn(),
    )
    .await;
    let err = match result {
        Ok(handle) => {
            shutdown(handle).await;
            panic!("a runtime with no handlers started");
        }
        Err(e) => e.to_string(),
    };
    eprintln!("no handlers: {err}");
    assert!(err.contains("use "), "{err}");
    assert!(err.contains(" as _"), "{err}");

    let run = within(
        "run without handlers",
        PATIENCE,
        rmq_runtime::builder().client(&env.client).run(),
    )
    .await;
    let err = run
        .expect_err("run() with no handlers must fail at once")
        .to_string();
    assert!(err.contains(" as _"), "{err}");
    // the message is still there for a binary that has the handler
    assert_eq!(env.len(&env.keys(Unhandled::NAME).messages).await, 1);
}
