//! The accept loop for plain HTTP and HTTPS alike: HTTP/1.1 and HTTP/2 through
//! hyper-util, graceful shutdown, and the connection-level limits that keep slow clients
//! from holding connections forever.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Connection limits (see `docs/security.md#limits`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// From accept until the first request's header is complete (a TLS handshake and
    /// the HTTP/1-or-2 detection included), and for each later HTTP/1 header.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long fails.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 ones
    /// too, whatever PINGs they answer).
    pub idle_timeout: Duration,
    /// A write that cannot proceed for this long (a client that stopped reading a
    /// download) closes the connection.
    pub write_timeout: Duration,
    /// Most connections open at once; `None`: half the open-file limit.
    pub max_connections: Option<usize>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(60),
            max_connections: None,
        }
    }
}

/// Raises this process's open-file limit to its hard limit (as Go's runtime does) and
/// returns the connection cap that leaves half of it for files and upstreams.
pub fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 512;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let files = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
    (files / 2).clamp(16, 100_000)
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `shutdown`
/// completes; then waits for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cap = limits
        .max_connections
        .unwrap_or_else(default_max_connections);
    let open = Connections::new(cap);
    tracing::debug!(max_connections = cap, "accepting");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = open.admit() else {
            tracing::warn!(%peer, max_connections = cap, "too many connections, all busy: closing the new one");
            continue;
        };
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        let _ = tcp.set_nodelay(true);
        let io = WriteTimeout::new(tcp, limits.write_timeout);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                connection(io, peer, app, limits, stop, slot, deadline).await;
                return;
            };
            let handshake = tokio::select! {
                h = tokio::time::timeout_at(deadline, acceptor.accept(io)) => h,
                _ = slot.evicted.notified() => return,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if *stop.borrow_and_update() {
                return;
            }
            connection(tls, peer, app, limits, stop, slot, deadline).await;
        });
    }
    // Every connection finishes its requests and closes (the caller bounds the wait).
    let _ = stop_tx.send(true);
    drop(listener);
    open.drained().await;
    Ok(())
}

async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
    slot: Arc<Slot>,
    first_request_by: tokio::time::Instant,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let (activity, slot) = (activity.clone(), slot.clone());
        hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            slot.served.store(true, Ordering::Relaxed);
            let busy = activity.begin();
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let mut app = app.clone();
            async move {
                use tower::Service;
                let response = app.call(req.map(axum::body::Body::new)).await?;
                // The request counts as in flight until its response body is sent.
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| axum::body::Body::new(Busy { body, _busy: busy })),
                )
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let no_request = async {
        tokio::time::sleep_until(first_request_by).await;
        if slot.served.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(no_request);
    let idle = activity.idle_for(limits.idle_timeout);
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = &mut no_request => {
                tracing::debug!(%peer, "no request within the header timeout: closed");
                return;
            }
            _ = slot.evicted.notified() => {
                tracing::debug!(%peer, "closed to make room: it had sent no request");
                return;
            }
            // Closed politely (an HTTP/2 GOAWAY), so clients know to connect again.
            _ = &mut idle, if !closing => {
                tracing::debug!(%peer, "idle: closed");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.wait_for(|stopping| *stopping), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The open connections, bounded. At the cap, a new connection takes the place of the
/// oldest one that has not sent a request yet (a silent socket cannot keep real clients
/// out); if every connection is busy, the new one is closed at once.
struct Connections {
    cap: usize,
    /// Kept outside `waiting`'s lock: a slot may be dropped while that lock is held.
    open: AtomicUsize,
    /// Connections in accept order that had not sent a request when admitted.
    waiting: std::sync::Mutex<VecDeque<std::sync::Weak<Slot>>>,
    /// Told when the last connection closes.
    emptied: tokio::sync::Notify,
}

/// One admitted connection; dropping it frees its place.
struct Slot {
    owner: Arc<Connections>,
    /// It has sent a request.
    served: AtomicBool,
    /// Told to close to make room.
    evicted: tokio::sync::Notify,
}

impl Connections {
    fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap,
            open: AtomicUsize::new(0),
            waiting: std::sync::Mutex::default(),
            emptied: tokio::sync::Notify::new(),
        })
    }

    fn admit(self: &Arc<Self>) -> Option<Arc<Slot>> {
        let mut waiting = self.waiting.lock().expect("connections lock");
        let silent =
            |w: &std::sync::Weak<Slot>| w.upgrade().filter(|s| !s.served.load(Ordering::Relaxed));
        // Forget the front entries that have closed or been served.
        while waiting.front().is_some_and(|w| silent(w).is_none()) {
            waiting.pop_front();
        }
        if self.open.load(Ordering::Relaxed) >= self.cap {
            let victim = std::iter::from_fn(|| waiting.pop_front()).find_map(|w| silent(&w))?;
            victim.evicted.notify_one();
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            owner: self.clone(),
            served: AtomicBool::new(false),
            evicted: tokio::sync::Notify::new(),
        });
        waiting.push_back(Arc::downgrade(&slot));
        Some(slot)
    }

    /// Completes once no connection is open.
    async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // No lock here: the last reference may be dropped inside `admit`.
        if self.owner.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.owner.emptied.notify_waiters();
        }
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last_end: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_end: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> BusyGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// Completes once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *self.last_end.lock().expect("activity lock");
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && since.elapsed() >= limit {
                return;
            }
            let wait = if busy { limit } else { limit - since.elapsed() };
            tokio::time::sleep(wait).await;
        }
    }
}

struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.last_end.lock().expect("activity lock") = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Busy {
    body: axum::body::Body,
    _busy: BusyGuard,
}

impl http_body::Body for Busy {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose writes fail once they have been unable to proceed for `limit`: a
/// client that stops reading a download cannot hold its connection (and the blob's
/// file) for ever. Reads are untouched (the header and body timeouts bound them).
struct WriteTimeout<IO> {
    io: IO,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> WriteTimeout<IO> {
    fn new(io: IO, limit: Duration) -> WriteTimeout<IO> {
        WriteTimeout {
            io,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome on, timing how long it has been pending.
    fn timed<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        outcome: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {}s", limit.as_secs_f32()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let outcome = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.timed(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let outcome = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.timed(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let outcome = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.timed(cx, outcome)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let outcome = std::pin::Pin::new(&mut self.io).poll_shutdown(cx);
        self.timed(cx, outcome)
    }
}

/// The middleware that gives every request body an idle timeout: a client that stops
/// sending in the middle of an upload gets an error instead of holding the connection
/// and the upload session forever. (A slow but steady client is never cut off.)
pub async fn idle_bodies(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body::Body as _;
    let request = if request.body().is_end_stream() {
        request
    } else {
        request.map(|inner| {
            axum::body::Body::new(IdleBody {
                inner,
                timeout,
                deadline: Box::pin(tokio::time::sleep(timeout)),
            })
        })
    };
    next.run(request).await
}

struct IdleBody {
    inner: axum::body::Body,
    timeout: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for IdleBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(std::io::Error::other)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let secs = self.timeout.as_secs_f32();
                    Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the client sent nothing for {secs}s"),
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
