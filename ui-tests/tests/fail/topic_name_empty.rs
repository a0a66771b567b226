use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
