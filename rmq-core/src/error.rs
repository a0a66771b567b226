//! How a handler says what should happen to a message it could not handle.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What the runtime does with a message after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerAction {
    /// Follow the topic's retry policy: retry after its delay, or dead-letter once the
    /// retries are used up.
    Retry,
    /// Retry after this delay instead of the topic's (still bounded by `retries`).
    RetryAfter(Duration),
    /// Move to the dead-letter queue now; retrying cannot help (e.g. validation failed).
    DeadLetter,
    /// Remove the message now and count it as failed; nothing is kept.
    Drop,
}

/// The error a handler returns. Any `std::error::Error` converts into it with `?`; the
/// constructors below choose what happens to the message.
///
/// ```
/// use rmq_core::HandlerError;
/// use std::time::Duration;
///
/// fn check(amount: f64) -> Result<(), HandlerError> {
///     if amount < 0.0 {
///         // no point in retrying a message that can never be valid
///         return Err(HandlerError::dead_letter(format!("negative amount {amount}")));
///     }
///     if amount > 1e6 {
///         return Err(HandlerError::retry_after(Duration::from_secs(60), "fraud check pending"));
///     }
///     Ok(())
/// }
/// assert!(check(-1.0).is_err());
/// ```
pub struct HandlerError {
    action: HandlerAction,
    error: BoxError,
}

impl HandlerError {
    /// A failure that follows the topic's retry policy.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self::with_action(HandlerAction::Retry, error)
    }

    /// A failure described by a message; follows the topic's retry policy.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::new(message.to_string())
    }

    /// Retry after `delay` rather than the topic's delay.
    pub fn retry_after(delay: Duration, error: impl Into<BoxError>) -> Self {
        Self::with_action(HandlerAction::RetryAfter(delay), error)
    }

    /// Dead-letter now, without further retries.
    pub fn dead_letter(error: impl Into<BoxError>) -> Self {
        Self::with_action(HandlerAction::DeadLetter, error)
    }

    /// Drop the message now (counted as failed, not kept).
    pub fn drop(error: impl Into<BoxError>) -> Self {
        Self::with_action(HandlerAction::Drop, error)
    }

    /// A failure with an explicit action.
    pub fn with_action(action: HandlerAction, error: impl Into<BoxError>) -> Self {
        HandlerError {
            action,
            error: error.into(),
        }
    }

    /// Recovers a `HandlerError` that went through `Into<Box<dyn Error>>` (as the handler
    /// return type allows), or wraps any other error with [`HandlerAction::Retry`].
    pub fn from_boxed(error: BoxError) -> Self {
        match error.downcast::<Boxed>() {
            Ok(boxed) => boxed.0,
            Err(other) => HandlerError::new(other),
        }
    }

    /// What should happen to the message.
    pub fn action(&self) -> HandlerAction {
        self.action
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }

    /// The error and its chain of sources, joined with `": "`: the text kept in the
    /// dead-letter queue.
    pub fn describe(&self) -> String {
        let mut text = self.error.to_string();
        let mut source = self.error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("action", &self.action)
            .field("error", &self.describe())
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::new(error)
    }
}

/// Carries a `HandlerError` through `Box<dyn Error>` so that its action survives the
/// handler's `E: Into<Box<dyn Error + Send + Sync>>` return type.
struct Boxed(HandlerError);

impl fmt::Debug for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Boxed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.error.source()
    }
}

impl From<HandlerError> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(error: HandlerError) -> Self {
        Box::new(Boxed(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_survives_boxing() {
        let boxed: BoxError = HandlerError::dead_letter("bad input").into();
        let back = HandlerError::from_boxed(boxed);
        assert_eq!(back.action(), HandlerAction::DeadLetter);
        assert_eq!(back.describe(), "bad input");
    }

    #[test]
    fn plain_errors_retry_and_keep_their_chain() {
        let io = std::io::Error::other("disk full");
        let e: HandlerError = io.into();
        assert_eq!(e.action(), HandlerAction::Retry);
        assert_eq!(e.describe(), "disk full");
    }
}
