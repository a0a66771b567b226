use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler]
fn charge(order: OrderCreated) {
    let _ = order;
}

fn main() {}
