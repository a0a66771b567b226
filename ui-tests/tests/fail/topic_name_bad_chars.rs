use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("orders {eu}")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
