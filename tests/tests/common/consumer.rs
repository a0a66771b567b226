//! Consumer *processes* for the fault tests: start `rmq-test-consumer` (src/bin/) against
//! the test's Redis and prefix, SIGKILL it, SIGTERM it, wait for it to exit, and read the
//! log of handler starts and finishes that every consumer appends to one shared file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rmq_tests::fault::{LogLine, LOG_ENV, READY_LINE};

use super::{TestEnv, PATIENCE};

/// The consumer binary built from `src/bin/rmq-test-consumer.rs`.
pub const CONSUMER_BIN: &str = env!("CARGO_BIN_EXE_rmq-test-consumer");

/// A [`TestEnv`] plus a scratch directory holding the shared handler log and each
/// consumer's stderr. The directory is removed on drop unless the test panicked.
pub struct FaultEnv {
    pub env: TestEnv,
    pub dir: PathBuf,
    pub log: PathBuf,
    started: usize,
}

impl FaultEnv {
    /// A private Redis (with `server_args`), a prefix, a producing client and a scratch
    /// directory for the test `name`.
    pub async fn start(name: &str, server_args: &[&str]) -> FaultEnv {
        let env = TestEnv::start_configured(name, server_args, |c| c).await;
        let dir = std::env::temp_dir().join(format!("rmq-fault-{}", env.prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let log = dir.join("handlers.log");
        std::fs::write(&log, "").expect("create the handler log");
        FaultEnv {
            env,
            dir,
            log,
            started: 0,
        }
    }

    /// Starts a consumer process named `name` with the test's `REDIS_URL`,
    /// `MQ_QUEUE_PREFIX` and log, plus `vars`; returns once it printed `ready`.
    pub async fn consumer(&mut self, name: &str, vars: &[(&str, &str)]) -> Consumer {
        self.started += 1;
        let stderr_path = self.dir.join(format!("{}-{name}.stderr", self.started));
        let stderr = std::fs::File::create(&stderr_path).expect("consumer stderr file");
        // `ulimit -c 0`: the consumers that abort must not write core dumps.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("ulimit -c 0 2>/dev/null; exec \"$0\"")
            .arg(CONSUMER_BIN);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("MQ_") || key_text.starts_with("REDIS_") {
                command.env_remove(&key);
            }
        }
        command
            .env("REDIS_URL", self.env.server.url())
            .env("MQ_QUEUE_PREFIX", &self.env.prefix)
            .env(LOG_ENV, &self.log)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CONSUMER_BIN}: {e}"));
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut consumer = Consumer {
            name: name.to_string(),
            child: Some(child),
            pid,
            stderr_path,
            status: None,
        };
        loop {
            match rx.try_recv() {
                Ok(line) if line.starts_with(READY_LINE) => break,
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = consumer.wait_exit(Duration::from_secs(2)).await;
                    panic!(
                        "consumer {name} exited before it was ready ({status:?}); stderr:\n{}",
                        consumer.stderr()
                    );
                }
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "consumer {name} not ready after {:?}; stderr:\n{}",
                    started.elapsed(),
                    consumer.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        consumer
    }

    /// Every line of the shared handler log so far.
    pub fn log_lines(&self) -> Vec<LogLine> {
        read_log(&self.log)
    }

    /// The log grouped by message id.
    pub fn deliveries(&self) -> Deliveries {
        Deliveries::from_lines(self.log_lines())
    }

    /// Polls the log until `check` holds; panics with `what` after `timeout`. Returns how
    /// long it took.
    pub async fn wait_log(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Deliveries) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let deliveries = self.deliveries();
            if check(&deliveries) {
                return started.elapsed();
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {:?} waiting for {what}; log has {} lines; Redis holds:\n{}",
                    started.elapsed(),
                    deliveries.lines,
                    self.env.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FaultEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fault test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The handler log parsed (lines that do not parse fail the test: a torn line means two
/// processes' writes interleaved).
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            LogLine::parse(line)
                .unwrap_or_else(|| panic!("malformed line {line:?} in {}", path.display()))
        })
        .collect()
}

/// Handler starts and finishes per message id, in log order.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub by_id: BTreeMap<String, Vec<LogLine>>,
    pub lines: usize,
}

impl Deliveries {
    pub fn from_lines(lines: Vec<LogLine>) -> Deliveries {
        let mut out = Deliveries {
            lines: lines.len(),
            ..Default::default()
        };
        for line in lines {
            out.by_id.entry(line.id.clone()).or_default().push(line);
        }
        out
    }

    fn events<'a>(&'a self, id: &str, event: &'a str) -> impl Iterator<Item = &'a LogLine> + 'a {
        self.by_id
            .get(id)
            .into_iter()
            .flatten()
            .filter(move |l| l.event == event)
    }

    /// The `start` lines of `id`.
    pub fn starts(&self, id: &str) -> Vec<&LogLine> {
        self.events(id, "start").collect()
    }

    /// The `done` lines of `id`.
    pub fn dones(&self, id: &str) -> Vec<&LogLine> {
        self.events(id, "done").collect()
    }

    /// Ids with at least one `done`.
    pub fn done_ids(&self) -> Vec<&str> {
        self.by_id
            .keys()
            .filter(|id| self.events(id, "done").next().is_some())
            .map(String::as_str)
            .collect()
    }

    /// How many ids have at least one `done`.
    pub fn done_count(&self) -> usize {
        self.done_ids().len()
    }

    /// `(event, attempt, pid)` of every line of `id`, for assertions and messages.
    pub fn summary(&self, id: &str) -> Vec<(String, u32, u32)> {
        self.by_id
            .get(id)
            .into_iter()
            .flatten()
            .map(|l| (l.event.clone(), l.attempt, l.pid))
            .collect()
    }
}

/// A running (or exited) `rmq-test-consumer`; killed on drop if still running.
pub struct Consumer {
    pub name: String,
    child: Option<Child>,
    pub pid: u32,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Consumer {
    /// What the process wrote on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn sigkill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            self.status = child.wait().ok();
            self.child = None;
        }
    }

    /// Sends SIGTERM (the graceful-shutdown signal).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// SIGSTOP, then waits until every thread of the process has stopped: `kill` returns
    /// before the signal is delivered, and a thread still running meanwhile can take a
    /// message the test means the stopped process to hold untouched.
    pub async fn sigstop(&self) {
        self.signal("STOP");
        let tasks = format!("/proc/{}/task", self.pid);
        let stopped = || {
            let Ok(threads) = std::fs::read_dir(&tasks) else {
                return false;
            };
            threads.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // "<tid> (<name>) <state> ...": the name may hold spaces and parentheses
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        };
        let deadline = Instant::now() + PATIENCE;
        while !stopped() {
            assert!(
                Instant::now() < deadline,
                "consumer {} did not stop",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends `kill -SIG` to the process (if it is still ours to signal).
    pub fn signal(&self, sig: &str) {
        if self.child.is_none() {
            return;
        }
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.status = Some(status);
                self.child = None;
            }
        }
        self.status
    }

    /// Waits at most `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then waits (at most `timeout`) for exit status 0; returns how long it took.
    pub async fn stop_gracefully(&mut self, timeout: Duration) -> Duration {
        let asked = Instant::now();
        self.sigterm();
        match self.wait_exit(timeout).await {
            Some(status) if status.success() => asked.elapsed(),
            Some(status) => panic!(
                "consumer {} exited with {status} after SIGTERM; stderr:\n{}",
                self.name,
                self.stderr()
            ),
            None => panic!(
                "consumer {} still running {timeout:?} after SIGTERM; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The signal that ended `status`, if any.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal()
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}
