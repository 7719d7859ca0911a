//! Whether a request body streamed to a service was still arriving from the caller: a wait for
//! the answer that runs out while the service waits on a slow caller is the caller's doing,
//! not the service's, and must neither be blamed on the service nor count against its health.
//! Nor must an attempt that broke because the body did (over the service's limit, or cut off by
//! the caller).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

const SENDING: u8 = 0;
const WAITING_ON_CALLER: u8 = 1;
const ENDED: u8 = 2;
const BROKE: u8 = 3;

/// What a [`Watched`] body was last doing, shared with whoever sent it.
#[derive(Debug, Clone, Default)]
pub struct Arrival(Arc<AtomicU8>);

impl Arrival {
    /// Whether the body was waiting for the caller's next bytes when last asked for more: the
    /// service was reading it, and the caller was not sending.
    pub fn waiting_on_caller(&self) -> bool {
        self.0.load(Ordering::Acquire) == WAITING_ON_CALLER
    }

    /// Whether the body ended in an error (over the limit the gateway holds it to, or broken off
    /// by the caller): an attempt that failed with it failed because of it.
    pub fn broke(&self) -> bool {
        self.0.load(Ordering::Acquire) == BROKE
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }
}

/// A body whose [`Arrival`] says whether it waits on its caller.
#[derive(Debug)]
pub struct Watched<B> {
    inner: B,
    arrival: Arrival,
}

impl<B> Watched<B> {
    /// Wraps `inner`, reporting to the returned [`Arrival`].
    pub fn new(inner: B) -> (Self, Arrival) {
        let arrival = Arrival::default();
        (Self { inner, arrival: arrival.clone() }, arrival)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        this.arrival.set(match &polled {
            Poll::Pending => WAITING_ON_CALLER,
            Poll::Ready(None) => ENDED,
            Poll::Ready(Some(Err(_))) => BROKE,
            Poll::Ready(Some(_)) if this.inner.is_end_stream() => ENDED,
            Poll::Ready(Some(_)) => SENDING,
        });
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// A body fed by the test, as a caller sends it.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|next| next.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn a_body_tells_whether_it_waits_on_its_caller() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (mut body, arrival) = Watched::new(Fed(rx));
        assert!(!arrival.waiting_on_caller(), "not yet asked for anything");
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert!(body.frame().await.is_some());
        assert!(!arrival.waiting_on_caller(), "it had the bytes asked for");
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), body.frame()).await;
        assert!(next.is_err() && arrival.waiting_on_caller(), "asked for more, which the caller had not sent");
        drop(tx);
        assert!(body.frame().await.is_none());
        assert!(!arrival.waiting_on_caller() && !arrival.broke(), "ended");
    }

    #[tokio::test]
    async fn a_body_tells_whether_it_broke() {
        let frames = [Ok(Frame::data(Bytes::from_static(b"a"))), Err("over the limit")];
        let (mut body, arrival) = Watched::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!arrival.broke(), "a frame came");
        assert!(body.frame().await.unwrap().is_err());
        assert!(arrival.broke() && !arrival.waiting_on_caller(), "its error is the body's");
    }
}
