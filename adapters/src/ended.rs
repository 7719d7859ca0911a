//! Why an upstream connection ended, kept for the request that it failed.
//!
//! hyper's client tells a request whose connection ended before it could be sent only
//! "connection was not ready": the error that ended the connection went to the connection's own
//! task. Under TLS 1.3 that is how a server refusing the gateway's certificate is usually seen,
//! since its alert comes after the client has finished the handshake, so the operator would lose
//! the one fact that says what to fix. Each connection therefore keeps its first I/O error in a
//! slot that hyper-util hands back with the request's error (`Error::connect_info`, through
//! [`Connected::extra`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};

use crate::http::{ConnectFault, root_cause};

/// What ended a connection: its first I/O error, in words and by the side it points to.
#[derive(Debug)]
pub struct Ending {
    /// The error's innermost cause, as [`root_cause`] words it.
    pub reason: String,
    /// The side it points to, when it tells.
    pub fault: Option<ConnectFault>,
}

/// The slot for one connection's [`Ending`], shared by the connection and its `Connected` info.
#[derive(Debug, Clone, Default)]
pub struct EndingSlot(Arc<OnceLock<Ending>>);

impl EndingSlot {
    /// What ended the connection, once it has ended with an error.
    pub fn get(&self) -> Option<&Ending> {
        self.0.get()
    }

    /// The slot of the connection a hyper-util client error happened on, if any.
    pub fn of_error(err: &hyper_util::client::legacy::Error) -> Option<Self> {
        let mut extensions = http::Extensions::new();
        err.connect_info()?.get_extras(&mut extensions);
        extensions.remove::<Self>()
    }

    fn keep(&self, err: &std::io::Error) {
        let err: &(dyn std::error::Error + 'static) = err;
        if self.0.get().is_none() {
            let _ = self.0.set(Ending { reason: root_cause(err), fault: ConnectFault::of(err) });
        }
    }
}

/// A connector whose connections keep what ended them.
#[derive(Debug, Clone)]
pub struct KeepEnding<C>(pub C);

impl<C> tower::Service<http::Uri> for KeepEnding<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = Kept<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(Kept { io: connecting.await?, slot: EndingSlot::default() }) })
    }
}

/// A connection that keeps its first I/O error.
#[derive(Debug)]
pub struct Kept<S> {
    io: S,
    slot: EndingSlot,
}

impl<S> Kept<S> {
    fn seen<T>(&self, result: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            self.slot.keep(e);
        }
        result
    }
}

impl<S: hyper::rt::Read + Unpin> hyper::rt::Read for Kept<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        self.seen(result)
    }
}

impl<S: hyper::rt::Write + Unpin> hyper::rt::Write for Kept<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.seen(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.seen(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.seen(result)
    }
}

impl<S: Connection> Connection for Kept<S> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.slot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_kept_and_found_again_through_connected() {
        let slot = EndingSlot::default();
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        slot.keep(&alert);
        slot.keep(&std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        let ending = slot.get().expect("kept");
        assert_eq!(ending.fault, Some(ConnectFault::RefusedByFarSide));
        assert!(ending.reason.contains("CertificateRequired"), "{}", ending.reason);

        let mut extensions = http::Extensions::new();
        Connected::new().extra(slot.clone()).get_extras(&mut extensions);
        let found = extensions.remove::<EndingSlot>().expect("the slot rides in Connected's extras");
        assert!(Arc::ptr_eq(&found.0, &slot.0));
    }

    /// A connection whose reads fail as a TLS stream does on the far side's alert.
    struct Alerting;

    impl hyper::rt::Read for Alerting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
            Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, alert)))
        }
    }

    impl Connection for Alerting {
        fn connected(&self) -> Connected {
            Connected::new()
        }
    }

    #[test]
    fn a_failed_read_is_kept_for_the_connections_requests() {
        let mut conn = Kept { io: Alerting, slot: EndingSlot::default() };
        let mut extensions = http::Extensions::new();
        conn.connected().get_extras(&mut extensions);
        let slot = extensions.remove::<EndingSlot>().expect("the connection hands out its slot");
        assert!(slot.get().is_none(), "nothing has failed yet");

        let mut bytes = [0u8; 16];
        let mut buf = hyper::rt::ReadBuf::new(&mut bytes);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let read = hyper::rt::Read::poll_read(Pin::new(&mut conn), &mut cx, buf.unfilled());
        assert!(matches!(read, Poll::Ready(Err(_))), "the error is passed on as it was");
        let ending = slot.get().expect("and kept");
        assert_eq!(ending.fault, Some(ConnectFault::RefusedByFarSide));
    }
}
