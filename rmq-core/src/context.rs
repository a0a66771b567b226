//! What a handler learns about the message it is handling.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// String headers carried beside the payload (`send().headers(..)`).
pub type Headers = BTreeMap<String, String>;

/// The id of a message, unique within its topic. Generated ids sort by production time;
/// an explicit id (`send().id("ORD_2")`) makes producing idempotent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// Longest id accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Wraps an id read back from Redis or given by the user (not validated; see
    /// [`MessageId::validate`]).
    pub fn new(id: impl Into<String>) -> Self {
        MessageId(id.into())
    }

    /// A fresh id: 9 base-36 digits of milliseconds since 1970, 6 of a per-process nonce,
    /// then a per-process counter. Unique without a round trip to Redis.
    pub fn generate() -> Self {
        static NONCE: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nonce = NONCE.get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u128(now_millis() as u128);
            base36(h.finish() % 36u64.pow(6), 6)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // one allocation: batch produce makes an id per message
        let mut id = String::with_capacity(9 + 6 + 4);
        push_base36(&mut id, now_millis(), 9);
        id.push_str(nonce);
        push_base36(&mut id, n, 1);
        MessageId(id)
    }

    /// Checks an explicit id: 1 to [`MessageId::MAX_LEN`] bytes.
    pub fn validate(&self) -> Result<(), String> {
        match self.0.len() {
            0 => Err("a message id cannot be empty".into()),
            n if n > Self::MAX_LEN => Err(format!(
                "a message id has at most {} bytes; this one has {n}",
                Self::MAX_LEN
            )),
            _ => Ok(()),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        MessageId(s.to_owned())
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        MessageId(s)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn base36(n: u64, width: usize) -> String {
    let mut out = String::with_capacity(13);
    push_base36(&mut out, n, width);
    out
}

/// Appends `n` in base 36, left-padded with `0` to `width` digits.
fn push_base36(out: &mut String, mut n: u64, width: usize) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = [b'0'; 13]; // u64::MAX has 13 base-36 digits
    let mut start = digits.len();
    while n > 0 {
        start -= 1;
        digits[start] = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    start = start.min(digits.len().saturating_sub(width));
    out.extend(digits[start..].iter().map(|&d| d as char));
}

/// Facts about the delivery a handler is running for. Take it as the second argument:
/// `async fn audit(order: OrderCreated, ctx: Context)`.
#[derive(Clone, Debug)]
pub struct Context {
    id: MessageId,
    topic: &'static str,
    attempt: u32,
    produced_at: SystemTime,
    headers: Headers,
}

impl Context {
    /// Built by the runtime for each delivery.
    pub fn new(
        id: MessageId,
        topic: &'static str,
        attempt: u32,
        produced_at: SystemTime,
        headers: Headers,
    ) -> Self {
        Context {
            id,
            topic,
            attempt,
            produced_at,
            headers,
        }
    }

    /// The message id.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// The topic name.
    pub fn topic(&self) -> &'static str {
        self.topic
    }

    /// 1 for the first delivery, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the message was stored in Redis (Redis' clock).
    pub fn produced_at(&self) -> SystemTime {
        self.produced_at
    }

    /// All headers given at produce time.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// One header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Milliseconds since 1970 as a [`SystemTime`].
pub fn system_time_from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_sorted() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert_ne!(a, b);
        assert!(a.validate().is_ok());
        // same process nonce, different counter
        assert_eq!(a.as_str()[9..15], b.as_str()[9..15]);
    }

    #[test]
    fn base36_pads_to_its_width() {
        assert_eq!(super::base36(0, 1), "0");
        assert_eq!(super::base36(35, 3), "00z");
        assert_eq!(super::base36(36 * 36, 2), "100");
        assert_eq!(super::base36(u64::MAX, 1), "3w5e11264sgsf");
        let id = MessageId::generate();
        assert!(id.as_str().len() >= 16, "{id}");
        assert!(
            id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()),
            "{id}"
        );
    }

    #[test]
    fn explicit_id_limits() {
        assert!(MessageId::new("").validate().is_err());
        assert!(MessageId::new("x".repeat(257)).validate().is_err());
        assert!(MessageId::new("ORD_2").validate().is_ok());
    }
}
