//! Configuration, built in code or read from the environment with MX-RMQ's variable names.

use std::net::SocketAddr;
use std::time::Duration;

use rmq_core::duration::{format_duration, parse_duration};

/// Runtime and client configuration. Field names and meanings follow MX-RMQ's `MQConfig`
/// so a team moving over recognises them; `#[topic]` options override the per-message
/// defaults (`message_ttl`, `processing_timeout`, `max_retries`, `retry_delays`) per topic.
///
/// | field | environment | default | meaning |
/// |---|---|---|---|
/// | `redis_url` | `REDIS_URL` | `redis://127.0.0.1:6379` | where Redis is (`rediss://` for TLS is not built in yet) |
/// | `redis_db` | `REDIS_DB` | `0` | database number; overrides a `/N` in the URL when non-zero |
/// | `redis_password` | `REDIS_PASSWORD` | none | password (`requirepass` / ACL) |
/// | `queue_prefix` | `MQ_QUEUE_PREFIX` | `""` | prefix of every key, to share one Redis between environments |
/// | `max_workers` | `MQ_MAX_WORKERS` | `5` | handlers running at once in one runtime, all topics together |
/// | `task_queue_size` | `MQ_TASK_QUEUE_SIZE` | `1000` | most messages a topic leases ahead of its free workers (the prefetch buffer; it adapts below this to the handlers' speed, see `worker.rs`; one round trip leases at most 1000) |
/// | `message_ttl` | `MQ_MESSAGE_TTL` | `24h` | how long a ready message may wait before delivery; `0` = forever |
/// | `processing_timeout` | `MQ_PROCESSING_TIMEOUT` | `180s` | handler time limit per attempt |
/// | `max_retries` | `MQ_MAX_RETRIES` | `3` | retries after the first attempt (so 4 attempts) |
/// | `retry_delays` | `MQ_RETRY_DELAYS` | `60s,300s,1800s` | wait before each retry; the last repeats |
/// | `enable_dead_letter` | `MQ_ENABLE_DEAD_LETTER` | `true` | keep exhausted messages in the DLQ (else drop and count them) |
/// | `lease_duration` | `MQ_LEASE_DURATION` | `30s` | how long a fetched message stays leased; running handlers renew it every third of it, so a crashed consumer's messages return within about this time |
/// | `dead_letter_max` | `MQ_DEAD_LETTER_MAX` | `100000` | most dead letters kept per topic; the oldest are deleted (and counted) beyond |
/// | `dead_letter_expired` | `MQ_DEAD_LETTER_EXPIRED` | `false` | keep messages whose TTL ran out in the DLQ (reason "expired") instead of deleting them |
/// | `produce_retries` | `MQ_PRODUCE_RETRIES` | `0` | times a produce is retried (100 ms, 200 ms, … apart) when Redis cannot be reached; safe because ids are fixed before the first try |
/// | `poll_interval` | `MQ_POLL_INTERVAL` | `5s` | safety-net fetch of an idle topic (wake-ups are pushed; see ARCHITECTURE.md) |
/// | `shutdown_timeout` | `MQ_SHUTDOWN_TIMEOUT` | `30s` | how long a graceful shutdown waits for running handlers |
/// | `command_timeout` | `MQ_COMMAND_TIMEOUT` | `5s` | time limit of one Redis round trip |
/// | `metrics_addr` | `MQ_METRICS_ADDR` | none | where the runtime serves Prometheus metrics at `/metrics`, e.g. `127.0.0.1:9464` (feature `prometheus`) |
///
/// `metrics_addr` needs rmq-runtime's `prometheus` cargo feature. Without it the setting is
/// accepted (so one environment can serve binaries built either way) and the runtime logs
/// a warning at start saying to rebuild with the feature; it never serves anything then.
///
/// Durations read from the environment accept the `#[topic]` syntax: `30` (seconds),
/// `"500ms"`, `"5m"`, `"1h"`. MX-RMQ fields with no meaning here: `connection_pool_size`
/// (one multiplexed connection serves every task), `expired_check_interval` and
/// `processing_monitor_interval` (TTL and lapsed leases are handled atomically inside every
/// fetch, and each runtime arms a timer for the next lease deadline), `monitor_interval` and
/// `batch_size` (no background sweeps exist to tune).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `REDIS_DB`.
    pub redis_db: i64,
    /// `REDIS_PASSWORD`.
    pub redis_password: Option<String>,
    /// `MQ_QUEUE_PREFIX`.
    pub queue_prefix: String,
    /// `MQ_MAX_WORKERS`.
    pub max_workers: usize,
    /// `MQ_TASK_QUEUE_SIZE`.
    pub task_queue_size: usize,
    /// `MQ_MESSAGE_TTL`; zero disables expiry.
    pub message_ttl: Duration,
    /// `MQ_PROCESSING_TIMEOUT`.
    pub processing_timeout: Duration,
    /// `MQ_MAX_RETRIES`.
    pub max_retries: u32,
    /// `MQ_RETRY_DELAYS`.
    pub retry_delays: Vec<Duration>,
    /// `MQ_ENABLE_DEAD_LETTER`.
    pub enable_dead_letter: bool,
    /// `MQ_LEASE_DURATION`.
    pub lease_duration: Duration,
    /// `MQ_DEAD_LETTER_MAX`.
    pub dead_letter_max: usize,
    /// `MQ_DEAD_LETTER_EXPIRED`.
    pub dead_letter_expired: bool,
    /// `MQ_PRODUCE_RETRIES`.
    pub produce_retries: u32,
    /// `MQ_POLL_INTERVAL`.
    pub poll_interval: Duration,
    /// `MQ_SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Duration,
    /// `MQ_COMMAND_TIMEOUT`.
    pub command_timeout: Duration,
    /// `MQ_METRICS_ADDR`: an IP address and port; `None` serves no metrics.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_db: 0,
            redis_password: None,
            queue_prefix: String::new(),
            max_workers: 5,
            task_queue_size: 1000,
            message_ttl: Duration::from_secs(86_400),
            processing_timeout: Duration::from_secs(180),
            max_retries: 3,
            retry_delays: vec![
                Duration::from_secs(60),
                Duration::from_secs(300),
                Duration::from_secs(1800),
            ],
            enable_dead_letter: true,
            lease_duration: Duration::from_secs(30),
            dead_letter_max: 100_000,
            dead_letter_expired: false,
            produce_retries: 0,
            poll_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5),
            metrics_addr: None,
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is invalid: {expected}")]
pub struct ConfigError {
    /// The environment variable (or field) name.
    pub name: String,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub expected: String,
}

impl ConfigError {
    fn new(name: &str, value: impl ToString, expected: impl Into<String>) -> Self {
        ConfigError {
            name: name.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl Config {
    /// Reads every variable of the table above from the process environment; unset
    /// variables keep their defaults.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], reading variables through `lookup` (handy in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("REDIS_URL") {
            c.redis_url = v;
        }
        if let Some(v) = get("REDIS_DB") {
            c.redis_db =
                v.trim().parse().ok().filter(|db| *db >= 0).ok_or_else(|| {
                    ConfigError::new("REDIS_DB", &v, "a database number ≥ 0, e.g. 0")
                })?;
        }
        if let Some(v) = lookup("REDIS_PASSWORD").filter(|v| !v.is_empty()) {
            c.redis_password = Some(v);
        }
        if let Some(v) = lookup("MQ_QUEUE_PREFIX") {
            c.queue_prefix = v;
        }
        if let Some(v) = get("MQ_MAX_WORKERS") {
            c.max_workers = positive("MQ_MAX_WORKERS", &v)?;
        }
        if let Some(v) = get("MQ_TASK_QUEUE_SIZE") {
            c.task_queue_size = positive("MQ_TASK_QUEUE_SIZE", &v)?;
        }
        if let Some(v) = get("MQ_MESSAGE_TTL") {
            c.message_ttl = duration("MQ_MESSAGE_TTL", &v)?;
        }
        if let Some(v) = get("MQ_PROCESSING_TIMEOUT") {
            c.processing_timeout = duration("MQ_PROCESSING_TIMEOUT", &v)?;
        }
        if let Some(v) = get("MQ_MAX_RETRIES") {
            c.max_retries = v.trim().parse().map_err(|_| {
                ConfigError::new("MQ_MAX_RETRIES", &v, "a whole number ≥ 0, e.g. 3")
            })?;
        }
        if let Some(v) = get("MQ_RETRY_DELAYS") {
            c.retry_delays = v
                .split(',')
                .map(|part| duration("MQ_RETRY_DELAYS", part))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("MQ_ENABLE_DEAD_LETTER") {
            c.enable_dead_letter = boolean("MQ_ENABLE_DEAD_LETTER", &v)?;
        }
        if let Some(v) = get("MQ_LEASE_DURATION") {
            c.lease_duration = duration("MQ_LEASE_DURATION", &v)?;
        }
        if let Some(v) = get("MQ_DEAD_LETTER_MAX") {
            c.dead_letter_max = positive("MQ_DEAD_LETTER_MAX", &v)?;
        }
        if let Some(v) = get("MQ_DEAD_LETTER_EXPIRED") {
            c.dead_letter_expired = boolean("MQ_DEAD_LETTER_EXPIRED", &v)?;
        }
        if let Some(v) = get("MQ_PRODUCE_RETRIES") {
            c.produce_retries = v.trim().parse().map_err(|_| {
                ConfigError::new("MQ_PRODUCE_RETRIES", &v, "a whole number ≥ 0, e.g. 3")
            })?;
        }
        if let Some(v) = get("MQ_POLL_INTERVAL") {
            c.poll_interval = duration("MQ_POLL_INTERVAL", &v)?;
        }
        if let Some(v) = get("MQ_SHUTDOWN_TIMEOUT") {
            c.shutdown_timeout = duration("MQ_SHUTDOWN_TIMEOUT", &v)?;
        }
        if let Some(v) = get("MQ_COMMAND_TIMEOUT") {
            c.command_timeout = duration("MQ_COMMAND_TIMEOUT", &v)?;
        }
        if let Some(v) = get("MQ_METRICS_ADDR") {
            c.metrics_addr = Some(v.trim().parse().map_err(|_| {
                ConfigError::new(
                    "MQ_METRICS_ADDR",
                    &v,
                    "an IP address and port to listen on, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464 (host names are not resolved)",
                )
            })?);
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the values a program set in code; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(
                    name,
                    format_duration(d),
                    "a duration above zero",
                ))
            } else {
                Ok(())
            }
        };
        if self.max_workers == 0 {
            return Err(ConfigError::new("max_workers", 0, "at least 1"));
        }
        if self.task_queue_size == 0 {
            return Err(ConfigError::new("task_queue_size", 0, "at least 1"));
        }
        if self.retry_delays.is_empty() {
            return Err(ConfigError::new(
                "retry_delays",
                "[]",
                "at least one delay, e.g. 60s,300s,1800s",
            ));
        }
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "REDIS_URL",
                crate::error::redact(&self.redis_url),
                "a URL such as redis://127.0.0.1:6379 or redis://:password@host:6379/0",
            ));
        }
        nonzero("processing_timeout", self.processing_timeout)?;
        nonzero("poll_interval", self.poll_interval)?;
        if self.lease_duration < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "lease_duration",
                format_duration(self.lease_duration),
                "at least 100ms (it is renewed every third of it)",
            ));
        }
        if self.dead_letter_max == 0 {
            return Err(ConfigError::new("dead_letter_max", 0, "at least 1"));
        }
        nonzero("command_timeout", self.command_timeout)?;
        Ok(())
    }
}

fn boolean(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            value,
            "true or false (also 1/0, yes/no, on/off)",
        )),
    }
}

fn positive(name: &str, value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ConfigError::new(name, value, "a whole number ≥ 1"))
}

fn duration(name: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).map_err(|why| {
        ConfigError::new(
            name,
            value,
            format!("a duration such as 30 (seconds), \"500ms\", \"5m\" or \"1h\" ({why})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_mx_rmq() {
        let c = from(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.message_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn variables_map_onto_fields() {
        let c = from(&[
            ("REDIS_URL", "redis://10.0.0.1:7000"),
            ("REDIS_PASSWORD", "pw"),
            ("MQ_MAX_WORKERS", "12"),
            ("MQ_TASK_QUEUE_SIZE", "20"),
            ("MQ_MESSAGE_TTL", "3600"),
            ("MQ_RETRY_DELAYS", "1, 5s,1m"),
            ("MQ_ENABLE_DEAD_LETTER", "off"),
        ])
        .unwrap();
        assert_eq!(c.redis_url, "redis://10.0.0.1:7000");
        assert_eq!(c.redis_password.as_deref(), Some("pw"));
        assert_eq!((c.max_workers, c.task_queue_size), (12, 20));
        assert_eq!(c.message_ttl, Duration::from_secs(3600));
        assert_eq!(c.retry_delays, [1, 5, 60].map(Duration::from_secs).to_vec());
        assert!(!c.enable_dead_letter);
    }

    #[test]
    fn metrics_addr_is_an_ip_and_port() {
        assert_eq!(from(&[]).unwrap().metrics_addr, None);
        assert_eq!(
            from(&[("MQ_METRICS_ADDR", "  ")]).unwrap().metrics_addr,
            None
        );
        let c = from(&[("MQ_METRICS_ADDR", " 127.0.0.1:9464 ")]).unwrap();
        assert_eq!(
            c.metrics_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let c = from(&[("MQ_METRICS_ADDR", "[::]:9464")]).unwrap();
        assert_eq!(c.metrics_addr.map(|a| a.port()), Some(9464));
        for bad in [
            "9464",
            "localhost:9464",
            "127.0.0.1",
            "127.0.0.1:99999",
            "http://127.0.0.1:9464",
        ] {
            let e = from(&[("MQ_METRICS_ADDR", bad)]).unwrap_err();
            assert_eq!(e.name, "MQ_METRICS_ADDR", "{bad}");
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("e.g. 127.0.0.1:9464"), "{e}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = from(&[("MQ_MAX_WORKERS", "abc")]).unwrap_err();
        assert_eq!(e.name, "MQ_MAX_WORKERS");
        assert!(e.to_string().contains("whole number"), "{e}");
        let e = from(&[("MQ_MESSAGE_TTL", "1 fortnight")]).unwrap_err();
        assert_eq!(e.name, "MQ_MESSAGE_TTL");
        let e = from(&[("REDIS_URL", "localhost:6379")]).unwrap_err();
        assert_eq!(e.name, "REDIS_URL");
    }
}
