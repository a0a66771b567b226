use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler]
async fn charge(order: OrderCreated, ctx: Context, retries: u32) {
    let _ = (order, ctx, retries);
}

fn main() {}
