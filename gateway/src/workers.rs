//! Whether the async runtime has a worker thread with nothing to do, from tokio's park and
//! unpark hooks. The audit log's writer uses it to hold a sync back only while the gateway is
//! busy (see `audit::segment::writer`): a record waiting on a busy gateway joins the next
//! batch at little cost, while on a gateway with time to spare the sync starts at once.
//!
//! A runtime built some other way (a test's, say) has no hooks: [`Workers`] is then simply not
//! given to the log, which falls back to holding a sync for its whole `commit_delay`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Told when a worker thread runs out of work.
pub trait IdleWatcher: Send + Sync {
    /// A worker is about to park. Runs on that worker's thread, so it must be quick.
    fn worker_idle(&self);
}

/// The idle worker threads of one runtime, counted by its park and unpark hooks.
#[derive(Default)]
pub struct Workers {
    idle: AtomicUsize,
    watchers: Mutex<Vec<Weak<dyn IdleWatcher>>>,
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers").field("idle", &self.idle.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Workers {
    /// A multi-thread runtime with `threads` workers (one per core when `None`), its hooks
    /// reporting here.
    pub fn runtime(self: &Arc<Self>, threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = threads {
            builder.worker_threads(n);
        }
        let (parks, unparks) = (Arc::clone(self), Arc::clone(self));
        builder.on_thread_park(move || parks.parked()).on_thread_unpark(move || unparks.unparked()).enable_all().build()
    }

    /// Whether a worker is parked right now.
    pub fn any_idle(&self) -> bool {
        // SeqCst, paired with the watcher's own flag: either the watcher sees this count, or
        // `parked` sees the watcher's flag and calls it.
        self.idle.load(Ordering::SeqCst) > 0
    }

    /// Calls `watcher` each time a worker parks, for as long as it lives.
    pub fn watch(&self, watcher: Weak<dyn IdleWatcher>) {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.retain(|w| w.strong_count() > 0);
        watchers.push(watcher);
    }

    fn parked(&self) {
        self.idle.fetch_add(1, Ordering::SeqCst);
        let watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        for watcher in watchers.iter().filter_map(Weak::upgrade) {
            watcher.worker_idle();
        }
    }

    fn unparked(&self) {
        self.idle.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[derive(Default)]
    struct Seen(AtomicBool);

    impl IdleWatcher for Seen {
        fn worker_idle(&self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_runtime_with_nothing_to_do_reports_its_workers_idle_and_busy_ones_not() {
        let workers = Arc::new(Workers::default());
        let seen = Arc::new(Seen::default());
        let watcher: Arc<dyn IdleWatcher> = seen.clone();
        workers.watch(Arc::downgrade(&watcher));
        let runtime = workers.runtime(Some(1)).unwrap();
        // The only worker is busy inside this future, so none is idle.
        let busy = runtime.block_on(async {
            tokio::spawn({
                let workers = Arc::clone(&workers);
                async move { workers.any_idle() }
            })
            .await
            .unwrap()
        });
        assert!(!busy, "a worker running a task counted as idle");
        // With nothing spawned, the worker parks and the watcher hears of it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(workers.any_idle() && seen.0.load(Ordering::SeqCst)) {
            assert!(std::time::Instant::now() < deadline, "the idle worker was never reported");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop((watcher, seen));
        drop(runtime);
        assert!(workers.watchers.lock().unwrap().iter().all(|w| w.upgrade().is_none()));
    }
}
