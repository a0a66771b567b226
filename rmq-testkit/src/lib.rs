//! A private `redis-server` for rmq's integration tests, examples and benchmark.
//!
//! [`RedisServer::start`] launches the machine's `redis-server` on a free loopback port,
//! without persistence, in its own temporary directory, and returns once the server
//! answers. Dropping the handle kills the server and removes the directory. Together with
//! [`unique_prefix`] this lets every test own its Redis state, so tests run in parallel.
//!
//! ```no_run
//! let server = rmq_testkit::RedisServer::start()?;
//! let prefix = rmq_testkit::unique_prefix("my_test");
//! println!("redis at {} with keys under {prefix}:", server.url());
//! # Ok::<(), rmq_testkit::TestkitError>(())
//! ```
//!
//! Only the standard library is used, so the crate builds long before the runtime does.
//!
//! Orphans: on Linux the server is started with a parent-death signal (SIGKILL), so it
//! dies with the test process even when that process is killed with SIGKILL; elsewhere
//! only `Drop` (which also runs when a test panics) and Ctrl-C (delivered to the whole
//! process group) stop it.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable naming the `redis-server` binary to run (default: `redis-server`
/// found on `PATH`).
pub const SERVER_BINARY_ENV: &str = "RMQ_REDIS_SERVER";

/// How long [`RedisServer::start`] waits for a launched server to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ports [`RedisServer::start`] tries when another process takes the chosen port
/// between choosing it and the server binding it.
const START_ATTEMPTS: usize = 5;

/// What redis-server logs once it listens (Redis 2.x says "The server is now ready to
/// accept connections", later versions "Ready to accept connections"; compared
/// case-insensitively).
const READY_LINE: &str = "ready to accept connections";

/// What redis-server logs when its port is taken.
const PORT_TAKEN_LINES: [&str; 2] = [
    "Address already in use",
    "Could not create server TCP listening socket",
];

/// Lines of the server's log quoted in errors.
const LOG_TAIL_LINES: usize = 20;

/// Why a server could not be started or restarted.
#[derive(Debug)]
pub enum TestkitError {
    /// The `redis-server` binary does not exist.
    NotInstalled {
        /// The binary that was looked for.
        binary: PathBuf,
    },
    /// The binary exists but could not be launched.
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The server exited before it answered.
    ExitedEarly {
        /// The binary.
        binary: PathBuf,
        /// The port it was told to listen on.
        port: u16,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log and of its stdout/stderr.
        log_tail: String,
    },
    /// The server kept running but did not answer PING in time.
    NotReady {
        /// The port it was told to listen on.
        port: u16,
        /// How long we waited.
        waited: Duration,
        /// The last lines of its log and of its stdout/stderr.
        log_tail: String,
    },
    /// A file-system or process operation around the server failed.
    Io {
        /// What was being done.
        action: String,
        /// The operating system's error.
        source: io::Error,
    },
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestkitError::NotInstalled { binary } => write!(
                f,
                "`{}` was not found: rmq's tests start a private redis-server, so it must be \
                 installed — install it, e.g. `apt-get install redis-server` (Debian/Ubuntu) or \
                 `brew install redis` (macOS), or set {SERVER_BINARY_ENV} to the path of a \
                 redis-server binary",
                binary.display()
            ),
            TestkitError::Spawn { binary, source } => write!(
                f,
                "could not launch `{}`: {source} (set {SERVER_BINARY_ENV} to a runnable \
                 redis-server binary)",
                binary.display()
            ),
            TestkitError::ExitedEarly {
                binary,
                port,
                status,
                log_tail,
            } => write!(
                f,
                "`{}` exited before answering on 127.0.0.1:{port} ({status}); the end of its \
                 log:\n{log_tail}",
                binary.display()
            ),
            TestkitError::NotReady {
                port,
                waited,
                log_tail,
            } => write!(
                f,
                "redis-server on 127.0.0.1:{port} did not answer PING within {waited:?}; the \
                 end of its log:\n{log_tail}"
            ),
            TestkitError::Io { action, source } => write!(f, "could not {action}: {source}"),
        }
    }
}

impl std::error::Error for TestkitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestkitError::Spawn { source, .. } | TestkitError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> TestkitError {
    let action = action.into();
    move |source| TestkitError::Io { action, source }
}

/// A `redis-server` process owned by this handle, listening on `127.0.0.1:port()`, with no
/// persistence (`--save "" --appendonly no`) and its own temporary directory holding its
/// log. Dropping the handle kills the server and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    extra_args: Vec<OsString>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits (at most [`READY_TIMEOUT`]) until it
    /// answers PING. The binary is `redis-server` from `PATH`, or `$RMQ_REDIS_SERVER`.
    pub fn start() -> Result<RedisServer, TestkitError> {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], passing extra command-line arguments to the server,
    /// e.g. `&["--requirepass", "s3cret"]` or `&["--maxmemory-policy", "noeviction"]`.
    pub fn start_with(extra_args: &[&str]) -> Result<RedisServer, TestkitError> {
        let binary = std::env::var_os(SERVER_BINARY_ENV)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        Self::start_binary(binary, extra_args)
    }

    /// Starts `binary` (a redis-server) the way [`RedisServer::start_with`] does.
    fn start_binary(binary: PathBuf, extra_args: &[&str]) -> Result<RedisServer, TestkitError> {
        let dir = fresh_dir()?;
        // From here on, dropping `server` removes the directory and kills any child.
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            binary,
            extra_args: extra_args.iter().map(OsString::from).collect(),
        };
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) if port_taken(&e) && attempt < START_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, for [`redis_answers`] or a raw connection.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// The process id of the running server, `None` after [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still running (it may have crashed on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with SIGKILL (no chance to save or to close connections cleanly)
    /// and waits for it to exit. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill fails only if the process was already reaped; wait reaps it otherwise
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port and directory
    /// and waits until it answers. Nothing was persisted, so it comes back empty.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        // The old process is gone, but the kernel may briefly keep its port; retry then.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch() {
                Err(e) if port_taken(&e) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50))
                }
                other => return other,
            }
        }
    }

    /// Launches the process on `self.port` and waits until it is ready; on failure no
    /// process is left running.
    fn launch(&mut self) -> Result<(), TestkitError> {
        debug_assert!(self.child.is_none());
        let log_path = self.log_path();
        let stdio_path = self.dir.join("stdio.log");
        // Only what this launch writes counts when looking for the "ready" line.
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let stdio_start = fs::metadata(&stdio_path).map(|m| m.len()).unwrap_or(0);
        let stdio = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdio_path)
            .map_err(io_error(format!("create {}", stdio_path.display())))?;
        let stdio_err = stdio
            .try_clone()
            .map_err(io_error("duplicate a file handle"))?;

        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--daemonize", "no"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log_path)
            .args(&self.extra_args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio_err);

        let child = orphan_guard::spawn(command).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                TestkitError::NotInstalled {
                    binary: self.binary.clone(),
                }
            } else {
                TestkitError::Spawn {
                    binary: self.binary.clone(),
                    source,
                }
            }
        })?;
        self.child = Some(child);

        let started = Instant::now();
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(status)) => status,
                Some(Err(source)) => {
                    self.kill();
                    return Err(TestkitError::Io {
                        action: "check on redis-server".into(),
                        source,
                    });
                }
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(TestkitError::ExitedEarly {
                    binary: self.binary.clone(),
                    port: self.port,
                    status,
                    log_tail: self.log_tail(log_start, stdio_start),
                });
            }
            // The log line proves that *our* process bound the port (another server that
            // happens to listen there would also answer PING).
            let logged_ready = read_from(&log_path, log_start)
                .to_ascii_lowercase()
                .contains(READY_LINE);
            if logged_ready && ping(&self.addr(), Duration::from_millis(300)).is_some() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let log_tail = self.log_tail(log_start, stdio_start);
                self.kill();
                return Err(TestkitError::NotReady {
                    port: self.port,
                    waited: started.elapsed(),
                    log_tail,
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines of this launch's log and stdout/stderr (config errors go to stderr).
    fn log_tail(&self, log_start: u64, stdio_start: u64) -> String {
        let text = format!(
            "{}{}",
            read_from(&self.log_path(), log_start),
            read_from(&self.dir.join("stdio.log"), stdio_start)
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return "    (the log is empty)".into();
        }
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
            .iter()
            .map(|line| format!("    {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn port_taken(error: &TestkitError) -> bool {
    match error {
        TestkitError::ExitedEarly { log_tail, .. } => {
            PORT_TAKEN_LINES.iter().any(|line| log_tail.contains(line))
        }
        _ => false,
    }
}

/// The contents of `path` from byte `start` on (empty if unreadable).
fn read_from(path: &Path, start: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    let start = (start as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A port that was free a moment ago: bind port 0 and let the kernel choose. Another
/// process may take it before the server binds it; callers retry then.
fn free_port() -> Result<u16, TestkitError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(io_error("bind a port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_error("read a bound port"))?
        .port();
    Ok(port)
}

/// A new, empty directory under the system's temp dir.
fn fresh_dir() -> Result<PathBuf, TestkitError> {
    remove_dirs_of_dead_processes();
    let dir = std::env::temp_dir().join(format!("rmq-redis-{}", unique_suffix()));
    fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
    Ok(dir)
}

/// Removes `rmq-redis-PID-*` directories left by test processes that were killed before
/// `Drop` ran (their servers died with them, see `orphan_guard`). Once per process; Linux
/// only, where `/proc` tells whether PID still runs.
fn remove_dirs_of_dead_processes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("rmq-redis-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// `pid-counter-time` (base 36 time in µs): unique within and across processes.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    format!("{}-{n}-{}", std::process::id(), base36(micros))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize] as char);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.iter().rev().collect()
}

/// A key prefix unique to this call: the test name (characters outside `[A-Za-z0-9_.-]`
/// replaced by `_`, at most 48 of them), the process id, a per-process counter and the
/// time. Safe in Redis keys and in `MQ_QUEUE_PREFIX`.
///
/// ```
/// let a = rmq_testkit::unique_prefix("priority::order");
/// let b = rmq_testkit::unique_prefix("priority::order");
/// assert_ne!(a, b);
/// assert!(a.starts_with("priority__order-"));
/// ```
pub fn unique_prefix(test_name: &str) -> String {
    let name: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let name = if name.is_empty() { "t".into() } else { name };
    format!("{name}-{}", unique_suffix())
}

/// Whether something at `addr` (e.g. `"127.0.0.1:6379"`) answers `PING` with `+PONG`
/// within about 300 ms. A server that requires a password answers `-NOAUTH` and does not
/// count: a program without the password could not use it.
pub fn redis_answers(addr: &str) -> bool {
    matches!(ping(addr, Duration::from_millis(300)), Some(Pong::Pong))
}

#[derive(Debug, PartialEq, Eq)]
enum Pong {
    /// `+PONG`
    Pong,
    /// `-NOAUTH ...`: alive, but wants a password.
    NeedsAuth,
}

/// Sends an inline `PING` and reads the first reply line, all within about `timeout`.
fn ping(addr: &str, timeout: Duration) -> Option<Pong> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().ok()?.collect();
    let deadline = Instant::now() + timeout;
    for sock in addrs {
        let left = deadline.checked_duration_since(Instant::now())?;
        let Ok(mut stream) = TcpStream::connect_timeout(&sock, left) else {
            continue;
        };
        let left = deadline.checked_duration_since(Instant::now())?;
        stream.set_read_timeout(Some(left)).ok()?;
        stream.set_write_timeout(Some(left)).ok()?;
        stream.write_all(b"PING\r\n").ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 64];
        while !reply.contains(&b'\n') && reply.len() < 256 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        if reply.starts_with(b"+PONG") {
            return Some(Pong::Pong);
        }
        if reply.starts_with(b"-NOAUTH") {
            return Some(Pong::NeedsAuth);
        }
    }
    None
}

/// Spawning so that the server dies with this process.
#[cfg(target_os = "linux")]
mod orphan_guard {
    use std::io;
    use std::os::raw::{c_int, c_ulong};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    use std::thread;

    const PR_SET_PDEATHSIG: c_int = 1;
    const SIGKILL: c_ulong = 9;

    extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
        fn getppid() -> c_int;
    }

    type Request = (Command, mpsc::Sender<io::Result<Child>>);

    /// Spawns `command` with `PR_SET_PDEATHSIG = SIGKILL`. Linux sends that signal when the
    /// *thread* that forked the child exits, so every child is forked by one spawner thread
    /// that lives as long as the process.
    pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
        let parent = std::process::id() as c_int;
        // SAFETY: the closure runs between fork and exec and calls only prctl and getppid,
        // both async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if getppid() != parent {
                    return Err(io::Error::other("the test process exited"));
                }
                Ok(())
            });
        }
        static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
        let spawner = SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            thread::Builder::new()
                .name("rmq-testkit-spawner".into())
                .spawn(move || {
                    for (mut command, reply) in rx {
                        let _ = reply.send(command.spawn());
                    }
                })
                .map(|_| ())
                .unwrap_or_else(|e| eprintln!("rmq-testkit: no spawner thread: {e}"));
            Mutex::new(tx)
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = spawner
            .lock()
            .map_err(|_| io::Error::other("spawner lock poisoned"))?
            .send((command, reply_tx));
        match sent {
            Ok(()) => reply_rx
                .recv()
                .map_err(|_| io::Error::other("spawner thread is gone"))?,
            // no spawner thread: spawn here, the guard then covers this thread's life only
            Err(mpsc::SendError((mut command, _))) => command.spawn(),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod orphan_guard {
    use std::io;
    use std::process::{Child, Command};

    pub(crate) fn spawn(mut command: Command) -> io::Result<Child> {
        command.spawn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one inline command and returns the reply without its last CRLF (an array of
    /// N bulk strings is read up to its 1 + 2N lines).
    fn command(server: &RedisServer, line: &str) -> String {
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
        let mut reply = Vec::new();
        let mut buf = [0u8; 256];
        // enough for the replies used here: one line, a bulk string, or an array of them
        let complete = |reply: &[u8]| {
            let text = String::from_utf8_lossy(reply);
            let lines = text.matches("\r\n").count();
            let needed = match text.as_bytes().first() {
                Some(b'*') => {
                    let n: usize = text[1..]
                        .split("\r\n")
                        .next()
                        .unwrap_or("")
                        .parse()
                        .unwrap_or(0);
                    1 + 2 * n
                }
                Some(b'$') if !text.starts_with("$-1") => 2,
                _ => 1,
            };
            lines >= needed
        };
        while !complete(&reply) {
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0, "connection closed");
            reply.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&reply);
        text.strip_suffix("\r\n").unwrap_or(&text).to_string()
    }

    fn process_exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    }

    #[test]
    fn start_answers_ping_and_drop_cleans_up() {
        let server = RedisServer::start().expect("start redis-server");
        assert!(server.url().starts_with("redis://127.0.0.1:"));
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        assert!(redis_answers(&server.addr()));
        assert_eq!(command(&server, "SET k v"), "+OK");
        assert_eq!(
            command(&server, "CONFIG GET save"),
            "*2\r\n$4\r\nsave\r\n$0\r\n"
        );
        assert_eq!(
            command(&server, "CONFIG GET appendonly"),
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno"
        );
        assert!(server.log_path().exists());
        let dir = server.dir().to_path_buf();
        let pid = server.pid().expect("running");
        let addr = server.addr();
        drop(server);
        assert!(!dir.exists(), "{} should be removed", dir.display());
        assert!(!redis_answers(&addr));
        if cfg!(target_os = "linux") {
            assert!(!process_exists(pid), "redis-server {pid} still runs");
        }
    }

    #[test]
    fn kill_then_restart_on_same_port_comes_back_empty() {
        let mut server = RedisServer::start().expect("start redis-server");
        let port = server.port();
        assert_eq!(command(&server, "SET k v"), "+OK");
        server.kill();
        assert!(!server.is_running());
        assert!(server.pid().is_none());
        assert!(!redis_answers(&server.addr()));
        server.kill(); // idempotent

        server.restart().expect("restart");
        assert_eq!(server.port(), port);
        assert!(server.is_running());
        assert!(redis_answers(&server.addr()));
        assert_eq!(command(&server, "GET k"), "$-1", "nothing is persisted");

        // restart of a running server replaces the process
        let first = server.pid();
        server.restart().expect("restart while running");
        assert_ne!(server.pid(), first);
        assert!(redis_answers(&server.addr()));
    }

    #[test]
    fn two_servers_use_different_ports_and_data() {
        let a = RedisServer::start().expect("start a");
        let b = RedisServer::start().expect("start b");
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
        assert_eq!(command(&a, "SET only_a 1"), "+OK");
        assert_eq!(command(&b, "EXISTS only_a"), ":0");
        assert_eq!(command(&a, "EXISTS only_a"), ":1");
    }

    #[test]
    fn extra_args_reach_the_server() {
        let server = RedisServer::start_with(&["--requirepass", "s3cret"]).expect("start");
        assert!(
            !redis_answers(&server.addr()),
            "a server that wants a password is not usable without it"
        );
        assert_eq!(
            ping(&server.addr(), Duration::from_millis(300)),
            Some(Pong::NeedsAuth)
        );
        assert!(command(&server, "GET x").starts_with("-NOAUTH"));
        assert_eq!(command(&server, "AUTH s3cret"), "+OK");
    }

    #[test]
    fn missing_binary_says_how_to_install() {
        let missing = PathBuf::from("/nonexistent/rmq-testkit/redis-server");
        let err = RedisServer::start_binary(missing, &[]).expect_err("must fail");
        assert!(matches!(err, TestkitError::NotInstalled { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/rmq-testkit/redis-server"),
            "{text}"
        );
        assert!(text.contains("apt-get install redis-server"), "{text}");
        assert!(text.contains(SERVER_BINARY_ENV), "{text}");
    }

    #[test]
    fn early_exit_quotes_the_log() {
        let err = RedisServer::start_with(&["--no-such-option", "1"]).expect_err("must fail");
        assert!(matches!(err, TestkitError::ExitedEarly { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("no-such-option"), "{text}");
        eprintln!("{text}");
    }

    /// Run as a child process by `server_dies_with_a_killed_test_process`: starts a server,
    /// prints its pid and waits to be killed.
    #[test]
    fn orphan_helper() {
        if std::env::var_os("RMQ_TESTKIT_ORPHAN_HELPER").is_none() {
            return;
        }
        let server = RedisServer::start().expect("start");
        println!(
            "REDIS_PID={} ADDR={} DIR={}",
            server.pid().expect("pid"),
            server.addr(),
            server.dir().display()
        );
        io::stdout().flush().expect("flush");
        thread::sleep(Duration::from_secs(30));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn server_dies_with_a_killed_test_process() {
        use std::io::BufRead;
        let mut helper = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "tests::orphan_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RMQ_TESTKIT_ORPHAN_HELPER", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn helper");
        let stdout = helper.stdout.take().expect("stdout");
        let line = io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| Some(line.split_once("REDIS_PID=")?.1.to_string()))
            .expect("helper prints the server pid");
        let (pid, rest) = line.split_once(" ADDR=").expect("pid and addr");
        let (addr, dir) = rest.split_once(" DIR=").expect("addr and dir");
        let pid: u32 = pid.parse().expect("pid");
        assert!(redis_answers(addr));
        helper.kill().expect("SIGKILL helper");
        helper.wait().expect("reap helper");
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_exists(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !process_exists(pid),
            "redis-server {pid} outlived its test process"
        );
        assert!(!redis_answers(addr));
        // the killed helper could not clean up its directory; the next process that starts a
        // server does (possibly a test running beside this one, already), so do not assert
        // that it is still there
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn redis_answers_is_false_where_nothing_listens() {
        let port = free_port().expect("port");
        let started = Instant::now();
        assert!(!redis_answers(&format!("127.0.0.1:{port}")));
        assert!(!redis_answers("not a host name:1"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn unique_prefixes_are_unique_and_key_safe() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let prefix = unique_prefix("tests::a b{c}/ü");
            assert!(prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)));
            assert!(prefix.starts_with("tests__a_b_c___-"), "{prefix}");
            assert!(seen.insert(prefix));
        }
        assert!(unique_prefix("").starts_with("t-"));
        assert!(unique_prefix(&"x".repeat(500)).len() < 100);
    }
}
