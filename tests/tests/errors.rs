//! Start-up errors say what is wrong and how to fix it; the environment configuration uses
//! MX-RMQ's variable names.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("errors_ping")]
#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}

#[handler]
async fn on_ping(_msg: Ping) {}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_names_the_url_and_redis_url() {
    let url = format!("redis://127.0.0.1:{}", dead_port());
    let config = Config {
        redis_url: url.clone(),
        ..Config::default()
    };
    let err = match within("connect to a dead port", PATIENCE, Client::connect(config)).await {
        Ok(_) => panic!("connected to {url}, where nothing listens"),
        Err(e) => e.to_string(),
    };
    eprintln!("unreachable: {err}");
    assert!(err.contains(&url), "the error must name {url}: {err}");
    assert!(
        err.contains("REDIS_URL"),
        "the error must say how to fix: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_password_says_password() {
    let server = start_server(&["--requirepass", "s3cret"]);
    let prefix = rmq_testkit::unique_prefix("errors_password");
    for (password, case) in [
        (None, "no password"),
        (Some("hunter2-wrong"), "wrong password"),
    ] {
        let config = Config {
            redis_password: password.map(String::from),
            ..config(&server, &prefix)
        };
        let err = match within(case, PATIENCE, Client::connect(config)).await {
            Ok(_) => panic!("{case}: connected to a server that requires a password"),
            Err(e) => e.to_string(),
        };
        eprintln!("{case}: {err}");
        assert!(
            err.to_lowercase().contains("password"),
            "{case}: the error must mention the password: {err}"
        );
        assert!(
            !err.contains("hunter2-wrong"),
            "{case}: the error must not print the password: {err}"
        );
    }

    let config = Config {
        redis_password: Some("s3cret".into()),
        ..config(&server, &prefix)
    };
    let client = within(
        "connect with the password",
        PATIENCE,
        Client::connect(config),
    )
    .await
    .expect("the right password connects");
    client.produce(Ping { n: 1 }).await.expect("produce");
    let mut redis = raw_connection(&format!("redis://:s3cret@127.0.0.1:{}", server.port())).await;
    let stored: usize = redis::cmd("HLEN")
        .arg(client.keys(Ping::NAME).messages)
        .query_async(&mut redis)
        .await
        .expect("HLEN");
    assert_eq!(stored, 1);
}

fn lookup(vars: &[(&str, &str)]) -> Result<Config, rmq_runtime::ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name: &str| vars.get(name).cloned())
}

#[test]
fn invalid_env_values_name_the_variable() {
    // (variable, value, the part of the value the error must quote)
    for (name, value, bad) in [
        ("MQ_MAX_WORKERS", "abc", "abc"),
        ("MQ_MAX_WORKERS", "-3", "-3"),
        ("MQ_TASK_QUEUE_SIZE", "many", "many"),
        ("MQ_MESSAGE_TTL", "soon", "soon"),
        ("MQ_RETRY_DELAYS", "1,five,1m", "five"),
    ] {
        let err = match lookup(&[(name, value)]) {
            Ok(_) => panic!("{name}={value} was accepted"),
            Err(e) => e.to_string(),
        };
        eprintln!("{name}={value}: {err}");
        assert!(err.contains(name), "the error must name {name}: {err}");
        assert!(err.contains(bad), "the error must quote {bad:?}: {err}");
    }
}

#[test]
fn env_variables_map_onto_config_fields() {
    let config = lookup(&[
        ("REDIS_URL", "redis://10.1.2.3:6380"),
        ("REDIS_PASSWORD", "pw"),
        ("MQ_QUEUE_PREFIX", "shop"),
        ("MQ_MAX_WORKERS", "7"),
        ("MQ_TASK_QUEUE_SIZE", "33"),
        ("MQ_MESSAGE_TTL", "86400"),
        ("MQ_RETRY_DELAYS", "1,5s,1m"),
    ])
    .expect("valid environment");
    assert_eq!(config.redis_url, "redis://10.1.2.3:6380");
    assert_eq!(config.redis_password.as_deref(), Some("pw"));
    assert_eq!(config.queue_prefix, "shop");
    assert_eq!(config.max_workers, 7);
    assert_eq!(config.task_queue_size, 33);
    assert_eq!(config.message_ttl, Duration::from_secs(86_400));
    assert_eq!(
        config.retry_delays,
        [
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(60)
        ]
    );

    let ttl = lookup(&[("MQ_MESSAGE_TTL", "2h")]).expect("a duration with a unit");
    assert_eq!(ttl.message_ttl, Duration::from_secs(7200));
}

#[test]
fn an_empty_environment_gives_the_defaults() {
    let config = lookup(&[]).expect("no variables set");
    let default = Config::default();
    assert_eq!(config.redis_url, "redis://127.0.0.1:6379");
    assert_eq!(config.redis_url, default.redis_url);
    assert_eq!(config.redis_password, None);
    assert_eq!(config.queue_prefix, default.queue_prefix);
    assert_eq!(config.max_workers, default.max_workers);
    assert_eq!(config.task_queue_size, default.task_queue_size);
    assert_eq!(config.message_ttl, default.message_ttl);
    assert_eq!(config.max_retries, default.max_retries);
    assert_eq!(config.retry_delays, default.retry_delays);
    // MX-RMQ's documented defaults (issue 2 §2)
    assert_eq!(default.max_retries, 3);
    assert_eq!(
        default.retry_delays,
        [
            Duration::from_secs(60),
            Duration::from_secs(300),
            Duration::from_secs(1800)
        ]
    );
    assert_eq!(default.message_ttl, Duration::from_secs(86_400));
    assert_eq!(default.processing_timeout, Duration::from_secs(180));
}
