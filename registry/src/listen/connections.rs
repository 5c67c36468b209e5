//! What the accept loop knows of its connections: how many are open (bounded, the
//! silent ones evicted first) and, per connection, whether a request is in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The open connections, bounded. At the cap, a new connection takes the place of the
/// oldest one that has not sent a request yet (a silent socket cannot keep real clients
/// out); if every connection is busy, the new one is closed at once.
pub(super) struct Connections {
    cap: usize,
    /// Kept outside `waiting`'s lock: a slot may be dropped while that lock is held.
    open: AtomicUsize,
    /// Connections in accept order that had not sent a request when admitted.
    waiting: std::sync::Mutex<VecDeque<std::sync::Weak<Slot>>>,
    /// Told when the last connection closes.
    emptied: tokio::sync::Notify,
}

/// One admitted connection; dropping it frees its place.
pub(super) struct Slot {
    owner: Arc<Connections>,
    /// It has sent a request.
    pub(super) served: AtomicBool,
    /// Told to close to make room.
    pub(super) evicted: tokio::sync::Notify,
}

impl Connections {
    pub(super) fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap,
            open: AtomicUsize::new(0),
            waiting: std::sync::Mutex::default(),
            emptied: tokio::sync::Notify::new(),
        })
    }

    pub(super) fn admit(self: &Arc<Self>) -> Option<Arc<Slot>> {
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
    pub(super) async fn drained(&self) {
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
pub(super) struct Activity {
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
    pub(super) fn begin(self: &Arc<Self>) -> BusyGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.clone())
    }

    /// Completes once no request has been in flight for `limit`.
    pub(super) async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *self.last_end.lock().expect("activity lock");
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && since.elapsed() >= limit {
                return;
            }
            let wait = if busy {
                limit
            } else {
                limit.saturating_sub(since.elapsed())
            };
            tokio::time::sleep(wait).await;
        }
    }
}

pub(super) struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.last_end.lock().expect("activity lock") = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub(super) struct Busy {
    pub(super) body: axum::body::Body,
    pub(super) _busy: BusyGuard,
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
