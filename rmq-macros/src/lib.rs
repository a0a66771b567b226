//! `#[topic]` and `#[handler]`, the two attributes of rmq.
//!
//! Use them through `rmq_runtime` (`use rmq_runtime::prelude::*;`), never from this crate
//! directly: the generated code names everything as `::rmq_runtime::...`.
//!
//! Each attribute is parsed by hand (`parse`), checked (`validate`) and expanded
//! (`expand`) in its own module. Every mistake is reported as a compile error on the exact
//! token, all mistakes of one attribute together, and the annotated item is always emitted
//! unchanged so that one mistake does not cascade into errors elsewhere.

mod errors;
mod handler;
mod topic;
mod value;

use proc_macro::TokenStream;

/// Declares a message type: a struct with named fields that derives `Serialize` and
/// `Deserialize`, and the name of its topic.
///
/// ```ignore
/// use rmq_runtime::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[topic("order_created", priority = "high", retries = 5, retry_delays = [1, 5, "30s"], ttl = "1h", timeout = 30)]
/// #[derive(Debug, Serialize, Deserialize)]
/// pub struct OrderCreated { pub order_id: String, pub amount: f64 }
///
/// # async fn demo() -> Result<(), rmq_runtime::Error> {
/// let id = OrderCreated { order_id: "ORD_1".into(), amount: 9.99 }.produce().await?;
/// # Ok(()) }
/// ```
///
/// The name comes first: 1 to 200 characters from `A-Z a-z 0-9 _ . : -`. It names the
/// topic's keys in Redis, so two structs must not share it. Then, each at most once:
///
/// | option | value | default when left out |
/// |---|---|---|
/// | `priority` | `"high"`, `"normal"` or `"low"`: the default priority of produced messages (`.send().priority(..)` overrides it) | `"normal"` |
/// | `retries` | retries after the first attempt, a `u32`; `retries = 0` means one attempt only | the runtime `Config` (3) |
/// | `retry_delays` | the wait before each retry, a non-empty list of durations; the last one repeats: `[1, 5, "30s"]` | the runtime `Config` (60s, 300s, 1800s) |
/// | `backoff` | `"exponential"`: wait 1s, 2s, 4s, ... capped at one hour; not together with `retry_delays` | as `retry_delays` |
/// | `ttl` | how long a message may wait for its first delivery before it expires; not zero | the runtime `Config` (24h) |
/// | `timeout` | time limit of one handler attempt; past it the attempt fails and is retried; not zero | the runtime `Config` (180s) |
///
/// A duration is a whole number of seconds (`30`) or a string with a unit: `"500ms"`,
/// `"30s"`, `"5m"`, `"1h"`, `"2d"` (the same syntax as the `MQ_*` environment variables).
///
/// The struct is emitted unchanged, followed by:
/// - `impl Topic for S` with `NAME` and `OPTIONS`,
/// - `S::produce(self)`: produce with the topic's options; resolves to the `MessageId`,
/// - `S::send(self)`: a `SendBuilder` for `.delay(..)`, `.priority(..)`, `.id(..)`, ...,
/// - `S::produce_batch(items)`: produce many messages in one round trip.
///
/// The functions have the struct's visibility.
///
/// Rejected with a compile error at the offending token: a name outside the rules above,
/// an unknown or repeated option, a value of the wrong kind, `retries` that is negative or
/// does not fit in a `u32`, an invalid duration, a zero `ttl` or `timeout`, an empty
/// `retry_delays`, `retry_delays` together with `backoff`, and a generic struct, tuple struct, unit struct, enum or union. A struct without
/// `Serialize` or `Deserialize` fails at the struct name.
#[proc_macro_attribute]
pub fn topic(attr: TokenStream, item: TokenStream) -> TokenStream {
    topic::expand(attr.into(), item.into()).into()
}

/// Registers an `async fn` as the handler of a topic. Every handler linked into the
/// program runs under `rmq_runtime::run()`.
///
/// ```ignore
/// use rmq_runtime::prelude::*;
///
/// #[handler]
/// async fn charge(order: OrderCreated) -> Result<(), HandlerError> {
///     Ok(())
/// }
///
/// #[handler(concurrency = 4)]
/// async fn audit(order: OrderCreated, ctx: Context) -> anyhow::Result<()> {
///     println!("attempt {} of {}", ctx.attempt(), ctx.id());
///     Ok(())
/// }
/// ```
///
/// The function takes the message, a `#[topic]` type, and optionally a `Context` (id,
/// attempt, topic, headers, ...). It returns `()` or `Result<(), E>` where `E` converts
/// into `Box<dyn std::error::Error + Send + Sync>` (`HandlerError`, `anyhow::Error`,
/// `std::io::Error`, ...). An `Err` or a panic fails the attempt: the message is retried
/// per the topic's `retries` and then dead-lettered.
///
/// Option:
///
/// | option | value | default when left out |
/// |---|---|---|
/// | `concurrency` | at most this many messages handled at once by this handler in one runtime, `1..=u32::MAX`; `RuntimeBuilder::concurrency` overrides it | the runtime `Config`'s `max_workers` (5) |
///
/// The function is emitted unchanged, so it can still be called directly (in tests, say).
///
/// Rejected with a compile error at the offending token: a function that is not `async`,
/// a method (`self`), generics or `impl Trait` arguments, no argument or more than two, a
/// first argument that is not a `#[topic]` type, a second argument that is not `Context`,
/// a return type other than the above, and an unknown, repeated or zero option.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(attr.into(), item.into()).into()
}
