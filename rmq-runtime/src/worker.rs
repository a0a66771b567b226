//! The worker pool: one driver task per topic leases messages only when a worker is free,
//! runs each handler in its own tokio task under the topic's time limit, and settles the
//! results in batches, together with the next fetch, in one round trip.
//!
//! Concurrency is bounded twice: a runtime-wide semaphore of `max_workers` permits, shared
//! by every topic, and each topic's own `concurrency`. Tokio's semaphore is fair (FIFO), so
//! a busy topic cannot starve another: a topic waiting for a worker gets the next one freed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmq_core::duration::format_duration;
use rmq_core::{HandlerError, HandlerOutcome, HandlerRegistration};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::fetcher::{Settlement, TopicQueue};

/// Longest pause after a failed round trip (Redis down); doubles from 50 ms.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct Driver {
    pub(crate) queue: TopicQueue,
    pub(crate) registration: &'static HandlerRegistration,
    /// This topic's concurrency.
    pub(crate) limit: usize,
    /// Most messages leased per round trip (`task_queue_size`).
    pub(crate) batch: usize,
    /// Runtime-wide worker permits (`max_workers`).
    pub(crate) workers: Arc<Semaphore>,
    /// Notified by the wake listener when work may be ready.
    pub(crate) wake: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let topic = self.queue.topic;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Settlement>();
        let mut handlers = JoinSet::new();
        let mut settled: Vec<Settlement> = Vec::new();
        let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
        let mut want_fetch = true;
        let mut next_event: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        let mut stop_deadline: Option<Instant> = None;
        let mut handle_dropped = false;

        loop {
            while let Ok(s) = done_rx.try_recv() {
                settled.push(s);
            }
            while handlers.try_join_next().is_some() {}
            if stop_deadline.is_none() && (handle_dropped || *self.stop.borrow()) {
                stop_deadline = Some(Instant::now() + self.shutdown_timeout);
                tracing::info!(
                    topic,
                    running = handlers.len(),
                    "stopping: no new fetches; waiting for running handlers"
                );
            }
            let stopping = stop_deadline.is_some();
            if stopping && handlers.is_empty() && settled.is_empty() {
                break;
            }

            // Reserve free workers for a fetch; never lease more than can start now.
            let mut want = 0;
            if want_fetch && !stopping {
                let room = self.limit.saturating_sub(handlers.len()).min(self.batch);
                while permits.len() < room {
                    match self.workers.clone().try_acquire_owned() {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    }
                }
                permits.truncate(room);
                want = permits.len();
            }

            if !settled.is_empty() || want > 0 {
                match self.queue.round_trip(&settled, want).await {
                    Ok(trip) => {
                        backoff = Duration::from_millis(50);
                        settled.clear();
                        if want > 0 {
                            want_fetch = trip.deliveries.len() + trip.unreadable.len() >= want;
                            next_event = trip.next_event;
                        }
                        settled.extend(trip.unreadable);
                        for (delivery, attempt) in trip.deliveries {
                            let Some(permit) = permits.pop() else { break };
                            self.start_handler(&mut handlers, &done_tx, delivery, attempt, permit);
                        }
                        permits.clear();
                    }
                    Err(e) => {
                        permits.clear();
                        want_fetch = true;
                        tracing::warn!(topic, error = %e, retry_in = ?backoff, "round trip to Redis failed; finished work is kept and sent again");
                        if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::warn!(topic, unsettled = settled.len(), "shutdown budget spent with Redis unreachable; leases will return these messages");
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            }

            let wake_at = match stop_deadline {
                Some(deadline) => deadline,
                None => {
                    let poll = Instant::now() + self.poll_interval;
                    next_event.map_or(poll, |at| at.min(poll))
                }
            };
            let can_start = want_fetch && !stopping && handlers.len() < self.limit;
            tokio::select! {
                Some(s) = done_rx.recv() => settled.push(s),
                _ = self.wake.notified(), if !stopping => want_fetch = true,
                changed = self.stop.changed(), if !stopping => handle_dropped = changed.is_err(),
                permit = self.workers.clone().acquire_owned(), if can_start => {
                    if let Ok(permit) = permit {
                        permits.push(permit);
                    }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    if stopping {
                        tracing::warn!(topic, cancelled = handlers.len(), "shutdown budget spent; cancelling running handlers (their leases return the messages)");
                        handlers.abort_all();
                        while handlers.join_next().await.is_some() {}
                        while let Ok(s) = done_rx.try_recv() {
                            settled.push(s);
                        }
                        if !settled.is_empty() {
                            if let Err(e) = self.queue.round_trip(&settled, 0).await {
                                tracing::warn!(topic, error = %e, "could not settle the last results; leases will return those messages");
                            }
                        }
                        break;
                    }
                    want_fetch = true;
                }
            }
        }
        tracing::debug!(topic, "driver stopped");
    }

    fn start_handler(
        &self,
        handlers: &mut JoinSet<()>,
        done: &mpsc::UnboundedSender<Settlement>,
        delivery: rmq_core::Delivery,
        attempt: u32,
        permit: OwnedSemaphorePermit,
    ) {
        let invoke = self.registration.invoke;
        let timeout = self.queue.policy.timeout;
        let done = done.clone();
        let id = delivery.context.id().clone();
        let span = tracing::info_span!("rmq.handle", topic = self.queue.topic, id = %id, attempt);
        handlers.spawn(
            async move {
                let started = Instant::now();
                let outcome = match tokio::time::timeout(timeout, invoke(delivery)).await {
                    Ok(HandlerOutcome::Completed) => Ok(()),
                    Ok(HandlerOutcome::Failed(error)) => Err(error),
                    Ok(HandlerOutcome::Undecodable(reason)) => {
                        Err(HandlerError::dead_letter(reason))
                    }
                    Err(_) => Err(HandlerError::msg(format!(
                        "timed out after {}",
                        format_duration(timeout)
                    ))),
                };
                tracing::debug!(elapsed = ?started.elapsed(), ok = outcome.is_ok(), "handled");
                drop(permit);
                let _ = done.send(Settlement {
                    id,
                    attempt,
                    outcome,
                });
            }
            .instrument(span),
        );
    }
}
