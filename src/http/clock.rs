//! How long a connection may take at each step, told from what it does.
//!
//! hyper's own header timer starts when the previous answer is written, so
//! it cannot tell a kept-alive connection that is quiet (allowed for
//! `idle_timeout`) from one that trickles a request head in (allowed
//! `header_timeout`). The connection's [`Clock`] can: it sees every read
//! ([`Watched`]), every request whose head is in, and every answer
//! finished ([`Answered`]), and gives the instant at which the connection
//! is to be closed. A request body has its own bound ([`Deadline`]): a body
//! cut off by it ends in an error, never in a short body that looks whole.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::BoxError;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::config::format_duration;

/// Where a connection stands, for its timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connected, no request yet: its head must be in within the header
    /// timeout of the connect (the TLS handshake included).
    Opened { at: Instant },
    /// Between requests, and nothing of the next one read yet.
    Idle { since: Instant },
    /// The next request's first bytes came at `from`; its head must follow.
    Head { from: Instant },
    /// `requests` heads are in and not yet answered in full.
    Serving { requests: usize },
}

/// The timeouts of one connection.
#[derive(Debug)]
pub struct Clock {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Clock {
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> Arc<Clock> {
        Arc::new(Clock { phase: Mutex::new(Phase::Opened { at: Instant::now() }), changed: Notify::new(), header_timeout, idle_timeout })
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, mut phase: MutexGuard<'_, Phase>, next: Phase) {
        if *phase != next {
            *phase = next;
            self.changed.notify_one();
        }
    }

    /// Bytes came in at `now`.
    fn read(&self, now: Instant) {
        let phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            self.set(phase, Phase::Head { from: now });
        }
    }

    /// A request's head is in; it counts as being answered until the
    /// returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> Answering {
        let phase = self.phase();
        let requests = match *phase {
            Phase::Serving { requests } => requests + 1,
            _ => 1,
        };
        self.set(phase, Phase::Serving { requests });
        Answering(Arc::clone(self))
    }

    fn answered(&self, now: Instant) {
        let phase = self.phase();
        let next = match *phase {
            Phase::Serving { requests } if requests > 1 => Phase::Serving { requests: requests - 1 },
            _ => Phase::Idle { since: now },
        };
        self.set(phase, next);
    }

    /// When the connection is to be closed if nothing changes; `None` while
    /// a request is being answered.
    pub fn deadline(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Opened { at } => Some(at + self.header_timeout),
            Phase::Idle { since } => Some(since + self.idle_timeout),
            Phase::Head { from } => Some(from + self.header_timeout),
            Phase::Serving { .. } => None,
        }
    }

    /// Resolves at the next change of phase (or at once if one happened
    /// since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// A request being answered: dropped once its answer is written (or
/// given up).
#[derive(Debug)]
pub struct Answering(Arc<Clock>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answered(Instant::now());
    }
}

/// A connection's byte stream, telling its [`Clock`] of every read.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, clock: Arc<Clock>) -> Watched<S> {
        Watched { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.read(Instant::now());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An answer's body, holding its request's [`Answering`] until hyper has
/// written it and drops it.
pub struct Answered {
    body: axum::body::Body,
    _answering: Answering,
}

impl Answered {
    pub fn new(body: axum::body::Body, answering: Answering) -> Answered {
        Answered { body, _answering: answering }
    }
}

impl Body for Answered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body not received in full within its time.
#[derive(Debug, thiserror::Error)]
#[error("not all of it arrived within {} of the request head (body_timeout)", format_duration(.0.as_millis() as u64))]
pub struct BodyTimeout(Duration);

/// A request body that must arrive in full within `timeout` of its head:
/// past that, reading it fails with [`BodyTimeout`].
pub struct Deadline<B> {
    body: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<B> Deadline<B> {
    pub fn new(body: B, timeout: Duration) -> Deadline<B> {
        Deadline { body, timeout, sleep: Box::pin(tokio::time::sleep(timeout)) }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending if this.sleep.as_mut().poll(cx).is_ready() => Poll::Ready(Some(Err(BodyTimeout(this.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn the_deadline_follows_the_phase() {
        let clock = Clock::new(HEADER, IDLE);
        let Some(opened) = clock.deadline().map(|deadline| deadline - HEADER) else { panic!("a new connection has a deadline") };
        clock.read(opened + Duration::from_secs(5));
        assert_eq!(clock.deadline(), Some(opened + HEADER), "bytes of the first head do not extend it");
        let first = clock.request();
        let second = clock.request();
        assert_eq!(clock.deadline(), None, "no deadline while answering");
        drop(first);
        assert_eq!(clock.deadline(), None, "a pipelined request is still being answered");
        let before = Instant::now();
        drop(second);
        let idle = clock.deadline().expect("an answered connection idles") - IDLE;
        assert!(idle >= before && idle <= Instant::now(), "a quiet kept-alive connection may idle from its last answer");
        clock.read(idle + Duration::from_secs(30));
        assert_eq!(clock.deadline(), Some(idle + Duration::from_secs(30) + HEADER), "a started head is due a header timeout later");
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_ends_in_an_error_not_in_a_short_body() {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        sender.send(Ok(Frame::data(Bytes::from_static(b"0123456789")))).await.unwrap();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) });
        let mut body = Deadline::new(StreamBody::new(Box::pin(stream)), Duration::from_millis(50));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"0123456789"));
        let error = body.frame().await.expect("an error, not the end").unwrap_err();
        assert_eq!(error.to_string(), "not all of it arrived within 50ms of the request head (body_timeout)");
        drop(sender);
    }
}
