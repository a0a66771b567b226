//! `rmq`: the operator command of rmq. It works on any deployment from its Redis URL and
//! key prefix, without the application's types, through `rmq-runtime`'s untyped admin
//! (`Client::topics`, `topic_stats`, `topic_dlq`, `peek`, `send_raw`, ...).
//!
//! Each command returns a [`Report`] holding both its text and its JSON form; `main` prints
//! one of them and maps a [`Failure`] to the exit status.

mod args;
mod dlq;
mod failure;
mod format;
mod inspect;
mod operate;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use rmq_runtime::{Client, Config};
use serde_json::Value;

use crate::args::{Args, Command};
use crate::failure::Failure;

/// What a command has to say: text for people, one JSON document for scripts, and a
/// failure to report after printing it (a partly done replay).
pub struct Report {
    /// Printed without `--json`.
    pub text: String,
    /// Printed with `--json`.
    pub json: Value,
    /// Printed on stderr after the output, and sets the exit status.
    pub failure: Option<Failure>,
}

impl Report {
    /// A report of a command that did all it was asked.
    pub fn done(text: String, json: Value) -> Report {
        Report {
            text,
            json,
            failure: None,
        }
    }
}

/// The connection and the settings every command uses.
pub struct Ctx {
    /// Connected to the deployment.
    pub client: Client,
    /// `--json` was given.
    pub json: bool,
}

impl Ctx {
    /// The deployment in words: "under prefix `p` at redis://host:6379".
    pub fn deployment(&self) -> String {
        let prefix = &self.client.config().queue_prefix;
        let url = self.client.display_url();
        if prefix.is_empty() {
            format!("with no prefix at {url}")
        } else {
            format!("under prefix `{prefix}` at {url}")
        }
    }

    /// Fails with the known topics unless `topic` exists.
    pub async fn known_topic(&self, topic: &str) -> Result<(), Failure> {
        match self.unknown_topic(topic).await? {
            None => Ok(()),
            Some(known) => Err(Failure::Request(format!(
                "unknown topic `{topic}` {}; {known}",
                self.deployment()
            ))),
        }
    }

    /// `None` when `topic` exists, else what does: "known topics: a, b" (or that none
    /// does). Fails when `topic` is not a valid name.
    pub async fn unknown_topic(&self, topic: &str) -> Result<Option<String>, Failure> {
        rmq_core::topic::validate_topic_name(topic)
            .map_err(|e| Failure::Request(format!("`{topic}` is not a topic name: {e}")))?;
        let topics = self.client.topics().await?;
        if topics.iter().any(|t| t == topic) {
            return Ok(None);
        }
        if topics.is_empty() {
            return Ok(Some(
                "no topic exists there; check --prefix (MQ_QUEUE_PREFIX) and --url (REDIS_URL)"
                    .into(),
            ));
        }
        const SHOWN: usize = 30;
        let mut known = topics[..topics.len().min(SHOWN)].join(", ");
        if topics.len() > SHOWN {
            known.push_str(&format!(" and {} more", topics.len() - SHOWN));
        }
        Ok(Some(format!("known topics: {known}")))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rmq: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    match runtime.block_on(run(args)) {
        Ok(report) => {
            print_report(&report, json);
            match report.failure {
                None => ExitCode::SUCCESS,
                Some(failure) => fail(failure),
            }
        }
        Err(failure) => fail(failure),
    }
}

fn fail(failure: Failure) -> ExitCode {
    eprintln!("rmq: {failure}");
    failure.exit_code()
}

async fn run(args: Args) -> Result<Report, Failure> {
    let mut config = Config::from_env().map_err(|e| Failure::Request(e.to_string()))?;
    if let Some(url) = args.url {
        config.redis_url = url;
    }
    if let Some(prefix) = args.prefix {
        config.queue_prefix = prefix;
    }
    if let Some(timeout) = args.timeout {
        config.command_timeout = timeout;
    }
    let ctx = Ctx {
        client: Client::connect(config).await?,
        json: args.json,
    };
    match args.command {
        Command::Topics => inspect::topics(&ctx).await,
        Command::Stats {
            topic,
            watch: false,
            ..
        } => inspect::stats(&ctx, topic.as_deref()).await,
        Command::Stats {
            topic,
            watch: true,
            interval,
        } => inspect::watch(&ctx, topic.as_deref(), interval).await,
        Command::Health => inspect::health(&ctx).await,
        Command::Peek { topic, n, delayed } => inspect::peek(&ctx, &topic, n, delayed).await,
        Command::Dlq(command) => dlq::run(&ctx, command).await,
        Command::Pause(t) => operate::pause(&ctx, &t.topic).await,
        Command::Resume(t) => operate::resume(&ctx, &t.topic).await,
        Command::Produce(p) => operate::produce(&ctx, p).await,
    }
}

/// Prints the report's text, or its JSON; a closed pipe (`rmq topics | head`) is not an
/// error.
pub fn print_report(report: &Report, json: bool) {
    let out = if json {
        let mut text = serde_json::to_string_pretty(&report.json).unwrap_or_default();
        text.push('\n');
        text
    } else {
        report.text.clone()
    };
    let _ = write_stdout(&out);
}

/// Writes to stdout and flushes (an error means stdout was closed).
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}
