use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created")]
#[derive(Serialize, Deserialize)]
struct OrderCreated(String, u64);

fn main() {}
