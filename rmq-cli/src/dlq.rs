//! `rmq dlq list | show | replay | purge`, through `Client::topic_dlq`.

use std::io::{BufRead, IsTerminal, Write};

use rmq_runtime::{DeadLetter, DeadLetters};
use serde_json::{json, Value};

use crate::args::DlqCommand;
use crate::failure::Failure;
use crate::format::{self, count, fields, json_payload, one_line, Table};
use crate::{Ctx, Report};

/// Runs one `rmq dlq` command.
pub async fn run(ctx: &Ctx, command: DlqCommand) -> Result<Report, Failure> {
    match command {
        DlqCommand::List {
            topic,
            offset,
            limit,
        } => list(ctx, &topic, offset, limit).await,
        DlqCommand::Show { topic, id } => show(ctx, &topic, &id).await,
        DlqCommand::Replay { topic, ids, all } => replay(ctx, &topic, ids, all).await,
        DlqCommand::Purge { topic, ids, yes } => purge(ctx, &topic, ids, yes).await,
    }
}

async fn dead_letters(ctx: &Ctx, topic: &str) -> Result<DeadLetters, Failure> {
    ctx.known_topic(topic).await?;
    Ok(ctx.client.topic_dlq(topic))
}

async fn list(ctx: &Ctx, topic: &str, offset: usize, limit: usize) -> Result<Report, Failure> {
    let dlq = dead_letters(ctx, topic).await?;
    let total = dlq.count().await?;
    let page = dlq.list(offset, limit).await?;
    let json = json!({
        "topic": topic,
        "total": total,
        "offset": offset,
        "limit": limit,
        "dead_letters": page.iter().map(dead_letter_json).collect::<Vec<_>>(),
    });
    let mut text = format!("{} in `{topic}`", count(total, "dead letter"));
    if page.is_empty() {
        if total > 0 {
            text.push_str(&format!("; none from --offset {offset} on"));
        }
        text.push('\n');
        return Ok(Report::done(text, json));
    }
    let end = offset + page.len();
    text.push_str(&format!(", newest first; {}–{end}", offset + 1));
    if (end as u64) < total {
        text.push_str(&format!(" (--offset {end} for more)"));
    }
    text.push_str(":\n");
    let mut table = Table::new(&["ID", "DEAD AT", ">ATTEMPTS", "PRIORITY", "REASON", "ERROR"]);
    for d in &page {
        table.row(vec![
            d.id.to_string(),
            format::time(d.dead_at),
            d.attempts.to_string(),
            d.priority.to_string(),
            d.reason.clone(),
            one_line(&d.error, 60),
        ]);
    }
    text.push_str(&table.render());
    Ok(Report::done(text, json))
}

async fn show(ctx: &Ctx, topic: &str, id: &str) -> Result<Report, Failure> {
    let dlq = dead_letters(ctx, topic).await?;
    let Some(d) = dlq.get(id).await? else {
        return Err(Failure::NotFound(format!(
            "no dead letter `{id}` in `{topic}` ({} there; see `rmq dlq list {topic}`)",
            count(dlq.count().await?, "dead letter")
        )));
    };
    let mut text = fields(&[
        ("id", d.id.to_string()),
        ("topic", topic.to_string()),
        ("reason", d.reason.clone()),
        ("error", d.error.clone()),
        ("attempts", d.attempts.to_string()),
        ("priority", d.priority.to_string()),
        ("first failed", format::time(d.first_failed_at)),
        ("last failed", format::time(d.last_failed_at)),
        ("dead since", format::time(d.dead_at)),
    ]);
    let payload = match serde_json::from_str::<Value>(&d.payload) {
        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_else(|_| d.payload.clone()),
        Err(_) => d.payload.clone(),
    };
    text.push_str("payload\n");
    for line in payload.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    Ok(Report::done(text, dead_letter_json(&d)))
}

async fn replay(ctx: &Ctx, topic: &str, ids: Vec<String>, all: bool) -> Result<Report, Failure> {
    let dlq = dead_letters(ctx, topic).await?;
    let (replayed, missing) = if all {
        (dlq.replay_all().await?, Vec::new())
    } else {
        let mut replayed = 0;
        let mut missing = Vec::new();
        for id in distinct(ids) {
            if dlq.replay(&id).await? {
                replayed += 1;
            } else {
                missing.push(id);
            }
        }
        (replayed, missing)
    };
    let text = format!(
        "replayed {} of `{topic}`: each is back at the end of its priority level with its attempts reset\n",
        count(replayed as u64, "dead letter")
    );
    let json = json!({ "topic": topic, "replayed": replayed, "missing": missing });
    Ok(Report {
        text,
        json,
        failure: not_dead(topic, &missing),
    })
}

async fn purge(ctx: &Ctx, topic: &str, ids: Vec<String>, yes: bool) -> Result<Report, Failure> {
    let dlq = dead_letters(ctx, topic).await?;
    let mut missing = Vec::new();
    let (found, question) = if ids.is_empty() {
        let total = dlq.count().await?;
        (
            Vec::new(),
            (total > 0).then(|| {
                format!(
                    "delete {} of `{topic}` for good",
                    every(total, "dead letter")
                )
            }),
        )
    } else {
        let mut found = Vec::new();
        for id in distinct(ids) {
            match dlq.get(&id).await? {
                Some(_) => found.push(id),
                None => missing.push(id),
            }
        }
        let question = (!found.is_empty()).then(|| {
            format!(
                "delete {} of `{topic}` ({}) for good",
                count(found.len() as u64, "dead letter"),
                found.join(", ")
            )
        });
        (found, question)
    };
    let purged = match question {
        None => 0, // nothing there to delete
        Some(question) => {
            if !yes {
                confirm(&question)?;
            }
            if found.is_empty() {
                dlq.purge().await?
            } else {
                let ids: Vec<&str> = found.iter().map(String::as_str).collect();
                dlq.purge_ids(&ids).await?
            }
        }
    };
    let text = format!(
        "purged {} of `{topic}`\n",
        count(purged as u64, "dead letter")
    );
    let json = json!({ "topic": topic, "purged": purged, "missing": missing });
    Ok(Report {
        text,
        json,
        failure: not_dead(topic, &missing),
    })
}

/// Asks on the terminal; refuses when there is no terminal to ask on.
fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Request(format!(
            "refusing to {question} without confirmation: stdin is not a terminal to ask on; add --yes to do it without asking"
        )));
    }
    eprint!("{question}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::Request(format!("could not read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure::Request(
            "not confirmed; nothing was deleted".into(),
        )),
    }
}

/// "the 25 dead letters", "the dead letter".
fn every(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("the {noun}")
    } else {
        format!("the {n} {noun}s")
    }
}

/// The ids once each, in the order given.
fn distinct(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// The failure for ids that were not dead letters, if any.
fn not_dead(topic: &str, missing: &[String]) -> Option<Failure> {
    (!missing.is_empty()).then(|| {
        Failure::NotFound(format!(
            "not in the dead-letter queue of `{topic}`: {}",
            missing.join(", ")
        ))
    })
}

fn dead_letter_json(d: &DeadLetter) -> Value {
    json!({
        "id": d.id.as_str(),
        "reason": d.reason,
        "error": d.error,
        "attempts": d.attempts,
        "priority": d.priority.as_str(),
        "first_failed_at": format::time(d.first_failed_at),
        "last_failed_at": format::time(d.last_failed_at),
        "dead_at": format::time(d.dead_at),
        "payload": json_payload(&d.payload),
    })
}
