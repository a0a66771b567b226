//! The command line: every command, option and default, as clap reads it.

use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use rmq_core::duration::parse_duration;
use rmq_runtime::Priority;

/// Operate an rmq deployment: topics, stats, health, dead letters, pause, peek, produce.
///
/// Works on any deployment without the application's types: point it at the Redis
/// (`--url`, else REDIS_URL; a password in REDIS_PASSWORD or the URL) and the key prefix
/// (`--prefix`, else MQ_QUEUE_PREFIX).
///
/// Exit status: 0 done; 1 Redis could not be used (unreachable, refused the password,
/// connection lost, timed out); 2 the request is wrong (arguments, unknown topic, bad
/// JSON, purge not confirmed); 3 a message id is not there.
#[derive(Debug, Parser)]
#[command(name = "rmq", version, args_override_self = true)]
pub struct Args {
    /// Redis URL, e.g. redis://:password@host:6379/0 [default: $REDIS_URL, else
    /// redis://127.0.0.1:6379]
    #[arg(long, global = true, value_name = "URL", help_heading = "Deployment")]
    pub url: Option<String>,

    /// Key prefix of the deployment (its Config::queue_prefix) [default: $MQ_QUEUE_PREFIX,
    /// else none]
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        help_heading = "Deployment"
    )]
    pub prefix: Option<String>,

    /// Time limit of one Redis round trip, e.g. 2s [default: $MQ_COMMAND_TIMEOUT, else 5s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration, help_heading = "Deployment")]
    pub timeout: Option<Duration>,

    /// Print one JSON document on stdout instead of text (`stats --watch`: one per line)
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the topics under the prefix
    Topics,
    /// Show depths, counters, handler times and throughput of one topic, or of every topic
    Stats {
        /// The topic [default: every topic, one row each]
        topic: Option<String>,
        /// Refresh in place until interrupted (Ctrl-C)
        #[arg(long)]
        watch: bool,
        /// Time between refreshes with --watch
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
        interval: Duration,
    },
    /// Check Redis: round trip, version, eviction policy, persistence
    Health,
    /// Inspect, replay or delete dead letters
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Stop every consumer of TOPIC from leasing more of it (producing goes on)
    Pause(TopicArg),
    /// Let consumers lease TOPIC again (wakes them at once)
    Resume(TopicArg),
    /// Show the next messages to be delivered, without changing anything
    Peek {
        /// The topic
        topic: String,
        /// How many
        #[arg(long = "n", short = 'n', value_name = "N", default_value_t = 10)]
        n: usize,
        /// Show the next delayed messages (delays and retries waiting) with their due time
        #[arg(long)]
        delayed: bool,
    },
    /// Produce a message (a JSON object) to TOPIC
    Produce(ProduceArgs),
}

/// A command that takes just a topic.
#[derive(Debug, ClapArgs)]
pub struct TopicArg {
    /// The topic
    pub topic: String,
}

/// `rmq produce`.
#[derive(Debug, ClapArgs)]
pub struct ProduceArgs {
    /// The topic (producing to a topic that does not exist yet creates it, with a warning)
    pub topic: String,
    /// The payload: a JSON object, or `-` to read it from stdin
    #[arg(value_name = "JSON")]
    pub payload: String,
    /// Deliver no earlier than this from now, e.g. 5m
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub delay: Option<Duration>,
    /// Priority: high, normal or low [default: normal]
    #[arg(long, value_name = "PRIORITY", value_parser = priority)]
    pub priority: Option<Priority>,
    /// Drop the message if not delivered within this time of becoming ready; 0 = never
    /// [default: $MQ_MESSAGE_TTL, else 24h]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub ttl: Option<Duration>,
    /// An explicit message id: producing an id that is still stored stores nothing
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// A header, readable by the handler with Context::header (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = header)]
    pub headers: Vec<(String, String)>,
}

/// `rmq dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first
    List {
        /// The topic
        topic: String,
        /// Skip this many of the newest
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: usize,
        /// Show at most this many
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// Show one dead letter in full
    Show {
        /// The topic
        topic: String,
        /// The message id
        id: String,
    },
    /// Put dead letters back at the end of their priority level, attempts reset
    Replay {
        /// The topic
        topic: String,
        /// The message ids
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every dead letter of the topic
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good (every one, or the ids given); asks first
    Purge {
        /// The topic
        topic: String,
        /// Only these message ids [default: every dead letter]
        ids: Vec<String>,
        /// Do not ask for confirmation (needed when stdin is not a terminal)
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn priority(text: &str) -> Result<Priority, String> {
    text.parse()
}

fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn options_parse() {
        let args = Args::try_parse_from([
            "rmq",
            "produce",
            "orders",
            "{}",
            "--delay",
            "5m",
            "--priority",
            "high",
            "--header",
            "trace=a=b",
            "--json",
        ])
        .expect("parses");
        assert!(args.json);
        let Command::Produce(p) = args.command else {
            panic!("not produce")
        };
        assert_eq!(p.delay, Some(Duration::from_secs(300)));
        assert_eq!(p.priority, Some(Priority::High));
        assert_eq!(p.headers, [("trace".to_string(), "a=b".to_string())]);
        assert!(
            Args::try_parse_from(["rmq", "produce", "t", "{}", "--priority", "urgent"]).is_err()
        );
        assert!(
            Args::try_parse_from(["rmq", "produce", "t", "{}", "--delay", "5 parsecs"]).is_err()
        );
        assert!(Args::try_parse_from(["rmq", "dlq", "replay", "t"]).is_err());
        assert!(Args::try_parse_from(["rmq", "dlq", "replay", "t", "a", "--all"]).is_err());
        assert!(Args::try_parse_from(["rmq", "peek", "t", "--n", "3"]).is_ok());
    }
}
