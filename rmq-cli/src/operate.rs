//! The commands that change a topic: `pause`, `resume`, `produce`.

use std::io::Read;

use rmq_core::duration::format_duration;
use serde_json::json;

use crate::args::ProduceArgs;
use crate::failure::Failure;
use crate::{Ctx, Report};

/// `rmq pause TOPIC`.
pub async fn pause(ctx: &Ctx, topic: &str) -> Result<Report, Failure> {
    ctx.known_topic(topic).await?;
    ctx.client.pause_topic(topic).await?;
    let text = format!(
        "paused `{topic}`: consumers lease nothing more of it until `rmq resume {topic}`; running handlers finish and producers keep producing\n"
    );
    Ok(Report::done(
        text,
        json!({ "topic": topic, "paused": true }),
    ))
}

/// `rmq resume TOPIC`.
pub async fn resume(ctx: &Ctx, topic: &str) -> Result<Report, Failure> {
    ctx.known_topic(topic).await?;
    ctx.client.resume_topic(topic).await?;
    let text = format!("resumed `{topic}`: consumers were woken and lease it again\n");
    Ok(Report::done(
        text,
        json!({ "topic": topic, "paused": false }),
    ))
}

/// `rmq produce TOPIC JSON ...`: to a topic that does not exist yet too, with a warning,
/// since a misspelt name would otherwise queue messages nobody consumes.
pub async fn produce(ctx: &Ctx, p: ProduceArgs) -> Result<Report, Failure> {
    let payload = if p.payload == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Request(format!("could not read the payload from stdin: {e}")))?;
        text
    } else {
        p.payload
    };
    let topic = p.topic.as_str();
    let unknown = ctx.unknown_topic(topic).await?;
    let mut send = ctx.client.send_raw(topic, payload.into_bytes());
    if let Some(delay) = p.delay {
        send = send.delay(delay);
    }
    if let Some(priority) = p.priority {
        send = send.priority(priority);
    }
    if let Some(ttl) = p.ttl {
        send = send.ttl(ttl);
    }
    if let Some(id) = p.id {
        send = send.id(id);
    }
    let produced = send.headers(p.headers).await?;
    if let Some(known) = unknown {
        eprintln!(
            "rmq: warning: topic `{topic}` did not exist {} ({known}); the message is stored, but nothing consumes it until a handler for `{topic}` runs: check the name",
            ctx.deployment()
        );
    }
    let id = produced.id.as_str();
    let text = if produced.duplicate {
        format!("not stored: a message with id `{id}` is already queued in `{topic}`\n")
    } else {
        let due = p
            .delay
            .filter(|d| !d.is_zero())
            .map(|d| format!(", due in {}", format_duration(d)))
            .unwrap_or_default();
        format!("produced {id} to `{topic}`{due}\n")
    };
    let json = json!({ "topic": topic, "id": id, "duplicate": produced.duplicate });
    Ok(Report::done(text, json))
}
