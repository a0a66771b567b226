//! The worker pool: one driver task per topic leases messages only when a worker is free,
//! runs each handler in its own tokio task under the topic's time limit, renews the leases
//! of running handlers, and settles results in batches, together with the next fetch, in
//! one round trip.
//!
//! Concurrency is bounded twice: a runtime-wide semaphore of `max_workers` permits, shared
//! by every topic, and each topic's own `concurrency`. Tokio's semaphore is fair (FIFO), so
//! a busy topic cannot starve another: a topic waiting for a worker gets the next one freed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmq_core::duration::format_duration;
use rmq_core::{HandlerError, HandlerOutcome, HandlerRegistration, MessageId};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::fetcher::{Lease, Settlement, TopicQueue, MAX_IDS_PER_CALL};
use crate::state::Shared;

/// Longest pause after a failed round trip (Redis down); doubles from 50 ms. The wake
/// listener's reconnection also ends a pause early, so work resumes as soon as Redis is
/// back.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Pause before the quick second try after a failure: the failed request made the
/// connection manager start reconnecting, and the second try waits for that reconnection
/// instead of meeting the stale broken connection again a whole backoff later.
const QUICK_RETRY: Duration = Duration::from_millis(20);

pub(crate) struct Driver {
    pub(crate) queue: TopicQueue,
    pub(crate) registration: &'static HandlerRegistration,
    /// This topic's concurrency.
    pub(crate) limit: usize,
    /// Most messages leased per round trip (`task_queue_size`).
    pub(crate) batch: usize,
    /// Runtime-wide worker permits (`max_workers`).
    pub(crate) workers: Arc<Semaphore>,
    /// The runtime's live figures (handlers running).
    pub(crate) shared: Arc<Shared>,
    /// Notified by the wake listener when work may be ready.
    pub(crate) wake: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// The driver's mutable state between round trips.
struct State {
    handlers: JoinSet<()>,
    /// Leases held by running handlers.
    running: HashMap<MessageId, Lease>,
    /// Finished attempts not yet written to Redis.
    settled: Vec<Settlement>,
    /// Worker permits reserved for the next fetch.
    permits: Vec<OwnedSemaphorePermit>,
    /// Whether the topic may have ready messages (last fetch was full, or a wake-up came).
    want_fetch: bool,
    /// Earliest delayed message or lease deadline, as last reported by fetch.lua.
    next_event: Option<Instant>,
    next_renewal: Instant,
    stop_deadline: Option<Instant>,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let topic = self.queue.topic;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Settlement>();
        let renew_every = self.queue.policy.lease / 3;
        let mut st = State {
            handlers: JoinSet::new(),
            running: HashMap::new(),
            settled: Vec::new(),
            permits: Vec::new(),
            want_fetch: true,
            next_event: None,
            next_renewal: Instant::now() + renew_every,
            stop_deadline: None,
        };
        let mut backoff = Duration::from_millis(50);
        let mut quick_retry_done = false;
        let mut handle_dropped = false;

        loop {
            while let Ok(s) = done_rx.try_recv() {
                st.finished(s);
            }
            while st.handlers.try_join_next().is_some() {}
            // Renew here, at the top of every loop, not only when idle: a busy loop of round
            // trips must not starve the renewal of long handlers running beside short ones.
            if !st.running.is_empty() && Instant::now() >= st.next_renewal {
                self.renew(&st.running).await;
                st.next_renewal = Instant::now() + renew_every;
            }
            if st.stop_deadline.is_none() && (handle_dropped || *self.stop.borrow()) {
                st.stop_deadline = Some(Instant::now() + self.shutdown_timeout);
                tracing::info!(
                    topic,
                    running = st.handlers.len(),
                    "stopping: no new fetches; waiting for running handlers"
                );
            }
            let stopping = st.stop_deadline.is_some();
            if stopping && st.handlers.is_empty() && st.settled.is_empty() {
                break;
            }

            // Reserve free workers for a fetch; never lease more than can start now.
            let mut want = 0;
            if st.want_fetch && !stopping {
                let room = self
                    .limit
                    .saturating_sub(st.handlers.len())
                    .min(self.batch)
                    .min(MAX_IDS_PER_CALL);
                while st.permits.len() < room {
                    match self.workers.clone().try_acquire_owned() {
                        Ok(permit) => st.permits.push(permit),
                        Err(_) => break,
                    }
                }
                st.permits.truncate(room);
                want = st.permits.len();
            }

            if !st.settled.is_empty() || want > 0 {
                match self.queue.round_trip(&st.settled, want).await {
                    Ok(trip) => {
                        backoff = Duration::from_millis(50);
                        quick_retry_done = false;
                        st.settled.clear();
                        if want > 0 {
                            st.want_fetch = trip.deliveries.len() + trip.unreadable.len() >= want;
                            st.next_event = trip.next_event;
                        }
                        st.settled.extend(trip.unreadable);
                        for (delivery, attempt) in trip.deliveries {
                            let Some(permit) = st.permits.pop() else {
                                break;
                            };
                            self.start_handler(&mut st, &done_tx, delivery, attempt, permit);
                        }
                        st.permits.clear();
                    }
                    Err(e) => {
                        st.permits.clear();
                        st.want_fetch = true;
                        tracing::warn!(topic, error = %e, retry_in = ?backoff, "round trip to Redis failed; finished work is kept and sent again");
                        if st.stop_deadline.is_some_and(|d| Instant::now() >= d) {
                            tracing::warn!(topic, unsettled = st.settled.len(), "shutdown budget spent with Redis unreachable; leases will return these messages");
                            break;
                        }
                        if !quick_retry_done {
                            quick_retry_done = true;
                            tokio::time::sleep(QUICK_RETRY).await;
                            continue;
                        }
                        quick_retry_done = false;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.wake.notified() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            }

            let wake_at = match st.stop_deadline {
                Some(deadline) => deadline,
                None => {
                    let poll = Instant::now() + self.poll_interval;
                    st.next_event.map_or(poll, |at| at.min(poll))
                }
            };
            let can_start = st.want_fetch && !stopping && st.handlers.len() < self.limit;
            tokio::select! {
                Some(s) = done_rx.recv() => st.finished(s),
                _ = self.wake.notified(), if !stopping => st.want_fetch = true,
                changed = self.stop.changed(), if !stopping => handle_dropped = changed.is_err(),
                permit = self.workers.clone().acquire_owned(), if can_start => {
                    if let Ok(permit) = permit {
                        st.permits.push(permit);
                    }
                }
                // renewal itself happens at the top of the loop
                _ = tokio::time::sleep_until(st.next_renewal.into()), if !st.running.is_empty() => {}
                _ = tokio::time::sleep_until(wake_at.into()) => {
                    if stopping {
                        self.cancel_and_release(&mut st, &mut done_rx).await;
                        break;
                    }
                    st.want_fetch = true;
                }
            }
        }
        tracing::debug!(topic, "driver stopped");
    }

    /// Renews the leases of every running handler in one round trip.
    async fn renew(&self, running: &HashMap<MessageId, Lease>) {
        let leases: Vec<Lease> = running.values().cloned().collect();
        match self.queue.renew(&leases).await {
            Ok(lost) => {
                for id in lost {
                    tracing::warn!(topic = self.queue.topic, %id, "lease lost (it lapsed before renewal); this delivery's result will be ignored");
                }
            }
            Err(e) => {
                tracing::warn!(topic = self.queue.topic, error = %e, "could not renew leases; retrying at the next renewal")
            }
        }
    }

    /// The shutdown budget is spent: cancel running handlers, write what finished, and put
    /// the cancelled messages back at the front of their level without counting an attempt.
    async fn cancel_and_release(
        &self,
        st: &mut State,
        done_rx: &mut mpsc::UnboundedReceiver<Settlement>,
    ) {
        let topic = self.queue.topic;
        tracing::warn!(
            topic,
            cancelled = st.handlers.len(),
            "shutdown budget spent; cancelling running handlers and putting their messages back"
        );
        st.handlers.abort_all();
        while st.handlers.join_next().await.is_some() {}
        while let Ok(s) = done_rx.try_recv() {
            st.finished(s);
        }
        if !st.settled.is_empty() {
            if let Err(e) = self.queue.round_trip(&st.settled, 0).await {
                tracing::warn!(topic, error = %e, "could not settle the last results; leases will return those messages");
            }
        }
        if !st.running.is_empty() {
            let leases: Vec<Lease> = st.running.drain().map(|(_, lease)| lease).collect();
            match self.queue.release(&leases).await {
                Ok(n) => tracing::info!(
                    topic,
                    released = n,
                    "cancelled messages are back at the front of their priority level"
                ),
                Err(e) => {
                    tracing::warn!(topic, error = %e, "could not put cancelled messages back; their leases will return them")
                }
            }
        }
    }

    fn start_handler(
        &self,
        st: &mut State,
        done: &mpsc::UnboundedSender<Settlement>,
        delivery: rmq_core::Delivery,
        lease: Lease,
        permit: OwnedSemaphorePermit,
    ) {
        if st.running.is_empty() {
            st.next_renewal = Instant::now() + self.queue.policy.lease / 3;
        }
        let invoke = self.registration.invoke;
        let timeout = self.queue.policy.timeout;
        let done = done.clone();
        let busy = self.shared.busy_guard();
        st.running.insert(lease.id.clone(), lease.clone());
        let span = tracing::info_span!("rmq.handle", topic = self.queue.topic, id = %lease.id, attempt = lease.attempt);
        st.handlers.spawn(
            async move {
                let started = Instant::now();
                let mut dead_reason = None;
                let outcome = match tokio::time::timeout(timeout, invoke(delivery)).await {
                    Ok(HandlerOutcome::Completed) => Ok(()),
                    Ok(HandlerOutcome::Failed(error)) => Err(error),
                    Ok(HandlerOutcome::Undecodable(reason)) => {
                        dead_reason = Some("decode error");
                        Err(HandlerError::dead_letter(reason))
                    }
                    Err(_) => Err(HandlerError::msg(format!(
                        "timed out after {}",
                        format_duration(timeout)
                    ))),
                };
                let took = started.elapsed();
                tracing::debug!(elapsed = ?took, ok = outcome.is_ok(), "handled");
                drop((permit, busy));
                let _ = done.send(Settlement {
                    dead_reason,
                    took: Some(took),
                    ..Settlement::new(lease, outcome)
                });
            }
            .instrument(span),
        );
    }
}

impl State {
    fn finished(&mut self, settlement: Settlement) {
        self.running.remove(&settlement.id);
        self.settled.push(settlement);
    }
}
