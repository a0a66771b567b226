use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("envelope")]
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    body: T,
}

fn main() {}
