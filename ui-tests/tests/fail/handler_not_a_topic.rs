use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

// Serializable, but never declared with #[topic].
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler]
async fn charge(order: OrderCreated) {
    let _ = order;
}

fn main() {}
