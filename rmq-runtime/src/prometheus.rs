//! Feature `prometheus`: the figures of [`Client::topic_stats`] and [`Client::producer_stats`]
//! in the Prometheus text format (version 0.0.4), and a small HTTP endpoint serving them at
//! `/metrics`.
//!
//! The runtime starts the endpoint by itself when `Config::metrics_addr`
//! (`MQ_METRICS_ADDR`, e.g. `127.0.0.1:9464`) is set, for the topics it consumes, and stops
//! it at shutdown. A program can also serve it alone with [`serve`], or mount [`render`] on
//! an HTTP server of its own.
//!
//! Every scrape reads Redis afresh: one pipelined round trip per topic, all topics at once,
//! bounded by `Config::command_timeout`. When Redis cannot be read the endpoint still answers
//! `200` with `rmq_up 0` and the in-process figures (producer, workers), so the scrape itself
//! never fails and an alert can fire on `rmq_up == 0`.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `rmq_up` | gauge | | 1 when this scrape could read Redis, else 0 |
//! | `rmq_topic_messages` | gauge | `topic`, `state`, `priority` | messages now in each state: `state="pending"` with `priority="high"\|"normal"\|"low"`; `state="delayed"`, `"in_flight"`, `"dead"` without `priority` |
//! | `rmq_topic_paused` | gauge | `topic` | 1 while the topic is paused |
//! | `rmq_messages_total` | counter | `topic`, `event` | what happened to the topic's messages since it was first used, in every process (kept in Redis by the scripts): `produced`, `delivered`, `completed`, `failed` (attempts), `retried`, `dead`, `expired`, `dropped`, `lost`, `dead_evicted`, `replayed`, `purged` |
//! | `rmq_handler_duration_seconds` | histogram | `topic`, `le` | handler run time per attempt, in every process (kept in Redis) |
//! | `rmq_producer_messages_total` | counter | `result` = `sent`\|`duplicate`\|`failed` | messages produced through this process's client |
//! | `rmq_producer_requests_total` | counter | | produce requests (`produce()`, `send()`, `produce_batch()`) of this process's client |
//! | `rmq_producer_request_seconds_avg`, `_max` | gauge | | mean and longest produce request of this process's client |
//! | `rmq_workers_busy`, `rmq_workers_max` | gauge | | handlers running now, and the most allowed, in the runtimes of this process (summed; absent when none runs) |
//!
//! The `topic` counters and histograms are deployment-wide: every process serving them
//! reports the same series, so aggregate them with `max by (topic)`, not `sum`. The producer
//! and worker figures belong to the process that serves them.
//!
//! The endpoint is deliberately small: HTTP/1.1 `GET` (or `HEAD`) of `/metrics`, one request
//! per connection (`Connection: close`), any other path `404`. A request must arrive within
//! 5 seconds and 8 KiB, and at most 32 connections are served at once, so a slow or hostile
//! client cannot hold it. It has no TLS and no authentication: bind it to a private
//! interface.

use std::fmt::{Display, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::Client;
use crate::error::Error;
use crate::state::RuntimeState;
use crate::stats::{ProducerStats, TopicStats};

/// `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `stats` counters every topic reports, as `rmq_messages_total{event=..}`, zero until
/// they happen (so the series exist from the first scrape). Counters the scripts gain later
/// are reported too, after these.
const PRIORITIES: [&str; 3] = ["high", "normal", "low"];

/// Longest wait for a client's request (its first line and headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request accepted (request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// Longest wait for a client to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, after the response, for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 32;

/// One scrape: the metrics of `topics` and of this process, in the Prometheus text format
/// ([`CONTENT_TYPE`]). For a program that serves HTTP itself:
///
/// ```no_run
/// # async fn f(client: rmq_runtime::Client) {
/// let body = rmq_runtime::prometheus::render(&client, &["order_created"]).await;
/// // respond with Content-Type: rmq_runtime::prometheus::CONTENT_TYPE
/// # }
/// ```
///
/// It does not fail: when Redis cannot be read within `Config::command_timeout` the text says
/// `rmq_up 0` and holds only the in-process figures (the error is logged, at most once a
/// minute at WARN, else at DEBUG).
pub async fn render(client: &Client, topics: &[&str]) -> String {
    let reads = async {
        if topics.is_empty() {
            // nothing to read, but `rmq_up` must still say whether Redis answers
            redis::cmd("PING")
                .query_async::<()>(&mut client.connection())
                .await
                .map_err(|e| client.error(e))?;
        }
        futures_util::future::try_join_all(topics.iter().map(|t| client.topic_stats(t))).await
    };
    let stats = match tokio::time::timeout(client.config().command_timeout, reads).await {
        Ok(Ok(stats)) => Some(stats),
        Ok(Err(e)) => {
            log_scrape_failure(&e);
            None
        }
        Err(_) => {
            log_scrape_failure(&format!(
                "Redis did not answer within {:?}",
                client.config().command_timeout
            ));
            None
        }
    };
    let mut out = String::with_capacity(4096);
    write_metrics(
        &mut out,
        stats.as_deref(),
        &client.producer_stats(),
        crate::runtime_state().as_ref(),
    );
    out
}

/// Serves [`render`] for `topics` at `http://addr/metrics` until the returned server is
/// shut down or dropped. Port 0 picks a free port: see [`MetricsServer::local_addr`].
///
/// Fails when `addr` cannot be bound (in use, not an address of this host, a privileged
/// port), naming the address.
pub async fn serve(
    client: Client,
    addr: SocketAddr,
    topics: Vec<String>,
) -> Result<MetricsServer, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, &e))?;
    let local_addr = listener.local_addr().map_err(|e| bind_error(addr, &e))?;
    let state = Arc::new(Endpoint { client, topics });
    let task = tokio::spawn(accept_loop(listener, state));
    Ok(MetricsServer { local_addr, task })
}

/// A running metrics endpoint (see [`serve`]). Dropping it stops it too, without waiting.
#[derive(Debug)]
#[must_use = "the endpoint stops when its MetricsServer is dropped"]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (with the port chosen when it was asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and closes the connections being served; when it returns the port is
    /// free again.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The runtime's hook: the endpoint of `Config::metrics_addr`, when set, for `topics`.
pub(crate) async fn serve_for_runtime(
    client: &Client,
    topics: impl IntoIterator<Item = &str>,
) -> Result<Option<MetricsServer>, Error> {
    let Some(addr) = client.config().metrics_addr else {
        return Ok(None);
    };
    let topics = topics.into_iter().map(str::to_string).collect();
    let server = serve(client.clone(), addr, topics).await?;
    tracing::info!(addr = %server.local_addr(), "serving Prometheus metrics at http://{}/metrics", server.local_addr());
    Ok(Some(server))
}

fn bind_error(addr: SocketAddr, e: &std::io::Error) -> Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => " — something else (another process, or another runtime of this one) listens there; set MQ_METRICS_ADDR (Config::metrics_addr) to a free address",
        std::io::ErrorKind::AddrNotAvailable => " — it is not an address of this host; use 127.0.0.1 or 0.0.0.0 with a port",
        std::io::ErrorKind::PermissionDenied => " — ports below 1024 need privileges; choose e.g. 9464",
        _ => "",
    };
    Error::InvalidOption(format!(
        "cannot serve Prometheus metrics on {addr}: {e}{hint}"
    ))
}

struct Endpoint {
    client: Client,
    topics: Vec<String>,
}

async fn accept_loop(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Owned here so that aborting this task closes every connection being served.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let endpoint = endpoint.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    answer(stream, &endpoint).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, endpoint: &Endpoint) {
    let request = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await;
    let response = match request {
        Err(_) => return, // too slow: just close
        Ok(Err(Malformed::TooLarge)) => plain(
            "431 Request Header Fields Too Large",
            "",
            "request too large",
        ),
        Ok(Err(Malformed::Closed)) => return,
        Ok(Err(Malformed::BadRequest)) => plain("400 Bad Request", "", "bad request"),
        Ok(Ok(head)) => route(&head, endpoint).await,
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    if let Ok(Ok(())) = tokio::time::timeout(WRITE_TIMEOUT, write).await {
        // Closing a socket with unread input makes the kernel send a reset, which can
        // destroy the response before the client reads it (a refused oversized request):
        // take what the client still sends, briefly, until it closes.
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut left = 1 << 20;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left -= n.min(left),
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

async fn route(head: &str, endpoint: &Endpoint) -> Vec<u8> {
    let Some((method, path)) = request_line(head) else {
        return plain("400 Bad Request", "", "bad request");
    };
    if path != "/metrics" {
        return plain("404 Not Found", "", "not found: rmq serves /metrics only");
    }
    match method {
        "GET" | "HEAD" => {
            let topics: Vec<&str> = endpoint.topics.iter().map(String::as_str).collect();
            let body = render(&endpoint.client, &topics).await;
            response("200 OK", CONTENT_TYPE, "", body.as_bytes(), method == "GET")
        }
        _ => plain(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "use GET /metrics",
        ),
    }
}

enum Malformed {
    TooLarge,
    Closed,
    BadRequest,
}

/// Reads the request line and headers (up to the blank line), at most [`MAX_REQUEST`]
/// bytes. A body, if any, is ignored.
async fn read_request(stream: &mut TcpStream) -> Result<String, Malformed> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| Malformed::Closed)?;
        if n == 0 {
            return Err(Malformed::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end_of_head(&buf) {
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| Malformed::BadRequest);
        }
        if buf.len() >= MAX_REQUEST {
            return Err(Malformed::TooLarge);
        }
    }
}

/// Where the head ends: at the line break before the first blank line (`\r\n\r\n`, or
/// `\n\n` from lax clients).
fn find_end_of_head(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `GET /metrics?x=1 HTTP/1.1` → `("GET", "/metrics")`.
fn request_line(head: &str) -> Option<(&str, &str)> {
    let mut parts = head.lines().next()?.split_ascii_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some((method, path))
}

/// An error response with a one-line explanation.
fn plain(status: &str, extra_headers: &str, text: &str) -> Vec<u8> {
    let body = format!("{text}\n");
    response(
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        true,
    )
}

/// `extra_headers`: complete lines, each ending in `\r\n`. `with_body` false answers a
/// `HEAD`: the headers of the `GET`, without the body.
fn response(
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    with_body: bool,
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        r.extend_from_slice(body);
    }
    r
}

fn log_scrape_failure(error: &dyn Display) {
    static LAST_WARNING: Mutex<Option<Instant>> = Mutex::new(None);
    let warn = match LAST_WARNING.lock() {
        Ok(mut last) => {
            let due = last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
            if due {
                *last = Some(Instant::now());
            }
            due
        }
        Err(_) => true,
    };
    if warn {
        tracing::warn!(error = %error, "metrics scrape could not read Redis: reporting rmq_up 0 (repeats of this are logged at DEBUG for a minute)");
    } else {
        tracing::debug!(error = %error, "metrics scrape could not read Redis: reporting rmq_up 0");
    }
}

/// The whole text of a scrape. `topics` is `None` when Redis could not be read.
fn write_metrics(
    out: &mut String,
    topics: Option<&[TopicStats]>,
    producer: &ProducerStats,
    runtime: Option<&RuntimeState>,
) {
    let mut m = Metrics { out };
    m.family(
        "rmq_up",
        "gauge",
        "1 when this scrape could read Redis, else 0.",
    );
    m.sample("rmq_up", &[], u8::from(topics.is_some()));

    let topics = topics.unwrap_or(&[]);
    m.family(
        "rmq_topic_messages",
        "gauge",
        "Messages of the topic now in each state (pending per priority, delayed, in_flight, dead), as Redis holds them.",
    );
    for s in topics {
        for (priority, n) in PRIORITIES.iter().zip(s.pending) {
            m.sample(
                "rmq_topic_messages",
                &[
                    ("topic", &s.topic),
                    ("state", "pending"),
                    ("priority", priority),
                ],
                n,
            );
        }
        for (state, n) in [
            ("delayed", s.delayed),
            ("in_flight", s.in_flight),
            ("dead", s.dead),
        ] {
            m.sample(
                "rmq_topic_messages",
                &[("topic", &s.topic), ("state", state)],
                n,
            );
        }
    }
    m.family(
        "rmq_topic_paused",
        "gauge",
        "1 while the topic is paused (consumers lease nothing of it).",
    );
    for s in topics {
        m.sample(
            "rmq_topic_paused",
            &[("topic", &s.topic)],
            u8::from(s.paused),
        );
    }
    m.family(
        "rmq_messages_total",
        "counter",
        "Events of the topic's messages since it was first used, counted in Redis for every process of the deployment (failed counts attempts; lost, leases that lapsed).",
    );
    for s in topics {
        for (event, n) in s.all_counters() {
            m.sample(
                "rmq_messages_total",
                &[("topic", &s.topic), ("event", event)],
                n,
            );
        }
    }
    write_handler_times(&mut m, topics);

    m.family(
        "rmq_producer_messages_total",
        "counter",
        "Messages produced through this process's client: sent (stored), duplicate (explicit id already queued), failed.",
    );
    for (result, n) in [
        ("sent", producer.sent),
        ("duplicate", producer.duplicates),
        ("failed", producer.failed),
    ] {
        m.sample("rmq_producer_messages_total", &[("result", result)], n);
    }
    m.family(
        "rmq_producer_requests_total",
        "counter",
        "Produce requests (produce, send, produce_batch) of this process's client.",
    );
    m.sample("rmq_producer_requests_total", &[], producer.requests);
    m.family(
        "rmq_producer_request_seconds_avg",
        "gauge",
        "Mean time of a produce request of this process's client, from the call to Redis' answer.",
    );
    m.sample(
        "rmq_producer_request_seconds_avg",
        &[],
        seconds(producer.avg_latency),
    );
    m.family(
        "rmq_producer_request_seconds_max",
        "gauge",
        "Longest produce request of this process's client.",
    );
    m.sample(
        "rmq_producer_request_seconds_max",
        &[],
        seconds(producer.max_latency),
    );

    if let Some(runtime) = runtime {
        m.family(
            "rmq_workers_busy",
            "gauge",
            "Handlers running now in this process's runtime.",
        );
        m.sample("rmq_workers_busy", &[], runtime.busy);
        m.family(
            "rmq_workers_max",
            "gauge",
            "Most handlers this process's runtime runs at once (max_workers).",
        );
        m.sample("rmq_workers_max", &[], runtime.max_workers);
        m.family(
            "rmq_buffered_messages",
            "gauge",
            "Messages this process's runtime leased ahead of free workers and has not started yet (prefetch).",
        );
        m.sample("rmq_buffered_messages", &[], runtime.buffered);
    }
}

fn write_handler_times(m: &mut Metrics<'_>, topics: &[TopicStats]) {
    const NAME: &str = "rmq_handler_duration_seconds";
    m.family(
        NAME,
        "histogram",
        "How long the topic's handlers ran per attempt (failed and timed-out attempts included), measured by the consumers and kept in Redis for every process of the deployment.",
    );
    for s in topics {
        let h = &s.handler_time;
        write_histogram(m, NAME, &s.topic, &h.buckets, h.count, h.sum);
    }
}

/// A histogram family's samples for one topic. `buckets` hold upper bounds and cumulative
/// counts; a bound of `Duration::MAX` is `+Inf`, added when missing.
fn write_histogram(
    m: &mut Metrics<'_>,
    name: &str,
    topic: &str,
    buckets: &[(Duration, u64)],
    count: u64,
    sum: Duration,
) {
    let bucket = format!("{name}_bucket");
    let mut has_inf = false;
    for (bound, n) in buckets {
        let le = if *bound == Duration::MAX {
            has_inf = true;
            "+Inf".to_string()
        } else {
            seconds(*bound).to_string()
        };
        m.sample(&bucket, &[("topic", topic), ("le", &le)], n);
    }
    if !has_inf {
        m.sample(&bucket, &[("topic", topic), ("le", "+Inf")], count);
    }
    m.sample(&format!("{name}_sum"), &[("topic", topic)], seconds(sum));
    m.sample(&format!("{name}_count"), &[("topic", topic)], count);
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Writes the text format: `# HELP`, `# TYPE`, then `name{label="value",...} value` lines.
struct Metrics<'a> {
    out: &'a mut String,
}

impl Metrics<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicStats {
        TopicStats {
            topic: name.to_string(),
            pending: [3, 2, 1],
            delayed: 4,
            in_flight: 5,
            dead: 6,
            paused: true,
            counters: [("completed".to_string(), 7), ("future".to_string(), 8)]
                .into_iter()
                .collect(),
            ..TopicStats::default()
        }
    }

    fn text(topics: Option<&[TopicStats]>, runtime: Option<RuntimeState>) -> String {
        let mut out = String::new();
        let producer = ProducerStats {
            sent: 10,
            duplicates: 1,
            failed: 2,
            requests: 12,
            avg_latency: Duration::from_micros(250),
            max_latency: Duration::from_millis(3),
            ..ProducerStats::default()
        };
        write_metrics(&mut out, topics, &producer, runtime.as_ref());
        out
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
        let mut out = String::new();
        Metrics { out: &mut out }.sample("m", &[("topic", "we\"ird\\\n")], 1);
        assert_eq!(out, "m{topic=\"we\\\"ird\\\\\\n\"} 1\n");
    }

    #[test]
    fn text_has_every_family_once_and_samples_under_it() {
        let out = text(Some(&[topic("a"), topic("b")]), None);
        assert!(out.contains("rmq_up 1\n"), "{out}");
        assert!(
            out.contains("rmq_topic_messages{topic=\"a\",state=\"pending\",priority=\"high\"} 3\n")
        );
        assert!(out.contains("rmq_topic_messages{topic=\"b\",state=\"dead\"} 6\n"));
        assert!(out.contains("rmq_topic_paused{topic=\"a\"} 1\n"));
        assert!(out.contains("rmq_messages_total{topic=\"a\",event=\"completed\"} 7\n"));
        assert!(out.contains("rmq_messages_total{topic=\"a\",event=\"purged\"} 0\n"));
        assert!(out.contains("rmq_messages_total{topic=\"a\",event=\"future\"} 8\n"));
        assert!(out.contains("rmq_producer_messages_total{result=\"failed\"} 2\n"));
        assert!(out.contains("rmq_producer_request_seconds_avg 0.00025\n"));
        assert!(out.contains("rmq_producer_request_seconds_max 0.003\n"));
        assert!(!out.contains("rmq_workers_busy"), "{out}");

        // each family: HELP then TYPE once, and its samples right after, not elsewhere
        let mut seen = Vec::new();
        let mut current = String::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name.clone());
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(&format!("{current} ")), "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| *f == current)
                    .unwrap_or(name);
                assert_eq!(family, current, "{line} outside its family");
            }
        }
    }

    #[test]
    fn without_redis_only_the_process_figures_remain() {
        let out = text(
            None,
            Some(RuntimeState {
                running: true,
                topics: vec!["t".into()],
                max_workers: 8,
                busy: 2,
                buffered: 5,
            }),
        );
        assert!(out.contains("rmq_up 0\n"), "{out}");
        assert!(!out.contains("topic=\""), "{out}");
        assert!(out.contains("rmq_producer_messages_total{result=\"sent\"} 10\n"));
        assert!(out.contains("rmq_producer_requests_total 12\n"));
        assert!(out.contains("rmq_workers_busy 2\n"));
        assert!(out.contains("rmq_workers_max 8\n"));
        assert!(out.contains("rmq_buffered_messages 5\n"));
    }

    #[test]
    fn histograms_end_with_inf() {
        let mut out = String::new();
        let mut m = Metrics { out: &mut out };
        let b = [
            (Duration::from_millis(5), 1),
            (Duration::from_secs(1), 3),
            (Duration::MAX, 4),
        ];
        write_histogram(&mut m, "h", "t", &b, 4, Duration::from_millis(1500));
        assert_eq!(
            out,
            "h_bucket{topic=\"t\",le=\"0.005\"} 1\nh_bucket{topic=\"t\",le=\"1\"} 3\nh_bucket{topic=\"t\",le=\"+Inf\"} 4\nh_sum{topic=\"t\"} 1.5\nh_count{topic=\"t\"} 4\n"
        );
        let mut out = String::new();
        let mut m = Metrics { out: &mut out };
        write_histogram(&mut m, "h", "t", &b[..2], 4, Duration::ZERO);
        assert!(
            out.contains("h_bucket{topic=\"t\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line("GET /metrics HTTP/1.1\r\nHost: x"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line("GET /metrics?name[]=rmq_up HTTP/1.0"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line("GET /metrics"), None);
        assert_eq!(request_line(""), None);
        assert_eq!(
            find_end_of_head(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"),
            Some(20)
        );
        assert_eq!(find_end_of_head(b"GET / HTTP/1.1\nA: b\n\n"), Some(19));
        assert_eq!(find_end_of_head(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }
}
