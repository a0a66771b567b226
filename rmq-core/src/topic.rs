//! What a `#[topic]` declares: a name, a payload type and the delivery options.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A message type that can be produced and handled. Implemented by `#[topic("name", ...)]`;
/// do not implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a topic",
    label = "not a #[topic] type",
    note = "declare the message type with `#[topic(\"name\")]` above its `#[derive(Serialize, Deserialize)]`"
)]
pub trait Topic: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic name used in Redis keys (`[A-Za-z0-9_.:-]`, 1..=200 characters).
    const NAME: &'static str;
    /// Options given in the attribute; `None` fields fall back to the runtime `Config`.
    const OPTIONS: TopicOptions;
}

/// Delivery priority. Higher levels are always fetched first; within a level messages are
/// delivered in the order they were produced (FIFO). A message keeps its priority across
/// delays and retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Fetched before anything else.
    High,
    /// The default.
    #[default]
    Normal,
    /// Fetched only when no high or normal message is ready.
    Low,
}

impl Priority {
    /// All levels, in fetch order.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The level's index in fetch order (0 = high). Also its byte in the stored envelope.
    pub const fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The inverse of [`Priority::index`].
    pub const fn from_index(index: usize) -> Option<Priority> {
        match index {
            0 => Some(Priority::High),
            1 => Some(Priority::Normal),
            2 => Some(Priority::Low),
            _ => None,
        }
    }

    /// `"high"`, `"normal"` or `"low"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!(
                "unknown priority `{other}`: expected \"high\", \"normal\" or \"low\""
            )),
        }
    }
}

/// How long to wait before each retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// The n-th retry waits `delays[n - 1]`; the last delay repeats.
    Delays(&'static [Duration]),
    /// The n-th retry waits `1s * 2^(n - 1)`, capped at one hour.
    Exponential,
}

impl Backoff {
    /// Base of [`Backoff::Exponential`].
    pub const EXPONENTIAL_BASE: Duration = Duration::from_secs(1);
    /// Cap of [`Backoff::Exponential`].
    pub const EXPONENTIAL_MAX: Duration = Duration::from_secs(3600);

    /// The wait before retry number `retry` (1 = the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        match self {
            Backoff::Delays(delays) => match delays.len() {
                0 => Duration::ZERO,
                n => delays[(retry.max(1) as usize - 1).min(n - 1)],
            },
            Backoff::Exponential => {
                let factor = 1u64.checked_shl(retry.max(1) - 1).unwrap_or(u64::MAX);
                let secs = Self::EXPONENTIAL_BASE.as_secs().saturating_mul(factor);
                Duration::from_secs(secs).min(Self::EXPONENTIAL_MAX)
            }
        }
    }
}

/// Options of a topic as written in `#[topic(...)]`. `None` means "use the runtime
/// `Config` default" (see `rmq_runtime::Config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicOptions {
    /// Default priority of produced messages (`send().priority(..)` overrides it).
    pub priority: Priority,
    /// Retries after the first attempt; `retries = 2` means at most 3 attempts.
    pub retries: Option<u32>,
    /// Wait before each retry.
    pub backoff: Option<Backoff>,
    /// How long a message may wait before its first delivery.
    pub ttl: Option<Duration>,
    /// Handler time limit per attempt.
    pub timeout: Option<Duration>,
}

impl TopicOptions {
    /// Every option left to the runtime configuration.
    pub const DEFAULT: TopicOptions = TopicOptions {
        priority: Priority::Normal,
        retries: None,
        backoff: None,
        ttl: None,
        timeout: None,
    };
}

impl Default for TopicOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Checks a topic name: 1 to 200 characters from `[A-Za-z0-9_.:-]`. The braces and spaces
/// this excludes would break the `{hash tag}` of the topic's Redis keys.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a topic name cannot be empty".into());
    }
    if name.len() > 200 {
        return Err(format!(
            "a topic name has at most 200 characters; this one has {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!(
            "a topic name may hold only letters, digits, `_`, `.`, `:` and `-`; found {bad:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_repeat_last() {
        const D: &[Duration] = &[Duration::from_secs(1), Duration::from_secs(5)];
        let b = Backoff::Delays(D);
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(2), Duration::from_secs(5));
        assert_eq!(b.delay(9), Duration::from_secs(5));
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let b = Backoff::Exponential;
        assert_eq!(b.delay(1), Duration::from_secs(1));
        assert_eq!(b.delay(4), Duration::from_secs(8));
        assert_eq!(b.delay(40), Duration::from_secs(3600));
        assert_eq!(b.delay(200), Duration::from_secs(3600));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("order_created.v2:eu-1").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("a{b}").is_err());
        assert!(validate_topic_name(&"x".repeat(201)).is_err());
        assert!(validate_topic_name(&"x".repeat(200)).is_ok());
    }
}
