//! The vocabulary of rmq, shared by the macros and the runtime.
//!
//! Users never depend on this crate directly: `rmq-runtime` re-exports everything a program
//! needs. It holds the message model ([`Topic`], [`Priority`], [`Context`], the stored
//! [`envelope`]), the handler registry collected with `inventory`, the Redis [`keys`] layout
//! and the [`duration`] syntax shared by `#[topic]` and the environment configuration.

pub mod context;
pub mod duration;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod registry;
pub mod topic;

pub use context::{Context, Headers, MessageId};
pub use error::{HandlerAction, HandlerError};
pub use keys::TopicKeys;
pub use registry::{Delivery, HandlerFuture, HandlerOutcome, HandlerRegistration};
pub use topic::{Backoff, Priority, Topic, TopicOptions};
