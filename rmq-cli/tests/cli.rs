//! The `rmq` binary end to end, against a real redis-server per test (own prefix each):
//! what it prints, what it changes in Redis, and its exit status.

mod support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmq_runtime::prelude::*;
use rmq_runtime::{Headers, Topic};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::*;

// ---------------------------------------------------------------------------------------
// topics

#[topic("cli_orders")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    order_id: String,
    amount: f64,
}

fn order(n: u32) -> Order {
    Order {
        order_id: format!("ORD_{n}"),
        amount: f64::from(n) + 0.5,
    }
}

/// What the `cli_orders` handler saw: order, headers, when.
static HANDLED: Mutex<Vec<(Order, Headers, Instant)>> = Mutex::new(Vec::new());

#[handler]
async fn on_order(order: Order, ctx: Context) {
    HANDLED
        .lock()
        .unwrap()
        .push((order, ctx.headers().clone(), Instant::now()));
}

#[tokio::test]
async fn topics_lists_the_topics_of_its_own_prefix_only_sorted() {
    let env = Env::start("cli_topics").await;
    env.client.produce(order(1)).await.expect("produce");
    for topic in ["a:b.c-d", "zeta", "a:b.c-d"] {
        env.client.send_raw(topic, "{}").await.expect("produce raw");
    }
    // other deployments on the same Redis: no prefix, and a prefix that starts like ours
    let bare = env.client_under("").await;
    bare.send_raw("bare_topic", "{}").await.expect("produce");
    let longer = env.client_under(&format!("{}x", env.prefix)).await;
    longer
        .send_raw("longer_topic", "{}")
        .await
        .expect("produce");

    let run = env.rmq(&["topics"]).await.expect_code(0);
    assert_eq!(run.stdout, "a:b.c-d\ncli_orders\nzeta\n");
    let doc = env.rmq(&["topics", "--json"]).await.json();
    assert_eq!(
        doc,
        json!({ "prefix": env.prefix, "topics": ["a:b.c-d", "cli_orders", "zeta"] })
    );
    assert_eq!(
        env.client.topics().await.expect("topics"),
        ["a:b.c-d", "cli_orders", "zeta"]
    );

    // REDIS_URL and MQ_QUEUE_PREFIX instead of flags; an empty prefix sees only its own
    let url = env.server.url();
    let run = rmq(&["topics"], &[("REDIS_URL", &url), ("MQ_QUEUE_PREFIX", "")])
        .await
        .expect_code(0);
    assert_eq!(run.stdout, "bare_topic\n");
    let run = rmq(
        &["--json", "topics"],
        &[("REDIS_URL", &url), ("MQ_QUEUE_PREFIX", &env.prefix)],
    )
    .await;
    assert_eq!(
        run.json()["topics"],
        json!(["a:b.c-d", "cli_orders", "zeta"])
    );

    let run = env
        .rmq(&["--prefix", "nobody", "topics"])
        .await
        .expect_code(0);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("no topic exists under prefix `nobody`"),
        "{run:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// stats and health

#[tokio::test]
async fn stats_shows_what_was_produced_as_a_table_and_as_json() {
    let env = Env::start("cli_stats").await;
    for (n, priority) in [
        (1, Priority::High),
        (2, Priority::High),
        (3, Priority::Normal),
        (4, Priority::Low),
    ] {
        env.client
            .send(order(n))
            .priority(priority)
            .await
            .expect("produce");
    }
    env.client
        .send(order(5))
        .delay(Duration::from_secs(600))
        .await
        .expect("produce");
    env.client
        .send_raw("cli_other", "{}")
        .await
        .expect("produce");
    env.client.pause_topic("cli_other").await.expect("pause");

    let doc = env.rmq(&["stats", "cli_orders", "--json"]).await.json();
    assert_eq!(doc["topic"], "cli_orders");
    assert_eq!(doc["pending"], json!({ "high": 2, "normal": 1, "low": 1 }));
    assert_eq!(doc["ready"], 4);
    assert_eq!(doc["delayed"], 1);
    assert_eq!(doc["in_flight"], 0);
    assert_eq!(doc["dead"], 0);
    assert_eq!(doc["paused"], false);
    assert_eq!(doc["counters"]["produced"], 5);
    assert_eq!(doc["handler_time"]["count"], 0);
    assert_eq!(doc["handler_time"]["p50_ms"], Value::Null);
    assert_eq!(doc["per_minute"].as_array().map(Vec::len), Some(60));
    assert_eq!(doc["this_minute"]["completed"], 0);

    let all = env.rmq(&["stats", "--json"]).await.json();
    assert_eq!(all["prefix"], env.prefix.as_str());
    let topics = all["topics"].as_array().expect("topics");
    let names: Vec<&str> = topics
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cli_orders", "cli_other"]);
    assert_eq!(topics[0], doc, "one topic's JSON is the same in both forms");
    assert_eq!(topics[1]["paused"], true);
    assert_eq!(topics[1]["pending"]["normal"], 1);

    // the table: a header and one row per topic, the numbers in their columns
    let run = env.rmq(&["stats"]).await.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        &header[..12],
        [
            "TOPIC",
            "STATE",
            "HIGH",
            "NORMAL",
            "LOW",
            "DELAYED",
            "RUNNING",
            "DEAD",
            "PRODUCED",
            "COMPLETED",
            "FAILED",
            "EXPIRED"
        ],
        "{}",
        run.stdout
    );
    let row = |topic: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{topic} ")))
            .unwrap_or_else(|| panic!("no row for {topic}:\n{}", run.stdout));
        line.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(
        &row("cli_orders")[..12],
        [
            "cli_orders",
            "active",
            "2",
            "1",
            "1",
            "1",
            "0",
            "0",
            "5",
            "0",
            "0",
            "0"
        ]
    );
    assert_eq!(
        &row("cli_other")[..9],
        ["cli_other", "paused", "0", "1", "0", "0", "0", "0", "1"]
    );

    // one topic in full
    let run = env.rmq(&["stats", "cli_orders"]).await.expect_code(0);
    assert!(run.stdout.contains("ready"), "{}", run.stdout);
    assert!(
        run.stdout.contains("4 (high 2, normal 1, low 1)"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn stats_watch_redraws_in_place_until_killed() {
    let env = Env::start("cli_watch").await;
    env.client.produce(order(1)).await.expect("produce");
    let url = env.server.url();
    let args = [
        "--url",
        &url,
        "--prefix",
        &env.prefix,
        "stats",
        "--watch",
        "--interval",
        "100ms",
    ];
    let mut child = command(&args, &[]).spawn().expect("spawn rmq");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    // three frames: the screen is cleared once, then the cursor goes home per refresh
    while count(&seen, b"\x1b[H") < 3 {
        use tokio::io::AsyncReadExt;
        let n = within("a refresh", stdout.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "rmq exited: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    child.kill().await.expect("kill rmq");
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(count(&seen, b"\x1b[2J"), 1, "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "refreshed too fast"
    );
    assert!(text.matches("cli_orders  active").count() >= 3, "{text}");
    // produce while watching: the next frames show it
    env.client.produce(order(2)).await.expect("produce");
    let run = env.rmq(&["stats", "--json"]).await.json();
    assert_eq!(run["topics"][0]["ready"], 2);
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test]
async fn health_reports_version_round_trip_and_warnings() {
    let env = Env::start("cli_health").await;
    let run = env.rmq(&["health"]).await.expect_code(0);
    assert!(run.stdout.contains("round trip"), "{}", run.stdout);
    assert!(run.stdout.contains("maxmemory-policy"), "{}", run.stdout);
    // the test server has no persistence: that is a warning, not a failure
    assert!(run.stdout.contains("persistence is off"), "{}", run.stdout);
    let doc = env.rmq(&["health", "--json"]).await.json();
    let expected = env.client.health().await.expect("health");
    assert_eq!(doc["redis_version"], expected.redis_version.as_str());
    assert_eq!(doc["maxmemory_policy"], expected.maxmemory_policy.as_str());
    assert_eq!(doc["healthy"], false);
    assert_eq!(doc["aof_enabled"], false);
    assert_eq!(doc["warnings"], json!(expected.warnings));
    assert!(doc["round_trip_ms"].as_f64().expect("round trip") > 0.0);
}

// ---------------------------------------------------------------------------------------
// dead letters

#[topic("cli_dead")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doomed {
    n: u32,
}

#[handler]
async fn on_doomed(msg: Doomed) -> Result<(), HandlerError> {
    Err(HandlerError::dead_letter(format!("bad {}", msg.n)))
}

/// Runs a consumer of `cli_dead` until `n` messages are dead.
async fn dead_letter_all(env: &Env, n: u64) {
    let handle = spawn_runtime(&env.client, &[Doomed::NAME]).await;
    let dlq = env.client.topic_dlq(Doomed::NAME);
    wait_for("the dead letters", || {
        let dlq = dlq.clone();
        async move { dlq.count().await.unwrap_or(0) >= n }
    })
    .await;
    shutdown(handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_show_replay_and_purge() {
    let env = Env::start("cli_dlq").await;
    let mut id_of = Vec::new();
    for n in 0..5 {
        let sent = env
            .client
            .send(Doomed { n })
            .id(format!("d{n}"))
            .await
            .expect("produce");
        id_of.push(sent.id.into_string());
    }
    dead_letter_all(&env, 5).await;
    let dlq = env.client.topic_dlq(Doomed::NAME);

    // list: newest first, paged, as the library lists them
    let doc = env.rmq(&["dlq", "list", "cli_dead", "--json"]).await.json();
    assert_eq!(doc["total"], 5);
    let listed = ids(&doc["dead_letters"]);
    let expected: Vec<String> = dlq
        .list(0, 20)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id.into_string())
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(
        listed.iter().collect::<BTreeSet<_>>(),
        id_of.iter().collect::<BTreeSet<_>>()
    );
    let first = &doc["dead_letters"][0];
    let n: u32 = listed[0][1..].parse().expect("n");
    assert_eq!(first["reason"], "dead-lettered by handler");
    assert_eq!(first["error"], format!("bad {n}"));
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["priority"], "normal");
    assert_eq!(first["payload"], json!({ "n": n }));
    let page = env
        .rmq(&[
            "dlq", "list", "cli_dead", "--offset", "1", "--limit", "2", "--json",
        ])
        .await
        .json();
    assert_eq!(ids(&page["dead_letters"]), listed[1..3]);
    let run = env.rmq(&["dlq", "list", "cli_dead"]).await.expect_code(0);
    assert!(
        run.stdout.starts_with("5 dead letters in `cli_dead`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("dead-lettered by handler"),
        "{}",
        run.stdout
    );

    // show
    let run = env
        .rmq(&["dlq", "show", "cli_dead", "d3"])
        .await
        .expect_code(0);
    assert!(run.stdout.contains("bad 3"), "{}", run.stdout);
    assert!(run.stdout.contains("\"n\": 3"), "{}", run.stdout);
    let shown = env
        .rmq(&["dlq", "show", "cli_dead", "d3", "--json"])
        .await
        .json();
    assert_eq!(shown["id"], "d3");
    assert_eq!(shown["payload"], json!({ "n": 3 }));
    let run = env
        .rmq(&["dlq", "show", "cli_dead", "nope"])
        .await
        .expect_code(3);
    assert!(run.stderr.contains("no dead letter `nope`"), "{run:#?}");

    // replay one: back in pending, no longer dead
    let doc = env
        .rmq(&["dlq", "replay", "cli_dead", "d0", "--json"])
        .await
        .json();
    assert_eq!(
        doc,
        json!({ "topic": "cli_dead", "replayed": 1, "missing": [] })
    );
    assert_eq!(dlq.count().await.expect("count"), 4);
    let pending: Vec<String> = env
        .client
        .peek("cli_dead", 10)
        .await
        .expect("peek")
        .into_iter()
        .map(|p| p.id.into_string())
        .collect();
    assert_eq!(pending, ["d0"]);
    // replaying what is not dead says so, with exit status 3
    let run = env
        .rmq(&["dlq", "replay", "cli_dead", "d0", "nope"])
        .await
        .expect_code(3);
    assert!(run.stdout.contains("replayed 0 dead letters"), "{run:#?}");
    assert!(run.stderr.contains("d0, nope"), "{run:#?}");

    // purge by id
    let doc = env
        .rmq(&["dlq", "purge", "cli_dead", "d1", "--yes", "--json"])
        .await
        .json();
    assert_eq!(doc["purged"], 1);
    assert_eq!(dlq.get("d1").await.expect("get"), None);
    assert_eq!(dlq.count().await.expect("count"), 3);

    // purge without --yes and no terminal to ask on: refused, nothing deleted
    let run = env.rmq(&["dlq", "purge", "cli_dead"]).await.expect_code(2);
    assert!(run.stderr.contains("--yes"), "{run:#?}");
    assert!(run.stderr.contains("the 3 dead letters"), "{run:#?}");
    assert_eq!(dlq.count().await.expect("count"), 3);

    // replay --all, then dead-letter them again and purge every one
    let doc = env
        .rmq(&["dlq", "replay", "cli_dead", "--all", "--json"])
        .await
        .json();
    assert_eq!(doc["replayed"], 3);
    assert_eq!(dlq.count().await.expect("count"), 0);
    let stats = env.client.topic_stats("cli_dead").await.expect("stats");
    assert_eq!(stats.pending_total(), 4, "d0 and the three");
    dead_letter_all(&env, 4).await;
    let run = env
        .rmq(&["dlq", "purge", "cli_dead", "--yes"])
        .await
        .expect_code(0);
    assert_eq!(run.stdout, "purged 4 dead letters of `cli_dead`\n");
    assert_eq!(dlq.count().await.expect("count"), 0);
    let stats = env.client.topic_stats("cli_dead").await.expect("stats");
    assert_eq!(stats.counter("purged"), 5);
    assert_eq!(stats.counter("replayed"), 4);
}

// ---------------------------------------------------------------------------------------
// pause, resume, peek

#[tokio::test]
async fn pause_and_resume_set_the_flag_consumers_obey() {
    let env = Env::start("cli_pause").await;
    env.client.produce(order(1)).await.expect("produce");
    let paused = || async {
        env.client
            .topic_stats("cli_orders")
            .await
            .expect("stats")
            .paused
    };

    let run = env.rmq(&["pause", "cli_orders"]).await.expect_code(0);
    assert!(
        run.stdout.starts_with("paused `cli_orders`"),
        "{}",
        run.stdout
    );
    assert!(paused().await);
    let doc = env.rmq(&["stats", "cli_orders", "--json"]).await.json();
    assert_eq!(doc["paused"], true);

    let doc = env.rmq(&["resume", "cli_orders", "--json"]).await.json();
    assert_eq!(doc, json!({ "topic": "cli_orders", "paused": false }));
    assert!(!paused().await);
}

#[tokio::test]
async fn peek_lists_the_next_messages_in_delivery_order_and_changes_nothing() {
    let env = Env::start("cli_peek").await;
    let produce = |n: u32, priority: Priority| {
        let client = env.client.clone();
        async move {
            client
                .send(order(n))
                .priority(priority)
                .id(format!("o{n}"))
                .header("n", n.to_string())
                .await
                .expect("produce");
        }
    };
    produce(1, Priority::Normal).await;
    produce(2, Priority::Low).await;
    produce(3, Priority::High).await;
    produce(4, Priority::Normal).await;
    produce(5, Priority::High).await;
    env.client
        .send(order(6))
        .delay(Duration::from_secs(60))
        .id("o6")
        .await
        .expect("produce");
    let before = env.client.topic_stats("cli_orders").await.expect("stats");

    let doc = env.rmq(&["peek", "cli_orders", "--json"]).await.json();
    assert_eq!(doc["kind"], "ready");
    assert_eq!(ids(&doc["messages"]), ["o3", "o5", "o1", "o4", "o2"]);
    let first = &doc["messages"][0];
    assert_eq!(first["priority"], "high");
    assert_eq!(first["attempts"], 0);
    assert_eq!(first["headers"], json!({ "n": "3" }));
    assert_eq!(
        first["payload"],
        json!({ "order_id": "ORD_3", "amount": 3.5 })
    );
    assert_eq!(first["due_at"], Value::Null);

    let doc = env
        .rmq(&["peek", "cli_orders", "--n", "3", "--json"])
        .await
        .json();
    assert_eq!(ids(&doc["messages"]), ["o3", "o5", "o1"]);
    let run = env
        .rmq(&["peek", "cli_orders", "-n", "2"])
        .await
        .expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(
        lines[2].contains("o3") && lines[2].contains("high"),
        "{}",
        run.stdout
    );
    assert!(lines[3].contains("o5"), "{}", run.stdout);
    assert!(
        lines[2].contains(r#"{"order_id":"ORD_3","amount":3.5}"#),
        "{}",
        run.stdout
    );

    let doc = env
        .rmq(&["peek", "cli_orders", "--delayed", "--json"])
        .await
        .json();
    assert_eq!(ids(&doc["messages"]), ["o6"]);
    assert!(doc["messages"][0]["due_at"].is_string(), "{doc}");

    // nothing changed: same depths and counters, same next messages
    let after = env.client.topic_stats("cli_orders").await.expect("stats");
    assert_eq!(
        (
            after.pending,
            after.delayed,
            after.in_flight,
            &after.counters
        ),
        (
            before.pending,
            before.delayed,
            before.in_flight,
            &before.counters
        )
    );
    let again = env.rmq(&["peek", "cli_orders", "--json"]).await.json();
    assert_eq!(ids(&again["messages"]), ["o3", "o5", "o1", "o4", "o2"]);
}

// ---------------------------------------------------------------------------------------
// produce

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_json_is_handled_by_the_typed_consumer_with_its_options() {
    let env = Env::start("cli_produce").await;
    env.client
        .produce(order(0))
        .await
        .expect("the topic exists");
    let run = env
        .rmq(&[
            "produce",
            "cli_orders",
            r#"{"order_id":"OPS_1","amount":2.5}"#,
            "--priority",
            "high",
            "--header",
            "source=ops",
            "--id",
            "ops-1",
        ])
        .await
        .expect_code(0);
    assert_eq!(run.stdout, "produced ops-1 to `cli_orders`\n");
    assert_eq!(run.stderr, "", "a known topic gives no warning");
    let again = env
        .rmq(&[
            "produce",
            "cli_orders",
            r#"{"order_id":"OPS_1","amount":2.5}"#,
            "--id",
            "ops-1",
            "--json",
        ])
        .await
        .json();
    assert_eq!(
        again,
        json!({ "topic": "cli_orders", "id": "ops-1", "duplicate": true })
    );
    let delayed_at = Instant::now();
    let doc = env
        .rmq(&[
            "produce",
            "cli_orders",
            r#"{"order_id":"OPS_2","amount":1}"#,
            "--delay",
            "300ms",
            "--json",
        ])
        .await
        .json();
    assert_eq!(doc["duplicate"], false);

    let next = env.client.peek("cli_orders", 1).await.expect("peek");
    assert_eq!(
        next[0].id.as_str(),
        "ops-1",
        "high goes before the normal ORD_0"
    );

    let handle = spawn_runtime(&env.client, &[Order::NAME]).await;
    wait_for("three orders", || async {
        HANDLED.lock().unwrap().len() >= 3
    })
    .await;
    shutdown(handle).await;
    let handled = HANDLED.lock().unwrap().clone();
    let names: Vec<&str> = handled
        .iter()
        .map(|(o, _, _)| o.order_id.as_str())
        .collect();
    assert_eq!(
        names,
        ["OPS_1", "ORD_0", "OPS_2"],
        "priority, then the delay"
    );
    assert_eq!(handled[0].0.amount, 2.5);
    assert_eq!(handled[0].1.get("source").map(String::as_str), Some("ops"));
    let late = handled[2].2.duration_since(delayed_at);
    assert!(
        late >= Duration::from_millis(300),
        "the delayed one ran after {late:?}"
    );

    let doc = env.rmq(&["stats", "cli_orders", "--json"]).await.json();
    assert_eq!(doc["counters"]["completed"], 3);
    assert_eq!(doc["handler_time"]["count"], 3);
    assert!(doc["handler_time"]["p50_ms"].is_number(), "{doc}");
    assert_eq!(
        doc["this_minute"]["completed"].as_u64().unwrap()
            + doc["last_minute"]["completed"].as_u64().unwrap(),
        3
    );
}

#[tokio::test]
async fn produce_refuses_what_is_not_a_json_object_and_stores_nothing() {
    let env = Env::start("cli_produce_bad").await;
    for (payload, says) in [
        ("{bad", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("\"text\"", "must be a JSON object"),
        ("42", "must be a JSON object"),
    ] {
        let run = env
            .rmq(&["produce", "cli_fresh", payload])
            .await
            .expect_code(2);
        assert!(run.stderr.contains(says), "{payload}: {run:#?}");
        assert_eq!(run.stdout, "");
    }
    let run = env
        .rmq(&["produce", "cli_fresh", "{}", "--delay", "soon"])
        .await
        .expect_code(2);
    assert!(run.stderr.contains("soon"), "{run:#?}");
    let run = env.rmq(&["produce", "bad name", "{}"]).await.expect_code(2);
    assert!(run.stderr.contains("not a topic name"), "{run:#?}");
    assert!(
        env.client.topics().await.expect("topics").is_empty(),
        "something was stored"
    );

    // a new topic is allowed, with a warning naming the known ones
    env.client.produce(order(1)).await.expect("produce");
    let run = env
        .rmq(&["produce", "cli_ordrs", r#"{"a":1}"#])
        .await
        .expect_code(0);
    assert!(
        run.stderr
            .contains("warning: topic `cli_ordrs` did not exist"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("cli_orders"), "{run:#?}");
    assert_eq!(
        env.client.topics().await.expect("topics"),
        ["cli_orders", "cli_ordrs"]
    );
}

// ---------------------------------------------------------------------------------------
// errors

#[tokio::test]
async fn an_unknown_topic_is_an_error_naming_the_known_ones() {
    let env = Env::start("cli_unknown").await;
    env.client.produce(order(1)).await.expect("produce");
    env.client
        .send_raw("cli_second", "{}")
        .await
        .expect("produce");
    for args in [
        &["stats", "ordrs"][..],
        &["peek", "ordrs"],
        &["pause", "ordrs"],
        &["resume", "ordrs"],
        &["dlq", "list", "ordrs"],
        &["dlq", "show", "ordrs", "x"],
        &["dlq", "replay", "ordrs", "--all"],
        &["dlq", "purge", "ordrs", "--yes"],
    ] {
        let run = env.rmq(args).await.expect_code(2);
        assert!(
            run.stderr.contains("unknown topic `ordrs`"),
            "{args:?}: {run:#?}"
        );
        assert!(
            run.stderr.contains("known topics: cli_orders, cli_second"),
            "{args:?}: {run:#?}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert_eq!(
        env.client.topics().await.expect("topics"),
        ["cli_orders", "cli_second"],
        "pause of an unknown topic must not create it"
    );
}

#[tokio::test]
async fn redis_down_or_a_wrong_password_is_a_clear_error_exit_1() {
    let mut env = Env::start("cli_down").await;
    env.server.kill();
    for args in [&["topics"][..], &["stats", "--json"], &["health"]] {
        let run = env.rmq(args).await.expect_code(1);
        assert!(
            run.stderr.contains("no Redis at redis://127.0.0.1:"),
            "{run:#?}"
        );
        assert_eq!(run.stdout, "");
        assert!(run.took < Duration::from_secs(3), "took {:?}", run.took);
    }

    let guarded = rmq_testkit::RedisServer::start_with(&["--requirepass", "s3cret-pw"])
        .unwrap_or_else(|e| panic!("{e}"));
    let port = guarded.port();
    let wrong = format!("redis://:wrong-pw-123@127.0.0.1:{port}");
    let run = rmq(&["--url", &wrong, "topics"], &[]).await.expect_code(1);
    assert!(run.stderr.contains("refused the password"), "{run:#?}");
    assert!(
        !run.stderr.contains("wrong-pw-123"),
        "password printed: {run:#?}"
    );
    let run = rmq(&["--url", &guarded.url(), "topics"], &[])
        .await
        .expect_code(1);
    assert!(run.stderr.contains("REDIS_PASSWORD"), "{run:#?}");
    // the password from the environment works and is never shown
    let run = rmq(
        &["--url", &guarded.url(), "health"],
        &[("REDIS_PASSWORD", "s3cret-pw")],
    )
    .await
    .expect_code(0);
    let with_pw = format!("redis://:s3cret-pw@127.0.0.1:{port}");
    let shown = rmq(&["--url", &with_pw, "health"], &[])
        .await
        .expect_code(0);
    for run in [run, shown] {
        assert!(!run.stdout.contains("s3cret-pw"), "{run:#?}");
    }
}

#[tokio::test]
async fn bad_arguments_exit_2_with_clap_usage() {
    let run = rmq(&["dlq", "replay", "t"], &[]).await.expect_code(2);
    assert!(run.stderr.contains("<IDS>"), "{run:#?}");
    let run = rmq(&["stats", "--interval", "fast"], &[])
        .await
        .expect_code(2);
    assert!(run.stderr.contains("fast"), "{run:#?}");
    let run = rmq(&["--help"], &[]).await.expect_code(0);
    for command in [
        "topics", "stats", "health", "dlq", "pause", "resume", "peek", "produce",
    ] {
        assert!(run.stdout.contains(command), "{command}: {}", run.stdout);
    }
    let run = rmq(&["--version"], &[]).await.expect_code(0);
    assert!(run.stdout.starts_with("rmq "), "{run:#?}");
}
