//! What the runtimes of this process are doing right now, for `health()` and metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

/// The state of the rmq runtime(s) in this process. See [`runtime_state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeState {
    /// False once a shutdown began (running handlers may still be finishing).
    pub running: bool,
    /// Topics consumed.
    pub topics: Vec<String>,
    /// Worker permits (`max_workers`), summed over the process' runtimes.
    pub max_workers: usize,
    /// Handlers running now.
    pub busy: usize,
    /// Messages leased and not started yet (the prefetch buffer: per topic at most
    /// `task_queue_size` beside the messages for its free workers; see `worker.rs`).
    pub buffered: usize,
}

/// One runtime's live figures, shared by its drivers and its handle.
#[derive(Debug)]
pub(crate) struct Shared {
    topics: Vec<&'static str>,
    max_workers: usize,
    busy: AtomicUsize,
    buffered: AtomicUsize,
    stopping: AtomicBool,
}

static RUNTIMES: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

impl Shared {
    /// Registers a runtime; it is reported while the returned `Arc` lives.
    pub(crate) fn register(topics: Vec<&'static str>, max_workers: usize) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            topics,
            max_workers,
            busy: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let mut all = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&shared));
        shared
    }

    /// Counts a handler as running until the guard is dropped (also when it is aborted).
    pub(crate) fn busy_guard(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Relaxed);
        BusyGuard(self.clone())
    }

    /// A driver's buffer went from `before` to `after` messages.
    pub(crate) fn buffered_changed(&self, before: usize, after: usize) {
        if after > before {
            self.buffered.fetch_add(after - before, Relaxed);
        } else {
            self.buffered.fetch_sub(before - after, Relaxed);
        }
    }

    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    pub(crate) fn state(&self) -> RuntimeState {
        RuntimeState {
            running: !self.stopping.load(Relaxed),
            topics: self.topics.iter().map(|t| t.to_string()).collect(),
            max_workers: self.max_workers,
            busy: self.busy.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
        }
    }
}

pub(crate) struct BusyGuard(Arc<Shared>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

/// The runtimes started in this process and not yet shut down, added together (usually
/// there is one); `None` when there is none, e.g. in a process that only produces.
pub fn runtime_state() -> Option<RuntimeState> {
    let all = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .filter_map(Weak::upgrade)
        .map(|shared| shared.state())
        .reduce(|mut total, one| {
            total.running |= one.running;
            total.topics.extend(one.topics);
            total.max_workers += one.max_workers;
            total.busy += one.busy;
            total.buffered += one.buffered;
            total
        })
        .map(|mut total| {
            total.topics.sort();
            total.topics.dedup();
            total
        })
}
