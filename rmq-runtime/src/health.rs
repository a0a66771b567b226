//! `health()`: can this process use Redis safely, and how fast is it.

use std::time::{Duration, Instant};

use crate::client::{global_client, Client};
use crate::error::Error;
use crate::state::{runtime_state, RuntimeState};

/// What a health check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Round-trip time of a `PING`.
    pub round_trip: Duration,
    /// `redis_version` of the server.
    pub redis_version: String,
    /// `maxmemory-policy`; anything but `noeviction` can silently delete queued messages.
    pub maxmemory_policy: String,
    /// Append-only file enabled.
    pub aof_enabled: bool,
    /// RDB snapshots configured (`save` not empty).
    pub rdb_enabled: bool,
    /// Plain-language warnings, empty when all is well.
    pub warnings: Vec<String>,
    /// The runtime(s) of this process: running, handlers busy, buffered; `None` when this
    /// process runs none (see [`crate::runtime_state`]).
    pub runtime: Option<RuntimeState>,
}

impl Health {
    /// True when there is nothing to warn about.
    pub fn is_healthy(&self) -> bool {
        self.warnings.is_empty()
    }
}

/// Health of the process-wide client's Redis.
pub async fn health() -> Result<Health, Error> {
    global_client().await?.health().await
}

impl Client {
    /// Checks Redis: reachable (else the error says so), round-trip time, version, whether
    /// it may evict keys, and whether anything survives a restart.
    pub async fn health(&self) -> Result<Health, Error> {
        let mut conn = self.connection();
        let started = Instant::now();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let round_trip = started.elapsed();
        let info: String = redis::cmd("INFO")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        // CONFIG may be renamed or forbidden (managed Redis); then RDB is reported unknown
        // as disabled and said so.
        let save: Option<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async(&mut conn)
            .await
            .ok();
        let rdb_enabled = save
            .as_ref()
            .and_then(|pair| pair.get(1))
            .is_some_and(|v| !v.trim().is_empty());
        let maxmemory_policy = field("maxmemory_policy");
        let aof_enabled = field("aof_enabled") == "1";
        let mut warnings = Vec::new();
        if maxmemory_policy != "noeviction" {
            warnings.push(format!(
                "maxmemory-policy is {maxmemory_policy}: when Redis runs out of memory it deletes keys, queued messages included; set it to noeviction"
            ));
        }
        if !aof_enabled && !rdb_enabled {
            warnings.push(if save.is_none() {
                "persistence unknown (CONFIG GET is not allowed) and the append-only file is off: a Redis restart may lose every queued message".to_string()
            } else {
                "persistence is off (no AOF, no RDB snapshots): a Redis restart loses every queued message; enable appendonly for a queue".to_string()
            });
        }
        Ok(Health {
            round_trip,
            redis_version: field("redis_version"),
            maxmemory_policy,
            aof_enabled,
            rdb_enabled,
            warnings,
            runtime: runtime_state(),
        })
    }
}
