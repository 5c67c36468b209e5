//! Access log, Prometheus metrics and the middleware that feeds both.
//!
//! A request is logged (and counted) when its response body is finished or dropped, so
//! the line for a blob download carries the bytes really sent and the full duration.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as PromRegistry;

use crate::routes::headers::API_VERSION;
use crate::routes::path::RouteKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// The method as a metrics label; unusual methods share one label.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Writes an optional address without allocating.
struct Remote(Option<SocketAddr>);

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => Ok(()),
        }
    }
}

pub struct Metrics {
    registry: PromRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    pub uploads_in_progress: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~100 s
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("sealer_registry");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let uploads_in_progress = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to the end of the response body",
            latency.clone(),
        );
        registry.register(
            "http_received_bytes",
            "Request body bytes received",
            bytes_in.clone(),
        );
        registry.register(
            "http_sent_bytes",
            "Response body bytes sent",
            bytes_out.clone(),
        );
        registry.register(
            "uploads_in_progress",
            "Blob upload sessions started and not yet completed, cancelled or expired",
            uploads_in_progress.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            uploads_in_progress,
        }
    }

    /// For extensions (the mirror) to add their metrics before serving starts.
    pub fn registry_mut(&mut self) -> &mut PromRegistry {
        &mut self.registry
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Set by the router on each response so logs and metrics can name the endpoint.
#[derive(Clone, Copy, Debug)]
pub struct RouteTag(pub RouteKind);

/// The user a response was for (`-` for anonymous), for the access log.
#[derive(Debug, Clone)]
pub struct CallerTag(pub String);

/// What is known about a request when its response ends.
struct Finished {
    metrics: Arc<Metrics>,
    received: Arc<AtomicU64>,
    sent: u64,
    start: Instant,
    method: Method,
    uri: Uri,
    status: u16,
    route: RouteKind,
    remote: Option<SocketAddr>,
    user: Option<String>,
    user_agent: Option<HeaderValue>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let route = self.route.as_str();
        let method = method_label(&self.method);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: self.status,
            })
            .inc();
        self.metrics
            .latency
            .get_or_create(&RouteLabels { route, method })
            .observe(elapsed.as_secs_f64());
        self.metrics.bytes_out.inc_by(self.sent);
        let user_agent = self
            .user_agent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info!(
            target: "access",
            remote = %Remote(self.remote),
            method = %self.method,
            // The path as HTTP/1.1 sends it; HTTP/2 gives the whole URL.
            uri = %self.uri.path_and_query().map_or("/", |p| p.as_str()),
            status = self.status,
            route,
            user = %self.user.as_deref().unwrap_or("-"),
            bytes_in = self.received.load(Ordering::Relaxed),
            bytes_out = self.sent,
            // To a tenth of a millisecond: more digits are noise.
            duration_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0,
            user_agent,
        );
    }
}

/// A body that reports the size of each data frame passing through it. Whatever
/// `on_data` owns is dropped with the body, which is how the response's [`Finished`]
/// logs the request once the body is done.
struct Tapped<F> {
    inner: Body,
    on_data: F,
}

impl<F: FnMut(u64) + Send + Unpin + 'static> HttpBody for Tapped<F> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                (self.on_data)(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The middleware: access log, metrics and the API version header on every response.
pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let user_agent = request.headers().get(header::USER_AGENT).cloned();
    let received = Arc::new(AtomicU64::new(0));
    // Most requests have no body; only wrap those that do.
    let request = if request.body().is_end_stream() {
        request
    } else {
        let counter = received.clone();
        let in_metrics = metrics.clone();
        request.map(|inner| {
            Body::new(Tapped {
                inner,
                on_data: move |n| {
                    counter.fetch_add(n, Ordering::Relaxed);
                    in_metrics.bytes_in.inc_by(n);
                },
            })
        })
    };

    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    let route = response
        .extensions()
        .get::<RouteTag>()
        .map_or(RouteKind::Other, |t| t.0);
    let user = response
        .extensions()
        .get::<CallerTag>()
        .map(|c| c.0.clone());
    let mut done = Finished {
        metrics,
        received,
        sent: 0,
        start,
        method,
        uri,
        status: response.status().as_u16(),
        route,
        remote,
        user,
        user_agent,
    };
    response.map(|inner| {
        Body::new(Tapped {
            inner,
            // Name `done` whole: a closure capturing only `done.sent` would drop (and
            // log) the rest right away.
            on_data: move |n| {
                let done = &mut done;
                done.sent += n;
            },
        })
    })
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax. Lines are
/// written to standard error by a thread of their own, so request handling never waits on
/// the terminal or a log pipe; keep the returned guard alive until exit to flush them.
pub fn init_logging(
    format: LogFormat,
    filter: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Buffered: the writer thread drains every queued line, then flushes once.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// One line on the `audit` log target: who changed which content or name. `user` is
/// `-` when anonymous, `remote` absent for work the registry does itself (`gc`).
pub fn audit(
    user: &str,
    remote: Option<SocketAddr>,
    action: &str,
    repository: &crate::oci::RepoName,
    reference: Option<&str>,
    digest: Option<&crate::oci::Digest>,
) {
    tracing::info!(
        target: "audit",
        user = %user,
        remote = %remote.map_or_else(|| "-".to_string(), |r| r.to_string()),
        action = %action,
        repository = %repository,
        reference = %reference.unwrap_or("-"),
        digest = %digest.map_or_else(|| "-".to_string(), |d| d.to_string()),
    );
}
