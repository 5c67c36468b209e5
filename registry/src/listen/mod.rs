//! The accept loop for plain HTTP and HTTPS alike: HTTP/1.1 and HTTP/2 through
//! hyper-util, graceful shutdown, and the connection-level limits that keep slow clients
//! from holding connections forever.

mod connections;
mod write_timeout;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use self::connections::{Activity, Busy, Connections, Slot};
use self::write_timeout::WriteTimeout;

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
