use rmq_runtime::prelude::*;

#[handler]
async fn charge<T: Topic>(message: T) {
    let _ = message;
}

#[handler]
async fn refund(message: impl Topic) {
    let _ = message;
}

fn main() {}
