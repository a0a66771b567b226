use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler(concurrency = 0)]
async fn charge(order: OrderCreated) {
    let _ = order;
}

#[handler(concurrency = 2, concurrency = 3)]
async fn refund(order: OrderCreated) {
    let _ = order;
}

#[handler(workers = 2)]
async fn audit(order: OrderCreated) {
    let _ = order;
}

fn main() {}
