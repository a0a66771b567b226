use rmq_runtime::prelude::*;
use serde::Serialize;

#[topic("order_created")]
#[derive(Debug, Serialize)]
struct OrderCreated {
    order_id: String,
}

// Using the type does not add errors: the one above is the only one.
#[handler]
async fn charge(order: OrderCreated) {
    let _ = order;
}

async fn produce() {
    let _ = OrderCreated { order_id: "ORD_1".into() }.produce().await;
}

fn main() {}
