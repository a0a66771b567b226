//! Starting and stopping consumers: `run()`, `spawn()` and the builder.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rmq_core::registry::registrations;
use rmq_core::{HandlerRegistration, MessageId, Topic};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::client::{global_client, Client};
use crate::config::Config;
use crate::error::Error;
use crate::fetcher::{Policy, TopicQueue};
use crate::state::{RuntimeState, Shared};
use crate::wake::Route;
use crate::worker::Driver;

/// Runs every `#[handler]` linked into the program with the process-wide client until
/// SIGINT or SIGTERM, then shuts down gracefully (a second signal stops at once).
pub async fn run() -> Result<(), Error> {
    builder().run().await
}

/// Starts every `#[handler]` in the background; stop it with [`RuntimeHandle::shutdown`].
pub async fn spawn() -> Result<RuntimeHandle, Error> {
    builder().spawn().await
}

/// A runtime builder: choose topics, concurrency and configuration.
///
/// ```no_run
/// # async fn f() -> Result<(), rmq_runtime::Error> {
/// let handle = rmq_runtime::builder()
///     .config(rmq_runtime::Config { max_workers: 32, ..Default::default() })
///     .topics(["order_created"])
///     .concurrency("order_created", 8)
///     .spawn()
///     .await?;
/// // ...
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
pub fn builder() -> RuntimeBuilder {
    RuntimeBuilder::default()
}

/// See [`builder`].
#[derive(Default)]
#[must_use = "a RuntimeBuilder does nothing until `run` or `spawn` is awaited"]
pub struct RuntimeBuilder {
    config: Option<Config>,
    client: Option<Client>,
    topics: Option<Vec<String>>,
    concurrency: Vec<(String, usize)>,
    max_workers: Option<usize>,
}

impl RuntimeBuilder {
    /// Connect with this configuration instead of the process-wide client.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Use this client (and its configuration) instead of the process-wide client.
    pub fn client(mut self, client: &Client) -> Self {
        self.client = Some(client.clone());
        self
    }

    /// Consume only these topics (default: every topic that has a `#[handler]`).
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics
            .get_or_insert_with(Vec::new)
            .extend(topics.into_iter().map(Into::into));
        self
    }

    /// Consume topic `T` (adds to [`RuntimeBuilder::topics`]).
    pub fn topic<T: Topic>(self) -> Self {
        self.topics([T::NAME])
    }

    /// At most `n` handlers of `topic` at once (overrides `#[handler(concurrency = ..)]`).
    pub fn concurrency(mut self, topic: impl Into<String>, n: usize) -> Self {
        self.concurrency.push((topic.into(), n));
        self
    }

    /// At most `n` handlers at once in this runtime, all topics together (overrides
    /// `Config::max_workers`).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully; a second signal stops at
    /// once (leases bring the in-flight messages back).
    pub async fn run(self) -> Result<(), Error> {
        let handle = self.spawn().await?;
        wait_for_signal().await;
        tracing::info!("signal received: shutting down gracefully (send it again to stop at once)");
        tokio::select! {
            result = handle.shutdown() => result,
            _ = wait_for_signal() => {
                tracing::warn!("second signal: stopping at once; leases return the in-flight messages");
                Ok(())
            }
        }
    }

    /// Starts the consumers in the background.
    pub async fn spawn(self) -> Result<RuntimeHandle, Error> {
        let selected = select_handlers(self.topics.as_deref())?;
        let client = match (self.client, self.config) {
            (Some(client), _) => client,
            (None, Some(config)) => Client::connect(config).await?,
            (None, None) => global_client().await?,
        };
        let config = client.config().clone();
        match client.health().await {
            Ok(health) => {
                for warning in &health.warnings {
                    tracing::warn!("{warning}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not check Redis' configuration"),
        }
        let max_workers = self.max_workers.unwrap_or(config.max_workers);
        if max_workers == 0 {
            return Err(Error::InvalidOption(
                "max_workers must be at least 1".into(),
            ));
        }
        let mut limits: HashMap<&str, usize> = HashMap::new();
        for (topic, n) in &self.concurrency {
            let Some(registration) = selected.iter().find(|r| r.topic == topic) else {
                return Err(unknown_topic(topic, &selected));
            };
            if *n == 0 {
                return Err(Error::InvalidOption(format!(
                    "concurrency of `{topic}` must be at least 1"
                )));
            }
            limits.insert(registration.topic, *n);
        }

        // Before any consumer starts, so an unusable address leaves nothing running.
        #[cfg(feature = "prometheus")]
        let metrics =
            crate::prometheus::serve_for_runtime(&client, selected.iter().map(|r| r.topic)).await?;
        #[cfg(not(feature = "prometheus"))]
        if let Some(addr) = config.metrics_addr {
            tracing::warn!(%addr, "MQ_METRICS_ADDR (Config::metrics_addr) is set but rmq-runtime was built without its `prometheus` feature, so no metrics are served: rebuild with the `prometheus` feature of rmq-runtime");
        }
        let workers = Arc::new(Semaphore::new(max_workers));
        let topics: Vec<&'static str> = selected.iter().map(|r| r.topic).collect();
        let shared = Shared::register(topics.clone(), max_workers);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut channels = HashMap::new();
        let mut drivers = JoinSet::new();
        // names this runtime in `waiting` and its push channels (see wake.rs)
        let consumer = MessageId::generate();
        for registration in &selected {
            let wake = Arc::new(Notify::new());
            let queue = TopicQueue::new(
                client.clone(),
                registration.topic,
                Policy::resolve(&registration.options, &config),
                consumer.as_str(),
            );
            let (push_tx, pushed) = mpsc::unbounded_channel();
            channels.insert(queue.keys.wake.clone(), Route::Wake(wake.clone()));
            channels.insert(queue.push_channel(), Route::Push(push_tx));
            let limit = limits
                .get(registration.topic)
                .copied()
                .unwrap_or_else(|| registration.concurrency.map_or(max_workers, |n| n as usize));
            drivers.spawn(
                Driver {
                    queue: Arc::new(queue),
                    registration,
                    limit,
                    batch: config.task_queue_size,
                    workers: workers.clone(),
                    shared: shared.clone(),
                    wake,
                    pushed: Some(pushed),
                    stop: stop_rx.clone(),
                    poll_interval: config.poll_interval,
                    shutdown_timeout: config.shutdown_timeout,
                }
                .run(),
            );
        }
        let listener = tokio::spawn(crate::wake::listen(client.clone(), channels, stop_rx));
        tracing::info!(?topics, max_workers, prefix = %config.queue_prefix, "rmq runtime started");
        Ok(RuntimeHandle {
            stop: stop_tx,
            drivers,
            listener,
            topics,
            #[cfg(feature = "prometheus")]
            metrics,
            shared,
        })
    }
}

/// A running runtime started by [`spawn`] or [`RuntimeBuilder::spawn`].
pub struct RuntimeHandle {
    stop: watch::Sender<bool>,
    drivers: JoinSet<()>,
    listener: tokio::task::JoinHandle<()>,
    topics: Vec<&'static str>,
    /// The endpoint of `Config::metrics_addr`, stopped after the drivers at shutdown.
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::prometheus::MetricsServer>,
    shared: Arc<Shared>,
}

impl RuntimeHandle {
    /// The topics this runtime consumes.
    pub fn topics(&self) -> &[&'static str] {
        &self.topics
    }

    /// What this runtime is doing now (see also [`crate::runtime_state`]).
    pub fn state(&self) -> RuntimeState {
        self.shared.state()
    }

    /// Graceful shutdown: stop fetching, let running handlers finish within
    /// `Config::shutdown_timeout`, settle their results, and return.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shared.stopping();
        let _ = self.stop.send(true);
        while let Some(result) = self.drivers.join_next().await {
            if let Err(e) = result {
                if e.is_panic() {
                    tracing::error!("a topic driver panicked during shutdown: {e}");
                }
            }
        }
        let _ = (&mut self.listener).await;
        #[cfg(feature = "prometheus")]
        if let Some(metrics) = self.metrics.take() {
            metrics.shutdown().await;
        }
        tracing::info!(topics = ?self.topics, "rmq runtime stopped");
        Ok(())
    }
}

/// The handlers to run: each selected topic exactly once.
fn select_handlers(topics: Option<&[String]>) -> Result<Vec<&'static HandlerRegistration>, Error> {
    let mut all: Vec<&'static HandlerRegistration> = registrations().collect();
    if all.is_empty() {
        return Err(Error::NoHandlers);
    }
    // inventory's order is unspecified; sort so errors and logs are stable
    all.sort_by_key(|r| (r.topic, r.file, r.line));
    let mut by_topic: BTreeMap<&'static str, &'static HandlerRegistration> = BTreeMap::new();
    let wanted = |topic: &str| topics.is_none_or(|t| t.iter().any(|w| w == topic));
    for registration in all {
        if !wanted(registration.topic) {
            by_topic.entry(registration.topic).or_insert(registration);
            continue;
        }
        if let Some(first) = by_topic.insert(registration.topic, registration) {
            return Err(Error::DuplicateHandler {
                topic: registration.topic,
                first: first.name,
                first_at: first.location(),
                second: registration.name,
                second_at: registration.location(),
            });
        }
    }
    match topics {
        None => Ok(by_topic.into_values().collect()),
        Some(topics) => {
            let known: Vec<&'static HandlerRegistration> = by_topic.values().copied().collect();
            let mut selected = Vec::new();
            for topic in topics {
                match by_topic.get(topic.as_str()) {
                    Some(r)
                        if !selected
                            .iter()
                            .any(|s: &&HandlerRegistration| s.topic == r.topic) =>
                    {
                        selected.push(*r)
                    }
                    Some(_) => {}
                    None => return Err(unknown_topic(topic, &known)),
                }
            }
            Ok(selected)
        }
    }
}

fn unknown_topic(topic: &str, known: &[&'static HandlerRegistration]) -> Error {
    Error::UnknownTopic {
        topic: topic.to_string(),
        known: known
            .iter()
            .map(|r| format!("`{}`", r.topic))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
