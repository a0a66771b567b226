//! What the `rmq` tests share: a private redis-server and prefix per test, an rmq client on
//! both (to set up messages and check the outcome), and a way to run the built binary.

#![allow(dead_code)] // not every test uses every helper

use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmq_runtime::{Client, Config, RuntimeHandle};
use rmq_testkit::RedisServer;
use serde_json::Value;

/// How long a test waits for something that normally takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A private Redis, a unique prefix, and a client on both.
pub struct Env {
    pub server: RedisServer,
    pub prefix: String,
    pub client: Client,
}

/// What one run of `rmq` did.
#[derive(Debug)]
pub struct Run {
    /// Exit status (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Panics with the whole run unless it exited with `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit status {code}: {self:#?}");
        self
    }

    /// Stdout as JSON, after checking the run succeeded.
    pub fn json(self) -> Value {
        let run = self.expect_code(0);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {run:#?}"))
    }
}

impl Env {
    /// Starts a server and connects a client under a prefix unique to `name`.
    pub async fn start(name: &str) -> Env {
        let server = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
        let prefix = rmq_testkit::unique_prefix(name);
        let client = connect(&server, &prefix).await;
        Env {
            server,
            prefix,
            client,
        }
    }

    /// A client of this test's server under another prefix.
    pub async fn client_under(&self, prefix: &str) -> Client {
        connect(&self.server, prefix).await
    }

    /// Runs `rmq --url <server> --prefix <prefix> ARGS...` with no stdin.
    pub async fn rmq(&self, args: &[&str]) -> Run {
        let url = self.server.url();
        let mut all = vec!["--url", url.as_str(), "--prefix", self.prefix.as_str()];
        all.extend_from_slice(args);
        rmq(&all, &[]).await
    }
}

async fn connect(server: &RedisServer, prefix: &str) -> Client {
    let config = Config {
        redis_url: server.url(),
        queue_prefix: prefix.to_string(),
        ..Config::default()
    };
    within("Client::connect", Client::connect(config))
        .await
        .unwrap_or_else(|e| panic!("Client::connect: {e}"))
}

/// A `rmq` command with a clean environment (none of the caller's REDIS_* / MQ_*) plus
/// `vars`, no stdin, output captured.
pub fn command(args: &[&str], vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rmq"));
    for (name, _) in std::env::vars() {
        if name.starts_with("REDIS_") || name.starts_with("MQ_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `rmq ARGS...` (see [`command`]) to its end.
pub async fn rmq(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let output = within("rmq", command(args, vars).output())
        .await
        .expect("run the rmq binary");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// Awaits `future` at most [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// Polls `check` every 5 ms until it holds; panics naming `what` after [`PATIENCE`].
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A runtime consuming `topics` through `client`, one handler at a time (so the handling
/// order is the delivery order).
pub async fn spawn_runtime(client: &Client, topics: &[&'static str]) -> RuntimeHandle {
    within(
        "spawn",
        rmq_runtime::builder()
            .client(client)
            .topics(topics.iter().copied())
            .max_workers(1)
            .spawn(),
    )
    .await
    .unwrap_or_else(|e| panic!("spawn: {e}"))
}

/// Shuts a runtime down, bounded in time.
pub async fn shutdown(handle: RuntimeHandle) {
    within("shutdown", handle.shutdown())
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
}

/// The ids in a JSON array of objects with an "id".
pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}
