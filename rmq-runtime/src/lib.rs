//! # rmq — reliable, typed messaging on Redis
//!
//! Declare a message type once with [`topic`], write handlers with [`handler`], produce
//! with the generated functions and call [`run`]:
//!
//! ```no_run
//! use rmq_runtime::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[topic("order_created", priority = "high", retries = 5, retry_delays = [1, 5, 30], ttl = "1h", timeout = "30s")]
//! #[derive(Debug, Serialize, Deserialize)]
//! pub struct OrderCreated { pub order_id: String, pub user_id: u64, pub amount: f64 }
//!
//! #[handler]
//! async fn charge(order: OrderCreated) -> Result<(), HandlerError> {
//!     println!("charging {}", order.order_id);
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), rmq_runtime::Error> {
//!     OrderCreated { order_id: "ORD_1".into(), user_id: 7, amount: 9.99 }.produce().await?;
//!     rmq_runtime::run().await
//! }
//! ```
//!
//! The message lifecycle, the Redis key layout and where each guarantee is enforced are
//! described in `ARCHITECTURE.md` at the root of the repository.

mod admin;
mod client;
mod config;
mod error;
mod fetcher;
mod health;
#[cfg(feature = "logging")]
pub mod logging;
mod producer;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod runtime;
mod scripts;
mod sends;
mod state;
mod stats;
mod wake;
mod worker;

#[doc(hidden)]
pub mod __private;

pub use admin::{DeadLetter, DeadLetterQueue, DeadLetters, Peeked};
pub use client::{global_client, init, Client};
pub use config::{Config, ConfigError};
pub use error::Error;
pub use health::{health, Health};
pub use producer::{Produced, RawSend, SendBuilder};
pub use rmq_core::{
    Backoff, Context, HandlerAction, HandlerError, Headers, MessageId, Priority, Topic, TopicKeys,
    TopicOptions,
};
pub use rmq_macros::{handler, topic};
pub use runtime::{builder, run, spawn, RuntimeBuilder, RuntimeHandle};
pub use state::{runtime_state, RuntimeState};
pub use stats::{HandlerTimes, MinuteCounts, ProducerStats, TopicStats};

/// Everything a program that declares topics and handlers needs: `use rmq_runtime::prelude::*;`
pub mod prelude {
    pub use crate::{
        handler, topic, Client, Config, Context, HandlerError, Headers, MessageId, Priority, Topic,
    };
}
