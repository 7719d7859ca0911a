//! A connection whose client stops reading is closed once its writes have made no progress
//! for `[limits] send_timeout`.
//!
//! Without it, a client that asks for a large answer and then reads nothing holds the exchange,
//! the service's connection and a place in the service's circuit for as long as it keeps the
//! connection open: HTTP/1.1 has no timer of its own for a stalled write. The exchange is then
//! logged as abandoned, as when the client goes away.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail with `TimedOut` once they have waited `limit` in a row.
#[derive(Debug)]
pub struct SendTimeout<T> {
    inner: T,
    limit: Duration,
    /// The timer of a wait, made at the first and reset at each later one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the present wait.
    waiting: bool,
}

impl<T> SendTimeout<T> {
    /// `inner`, its writes allowed to wait `limit` at most.
    pub const fn new(inner: T, limit: Duration) -> Self {
        Self { inner, limit, timer: None, waiting: false }
    }

    /// The outcome of a write step: through, or still waiting and within the limit.
    fn progress<R>(&mut self, polled: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        let limit = self.limit;
        let timer = match (&mut self.timer, self.waiting) {
            (Some(timer), true) => timer,
            (Some(timer), false) => {
                timer.as_mut().reset(tokio::time::Instant::now() + limit);
                timer
            }
            (timer @ None, _) => timer.insert(Box::pin(tokio::time::sleep(limit))),
        };
        self.waiting = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing of the answer for {limit:?} ([limits] send_timeout)"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writes_to_a_client_that_reads_nothing_fail_after_the_limit() {
        // A pipe of 1 KiB that nobody reads.
        let (near, _far) = tokio::io::duplex(1024);
        let mut stream = SendTimeout::new(near, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let err = stream.write_all(&[0u8; 4096]).await.expect_err("the write waits for ever");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("send_timeout"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut stream = SendTimeout::new(near, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 8192 {
                // Each read comes within the limit, the whole takes far longer than it.
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += tokio::io::AsyncReadExt::read(&mut far, &mut buf).await.unwrap();
            }
            total
        });
        stream.write_all(&[0u8; 8192]).await.expect("a reader that keeps up, if slowly");
        assert_eq!(reader.await.unwrap(), 8192);
    }
}
