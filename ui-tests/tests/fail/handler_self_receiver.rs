use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

struct Billing;

impl Billing {
    #[handler]
    async fn charge(&self, order: OrderCreated) {
        let _ = order;
    }
}

fn main() {}
