use rmq_runtime::prelude::*;

#[topic("order_created")]
#[derive(Debug)]
struct OrderCreated {
    order_id: String,
}

fn main() {}
