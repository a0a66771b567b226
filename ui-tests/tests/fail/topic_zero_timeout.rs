use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created", timeout = "0s")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
