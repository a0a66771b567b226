use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created", retries = -1)]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
