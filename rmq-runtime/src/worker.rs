//! The worker pool: one driver task per topic keeps up to two round trips to Redis in
//! flight (settle finished attempts + lease more, `fetcher.rs`) while it starts handlers,
//! each in its own tokio task under the topic's time limit; it renews the leases it holds.
//!
//! Concurrency is bounded twice: a runtime-wide semaphore of `max_workers` permits, shared
//! by every topic, and each topic's own `concurrency`. Tokio's semaphore is fair (FIFO), so
//! a busy topic cannot starve another: a topic waiting for a worker gets the next one freed.
//!
//! **Prefetch.** Besides a message for every free worker, a driver leases a few more ahead
//! (a local buffer of at most `task_queue_size`), so workers that finish while a round trip
//! is on its way find the next message at hand instead of waiting for Redis. The buffer
//! adapts: its target is what the topic's workers could finish in twice the time the last
//! fetch took, at the handlers' average speed. Fast handlers get a deep buffer (the round
//! trip is then amortised over many messages); handlers slower than a few round trips get
//! none, so a slow consumer never sits on messages another consumer could run. Buffered
//! messages are leased like running ones: renewed, put back at the front (attempt not
//! counted) at shutdown, and reclaimed by any consumer if this process dies.
//!
//! **Two round trips.** With one round trip at a time, Redis waited while the driver read
//! each reply and sent the next request. So while one is on its way, a second leaves as
//! soon as it has a batch of results to carry ([`SECOND_TRIP_MIN`], or half what the first
//! one settles); it asks only for what the first did not. Redis answers them in order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesOrdered, StreamExt};

use rmq_core::duration::format_duration;
use rmq_core::{Delivery, HandlerError, HandlerOutcome, HandlerRegistration, MessageId};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::error::Error;
use crate::fetcher::{Lease, RoundTrip, Settlement, TopicQueue, MAX_IDS_PER_CALL};
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
    pub(crate) queue: Arc<TopicQueue>,
    pub(crate) registration: &'static HandlerRegistration,
    /// This topic's concurrency.
    pub(crate) limit: usize,
    /// Most messages leased ahead of free workers (`task_queue_size`).
    pub(crate) batch: usize,
    /// Runtime-wide worker permits (`max_workers`).
    pub(crate) workers: Arc<Semaphore>,
    /// The runtime's live figures (handlers running).
    pub(crate) shared: Arc<Shared>,
    /// Notified by the wake listener when work may be ready.
    pub(crate) wake: Arc<Notify>,
    /// Messages a producer handed this consumer directly (taken by `run`).
    pub(crate) pushed: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// Most round trips a driver has in flight. With one, Redis sat idle while the driver read
/// a reply and sent the next request (a drain ran Redis at about 75 %); a second, sent
/// while the first is on its way, keeps Redis busy meanwhile.
const MAX_TRIPS: usize = 2;

/// Fewest settled attempts that justify a second round trip while one is in flight (fewer
/// ride with the next one): a second trip is for throughput, so it must carry a batch.
const SECOND_TRIP_MIN: usize = 32;

/// A round trip on its way. Its output: the reply, and what it settled (kept to send again
/// if it fails). What it was sent with is in `State::in_flight`.
type Trip = Pin<Box<dyn Future<Output = TripOutput> + Send>>;
type TripOutput = (Result<RoundTrip, Error>, Vec<Settlement>);

/// What a round trip was sent with.
struct TripInfo {
    /// Messages it asked for.
    want: usize,
    /// Attempts it settles.
    settles: usize,
    sent: Instant,
    /// `State::wake_seq` when it was sent: a wake-up after that means its fetch may have
    /// run before the new message arrived.
    wake_seq: u64,
}

/// The driver's mutable state.
struct State {
    handlers: JoinSet<()>,
    /// Leases held by running handlers.
    running: HashMap<MessageId, Lease>,
    /// Leased, not started yet (oldest first).
    buffered: VecDeque<(Delivery, Lease)>,
    /// Finished attempts not yet sent to Redis.
    settled: Vec<Settlement>,
    /// The round trips in flight (at most [`MAX_TRIPS`]), oldest first; they end in that
    /// order (`FuturesOrdered`), as Redis answers them.
    trips: FuturesOrdered<Trip>,
    /// What each trip in `trips` was sent with, in the same order.
    in_flight: VecDeque<TripInfo>,
    /// How long handlers take (a moving average), once one has finished.
    handler_time: Option<Duration>,
    /// How long the last round trip that fetched took.
    fetch_trip: Duration,
    /// Whether the topic may have ready messages (last fetch was full, or a wake-up came).
    want_fetch: bool,
    /// A producer handed this consumer a message and so took it out of `waiting`: the next
    /// round trip that settles something also fetches, which parks it again.
    repark: bool,
    /// Wake-ups so far: a round trip sent before the latest one may have fetched before
    /// the new message arrived, so the driver fetches again whatever it returns.
    wake_seq: u64,
    /// Earliest delayed message or lease deadline, as last reported by fetch.lua.
    next_event: Option<Instant>,
    next_renewal: Instant,
    /// No round trip before this (backing off after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    quick_retry_done: bool,
    stop_deadline: Option<Instant>,
}

impl State {
    fn finished(&mut self, settlement: Settlement) {
        if let Some(took) = settlement.took {
            self.handler_time = Some(match self.handler_time {
                None => took,
                Some(average) => (average * 7 + took) / 8,
            });
        }
        self.running.remove(&settlement.id);
        self.settled.push(settlement);
    }

    /// Every lease this driver holds: running and buffered.
    fn leases(&self) -> Vec<Lease> {
        let running = self.running.values().cloned();
        running
            .chain(self.buffered.iter().map(|(_, lease)| lease.clone()))
            .collect()
    }

    fn idle(&self) -> bool {
        self.handlers.is_empty()
            && self.settled.is_empty()
            && self.trips.is_empty()
            && self.buffered.is_empty()
    }
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let topic = self.queue.topic;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Settlement>();
        let (_, no_pushes) = mpsc::unbounded_channel();
        let mut pushed = self.pushed.take().unwrap_or(no_pushes);
        let renew_every = self.queue.policy.lease / 3;
        let mut st = State {
            handlers: JoinSet::new(),
            running: HashMap::new(),
            buffered: VecDeque::new(),
            settled: Vec::new(),
            trips: FuturesOrdered::new(),
            in_flight: VecDeque::new(),
            handler_time: None,
            fetch_trip: Duration::ZERO,
            want_fetch: true,
            repark: false,
            wake_seq: 0,
            next_event: None,
            next_renewal: Instant::now() + renew_every,
            retry_at: None,
            backoff: Duration::from_millis(50),
            quick_retry_done: false,
            stop_deadline: None,
        };
        let mut handle_dropped = false;
        let mut reported_buffer = 0;

        loop {
            self.shared
                .buffered_changed(reported_buffer, st.buffered.len());
            reported_buffer = st.buffered.len();
            while let Ok(s) = done_rx.try_recv() {
                st.finished(s);
            }
            while st.handlers.try_join_next().is_some() {}
            if st.stop_deadline.is_none() && (handle_dropped || *self.stop.borrow()) {
                st.stop_deadline = Some(Instant::now() + self.shutdown_timeout);
                tracing::info!(
                    topic,
                    running = st.handlers.len(),
                    "stopping: no new fetches; waiting for running handlers"
                );
                self.release_buffer(&mut st).await;
                // no more messages pushed to this consumer
                if let Err(e) = self.queue.unpark().await {
                    tracing::debug!(topic, error = %e, "could not leave `waiting`; a producer finds out when it publishes");
                }
            }
            let stopping = st.stop_deadline.is_some();
            if stopping && st.idle() {
                break;
            }
            // Renew at the top of every loop, not only when idle: a busy loop must not
            // starve the renewal of long handlers running beside short ones.
            if Instant::now() >= st.next_renewal {
                if !st.running.is_empty() || !st.buffered.is_empty() {
                    self.renew(&mut st).await;
                }
                st.next_renewal = Instant::now() + renew_every;
            }
            // Start buffered messages on every free worker.
            while !stopping && !st.buffered.is_empty() && st.handlers.len() < self.limit {
                match self.workers.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (delivery, lease) = st.buffered.pop_front().expect("not empty");
                        self.start_handler(&mut st, &done_tx, delivery, lease, permit);
                    }
                    Err(_) => break,
                }
            }
            if st.retry_at.is_none_or(|at| Instant::now() >= at) {
                self.launch_trip(&mut st, stopping);
            }

            let wake_at = match st.stop_deadline {
                Some(deadline) => deadline,
                None => {
                    let poll = Instant::now() + self.poll_interval;
                    let next = st.next_event.map_or(poll, |at| at.min(poll));
                    st.retry_at.map_or(next, |at| at.min(next))
                }
            };
            let can_start = !stopping && !st.buffered.is_empty() && st.handlers.len() < self.limit;
            let holds_leases = !st.running.is_empty() || !st.buffered.is_empty();
            let next_renewal = st.next_renewal;
            let timer_on = st.trips.is_empty() || stopping;
            let trips = &mut st.trips;
            tokio::select! {
                biased;
                Some(result) = trips.next(), if !trips.is_empty() => {
                    self.trip_done(&mut st, result).await;
                }
                Some(s) = done_rx.recv() => st.finished(s),
                // A handler sends its result just before its task ends, so the loop can see
                // the result while the task still counts as running; when stopping, that
                // task's end must wake the loop (nothing else may, until the deadline).
                Some(_) = st.handlers.join_next(), if stopping && !st.handlers.is_empty() => {}
                Some(message) = pushed.recv() => {
                    match self.queue.pushed(&message) {
                        Some(Ok(delivery)) => st.buffered.push_back(delivery),
                        Some(Err(unreadable)) => st.settled.push(unreadable),
                        None => {}
                    }
                    // Not a fetch now: it would compete with the handler starting. The
                    // round trip that settles it parks the consumer again (a message
                    // produced meanwhile is queued and wakes this consumer as usual).
                    st.repark = true;
                    if stopping {
                        self.release_buffer(&mut st).await;
                    }
                }
                permit = self.workers.clone().acquire_owned(), if can_start => {
                    if let Ok(permit) = permit {
                        let (delivery, lease) = st.buffered.pop_front().expect("can_start");
                        self.start_handler(&mut st, &done_tx, delivery, lease, permit);
                    }
                }
                _ = self.wake.notified(), if !stopping => {
                    st.want_fetch = true;
                    st.wake_seq += 1;
                    // the listener also wakes every topic when it reconnects: Redis is
                    // back, so a backoff ends early
                    st.retry_at = None;
                }
                changed = self.stop.changed(), if !stopping => handle_dropped = changed.is_err(),
                // renewal itself happens at the top of the loop
                _ = tokio::time::sleep_until(next_renewal.into()), if holds_leases => {}
                _ = sleep_precisely_until(wake_at), if timer_on => {
                    if stopping && Instant::now() >= wake_at {
                        self.cancel_and_release(&mut st, &mut done_rx).await;
                        break;
                    }
                    if st.retry_at.is_some_and(|at| Instant::now() >= at) {
                        st.retry_at = None;
                    } else {
                        st.want_fetch = true;
                        // the event is consumed; the next fetch reports the next one
                        st.next_event = None;
                    }
                }
            }
        }
        self.shared.buffered_changed(reported_buffer, 0);
        tracing::debug!(topic, "driver stopped");
    }

    /// Sends what finished and, unless stopping, asks for messages for the free workers
    /// and the prefetch buffer, less what the trips in flight already asked for. Nothing to
    /// send and nothing wanted: no round trip. While one is in flight, a second leaves only
    /// with a batch of results (see [`MAX_TRIPS`]).
    fn launch_trip(&self, st: &mut State, stopping: bool) {
        if let Some(first) = st.in_flight.front() {
            // a second one only with a batch of results, and none while stopping
            let batch = st.settled.len() >= SECOND_TRIP_MIN.max(first.settles / 2);
            if st.in_flight.len() >= MAX_TRIPS || stopping || !batch {
                return;
            }
        }
        let mut want = 0;
        let fetch = st.want_fetch || (st.repark && !st.settled.is_empty());
        if fetch && !stopping {
            let free = self.limit.saturating_sub(st.handlers.len());
            let asked: usize = st.in_flight.iter().map(|t| t.want).sum();
            want = (free + self.prefetch(st))
                .saturating_sub(st.buffered.len() + asked)
                .min(MAX_IDS_PER_CALL);
        }
        if st.settled.is_empty() && want == 0 {
            return;
        }
        if want > 0 {
            st.repark = false;
        }
        let settled = std::mem::take(&mut st.settled);
        st.in_flight.push_back(TripInfo {
            want,
            settles: settled.len(),
            sent: Instant::now(),
            wake_seq: st.wake_seq,
        });
        let queue = self.queue.clone();
        st.trips.push_back(Box::pin(async move {
            let result = queue.round_trip(&settled, want).await;
            (result, settled)
        }));
    }

    /// The prefetch buffer's target: what the topic's workers could finish in twice the
    /// time the last fetch took, at the handlers' average speed, at most `task_queue_size`.
    /// None when that is less than one message (100 ms handlers on 2 workers, fetches of
    /// 0.3 ms: 0.012), and none before a handler has finished.
    fn prefetch(&self, st: &State) -> usize {
        let Some(handler_time) = st.handler_time else {
            return 0;
        };
        let per_worker = 2.0 * st.fetch_trip.as_secs_f64() / handler_time.as_secs_f64().max(1e-9);
        (per_worker * self.limit as f64).min(self.batch as f64) as usize
    }

    async fn trip_done(&self, st: &mut State, (result, sent): TripOutput) {
        let topic = self.queue.topic;
        let info = st
            .in_flight
            .pop_front()
            .expect("one TripInfo per trip in flight");
        let want = info.want;
        match result {
            Ok(trip) => {
                if want > 0 {
                    st.fetch_trip = info.sent.elapsed();
                }
                st.backoff = Duration::from_millis(50);
                st.quick_retry_done = false;
                st.retry_at = None;
                if want > 0 {
                    let full = trip.deliveries.len() + trip.unreadable.len() >= want;
                    st.want_fetch = full || st.wake_seq != info.wake_seq;
                    st.next_event = trip.next_event;
                }
                st.settled.extend(trip.unreadable);
                st.buffered.extend(trip.deliveries);
                if st.stop_deadline.is_some() {
                    // leased while the stop was on its way: put back at once
                    self.release_buffer(st).await;
                }
            }
            Err(e) => {
                // finished work is kept and sent again; a repeat that Redis already applied
                // is reported stale and changes nothing (lease tokens)
                let mut sent = sent;
                sent.append(&mut st.settled);
                st.settled = sent;
                st.want_fetch = true;
                let retry_in = if st.quick_retry_done {
                    QUICK_RETRY.max(st.backoff)
                } else {
                    QUICK_RETRY
                };
                tracing::warn!(topic, error = %e, ?retry_in, "round trip to Redis failed; finished work is kept and sent again");
                if st.quick_retry_done {
                    st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
                }
                st.quick_retry_done = !st.quick_retry_done;
                st.retry_at = Some(Instant::now() + retry_in);
                if st.stop_deadline.is_some_and(|d| Instant::now() >= d) {
                    tracing::warn!(topic, unsettled = st.settled.len(), "shutdown budget spent with Redis unreachable; leases will return these messages");
                    st.settled.clear();
                }
            }
        }
    }

    /// Puts buffered (not started) messages back at the front of their level, attempt not
    /// counted. If Redis cannot be reached their leases return them.
    async fn release_buffer(&self, st: &mut State) {
        if st.buffered.is_empty() {
            return;
        }
        let leases: Vec<Lease> = st.buffered.drain(..).map(|(_, lease)| lease).collect();
        if let Err(e) = self.queue.release(&leases).await {
            tracing::warn!(topic = self.queue.topic, error = %e, buffered = leases.len(), "could not put buffered messages back; their leases will return them");
        }
    }

    /// Renews every lease this driver holds in one round trip; a buffered message whose
    /// lease was lost is not started.
    async fn renew(&self, st: &mut State) {
        match self.queue.renew(&st.leases()).await {
            Ok(lost) => {
                for id in lost {
                    let before = st.buffered.len();
                    st.buffered.retain(|(_, lease)| lease.id.as_str() != id);
                    if st.buffered.len() < before {
                        tracing::warn!(topic = self.queue.topic, %id, "lease of a buffered message lost before it started; it is not run here");
                    } else {
                        tracing::warn!(topic = self.queue.topic, %id, "lease lost (it lapsed before renewal); this delivery's result will be ignored");
                    }
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
        // the replies of the trips in flight may carry leases; they are put back below
        // like the rest
        while let Some((result, sent)) = st.trips.next().await {
            match result {
                Ok(trip) => st.buffered.extend(trip.deliveries),
                Err(_) => st.settled.extend(sent),
            }
        }
        st.in_flight.clear();
        if !st.settled.is_empty() {
            if let Err(e) = self.queue.round_trip(&st.settled, 0).await {
                tracing::warn!(topic, error = %e, "could not settle the last results; leases will return those messages");
            }
        }
        let mut leases: Vec<Lease> = st.running.drain().map(|(_, lease)| lease).collect();
        leases.extend(st.buffered.drain(..).map(|(_, lease)| lease));
        if !leases.is_empty() {
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
        delivery: Delivery,
        lease: Lease,
        permit: OwnedSemaphorePermit,
    ) {
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

/// Sleeps until `at`, never before it and late by about the time a thread takes to wake.
/// Tokio's timer ticks in whole milliseconds (a sleep ends up to 1 ms late, more when this
/// VM's idle vCPU wakes slowly), which alone would use up most of a delayed message's
/// lateness budget, so tokio sleeps only until 2 ms before `at` (with 1 ms its wake-up was
/// often already past `at`). The rest is a Linux `timerfd` in tokio's own epoll: the
/// kernel's high-resolution timer wakes the thread waiting on the I/O driver, which runs
/// this task at once. Elsewhere, or if the timerfd cannot be made, a blocking-pool thread
/// sleeps the rest, and waking the driver's thread from there costs a second wake-up
/// (277-477 µs on this VM, against 62-146 µs for the timerfd, 6 delayed bursts each). If
/// the caller stops waiting, the timerfd is closed; the blocking thread just finishes its
/// (at most 2 ms) sleep.
async fn sleep_precisely_until(at: Instant) {
    const TICK: Duration = Duration::from_millis(2);
    if let Some(coarse) = at.checked_sub(TICK).filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let rest = at.saturating_duration_since(Instant::now());
    if rest.is_zero() {
        return;
    }
    #[cfg(target_os = "linux")]
    if timerfd::sleep(rest).await.is_ok() {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// Waits `rest` on a one-shot `CLOCK_MONOTONIC` timerfd (the clock `Instant` reads), so
    /// it never ends early. An error means nothing was waited.
    pub(super) async fn sleep(rest: Duration) -> io::Result<()> {
        // SAFETY: plain syscalls; the descriptor is owned (closed on drop) from here on
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = libc::itimerspec {
            it_interval: zero,
            it_value: libc::timespec {
                tv_sec: rest.as_secs() as libc::time_t,
                tv_nsec: rest.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; no old value is asked for
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` moves into the `AsyncFd` and stays open, as the same
        // descriptor, until the `AsyncFd` drops it
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        let _expired = fd.readable().await?;
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use std::time::{Duration, Instant};

        #[tokio::test]
        async fn a_timerfd_sleep_never_ends_early() {
            for micros in [1, 250, 1500] {
                let rest = Duration::from_micros(micros);
                let start = Instant::now();
                super::sleep(rest)
                    .await
                    .expect("a timerfd in tokio's epoll");
                assert!(
                    start.elapsed() >= rest,
                    "{micros} µs ended after {:?}",
                    start.elapsed()
                );
            }
        }
    }
}
