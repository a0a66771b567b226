use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

// Every mistake is reported at once, and the struct still works in a handler.
#[topic("order created", priority = high, retries = "5", colour = "red", retry_delays = [])]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler]
async fn charge(order: OrderCreated) {
    let _ = order.order_id;
}

fn main() {}
