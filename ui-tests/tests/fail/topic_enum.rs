use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_event")]
#[derive(Serialize, Deserialize)]
enum OrderEvent {
    Created { order_id: String },
    Cancelled { order_id: String },
}

fn main() {}
