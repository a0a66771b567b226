//! Two `#[handler]`s for one topic: which one should run is ambiguous, so the runtime
//! refuses to start and points at both.

mod common;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("dup_topic")]
#[derive(Debug, Serialize, Deserialize)]
struct Dup {
    n: u32,
}

const FIRST_LINE: u32 = line!() + 1;
#[handler]
async fn first(_msg: Dup) {}

const SECOND_LINE: u32 = line!() + 1;
#[handler]
async fn second(_msg: Dup) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handlers_for_one_topic_name_both_locations() {
    let env = TestEnv::start("duplicate_handlers").await;
    for builder in [
        rmq_runtime::builder().client(&env.client),
        rmq_runtime::builder()
            .client(&env.client)
            .topics([Dup::NAME]),
    ] {
        let err = match within("spawn", PATIENCE, builder.spawn()).await {
            Ok(handle) => {
                shutdown(handle).await;
                panic!("a runtime with two handlers for `dup_topic` started");
            }
            Err(e) => e.to_string(),
        };
        eprintln!("duplicate handlers: {err}");
        assert!(
            err.contains("dup_topic"),
            "the error must name the topic: {err}"
        );
        for line in [FIRST_LINE, SECOND_LINE] {
            let location = format!("duplicate_handlers.rs:{line}");
            assert!(
                err.contains(&location),
                "the error must name {location}: {err}"
            );
        }
    }
}
