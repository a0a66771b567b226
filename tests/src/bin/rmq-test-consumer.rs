//! The consumer process of the fault tests (`tests/tests/faults_*.rs`).
//!
//! Configured like any rmq program, from the environment (`REDIS_URL`, `MQ_QUEUE_PREFIX`,
//! `MQ_LEASE_DURATION`, `MQ_MAX_WORKERS`, `MQ_SHUTDOWN_TIMEOUT`, ...; `Config::from_env`),
//! plus:
//! - `RMQ_TEST_LOG`: file to which every handler start and finish is appended, one line
//!   per event written with a single `write(2)` on an `O_APPEND` file, so several
//!   processes can share it without interleaving: `start <id> <attempt> <pid>` and
//!   `done <id> <attempt> <pid>`;
//! - `RMQ_TEST_SLEEP_CAP_MS`: caps every `Action::Sleep`.
//!
//! It prints `ready` on stdout once it is connected to Redis, then runs
//! `rmq_runtime::builder().run()` until SIGTERM/SIGINT and exits 0 (2 on an error). It
//! exits by itself (status 3) if its parent, the test, goes away.

use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use rmq_runtime::prelude::*;
use rmq_tests::fault::{Action, LogLine, Work, LOG_ENV, READY_LINE, SLEEP_CAP_ENV};

static LOG: OnceLock<Option<File>> = OnceLock::new();

fn log(event: &str, ctx: &Context) {
    let Some(file) = LOG.get_or_init(open_log) else {
        return;
    };
    let line = LogLine::format(event, ctx.id().as_str(), ctx.attempt(), std::process::id());
    // One write per line: with O_APPEND the kernel places it whole at the end of the file.
    match (&*file).write(line.as_bytes()) {
        Ok(n) if n == line.len() => {}
        other => {
            eprintln!("rmq-test-consumer: could not log {line:?}: {other:?}");
            std::process::exit(4);
        }
    }
}

fn open_log() -> Option<File> {
    let path = std::env::var_os(LOG_ENV)?;
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(file) => Some(file),
        Err(e) => {
            eprintln!("rmq-test-consumer: cannot open {path:?}: {e}");
            std::process::exit(4);
        }
    }
}

fn sleep_cap() -> Option<u64> {
    static CAP: OnceLock<Option<u64>> = OnceLock::new();
    *CAP.get_or_init(|| std::env::var(SLEEP_CAP_ENV).ok()?.trim().parse().ok())
}

#[handler]
async fn work(msg: Work, ctx: Context) -> Result<(), HandlerError> {
    log("start", &ctx);
    match msg.action {
        Action::Abort => std::process::abort(),
        Action::Sleep { ms } => {
            let ms = sleep_cap().map_or(ms, |cap| ms.min(cap));
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
    log("done", &ctx);
    Ok(())
}

/// Exits when the test that started us is gone (we were re-parented), so a killed test
/// run leaves no consumer behind.
fn exit_with_parent() {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(3);
            }
        });
    }
}

#[tokio::main]
async fn main() {
    exit_with_parent();
    // Open the log before the first handler runs, so a bad path fails at once.
    let _ = LOG.get_or_init(open_log);
    if let Err(e) = rmq_runtime::global_client().await {
        eprintln!("rmq-test-consumer: {e}");
        std::process::exit(2);
    }
    println!("{READY_LINE} {}", std::process::id());
    let _ = std::io::stdout().flush();
    match rmq_runtime::builder().run().await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("rmq-test-consumer: {e}");
            std::process::exit(2);
        }
    }
}
