use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created", retry_delays = [1, 5, 30], backoff = "exponential")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
