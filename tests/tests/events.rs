//! Lifecycle events reach the application's `tracing` subscriber as structured events: an
//! expired message is reported with its topic and count. (Its own binary: it installs the
//! process' global subscriber.)

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rmq_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[topic("events.job")]
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

#[handler]
async fn job(_job: Job) -> Result<(), HandlerError> {
    Ok(())
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_reported_with_its_topic_and_count() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let env = TestEnv::start("events_expired").await;
    let c = &env.client;
    for n in 0..2 {
        c.send(Job { n })
            .ttl(Duration::from_millis(20))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let runtime = spawn_runtime(c, &[Job::NAME], 2).await;
    let reported = poll(PATIENCE, || async {
        captured.text().contains("expired before delivery")
    })
    .await;
    shutdown(runtime).await;
    let text = captured.text();
    assert!(reported, "no expiry event in:\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("expired before delivery"))
        .unwrap();
    assert!(
        line.contains("topic=\"events.job\"") || line.contains("topic=events.job"),
        "{line}"
    );
    assert!(line.contains("expired=2"), "{line}");
    assert!(
        !text.contains("\"n\""),
        "payloads are never logged at INFO: {text}"
    );
    assert_eq!(c.stats::<Job>().await.unwrap().counter("expired"), 2);
}
