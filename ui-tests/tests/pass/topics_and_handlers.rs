//! Everything a user may write with the macros compiles, and the options land in
//! `Topic::OPTIONS` as written. Nothing here talks to Redis: the producing code is only
//! type-checked (`fn main` never runs it).

use std::time::Duration;

use rmq_runtime::prelude::*;
use rmq_runtime::{Backoff, TopicOptions};
use serde::{Deserialize, Serialize};

#[topic(
    "order_created",
    priority = "high",
    retries = 5,
    retry_delays = [1, "500ms", "5m"],
    ttl = "1h",
    timeout = 30,
)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub user_id: u64,
    pub amount: f64,
}

#[topic("payments.refund:v2-eu", priority = "low", retries = 0, backoff = "exponential", ttl = 86400, timeout = "2m")]
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RefundRequested {
    pub order_id: String,
}

#[topic("audit")]
#[derive(Debug, Serialize, Deserialize)]
struct AuditEntry {}

/// The derive may also come first, and the struct keeps its docs and serde attributes.
#[derive(Debug, Serialize, Deserialize)]
#[topic("renamed", retries = 1)]
#[serde(rename_all = "camelCase")]
pub struct Renamed {
    /// A field.
    pub order_id: String,
}

#[handler]
async fn renamed(r#msg: Renamed) {
    let _ = r#msg.order_id;
}

mod nested {
    use rmq_runtime::prelude::*;
    use serde::{Deserialize, Serialize};

    // `produce` and friends get the struct's visibility, so this is callable from outside.
    #[topic("nested", priority = "normal")]
    #[derive(Serialize, Deserialize)]
    pub struct Nested {
        pub n: u32,
    }
}

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

impl std::error::Error for MyError {}

#[handler]
async fn charge(order: OrderCreated) -> Result<(), HandlerError> {
    let _ = order.amount;
    Ok(())
}

#[handler(concurrency = 4)]
async fn audit(order: OrderCreated, ctx: Context) -> anyhow::Result<()> {
    let _ = (order.user_id, ctx.attempt(), ctx.id());
    Ok(())
}

#[handler]
async fn refund(RefundRequested { order_id }: RefundRequested, _: Context) {
    let _ = order_id;
}

#[handler(concurrency = 1,)]
async fn log(_entry: AuditEntry) -> Result<(), std::io::Error> {
    Ok(())
}

#[handler]
async fn custom_error(_entry: AuditEntry, _ctx: Context) -> Result<(), MyError> {
    Err(MyError)
}

#[handler]
async fn unit(_n: nested::Nested) -> () {}

#[allow(dead_code)]
async fn produce_everything(orders: Vec<OrderCreated>) -> Result<(), rmq_runtime::Error> {
    let order = OrderCreated { order_id: "ORD_1".into(), user_id: 7, amount: 9.99 };
    let _id: MessageId = order.clone().produce().await?;
    order
        .send()
        .delay(Duration::from_secs(300))
        .priority(Priority::Low)
        .id("ORD_2")
        .await?;
    let _ids: Vec<MessageId> = OrderCreated::produce_batch(orders).await?;
    RefundRequested::produce_batch(vec![RefundRequested { order_id: "ORD_1".into() }]).await?;
    nested::Nested { n: 1 }.produce().await?;
    AuditEntry {}.send().await?;
    Ok(())
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    const ORDER: TopicOptions = <OrderCreated as Topic>::OPTIONS;
    assert_eq!(<OrderCreated as Topic>::NAME, "order_created");
    assert_eq!(ORDER.priority, Priority::High);
    assert_eq!(ORDER.retries, Some(5));
    let Some(Backoff::Delays(delays)) = ORDER.backoff else {
        panic!("expected retry_delays, got {:?}", ORDER.backoff);
    };
    assert_eq!(
        delays,
        [Duration::from_secs(1), Duration::from_millis(500), Duration::from_secs(300)]
    );
    assert_eq!(ORDER.ttl, Some(Duration::from_secs(3600)));
    assert_eq!(ORDER.timeout, Some(Duration::from_secs(30)));

    let refund = <RefundRequested as Topic>::OPTIONS;
    assert_eq!(<RefundRequested as Topic>::NAME, "payments.refund:v2-eu");
    assert_eq!(refund.priority, Priority::Low);
    assert_eq!(refund.retries, Some(0));
    assert_eq!(refund.backoff, Some(Backoff::Exponential));
    assert_eq!(refund.ttl, Some(Duration::from_secs(86400)));
    assert_eq!(refund.timeout, Some(Duration::from_secs(120)));

    assert_eq!(<AuditEntry as Topic>::OPTIONS, TopicOptions::DEFAULT);
    assert_eq!(<nested::Nested as Topic>::NAME, "nested");
    assert_eq!(<Renamed as Topic>::OPTIONS.retries, Some(1));

    // The producing futures are `Send`, so they can be spawned on a multi-threaded runtime.
    assert_send(produce_everything(Vec::new()));
    assert_send(AuditEntry {}.produce());
    assert_send(OrderCreated::produce_batch(Vec::new()));

    // Declared inside a function body.
    #[topic("local")]
    #[derive(Serialize, Deserialize)]
    struct Local {
        n: u8,
    }

    #[handler(concurrency = 2)]
    async fn local(_local: Local, _ctx: Context) {}

    assert_eq!(<Local as Topic>::NAME, "local");

    // Handlers stay ordinary functions.
    let _direct = charge(OrderCreated { order_id: "x".into(), user_id: 1, amount: 0.0 });
}
