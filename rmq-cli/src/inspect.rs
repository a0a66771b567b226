//! The read-only commands: `topics`, `stats` (and `--watch`), `health`, `peek`.

use std::time::{Duration, SystemTime};

use rmq_core::duration::format_duration;
use rmq_runtime::{MinuteCounts, Peeked, Priority, TopicStats};
use serde_json::{json, Value};

use crate::failure::Failure;
use crate::format::{
    self, count, fields, json_ms, json_payload, json_time, one_line, short_duration, Table,
};
use crate::{write_stdout, Ctx, Report};

/// `rmq topics`.
pub async fn topics(ctx: &Ctx) -> Result<Report, Failure> {
    let topics = ctx.client.topics().await?;
    if topics.is_empty() && !ctx.json {
        eprintln!("rmq: no topic exists {}", ctx.deployment());
    }
    let text = topics.iter().map(|t| format!("{t}\n")).collect();
    let json = json!({ "prefix": ctx.client.config().queue_prefix, "topics": topics });
    Ok(Report::done(text, json))
}

/// `rmq stats [TOPIC]`.
pub async fn stats(ctx: &Ctx, topic: Option<&str>) -> Result<Report, Failure> {
    if let Some(topic) = topic {
        ctx.known_topic(topic).await?;
    }
    stats_now(ctx, topic).await
}

/// One snapshot of `rmq stats`, the topic already checked.
async fn stats_now(ctx: &Ctx, topic: Option<&str>) -> Result<Report, Failure> {
    if let Some(topic) = topic {
        let s = ctx.client.topic_stats(topic).await?;
        return Ok(Report::done(stats_detail(&s), stats_json(&s)));
    }
    let mut all = Vec::new();
    for topic in ctx.client.topics().await? {
        all.push(ctx.client.topic_stats(&topic).await?);
    }
    let text = if all.is_empty() {
        format!("no topic exists {}\n", ctx.deployment())
    } else {
        stats_table(&all)
    };
    let json = json!({
        "prefix": ctx.client.config().queue_prefix,
        "topics": all.iter().map(stats_json).collect::<Vec<_>>(),
    });
    Ok(Report::done(text, json))
}

/// `rmq stats [TOPIC] --watch`: the snapshot redrawn in place every `interval` (cursor
/// home, each line cleared to its end, then the rest of the screen), or with `--json` one
/// document per line. Redis trouble is shown and retried, not fatal. Ends when stdout is
/// closed.
pub async fn watch(ctx: &Ctx, topic: Option<&str>, interval: Duration) -> Result<Report, Failure> {
    if let Some(topic) = topic {
        ctx.known_topic(topic).await?;
    }
    let mut first = true;
    loop {
        let snapshot = stats_now(ctx, topic).await;
        let written = if ctx.json {
            match snapshot {
                Ok(report) => write_stdout(&format!("{}\n", report.json)),
                Err(e) => {
                    eprintln!("rmq: {e}");
                    Ok(())
                }
            }
        } else {
            let body = match snapshot {
                Ok(report) => report.text,
                Err(e) => format!(
                    "rmq: {e}\n(trying again every {})\n",
                    format_duration(interval)
                ),
            };
            let title = format!(
                "rmq stats {} · every {} · {} · Ctrl-C to stop\n\n",
                ctx.deployment(),
                format_duration(interval),
                format::time(SystemTime::now()),
            );
            let mut screen = String::from(if first { "\x1b[2J\x1b[H" } else { "\x1b[H" });
            for line in title.lines().chain(body.lines()) {
                screen.push_str(line);
                screen.push_str("\x1b[K\n");
            }
            screen.push_str("\x1b[J");
            write_stdout(&screen)
        };
        if written.is_err() {
            return Ok(Report::done(String::new(), Value::Null));
        }
        first = false;
        tokio::time::sleep(interval).await;
    }
}

/// One row per topic.
fn stats_table(all: &[TopicStats]) -> String {
    let mut table = Table::new(&[
        "TOPIC",
        "STATE",
        ">HIGH",
        ">NORMAL",
        ">LOW",
        ">DELAYED",
        ">RUNNING",
        ">DEAD",
        ">PRODUCED",
        ">COMPLETED",
        ">FAILED",
        ">EXPIRED",
        ">P50",
        ">P95",
        ">P99",
        ">OK/MIN",
        ">FAILED/MIN",
    ]);
    for s in all {
        let last = last_minute(s);
        let h = &s.handler_time;
        table.row(vec![
            s.topic.clone(),
            state(s).into(),
            s.pending(Priority::High).to_string(),
            s.pending(Priority::Normal).to_string(),
            s.pending(Priority::Low).to_string(),
            s.delayed.to_string(),
            s.in_flight.to_string(),
            s.dead.to_string(),
            s.counter("produced").to_string(),
            s.counter("completed").to_string(),
            s.counter("failed").to_string(),
            s.counter("expired").to_string(),
            short_duration(h.p50()),
            short_duration(h.p95()),
            short_duration(h.p99()),
            last.map_or(0, |m| m.completed).to_string(),
            last.map_or(0, |m| m.failed).to_string(),
        ]);
    }
    let mut text = table.render();
    text.push_str(
        "(FAILED counts failed attempts; P50–P99: handler time; OK/MIN, FAILED/MIN: attempts in the last full minute)\n",
    );
    text
}

/// One topic in full.
fn stats_detail(s: &TopicStats) -> String {
    let h = &s.handler_time;
    let mut rows = vec![
        ("topic", format!("{} ({})", s.topic, state(s))),
        (
            "ready",
            format!(
                "{} (high {}, normal {}, low {})",
                s.pending_total(),
                s.pending(Priority::High),
                s.pending(Priority::Normal),
                s.pending(Priority::Low)
            ),
        ),
        ("delayed", s.delayed.to_string()),
        ("running", s.in_flight.to_string()),
        ("dead", s.dead.to_string()),
    ];
    for (name, n) in s.all_counters() {
        rows.push((counter_label(name), n.to_string()));
    }
    rows.push((
        "handler time",
        if h.count == 0 {
            "- (no attempt measured yet)".into()
        } else {
            format!(
                "p50 {}  p95 {}  p99 {}  (mean {} over {})",
                short_duration(h.p50()),
                short_duration(h.p95()),
                short_duration(h.p99()),
                short_duration(h.mean()),
                count(h.count, "attempt")
            )
        },
    ));
    for (label, minute) in [
        ("this minute", s.per_minute.last()),
        ("last minute", last_minute(s)),
    ] {
        let m = minute.map_or((0, 0), |m| (m.completed, m.failed));
        rows.push((label, format!("{} completed, {} failed", m.0, m.1)));
    }
    fields(&rows)
}

/// How a counter is labelled beside the depths (`dead` is both a depth and a counter).
fn counter_label(name: &str) -> &str {
    match name {
        "failed" => "failed attempts",
        "dead" => "dead-lettered",
        "lost" => "leases lost",
        "dead_evicted" => "dead evicted",
        other => other,
    }
}

fn state(s: &TopicStats) -> &'static str {
    if s.paused {
        "paused"
    } else {
        "active"
    }
}

/// The last full minute (the entry before the current, unfinished one).
fn last_minute(s: &TopicStats) -> Option<&MinuteCounts> {
    s.per_minute.iter().rev().nth(1)
}

fn minute_json(m: Option<&MinuteCounts>) -> Value {
    m.map_or(Value::Null, |m| {
        json!({ "minute": format::time(m.minute), "completed": m.completed, "failed": m.failed })
    })
}

fn stats_json(s: &TopicStats) -> Value {
    let h = &s.handler_time;
    json!({
        "topic": s.topic,
        "paused": s.paused,
        "ready": s.pending_total(),
        "pending": {
            "high": s.pending(Priority::High),
            "normal": s.pending(Priority::Normal),
            "low": s.pending(Priority::Low),
        },
        "delayed": s.delayed,
        "in_flight": s.in_flight,
        "dead": s.dead,
        "counters": s.counters,
        "handler_time": {
            "count": h.count,
            "mean_ms": json_ms(h.mean()),
            "p50_ms": json_ms(h.p50()),
            "p95_ms": json_ms(h.p95()),
            "p99_ms": json_ms(h.p99()),
        },
        "this_minute": minute_json(s.per_minute.last()),
        "last_minute": minute_json(last_minute(s)),
        "per_minute": s.per_minute.iter().map(|m| minute_json(Some(m))).collect::<Vec<_>>(),
    })
}

/// `rmq health`.
pub async fn health(ctx: &Ctx) -> Result<Report, Failure> {
    let h = ctx.client.health().await?;
    let on_off = |on: bool| if on { "on" } else { "off" };
    let mut text = fields(&[
        (
            "redis",
            format!("{} (version {})", ctx.client.display_url(), h.redis_version),
        ),
        ("round trip", short_duration(Some(h.round_trip))),
        ("maxmemory-policy", h.maxmemory_policy.clone()),
        (
            "persistence",
            format!(
                "AOF {}, RDB snapshots {}",
                on_off(h.aof_enabled),
                on_off(h.rdb_enabled)
            ),
        ),
        (
            "status",
            if h.is_healthy() {
                "healthy".into()
            } else {
                format!("{}:", count(h.warnings.len() as u64, "warning"))
            },
        ),
    ]);
    for warning in &h.warnings {
        text.push_str(&format!("  ! {warning}\n"));
    }
    let json = json!({
        "url": ctx.client.display_url(),
        "healthy": h.is_healthy(),
        "round_trip_ms": json_ms(Some(h.round_trip)),
        "redis_version": h.redis_version,
        "maxmemory_policy": h.maxmemory_policy,
        "aof_enabled": h.aof_enabled,
        "rdb_enabled": h.rdb_enabled,
        "warnings": h.warnings,
    });
    Ok(Report::done(text, json))
}

/// `rmq peek TOPIC [--n N] [--delayed]`.
pub async fn peek(ctx: &Ctx, topic: &str, n: usize, delayed: bool) -> Result<Report, Failure> {
    ctx.known_topic(topic).await?;
    let (kind, messages) = if delayed {
        ("delayed", ctx.client.peek_delayed(topic, n).await?)
    } else {
        ("ready", ctx.client.peek(topic, n).await?)
    };
    let json = json!({
        "topic": topic,
        "kind": kind,
        "messages": messages.iter().map(peeked_json).collect::<Vec<_>>(),
    });
    if messages.is_empty() {
        let text = format!("no {kind} message in `{topic}`\n");
        return Ok(Report::done(text, json));
    }
    let order = if delayed {
        "soonest first"
    } else {
        "in delivery order"
    };
    let mut text = format!(
        "next {} of `{topic}`, {order}:\n",
        count(messages.len() as u64, &format!("{kind} message"))
    );
    let with_headers = messages.iter().any(|m| !m.headers.is_empty());
    let mut columns = vec![">#", "ID", "PRIORITY", "PRODUCED", ">ATTEMPTS"];
    if delayed {
        columns.push("DUE");
    }
    if with_headers {
        columns.push("HEADERS");
    }
    columns.push("PAYLOAD");
    let mut table = Table::new(&columns);
    for (i, m) in messages.iter().enumerate() {
        let mut row = vec![
            (i + 1).to_string(),
            m.id.to_string(),
            m.priority.to_string(),
            format::time(m.produced_at),
            m.attempts.to_string(),
        ];
        if delayed {
            row.push(m.due_at.map(format::time).unwrap_or_default());
        }
        if with_headers {
            let headers: Vec<String> = m.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
            row.push(one_line(&headers.join(","), 40));
        }
        row.push(one_line(&m.payload, 80));
        table.row(row);
    }
    text.push_str(&table.render());
    Ok(Report::done(text, json))
}

fn peeked_json(m: &Peeked) -> Value {
    json!({
        "id": m.id.as_str(),
        "priority": m.priority.as_str(),
        "produced_at": format::time(m.produced_at),
        "expires_at": json_time(m.expires_at),
        "due_at": json_time(m.due_at),
        "attempts": m.attempts,
        "headers": m.headers,
        "payload": json_payload(&m.payload),
    })
}
