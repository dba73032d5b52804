//! One connection: the gate every byte from the client passes before hyper
//! sees it, the clock that drops a slow or idle client, and the bodies that
//! tell that clock when a request is in flight.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head::{self, Framing, Head};

/// What the clock of one connection watches.
pub(super) struct ConnState {
    phase: Mutex<Phase>,
    changed: tokio::sync::Notify,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

struct Phase {
    /// When the head being read began (or the connection was accepted,
    /// for its first head): the whole head must arrive within the header
    /// timeout.
    head_started: Option<Instant>,
    /// A request is being answered; no deadline of the clock applies (the
    /// request body has its own idle timeout; a slow handler or a long
    /// download is not the client's fault).
    in_flight: bool,
    /// When the last response finished.
    idle_since: Instant,
    /// The reader waiting for the in-flight response before refusing a head.
    reader: Option<Waker>,
    /// The request in flight stopped receiving its body.
    body_timed_out: bool,
}

impl ConnState {
    pub(super) fn new(header_timeout: Duration, keepalive_timeout: Duration) -> ConnState {
        let now = Instant::now();
        ConnState {
            phase: Mutex::new(Phase {
                head_started: Some(now),
                in_flight: false,
                idle_since: now,
                reader: None,
                body_timed_out: false,
            }),
            changed: tokio::sync::Notify::new(),
            header_timeout,
            keepalive_timeout,
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self) -> Option<Instant> {
        let p = self.phase();
        match (p.in_flight, p.head_started) {
            // A pipelined head's clock starts when the response before it
            // is done (see `InFlight::drop`).
            (true, _) => None,
            (false, Some(t)) => Some(t + self.header_timeout),
            (false, None) => Some(p.idle_since + self.keepalive_timeout),
        }
    }

    fn head_started(&self) {
        let mut p = self.phase();
        if p.head_started.is_none() {
            p.head_started = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }

    fn head_done(&self) {
        let mut p = self.phase();
        p.head_started = None;
        // Until hyper hands the request on, the connection counts as busy
        // from now, not idle since the last response.
        p.idle_since = Instant::now();
        drop(p);
        self.changed.notify_one();
    }

    /// Marks a request in flight until the returned guard is dropped (with
    /// the response body, once hyper has sent it).
    pub(super) fn begin_request(self: &Arc<Self>) -> InFlight {
        let mut p = self.phase();
        p.in_flight = true;
        p.body_timed_out = false;
        drop(p);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    pub(super) fn body_timed_out(&self) -> bool {
        self.phase().body_timed_out
    }

    /// Resolves when the clock runs out: a head took longer than the
    /// header timeout, or the connection sat idle longer than the
    /// keep-alive timeout.
    pub(super) async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some(d) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(d) => {
                            if self.deadline().is_some_and(|d| d <= Instant::now()) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A request in flight; see [`ConnState::begin_request`].
pub(super) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut p = self.0.phase();
        p.in_flight = false;
        p.idle_since = Instant::now();
        if p.head_started.is_some() {
            p.head_started = Some(p.idle_since);
        }
        let reader = p.reader.take();
        drop(p);
        self.0.changed.notify_one();
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// Where the gate is in the stream of requests.
enum Mode {
    /// Reading a head into `Gate::buf`.
    Head,
    /// Passing this many more body bytes.
    Body(u64),
    /// A chunked body: everything passes from here on, and the response
    /// closes the connection (the gate does not decode chunks).
    Through,
    /// The head was refused: hyper reads end-of-stream, and the answer is
    /// written when hyper shuts the connection down.
    Refused(Box<Refused>),
}

/// The answer to a refused head, and the lingering close after it.
struct Refused {
    answer: Bytes,
    written: usize,
    /// Our side is shut down (FIN sent).
    shut: bool,
    /// What the client still sends is read and discarded, for a while, so
    /// that closing with unread data (which sends a reset, and can make
    /// the client lose the answer) is avoided for a client that is still
    /// sending its oversized head.
    linger: Option<Pin<Box<Sleep>>>,
    drained: usize,
}

/// How long, and how much, a refused client's remaining bytes are read.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// The connection as hyper sees it: reads pass through the head check.
pub(super) struct Gate<S> {
    io: S,
    state: Arc<ConnState>,
    mode: Mode,
    /// Read from the client, not yet classified.
    buf: Vec<u8>,
    /// Classified, waiting for hyper to read it.
    out: Bytes,
    /// The error body's shape for a path.
    style_for: fn(&str) -> crate::ErrorStyle,
    /// How long a write may make no progress.
    send_timeout: Duration,
    /// Started when a write or flush returns `Pending`, cleared when one
    /// completes: the client has read nothing since.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<S> Gate<S> {
    pub(super) fn new(
        io: S,
        state: Arc<ConnState>,
        style_for: fn(&str) -> crate::ErrorStyle,
        send_timeout: Duration,
    ) -> Gate<S> {
        Gate {
            io,
            state,
            mode: Mode::Head,
            buf: Vec::new(),
            out: Bytes::new(),
            style_for,
            send_timeout,
            write_stall: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(dst.remaining());
                dst.put_slice(&this.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match &mut this.mode {
                Mode::Refused(_) => {
                    // Hyper may still be answering a pipelined request:
                    // end the stream once it is done.
                    let mut p = this.state.phase();
                    if p.in_flight {
                        p.reader = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    return Poll::Ready(Ok(()));
                }
                Mode::Body(0) => this.mode = Mode::Head,
                Mode::Body(_) | Mode::Through if !this.buf.is_empty() => {
                    let n = match &this.mode {
                        Mode::Body(left) => this.buf.len().min(*left as usize),
                        _ => this.buf.len(),
                    };
                    this.out = Bytes::copy_from_slice(&this.buf[..n]);
                    this.buf.drain(..n);
                    if let Mode::Body(left) = &mut this.mode {
                        *left -= n as u64;
                    }
                }
                Mode::Through => return Pin::new(&mut this.io).poll_read(cx, dst),
                Mode::Body(left) => {
                    // Read no further than the body: what follows is the
                    // next head, which is checked first.
                    if *left >= dst.remaining() as u64 {
                        let before = dst.filled().len();
                        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, dst))?;
                        *left -= (dst.filled().len() - before) as u64;
                        return Poll::Ready(Ok(()));
                    }
                    // The body's last bytes: at most `left` (< the room hyper
                    // offers), read through a small buffer of that size.
                    let mut tail = vec![0u8; *left as usize];
                    let mut rb = ReadBuf::new(&mut tail);
                    std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    dst.put_slice(rb.filled());
                    *left -= n as u64;
                    return Poll::Ready(Ok(()));
                }
                Mode::Head => {
                    if !this.buf.is_empty() {
                        this.state.head_started();
                        match head::inspect(&this.buf) {
                            Head::Partial => {}
                            Head::Complete { len, framing } => {
                                this.out = Bytes::copy_from_slice(&this.buf[..len]);
                                this.buf.drain(..len);
                                // A large head's buffer is not kept for the
                                // life of a keep-alive connection.
                                this.buf.shrink_to(8192);
                                this.state.head_done();
                                this.mode = match framing {
                                    Framing::Empty => Mode::Body(0),
                                    Framing::Length(n) => Mode::Body(n),
                                    Framing::Chunked => Mode::Through,
                                };
                                continue;
                            }
                            Head::Refused(r) => {
                                tracing::info!(
                                    status = r.status.as_u16(),
                                    "request refused before routing"
                                );
                                this.state.head_done();
                                this.buf = Vec::new();
                                this.mode = Mode::Refused(Box::new(Refused {
                                    answer: super::refusal(&r, (this.style_for)(&r.path)),
                                    written: 0,
                                    shut: false,
                                    linger: None,
                                    drained: 0,
                                }));
                                continue;
                            }
                        }
                    }
                    let mut chunk = [0u8; 8192];
                    let mut rb = ReadBuf::new(&mut chunk);
                    std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
                    if rb.filled().is_empty() {
                        // End of stream; a partial head is dropped with it.
                        return Poll::Ready(Ok(()));
                    }
                    this.buf.extend_from_slice(rb.filled());
                }
            }
        }
    }
}

/// A write's outcome, with the send timeout applied: a write that stays
/// `Pending` (the client reads nothing) for `limit` fails with `TimedOut`;
/// any completed write restarts the clock.
fn write_progress<T>(
    stall: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
    r: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match r {
        Poll::Ready(r) => {
            *stall = None;
            Poll::Ready(r)
        }
        Poll::Pending => {
            let timer = stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *stall = None;
            tracing::debug!("closing a connection whose client stopped reading");
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            )))
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        write_progress(&mut this.write_stall, this.send_timeout, cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        write_progress(&mut this.write_stall, this.send_timeout, cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        write_progress(&mut this.write_stall, this.send_timeout, cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Everything hyper wrote is out: the refusal goes last.
        let Mode::Refused(r) = &mut this.mode else {
            return Pin::new(&mut this.io).poll_shutdown(cx);
        };
        while r.written < r.answer.len() {
            let w = Pin::new(&mut this.io).poll_write(cx, &r.answer[r.written..]);
            let n = std::task::ready!(write_progress(
                &mut this.write_stall,
                this.send_timeout,
                cx,
                w
            ))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            r.written += n;
        }
        if !r.shut {
            let f = Pin::new(&mut this.io).poll_flush(cx);
            std::task::ready!(write_progress(
                &mut this.write_stall,
                this.send_timeout,
                cx,
                f
            ))?;
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            r.shut = true;
        }
        let linger = r
            .linger
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        let mut scratch = [0u8; 8192];
        while r.drained < LINGER_BYTES {
            if linger.as_mut().poll(cx).is_ready() {
                break;
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => r.drained += rb.filled().len(),
                // End of stream or an error: the client is done.
                Poll::Ready(_) => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The error a request body yields when the client stops sending it.
#[derive(Debug)]
pub(super) struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client stopped sending the request body")
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body that fails when no data arrives for `idle` while it is
/// being read, or when it arrives slower than `min_rate` bytes per second
/// on average: it must be whole by `start + idle + received / min_rate`
/// (like Apache mod_reqtimeout's MinRate), so a client trickling a byte
/// just within the idle timeout is still cut. An upload that keeps sending
/// at a reasonable rate runs as long as it needs.
pub(super) struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Bytes per second; 0: no minimum.
    min_rate: u64,
    /// When the body was first read.
    started: Option<Instant>,
    /// Data bytes received so far.
    received: u64,
    /// When data last arrived (or the body was first read).
    last_progress: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    state: Arc<ConnState>,
    failed: bool,
}

impl<B> IdleBody<B> {
    pub(super) fn new(
        inner: B,
        idle: Duration,
        min_rate: u64,
        state: Arc<ConnState>,
    ) -> IdleBody<B> {
        IdleBody {
            inner,
            idle,
            min_rate,
            started: None,
            received: 0,
            last_progress: None,
            timer: None,
            state,
            failed: false,
        }
    }

    /// When the body fails if nothing more arrives.
    fn deadline(&self, started: Instant, last: Instant) -> Instant {
        let idle = last + self.idle;
        if self.min_rate == 0 {
            return idle;
        }
        let allowed = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        match (started + self.idle).checked_add(allowed) {
            Some(by_rate) => idle.min(by_rate),
            None => idle,
        }
    }
}

impl<B> HttpBody for IdleBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            // Not a clean end: the body stays failed.
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        let now = Instant::now();
        let started = *this.started.get_or_insert(now);
        let last = *this.last_progress.get_or_insert(now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                if let Some(Ok(f)) = &frame {
                    if let Some(d) = f.data_ref() {
                        this.received += d.len() as u64;
                        this.last_progress = Some(Instant::now());
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = this.deadline(started, last);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.failed = true;
                this.state.phase().body_timed_out = true;
                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A failed body has not ended: reading it again yields the error.
        !self.failed && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until hyper has sent
/// it and dropped it.
pub(super) struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(super) fn new(inner: Body, in_flight: InFlight) -> TrackedBody {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose data never arrives.
    struct Never;

    impl HttpBody for Never {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_timed_out_body_stays_failed_and_never_looks_complete() {
        let state = Arc::new(ConnState::new(
            Duration::from_secs(10),
            Duration::from_secs(10),
        ));
        let mut body = IdleBody::new(Never, Duration::from_millis(50), 500, state.clone());
        for _ in 0..3 {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let err = frame
                .expect("an error, not the end of the body")
                .expect_err("an error, not data");
            assert!(err.is::<BodyTimeout>(), "{err}");
            assert!(!body.is_end_stream());
        }
        assert!(state.body_timed_out());
    }
}
