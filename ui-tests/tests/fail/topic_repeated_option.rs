use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created", ttl = "1h", retries = 5, ttl = "2h")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
