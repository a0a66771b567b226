use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler]
async fn charge(order: OrderCreated) {
    let count = std::rc::Rc::new(1);
    std::future::ready(()).await;
    let _ = (order, count);
}

fn main() {}
