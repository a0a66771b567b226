use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created", ttl = "5 parsecs", retry_delays = [1, "2x", "30s"])]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
