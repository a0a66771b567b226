//! The registrations `#[handler]` submits are collected by the runtime's registry with the
//! topic's name and options, the concurrency, and where the handler is.

use rmq_runtime::__private::{inventory, HandlerRegistration};
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("order_created", retries = 2)]
#[derive(Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
}

#[handler(concurrency = 4)]
async fn charge(order: OrderCreated) {
    let _ = order;
}

fn main() {
    let found: Vec<&HandlerRegistration> = inventory::iter::<HandlerRegistration>
        .into_iter()
        .filter(|r| r.topic == "order_created")
        .collect();
    assert_eq!(found.len(), 1);
    let registration = found[0];
    // `module_path!()` of the handler's crate (trybuild names it), then the function.
    assert!(registration.name.ends_with("::charge"), "{}", registration.name);
    assert_eq!(registration.options.retries, Some(2));
    assert_eq!(registration.concurrency, Some(4));
    assert!(registration.file.ends_with("handlers_registered.rs"), "{}", registration.file);
    assert_eq!(registration.line, 14);
}
