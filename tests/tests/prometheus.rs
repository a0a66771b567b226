//! Feature `prometheus`: `/metrics` scraped over plain HTTP and parsed as Prometheus would,
//! checked against what the test produced and the runtime handled.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use rmq_runtime::prelude::*;
use rmq_runtime::prometheus::{serve, MetricsServer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[topic("prom.job", retries = 0)]
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    fail: bool,
}

#[handler]
async fn job(job: Job) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_millis(2)).await;
    if job.fail {
        Err(HandlerError::msg("nope"))
    } else {
        Ok(())
    }
}

/// A topic name that needs every escape of the text format.
const ODD: &str = "odd\"na\\me\nx";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_matches_depths_outcomes_handler_times_and_producer_figures() {
    let env = TestEnv::start("prom_scrape").await;
    let c = &env.client;
    for _ in 0..3 {
        c.send(Job { fail: false })
            .priority(Priority::High)
            .await
            .unwrap();
    }
    c.send(Job { fail: false })
        .priority(Priority::Low)
        .await
        .unwrap();
    c.send(Job { fail: true }).await.unwrap();
    c.send(Job { fail: false })
        .delay(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        !c.send(Job { fail: false })
            .id("once")
            .await
            .unwrap()
            .duplicate
    );
    assert!(
        c.send(Job { fail: false })
            .id("once")
            .await
            .unwrap()
            .duplicate
    );

    let server = serve_on_free_port(&env, &[Job::NAME, ODD]).await;
    let before = scrape(server.local_addr()).await;
    before.assert_well_formed();
    assert_eq!(before.get("rmq_up", &[]), 1.0);
    let depth = |s: &Scrape, labels: &[(&str, &str)]| {
        let mut all = vec![("topic", Job::NAME)];
        all.extend_from_slice(labels);
        s.get("rmq_topic_messages", &all)
    };
    let pending = |s: &Scrape, p| depth(s, &[("state", "pending"), ("priority", p)]);
    assert_eq!(
        [
            pending(&before, "high"),
            pending(&before, "normal"),
            pending(&before, "low")
        ],
        [3.0, 2.0, 1.0]
    );
    assert_eq!(depth(&before, &[("state", "delayed")]), 1.0);
    assert_eq!(depth(&before, &[("state", "in_flight")]), 0.0);
    assert_eq!(depth(&before, &[("state", "dead")]), 0.0);
    assert_eq!(before.get("rmq_topic_paused", &[("topic", Job::NAME)]), 0.0);
    let event = |s: &Scrape, e| s.get("rmq_messages_total", &[("topic", Job::NAME), ("event", e)]);
    assert_eq!(event(&before, "produced"), 7.0);
    assert_eq!(event(&before, "completed"), 0.0);
    // the odd topic is reported (all zero), its name escaped and read back intact
    assert_eq!(
        before.get(
            "rmq_topic_messages",
            &[("topic", ODD), ("state", "pending"), ("priority", "high")]
        ),
        0.0
    );
    assert!(
        before.body.contains(r#"topic="odd\"na\\me\nx""#),
        "{}",
        before.body
    );
    // producer figures are this client's own
    let sent = |s: &Scrape, r| s.get("rmq_producer_messages_total", &[("result", r)]);
    assert_eq!(
        [
            sent(&before, "sent"),
            sent(&before, "duplicate"),
            sent(&before, "failed")
        ],
        [7.0, 1.0, 0.0]
    );
    assert_eq!(before.get("rmq_producer_requests_total", &[]), 8.0);
    let max = before.get("rmq_producer_request_seconds_max", &[]);
    let avg = before.get("rmq_producer_request_seconds_avg", &[]);
    assert!(0.0 < avg && avg <= max && max < 5.0, "avg {avg}, max {max}");
    let handler_count = |s: &Scrape| {
        s.get(
            "rmq_handler_duration_seconds_count",
            &[("topic", Job::NAME)],
        )
    };
    assert_eq!(handler_count(&before), 0.0);

    // handle everything: 5 complete, 1 fails into the DLQ (retries = 0), 1 stays delayed
    let runtime = spawn_runtime(c, &[Job::NAME], 2).await;
    let settled = poll(PATIENCE, || async {
        let s = c.stats::<Job>().await.unwrap();
        s.counter("completed") == 5 && s.dead == 1 && s.handler_time.count == 6
    })
    .await;
    assert!(settled, "{:?}", c.stats::<Job>().await);
    let during = scrape(server.local_addr()).await;
    during.assert_well_formed();
    // other tests' runtimes may run in this process too (cargo test): at least ours
    let workers_max = during.get("rmq_workers_max", &[]);
    assert!(workers_max >= 2.0, "{workers_max}");
    assert!(during.get("rmq_workers_busy", &[]) <= workers_max);
    shutdown(runtime).await;

    let after = scrape(server.local_addr()).await;
    after.assert_well_formed();
    assert_eq!(
        [
            pending(&after, "high"),
            pending(&after, "normal"),
            pending(&after, "low")
        ],
        [0.0; 3]
    );
    assert_eq!(depth(&after, &[("state", "delayed")]), 1.0);
    assert_eq!(depth(&after, &[("state", "dead")]), 1.0);
    for (e, n) in [
        ("produced", 7.0),
        ("delivered", 6.0),
        ("completed", 5.0),
        ("failed", 1.0),
        ("dead", 1.0),
        ("retried", 0.0),
        ("expired", 0.0),
    ] {
        assert_eq!(event(&after, e), n, "event {e}");
    }
    // one histogram observation per handled attempt; cumulative buckets ending at +Inf
    assert_eq!(handler_count(&after), 6.0);
    let buckets = after.buckets("rmq_handler_duration_seconds", Job::NAME);
    assert!(buckets.len() > 5, "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 6.0));
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "not cumulative: {buckets:?}"
    );
    let sum = after.get("rmq_handler_duration_seconds_sum", &[("topic", Job::NAME)]);
    assert!(
        (6.0 * 0.002..6.0).contains(&sum),
        "6 handlers of ≥ 2 ms took {sum} s"
    );
    // nothing below the 2 ms the handler sleeps
    let under_1ms = buckets.iter().find(|(le, _)| *le == 0.001).unwrap().1;
    assert_eq!(under_1ms, 0.0, "{buckets:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_metrics_is_served_and_slow_or_huge_requests_cannot_hold_it() {
    let env = TestEnv::start("prom_http").await;
    let server = serve_on_free_port(&env, &[Job::NAME]).await;
    let addr = server.local_addr();

    let (status, _, body) = http(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 404, "{body}");
    let (status, head, _) = http(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    let (status, head, body) = http(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200, "{head}");
    assert!(body.is_empty(), "{body}");
    let (status, _, body) = http(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(body.contains("rmq_up 1\n"), "{body}");

    // a client that connects and says nothing does not delay others
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    scrape(addr).await.assert_well_formed();
    assert!(started.elapsed() < Duration::from_secs(2));
    // ... and is disconnected after the request time limit (5 s)
    let mut buf = [0u8; 64];
    let n = within(
        "the silent client's disconnection",
        PATIENCE,
        silent[0].read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "answered a request never sent");

    // a request head beyond 8 KiB is refused, not buffered
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(huge.as_bytes()).await; // it may close before all is sent
    let mut reply = Vec::new();
    let _ = within("the refusal", PATIENCE, stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_scrape_says_rmq_up_0_and_keeps_process_figures() {
    let mut env = TestEnv::start_configured("prom_down", &[], |c| Config {
        command_timeout: Duration::from_millis(500),
        ..c
    })
    .await;
    env.client.produce(Job { fail: false }).await.unwrap();
    let server = serve_on_free_port(&env, &[Job::NAME]).await;
    assert_eq!(scrape(server.local_addr()).await.get("rmq_up", &[]), 1.0);
    // without topics to read, `rmq_up` still asks Redis
    let bare = serve_on_free_port(&env, &[]).await;
    assert_eq!(scrape(bare.local_addr()).await.get("rmq_up", &[]), 1.0);

    env.server.kill();
    let down = scrape(bare.local_addr()).await;
    assert_eq!(down.get("rmq_up", &[]), 0.0, "{}", down.body);
    for _ in 0..2 {
        let started = Instant::now();
        let down = scrape(server.local_addr()).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        down.assert_well_formed();
        assert_eq!(down.get("rmq_up", &[]), 0.0);
        assert!(
            down.samples.iter().all(|s| !s.labels.contains_key("topic")),
            "topic figures without Redis:\n{}",
            down.body
        );
        assert_eq!(
            down.get("rmq_producer_messages_total", &[("result", "sent")]),
            1.0
        );
        assert_eq!(down.get("rmq_producer_requests_total", &[]), 1.0);
    }
    server.shutdown().await;
    bare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_serves_metrics_addr_and_refuses_a_busy_one() {
    let env = TestEnv::start("prom_runtime").await;
    let addr = free_addr();
    let client = env
        .client_with(|c| Config {
            metrics_addr: Some(addr),
            ..c
        })
        .await;
    client.produce(Job { fail: false }).await.unwrap();
    let runtime = spawn_runtime(&client, &[Job::NAME], 3).await;
    let s = scrape(addr).await;
    s.assert_well_formed();
    assert_eq!(s.get("rmq_up", &[]), 1.0);
    assert_eq!(
        s.get(
            "rmq_messages_total",
            &[("topic", Job::NAME), ("event", "produced")]
        ),
        1.0
    );
    assert!(s.get("rmq_workers_max", &[]) >= 3.0);

    // an address another socket holds: the runtime does not start, and says where
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap();
    let other = env
        .client_with(|c| Config {
            metrics_addr: Some(busy),
            ..c
        })
        .await;
    let err = within(
        "spawning on a busy address",
        PATIENCE,
        rmq_runtime::builder()
            .client(&other)
            .topics([Job::NAME])
            .spawn(),
    )
    .await
    .err()
    .expect("the runtime started although its metrics address is taken");
    let text = err.to_string();
    eprintln!("busy metrics address: {text}");
    assert!(
        text.contains(&busy.to_string()) && text.contains("MQ_METRICS_ADDR"),
        "{text}"
    );

    // shutdown closes the endpoint
    shutdown(runtime).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "{addr} still accepts after shutdown"
    );
}

/// Serves `topics` of the test's client on a port the OS picks.
async fn serve_on_free_port(env: &TestEnv, topics: &[&str]) -> MetricsServer {
    let server = serve(
        env.client.clone(),
        "127.0.0.1:0".parse().unwrap(),
        topics.iter().map(|t| t.to_string()).collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("serve: {e}"));
    assert_ne!(server.local_addr().port(), 0);
    server
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Sends `request` and reads the whole response: (status, head, body).
async fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read");
        String::from_utf8(reply).expect("UTF-8 response")
    };
    let reply = within("an HTTP exchange", PATIENCE, exchange).await;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {reply:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// `GET /metrics`, checked to be a 200 in the text format, parsed.
async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: rmq\r\nAccept: text/plain\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}\n{body}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::to_string)
    };
    assert_eq!(
        header("Content-Type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(header("Connection").as_deref(), Some("close"));
    assert_eq!(header("Content-Length"), Some(body.len().to_string()));
    Scrape::parse(body)
}

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
struct Scrape {
    body: String,
    samples: Vec<Sample>,
    /// In order of appearance: (name, HELP seen, TYPE).
    families: Vec<(String, bool, Option<String>)>,
    /// (line number, family the sample belongs to)
    placement: Vec<(usize, String)>,
}

impl Scrape {
    fn parse(body: String) -> Scrape {
        let mut samples = Vec::new();
        let mut families: Vec<(String, bool, Option<String>)> = Vec::new();
        let mut placement = Vec::new();
        for (n, line) in body.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(
                    families.iter().all(|f| f.0 != name),
                    "second HELP of {name}"
                );
                families.push((name, true, None));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                let family = families
                    .iter_mut()
                    .find(|f| f.0 == name)
                    .unwrap_or_else(|| panic!("TYPE of {name} before its HELP"));
                assert!(family.2.is_none(), "second TYPE of {name}");
                family.2 = Some(kind.to_string());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                let sample = parse_sample(line);
                let current = families.last().map(|f| f.0.clone()).unwrap_or_default();
                placement.push((n, current));
                samples.push(sample);
            }
        }
        Scrape {
            body,
            samples,
            families,
            placement,
        }
    }

    /// Every family has one HELP and one TYPE; every sample sits under its own family
    /// (histograms: `_bucket`, `_sum`, `_count`); counters end in `_total`.
    fn assert_well_formed(&self) {
        for (name, help, kind) in &self.families {
            assert!(*help, "{name} has no HELP");
            let kind = kind
                .as_deref()
                .unwrap_or_else(|| panic!("{name} has no TYPE"));
            assert!(
                ["gauge", "counter", "histogram"].contains(&kind),
                "{name}: {kind}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            assert!(name.starts_with("rmq_"), "{name}");
        }
        for ((line, family), sample) in self.placement.iter().zip(&self.samples) {
            let kind = self
                .families
                .iter()
                .find(|f| &f.0 == family)
                .and_then(|f| f.2.as_deref())
                .unwrap_or("");
            let expected = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| sample.name == format!("{family}{s}"))
            } else {
                &sample.name == family
            };
            assert!(
                expected,
                "line {}: {} is not under its family ({family})",
                line + 1,
                sample.name
            );
            if kind == "histogram" && sample.name.ends_with("_bucket") {
                assert!(sample.labels.contains_key("le"), "{sample:?}");
            }
        }
    }

    /// The value of the sample with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        match found.as_slice() {
            [one] => one.value,
            [] => panic!("no {name}{want:?} in:\n{}", self.body),
            _ => panic!("{name}{want:?} twice in:\n{}", self.body),
        }
    }

    /// A histogram's buckets for `topic`, in order: (le, cumulative count).
    fn buckets(&self, name: &str, topic: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        self.samples
            .iter()
            .filter(|s| {
                s.name == bucket && s.labels.get("topic").map(String::as_str) == Some(topic)
            })
            .map(|s| (parse_value(&s.labels["le"]), s.value))
            .collect()
    }
}

fn parse_value(text: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {other:?}")),
    }
}

/// `name{a="x",b="y\"z"} 1.5` (label values unescaped).
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' if key.is_empty() => {
                    close = Some(i);
                    break;
                }
                ',' if key.is_empty() => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some('"') => break,
                            Some('\n') | None => panic!("unterminated label in {line:?}"),
                            Some(c) => value.push(c),
                        }
                    }
                    assert!(
                        labels.insert(std::mem::take(&mut key), value).is_none(),
                        "label twice in {line:?}"
                    );
                }
                c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                _ => panic!("unexpected {c:?} in {line:?}"),
            }
        }
        let close = close.unwrap_or_else(|| panic!("no closing brace in {line:?}"));
        rest = &inner[close + 1..];
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    assert!(
        !value.contains(' '),
        "timestamps are not expected: {line:?}"
    );
    Sample {
        name,
        labels,
        value: parse_value(value),
    }
}
