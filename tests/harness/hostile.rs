//! A hostile upstream registry for the attack tests: an HTTP server on 127.0.0.1 that
//! answers each path as the test tells it to (lies, redirects, oversized, endless or
//! trickling bodies) and records what it was asked and which downloads were dropped
//! before their end. No real registry misbehaves on purpose, so this one is ours.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// How the server answers one path.
#[derive(Clone)]
pub enum Answer {
    /// A complete response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A body sent in chunks with no `Content-Length` and no end.
    Endless { content_type: String },
    /// `total` bytes announced by `Content-Length`, sent `chunk` bytes at a time with
    /// `pause` between chunks.
    Trickle {
        total: u64,
        chunk: usize,
        pause: Duration,
    },
}

impl Answer {
    /// 200 with a body and a content type.
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        Answer::Full {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A redirect (307) to `location`.
    pub fn redirect(location: &str) -> Answer {
        Answer::Full {
            status: 307,
            headers: vec![("location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Shared {
    answers: Mutex<HashMap<String, Answer>>,
    requests: Mutex<Vec<String>>,
    dropped: AtomicUsize,
}

pub struct Hostile {
    /// `127.0.0.1:PORT`
    pub host: String,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    pub async fn start() -> Hostile {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hostile {
            url: format!("http://{host}"),
            host,
            shared,
            task,
        }
    }

    /// Answers requests for `path` (without the query) with `answer`.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.shared
            .answers
            .lock()
            .unwrap()
            .insert(path.to_string(), answer);
    }

    /// `METHOD path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests for `path` were made (any method).
    pub fn asked(&self, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.split(' ')
                    .nth(1)
                    .is_some_and(|p| p.split('?').next() == Some(path))
            })
            .count()
    }

    /// How many trickled or endless bodies were dropped before their end (the client
    /// went away).
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    shared
        .requests
        .lock()
        .unwrap()
        .push(format!("{} {path}{query}", req.method()));
    if path == "/v2/" {
        return full(
            200,
            &[("content-type".into(), "application/json".into())],
            b"{}",
        );
    }
    let found = shared.answers.lock().unwrap().get(&path).cloned();
    match found {
        None => full(
            404,
            &[("content-type".into(), "application/json".into())],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#,
        ),
        Some(Answer::Full {
            status,
            headers,
            body,
        }) => full(status, &headers, &body),
        Some(Answer::Endless { content_type }) => {
            let guard = DropCounter::new(shared.clone(), u64::MAX);
            let stream = futures::stream::unfold(guard, |mut g| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                g.sent = g.sent.saturating_add(64 * 1024);
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 * 1024])),
                    g,
                ))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_str(&content_type).unwrap(),
            );
            r
        }
        Some(Answer::Trickle {
            total,
            chunk,
            pause,
        }) => {
            let guard = DropCounter::new(shared.clone(), total);
            let stream = futures::stream::unfold(guard, move |mut g| async move {
                if g.sent >= g.total {
                    return None;
                }
                tokio::time::sleep(pause).await;
                let n = (chunk as u64).min(g.total - g.sent);
                g.sent += n;
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(vec![7u8; n as usize])),
                    g,
                ))
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut()
                .insert("content-length", HeaderValue::from(total));
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
    }
}

fn full(status: u16, headers: &[(String, String)], body: &[u8]) -> Response {
    let mut r = Response::new(Body::from(body.to_vec()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

/// Counts a body dropped before all of it was sent.
struct DropCounter {
    shared: Arc<Shared>,
    sent: u64,
    total: u64,
}

impl DropCounter {
    fn new(shared: Arc<Shared>, total: u64) -> DropCounter {
        DropCounter {
            shared,
            sent: 0,
            total,
        }
    }
}

impl Drop for DropCounter {
    fn drop(&mut self) {
        if self.sent < self.total {
            self.shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}
