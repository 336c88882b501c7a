//! HTTP surface: `/metrics`, `/healthz`, `/readyz`.
//!
//! Collection happens at scrape time. Scrapes that arrive while one
//! collection is running share its result instead of dumping netlink again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use warp::http::StatusCode;
use warp::Filter;

use crate::collect::Collector;
use crate::exposition;
use crate::snapshot::Snapshot;

type SharedCollection = Shared<BoxFuture<'static, Arc<Snapshot>>>;

pub struct Scraper {
    collector: Arc<Collector>,
    in_flight: Mutex<Option<SharedCollection>>,
    ready: AtomicBool,
    http_stats: HttpCounters,
}

/// Counters of the HTTP layer itself, served beside the snapshot.
#[derive(Debug, Default)]
struct HttpCounters {
    connections_rejected: AtomicU64,
}

impl Scraper {
    pub fn new(collector: Arc<Collector>) -> Arc<Self> {
        Arc::new(Scraper {
            collector,
            in_flight: Mutex::new(None),
            ready: AtomicBool::new(false),
            http_stats: HttpCounters::default(),
        })
    }

    pub fn http_stats(&self) -> exposition::HttpStats {
        exposition::HttpStats {
            connections_rejected: self.http_stats.connections_rejected.load(Ordering::Relaxed),
        }
    }

    /// Ready once a collection has read netlink successfully.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The result of the in-flight collection, or of a new one.
    pub async fn snapshot(self: &Arc<Self>) -> Arc<Snapshot> {
        let shared = {
            // Held while spawning so the task's own clean-up cannot run
            // before its future is published in the slot.
            let mut slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(shared) => shared.clone(),
                None => {
                    let this = Arc::clone(self);
                    let task = tokio::spawn(async move {
                        let collector = Arc::clone(&this.collector);
                        let snapshot =
                            tokio::task::spawn_blocking(move || collector.collect()).await;
                        this.in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take();
                        match snapshot {
                            Ok(snapshot) => {
                                if snapshot.sources.netlink_error.is_none() {
                                    this.ready.store(true, Ordering::Relaxed);
                                }
                                Some(Arc::new(snapshot))
                            }
                            Err(error) => {
                                tracing::error!(%error, "collection task failed");
                                None
                            }
                        }
                    });
                    let collector = Arc::clone(&self.collector);
                    let shared = async move {
                        match task.await.ok().flatten() {
                            Some(snapshot) => snapshot,
                            // The collection thread died: serve what a failed
                            // collection would, rather than nothing.
                            None => Arc::new(collector.collect()),
                        }
                    }
                    .boxed()
                    .shared();
                    *slot = Some(shared.clone());
                    shared
                }
            }
        };
        shared.await
    }
}

/// Routes: GET/HEAD on the three paths; anything else 404 (unknown path) or
/// 405 (known path, other method).
pub fn routes(
    scraper: Arc<Scraper>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let read_only = warp::get().or(warp::head()).unify();
    let metrics = {
        let scraper = Arc::clone(&scraper);
        warp::path!("metrics").and(read_only).then(move || {
            let scraper = Arc::clone(&scraper);
            async move {
                let snapshot = scraper.snapshot().await;
                let body = exposition::render(&snapshot, &scraper.http_stats());
                warp::reply::with_header(body, "content-type", exposition::CONTENT_TYPE)
            }
        })
    };
    let healthz = warp::path!("healthz").and(read_only).map(|| "ok\n");
    let readyz = {
        let scraper = Arc::clone(&scraper);
        warp::path!("readyz").and(read_only).map(move || {
            if scraper.is_ready() {
                warp::reply::with_status("ready\n", StatusCode::OK)
            } else {
                warp::reply::with_status(
                    "no successful collection yet\n",
                    StatusCode::SERVICE_UNAVAILABLE,
                )
            }
        })
    };
    metrics
        .map(warp::Reply::into_response)
        .or(healthz.map(warp::Reply::into_response))
        .unify()
        .or(readyz.map(warp::Reply::into_response))
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            let status = if rejection.is_not_found() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::METHOD_NOT_ALLOWED
            };
            let message = if status == StatusCode::NOT_FOUND {
                "not found\n"
            } else {
                "method not allowed\n"
            };
            Ok::<_, Infallible>(warp::Reply::into_response(warp::reply::with_status(
                message, status,
            )))
        })
        .unify()
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Bounds that keep slow or greedy clients from exhausting the collector.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Open connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Longest life of one connection, keep-alive included.
    pub connection_lifetime: Duration,
    /// Largest request head (line plus headers) read; bigger ones get 431.
    pub max_request_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(300),
            max_request_bytes: 16 * 1024,
        }
    }
}

/// Binds `address` and serves until `shutdown` resolves.
pub async fn serve(
    scraper: Arc<Scraper>,
    address: SocketAddr,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ListenError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })?;
    let bound = listener.local_addr().unwrap_or(address);
    tracing::info!(address = %bound, "serving /metrics, /healthz, /readyz");
    let service = warp::service(routes(Arc::clone(&scraper)));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            scraper
                .http_stats
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection limit reached, closing");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_request_bytes);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if tokio::time::timeout(limits.connection_lifetime, connection)
                .await
                .is_err()
            {
                tracing::debug!(%peer, "connection lifetime reached, closing");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{CollectorConfig, EbpfMode};
    use crate::filter::InterfaceFilter;
    use crate::sources::netlink::{Link, LinkDump};

    /// A scraper over a stand-in link source: a unit test must not depend
    /// on the machine's rtnetlink (the real dump is covered by the
    /// privileged integration tests). A veth, so no sysfs speed is read.
    fn scraper() -> Arc<Scraper> {
        let config = CollectorConfig {
            node: "n".into(),
            labels: vec![],
            filter: InterfaceFilter::All,
        };
        let links = || {
            Ok(LinkDump {
                links: vec![Link {
                    ifindex: 2,
                    name: "veth0".into(),
                    admin_up: true,
                    kind: Some("veth".into()),
                    ..Link::default()
                }],
                interrupted: false,
            })
        };
        let collector = Collector::with_link_source(
            config,
            EbpfMode::Disabled {
                reason: "test".into(),
            },
            Box::new(links),
        );
        Scraper::new(Arc::new(collector))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_scrapes_share_one_collection() {
        let scraper = scraper();
        // All 32 are polled before the blocking collection can finish, so
        // they must all join the first one.
        let snapshots = futures::future::join_all((0..32).map(|_| scraper.snapshot())).await;
        assert!(snapshots.iter().all(|s| s.sources.collections_total == 1));
        assert!(snapshots.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        // Once it finished, the next scrape collects afresh.
        let second = scraper.snapshot().await;
        assert_eq!(second.sources.collections_total, 2);
        assert_eq!(second.interfaces.len(), 1, "served the stand-in's link");
        assert!(scraper.is_ready());
    }
}
