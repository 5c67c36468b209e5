//! Running the registry: bind, serve, expire abandoned uploads, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::Settings;
use crate::maintenance::gc::Collector;
use crate::observability::Metrics;
use crate::routes::{App, router};
use crate::services::Registry;
use crate::services::mirror::Mirror;
use crate::storage::bundle::{BundleIndex, BundleStorage};
use crate::storage::fs::FsStorage;
use crate::storage::s3::S3Storage;
use crate::storage::{Maintenance, Storage};

/// The store `settings` name, opened (a folder is created if needed), with its bucket
/// when it is on object storage.
pub async fn open_store(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn Maintenance>, Option<Arc<S3Storage>>)> {
    if let Some(s3) = &settings.s3 {
        let bucket = Arc::new(S3Storage::open(s3.clone()).await?);
        let mode = if bucket.honours_conditions() {
            "honoured: one replica at a time collects garbage, under a lease"
        } else {
            "ignored: garbage is collected by the replicas given --gc-interval (give it to one)"
        };
        tracing::info!(
            store = bucket.describe(),
            conditional_writes = mode,
            "object storage"
        );
        return Ok((bucket.clone(), Some(bucket)));
    }
    let storage = FsStorage::open(&settings.root)
        .with_context(|| format!("cannot open the store at {}", settings.root.display()))?;
    Ok((Arc::new(storage), None))
}

/// What `serve` reads and writes.
pub struct OpenedStorage {
    /// What requests are served from.
    pub storage: Arc<dyn Storage>,
    /// The writable store, if any (the mirror fills it; garbage collection sweeps it).
    pub store: Option<Arc<dyn Maintenance>>,
    /// The store's bucket, when it is on object storage.
    pub bucket: Option<Arc<S3Storage>>,
}

/// The storage `settings` name: the store, the bundles over the store, or the bundles
/// alone (read-only).
pub async fn open_storage(settings: &Settings) -> anyhow::Result<OpenedStorage> {
    let (store, bucket) = if settings.read_only {
        (None, None)
    } else {
        let (store, bucket) = open_store(settings).await?;
        (Some(store), bucket)
    };
    if settings.bundles.is_empty() {
        let store = store.expect("a store when no bundle is served");
        return Ok(OpenedStorage {
            storage: store.clone(),
            store: Some(store),
            bucket,
        });
    }
    let begun = std::time::Instant::now();
    let index = BundleIndex::open(&settings.bundles)?;
    tracing::info!(
        bundles = settings.bundles.len(),
        repositories = index.repositories.len(),
        blobs = index.blobs.len(),
        bytes = index.total_bytes(),
        seconds = begun.elapsed().as_secs_f32(),
        "bundles indexed"
    );
    Ok(OpenedStorage {
        storage: Arc::new(BundleStorage::new(index, store.clone())),
        store,
        bucket,
    })
}

fn describe(settings: &Settings) -> String {
    let store = match &settings.s3 {
        Some(s3) => format!("store s3://{}/{}", s3.bucket, s3.prefix),
        None => format!("store {}", settings.root.display()),
    };
    if settings.bundles.is_empty() {
        return store;
    }
    let bundles: Vec<String> = settings
        .bundles
        .iter()
        .map(|b| b.display().to_string())
        .collect();
    let over = if settings.read_only {
        "read-only".to_string()
    } else {
        store
    };
    format!("bundle {}; {over}", bundles.join(", "))
}

/// Serves `storage` (with a pull-through `mirror`, if any) until SIGINT or SIGTERM, then
/// lets in-flight requests finish (up to the shutdown timeout). Upload sessions live in
/// the store, so clients resume them after a restart.
pub async fn serve(
    settings: Settings,
    opened: OpenedStorage,
    mirror: Option<Arc<dyn Mirror>>,
) -> anyhow::Result<()> {
    let OpenedStorage {
        storage,
        store,
        bucket,
    } = opened;
    let (app, resumable) = app(&settings, storage, mirror).await?;
    // Certificates are checked before the port is taken, so a bad file fails the start.
    let tls = match &settings.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let local = listener.local_addr()?;
    // One plain line on stdout, for people and for scripts waiting for readiness.
    let serving = describe(&settings);
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("sealer-registry listening on {scheme}://{local} ({serving})");
    tracing::info!(addr = %local, serving, resumable_uploads = resumable, "serving");

    let expiry = tokio::spawn(expire_uploads(app.clone(), settings.options.upload_expiry));
    let collector = match (settings.gc_interval, &store) {
        (Some(every), Some(store)) => {
            let gc = Collector::new(store.clone(), app.registry.gate.clone(), settings.gc);
            Some(tokio::spawn(collect_garbage(gc, every, bucket)))
        }
        _ => None,
    };
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let notify = shutdown.clone();
    let stopping = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        notify.notify_waiters();
    };
    let server = crate::listen::serve(listener, tls, router(app), settings.limits, stopping);

    let timeout = settings.shutdown_timeout;
    tokio::select! {
        result = server => result.context("server failed")?,
        _ = async { shutdown.notified().await; tokio::time::sleep(timeout).await } => {
            tracing::warn!(?timeout, "shutdown timeout reached; closing remaining connections");
        }
    }
    expiry.abort();
    if let Some(c) = collector {
        c.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The registry as a tower service, without a socket: what `serve` answers, for tests and
/// tools that drive it in process (tower's `oneshot`). Upload expiry and periodic garbage
/// collection do not run.
pub async fn router_in_process(settings: &Settings) -> anyhow::Result<axum::Router> {
    let opened = open_storage(settings).await?;
    let (app, _) = app(settings, opened.storage, None).await?;
    Ok(crate::routes::router(app))
}

/// Everything a request needs: the services over `storage` (upload sessions recovered;
/// how many is the second value), the metrics, and the sign-in (users checked now, so a
/// bad file fails the start).
async fn app(
    settings: &Settings,
    storage: Arc<dyn Storage>,
    mirror: Option<Arc<dyn Mirror>>,
) -> anyhow::Result<(Arc<App>, usize)> {
    let mut metrics = Metrics::new();
    if let Some(m) = &mirror {
        m.register_metrics(metrics.registry_mut());
    }
    let registry = Registry::new(storage, settings.options.clone(), mirror);
    let resumable = registry.uploads.recover().await?;
    let auth = match &settings.auth {
        Some(a) => {
            let auth = Auth::open(a.clone())?;
            tracing::info!(
                users = auth.users(),
                policy = a.policy.as_ref().map(|p| p.display().to_string()),
                anonymous_pull = a.anonymous_pull,
                token = a.token,
                "sign-in required"
            );
            Some(Arc::new(auth))
        }
        None => None,
    };
    let app = Arc::new(App {
        registry,
        metrics: Arc::new(metrics),
        auth,
        tls: settings.tls.is_some(),
        body_timeout: settings.limits.body_timeout,
        serve_metrics: settings.metrics,
    });
    Ok((app, resumable))
}

async fn expire_uploads(app: Arc<App>, max_age: Duration) {
    // Check often enough that an expiry of minutes is honoured, rarely enough to be free.
    let every = (max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match app.registry.uploads.expire(max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "expiring uploads failed"),
        }
    }
}

/// Collects every `every`; on a bucket shared by replicas, only while this replica holds
/// the collector's lease (taken for two intervals, renewed at each run).
async fn collect_garbage(gc: Collector, every: Duration, bucket: Option<Arc<S3Storage>>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // not at start: let clients resume their pushes first
    let holder = uuid::Uuid::new_v4();
    loop {
        tick.tick().await;
        if let Some(bucket) = &bucket {
            match bucket.take_gc_lease(holder, every * 2).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!("garbage collection: another replica holds the lease");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection: cannot take the lease");
                    continue;
                }
            }
        }
        match gc.run(false).await {
            Ok(r) if r.manifests + r.layer_links + r.blobs == 0 => {
                tracing::debug!(seconds = r.seconds, "garbage collection: nothing to remove")
            }
            Ok(r) => tracing::info!(
                manifests = r.manifests,
                layer_links = r.layer_links,
                blobs = r.blobs,
                bytes = r.bytes,
                seconds = r.seconds,
                "garbage collected"
            ),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
