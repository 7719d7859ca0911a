//! Lingering close: when the gateway closes a connection, it first ends its own side and then
//! reads, and throws away, what the client still sends, until the client closes too.
//!
//! Closing a socket that holds unread bytes makes the kernel answer with a reset, and a reset
//! makes the client's kernel drop what it had received and not yet read: the very answer the
//! connection was closed after. An HTTP/2 client sends frames until it has read the GOAWAY (a
//! ping's acknowledgement, a window update), so an answer refusing a connection for good, or the
//! last answer before an idle or stopping connection closes, could be lost that way and the
//! client saw only "connection reset" or "GOAWAY". The reading is bounded in time and bytes, so a
//! client that never closes costs the gateway [`LINGER_TIME`] at most.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closed connection is read from, at most, for its client to close too.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// How much is read and thrown away, at most, before the connection is closed regardless.
const LINGER_BYTES: usize = 256 * 1024;

/// An I/O stream whose shutdown ends the writing side, then reads until the far side has
/// closed (see the module's text). Reading and writing pass straight through.
#[derive(Debug)]
pub struct Linger<T> {
    inner: T,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    Draining { until: Pin<Box<tokio::time::Sleep>>, left: usize },
    Closed,
}

impl<T> Linger<T> {
    /// `inner`, lingering when shut down.
    pub const fn new(inner: T) -> Self {
        Self { inner, state: State::Open }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Linger<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Linger<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Open => {
                    // TLS's close_notify and the TCP FIN: the client reads to its end.
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    let until = Box::pin(tokio::time::sleep(LINGER_TIME));
                    this.state = State::Draining { until, left: LINGER_BYTES };
                }
                State::Draining { until, left } => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() && buf.filled().len() < *left => {
                            *left -= buf.filled().len();
                        }
                        // The client's end (or too much, or an error): nothing more to wait for.
                        Ok(()) | Err(_) => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A pair of loopback TCP streams, the first wrapped.
    async fn pair() -> (Linger<tokio::net::TcpStream>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (Linger::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn a_closed_connection_delivers_its_last_answer_though_the_client_sent_more() {
        let (mut server, mut client) = pair().await;
        // The client has sent bytes the server never reads, as an HTTP/2 client sends frames
        // until it has read the GOAWAY.
        client.write_all(&[7u8; 10_000]).await.unwrap();
        // The server's last answer is more than the sockets' buffers hold, so part of it is
        // still to be sent when the server closes.
        let answer = vec![1u8; 8 << 20];
        let expected = answer.len();
        let closing = tokio::spawn(async move {
            server.write_all(&answer).await.unwrap();
            server.shutdown().await.unwrap();
            drop(server);
        });
        // A slow reader: the server's last bytes wait in its socket when it closes.
        let (mut received, mut chunk) = (0, vec![0u8; 64 * 1024]);
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            match client.read(&mut chunk).await.expect("the whole answer, not a reset") {
                0 => break,
                n => received += n,
            }
        }
        assert_eq!(received, expected);
        drop(client);
        tokio::time::timeout(Duration::from_secs(1), closing).await.expect("ends once the client closed").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_closes_is_waited_for_a_bounded_time() {
        let (mut server, _client) = pair().await;
        let started = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER_TIME);
    }
}
