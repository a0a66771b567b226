//! Handlers registered by `#[handler]`, collected at link time with `inventory`.

use std::future::Future;
use std::pin::Pin;

use crate::{Context, HandlerError, TopicOptions};

/// One message handed to a handler: the raw JSON payload and its [`Context`].
#[derive(Debug)]
pub struct Delivery {
    /// The payload exactly as stored (JSON).
    pub payload: Vec<u8>,
    /// Id, attempt, headers, ...
    pub context: Context,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum HandlerOutcome {
    /// The handler returned `Ok`: acknowledge the message.
    Completed,
    /// The handler returned an error (or panicked, or timed out).
    Failed(HandlerError),
    /// The payload does not decode into the handler's type; retrying cannot help.
    Undecodable(String),
}

/// The future a registered handler returns for one delivery.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerOutcome> + Send + 'static>>;

/// A `#[handler]` function as the runtime sees it. Built by the macro in a `const`
/// context, so every field is const-evaluable.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// `Topic::NAME` of the handler's message type.
    pub topic: &'static str,
    /// `Topic::OPTIONS` of the handler's message type.
    pub options: TopicOptions,
    /// The handler function's path (`module::function`).
    pub name: &'static str,
    /// Source file of the `#[handler]` attribute.
    pub file: &'static str,
    /// Source line of the `#[handler]` attribute.
    pub line: u32,
    /// `#[handler(concurrency = N)]`: at most N deliveries at once in one runtime.
    pub concurrency: Option<u32>,
    /// Decodes the payload and runs the handler.
    pub invoke: fn(Delivery) -> HandlerFuture,
}

impl HandlerRegistration {
    /// `file:line` of the handler, for error messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

inventory::collect!(HandlerRegistration);

/// Every handler linked into this binary.
pub fn registrations() -> impl Iterator<Item = &'static HandlerRegistration> {
    inventory::iter::<HandlerRegistration>.into_iter()
}
