//! Lets the answers an HTTP/2 connection has ready at about the same moment leave in one write.
//!
//! An HTTP/2 connection is one task and each of its streams another. A stream whose answer is
//! ready hands its frames to the connection and wakes it, and tokio runs a task woken that way
//! next, before the other streams already waiting to run. h2 then writes and flushes that one
//! answer (it flushes after every DATA frame it does not copy, those over 256 bytes), so each
//! answer went out in a write, a TLS record and a TCP segment of its own, even when dozens were
//! released together, as a `sync` audit batch releases them.
//!
//! [`Coalesce`] keeps what is written in a buffer. The first flush of a batch leaves it there
//! and wakes the connection's task, which tokio then queues behind the tasks already ready (a
//! task woken while it runs is treated as one that yielded). On the task's next turn, counted
//! by [`Turns`], the flush writes the buffer out: by then the other streams have run and h2 has
//! handed over their frames too. An answer waits one turn of the scheduler at most.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes kept back before they are written out regardless.
const LIMIT: usize = 64 * 1024;

/// The buffer reserved when a turn starts to gather; a batch of small answers fits in it.
const RESERVE: usize = 16 * 1024;

/// How many turns a connection's task has had: [`Turns::count`] wraps the future the task
/// runs, and its [`Coalesce`] reads the count to tell a new turn from the one it held data in.
#[derive(Debug, Clone, Default)]
pub struct Turns(Arc<AtomicU64>);

impl Turns {
    /// `future`, counting each time it is polled.
    pub fn count<F: Future>(&self, future: F) -> Counted<F> {
        Counted { turns: self.clone(), future }
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A future that counts its polls; see [`Turns::count`]. A type of its own, not an `async`
    /// block, so that the (large) future it wraps is stored once: moved into an async block and
    /// pinned there, a connection's future was stored twice, 5 KiB more per idle connection.
    #[derive(Debug)]
    pub struct Counted<F> {
        turns: Turns,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // One task polls both this and the `Coalesce`, so ordering is the thread's own.
        this.turns.0.fetch_add(1, Ordering::Relaxed);
        this.future.poll(cx)
    }
}

/// An I/O stream whose writes are gathered for one turn of the connection's task.
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    buf: Vec<u8>,
    /// Of `buf`, the bytes already written out.
    sent: usize,
    turns: Turns,
    /// The turn in which a flush left `buf` held back.
    held: Option<u64>,
}

impl<T> Coalesce<T> {
    /// `inner`, gathering writes for the task whose future `turns` counts.
    pub fn new(inner: T, turns: Turns) -> Self {
        Self { inner, buf: Vec::new(), sent: 0, turns, held: None }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out what is held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // An idle connection keeps no buffer (1.2 KiB less per idle HTTP/2 connection than
        // keeping a small one); the next turn that gathers reserves one.
        self.buf = Vec::new();
        self.sent = 0;
        self.held = None;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: a write that would take the buffer past [`LIMIT`]
    /// writes the buffer out first. Returns whether the bytes should rather be written straight
    /// through, being a buffer's worth on their own.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + len > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        let straight = len >= LIMIT;
        if !straight && self.buf.capacity() == 0 {
            self.buf.reserve(RESERVE.max(len));
        }
        Poll::Ready(Ok(straight))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.buf.len() {
            let turn = this.turns.now();
            match this.held {
                None => {
                    // Held for a turn. Woken while it runs, the task is queued behind the tasks
                    // already ready instead of running again at once.
                    this.held = Some(turn);
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Some(held) if held == turn => return Poll::Ready(Ok(())),
                Some(_) => ready!(this.poll_drain(cx))?,
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// What the client end can read without waiting.
    fn readable(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut got = vec![0; 64];
        match client.read(&mut got).now_or_never() {
            Some(Ok(n)) => got[..n].to_vec(),
            _ => Vec::new(),
        }
    }

    #[tokio::test]
    async fn flushed_writes_wait_one_turn_and_then_leave_together() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let turns = Turns::default();
        let mut io = Coalesce::new(server, turns.clone());
        let got = turns
            .count(async {
                io.write_all(b"first ").await.unwrap();
                io.flush().await.unwrap();
                io.write_all(b"second").await.unwrap();
                io.flush().await.unwrap();
                let before = readable(&mut client);
                tokio::task::yield_now().await;
                io.flush().await.unwrap();
                (before, readable(&mut client))
            })
            .await;
        assert_eq!(got.0, b"", "nothing leaves in the turn it was flushed in");
        assert_eq!(got.1, b"first second", "both writes leave together on the next turn");
    }

    #[test]
    fn a_counted_future_holds_what_it_wraps_once() {
        let wrapped = async {
            let block = [1u8; 4096];
            tokio::task::yield_now().await;
            block.iter().map(|&b| usize::from(b)).sum::<usize>()
        };
        let alone = std::mem::size_of_val(&wrapped);
        let counted = Turns::default().count(wrapped);
        assert!(alone >= 4096);
        assert!(
            std::mem::size_of_val(&counted) < alone + 64,
            "{} bytes for a {alone}-byte future",
            std::mem::size_of_val(&counted)
        );
    }

    #[tokio::test]
    async fn shutdown_and_large_writes_do_not_wait() {
        let (mut client, server) = tokio::io::duplex(4 * LIMIT);
        let turns = Turns::default();
        let mut io = Coalesce::new(server, turns.clone());
        turns
            .count(async {
                io.write_all(b"held").await.unwrap();
                io.flush().await.unwrap();
                // A buffer's worth on its own goes straight through, after what was held.
                io.write_all(&vec![7; LIMIT]).await.unwrap();
                io.shutdown().await.unwrap();
            })
            .await;
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(&all[..4], b"held");
        assert_eq!(all.len(), 4 + LIMIT);
    }
}
