//! A periodic job of the audit log on a thread of its own: retention's pass over the segments,
//! and the checkpoint of records that arrived before a quiet spell.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Runs a job every `interval` on its own thread until dropped; dropping it stops the thread and
/// waits for a job in progress to end.
#[derive(Debug)]
pub(crate) struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the thread `name`, running `job` every `interval`.
    pub(crate) fn start(name: &str, interval: Duration, mut job: impl FnMut() + Send + 'static) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                job();
            }
        })?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
