use rmq_runtime::prelude::*;

#[handler]
async fn charge() {}

fn main() {}
