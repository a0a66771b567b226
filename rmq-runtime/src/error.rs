//! Errors of the runtime, each saying what happened and what to do.

use crate::config::ConfigError;

/// An error from producing, connecting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered at the configured address.
    #[error("no Redis at {url}: {source} — start redis-server there or set REDIS_URL to a Redis that is running")]
    Unreachable {
        /// The URL tried (password hidden).
        url: String,
        /// What the connection attempt reported.
        source: redis::RedisError,
    },
    /// Redis refused the credentials.
    #[error("Redis at {url} refused the password or user: {detail} — set REDIS_PASSWORD (or user:password in REDIS_URL) to the server's requirepass / ACL password")]
    Auth {
        /// The URL tried (password hidden).
        url: String,
        /// Redis' own words.
        detail: String,
    },
    /// The connection to Redis broke or a command timed out (Redis stopped, restarted,
    /// or is overloaded).
    #[error("lost the connection to Redis at {url}: {source} — is redis-server running? rmq reconnects by itself: retry the call, or set MQ_PRODUCE_RETRIES (Config::produce_retries) to have producers retry")]
    Disconnected {
        /// The URL (password hidden).
        url: String,
        /// What failed.
        source: redis::RedisError,
    },
    /// Redis refused a command.
    #[error("Redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The message could not be serialized.
    #[error("cannot encode a `{topic}` message as JSON: {source}")]
    Encode {
        /// Topic of the message.
        topic: &'static str,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// An option given to a producer or the runtime builder is invalid.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// `run()` found no `#[handler]` in the program.
    #[error("no #[handler] is linked into this program, so there is nothing to run. If your handlers live in another crate or module that nothing else refers to, the linker drops them: name the crate once, e.g. `use my_handlers as _;`")]
    NoHandlers,
    /// Two handlers were registered for one topic.
    #[error("two #[handler]s consume topic `{topic}`: `{first}` at {first_at} and `{second}` at {second_at}; a topic has exactly one handler per program — remove one or give it its own topic")]
    DuplicateHandler {
        /// The topic.
        topic: &'static str,
        /// First handler's path.
        first: &'static str,
        /// `file:line` of the first.
        first_at: String,
        /// Second handler's path.
        second: &'static str,
        /// `file:line` of the second.
        second_at: String,
    },
    /// The builder named a topic no handler consumes.
    #[error("no #[handler] consumes topic `{topic}` (handlers are linked for: {known}); check the name given to the runtime builder")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
        /// Topics that have handlers.
        known: String,
    },
    /// The send of this message went with others that were sent at the same moment (see
    /// [`Client`](crate::Client)), and the task carrying them to Redis stopped before Redis
    /// answered: its tokio runtime shut down.
    #[error("the send of message {id} was interrupted before Redis answered (the tokio runtime carrying it shut down): it may or may not be stored; send it again with .id(\"{id}\"), which stores it at most once")]
    Interrupted {
        /// The message's id.
        id: String,
    },
    /// Redis answered something the scripts never return: a version mismatch or a key
    /// written by something else.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
}

impl Error {
    /// The same error for another of the sends that shared one call (see sends.rs): the
    /// variants a produce call returns are copied whole, the rest (never returned there)
    /// as their text.
    pub(crate) fn for_another(&self) -> Error {
        match self {
            Error::Unreachable { url, source } => Error::Unreachable {
                url: url.clone(),
                source: source.clone(),
            },
            Error::Auth { url, detail } => Error::Auth {
                url: url.clone(),
                detail: detail.clone(),
            },
            Error::Disconnected { url, source } => Error::Disconnected {
                url: url.clone(),
                source: source.clone(),
            },
            Error::Redis(e) => Error::Redis(e.clone()),
            Error::InvalidOption(text) => Error::InvalidOption(text.clone()),
            Error::Interrupted { id } => Error::Interrupted { id: id.clone() },
            Error::Protocol(text) => Error::Protocol(text.clone()),
            other => Error::Protocol(other.to_string()),
        }
    }

    /// Classifies a failure to connect: refused credentials become [`Error::Auth`], the rest
    /// [`Error::Unreachable`].
    pub(crate) fn connect(url: &str, source: redis::RedisError) -> Error {
        let url = redact(url);
        let text = source.to_string();
        let auth = source.kind() == redis::ErrorKind::AuthenticationFailed
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
            || text.contains("invalid password")
            || text.contains("Authentication required");
        if auth {
            Error::Auth { url, detail: text }
        } else {
            Error::Unreachable { url, source }
        }
    }
}

/// True for failures of the connection rather than of the command.
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
