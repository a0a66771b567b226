use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler]
async fn charge(order: OrderCreated) -> Result<u64, HandlerError> {
    let _ = order;
    Ok(42)
}

#[handler]
async fn refund(order: OrderCreated) -> bool {
    let _ = order;
    true
}

fn main() {}
