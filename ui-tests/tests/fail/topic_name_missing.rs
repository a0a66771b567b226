use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic(retries = 5)]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

// The struct still works as a topic here: the error above is the only one.
#[handler]
async fn charge(order: OrderCreated) {
    let _ = order.order_id;
}

fn main() {}
