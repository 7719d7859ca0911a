//! The gateway's log as its operator reads it, captured in the test process: the gateways of
//! every test in one test binary log here, so a test looks for the lines of its own exchanges
//! (by exchange id), never at the whole.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// What the gateways of this test binary have logged at `info` and above.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The process's log capture, installed as the global subscriber on first use. A binary
    /// whose subscriber is already set (by something else) gets a capture that stays empty,
    /// and its tests say so when they look.
    pub fn capture() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            let installed = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .try_init();
            assert!(installed.is_ok(), "another tracing subscriber is installed in this test binary");
            logs
        })
    }

    /// The lines that contain `needle`, waiting up to 5 s for one to appear (a gateway logs a
    /// refusal before it answers, so usually at once).
    pub async fn lines_with(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = {
                let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                String::from_utf8_lossy(&bytes).lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
            };
            if !lines.is_empty() || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
